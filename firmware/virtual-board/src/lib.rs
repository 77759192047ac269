//! A NodeMCU twin: the relay firmware's own sketch, built for the host, behind a pseudo-terminal
//! (the UART) and a loopback address of its own (the WiFi network).
//!
//! Started as a process, it prints one [`Ready`] JSON line on stdout once it is reachable, and
//! runs until SIGTERM, SIGINT or its parent process goes away.

pub mod board;
pub mod cli;
pub mod control;
pub mod pty;
pub mod rfc2217;
pub mod rom;
pub mod stub;
pub mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use arduino_host::{Network, Program};
use nodemcu::profile::Profile;
use relay_core::provision::Wifi;
use relay_core::{Eol, Mode};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use board::{Board, Firmware};

/// The one line the board prints on stdout when it is ready, so a test can find it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub event: String,
    pub pid: u32,
    /// The UART: open this path as a serial port.
    pub serial: PathBuf,
    /// The relay's TCP address: the board's IP and the firmware's port.
    pub tcp: SocketAddr,
    /// The status channel's address, if the firmware serves one.
    pub status: Option<SocketAddr>,
    /// The control socket's address (reset lines, power, counters).
    pub control: SocketAddr,
    /// The serial port over RFC 2217 (telnet COM-PORT-OPTION): data and modem lines.
    pub rfc2217: SocketAddr,
    pub profile: String,
    /// The PlatformIO environment whose build runs.
    pub env: String,
    /// The build id of the relay that booted; `None` when the flash holds no relay.
    pub build: Option<String>,
    /// The rate the serial port started at.
    pub baud: u32,
    pub paced: bool,
}

/// How to run the board; the CLI fills this in.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    /// The board's address; its ports are the firmware's own.
    pub ip: Ipv4Addr,
    pub control_port: u16,
    /// The RFC 2217 port on 127.0.0.1; 0 picks a free one.
    pub rfc2217_port: u16,
    pub pace: bool,
    pub baud: u32,
    /// The WiFi round trip the firmware's TCP stack waits for acknowledgements.
    pub rtt: Duration,
    pub link: Option<PathBuf>,
    /// The build id of the built-in relay (without a flash file); its own by default.
    pub build_id: Option<String>,
    /// The board's flash as a file (created erased when missing); without one the relay is
    /// built in.
    pub flash: Option<PathBuf>,
    /// The network the board's WiFi can join.
    pub wifi: Wifi,
    /// The process whose exit stops the board.
    pub parent: nix::unistd::Pid,
}

/// A loopback address for this board: every 127.x.y.z reaches the host, so each board gets
/// its own and the firmware listens on its own ports there, as on a network.
pub fn default_ip() -> Ipv4Addr {
    let pid = std::process::id() & 0x3f_ffff;
    Ipv4Addr::from(0x7f40_0000 | pid)
}

