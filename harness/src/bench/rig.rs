//! The relays under test, each one pseudo-terminal hop from the harness, which plays the device.
//!
//! The relay is a board the harness opened (the virtual board holds the pty's master, the
//! harness opens its slave). For ser2net and socat the harness makes the pty pair itself, keeps
//! the master as the UART it reads and writes, and gives them the slave's path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serialport::{SerialPort, TTYPort};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::board::Board;
use crate::error::{BenchError, HilError, Result};
use crate::serial::Serial;

/// How long a helper may take to listen after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The reference every ratio is taken against.
pub const REFERENCE: &str = "ser2net-tuned";

/// ser2net's options beyond Debian's defaults, as ser2net.yaml(5) names them. Everything else
/// (`chardelay: true`, 64-byte buffers) stays at the default in `ser2net-default`.
pub const SER2NET_TUNED: [(&str, &str); 3] = [
    ("chardelay", "false"),
    ("dev-to-net-bufsize", "65536"),
    ("net-to-dev-bufsize", "65536"),
];

/// Options both ser2net configurations carry: four clients, as the relay, and no mDNS.
pub const SER2NET_COMMON: [(&str, &str); 2] = [("max-connections", "4"), ("mdns", "false")];

/// socat's transfer block: its largest step, so one client's copy is not cut into 8 KiB steps.
pub const SOCAT_BLOCK: usize = 65536;

