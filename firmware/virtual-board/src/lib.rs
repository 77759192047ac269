//! A NodeMCU twin: the C relay core behind a pseudo-terminal (UART) and loopback TCP (WiFi).
//!
//! Started as a process, it prints one [`Ready`] JSON line on stdout once it is reachable, and
//! runs until SIGTERM, SIGINT or its parent process goes away.

pub mod board;
pub mod cli;
pub mod control;
pub mod pace;
pub mod pty;
pub mod rom;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use relay_core::profile::Profile;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use board::{Board, Identity};

/// The one line the board prints on stdout when it is ready, so a test can find it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    /// Always `"ready"`.
    pub event: String,
    pub pid: u32,
    /// The UART: open this path as a serial port.
    pub serial: PathBuf,
    /// The relay's TCP address.
    pub tcp: SocketAddr,
    /// The status channel's address, if served.
    pub status: Option<SocketAddr>,
    /// The control socket's address (reset, status).
    pub control: SocketAddr,
    pub profile: String,
    /// The build id of the relay that booted; `None` when the flash holds no relay.
    pub build: Option<String>,
    pub baud: u32,
    pub paced: bool,
}

/// How to run the board; the CLI fills this in.
#[derive(Clone, Debug)]
pub struct Options {
    pub profile: Profile,
    pub port: u16,
    pub status_port: Option<u16>,
    pub control_port: u16,
    pub pace: bool,
    pub baud: u32,
    pub link: Option<PathBuf>,
    pub build_id: String,
    /// The board's flash as a file (created erased when missing); without one the relay is
    /// built in.
    pub flash: Option<PathBuf>,
    /// The process whose exit stops the board.
    pub parent: nix::unistd::Pid,
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("cannot listen for the {what} on 127.0.0.1:{port}"))
}

/// Runs the board until it is told to stop. Returns the reason it stopped.
pub async fn run(opts: Options) -> anyhow::Result<&'static str> {
    let config = opts.profile.relay;
    let flash = match &opts.flash {
        Some(path) => Some(erased_if_missing(path)?),
        None => None,
    };
    let pty = pty::Pty::open(opts.link.as_deref()).context("cannot open a pseudo-terminal")?;
    let listener = bind(opts.port, "relay").await?;
    let status = match opts.status_port {
        Some(p) => Some(bind(p, "status channel").await?),
        None => None,
    };
    let control = bind(opts.control_port, "control socket").await?;
    let tcp = listener.local_addr()?;
    let status_addr = status.as_ref().map(TcpListener::local_addr).transpose()?;

    let identity = Identity {
        ip: Ipv4Addr::LOCALHOST.to_string(),
        build_id: opts.build_id.clone(),
        port: tcp.port(),
        status_port: status_addr.map_or(0, |a| a.port()),
    };
    let uart = pty.master.try_clone()?;
    let mut board = Board::new(
        config,
        identity,
        uart,
        opts.pace.then_some(opts.baud),
        flash,
    )?;

    let (ctrl_tx, mut ctrl_rx) = mpsc::channel(16);
    let ready = Ready {
        event: "ready".into(),
        pid: std::process::id(),
        serial: pty.path.clone(),
        tcp,
        status: status_addr,
        control: control.local_addr()?,
        profile: opts.profile.name.clone(),
        build: board.build_id().map(str::to_owned),
        baud: opts.baud,
        paced: opts.pace,
    };
    tokio::spawn(control::serve(control, ctrl_tx));
    println!("{}", serde_json::to_string(&ready)?);
    tracing::info!(serial = %pty.path.display(), %tcp, "board ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut status = status;

    loop {
        board.pump();
        if nix::unistd::getppid() != opts.parent {
            return Ok("parent process exited");
        }
        let deadline = tokio::time::Instant::from_std(board.deadline());
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => return Ok("SIGHUP"),
            Ok((stream, _)) = listener.accept() => board.accept(stream),
            Ok((stream, _)) = accept_opt(&mut status) => {
                tokio::spawn(serve_status(stream, board.status()));
            }
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
                    control::Command::Status => format!("{}ok", board.status()),
                    control::Command::Help => format!("ok {}", control::HELP),
                };
                let _ = req.reply.send(reply);
            }
            _ = board.ready() => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// A modem-line or power change is answered with the chip's state: `ok held`, `ok loader`...
fn chip_reply(board: &Board) -> String {
    format!("ok {:?}", board.chip()).to_lowercase()
}

/// The NodeMCU's flash: 4 MiB, erased to 0xFF as it leaves the factory.
const FLASH_BYTES: usize = 4 << 20;

fn erased_if_missing(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        std::fs::write(path, vec![0xff; FLASH_BYTES])
            .with_context(|| format!("cannot create the flash file {}", path.display()))?;
    }
    Ok(path.to_owned())
}

async fn accept_opt(
    l: &mut Option<TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_status(mut stream: tokio::net::TcpStream, text: String) {
    use tokio::io::AsyncWriteExt;
    let _ = stream.write_all(text.as_bytes()).await;
    let _ = stream.shutdown().await;
}
