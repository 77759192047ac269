//! The ESP8266 Arduino core's API on the host: sketches built against it, and what a board
//! does to run one.
//!
//! `build.rs` compiles the layer (`include/`, `src/*.cpp`) and links the relay firmware's
//! sketch (`firmware/esp8266/src/main.cpp`, unchanged) once per PlatformIO environment, plus
//! the probe sketch the layer's tests drive. [`boot`] starts one as a fresh process, as a reset
//! starts the chip: its UART is a socket, its flash a file, and a shared [`Page`] carries the
//! UART's rate and the layer's counters to the board.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

/// A sketch linked against the layer.
#[derive(Debug)]
pub struct Program {
    pub name: &'static str,
    /// The PlatformIO environment whose flags built it.
    pub env: &'static str,
    /// The id `build_id.py` gives the same sources and environment.
    pub build_id: &'static str,
    /// Its `-D` flags, as platformio.ini sets them.
    pub defines: &'static [(&'static str, &'static str)],
    /// The host executable.
    pub bytes: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// The relay firmware built for PlatformIO environment `env`.
pub fn relay_firmware(env: &str) -> Option<&'static Program> {
    RELAY_FIRMWARE.iter().find(|p| p.env == env)
}

/// The build id record's mark, as `nodemcu::image` finds it in an image.
const MARK: &[u8] = b"relay-build-id:";
const BUILD_ID_MAX: usize = 40;