/// A relay or helper that did not do its part: `why` says what it did instead.
pub(crate) fn failed(what: &'static str, why: impl std::fmt::Display) -> HilError {
    BenchError::Failed {
        what,
        why: why.to_string(),
    }
    .into()
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> BenchError {
    move |source| BenchError::Io { what, source }
}

/// Where the harness reaches the UART: a board's port, or the master of a pty pair it made.
enum Uart {
    Board(Box<Board>),
    Pty {
        serial: Serial,
        /// Held open so the master never sees a hangup between the helper's opens and closes.
        _slave: TTYPort,
    },
}

/// One relay under test, with what it needs to keep running.
pub struct Rig {
    /// `relay`, `ser2net-default`, `ser2net-tuned`, `socat`, or `relay-115200` for a paced board.
    pub name: String,
    /// How it runs, exactly, for the report.
    pub setup: String,
    pub tcp: SocketAddr,
    pub max_clients: usize,
    /// The UART's line rate in bytes per second when it is paced (a real or paced board).
    pub line_rate: Option<f64>,
    uart: Uart,
    /// Helper processes, killed when the rig is dropped.
    _helpers: Vec<Child>,
    /// A folder of the rig's own, removed when the rig is dropped.
    dir: Option<PathBuf>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Rig {
    /// A board the harness opened: the relay itself. `paced` says its UART runs at its baud.
    pub fn board(name: String, setup: String, board: Board, paced: bool) -> Rig {
        let mut board = Box::new(board);
        board.serial.set_logging(false);
        Rig {
            name,
            setup,
            tcp: board.tcp,
            max_clients: board.limits.max_clients,
            line_rate: paced.then(|| f64::from(board.profile.uart.baud) / 10.0),
            uart: Uart::Board(board),
            _helpers: Vec::new(),
            dir: None,
        }
    }

    pub fn serial(&mut self) -> &mut Serial {
        match &mut self.uart {
            Uart::Board(b) => &mut b.serial,
            Uart::Pty { serial, .. } => serial,
        }
    }

    /// ser2net on a pty pair of the harness's own: as Debian ships it, or `tuned`.
    pub async fn ser2net(tuned: bool) -> Result<Rig> {
        let name = if tuned { REFERENCE } else { "ser2net-default" };
        let dir = std::env::temp_dir().join(format!("relay-hil-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io(name))?;
        let (serial, slave, dev) = pty_pair(name)?;
        let port = free_port(name)?;
        let mut options: Vec<(&str, &str)> = SER2NET_COMMON.to_vec();
        if tuned {
            options.extend(SER2NET_TUNED);
        }
        let connector = format!("serialdev,{},115200n81,local", dev.display());
        let accepter = format!("tcp,127.0.0.1,{port}");
        let mut yaml = format!(
            "%YAML 1.1\n---\nconnection: &bench\n  accepter: {accepter}\n  connector: {connector}\n  \
             options:\n"
        );
        for (k, v) in &options {
            yaml += &format!("    {k}: {v}\n");
        }
        let config = dir.join("ser2net.yaml");
        std::fs::write(&config, yaml).map_err(io(name))?;
        let child = Command::new("ser2net")
            .args(["-n", "-c"])
            .arg(&config)
            .arg("-P")
            .arg(dir.join("ser2net.pid"))
            // Nothing of a helper's reaches the harness's stdout, which may carry the JSON.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| missing("ser2net", e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        // ser2net says nothing when it listens: the port answering is the only sign.
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
                // Let the probe go before measuring, so it holds no connection.
                crate::net::close_and_wait(s, until).await;
                break;
            }
            if Instant::now() > until {
                return Err(failed(
                    name,
                    format!("nothing listens on {addr} after 10 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let opts: Vec<String> = options.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        Ok(Rig {
            name: name.into(),
            setup: format!(
                "ser2net -n -c ser2net.yaml; accepter: {}; connector: serialdev,<pty slave>,\
                 115200n81,local; options: {}",
                accepter.replace(&port.to_string(), "<port>"),
                opts.join(", ")
            ),
            tcp: addr,
            max_clients: 4,
            line_rate: None,
            uart: Uart::Pty {
                serial,
                _slave: slave,
            },
            _helpers: vec![child],
            dir: Some(dir),
        })
    }

    /// socat between a TCP listener and a pty slave: one client at a time, the ceiling of a
    /// plain copy.
    pub async fn socat() -> Result<Rig> {
        let name = "socat";
        let (serial, slave, dev) = pty_pair(name)?;
        let port = free_port(name)?;
        let block = SOCAT_BLOCK.to_string();
        let listen = format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,max-children=1");
        let device = format!("FILE:{},raw,echo=0", dev.display());
        // -t 0.05: once the client closes, its child gives the pty 50 ms before it ends (the
        // default, 0.5 s, would only add idle time between measurements).
        let args = ["-d", "-d", "-b", &block, "-t", "0.05", &listen, &device];
        let mut child = Command::new("socat")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| missing("socat", e))?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("listening on") {
                    return true;
                }
            }
            false
        });
        if !ready.await.unwrap_or(false) {
            return Err(failed(name, "socat did not listen within 10 s"));
        }
        // socat logs every connection; its stderr must keep draining.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let shown = args
            .iter()
            .filter(|a| !a.starts_with("-d"))
            .map(|a| {
                a.replace(&port.to_string(), "<port>")
                    .replace(&dev.display().to_string(), "<pty slave>")
            })
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Rig {
            name: name.into(),
            setup: format!("socat {shown}"),
            tcp: SocketAddr::from(([127, 0, 0, 1], port)),
            max_clients: 1,
            line_rate: None,
            uart: Uart::Pty {
                serial,
                _slave: slave,
            },
            _helpers: vec![child],
            dir: None,
        })
    }
}

fn missing(what: &'static str, source: std::io::Error) -> BenchError {
    BenchError::Missing { what, source }
}

/// A raw pty pair: the master as the harness's UART, the slave held open, and its path.
fn pty_pair(what: &'static str) -> Result<(Serial, TTYPort, PathBuf)> {
    let (master, slave) = TTYPort::pair().map_err(|source| BenchError::Pty { what, source })?;
    let dev = PathBuf::from(
        slave
            .name()
            .ok_or_else(|| failed(what, "the pty slave has no name"))?,
    );
    let mut serial = Serial::new(&dev, master)?;
    serial.set_logging(false);
    Ok((serial, slave, dev))
}

/// A TCP port free on 127.0.0.1 a moment ago, for a helper to listen on.
fn free_port(what: &'static str) -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| io(what)(e).into())
}

/// `ser2net -v` and `socat -V`'s versions, when they are installed.
pub fn versions() -> (Option<String>, Option<String>) {
    let run = |tool: &str, flag: &str, prefix: &str| {
        let out = std::process::Command::new(tool).arg(flag).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_owned)
    };
    (
        run("ser2net", "-v", "ser2net version "),
        run("socat", "-V", "socat version "),
    )
}
