//! The control socket: what a USB-serial adapter and a lab bench would do to the board.
//!
//! One command per line; every reply ends with a line that starts with `ok` or `err`.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Pulse EN: every connection drops, the relay restarts, the banner prints again.
    Reset,
    /// Set the USB-serial adapter's DTR line (true = asserted).
    Dtr(bool),
    /// Set the USB-serial adapter's RTS line (true = asserted).
    Rts(bool),
    /// Cut (false) or restore (true) the board's power, as a lab bench would.
    Power(bool),
    /// The host layer's counters: blocking waits, UART overruns, connections lwIP reset.
    Counters,
    /// The UART's rate now: a flasher's stub may have changed it until the next reset.
    Baud,
    Help,
}

pub const HELP: &str = "commands: reset, dtr 0|1, rts 0|1, power 0|1, counters, baud, help";

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let level = |w: &str| match w {
            "1" => Ok(true),
            "0" => Ok(false),
            other => Err(format!("err line level must be 0 or 1, not `{other}`")),
        };
        match words[..] {
            ["reset"] => Ok(Command::Reset),
            ["dtr", l] => level(l).map(Command::Dtr),
            ["rts", l] => level(l).map(Command::Rts),
            ["power", l] => level(l).map(Command::Power),
            ["counters"] => Ok(Command::Counters),
            ["baud"] => Ok(Command::Baud),
            ["help"] => Ok(Command::Help),
            _ => Err(format!("err unknown command `{}`; {HELP}", line.trim())),
        }
    }
}

pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

/// Serves the control listener, handing each parsed command to the board's loop.
pub async fn serve(listener: TcpListener, board: mpsc::Sender<Request>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(session(stream, peer, board.clone()));
            }
            Err(e) => tracing::warn!("control: accept failed: {e}"),
        }
    }
}

async fn session(stream: TcpStream, peer: SocketAddr, board: mpsc::Sender<Request>) {
    tracing::debug!("control: {peer} connected");
    let (rd, mut wr) = stream.into_split();
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let reply = match Command::parse(&line) {
            Ok(command) => {
                let (tx, rx) = oneshot::channel();
                if board.send(Request { command, reply: tx }).await.is_err() {
                    return; // the board is shutting down
                }
                rx.await
                    .unwrap_or_else(|_| "err board is shutting down".into())
            }
            Err(e) => e,
        };
        if wr
            .write_all(format!("{}\n", reply.trim_end()).as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_commands_and_names_unknown_ones() {
        assert_eq!(Command::parse(" reset \r"), Ok(Command::Reset));
        assert_eq!(Command::parse("counters"), Ok(Command::Counters));
        assert_eq!(Command::parse("baud"), Ok(Command::Baud));
        assert_eq!(Command::parse("dtr 1"), Ok(Command::Dtr(true)));
        assert_eq!(Command::parse("rts  0"), Ok(Command::Rts(false)));
        assert!(Command::parse("rts 2").unwrap_err().contains("0 or 1"));
        let e = Command::parse("boot").unwrap_err();
        assert!(e.starts_with("err unknown command `boot`"), "{e}");
    }
}