/// The firmware build a profile describes, refused when the profile's limits are not the
/// ones that build was compiled with.
pub fn firmware_for(profile: &Profile) -> anyhow::Result<&'static Program> {
    let env = &profile.firmware.env;
    let program = arduino_host::relay_firmware(env).ok_or_else(|| {
        let known: Vec<&str> = arduino_host::RELAY_FIRMWARE.iter().map(|p| p.env).collect();
        anyhow::anyhow!(
            "profile {}: firmware.env `{env}` is no environment of firmware/esp8266/platformio.ini \
             (it has {})",
            profile.origin(),
            known.join(", ")
        )
    })?;
    let r = &profile.relay;
    let expect = [
        (
            "RELAY_MAX_CLIENTS",
            "relay.max_clients",
            r.max_clients.to_string(),
        ),
        ("RELAY_MAX_LINE", "relay.max_line", r.max_line.to_string()),
        ("RELAY_TXQ_SIZE", "relay.txq_size", r.txq_size.to_string()),
        (
            "RELAY_UARTQ_SIZE",
            "relay.uartq_size",
            r.uartq_size.to_string(),
        ),
        (
            "RELAY_STALL_TIMEOUT_MS",
            "relay.stall_timeout_ms",
            r.stall_timeout_ms.to_string(),
        ),
        (
            "RELAY_MODE",
            "relay.mode",
            match r.mode {
                Mode::Line => "RELAY_MODE_LINE",
                Mode::Raw => "RELAY_MODE_RAW",
            }
            .into(),
        ),
        (
            "RELAY_EOL",
            "relay.eol",
            match r.eol {
                Eol::Lf => "RELAY_EOL_LF",
                Eol::Cr => "RELAY_EOL_CR",
                Eol::Crlf => "RELAY_EOL_CRLF",
            }
            .into(),
        ),
        ("RELAY_BAUD", "uart.baud", profile.uart.baud.to_string()),
        ("RELAY_PORT", "net.port", profile.net.port.to_string()),
        (
            "RELAY_STATUS_PORT",
            "net.status_port",
            profile.net.status_port.to_string(),
        ),
    ];
    let differ: Vec<String> = expect
        .iter()
        .filter(|(define, _, want)| program.define(define) != Some(want.as_str()))
        .map(|(define, field, want)| {
            format!(
                "{field} is {want}, the build has {define}={}",
                program.define(define).unwrap_or("(unset)")
            )
        })
        .collect();
    if !differ.is_empty() {
        anyhow::bail!(
            "profile {} does not match the firmware environment `{env}`: {}",
            profile.origin(),
            differ.join("; ")
        );
    }
    Ok(program)
}

fn define_u16(program: &Program, name: &str) -> u16 {
    program
        .define(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn bind(ip: Ipv4Addr, port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port))
        .await
        .with_context(|| format!("cannot listen for the {what} on {ip}:{port}"))
}

/// Runs the board until it is told to stop. Returns the reason it stopped.
pub async fn run(opts: Options) -> anyhow::Result<&'static str> {
    let program = firmware_for(&opts.profile)?;
    let flash = match &opts.flash {
        Some(path) => Some(erased_if_missing(path)?),
        None => None,
    };
    let pty =
        pty::Pty::open(opts.link.as_deref(), opts.baud).context("cannot open a pseudo-terminal")?;
    let control = bind(Ipv4Addr::LOCALHOST, opts.control_port, "control socket").await?;
    let rfc2217 = bind(Ipv4Addr::LOCALHOST, opts.rfc2217_port, "RFC 2217 port").await?;
    let port = define_u16(program, "RELAY_PORT");
    let status_port = define_u16(program, "RELAY_STATUS_PORT");
    let firmware = Firmware {
        program,
        options: arduino_host::Options {
            network: Network {
                ip: opts.ip,
                ssid: opts.wifi.ssid.clone(),
                psk: opts.wifi.psk.clone(),
            },
            paced: opts.pace,
            rtt: opts.rtt,
        },
        built_in_id: opts
            .build_id
            .clone()
            .unwrap_or_else(|| program.build_id.to_owned()),
    };
    let uart = pty.master.try_clone()?;
    let mut board = Board::new(uart, opts.pace, flash, firmware)?;

    let (ctrl_tx, mut ctrl_rx) = mpsc::channel(16);
    let ready = Ready {
        event: "ready".into(),
        pid: std::process::id(),
        serial: pty.path.clone(),
        tcp: SocketAddr::from((opts.ip, port)),
        status: (status_port != 0).then(|| SocketAddr::from((opts.ip, status_port))),
        control: control.local_addr()?,
        rfc2217: rfc2217.local_addr()?,
        profile: opts.profile.name.clone(),
        env: program.env.to_owned(),
        build: board.build_id().map(str::to_owned),
        baud: opts.baud,
        paced: opts.pace,
    };
    // Before the ready line: a signal sent on reading it must find the handlers in place.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(control::serve(control, ctrl_tx));
    println!("{}", serde_json::to_string(&ready)?);
    tracing::info!(serial = %pty.path.display(), tcp = %ready.tcp, "board ready");

    let refusals = std::sync::Arc::new(tokio::sync::Semaphore::new(rfc2217::LINGERING));
    short_slices();
    let clock = Clock::new()?;

    loop {
        board.pump();
        if nix::unistd::getppid() != opts.parent {
            return Ok("parent process exited");
        }
        clock.arm(board.deadline())?;
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => return Ok("SIGHUP"),
            Some(req) = ctrl_rx.recv() => {
                let reply = match req.command {
                    control::Command::Reset => {
                        board.reset();
                        "ok reset".to_owned()
                    }
                    control::Command::Dtr(dtr) => {
                        board.set_lines(board::Lines { dtr, ..board.lines() });
                        chip_reply(&board)
                    }
                    control::Command::Rts(rts) => {
                        board.set_lines(board::Lines { rts, ..board.lines() });
                        chip_reply(&board)
                    }
                    control::Command::Power(on) => {
                        board.set_power(on);
                        chip_reply(&board)
                    }
                    control::Command::Counters => format!("{}\nok", board.counters()),
                    control::Command::Baud => {
                        format!("ok {} host={}", board.baud(), board.host_baud())
                    }
                    control::Command::Autobaud(max) => {
                        board.set_autobaud_max((max > 0).then_some(max));
                        "ok".to_owned()
                    }
                    control::Command::Help => format!("ok {}", control::HELP),
                };
                let _ = req.reply.send(reply);
            }
            accepted = rfc2217.accept() => match accepted {
                // One client at a time holds the serial line; the next is told so.
                Ok((stream, peer)) if board.has_client() => {
                    let linger = refusals.clone().try_acquire_owned().ok();
                    tokio::spawn(rfc2217::refuse(stream, peer, linger));
                }
                Ok((stream, peer)) => board.attach(rfc2217::Port::new(stream, peer)),
                Err(e) => tracing::warn!("RFC 2217 port: accept failed: {e}"),
            },
            _ = board.ready() => {}
            _ = clock.expired() => {}
        }
    }
}

