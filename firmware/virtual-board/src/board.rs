//! The board's main loop: the same pump between sockets, UART and core as the ESP8266 sketch.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::OwnedFd;
use std::task::Poll;
use std::time::{Duration, Instant};

use relay_core::provision::{self, Provisioner, Wifi};
use relay_core::{Config, Relay};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pace::Pacer;
use crate::rom::{self, After, Loader};

/// The board's flash file, written block by block as a flasher sends it.
struct FileFlash<'a>(Option<&'a std::fs::File>);

impl rom::Flash for FileFlash<'_> {
    fn size(&self) -> usize {
        self.0
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len() as usize)
    }
    fn write(&mut self, at: usize, data: &[u8]) -> bool {
        use std::os::unix::fs::FileExt;
        self.0
            .is_some_and(|f| f.write_all_at(data, at as u64).is_ok())
    }
}

/// The network a board without a flash file has already joined (its loopback accepts any
/// credentials); the harness offers it to a virtual board that has none.
pub fn built_in_wifi() -> Wifi {
    Wifi::new("virtual", "").expect("a valid open network")
}

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 4096;
/// The ESP8266 core's HardwareSerial RX buffer: the most one loop() pass takes from the UART.
const UART_RX_BUFFER: usize = 256;

/// How often the core's clock advances while nothing else happens.
pub const TICK: Duration = Duration::from_millis(20);
/// The ESP8266 UART's transmit FIFO.
const TX_FIFO: usize = 128;
/// Staging for the UART when it is not paced: one pty write per this many bytes at most.
const TX_STAGE: usize = 16 << 10;
/// Pump passes before the loop yields to accept and control work.
const PASSES: usize = 32;
/// EN's RC delay: the ROM samples GPIO0 this long after EN rises, so the brief both-lines-
/// asserted state in esptool's loader sequence (EN high, GPIO0 high) does not boot the firmware.
/// Longer than the board's ~1 ms so control-socket latency never matters, and well inside the
/// 50 ms for which esptool and espflash hold GPIO0 low afterwards.
pub const EN_DELAY: Duration = Duration::from_millis(25);

/// What the banner says about the board beyond the core's own limits.
#[derive(Clone, Debug)]
pub struct Identity {
    pub ip: String,
    pub build_id: String,
    pub port: u16,
    pub status_port: u16,
}

struct Client {
    stream: TcpStream,
    /// Bytes read but not yet taken by the core: offered again once the UART drains.
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The peer finished sending; the slot closes once its last bytes are taken.
    eof: bool,
}

pub struct Board {
    relay: Relay,
    identity: Identity,
    uart: AsyncFd<OwnedFd>,
    /// Bytes on their way to the UART: what the firmware prints itself (boot messages, the
    /// banner) and what the core released. Staging lets one write carry many lines.
    tx: VecDeque<u8>,
    /// How much the core's output may stage: a 128-byte FIFO when paced, as on the chip, so
    /// back-pressure reaches clients as it would there; more when unpaced, for fewer syscalls.
    tx_cap: usize,
    clients: Vec<Option<Client>>,
    tx_pace: Option<Pacer>,
    rx_pace: Option<Pacer>,
    clock: Instant,
    uart_buf: Box<[u8]>,
    /// Largest UART read handed to the core at once: never more than a client queue holds,
    /// so a reader that keeps up never drops.
    uart_chunk: usize,
    /// The last pump stopped early with work left: do not sleep.
    busy: bool,
    /// A paced read took all the wire allowed: more may be waiting on the UART.
    rx_starved: bool,
    /// The last UART read found nothing: read again only once the UART signals data.
    rx_idle: bool,
    /// Set by `ready()` when the UART signals data (it cannot take `&mut self`).
    uart_readable: std::cell::Cell<bool>,
    lines: Lines,
    chip: Chip,
    boot_at: Option<Instant>,
    /// The board's flash, when it has one: what boots is the image in it. Without one, the
    /// relay is built in, and the loader has nowhere to write.
    flash: Option<std::path::PathBuf>,
    flash_file: Option<std::fs::File>,
    loader: Loader,
    /// Credentials of a board without a flash file (with one, they live in its EEPROM sector).
    wifi: Option<Wifi>,
    provisioner: Provisioner,
    /// While provisioning: when the firmware stops listening (`None`: once it has credentials).
    listen_until: Option<Instant>,
}

