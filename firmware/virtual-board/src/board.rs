//! The board: its UART line, the NodeMCU reset circuit, the ROM (boot checks and serial loader),
//! the flash, and the firmware, which runs as its own process on the host layer.

use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::task::Poll;
use std::time::{Duration, Instant};

use arduino_host::{Executable, Options as FirmwareOptions, Page, Program, Running};
use relay_core::provision::Wifi;
use tokio::io::unix::AsyncFd;

use crate::rfc2217;
use crate::rom::{self, After, Loader};
use crate::wire::{Direction, Rate};

/// The board's flash file, written block by block as a flasher sends it.
struct FileFlash<'a>(&'a File);

impl rom::Flash for FileFlash<'_> {
    fn size(&self) -> usize {
        self.0.metadata().map_or(0, |m| m.len() as usize)
    }
    fn write(&mut self, at: usize, data: &[u8]) -> bool {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(data, at as u64).is_ok()
    }
    fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        if at.checked_add(len)? > self.size() {
            return None;
        }
        let mut buf = vec![0; len];
        self.0.read_exact_at(&mut buf, at as u64).ok()?;
        Some(buf)
    }
}

/// The network a board without a flash file has already joined; the harness offers it to a
/// virtual board that has none of its own.
pub fn built_in_wifi() -> Wifi {
    Wifi::new("virtual", "").expect("a valid open network")
}

/// The NodeMCU's flash: 4 MiB, erased to 0xFF as it leaves the factory.
pub const FLASH_BYTES: usize = 4 << 20;

/// Whether `path` can be the board's flash: missing (it starts erased), or a regular file of
/// at most 16 MiB, the largest ESP8266 flash. The board writes its flash in place and takes its
/// size from the file's length, so a device or a FIFO cannot be one. Only metadata is read.
pub fn check_flash_file(path: &std::path::Path) -> Result<(), String> {
    use nodemcu::bounded::Size;
    use nodemcu::image::FLASH_MAX;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_file() {
        return Err(format!(
            "not a regular file; the flash is a file the board writes in place, of at most {} \
             (the largest ESP8266 flash)",
            Size(FLASH_MAX)
        ));
    }
    if meta.len() > FLASH_MAX {
        return Err(format!(
            "{} bytes, more than {} (the largest ESP8266 flash)",
            meta.len(),
            Size(FLASH_MAX)
        ));
    }
    Ok(())
}

/// Most bytes moved from the pseudo-terminal at once.
const READ_CHUNK: usize = 4096;
/// Bytes the host side holds for the pseudo-terminal: about what the kernel's tty buffers and a
/// USB-serial adapter hold for a host that does not read. Paced, the chip never waits, so what
/// does not fit is lost; unpaced, the firmware waits instead.
const STAGE_MAX: usize = 64 << 10;
/// How far ahead of the wire the board reads the host's bytes, so that a late wake-up never
/// leaves the line idle.
const LOOKAHEAD: Duration = Duration::from_millis(5);
/// Paced, the board hands over what crossed the wire at most this often: a character reaches its
/// receiver up to this long after its stop bit, never before. Waking for each character, every
/// 3.3 µs at 3 Mbaud, took more of a two-core host than the firmware could spare, and its
/// receive ring overran where a chip's would not. A USB-serial bridge batches more coarsely
/// still: its host reads once per 1 ms USB frame at best.
const GRAIN: f64 = 100_000.0;
/// The ROM's rate: the divider for 115200 from a 40 MHz crystal, run from the board's 26 MHz.
pub const ROM_BAUD: u32 = 74_880;
/// How often the board looks at the firmware process while nothing else happens.
pub const TICK: Duration = Duration::from_millis(20);
/// Pump passes before the loop yields to control work.
const PASSES: usize = 32;
/// EN's RC delay: the ROM samples GPIO0 this long after EN rises, so the brief both-lines-
/// asserted state in esptool's loader sequence (EN high, GPIO0 high) does not boot the firmware.
/// Longer than the board's ~1 ms so control-socket latency never matters, and well inside the
/// 50 ms for which esptool and espflash hold GPIO0 low afterwards.
pub const EN_DELAY: Duration = Duration::from_millis(25);

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
    /// Booted with GPIO0 high: the relay firmware runs.
    Running,
    /// Booted with GPIO0 high, but nothing runs: the flash holds no valid relay image, or the
    /// firmware stopped.
    Halted,
}