/// Asks for a short time slice (EEVDF, Linux 6.12 and later: `sched_runtime` of a normal task),
/// as the firmware does: on a busy host a board that waits a whole default slice (about 3 ms)
/// behind other processes leaves a fast line idle. Older kernels ignore or refuse it.
fn short_slices() {
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: 0,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: 100_000,
        deadline: 0,
        period: 0,
    };
    // SAFETY: sched_setattr reads a sched_attr of the size it is told, for this thread.
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
}

/// The board loop's alarm, to the microsecond: the wire's characters are due at times a
/// millisecond timer would round, and each round trip through the board would pay for it.
struct Clock(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl Clock {
    fn new() -> std::io::Result<Clock> {
        use std::os::fd::FromRawFd;
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is ours; the AsyncFd owns it from here.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // SAFETY: an OwnedFd stays open and names the same file until the AsyncFd drops it.
        Ok(Clock(unsafe { tokio::io::unix::AsyncFd::register(fd) }?))
    }

    /// Rings at `at` (at once if it has passed).
    fn arm(&self, at: std::time::Instant) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // Zero would disarm the timer: ring after a nanosecond instead.
        let left = at
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: left.as_secs() as libc::time_t,
                tv_nsec: libc::c_long::from(left.subsec_nanos()),
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
        let rc = unsafe {
            libc::timerfd_settime(self.0.get_ref().as_raw_fd(), 0, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    async fn expired(&self) {
        if let Ok(mut guard) = self.0.readable().await {
            let mut n = [0u8; 8];
            let _ = nix::unistd::read(self.0.get_ref(), &mut n);
            guard.clear_ready();
        }
    }
}

/// A modem-line or power change is answered with the chip's state: `ok held`, `ok loader`...;
/// `ok stub` while esptool's flasher stub answers in the loader's place.
fn chip_reply(board: &Board) -> String {
    if board.chip() == board::Chip::Loader && board.stub_running() {
        return "ok stub".into();
    }
    format!("ok {:?}", board.chip()).to_lowercase()
}

fn erased_if_missing(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        std::fs::write(path, vec![0xff; board::FLASH_BYTES])
            .with_context(|| format!("cannot create the flash file {}", path.display()))?;
    }
    Ok(path.to_owned())
}
