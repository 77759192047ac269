//! The harness's errors: one enum per layer, each variant a one-line diagnosis with its hint.
//!
//! A message is printed alone (the CLI's `relay-hil: …` line, a scenario's transcript), so it
//! names its cause in its own text; the cause is also its `source`, for callers that walk the
//! chain. The hint is the variant's miette `help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use miette::Diagnostic;
use thiserror::Error;

/// Any error of the harness: the layer it came from, or a banner the harness cannot read.
#[derive(Debug, Error, Diagnostic)]
pub enum HilError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Board(#[from] BoardError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    VirtualBoard(#[from] VirtualBoardError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Flash(#[from] FlashError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Labgrid(#[from] LabgridError),
    #[error(transparent)]
    #[diagnostic(help("see the README's \"Board profiles\" for every key"))]
    Profile(#[from] nodemcu::profile::ProfileError),
    /// A boot line or banner the harness cannot read.
    #[error(transparent)]
    #[diagnostic(help("the firmware and this harness disagree: flash a matching build"))]
    BadBanner(#[from] relay_core::text::ParseError),
}

impl HilError {
    /// The hint: what to try next.
    pub fn hint(&self) -> String {
        self.help().map_or_else(String::new, |h| h.to_string())
    }
}

pub type Result<T, E = HilError> = std::result::Result<T, E>;

/// A labgrid place: acquiring it and finding its serial port.
#[derive(Debug, Error, Diagnostic)]
pub enum LabgridError {
    #[error("cannot run labgrid-client: {source}")]
    #[diagnostic(help(
        "install labgrid 26 (`pip install labgrid==26.0.1`; ./hil setup puts one in \
         target/tools/labgrid-26.0.1/bin) and put labgrid-client on PATH"
    ))]
    Client { source: std::io::Error },
    #[error("labgrid place {place}: `labgrid-client {command}` failed: {message}")]
    #[diagnostic(help(
        "LG_COORDINATOR names the coordinator (default 127.0.0.1:20408); `labgrid-client \
         places` lists the places"
    ))]
    Refused {
        place: String,
        command: String,
        message: String,
    },
    #[error("labgrid place {place} is acquired by {holder}")]
    #[diagnostic(help("wait for its holder to release it, or choose another place"))]
    Held { place: String, holder: String },
    #[error("labgrid place {place} has no NetworkSerialPort (it has: {found})")]
    #[diagnostic(help(
        "export the board's serial port: a USBSerialPort (served through ser2net), or \
         `relay-hil serve` published as a NetworkSerialPort"
    ))]
    NoSerialPort { place: String, found: String },
    #[error("labgrid place {place}: its NetworkSerialPort speaks {protocol}, not rfc2217")]
    #[diagnostic(help("the harness resets and flashes the board over RFC 2217"))]
    Protocol { place: String, protocol: String },
}