/// What sets the rate the chip's UART runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChipUart {
    /// The ROM, at [`ROM_BAUD`], until something else sets it.
    Rom,
    /// The ROM loader, which took the host's rate from the first bytes it saw (autobaud).
    Loader(u32),
    /// A flasher stub's CHANGE_BAUDRATE, exactly.
    Stub(u32),
    /// The firmware's `Serial.begin`, at the ESP8266's divider for it.
    Firmware(u32),
}

/// The firmware side of the board: which build runs, and what it shares with the board.
pub struct Firmware {
    pub program: &'static Program,
    pub options: FirmwareOptions,
    /// The build id a board without a flash file reports.
    pub built_in_id: String,
}

/// A firmware process and its end of the UART.
struct Process {
    running: Running,
    link: AsyncFd<OwnedFd>,
    /// Bytes off the wire on their way to the firmware's UART.
    to_chip: VecDeque<u8>,
}

pub struct Board {
    uart: AsyncFd<OwnedFd>,
    paced: bool,
    /// The chip's transmitter to the host's receiver, and the other way.
    to_host: Direction,
    to_chip: Direction,
    /// When the wire last handed characters over (board clock, ns): see [`GRAIN`].
    delivered_at: f64,
    /// What the host's receiver has taken, on its way to the pseudo-terminal.
    tx: VecDeque<u8>,
    /// Bytes the host's port lost because nobody read it (paced only).
    tx_lost: u64,
    chip_uart: ChipUart,
    /// The host's rate: what an RFC 2217 client set, or the pseudo-terminal's termios.
    host_baud: u32,
    /// Test fault: the ROM's autobaud cannot lock onto rates above this.
    autobaud_max: Option<u32>,
    uart_buf: Box<[u8]>,
    /// The last pump stopped early with work left: do not sleep.
    busy: bool,
    /// The last UART read found nothing: read again only once the UART signals data.
    rx_idle: bool,
    /// Set by `ready()` when the UART signals data (it cannot take `&mut self`).
    uart_readable: std::cell::Cell<bool>,
    lines: Lines,
    chip: Chip,
    boot_at: Option<Instant>,
    /// The board's clock: wire times are nanoseconds since this.
    epoch: Instant,
    /// The flash file, when the board has one; without one it boots its built-in relay from
    /// a flash in memory, which the loader cannot write.
    flash_path: Option<PathBuf>,
    flash: File,
    loader: Loader,
    firmware: Firmware,
    page: Page,
    /// The executable of the build that last booted, by build id: rebooting reuses it.
    exe: Option<(String, Executable)>,
    process: Option<Process>,
    build: Option<String>,
    /// The ROM's jump to a relay image: when, and the build.
    jump: Option<(f64, String)>,
    /// The RFC 2217 client that holds the serial line, if one is connected, and the rate it
    /// set.
    rfc: Option<rfc2217::Port>,
    rfc_baud: Option<u32>,
}

