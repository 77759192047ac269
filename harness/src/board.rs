//! Boards: the virtual board, a real NodeMCU on USB, or any serial + TCP endpoint.
//!
//! All three are driven through one `serialport::SerialPort` (see [`crate::serial`]): a reset is
//! the same DTR/RTS pulse whether it reaches a CP2102 or the virtual board's control socket.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nodemcu::profile::Profile;
use relay_core::Config;
use relay_core::provision::{BOOT_PREFIX, REPLY_PREFIX, Wifi};
use relay_core::text::{BANNER_PREFIX, Banner, Boot, Counters};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::error::{
    BoardError, ConnectError, ControlError, Result, Unreachable, VirtualBoardError,
};
use crate::select::MAX_WAIT;
use crate::serial::{Serial, VirtualPort, open_serial};

/// USB-serial bridges found on NodeMCU boards.
pub const USB_IDS: [(u16, u16, &str); 2] = [(0x10c4, 0xea60, "CP210x"), (0x1a86, 0x7523, "CH340")];

/// How long EN is held low for a reset; the ESP8266 needs well under this.
const RESET_PULSE: Duration = Duration::from_millis(100);

/// How long a virtual board may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which board to run against.
#[derive(Clone, Debug)]
pub enum Target {
    /// Start a virtual board process (`program` with `args`).
    Virtual { program: PathBuf, args: Vec<String> },
    /// A real NodeMCU on a serial port; `None` finds the one plugged in.
    Port {
        path: Option<PathBuf>,
        addr: Option<String>,
    },
    /// Any relay: a serial path and a TCP address, driven only as its profile allows.
    Endpoint { serial: PathBuf, addr: String },
}

/// The kind of board: what the harness may do with it (start it, reset it, find it on USB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BoardKind {
    /// The virtual board (the default when no port is named).
    Virtual,
    /// A NodeMCU on USB: the one --port names, or the one found.
    Nodemcu,
    /// Any relay named by its serial port and TCP address (--serial, --addr); never reset.
    #[value(skip)]
    Endpoint,
}

impl BoardKind {
    /// Its name in reports and suite names: `virtual`, `nodemcu`, `endpoint`.
    pub fn name(self) -> &'static str {
        match self {
            BoardKind::Virtual => "virtual",
            BoardKind::Nodemcu => "nodemcu",
            BoardKind::Endpoint => "endpoint",
        }
    }
}

impl std::fmt::Display for BoardKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

pub struct Board {
    pub kind: BoardKind,
    pub profile: Profile,
    pub serial: Serial,
    pub tcp: SocketAddr,
    pub status: Option<SocketAddr>,
    pub banner: Option<Banner>,
    /// The relay's configuration: from its banner once it has printed one, else its profile.
    pub limits: Config,
    /// The virtual board's control socket (reset lines, power).
    pub control: Option<SocketAddr>,
    /// The lab's reset line, when it resets the board instead of DTR/RTS.
    reset: Option<ExternalReset>,
    /// What to provision a board with that has other credentials, or none.
    wifi: Option<Wifi>,
    /// A real board's TCP address when its banner's IP is not the one to use.
    addr: Option<String>,
    /// The virtual board's process, stopped when the board is dropped.
    _process: Option<Stopper>,
}

/// Owns a virtual board's process and asks it to stop (SIGTERM, on which it shuts down
/// cleanly) when dropped; tokio reaps it afterwards.
struct Stopper(Child);

impl Drop for Stopper {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Options that apply to every kind of board.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    pub profile: Profile,
    /// How long to wait for the banner after a reset (a real board joins WiFi first).
    pub banner_timeout: Duration,
    /// Credentials for a board whose boot line shows other ones, or none.
    pub wifi: Option<Wifi>,
    /// Extra arguments for a virtual board (its flash file, when one is flashed).
    pub virtual_args: Vec<String>,
    /// A reset line of the lab's, used instead of DTR/RTS to reset the board.
    pub reset: Option<ExternalReset>,
}

/// A reset line outside the serial port (a lab's relay or GPIO on EN): asserting it holds the
/// chip in reset, as labgrid's DigitalOutputResetDriver has it.
#[derive(Clone)]
pub struct ExternalReset {
    /// What it is, for messages.
    pub name: String,
    /// Asserts (`true`) or releases the line; blocking.
    pub set: std::sync::Arc<dyn Fn(bool) -> std::result::Result<(), String> + Send + Sync>,
}

