//! The harness's one error type: a one-line diagnosis naming the thing, plus a hint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HilError {
    #[error("serial port {path} does not exist")]
    PortMissing { path: PathBuf },
    #[error("serial port {path} is in use by another process")]
    PortBusy { path: PathBuf },
    #[error("cannot open serial port {path}: {source}")]
    PortOpen {
        path: PathBuf,
        source: serialport::Error,
    },
    #[error("serial port {path}: {source}")]
    PortIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no NodeMCU found on USB (looked for CP210x 10c4:ea60 and CH340 1a86:7523)")]
    NoBoardFound,
    #[error("{count} NodeMCU-like boards found ({ports}); which one?")]
    ManyBoards { count: usize, ports: String },
    #[error("no relay banner on {path} within {waited:?}")]
    NoBanner { path: PathBuf, waited: Duration },
    #[error("unreadable relay banner `{line}`: {reason}")]
    BadBanner { line: String, reason: String },
    #[error("cannot reach the relay at {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("{reason}")]
    Usage { reason: String },
    #[error(transparent)]
    Profile(#[from] nodemcu::profile::ProfileError),
    #[error("the virtual board did not start: {reason}")]
    VirtualBoard { reason: String },
    #[error("benchmark failed: {reason}")]
    Bench { reason: String },
    #[error("virtual board control socket {addr}: {reason}")]
    Control { addr: SocketAddr, reason: String },
    #[error("{path}: not a flashable relay image: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("cannot enter the ROM loader on {path}; the board is untouched: {reason}")]
    Loader { path: PathBuf, reason: String },
    #[error("the board on {path} is an {found}, not an ESP8266; nothing was written")]
    WrongChip { path: PathBuf, found: String },
    #[error(
        "the board on {path} stopped answering mid-flash after {blocks} of {total} blocks: it is \
         HALF-FLASHED and will not boot ({reason})"
    )]
    HalfFlashed {
        path: PathBuf,
        blocks: usize,
        total: usize,
        reason: String,
        retry: String,
    },
    #[error("the virtual board on {path} refused to write its flash: {reason}")]
    FlashRefused { path: PathBuf, reason: String },
    #[error("flashed build {flashed}, but the board boots build {booted}")]
    WrongBuild { flashed: String, booted: String },
    #[error("the board on {path} has no WiFi credentials and none were given")]
    NoCredentials { path: PathBuf },
    #[error("the board refused the WiFi credentials: {reason}")]
    Provision { reason: String },
}

impl From<relay_core::text::ParseError> for HilError {
    fn from(e: relay_core::text::ParseError) -> HilError {
        HilError::BadBanner {
            line: e.line,
            reason: e.reason,
        }
    }
}

impl HilError {
    /// What to try next.
    pub fn hint(&self) -> String {
        if let HilError::HalfFlashed { retry, .. } = self {
            return format!(
                "check the cable and power, then flash again (the ROM loader survives any \
                 flash): {retry}"
            );
        }
        match self {
            HilError::PortMissing { .. } => "`relay-hil boards` lists the serial ports it can see",
            HilError::PortBusy { .. } => {
                "another relay-hil run or a serial monitor holds it (each run locks its port): \
                 stop that, or choose another board"
            }
            HilError::PortOpen { .. } | HilError::PortIo { .. } => {
                "check the cable and your permissions (the `dialout` group on Debian and Ubuntu)"
            }
            HilError::NoBoardFound => "plug a NodeMCU in, or name its port with --port",
            HilError::ManyBoards { .. } => "name one with --port",
            HilError::NoBanner { .. } => {
                "is the relay firmware flashed, and is the baud rate right? For a relay that \
                 prints no banner, use --serial/--addr with a profile whose capabilities.reset \
                 is false"
            }
            HilError::BadBanner { .. } => {
                "the firmware and this harness disagree: flash a matching build"
            }
            HilError::Connect { .. } => {
                "is the board on the network and the relay running? Compare the IP in its banner \
                 with --addr"
            }
            HilError::Usage { .. } => {
                "`relay-hil run --help` lists the board options and their variables"
            }
            HilError::Profile(_) => "see the README's \"Board profiles\" for every key",
            HilError::VirtualBoard { .. } => "run `relay-hil virtual-board -v` to see it start",
            HilError::Bench { .. } => "a smaller run (--smoke) or -v shows where it stops",
            HilError::Control { .. } => "the virtual board may have exited; see its log above",
            HilError::BadImage { .. } => {
                "build the firmware with `pio run -d firmware/esp8266` (it lands in \
                 firmware/esp8266/.pio/build/nodemcuv2/firmware.bin), or make a virtual-board \
                 test image with `relay-hil image`"
            }
            HilError::Loader { .. } => {
                "is it a NodeMCU with its auto-reset circuit? Otherwise hold FLASH, tap RST, and \
                 try again"
            }
            HilError::WrongChip { .. } => "choose the ESP8266's port with --port",
            HilError::FlashRefused { .. } => {
                "the virtual board writes only a flash file: give it one with --flash-file PATH \
                 (`relay-hil flash --board virtual` passes it to the board as --flash); its log \
                 says the same"
            }
            HilError::HalfFlashed { .. } => unreachable!("answered above"),
            HilError::WrongBuild { .. } => {
                "the write did not take: flash again with --force, and check that nothing else \
                 holds the port"
            }
            HilError::NoCredentials { .. } => {
                "set RELAY_HIL_WIFI_SSID and RELAY_HIL_WIFI_PASSWORD (empty for an open network); \
                 the harness sends them over the UART and the board keeps them in flash"
            }
            HilError::Provision { .. } => {
                "check RELAY_HIL_WIFI_SSID and RELAY_HIL_WIFI_PASSWORD against the rules in \
                 firmware/core/README.md"
            }
        }
        .to_owned()
    }
}

pub type Result<T, E = HilError> = std::result::Result<T, E>;