impl Board {
    /// A board on `uart`, a pseudo-terminal's master whose termios give the host's rate.
    pub fn new(
        uart: OwnedFd,
        paced: bool,
        flash_path: Option<PathBuf>,
        firmware: Firmware,
    ) -> io::Result<Board> {
        let flash = match &flash_path {
            Some(p) => std::fs::OpenOptions::new().read(true).write(true).open(p)?,
            None => built_in_flash(&firmware.options.network)?,
        };
        let host_baud = crate::pty::speed(&uart)?;
        let rom = Rate::nominal(ROM_BAUD);
        let host = Rate::nominal(host_baud);
        let mut board = Board {
            // SAFETY: an OwnedFd stays open and names the same file until the AsyncFd drops it.
            uart: unsafe { AsyncFd::register(uart) }?,
            paced,
            to_host: Direction::new(paced, rom, host),
            to_chip: Direction::new(paced, host, rom),
            delivered_at: f64::NEG_INFINITY,
            tx: VecDeque::new(),
            tx_lost: 0,
            chip_uart: ChipUart::Rom,
            host_baud,
            autobaud_max: None,
            uart_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            busy: false,
            rx_idle: false,
            uart_readable: std::cell::Cell::new(false),
            lines: Lines::default(),
            chip: Chip::Held,
            boot_at: None,
            epoch: Instant::now(),
            flash_path,
            flash,
            loader: Loader::default(),
            firmware,
            page: Page::new().map_err(io::Error::other)?,
            exe: None,
            process: None,
            build: None,
            jump: None,
            rfc: None,
            rfc_baud: None,
        };
        board.boot(1);
        Ok(board)
    }

    /// Nanoseconds on the board's clock.
    fn now(&self) -> f64 {
        self.epoch.elapsed().as_nanos() as f64
    }

    fn instant(&self, ns: f64) -> Instant {
        self.epoch + Duration::from_nanos(ns.max(0.0) as u64)
    }

    /// The rate the chip's UART runs at now.
    fn chip_rate(&self) -> Rate {
        match self.chip_uart {
            ChipUart::Rom => Rate::nominal(ROM_BAUD),
            ChipUart::Loader(b) | ChipUart::Stub(b) => Rate::nominal(b),
            ChipUart::Firmware(b) => Rate::esp8266(b),
        }
    }

    /// The nominal rate of the chip's UART: what was asked of it.
    pub fn baud(&self) -> u32 {
        match self.chip_uart {
            ChipUart::Rom => ROM_BAUD,
            ChipUart::Loader(b) | ChipUart::Stub(b) | ChipUart::Firmware(b) => b,
        }
    }

    /// The rate of the host's serial port: an RFC 2217 client's, or the pseudo-terminal's.
    pub fn host_baud(&self) -> u32 {
        self.host_baud
    }

    /// Bytes of the chip's output the host's port lost since the board started, because
    /// nobody read it.
    pub fn host_lost(&self) -> u64 {
        self.tx_lost
    }

    /// Test fault: the ROM loader's autobaud locks only onto rates up to `max` (None: any),
    /// as behind a marginal cable or bridge.
    pub fn set_autobaud_max(&mut self, max: Option<u32>) {
        self.autobaud_max = max;
    }

    /// Reads the host's rate and the chip's, and sets both directions of the line to them.
    fn sync_rates(&mut self) {
        let host = match self.rfc_baud {
            Some(b) => b,
            None => crate::pty::speed(self.uart.get_ref()).unwrap_or(self.host_baud),
        };
        if host != self.host_baud {
            tracing::info!(baud = host, "host's port rate");
            self.host_baud = host;
        }
        if let ChipUart::Rom | ChipUart::Firmware(_) = self.chip_uart
            && let Some(b) = self.page.uart_baud().filter(|_| self.process.is_some())
        {
            if self.chip_uart != ChipUart::Firmware(b) {
                tracing::info!(baud = b, "the firmware's UART rate");
            }
            self.chip_uart = ChipUart::Firmware(b);
        }
        let (chip, host) = (self.chip_rate(), Rate::nominal(self.host_baud));
        self.to_host.set_tx(chip);
        self.to_host.set_rx(host);
        self.to_chip.set_tx(host);
        self.to_chip.set_rx(chip);
    }