/// The serial port: finding, opening, locking and using it.
#[derive(Debug, Error, Diagnostic)]
pub enum PortError {
    #[error("serial port {path} does not exist")]
    #[diagnostic(help("`relay-hil boards` lists the serial ports it can see"))]
    Missing { path: PathBuf },
    #[error("serial port {path} is in use by another process")]
    #[diagnostic(help(
        "another relay-hil run or a serial monitor holds it (each run locks its port): stop \
         that, or choose another board"
    ))]
    Busy { path: PathBuf },
    #[error("cannot open serial port {path}: {source}")]
    #[diagnostic(help(
        "check the cable and your permissions (the `dialout` group on Debian and Ubuntu)"
    ))]
    Open {
        path: PathBuf,
        source: serialport::Error,
    },
    #[error("serial port {path}: {source}")]
    #[diagnostic(help(
        "check the cable and your permissions (the `dialout` group on Debian and Ubuntu)"
    ))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "serial port {path}: cannot set DTR/RTS to reset the board ({source}); a NodeMCU's \
         USB-serial adapter can, a bare pseudo-terminal cannot"
    )]
    #[diagnostic(help(
        "check the cable and your permissions (the `dialout` group on Debian and Ubuntu); a \
         relay on a port with no modem lines needs --serial/--addr with a profile whose \
         capabilities.reset is false"
    ))]
    Lines {
        path: PathBuf,
        source: serialport::Error,
    },
    #[error(transparent)]
    #[diagnostic(help(
        "a remote port is rfc2217://HOST:PORT, as ser2net or `relay-hil serve` serves it"
    ))]
    BadUrl(#[from] crate::rfc2217::UrlError),
    #[error("cannot open serial port {url}: {source}")]
    #[diagnostic(help(
        "is a bridge serving it in RFC 2217 mode there (ser2net's telnet(rfc2217) accepter, or \
         `relay-hil serve`)? Its raw TCP port does not answer the option"
    ))]
    Remote { url: String, source: std::io::Error },
    #[error("serial port {path}: cannot discard its input: {source}")]
    #[diagnostic(help(
        "a port served over RFC 2217 must answer PURGE-DATA; a local port, check the cable"
    ))]
    Discard {
        path: PathBuf,
        source: serialport::Error,
    },
    #[error("serial port {path}: cannot set the port to {baud} baud: {source}")]
    #[diagnostic(help(
        "check the cable and your permissions (the `dialout` group on Debian and Ubuntu)"
    ))]
    Baud {
        path: PathBuf,
        baud: u32,
        source: serialport::Error,
    },
}

/// A TCP connection to the relay.
#[derive(Debug, Error, Diagnostic)]
#[error("cannot reach the relay at {addr}: {why}")]
#[diagnostic(help(
    "is the board on the network and the relay running? Compare the IP in its banner with --addr"
))]
pub struct ConnectError {
    pub addr: String,
    #[source]
    pub why: Unreachable,
}

/// Why a relay's address could not be reached.
#[derive(Debug, Error)]
pub enum Unreachable {
    #[error("connection refused (nothing listens on that port)")]
    Refused(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no address")]
    NoAddress,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The board behind the port: found, reset, identified and provisioned.
#[derive(Debug, Error, Diagnostic)]
pub enum BoardError {
    #[error("cannot reset the board through {name}: {why}")]
    #[diagnostic(help("check the lab's reset line (labgrid-client io get) and its wiring to EN"))]
    ExternalReset { name: String, why: String },
    #[error("no NodeMCU found on USB (looked for CP210x 10c4:ea60 and CH340 1a86:7523)")]
    #[diagnostic(help("plug a NodeMCU in, or name its port with --port"))]
    NoneFound,
    #[error("{count} NodeMCU-like boards found ({ports}); which one?")]
    #[diagnostic(help("name one with --port"))]
    Many { count: usize, ports: String },
    #[error("no relay banner on {path} within {waited:?}")]
    #[diagnostic(help(
        "is the relay firmware flashed, and is the baud rate right? For a relay that prints no \
         banner, use --serial/--addr with a profile whose capabilities.reset is false"
    ))]
    NoBanner { path: PathBuf, waited: Duration },
    #[error("the board on {path} has no WiFi credentials and none were given")]
    #[diagnostic(help(
        "set RELAY_HIL_WIFI_SSID and RELAY_HIL_WIFI_PASSWORD (empty for an open network); the \
         harness sends them over the UART and the board keeps them in flash"
    ))]
    NoCredentials { path: PathBuf },
    /// The firmware's own reason, from its reply, or that it gave none.
    #[error("the board refused the WiFi credentials: {reason}")]
    #[diagnostic(help(
        "check RELAY_HIL_WIFI_SSID and RELAY_HIL_WIFI_PASSWORD against the rules in \
         firmware/core/README.md"
    ))]
    Provision { reason: String },
}

