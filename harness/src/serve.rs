//! `relay-hil serve`: a local board exported over RFC 2217, its resets performed here, at the
//! chip's timing, as esptool's `esp_rfc2217_server` performs them.
//!
//! DTR and RTS sent one at a time across a network cannot reset an ESP8266 into its loader:
//! each change waits a round trip for its answer, and the ROM samples GPIO0 long before the
//! next arrives (espressif/esptool#383). So, as `esp_rfc2217_server`'s port manager does
//! (esptool 4.8.1, `esp_rfc2217_server/esp_port_manager.py:43-69`), the start of a reset
//! sequence is recognised and the whole sequence runs next to the port:
//! - DTR on, outside download mode: download mode, and the loader reset (esptool's
//!   `UnixTightReset`, `esptool/reset.py:107-121`: EN low for 100 ms with GPIO0 high, then
//!   GPIO0 low as EN rises, released 50 ms later);
//! - RTS off, outside download mode: a hard reset (`HardReset`, `reset.py:145-165`: EN low for
//!   100 ms), so the firmware boots;
//! - DTR off: leaves download mode and releases DTR;
//! - every other line change is answered and dropped.
//!
//! Unlike `esp_rfc2217_server`, which answers none of the changes it takes over, every request
//! is answered, so clients that wait for answers (pyserial without `?ign_set_control`, and so
//! esptool with its defaults) need no option.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rfc2217::{PortSettings, Purge, Server, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::board::Board;
use crate::error::Result;

/// EN held low by a reset (esptool's `reset.py`: `time.sleep(0.1)`).
const RESET_HOLD: Duration = Duration::from_millis(100);
/// GPIO0 held low once EN rises (esptool's `DEFAULT_RESET_DELAY`, `reset.py:26`).
const LOADER_HOLD: Duration = Duration::from_millis(50);

/// What the client's line changes do to the board.
#[derive(Debug, Default)]
struct Lines {
    /// Between a loader reset and the DTR release that ends esptool's sequence.
    download: bool,
}

/// What to do for one line change.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    LoaderReset,
    HardReset,
    ReleaseDtr,
    Nothing,
}

impl Lines {
    fn dtr(&mut self, on: bool) -> Action {
        match (on, self.download) {
            (false, _) => {
                self.download = false;
                Action::ReleaseDtr
            }
            (true, false) => {
                self.download = true;
                Action::LoaderReset
            }
            (true, true) => Action::Nothing,
        }
    }

    fn rts(&mut self, on: bool) -> Action {
        if on || self.download {
            Action::Nothing
        } else {
            Action::HardReset
        }
    }
}

/// One line on stdout when the board is served: where, and which board.
#[derive(Debug, serde::Serialize)]
pub struct Serving {
    pub event: &'static str,
    pub url: String,
    pub board: String,
    pub serial: String,
    /// A virtual board's control socket (its reset lines and power), for a lab's power switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

/// Serves `board` on `listener`, one client at a time, until `stop` resolves; a client that
/// comes while another holds the board is closed at once.
pub async fn serve(
    board: &mut Board,
    listener: TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            },
        };
        tracing::info!(%peer, "client holds the board");
        let why = tokio::select! {
            _ = &mut stop => return Ok(()),
            why = session(board, tcp, &listener) => why,
        };
        tracing::info!(%peer, "client left: {why}");
    }
}