/// The USB-serial adapter's modem lines, as the NodeMCU's two-transistor auto-reset circuit
/// sees them: EN is pulled low only while RTS alone is asserted, GPIO0 only while DTR alone is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lines {
    pub dtr: bool,
    pub rts: bool,
}

impl Lines {
    pub fn en_high(self) -> bool {
        // Pulled low only by "RTS and not DTR".
        !self.rts || self.dtr
    }

    pub fn gpio0_high(self) -> bool {
        // Pulled low only by "DTR and not RTS".
        !self.dtr || self.rts
    }
}

/// What the chip is doing, as the EN and GPIO0 pins decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    /// EN is low: nothing runs, the UART is silent.
    Held,
    /// No power: nothing runs; whatever a flasher had written so far stays in flash.
    Off,
    /// EN rose less than [`EN_DELAY`] ago: the ROM has not sampled GPIO0 yet.
    Booting,
    /// Booted with GPIO0 low: the ROM serial loader waits for a host.
    Loader,
    /// The firmware printed its boot line and listens for WiFi credentials on the UART.
    Provisioning,
    /// Booted with GPIO0 high: the relay firmware runs.
    Running,
    /// Booted with GPIO0 high, but no relay runs: the flash holds no valid image, or an image
    /// of something else.
    Halted,
}

fn now_ms(clock: Instant) -> u32 {
    // The core expects a free-running u32 millisecond counter, wrap included.
    clock.elapsed().as_millis() as u32
}

impl Board {
    pub fn new(
        config: Config,
        identity: Identity,
        uart: OwnedFd,
        pace_baud: Option<u32>,
        flash: Option<std::path::PathBuf>,
    ) -> io::Result<Board> {
        let clock = Instant::now();
        let relay = Relay::new(config, 0).map_err(io::Error::other)?;
        let mut board = Board {
            relay,
            identity,
            // SAFETY: an OwnedFd stays open and names the same file until the AsyncFd drops it.
            uart: unsafe { AsyncFd::register(uart) }?,
            tx: VecDeque::new(),
            tx_cap: if pace_baud.is_some() {
                TX_FIFO
            } else {
                TX_STAGE
            },
            clients: (0..config.max_clients).map(|_| None).collect(),
            tx_pace: pace_baud.map(|b| Pacer::new(b, clock)),
            rx_pace: pace_baud.map(|b| Pacer::new(b, clock)),
            clock,
            uart_buf: vec![0; UART_RX_BUFFER].into_boxed_slice(),
            uart_chunk: UART_RX_BUFFER.min(config.txq_size),
            busy: false,
            rx_starved: false,
            rx_idle: false,
            uart_readable: std::cell::Cell::new(false),
            lines: Lines::default(),
            chip: Chip::Running,
            boot_at: None,
            flash_file: match &flash {
                Some(p) => Some(std::fs::OpenOptions::new().read(true).write(true).open(p)?),
                None => None,
            },
            flash,
            loader: Loader::default(),
            wifi: Some(built_in_wifi()),
            provisioner: Provisioner::default(),
            listen_until: None,
        };
        board.boot(1);
        Ok(board)
    }

    /// The ROM's reset message (cause 1: power-on, 2: EN pin; boot mode (3,6): flash, (1,7):
    /// the serial loader), then whatever it prints next.
    fn rom_says(&mut self, cause: u8, boot_mode: &str, then: &str) {
        let text = format!(
            "\r\n ets Jan  8 2013,rst cause:{cause}, boot mode:({boot_mode})\r\n\r\n{then}"
        );
        Self::tx_push(&mut self.tx, &mut self.tx_pace, text.as_bytes());
    }