/// The virtual board's process, up to its ready line.
#[derive(Debug, Error, Diagnostic)]
#[diagnostic(help("run `relay-hil virtual-board -v` to see it start"))]
pub enum VirtualBoardError {
    #[error("the virtual board did not start: cannot find this program: {0}")]
    Program(#[source] std::io::Error),
    #[error("the virtual board did not start: cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("the virtual board did not start: no ready line within {0:?}")]
    NotReady(Duration),
    #[error("the virtual board did not start: {0}")]
    Read(#[source] std::io::Error),
    #[error("the virtual board did not start: it exited ({status}) before it was ready")]
    Exited { status: String },
    #[error("the virtual board did not start: unreadable ready line `{line}`: {source}")]
    ReadyLine {
        line: String,
        source: serde_json::Error,
    },
}

/// A command on the virtual board's control socket.
#[derive(Debug, Error, Diagnostic)]
#[diagnostic(help("the virtual board may have exited; see its log above"))]
pub enum ControlError {
    #[error("virtual board control socket {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("virtual board control socket {addr}: the board closed the control connection")]
    Closed { addr: SocketAddr },
    /// The board's `err …` reply.
    #[error("virtual board control socket {addr}: {reply}")]
    Refused { addr: SocketAddr, reply: String },
    #[error("virtual board control socket {addr}: {source}")]
    Task {
        addr: SocketAddr,
        source: tokio::task::JoinError,
    },
}

/// A firmware image that must not reach a board.
#[derive(Debug, Error, Diagnostic)]
#[error("{path}: not a flashable relay image: {why}")]
#[diagnostic(help(
    "build the firmware with `pio run -d firmware/esp8266` (it lands in \
     firmware/esp8266/.pio/build/nodemcuv2/firmware.bin), or make a virtual-board test image \
     with `relay-hil image`"
))]
pub struct ImageError {
    pub path: PathBuf,
    #[source]
    pub why: BadImage,
}

/// What is wrong with an image.
#[derive(Debug, Error)]
pub enum BadImage {
    #[error(transparent)]
    Unreadable(std::io::Error),
    #[error("{0}, the largest ESP8266 flash")]
    TooBig(#[source] nodemcu::bounded::ReadError),
    #[error(transparent)]
    Invalid(#[from] nodemcu::image::ImageError),
    /// Bigger than the flash its own header declares.
    #[error("{0} it declares")]
    PastDeclaredFlash(#[source] nodemcu::image::ImageError),
    #[error("it carries no relay build id (`relay-build-id:`), so it is not a relay image")]
    NoBuildId,
    /// Bigger than the flash the loader reported.
    #[error("the image is {bytes} bytes, bigger than the board's {flash}-byte flash")]
    PastBoardFlash { bytes: usize, flash: usize },
}

/// `relay-hil image`: a test image that cannot be made.
#[derive(Debug, Error, Diagnostic)]
pub enum MakeImageError {
    #[error("build id `{0}` must be 1 to 40 letters, digits, `.`, `_` or `-`")]
    BuildId(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Flashing: the loader, the write, and the build that boots after it.
#[derive(Debug, Error, Diagnostic)]
pub enum FlashError {
    #[error("cannot enter the ROM loader on {path}; the board is untouched: {source}")]
    #[diagnostic(help(
        "is it a NodeMCU with its auto-reset circuit? Otherwise hold FLASH, tap RST, and try \
         again"
    ))]
    Loader { path: PathBuf, source: LoaderError },
    #[error("the board on {path} is an {found}, not an ESP8266; nothing was written")]
    #[diagnostic(help("choose the ESP8266's port with --port"))]
    WrongChip { path: PathBuf, found: String },
    #[error(
        "the board on {path} stopped answering mid-flash after {blocks} of {total} blocks: it is \
         HALF-FLASHED and will not boot ({source})"
    )]
    #[diagnostic(help(
        "check the cable and power, then flash again (the ROM loader survives any flash): {retry}"
    ))]
    HalfFlashed {
        path: PathBuf,
        blocks: usize,
        total: usize,
        source: LoaderError,
        /// The command that flashes this board again.
        retry: String,
    },
    #[error("the virtual board on {path} refused to write its flash: {source}")]
    #[diagnostic(help(
        "the virtual board writes only a flash file: give it one with --flash-file PATH (the \
         harness passes it on to the board); its log says the same"
    ))]
    Refused { path: PathBuf, source: LoaderError },
    #[error("flashed build {flashed}, but the board boots build {booted}")]
    #[diagnostic(help(
        "the write did not take: flash again with --force, and check that nothing else holds \
         the port"
    ))]
    WrongBuild { flashed: String, booted: String },
    /// The virtual board's flash file, as the board itself checks it.
    #[error("--flash-file {path}: {reason}")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    FlashFile { path: PathBuf, reason: String },
    #[error("cannot create {path}: {source}")]
    #[diagnostic(help("--flash-file names where the virtual board's flash is kept"))]
    FlashFileDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--firmware needs a NodeMCU (--port) or the virtual board")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    NotFlashable,
}