impl std::fmt::Debug for ExternalReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Board {
    /// Opens the board and waits for its banner: ready for scenarios.
    pub async fn open(target: &Target, opts: &OpenOptions) -> Result<Board> {
        let mut board = Board::attach(target, opts).await?;
        if board.kind != BoardKind::Endpoint {
            board.ready(opts.banner_timeout).await?;
        }
        Ok(board)
    }

    /// Opens the board's port (starting a virtual board) without resetting it, for a flasher.
    pub async fn attach(target: &Target, opts: &OpenOptions) -> Result<Board> {
        match target {
            Target::Virtual { program, args } => attach_virtual(program, args, opts).await,
            Target::Port { path, addr } => {
                let path = match path {
                    Some(p) => p.clone(),
                    None => find_nodemcu()?,
                };
                let serial = open_serial(&path, opts.profile.uart.baud)?;
                Ok(Board::new(
                    BoardKind::Nodemcu,
                    serial,
                    opts,
                    None,
                    addr.clone(),
                ))
            }
            Target::Endpoint { serial, addr } => open_endpoint(serial, addr, opts).await,
        }
    }

    fn new(
        kind: BoardKind,
        serial: Serial,
        opts: &OpenOptions,
        process: Option<Stopper>,
        addr: Option<String>,
    ) -> Board {
        Board {
            kind,
            profile: opts.profile.clone(),
            serial,
            tcp: SocketAddr::from(([0, 0, 0, 0], 0)),
            status: None,
            banner: None,
            limits: opts.profile.relay,
            control: None,
            reset: opts.reset.clone(),
            wifi: opts.wifi.clone(),
            addr,
            _process: process,
        }
    }

    /// Resets the board, waits for its banner, and (on a NodeMCU) finds the relay on the
    /// network from it.
    pub async fn ready(&mut self, timeout: Duration) -> Result<Banner> {
        let banner = self.reset(timeout).await?;
        if self.kind == BoardKind::Nodemcu {
            self.tcp = match &self.addr {
                Some(a) => resolve(a)?,
                None => resolve(&format!("{}:{}", banner.ip, banner.port))?,
            };
            if self.profile.capabilities.status && banner.status_port != 0 {
                self.status = Some(SocketAddr::new(self.tcp.ip(), banner.status_port));
            }
            probe(self.tcp).await?;
        }
        Ok(banner)
    }

    /// Pulses EN through RTS; GPIO0 stays high, so the firmware boots.
    async fn pulse_reset(&mut self) -> Result<()> {
        if let Some(line) = self.reset.clone() {
            let set = |level: bool| {
                let line = line.clone();
                async move {
                    let name = line.name.clone();
                    tokio::task::spawn_blocking(move || (line.set)(level))
                        .await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                        .map_err(|why| BoardError::ExternalReset { name, why })
                }
            };
            set(true).await?;
            tokio::time::sleep(RESET_PULSE).await;
            self.serial.discard_input()?;
            return Ok(set(false).await?);
        }
        self.serial.set_lines(false, true)?;
        tokio::time::sleep(RESET_PULSE).await;
        self.serial.discard_input()?;
        Ok(self.serial.set_lines(false, false)?)
    }

    /// The next line before `deadline` that contains `prefix`, from the prefix on.
    async fn line_with(&mut self, prefixes: &[&str], deadline: Instant) -> Result<Option<String>> {
        while let Some(line) = self.serial.line(deadline).await? {
            let text = String::from_utf8_lossy(&line);
            // A real chip first prints its ROM messages at 74880 baud: noise here.
            if let Some(at) = prefixes.iter().filter_map(|p| text.find(p)).min() {
                return Ok(Some(text[at..].to_owned()));
            }
        }
        Ok(None)
    }

    /// Resets the board and returns the build its firmware reports first (boot line or
    /// banner), or `None` if it reports nothing relay-like within `timeout`.
    pub async fn identify(&mut self, timeout: Duration) -> Result<Option<String>> {
        self.pulse_reset().await?;
        let deadline = deadline_after(timeout);
        Ok(
            match self
                .line_with(&[BOOT_PREFIX, BANNER_PREFIX], deadline)
                .await?
            {
                Some(l) if l.starts_with(BOOT_PREFIX) => Some(Boot::parse(&l)?.build),
                Some(l) => Some(Banner::parse(&l)?.build),
                None => None,
            },
        )
    }