    /// Boots from flash (GPIO0 high): the ROM checks the image there and runs it; only an
    /// image that carries a relay build id runs the relay firmware, which first prints its
    /// boot line and listens for WiFi credentials.
    fn boot(&mut self, cause: u8) {
        match self.firmware() {
            Ok(build_id) => {
                if let Some(id) = build_id {
                    self.identity.build_id = id;
                }
                let stored = self.stored_wifi();
                let line = provision::boot_line(stored.as_ref(), &self.identity.build_id);
                self.rom_says(cause, "3,6", &line);
                self.chip = Chip::Provisioning;
                self.provisioner = Provisioner::default();
                self.listen_until = stored.map(|_| {
                    Instant::now() + Duration::from_millis(u64::from(provision::LISTEN_MS))
                });
                tracing::info!(build = %self.identity.build_id, "booted: listening for credentials");
            }
            Err(rom) => {
                self.chip = Chip::Halted;
                self.rom_says(cause, "3,6", rom);
                tracing::info!("booted: no relay in flash");
            }
        }
    }

    /// The network is joined (on loopback, at once): the relay starts and prints its banner.
    fn start_relay(&mut self) {
        self.listen_until = None;
        self.chip = Chip::Running;
        let id = &self.identity;
        let banner = self
            .relay
            .banner(&id.ip, &id.build_id, id.port, id.status_port);
        Self::tx_push(&mut self.tx, &mut self.tx_pace, banner.as_bytes());
        tracing::info!(build = %self.identity.build_id, "running the relay");
    }

    /// The credentials in the EEPROM sector of the flash file, or the built-in ones.
    fn stored_wifi(&self) -> Option<Wifi> {
        use std::os::unix::fs::FileExt;
        let Some(f) = &self.flash_file else {
            return self.wifi.clone();
        };
        let at = f
            .metadata()
            .ok()?
            .len()
            .checked_sub(provision::RECORD_FROM_END as u64)?;
        let mut rec = [0u8; provision::RECORD_SIZE];
        f.read_exact_at(&mut rec, at).ok()?;
        Wifi::from_record(&rec)
    }

    fn store_wifi(&mut self, wifi: &Wifi) {
        use std::os::unix::fs::FileExt;
        let Some(f) = &self.flash_file else {
            self.wifi = Some(wifi.clone());
            return;
        };
        let written = f.metadata().ok().and_then(|m| {
            let at = m.len().checked_sub(provision::RECORD_FROM_END as u64)?;
            f.write_all_at(&wifi.record(), at).ok()
        });
        if written.is_none() {
            tracing::warn!("cannot store the credentials in the flash file");
        }
    }