/// One try at talking to the ROM loader and writing through it.
#[derive(Debug, Error)]
pub enum LoaderError {
    #[error("cannot set the port to {baud} baud: {source}")]
    Baud {
        baud: u32,
        source: serialport::Error,
    },
    #[error("the ROM loader did not answer at {baud} baud: {}", chain(source))]
    NoAnswer {
        baud: u32,
        source: espflash::error::Error,
    },
    #[error("reading the chip's details: {}", chain(source))]
    DeviceInfo { source: espflash::error::Error },
    #[error("{}", chain(source))]
    Write { source: espflash::error::Error },
    #[error("the flashing thread failed: {0}")]
    Thread(#[source] tokio::task::JoinError),
    /// A write that broke off, then a retry at the fallback rate that never reached the loader.
    #[error("{first}; at {baud} baud: {source}")]
    Retried {
        first: Box<LoaderError>,
        baud: u32,
        source: Box<LoaderError>,
    },
}

/// An error and its causes on one line: espflash's own messages leave the detail to them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A run's artifacts that could not be written.
#[derive(Debug, Error, Diagnostic)]
pub enum ArtifactsError {
    #[error("cannot make a run folder in {base}: {source}")]
    Claim {
        base: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write artifacts to {dir}: {source}")]
    Write {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Junit {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A benchmark that could not finish: a helper that would not start, or a relay that stopped.
#[derive(Debug, Error, Diagnostic)]
pub enum BenchError {
    #[error("benchmark failed: remoteness: {why}")]
    #[diagnostic(help("a smaller run (--smoke) or -v shows where it stops"))]
    Remote { why: String },
    #[error("benchmark failed: {what}: cannot run {what} ({source})")]
    #[diagnostic(help("install it with: apt-get install ser2net socat (`./hil setup` does)"))]
    Missing {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("benchmark failed: {what}: {source}")]
    #[diagnostic(help("a smaller run (--smoke) or -v shows where it stops"))]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("benchmark failed: {what}: {source}")]
    #[diagnostic(help("a smaller run (--smoke) or -v shows where it stops"))]
    Pty {
        what: &'static str,
        source: serialport::Error,
    },
    #[error("benchmark failed: {what}: {source}")]
    #[diagnostic(help("a smaller run (--smoke) or -v shows where it stops"))]
    Task {
        what: &'static str,
        source: tokio::task::JoinError,
    },
    /// A relay or helper that did not do its part; `why` says what it did instead.
    #[error("benchmark failed: {what}: {why}")]
    #[diagnostic(help("a smaller run (--smoke) or -v shows where it stops"))]
    Failed { what: &'static str, why: String },
}

/// Options that do not fit together, or values no board can take.
#[derive(Debug, Error, Diagnostic)]
pub enum UsageError {
    #[error("--port (a NodeMCU) and --serial (another relay) exclude each other")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    PortAndSerial,
    #[error("several boards (--port A,B, --labgrid A,B) are for `run`; this command takes one")]
    #[diagnostic(help("name one board, or run the suite on all of them with `relay-hil run`"))]
    SeveralBoards,
    #[error("--serial names a relay's port but not its --addr")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    SerialWithoutAddr,
    #[error("--addr needs --serial (another relay) or --port (a NodeMCU)")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    AddrAlone,
    #[error("--board virtual excludes --port (RELAY_HIL_PORT) and --serial (RELAY_HIL_SERIAL)")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    VirtualWithPort,
    #[error("{var}={value}: {why}")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    Variable {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("{vars}: {source}")]
    #[diagnostic(help("`relay-hil run --help` lists the board options and their variables"))]
    Wifi {
        vars: &'static str,
        source: relay_core::provision::Refused,
    },
    #[error("unknown scenario `{name}`")]
    #[diagnostic(help("the scenarios are {known}"))]
    UnknownScenario { name: String, known: String },
    // The bench's rates: one line each, the rates that exist named in it.
    #[error("--baud: a NodeMCU is measured at its own rate, uart.baud {own} of profile {profile}")]
    BaudOfNodemcu { own: u32, profile: String },
    #[error("--baud needs the virtual board or a NodeMCU")]
    BaudNeedsBoard,
    #[error(
        "--baud {rate}: no board profile runs {profile}'s relay at {rate} baud; the rates that \
         exist: {have}"
    )]
    NoProfileAtRate {
        rate: u32,
        profile: String,
        have: String,
    },
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_layer_keeps_its_cause_and_its_hint_through_the_top() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let e: HilError = ConnectError {
            addr: "127.0.0.1:1".into(),
            why: Unreachable::Refused(refused),
        }
        .into();
        assert_eq!(
            e.to_string(),
            "cannot reach the relay at 127.0.0.1:1: connection refused (nothing listens on that \
             port)"
        );
        assert!(
            e.hint().starts_with("is the board on the network"),
            "{}",
            e.hint()
        );
        let io = e
            .source()
            .and_then(|why| why.source())
            .and_then(|cause| cause.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused)
        );
    }

    #[test]
    fn a_half_flashed_board_s_hint_is_the_command_that_flashes_it_again() {
        let cut = serialport::Error::new(serialport::ErrorKind::NoDevice, "gone");
        let e: HilError = FlashError::HalfFlashed {
            path: "/dev/ttyUSB0".into(),
            blocks: 5,
            total: 293,
            source: LoaderError::Baud {
                baud: 115_200,
                source: cut,
            },
            retry: "relay-hil flash --force --firmware relay.bin".into(),
        }
        .into();
        assert!(e.to_string().contains("after 5 of 293 blocks"), "{e}");
        assert!(
            e.to_string()
                .ends_with("(cannot set the port to 115200 baud: gone)"),
            "{e}"
        );
        assert!(
            e.hint()
                .ends_with("survives any flash): relay-hil flash --force --firmware relay.bin"),
            "{}",
            e.hint()
        );
    }

    #[test]
    fn a_retry_names_both_tries() {
        let try_at = |baud| LoaderError::Baud {
            baud,
            source: serialport::Error::new(serialport::ErrorKind::NoDevice, "gone"),
        };
        let e = LoaderError::Retried {
            first: Box::new(try_at(921_600)),
            baud: 115_200,
            source: Box::new(try_at(115_200)),
        };
        assert_eq!(
            e.to_string(),
            "cannot set the port to 921600 baud: gone; at 115200 baud: cannot set the port to \
             115200 baud: gone"
        );
    }

    #[test]
    fn the_bench_s_rate_refusals_are_one_line_with_no_hint() {
        let e = UsageError::BaudNeedsBoard;
        assert!(e.help().is_none());
        assert!(UsageError::AddrAlone.help().is_some());
    }
}