    /// Resets the board, provisions its WiFi credentials if its boot line asks for others,
    /// and reads the banner.
    pub async fn reset(&mut self, timeout: Duration) -> Result<Banner> {
        self.pulse_reset().await?;
        let deadline = deadline_after(timeout);
        let no_banner = |path: PathBuf| BoardError::NoBanner {
            path,
            waited: timeout,
        };
        loop {
            let Some(line) = self
                .line_with(&[BOOT_PREFIX, BANNER_PREFIX], deadline)
                .await?
            else {
                return Err(no_banner(self.serial.path.clone()).into());
            };
            if line.starts_with(BOOT_PREFIX) {
                let boot = Boot::parse(&line)?;
                match (&self.wifi, &boot.wifi) {
                    (None, None) => {
                        return Err(BoardError::NoCredentials {
                            path: self.serial.path.clone(),
                        }
                        .into());
                    }
                    (Some(w), stored) if stored.as_deref() != Some(w.digest().as_str()) => {
                        let w = w.clone();
                        self.provision(&w, deadline).await?;
                    }
                    _ => {}
                }
                continue;
            }
            let banner = Banner::parse(&line)?;
            self.limits = banner.relay;
            self.banner = Some(banner.clone());
            return Ok(banner);
        }
    }

    /// Sends credentials in answer to a boot line and reads the firmware's reply.
    async fn provision(&mut self, wifi: &Wifi, deadline: Instant) -> Result<()> {
        tracing::info!(?wifi, "provisioning WiFi credentials");
        self.serial.write_all(wifi.request().as_bytes()).await?;
        match self.line_with(&[REPLY_PREFIX], deadline).await? {
            Some(reply) if reply.starts_with("relay provision ok ") => Ok(()),
            Some(reply) => Err(BoardError::Provision {
                reason: reply
                    .trim_end()
                    .trim_start_matches("relay provision error ")
                    .to_owned(),
            }
            .into()),
            None => Err(BoardError::Provision {
                reason: "no reply before the banner timeout".into(),
            }
            .into()),
        }
    }

    /// The virtual board's view of its firmware: how often it waited in loop(), overran its
    /// UART, or lost a connection to lwIP's PCB pool (`counters` on the control socket).
    /// `None` for real boards, which cannot count these.
    pub async fn firmware_counters(&self) -> Result<Option<Counters>> {
        let Some(control) = self.control else {
            return Ok(None);
        };
        let reply = tokio::task::spawn_blocking(move || VirtualPort::command(control, "counters"))
            .await
            .map_err(|source| ControlError::Task {
                addr: control,
                source,
            })??;
        let line = reply
            .lines()
            .find(|l| l.starts_with("counters"))
            .unwrap_or("");
        Ok(Some(Counters(
            line.split(' ')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )))
    }

    /// The status channel's text, if the board serves one.
    pub async fn status(&self) -> Option<String> {
        use tokio::io::AsyncReadExt;
        let addr = self.status?;
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        .ok()?
        .ok()?;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
            .await
            .ok()?
            .ok()?;
        Some(text)
    }
}

/// `wait` from now. The options bound every wait to [`MAX_WAIT`]; a longer one from a library
/// caller is taken as that, so the deadline cannot overflow.
fn deadline_after(wait: Duration) -> Instant {
    Instant::now() + wait.min(MAX_WAIT)
}

fn resolve(addr: &str) -> Result<SocketAddr, ConnectError> {
    let err = |why| ConnectError {
        addr: addr.to_owned(),
        why,
    };
    addr.to_socket_addrs()
        .map_err(|e| err(e.into()))?
        .next()
        .ok_or_else(|| err(Unreachable::NoAddress))
}