impl Program {
    pub fn define(&self, name: &str) -> Option<&'static str> {
        self.defines
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The executable with `id` in its build id record, so that the firmware names the build
    /// of the image the board booted.
    pub fn with_build_id(&self, id: &str) -> Result<Vec<u8>, Error> {
        if id.is_empty() || id.len() > BUILD_ID_MAX {
            return Err(Error::BuildId(id.to_owned()));
        }
        let mut bytes = self.bytes.to_vec();
        let mut found = bytes
            .windows(MARK.len())
            .enumerate()
            .filter(|(_, w)| *w == MARK)
            .map(|(i, _)| i + MARK.len());
        let (Some(at), None) = (found.next(), found.next()) else {
            return Err(Error::NoRecord(self.env));
        };
        let field = &mut bytes[at..at + BUILD_ID_MAX];
        field.fill(0);
        field[..id.len()].copy_from_slice(id.as_bytes());
        Ok(bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("build id `{0}` does not fit the firmware's record (1 to 40 characters)")]
    BuildId(String),
    #[error("the host firmware for {0} carries no single build id record")]
    NoRecord(&'static str),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io(what: &str) -> impl FnOnce(nix::errno::Errno) -> Error + '_ {
    move |e| Error::Io {
        what: what.to_owned(),
        source: e.into(),
    }
}

/// The descriptors the firmware finds open (`src/host.h`).
const UART_FD: RawFd = 3;
const PAGE_FD: RawFd = 4;
const FLASH_FD: RawFd = 5;

/// The page shared with the firmware (`host::Page` in `src/host.h`). It outlives boots: the
/// counters add up over every boot of one board.
pub struct Page {
    fd: OwnedFd,
    raw: std::ptr::NonNull<RawPage>,
}

#[repr(C)]
struct RawPage {
    magic: AtomicU64,
    uart_baud: AtomicU64,
    counters: AtomicU64,
    names: [u8; 512],
    value: [AtomicU64; 32],
}

const PAGE_MAGIC: u64 = 0x3154_534f_4844_5241; // "ARDHOST1"
const PAGE_SIZE: usize = 4096;
const _: () = assert!(std::mem::size_of::<RawPage>() <= PAGE_SIZE);

// SAFETY: the mapping is shared memory accessed only through atomics and, for the names, after
// the firmware published them (magic stored last, with a release fence).
unsafe impl Send for Page {}
unsafe impl Sync for Page {}

impl Page {
    pub fn new() -> Result<Page, Error> {
        let fd = nix::sys::memfd::memfd_create(
            c"arduino-host-page",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(io("cannot create the firmware page"))?;
        nix::unistd::ftruncate(&fd, PAGE_SIZE as i64).map_err(io("cannot size the page"))?;
        // SAFETY: a fresh shared mapping of a memfd we own, unmapped in Drop.
        let ptr = unsafe {
            mmap(
                None,
                std::num::NonZeroUsize::new(PAGE_SIZE).unwrap(),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(io("cannot map the page"))?;
        Ok(Page {
            fd,
            raw: ptr.cast(),
        })
    }

    fn raw(&self) -> &RawPage {
        // SAFETY: mapped for as long as self lives.
        unsafe { self.raw.as_ref() }
    }

    /// The rate the sketch began its UART at (`Serial.begin`); `None` while it is off.
    pub fn uart_baud(&self) -> Option<u32> {
        match self.raw().uart_baud.load(Ordering::Acquire) {
            0 => None,
            b => Some(u32::try_from(b).unwrap_or(u32::MAX)),
        }
    }

    /// A new boot starts with its UART off.
    pub fn uart_off(&self) {
        self.raw().uart_baud.store(0, Ordering::Release);
    }

    /// The layer's counters by name, in its order; empty until a firmware has booted.
    pub fn counters(&self) -> Vec<(String, u64)> {
        let raw = self.raw();
        if raw.magic.load(Ordering::Acquire) != PAGE_MAGIC {
            return Vec::new();
        }
        let len = raw.names.iter().position(|&b| b == 0).unwrap_or(0);
        let names = String::from_utf8_lossy(&raw.names[..len]).into_owned();
        let n = raw.counters.load(Ordering::Relaxed).min(32) as usize;
        names
            .split(' ')
            .take(n)
            .zip(&raw.value)
            .map(|(k, v)| (k.to_owned(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: mapped in new() with this length.
        let _ = unsafe { munmap(self.raw.cast(), PAGE_SIZE) };
    }
}

/// The network a firmware can join, and where it lives on it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// The board's address: a loopback address of its own, so its ports are the firmware's.
    pub ip: Ipv4Addr,
    pub ssid: Vec<u8>,
    pub psk: Vec<u8>,
}

/// How the board runs the firmware.
#[derive(Clone, Debug)]
pub struct Options {
    pub network: Network,
    /// UART bytes arrive at the line rate, so a full receive ring overruns as on the chip;
    /// unpaced, the line waits for room instead.
    pub paced: bool,
    /// The WiFi round trip: no acknowledgement reaches lwIP sooner after its data left.
    pub rtt: Duration,
}

/// A booted firmware: its process and the board's end of its UART.
pub struct Running {
    pub child: Child,
    /// UART bytes both ways, non-blocking.
    pub uart: OwnedFd,
}

impl Drop for Running {
    fn drop(&mut self) {
        // A reset or a power cut: the chip stops at once, RAM and all.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A copy of `fd` numbered at least 10, so the child's dup2 onto 3..=5 never overwrites a
/// descriptor it still needs.
fn high(fd: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor or -1.
    let raw = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if raw < 0 {
        return Err(Error::Io {
            what: "cannot duplicate a descriptor".into(),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: raw was just created and is ours.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// An executable in memory, ready to run: the program bytes in a sealed-off memfd.
pub struct Executable(OwnedFd);

impl Executable {
    pub fn new(bytes: &[u8]) -> Result<Executable, Error> {
        let fd = nix::sys::memfd::memfd_create(
            c"relay-firmware",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(io("cannot create the firmware's executable"))?;
        let mut written = 0;
        while written < bytes.len() {
            written += nix::unistd::write(&fd, &bytes[written..])
                .map_err(io("cannot write the firmware's executable"))?;
        }
        Ok(Executable(high(fd.as_fd())?))
    }
}

/// Boots `exe`: a fresh process with the UART, the page and the flash on its fixed descriptors.
/// It dies with the board.
pub fn boot(
    exe: &Executable,
    flash: BorrowedFd<'_>,
    page: &Page,
    opts: &Options,
) -> Result<Running, Error> {
    let (board_end, chip_end) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io("cannot create the UART link"))?;
    page.uart_off();
    let sources = [
        (high(chip_end.as_fd())?, UART_FD),
        (high(page.fd.as_fd())?, PAGE_FD),
        (high(flash)?, FLASH_FD),
    ];
    let targets: Vec<(RawFd, RawFd)> = sources.iter().map(|(s, t)| (s.as_raw_fd(), *t)).collect();
    let path = format!("/proc/self/fd/{}", exe.0.as_raw_fd());
    let parent = std::process::id() as libc::pid_t;
    let net = &opts.network;
    let mut cmd = Command::new(&path);
    cmd.env_clear()
        .env("ARDUINO_HOST_IP", net.ip.to_string())
        .env("ARDUINO_HOST_SSID", hex(&net.ssid))
        .env("ARDUINO_HOST_PSK", hex(&net.psk))
        .env("ARDUINO_HOST_PACED", if opts.paced { "1" } else { "0" })
        .env("ARDUINO_HOST_RTT_US", opts.rtt.as_micros().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &(src, dst) in &targets {
                if libc::dup2(src, dst) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // The chip has no life of its own: it goes when the board goes, and only then. In a
            // process group of its own, a terminal's Ctrl-C reaches the board, not the chip.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::setpgid(0, 0);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| Error::Io {
        what: format!("cannot start the firmware ({path})"),
        source: e,
    })?;
    drop(sources);
    drop(chip_end);
    Ok(Running {
        child,
        uart: board_end,
    })
}
