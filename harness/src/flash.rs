//! Flashing a relay image through the ESP8266 ROM serial loader, with espflash 2.1.
//!
//! espflash drives the same `serialport::SerialPort` the harness uses, so a NodeMCU's CP2102
//! and the virtual board's [`crate::serial::VirtualPort`] enter the loader the same way: the
//! auto-reset circuit, DTR and RTS. On the ESP8266 it writes through the ROM itself: 0x400-byte
//! blocks, no compression. espflash never changes the rate for this chip (espflash#472), and it
//! need not: the ROM takes its rate from the host's SYNC, so the port is simply opened at the
//! flashing rate before espflash connects.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use espflash::command::CommandType;
use espflash::flasher::{Flasher, ProgressCallbacks};
use espflash::interface::Interface;
use espflash::targets::Chip;
use serialport::UsbPortInfo;

use crate::board::{Board, BoardKind, OpenOptions, Target};
use crate::error::{BadImage, FlashError, ImageError, LoaderError, Result};

/// How long to wait for a boot line before taking the board's firmware as unknown.
const IDENTIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// `opts` for a board that can be flashed: a virtual board gets `flash_file` as its flash,
/// checked as the board would check it and its folder made.
pub fn with_flash_file(
    target: &Target,
    opts: &OpenOptions,
    flash_file: &Path,
) -> Result<OpenOptions> {
    let mut opts = opts.clone();
    if let Target::Virtual { .. } = target {
        virtual_board::board::check_flash_file(flash_file).map_err(|reason| {
            FlashError::FlashFile {
                path: flash_file.to_owned(),
                reason,
            }
        })?;
        if let Some(dir) = flash_file.parent() {
            std::fs::create_dir_all(dir).map_err(|source| FlashError::FlashFileDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        opts.virtual_args = vec!["--flash-file".into(), flash_file.display().to_string()];
    }
    Ok(opts)
}

/// The default flashing rate. Both NodeMCU bridges carry it (the CP2102 up to 1 Mbaud, the
/// CH340 up to 2 Mbaud), and the ROM meets it by autobaud: it times the host's SYNC bytes, so
/// no divider of its own can disagree with the bridge's. esptool-ck flashed NodeMCUs through
/// the ROM alone at 921600 (the ESP8266 core's FAQ, doc/faq/a01-espcomm_sync-failed.rst:216-219,
/// times a Blink upload there at about 8 s). The core's upload.py (tools/upload.py:32-36) lowers
/// 921600 to 460800 for esptool.py, whose stub switches rates after connecting; the ROM path
/// never switches. Where a cable or a bridge does not keep up, the flash falls back.
pub const DEFAULT_BAUD: u32 = 921_600;
/// What every ESP8266 ROM and bridge manage: the rate a flash falls back to.
pub const FALLBACK_BAUD: u32 = 115_200;
pub const MIN_BAUD: u32 = 9_600;
/// The highest rate the ESP8266 core offers for uploads (boards.txt, nodemcuv2.menu.baud).
pub const MAX_BAUD: u32 = 3_000_000;

/// `--flash-baud`: a rate a USB-serial bridge and the ROM's autobaud can meet.
pub fn baud(text: &str) -> std::result::Result<u32, String> {
    match text.parse::<u32>() {
        Ok(b) if (MIN_BAUD..=MAX_BAUD).contains(&b) => Ok(b),
        _ => Err(format!("must be a baud rate from {MIN_BAUD} to {MAX_BAUD}")),
    }
}

/// A relay image, checked before any board is touched.
#[derive(Clone, Debug)]
pub struct Image {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub build_id: String,
}

impl Image {
    /// Reads `path`, refused past 16 MiB (the largest flash) before it is read, and verifies it:
    /// what the ROM checks of the image at 0x0 (magic, segments, checksum), what eboot reads of
    /// an application at 0x1000 (whole header and segments), the length and CRC elf2bin stored
    /// in such a firmware, which `ESP.checkFlashCRC()` checks (cores/esp8266/Esp.cpp:466-480),
    /// the size the header declares, and a relay build id.
    pub fn load(path: &Path) -> Result<Image, ImageError> {
        let bad = |why: BadImage| ImageError {
            path: path.to_owned(),
            why,
        };
        let bytes = nodemcu::bounded::read(path, nodemcu::image::FLASH_MAX).map_err(|e| {
            use nodemcu::bounded::ReadError;
            match e {
                ReadError::Io(e) => bad(BadImage::Unreadable(e)),
                too_big => bad(BadImage::TooBig(too_big)),
            }
        })?;
        let fw = nodemcu::image::parse_firmware(&bytes).map_err(|e| bad(e.into()))?;
        // The file as elf2bin wrote it: on the chip, the CRC covers the flash from 0x0 for the
        // length it stored.
        fw.check_file_crc().map_err(|e| bad(e.into()))?;
        fw.fits(fw.boot.flash_size)
            .map_err(|e| bad(BadImage::PastDeclaredFlash(e)))?;
        let build_id = fw.build_id().ok_or_else(|| bad(BadImage::NoBuildId))?;
        Ok(Image {
            path: path.to_owned(),
            build_id,
            bytes,
        })
    }
}

/// What a flash did.
#[derive(Clone, Debug, PartialEq)]
pub enum Flashed {
    /// The board already ran this build.
    Skipped { build_id: String },
    Written {
        bytes: usize,
        elapsed: Duration,
        /// The rate the image went over.
        baud: u32,
        /// What the loader reported: chip, crystal, flash size, MAC.
        chip: String,
    },
}

impl Flashed {
    /// One line for people: what happened, and for a write its bytes, time and rate.
    pub fn summary(&self) -> String {
        match self {
            Flashed::Skipped { build_id } => {
                format!("skipped: the board already runs build {build_id} (--force flashes anyway)")
            }
            Flashed::Written {
                bytes,
                elapsed,
                baud,
                chip,
            } => format!(
                "wrote {bytes} bytes in {:.2} s ({:.1} KiB/s) at {baud} baud to {chip}",
                elapsed.as_secs_f64(),
                *bytes as f64 / 1024.0 / elapsed.as_secs_f64().max(1e-9)
            ),
        }
    }
}

/// Progress of the blocks written, shared with espflash's callbacks.
pub trait Progress: Send + 'static {
    fn start(&mut self, blocks: usize);
    fn block(&mut self, done: usize);
    fn done(&mut self);
}

/// The bar shown to people (hidden when stderr is not a terminal).
impl Progress for indicatif::ProgressBar {
    fn start(&mut self, blocks: usize) {
        self.set_length(blocks as u64);
        self.set_position(0);
    }
    fn block(&mut self, done: usize) {
        self.set_position(done as u64);
    }
    fn done(&mut self) {
        self.finish_and_clear();
    }
}

impl Progress for () {
    fn start(&mut self, _: usize) {}
    fn block(&mut self, _: usize) {}
    fn done(&mut self) {}
}

struct Callbacks<P> {
    progress: P,
    written: Arc<AtomicUsize>,
}

impl<P: Progress> ProgressCallbacks for Callbacks<P> {
    fn init(&mut self, _addr: u32, total: usize) {
        self.progress.start(total);
    }
    fn update(&mut self, current: usize) {
        self.written.store(current, Ordering::Relaxed);
        self.progress.block(current);
    }
    fn finish(&mut self) {
        self.progress.done();
    }
}

/// A flash to do: a checked image and how to write it, from the board's port to its banner.
#[derive(Clone, Debug)]
pub struct Job {
    pub image: Image,
    /// Write even when the board already runs the image's build.
    pub force: bool,
    /// The rate to try first; [`FALLBACK_BAUD`] follows if it fails.
    pub baud: u32,
    /// The virtual board's flash, a file kept between runs (a NodeMCU has its own).
    pub flash_file: PathBuf,
}

impl Job {
    /// Opens `target`'s port for flashing, without resetting it. A virtual board is started
    /// with [`Job::flash_file`] as its flash, checked as the board would check it and its
    /// folder made; a relay named by its serial port and address cannot be flashed.
    pub async fn attach(&self, target: &Target, opts: &OpenOptions) -> Result<Board> {
        if let Target::Endpoint { .. } = target {
            return Err(FlashError::NotFlashable.into());
        }
        let opts = with_flash_file(target, opts, &self.flash_file)?;
        Board::attach(target, &opts).await
    }

    /// The command that flashes `board` again whatever it runs, at the rate every board
    /// manages: the half-flashed report's hint.
    pub fn retry_command(&self, board: &Board) -> String {
        let mut retry = format!(
            "relay-hil flash --force --flash-baud {FALLBACK_BAUD} --firmware {}",
            self.image.path.display()
        );
        match board.kind {
            BoardKind::Virtual => {
                retry += &format!(
                    " --board virtual --flash-file {}",
                    self.flash_file.display()
                );
            }
            BoardKind::Nodemcu => retry += &format!(" --port {}", board.serial.path.display()),
            BoardKind::Endpoint => {}
        }
        retry
    }

    /// Flashes `board` as [`flash`] does, then makes it ready for scenarios whether it was
    /// written or skipped.
    pub async fn run(
        &self,
        board: &mut Board,
        banner_timeout: Duration,
        progress: impl Progress,
    ) -> Result<Flashed> {
        let retry = self.retry_command(board);
        let done = flash(
            board,
            &self.image,
            self.force,
            self.baud,
            banner_timeout,
            progress,
            &retry,
        )
        .await?;
        if matches!(done, Flashed::Skipped { .. }) {
            board.ready(banner_timeout).await?;
        }
        Ok(done)
    }
}

/// Flashes `image` at `baud` unless the board already runs its build (or `force`), then makes
/// the board ready ([`Board::ready`]): its banner must show the new build id. A loader that
/// does not answer at `baud`, or a write that breaks off there, is tried again from the start at
/// [`FALLBACK_BAUD`], with a warning. A skipped board is only identified; call `ready` before
/// using it. `retry` is the command that flashes this board again, for the half-flashed report.
#[allow(clippy::too_many_arguments)]
pub async fn flash(
    board: &mut Board,
    image: &Image,
    force: bool,
    baud: u32,
    banner_timeout: Duration,
    mut progress: impl Progress,
    retry: &str,
) -> Result<Flashed> {
    if !force {
        let running = board.identify(IDENTIFY_TIMEOUT).await?;
        tracing::info!(?running, "build on the board");
        if running.as_deref() == Some(image.build_id.as_str()) {
            return Ok(Flashed::Skipped {
                build_id: image.build_id.clone(),
            });
        }
    }
    let path = board.serial.path.clone();
    let uart_baud = board.profile.uart.baud;
    let mut rate = baud;
    // A write that broke off at the first rate: its blocks, and why.
    let mut broke_off: Option<(usize, LoaderError)> = None;
    let (outcome, mut written, elapsed) = loop {
        let (outcome, written, elapsed, p) = attempt(board, image, rate, progress).await?;
        progress = p;
        if rate == FALLBACK_BAUD {
            break (outcome, written, elapsed);
        }
        match outcome {
            Err(Failure::Midway(why)) => {
                tracing::warn!(
                    "flashing at {rate} baud failed ({why}); trying again at {FALLBACK_BAUD} baud"
                );
                broke_off = Some((written, why));
            }
            Err(Failure::Untouched(why)) => tracing::warn!(
                "flashing at {rate} baud failed ({why}); trying again at {FALLBACK_BAUD} baud"
            ),
            outcome => break (outcome, written, elapsed),
        }
        rate = FALLBACK_BAUD;
    };
    // The relay talks at its own rate.
    board.serial.set_baud(uart_baud)?;
    // A retry that never reached the loader leaves the flash as the broken write left it.
    let outcome = match (outcome, broke_off) {
        (Err(Failure::Untouched(again)), Some((blocks, why))) => {
            written = blocks;
            Err(Failure::Midway(LoaderError::Retried {
                first: Box::new(why),
                baud: FALLBACK_BAUD,
                source: Box::new(again),
            }))
        }
        (outcome, _) => outcome,
    };
    let chip = match outcome {
        Ok(chip) => chip,
        Err(Failure::Untouched(source)) => return Err(FlashError::Loader { path, source }.into()),
        Err(Failure::WrongChip(found)) => return Err(FlashError::WrongChip { path, found }.into()),
        Err(Failure::TooBig { bytes, flash }) => {
            return Err(ImageError {
                path: image.path.clone(),
                why: BadImage::PastBoardFlash { bytes, flash },
            }
            .into());
        }
        // Without a flash file the virtual board's loader refuses to write: nothing was erased.
        Err(Failure::Refused(source)) if board.kind == BoardKind::Virtual => {
            return Err(FlashError::Refused { path, source }.into());
        }
        Err(Failure::Midway(source) | Failure::Refused(source)) => {
            return Err(FlashError::HalfFlashed {
                path,
                blocks: written,
                total: image.bytes.len().div_ceil(BLOCK),
                source,
                retry: retry.to_owned(),
            }
            .into());
        }
    };
    let banner = board.ready(banner_timeout).await?;
    if banner.build != image.build_id {
        return Err(FlashError::WrongBuild {
            flashed: image.build_id.clone(),
            booted: banner.build,
        }
        .into());
    }
    Ok(Flashed::Written {
        bytes: image.bytes.len(),
        elapsed,
        baud: rate,
        chip,
    })
}

/// One try at `baud`: the outcome, the blocks written, and how long it took.
async fn attempt<P: Progress>(
    board: &mut Board,
    image: &Image,
    baud: u32,
    progress: P,
) -> Result<(std::result::Result<String, Failure>, usize, Duration, P)> {
    let path = board.serial.path.clone();
    let port = board.serial.port_for_flashing()?;
    let bytes = image.bytes.clone();
    let written = Arc::new(AtomicUsize::new(0));
    let mut callbacks = Callbacks {
        progress,
        written: written.clone(),
    };
    let start = Instant::now();
    let (outcome, callbacks) = tokio::task::spawn_blocking(move || {
        let outcome = write(port, baud, &bytes, &mut callbacks);
        (outcome, callbacks)
    })
    .await
    .map_err(|e| FlashError::Loader {
        path: path.clone(),
        source: LoaderError::Thread(e),
    })?;
    let elapsed = start.elapsed();
    board.serial.reclaim()?;
    Ok((
        outcome,
        written.load(Ordering::Relaxed),
        elapsed,
        callbacks.progress,
    ))
}

/// The ROM loader's block size on the ESP8266.
const BLOCK: usize = 0x400;

enum Failure {
    /// Nothing was written: the board is as it was.
    Untouched(LoaderError),
    /// The chip the loader names.
    WrongChip(String),
    /// The image's bytes, past the flash the loader reports.
    TooBig { bytes: usize, flash: usize },
    /// The write began (the ROM erases first): the board's flash is no longer whole.
    Midway(LoaderError),
    /// The loader answered FLASH_BEGIN with an error. On a NodeMCU its erase failed, maybe
    /// halfway; the virtual board refuses before erasing when it has no flash file.
    Refused(LoaderError),
}

fn write(
    mut port: Box<dyn serialport::SerialPort>,
    baud: u32,
    bytes: &[u8],
    callbacks: &mut dyn ProgressCallbacks,
) -> std::result::Result<String, Failure> {
    port.set_baud_rate(baud)
        .map_err(|source| Failure::Untouched(LoaderError::Baud { baud, source }))?;
    // A CP2102's ids: anything but the USB-JTAG bridge gets the classic auto-reset sequence.
    let usb = UsbPortInfo {
        vid: 0x10c4,
        pid: 0xea60,
        serial_number: None,
        manufacturer: None,
        product: None,
    };
    let interface = Interface { serial_port: port };
    // The ESP8266's ROM has no flasher stub to load in espflash 2.1: write through the ROM.
    let mut flasher = Flasher::connect(interface, usb, None, false)
        .map_err(|source| Failure::Untouched(LoaderError::NoAnswer { baud, source }))?;
    if flasher.chip() != Chip::Esp8266 {
        return Err(Failure::WrongChip(flasher.chip().to_string()));
    }
    let info = flasher
        .device_info()
        .map_err(|source| Failure::Untouched(LoaderError::DeviceInfo { source }))?;
    let flash = info
        .flash_size
        .encode_flash_size(Chip::Esp8266)
        .ok()
        .and_then(nodemcu::image::flash_size)
        .unwrap_or(4 << 20);
    if bytes.len() > flash {
        return Err(Failure::TooBig {
            bytes: bytes.len(),
            flash,
        });
    }
    flasher
        .write_bin_to_flash(0, bytes, Some(callbacks))
        .map_err(|source| match &source {
            espflash::error::Error::RomError(rom)
                if rom
                    .to_string()
                    .contains(&CommandType::FlashBegin.to_string()) =>
            {
                Failure::Refused(LoaderError::Write { source })
            }
            _ => Failure::Midway(LoaderError::Write { source }),
        })?;
    Ok(format!(
        "{} ({} MHz crystal, {} KiB flash, MAC {})",
        info.chip,
        info.crystal_frequency,
        flash / 1024,
        info.mac_address
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nodemcu::profile::Profile;

    use super::*;
    use crate::error::HilError;

    fn job(flash_file: &str) -> Job {
        Job {
            image: Image {
                path: "relay.bin".into(),
                bytes: Vec::new(),
                build_id: "x".into(),
            },
            force: false,
            baud: DEFAULT_BAUD,
            flash_file: flash_file.into(),
        }
    }

    fn opts() -> OpenOptions {
        OpenOptions {
            profile: Profile::load(nodemcu::profile::DEFAULT_PROFILE).unwrap(),
            banner_timeout: Duration::from_secs(1),
            wifi: None,
            virtual_args: Vec::new(),
            reset: None,
        }
    }

    #[test]
    fn a_flashing_rate_is_one_the_rom_and_a_bridge_can_meet() {
        assert_eq!(baud("921600"), Ok(921_600));
        assert_eq!(baud("9600"), Ok(MIN_BAUD));
        assert_eq!(baud("3000000"), Ok(MAX_BAUD));
        for bad in ["9599", "3000001", "0", "fast"] {
            assert!(
                baud(bad).unwrap_err().contains("from 9600 to 3000000"),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_relay_named_by_hand_cannot_be_flashed() {
        let target = Target::Endpoint {
            serial: "/dev/null".into(),
            addr: "127.0.0.1:1".into(),
        };
        let err = job("unused").attach(&target, &opts()).await.err().unwrap();
        assert!(
            matches!(err, HilError::Flash(FlashError::NotFlashable)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_flash_file_the_board_cannot_hold_is_refused_before_it_starts() {
        let target = Target::Virtual {
            program: "/nonexistent/virtual-board".into(),
            args: Vec::new(),
        };
        let err = job("/dev/zero")
            .attach(&target, &opts())
            .await
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("--flash-file /dev/zero: not a regular file"),
            "{err}"
        );
    }
}