async fn attach_virtual(program: &Path, args: &[String], opts: &OpenOptions) -> Result<Board> {
    let mut child = Command::new(program)
        .args(args)
        .args(&opts.virtual_args)
        .arg("--profile")
        .arg(opts.profile.load_arg())
        .stdin(Stdio::null())
        // The board's own progress lines would drown the run's; -v in RUST_LOG brings them back.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "virtual_board=warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|source| VirtualBoardError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut child = Stopper(child);
    let mut line = String::new();
    let mut stdout = BufReader::new(stdout);
    let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line));
    match read.await {
        Err(_) => return Err(VirtualBoardError::NotReady(READY_TIMEOUT).into()),
        Ok(Err(e)) => return Err(VirtualBoardError::Read(e).into()),
        Ok(Ok(0)) => {
            let status = child
                .0
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_default();
            return Err(VirtualBoardError::Exited { status }.into());
        }
        Ok(Ok(_)) => {}
    }
    let ready: virtual_board::Ready =
        serde_json::from_str(&line).map_err(|source| VirtualBoardError::ReadyLine {
            line: line.trim().to_owned(),
            source,
        })?;
    let port = VirtualPort::open(&ready.serial, ready.baud, ready.control)?;
    let serial = Serial::new(&ready.serial, port)?;
    let mut board = Board::new(BoardKind::Virtual, serial, opts, Some(child), None);
    board.tcp = ready.tcp;
    board.status = ready.status;
    board.control = Some(ready.control);
    Ok(board)
}

/// Fails fast, naming the address, when nothing answers there.
async fn probe(addr: SocketAddr) -> Result<(), ConnectError> {
    crate::net::Client::connect("probe".into(), addr, None)
        .await
        .map(drop)
}

async fn open_endpoint(serial_path: &Path, addr: &str, opts: &OpenOptions) -> Result<Board> {
    let serial = open_serial(serial_path, opts.profile.uart.baud)?;
    let mut board = Board::new(
        BoardKind::Endpoint,
        serial,
        opts,
        None,
        Some(addr.to_owned()),
    );
    board.tcp = resolve(addr)?;
    let p = &opts.profile;
    board.status = (p.capabilities.status && p.net.status_port != 0)
        .then(|| SocketAddr::new(board.tcp.ip(), p.net.status_port));
    probe(board.tcp).await?;
    Ok(board)
}

/// A serial port the harness can see, with what it knows of it.
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub path: PathBuf,
    /// Stable `/dev/serial/by-id/...` name, if udev made one.
    pub by_id: Option<PathBuf>,
    pub usb: Option<(u16, u16)>,
    pub product: Option<String>,
    /// The USB bridge, if it is one a NodeMCU carries.
    pub bridge: Option<&'static str>,
}

/// Every serial port on the machine, NodeMCU-like ones first.
pub fn list_ports() -> Vec<PortInfo> {
    let by_id: Vec<(PathBuf, PathBuf)> = std::fs::read_dir("/dev/serial/by-id")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((std::fs::canonicalize(e.path()).ok()?, e.path())))
        .collect();
    let mut ports: Vec<PortInfo> = serialport::available_ports()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let path = PathBuf::from(&p.port_name);
            let (usb, product) = match &p.port_type {
                serialport::SerialPortType::UsbPort(u) => (Some((u.vid, u.pid)), u.product.clone()),
                _ => (None, None),
            };
            let bridge = usb.and_then(|(v, d)| {
                USB_IDS
                    .iter()
                    .find(|(vid, pid, _)| (*vid, *pid) == (v, d))
                    .map(|(_, _, n)| *n)
            });
            let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let by_id = by_id
                .iter()
                .find(|(c, _)| *c == canon)
                .map(|(_, l)| l.clone());
            PortInfo {
                path,
                by_id,
                usb,
                product,
                bridge,
            }
        })
        .collect();
    ports.sort_by_key(|p| (p.bridge.is_none(), p.path.clone()));
    ports
}

/// The one NodeMCU-like port plugged in, by its stable name when there is one.
pub fn find_nodemcu() -> Result<PathBuf> {
    let found: Vec<PortInfo> = list_ports()
        .into_iter()
        .filter(|p| p.bridge.is_some())
        .collect();
    match found.as_slice() {
        [] => Err(BoardError::NoneFound.into()),
        [one] => Ok(one.by_id.clone().unwrap_or_else(|| one.path.clone())),
        many => Err(BoardError::Many {
            count: many.len(),
            ports: many
                .iter()
                .map(|p| p.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into()),
    }
}