    /// The ROM's reset message (cause 1: power-on, 2: EN pin; boot mode (3,6): flash, (1,7):
    /// the serial loader), then whatever it prints next.
    fn rom_says(&mut self, cause: u8, boot_mode: &str, then: &str) {
        let text = format!(
            "\r\n ets Jan  8 2013,rst cause:{cause}, boot mode:({boot_mode})\r\n\r\n{then}"
        );
        self.chip_sends(text.as_bytes());
    }

    /// Puts the chip's bytes on the wire (the ROM's messages, the loader's replies, the
    /// firmware's output), at the rate the chip's UART runs at now (the firmware may have just
    /// begun it); what the host's port has received so far moves on.
    fn chip_sends(&mut self, bytes: &[u8]) {
        // The host's receiver reads what is due at the rate it has now.
        self.sync_rates();
        let now = self.now();
        self.to_host.transmit(now, bytes, &mut self.tx);
        self.bound_stage();
    }

    /// Paced, a host that does not read its port loses what no buffer holds, as a tty does:
    /// the newest bytes.
    fn bound_stage(&mut self) {
        if self.paced && self.tx.len() > STAGE_MAX {
            let lost = self.tx.len() - STAGE_MAX;
            if self.tx_lost == 0 {
                tracing::warn!("nobody reads the serial port: its buffer is full, bytes are lost");
            }
            self.tx_lost += lost as u64;
            self.tx.truncate(STAGE_MAX);
        }
    }

    /// Boots from flash (GPIO0 high): the ROM checks the image there, and only an image that
    /// carries a relay build id runs the relay firmware.
    fn boot(&mut self, cause: u8) {
        self.rom_says(cause, "3,6", "");
        self.boot_from_flash();
    }

    /// Loads and runs what the flash holds; after a reset, or when the loader leaves for the
    /// flash, which prints no reset line.
    fn boot_from_flash(&mut self) {
        match self.image_in_flash() {
            Ok(id) => {
                // The ROM prints before it loads the image and jumps to it: the firmware starts
                // once its text has left the wire.
                self.chip = Chip::Booting;
                self.jump = Some((self.to_host.free_at(), id));
            }
            Err(rom) => {
                self.chip = Chip::Halted;
                self.chip_sends(rom.as_bytes());
                tracing::info!("booted: no relay in flash");
            }
        }
    }

    /// The ROM jumps to the image it loaded, once it has finished printing.
    fn jump_if_due(&mut self) {
        let due = self.jump.as_ref().is_some_and(|(at, _)| self.now() >= *at);
        if !due {
            return;
        }
        let (_, id) = self.jump.take().expect("due");
        if let Err(e) = self.start_firmware(&id) {
            tracing::error!("cannot start the firmware: {e}");
            self.chip = Chip::Halted;
            return;
        }
        tracing::info!(build = %id, env = self.firmware.program.env, "booted the relay firmware");
    }

    fn start_firmware(&mut self, id: &str) -> Result<(), arduino_host::Error> {
        let cached = self.exe.as_ref().is_some_and(|(have, _)| have == id);
        if !cached {
            let bytes = self.firmware.program.with_build_id(id)?;
            self.exe = Some((id.to_owned(), Executable::new(&bytes)?));
        }
        let (_, exe) = self.exe.as_ref().expect("just built");
        let running =
            arduino_host::boot(exe, self.flash.as_fd(), &self.page, &self.firmware.options)?;
        let link = running
            .uart
            .try_clone()
            .map_err(|e| arduino_host::Error::Io {
                what: "cannot share the UART link".into(),
                source: e,
            })?;
        self.process = Some(Process {
            running,
            // SAFETY: as for the UART: the AsyncFd owns the descriptor it watches.
            link: unsafe { AsyncFd::register(link) }.map_err(|e| arduino_host::Error::Io {
                what: "cannot watch the UART link".into(),
                source: e.into(),
            })?,
            to_chip: VecDeque::new(),
        });
        self.chip = Chip::Running;
        self.build = Some(id.to_owned());
        Ok(())
    }