    /// UART bytes while the firmware listens for credentials; the rest go to the relay once
    /// it runs.
    fn provision_input(&mut self, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let Some(outcome) = self.provisioner.input(b) else {
                continue;
            };
            let reply = provision::reply_line(&outcome);
            Self::tx_push(&mut self.tx, &mut self.tx_pace, reply.as_bytes());
            match outcome {
                Ok(wifi) => {
                    tracing::info!(?wifi, "provisioned");
                    self.store_wifi(&wifi);
                    self.start_relay();
                    self.relay.uart_input(&bytes[i + 1..]);
                    return;
                }
                Err(e) => tracing::info!("provisioning refused: {e}"),
            }
        }
    }

    /// What the flash holds: `Ok` with the build id of a relay image (`None`: the built-in
    /// relay), or `Err` with what the ROM prints instead of running anything.
    fn firmware(&self) -> Result<Option<String>, &'static str> {
        let Some(path) = &self.flash else {
            return Ok(None);
        };
        let bytes = std::fs::read(path).map_err(|e| {
            tracing::warn!("cannot read the flash {}: {e}", path.display());
            "ets_main.c \r\n"
        })?;
        // The ROM checks the image at 0x0; an Arduino bootloader there boots the one behind it.
        match relay_core::image::parse_firmware(&bytes) {
            Ok(fw) => fw.build_id().map(Some).ok_or(""),
            Err(relay_core::image::ImageError::BadChecksum { .. }) => Err("csum err\r\n"),
            Err(_) => Err("ets_main.c \r\n"),
        }
    }

    /// Pulses EN: connections drop as the WiFi stack restarts, the relay starts afresh.
    pub fn reset(&mut self) {
        if self.chip == Chip::Off {
            return; // no power, no reset
        }
        self.hold();
        self.release();
    }

    /// EN low: the chip stops, and with it the WiFi stack and every connection.
    fn hold(&mut self) {
        self.clients.iter_mut().for_each(|c| *c = None);
        self.tx.clear();
        self.chip = Chip::Held;
        self.boot_at = None;
        self.listen_until = None;
    }

    /// EN high: the ROM starts (cause 2, the EN pin).
    fn release(&mut self) {
        self.boot_at = None;
        self.start(2);
    }

    /// The ROM starts after a reset: it samples GPIO0, then boots from flash or waits in its
    /// serial loader.
    fn start(&mut self, cause: u8) {
        if self.lines.gpio0_high() {
            self.run_from_flash(cause);
        } else {
            self.chip = Chip::Loader;
            self.loader = Loader::default();
            self.rom_says(cause, "1,7", "");
            tracing::info!("reset: ROM serial loader");
        }
    }

    /// A fresh relay core, and the firmware in flash booted over it.
    fn run_from_flash(&mut self, cause: u8) {
        self.relay = Relay::new(*self.relay.config(), now_ms(self.clock))
            .expect("config was valid at start");
        self.boot(cause);
    }

    /// Cuts or restores power. Power returning is a power-on reset (cause 1), and the ROM
    /// checks the flash again: an image cut short mid-flash does not boot.
    pub fn set_power(&mut self, on: bool) {
        match (self.chip == Chip::Off, on) {
            (false, false) => {
                self.hold();
                self.chip = Chip::Off;
                tracing::info!("power cut");
            }
            (true, true) => self.start(1),
            _ => {}
        }
    }

    /// Applies new DTR/RTS levels; an EN edge resets the chip (not while it has no power).
    pub fn set_lines(&mut self, lines: Lines) {
        if self.chip == Chip::Off {
            self.lines = lines;
            return;
        }
        let was_high = self.lines.en_high();
        self.lines = lines;
        match (was_high, lines.en_high()) {
            (true, false) => self.hold(),
            (false, true) => {
                self.chip = Chip::Booting;
                self.boot_at = Some(Instant::now() + EN_DELAY);
            }
            _ => {}
        }
    }

    pub fn lines(&self) -> Lines {
        self.lines
    }

    pub fn chip(&self) -> Chip {
        self.chip
    }

    /// The running relay's build id, if a relay runs.
    pub fn build_id(&self) -> Option<&str> {
        matches!(self.chip, Chip::Provisioning | Chip::Running)
            .then_some(self.identity.build_id.as_str())
    }

    pub fn status(&self) -> String {
        self.relay.status()
    }

    pub fn accept(&mut self, stream: TcpStream) {
        if self.chip != Chip::Running {
            // No firmware, no WiFi: the connection dies at once.
            tracing::debug!(
                "connection refused: the relay is not running ({:?})",
                self.chip
            );
            return;
        }
        let _ = stream.set_nodelay(true);
        match self.relay.accept() {
            Some(slot) => {
                tracing::debug!(slot, "client connected");
                self.clients[slot] = Some(Client {
                    stream,
                    buf: vec![0; READ_CHUNK].into_boxed_slice(),
                    start: 0,
                    end: 0,
                    eof: false,
                });
            }
            None => {
                tracing::debug!("client rejected: all slots taken");
                tokio::spawn(reject(stream, self.relay.reject_line()));
            }
        }
    }

    /// Moves every byte that can move without waiting. Returns when nothing more can.
    pub fn pump(&mut self) {
        if self.boot_at.is_some_and(|t| Instant::now() >= t) {
            self.release();
        }
        if self.chip == Chip::Provisioning && self.listen_until.is_some_and(|t| Instant::now() >= t)
        {
            self.start_relay();
        }
        self.relay.tick(now_ms(self.clock));
        for _ in 0..PASSES {
            let mut progress = self.read_uart();
            for slot in 0..self.clients.len() {
                progress |= self.service_client(slot);
            }
            // Write once the core has nothing more to give, or the stage is full.
            let staged = self.stage();
            if !staged || self.tx.len() >= self.tx_cap {
                progress |= self.write_uart();
            }
            progress |= staged;
            while let Some(slot) = self.relay.next_close() {
                tracing::debug!(slot, "client closed: stalled");
                self.clients[slot] = None;
                progress = true;
            }
            if !progress {
                self.busy = false;
                return;
            }
        }
        self.busy = true;
    }

    fn read_uart(&mut self) -> bool {
        let now = Instant::now();
        if self.rx_idle {
            if !self.uart_readable.replace(false) {
                return false;
            }
            // Data has just arrived: the wire starts carrying it now, with no idle credit.
            if let Some(p) = self.rx_pace.as_mut() {
                p.idle(now);
            }
            self.rx_idle = false;
        }
        let budget = self
            .rx_pace
            .as_mut()
            .map_or(usize::MAX, |p| p.available(now));
        let n = budget.min(self.uart_chunk);
        self.rx_starved = n == 0;
        if n == 0 {
            return false;
        }
        match nix::unistd::read(self.uart.get_ref(), &mut self.uart_buf[..n]) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) => {
                self.rx_idle = true;
                false
            }
            Ok(got) => {
                if let Some(p) = self.rx_pace.as_mut() {
                    p.spend(got);
                    self.rx_starved = got == n;
                }
                // Fewer bytes than asked for: the UART is drained, and idle until it signals.
                self.rx_idle = got < n;
                match self.chip {
                    Chip::Running => self.relay.uart_input(&self.uart_buf[..got]),
                    Chip::Provisioning => {
                        let bytes = self.uart_buf[..got].to_vec();
                        self.provision_input(&bytes);
                    }
                    Chip::Loader => {
                        let mut flash = FileFlash(self.flash_file.as_ref());
                        let (reply, after) = self.loader.input(&self.uart_buf[..got], &mut flash);
                        Self::tx_push(&mut self.tx, &mut self.tx_pace, &reply);
                        if after == After::Run {
                            // The ROM jumps from its loader to the firmware in flash.
                            self.run_from_flash(2);
                        }
                    }
                    // Held in reset, or halted: nothing reads the UART.
                    _ => {}
                }
                true
            }
            Err(e) => {
                tracing::warn!("uart read: {e}");
                false
            }
        }
    }

    /// Queues bytes for the UART. An empty stage means an idle wire: it starts carrying now.
    fn tx_push(tx: &mut VecDeque<u8>, pace: &mut Option<Pacer>, bytes: &[u8]) {
        if tx.is_empty()
            && let Some(p) = pace.as_mut()
        {
            p.idle(Instant::now());
        }
        tx.extend(bytes);
    }

    /// Moves what the core released for the UART into the stage, as far as it has room.
    fn stage(&mut self) -> bool {
        let mut progress = false;
        while self.tx.len() < self.tx_cap {
            let chunk = self.relay.uart_pending();
            let n = chunk.len().min(self.tx_cap - self.tx.len());
            if n == 0 {
                break;
            }
            Self::tx_push(&mut self.tx, &mut self.tx_pace, &chunk[..n]);
            self.relay.uart_consume(n);
            progress = true;
        }
        progress
    }

    fn write_uart(&mut self) -> bool {
        let mut progress = false;
        while !self.tx.is_empty() {
            let budget = self
                .tx_pace
                .as_mut()
                .map_or(usize::MAX, |p| p.available(Instant::now()));
            let chunk = self.tx.make_contiguous();
            let chunk = &chunk[..chunk.len().min(budget)];
            if chunk.is_empty() {
                break;
            }
            match nix::unistd::write(self.uart.get_ref(), chunk) {
                Ok(n) => {
                    if let Some(p) = self.tx_pace.as_mut() {
                        p.spend(n);
                    }
                    self.tx.drain(..n);
                    progress = true;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::warn!("uart write: {e}");
                    break;
                }
            }
        }
        progress
    }

    fn service_client(&mut self, slot: usize) -> bool {
        let Board { relay, clients, .. } = self;
        let Some(c) = clients[slot].as_mut() else {
            return false;
        };
        let mut progress = false;
        let mut gone = None;
        loop {
            let pending = relay.client_pending(slot);
            if pending.is_empty() {
                break;
            }
            match c.stream.try_write(pending) {
                Ok(n) => {
                    relay.client_consume(slot, n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    gone = Some(e);
                    break;
                }
            }
        }
        if gone.is_none() {
            if c.start < c.end {
                let n = relay.client_input(slot, &c.buf[c.start..c.end]);
                c.start += n;
                progress |= n > 0;
            }
            // One read per pass keeps a fast client from starving the others.
            if c.start == c.end && !c.eof {
                match c.stream.try_read(&mut c.buf) {
                    Ok(0) => c.eof = true,
                    Ok(n) => {
                        (c.start, c.end) = (0, n);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => gone = Some(e),
                }
            }
        }
        if let Some(e) = gone {
            // A reset discards whatever the peer's last bytes were, as TCP does.
            tracing::debug!(slot, "client reset: {e}");
        } else if !(c.eof && c.start == c.end) {
            return progress;
        } else {
            tracing::debug!(slot, "client closed");
        }
        relay.client_closed(slot);
        clients[slot] = None;
        true
    }

    /// When the loop must look again even if no socket becomes ready.
    pub fn deadline(&self) -> Instant {
        let now = Instant::now();
        if self.busy {
            return now;
        }
        let mut at = now + TICK;
        for t in [self.boot_at, self.listen_until].into_iter().flatten() {
            at = at.min(t);
        }
        if let Some(p) = &self.tx_pace
            && !self.tx.is_empty()
        {
            at = at.min(now + p.wait_for(self.tx.len()));
        }
        if let Some(p) = &self.rx_pace
            && self.rx_starved
        {
            at = at.min(now + p.wait_for(crate::pace::FIFO / 4));
        }
        at
    }

    /// Resolves once any source the pump is waiting on may have work.
    pub async fn ready(&self) {
        poll_fn(|cx| {
            let mut ready = false;
            // Readiness is cleared before the pump drains the fd to EAGAIN, so no edge is lost.
            if let Poll::Ready(Ok(mut g)) = self.uart.poll_read_ready(cx) {
                g.clear_ready();
                self.uart_readable.set(true);
                ready = true;
            }
            if !self.tx.is_empty() {
                if let Poll::Ready(Ok(mut g)) = self.uart.poll_write_ready(cx) {
                    g.clear_ready();
                    ready = true;
                }
            }
            for (slot, c) in self.clients.iter().enumerate() {
                let Some(c) = c else { continue };
                if c.start == c.end && !c.eof && c.stream.poll_read_ready(cx).is_ready() {
                    ready = true;
                }
                if !self.relay.client_pending(slot).is_empty()
                    && c.stream.poll_write_ready(cx).is_ready()
                {
                    ready = true;
                }
            }
            if ready {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// Tells a client there is no room, then closes without resetting the connection.
async fn reject(mut stream: TcpStream, line: String) {
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Closing with unread input would send RST and could destroy the line in flight.
    let mut sink = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