/// One client's session; returns why it ended.
async fn session(board: &mut Board, mut tcp: TcpStream, listener: &TcpListener) -> String {
    let _ = tcp.set_nodelay(true);
    let baud = board.profile.uart.baud;
    let mut server = Server::new(PortSettings {
        baud_rate: baud,
        ..PortSettings::default()
    });
    let mut lines = Lines::default();
    let mut buf = vec![0u8; 4096];
    if let Err(e) = tcp.write_all(&server.take_output()).await {
        return e.to_string();
    }
    loop {
        // Far enough that the serial read only ends with data.
        let later = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            read = tcp.read(&mut buf) => {
                let n = match read {
                    Ok(0) => return "closed".into(),
                    Ok(n) => n,
                    Err(e) => return e.to_string(),
                };
                let payload = server.receive(&buf[..n]);
                let mut actions = Vec::new();
                while let Some(event) = server.poll_event() {
                    match event {
                        ServerEvent::SettingsChanged(s) => {
                            if let Err(e) = board.serial.set_baud(s.baud_rate) {
                                tracing::warn!("{e}");
                            }
                        }
                        ServerEvent::Dtr(on) => actions.push(lines.dtr(on)),
                        ServerEvent::Rts(on) => actions.push(lines.rts(on)),
                        // Its receive buffer is the board's output; serve buffers no input.
                        ServerEvent::Purge(Purge::Receive | Purge::Both) => {
                            if let Err(e) = board.serial.discard_input() {
                                tracing::warn!("{e}");
                            }
                        }
                        _ => {}
                    }
                }
                // The answers first: the client's next request waits for them.
                if let Err(e) = tcp.write_all(&server.take_output()).await {
                    return e.to_string();
                }
                for action in actions {
                    if let Err(e) = perform(board, action).await {
                        tracing::warn!("{e}");
                    }
                }
                if let Err(e) = board.serial.write_all(&payload).await {
                    return e.to_string();
                }
            }
            chunk = board.serial.chunk(later) => match chunk {
                Ok(data) => {
                    server.write_data(&data);
                    if let Err(e) = tcp.write_all(&server.take_output()).await {
                        return e.to_string();
                    }
                }
                Err(e) => return e.to_string(),
            },
            extra = listener.accept() => {
                if let Ok((extra, peer)) = extra {
                    tracing::info!(%peer, "refused: another client holds the board");
                    drop(extra);
                }
            }
        }
    }
}

/// Runs one reset sequence on the board's own lines, at the chip's timing.
async fn perform(board: &mut Board, action: Action) -> Result<()> {
    let serial = &mut board.serial;
    match action {
        Action::LoaderReset => {
            tracing::info!("reset into the ROM loader");
            serial.set_lines(false, true)?; // EN low, GPIO0 high
            tokio::time::sleep(RESET_HOLD).await;
            serial.set_lines(true, false)?; // GPIO0 low as EN rises
            tokio::time::sleep(LOADER_HOLD).await;
            serial.set_lines(false, false)?;
        }
        Action::HardReset => {
            tracing::info!("hard reset");
            serial.set_lines(false, true)?;
            tokio::time::sleep(RESET_HOLD).await;
            serial.set_lines(false, false)?;
        }
        Action::ReleaseDtr => serial.set_lines(false, false)?,
        Action::Nothing => {}
    }
    Ok(())
}

/// Where `listener` serves, as a client's URL.
pub fn url(addr: SocketAddr) -> String {
    format!("{}{addr}", crate::rfc2217::SCHEME)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// esptool's default reset over RFC 2217 (ClassicReset: DTR off, RTS on, DTR on, RTS off,
    /// DTR off), then its hard reset after writing (RTS on, RTS off).
    #[test]
    fn esptools_sequences_become_one_local_reset_each() {
        let mut l = Lines::default();
        let seen: Vec<Action> = [
            l.dtr(false),
            l.rts(true),
            l.dtr(true),
            l.rts(false),
            l.dtr(false),
            l.rts(true),
            l.rts(false),
        ]
        .into();
        assert_eq!(
            seen,
            [
                Action::ReleaseDtr,
                Action::Nothing,
                Action::LoaderReset,
                Action::Nothing,
                Action::ReleaseDtr,
                Action::Nothing,
                Action::HardReset,
            ]
        );
    }

    /// The harness's own reset: RTS pulsed with DTR released boots the firmware.
    #[test]
    fn an_rts_pulse_is_a_hard_reset() {
        let mut l = Lines::default();
        assert_eq!(
            [l.dtr(false), l.rts(true), l.dtr(false), l.rts(false)],
            [
                Action::ReleaseDtr,
                Action::Nothing,
                Action::ReleaseDtr,
                Action::HardReset
            ]
        );
    }
}