    /// The build id of the relay image in flash, or what the ROM prints instead of running.
    fn image_in_flash(&self) -> Result<String, &'static str> {
        let Some(path) = &self.flash_path else {
            return Ok(self.firmware.built_in_id.clone());
        };
        // At most the largest flash: the file may have grown since the board started.
        let bytes = nodemcu::bounded::read(path, nodemcu::image::FLASH_MAX).map_err(|e| {
            tracing::warn!("cannot read the flash {}: {e}", path.display());
            "ets_main.c \r\n"
        })?;
        // The ROM checks the image at 0x0; an Arduino bootloader there boots the one behind it.
        match nodemcu::image::parse_firmware(&bytes) {
            Ok(fw) => fw.build_id().ok_or(""),
            Err(nodemcu::image::ImageError::BadChecksum { .. }) => Err("csum err\r\n"),
            Err(_) => Err("ets_main.c \r\n"),
        }
    }

    /// Pulses EN: the chip stops and starts again.
    pub fn reset(&mut self) {
        if self.chip == Chip::Off {
            return; // no power, no reset
        }
        self.hold();
        self.release();
    }

    /// EN low: the chip stops, and with it its RAM, the WiFi stack and every connection.
    fn hold(&mut self) {
        self.process = None;
        self.build = None;
        self.jump = None;
        // What is still on the wire stops with the transmitter.
        self.to_host = Direction::new(
            self.paced,
            Rate::nominal(ROM_BAUD),
            Rate::nominal(self.host_baud),
        );
        self.to_chip = Direction::new(
            self.paced,
            Rate::nominal(self.host_baud),
            Rate::nominal(ROM_BAUD),
        );
        self.tx.clear();
        self.chip = Chip::Held;
        self.boot_at = None;
        // A reset ends any stub that changed the rate and any rate the loader took: the ROM
        // starts at its own.
        self.chip_uart = ChipUart::Rom;
        self.page.uart_off();
        self.sync_rates();
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
            self.boot(cause);
        } else {
            self.enter_loader(cause);
        }
    }

    fn enter_loader(&mut self, cause: u8) {
        self.chip = Chip::Loader;
        self.loader = Loader::default();
        self.rom_says(cause, "1,7", "");
        tracing::info!("reset: ROM serial loader");
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

    /// Whether esptool's flasher stub answers in the loader's place.
    pub fn stub_running(&self) -> bool {
        self.chip == Chip::Loader && self.loader.stub_running()
    }

    /// The build id of the relay that runs, or that the ROM is about to jump to.
    pub fn build_id(&self) -> Option<&str> {
        self.build
            .as_deref()
            .or(self.jump.as_ref().map(|(_, id)| id.as_str()))
    }

    /// The host layer's counters: what the firmware did that the chip must never do in loop(),
    /// added up over every boot of this board.
    pub fn counters(&self) -> String {
        let mut text = String::from("counters");
        for (k, v) in self.page.counters() {
            text.push_str(&format!(" {k}={v}"));
        }
        text
    }

    /// Whether an RFC 2217 client holds the serial line.
    pub fn has_client(&self) -> bool {
        self.rfc.is_some()
    }

    /// An RFC 2217 client connects: until it leaves, it is the board's serial line, at the
    /// pseudo-terminal's rate until it sets its own.
    pub fn attach(&mut self, port: rfc2217::Port) {
        self.rfc = Some(port);
        self.rfc_baud = None;
    }

    /// Moves every byte that can move without waiting. Returns when nothing more can.
    pub fn pump(&mut self) {
        if self.boot_at.is_some_and(|t| Instant::now() >= t) {
            self.release();
        }
        self.watch_firmware();
        self.sync_rates();
        for _ in 0..PASSES {
            self.jump_if_due();
            let progress = self.read_uart()
                | self.deliver()
                | self.feed_firmware()
                | self.drain_firmware()
                | self.write_uart()
                | self.serve_rfc();
            if !progress {
                self.busy = false;
                return;
            }
        }
        self.busy = true;
    }

    /// A firmware that exits on its own has crashed: the chip is halted until the next reset.
    fn watch_firmware(&mut self) {
        let Some(p) = self.process.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = p.running.child.try_wait() {
            tracing::error!("the firmware stopped ({status}); the board halts until a reset");
            self.process = None;
            self.build = None;
            self.chip = Chip::Halted;
        }
    }

    /// Puts the host's bytes on the wire. Paced, they cross it at the host's rate whether or
    /// not the firmware keeps up, and its receive ring overruns as the chip's; the board reads
    /// only a little ahead of the wire, so the pseudo-terminal pushes back at the line rate.
    /// Unpaced, the wire is infinitely fast but waits for the firmware to take what it
    /// carries.
    fn read_uart(&mut self) -> bool {
        // An RFC 2217 client's bytes cross the wire before the pseudo-terminal's.
        let net = self.rfc.as_ref().is_some_and(|p| p.rx_waiting());
        if self.rx_idle && !net {
            if !self.uart_readable.replace(false) {
                return false;
            }
            self.rx_idle = false;
        }
        let now = self.now();
        let n = if self.paced {
            let ahead = (self.to_chip.free_at() - now).max(0.0);
            let room =
                (LOOKAHEAD.as_nanos() as f64 - ahead) * self.to_chip.tx().bytes_per_sec() / 1e9;
            if room < 1.0 { 0 } else { room as usize }
        } else {
            let backlog = self.process.as_ref().map_or(0, |p| p.to_chip.len());
            if backlog > 0 || self.to_chip.on_wire() > 0 {
                0
            } else {
                usize::MAX
            }
        };
        let n = n.min(self.uart_buf.len());
        if n == 0 {
            return false;
        }
        let got = if let Some(port) = self.rfc.as_mut().filter(|_| net) {
            port.take_rx(&mut self.uart_buf[..n])
        } else {
            match nix::unistd::read(self.uart.get_ref(), &mut self.uart_buf[..n]) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => {
                    self.rx_idle = true;
                    return false;
                }
                Ok(got) => {
                    // Fewer bytes than asked for: the UART is drained, and idle until it
                    // signals.
                    self.rx_idle = got < n;
                    got
                }
                Err(e) => {
                    tracing::warn!("uart read: {e}");
                    return false;
                }
            }
        };
        // The ROM loader takes its rate from the first bytes it sees (autobaud), when it can.
        if self.chip == Chip::Loader && self.chip_uart == ChipUart::Rom {
            let host = self.host_baud;
            if self.autobaud_max.is_none_or(|max| host <= max) {
                tracing::info!(baud = host, "the ROM loader took the host's rate");
                self.chip_uart = ChipUart::Loader(host);
                self.loader.autobauded(host);
                self.sync_rates();
            }
        }
        self.to_chip.send(now, &self.uart_buf[..got]);
        true
    }

    /// Hands whatever has crossed the wire by now to its receiver: the host's bytes to what
    /// runs on the chip, the chip's to the host's port.
    fn deliver(&mut self) -> bool {
        let now = self.now();
        let mut arrived = Vec::new();
        let to_chip = self.to_chip.receive(now, &mut arrived);
        if to_chip > 0 {
            self.receive(&arrived);
        }
        let to_host = self.to_host.receive(now, &mut self.tx);
        self.bound_stage();
        if to_chip + to_host > 0 {
            self.delivered_at = now;
        }
        to_chip + to_host > 0
    }

    /// Bytes that crossed the wire to the chip: whatever runs takes them.
    fn receive(&mut self, bytes: &[u8]) {
        match self.chip {
            Chip::Running => {
                if let Some(p) = self.process.as_mut() {
                    p.to_chip.extend(bytes);
                }
            }
            Chip::Loader => {
                let mut file = self.flash_path.as_ref().map(|_| FileFlash(&self.flash));
                let flash = file.as_mut().map(|f| f as &mut dyn rom::Flash);
                let (reply, after) = self.loader.input(bytes, flash);
                self.chip_sends(&reply);
                // A stub's new rate applies once its reply is on the wire at the old one.
                if let Some(baud) = self.loader.take_baud() {
                    tracing::info!(baud, "the flasher stub's UART rate");
                    self.chip_uart = ChipUart::Stub(baud);
                    self.sync_rates();
                }
                match after {
                    After::Stay => {}
                    // The ROM jumps from its loader to the firmware in flash.
                    After::Run => self.boot_from_flash(),
                    // A software reset keeps the boot mode latched at the last
                    // hardware reset: the chip comes back into its loader, as
                    // esp8266/Arduino#1722 shows ("rst cause:2, boot mode:(1,7)").
                    After::Reboot => {
                        let wire = std::mem::replace(
                            &mut self.to_host,
                            Direction::new(
                                self.paced,
                                Rate::nominal(ROM_BAUD),
                                Rate::nominal(ROM_BAUD),
                            ),
                        );
                        let staged = std::mem::take(&mut self.tx);
                        self.hold();
                        // The reply was already on its way out when the chip restarted.
                        self.to_host = wire;
                        self.tx = staged;
                        self.enter_loader(2);
                    }
                }
            }
            // Held in reset, or halted: nothing reads the UART.
            _ => {}
        }
    }

    /// Hands the wire's bytes to the firmware's UART.
    fn feed_firmware(&mut self) -> bool {
        let Some(p) = self.process.as_mut() else {
            return false;
        };
        let mut progress = false;
        while !p.to_chip.is_empty() {
            let (head, _) = p.to_chip.as_slices();
            match nix::unistd::write(p.link.get_ref(), head) {
                Ok(n) => {
                    p.to_chip.drain(..n);
                    progress = true;
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(_) => break, // the firmware is gone; watch_firmware notices
            }
        }
        progress
    }

    /// Takes what left the firmware's transmit FIFO and puts it on the wire. The firmware
    /// times its FIFO itself, at the rate its page names; unpaced, a port nobody reads holds
    /// the firmware back instead.
    fn drain_firmware(&mut self) -> bool {
        if !self.paced && self.tx.len() >= STAGE_MAX {
            return false;
        }
        let Some(p) = self.process.as_mut() else {
            return false;
        };
        let mut buf = [0u8; 16384];
        match nix::unistd::read(p.link.get_ref(), &mut buf) {
            Ok(n) if n > 0 => {
                self.chip_sends(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    fn write_uart(&mut self) -> bool {
        let mut progress = false;
        while !self.tx.is_empty() {
            // While an RFC 2217 client holds the line, the wire waits for it as it waits for
            // the pseudo-terminal otherwise.
            let room = self.rfc.as_ref().map_or(usize::MAX, |p| p.uart_room());
            let chunk = self.tx.make_contiguous();
            let chunk = &chunk[..chunk.len().min(room)];
            if chunk.is_empty() {
                break;
            }
            let written = match (
                nix::unistd::write(self.uart.get_ref(), chunk),
                &mut self.rfc,
            ) {
                // The client is the line, and the pseudo-terminal a copy of it: one that nobody
                // reads loses what it cannot take, as a USB-serial adapter's port does.
                (Err(nix::errno::Errno::EAGAIN), Some(port)) => {
                    port.pty_dropped += chunk.len() as u64;
                    Ok(chunk.len())
                }
                (other, _) => other,
            };
            if let (Ok(n), Some(port)) = (written, self.rfc.as_mut()) {
                port.uart_output(&chunk[..n]);
            }
            match written {
                Ok(n) => {
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

    /// When the loop must look again even if nothing becomes ready.
    pub fn deadline(&self) -> Instant {
        let now = Instant::now();
        if self.busy {
            return now;
        }
        let mut at = now + TICK;
        if let Some(t) = self.boot_at {
            at = at.min(t);
        }
        if let Some((jump, _)) = &self.jump {
            at = at.min(self.instant(*jump));
        }
        for due in [self.to_host.next_due(), self.to_chip.next_due()]
            .into_iter()
            .flatten()
        {
            let due = if self.paced {
                due.max(self.delivered_at + GRAIN)
            } else {
                due
            };
            at = at.min(self.instant(due));
        }
        // Paced, the board reads the host's bytes a little ahead of the wire: once half of
        // that is used up, it reads more.
        if self.paced && !self.rx_idle {
            let refill = self.to_chip.free_at() - LOOKAHEAD.as_nanos() as f64 / 2.0;
            at = at.min(self.instant(refill));
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
            if !self.tx.is_empty()
                && let Poll::Ready(Ok(mut g)) = self.uart.poll_write_ready(cx)
            {
                g.clear_ready();
                ready = true;
            }
            if let Some(port) = &self.rfc
                && port.poll_ready(cx)
            {
                ready = true;
            }
            if let Some(p) = &self.process {
                if let Poll::Ready(Ok(mut g)) = p.link.poll_read_ready(cx) {
                    g.clear_ready();
                    ready = true;
                }
                if !p.to_chip.is_empty()
                    && let Poll::Ready(Ok(mut g)) = p.link.poll_write_ready(cx)
                {
                    g.clear_ready();
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

impl Board {
    /// Serves the RFC 2217 client, if one is connected; lets it go once it has gone.
    fn serve_rfc(&mut self) -> bool {
        let Some(mut port) = self.rfc.take() else {
            return false;
        };
        let progress = port.serve(self);
        if port.finished() {
            tracing::info!("RFC 2217 client {} left the serial line", port.peer());
            if port.pty_dropped > 0 {
                tracing::info!(
                    "meanwhile nobody read the pseudo-terminal: it missed {} bytes of output",
                    port.pty_dropped
                );
            }
            self.rfc_baud = None;
        } else {
            self.rfc = Some(port);
        }
        self.sync_rates();
        progress
    }
}

/// An RFC 2217 client moves the adapter's modem lines as the control socket does, and sets
/// the rate of the adapter's port: the host's side of the line, which the chip's UART must
/// match to be understood.
impl rfc2217::Line for Board {
    fn dtr(&self) -> bool {
        self.lines.dtr
    }
    fn rts(&self) -> bool {
        self.lines.rts
    }
    fn set_dtr(&mut self, dtr: bool) {
        self.set_lines(Lines { dtr, ..self.lines });
    }
    fn set_rts(&mut self, rts: bool) {
        self.set_lines(Lines { rts, ..self.lines });
    }
    fn baud(&self) -> u32 {
        self.rfc_baud.unwrap_or(self.host_baud)
    }
    fn set_baud(&mut self, baud: u32) {
        self.rfc_baud = Some(baud);
        self.host_baud = baud;
        self.sync_rates();
    }
}

/// The flash of a board without a flash file: erased, with its network's credentials already
/// in the EEPROM sector, so its relay joins at once.
fn built_in_flash(network: &arduino_host::Network) -> io::Result<File> {
    use std::os::unix::fs::FileExt;
    let fd = nix::sys::memfd::memfd_create(c"flash", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let file = File::from(fd);
    file.set_len(FLASH_BYTES as u64)?;
    file.write_all_at(&vec![0xff; FLASH_BYTES], 0)?;
    if let Ok(wifi) = Wifi::new(network.ssid.clone(), network.psk.clone()) {
        let at = nodemcu::credentials::offset(FLASH_BYTES)
            .expect("the flash holds the EEPROM sector") as u64;
        file.write_all_at(&wifi.record(), at)?;
    }
    Ok(file)
}
