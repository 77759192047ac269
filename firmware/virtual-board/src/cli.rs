//! The `virtual-board` command line, shared by its own binary and `relay-hil virtual-board`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Options, run};
use clap::Parser;
use relay_core::profile::{DEFAULT_PROFILE, Profile};

/// A NodeMCU (ESP8266) relay twin: the relay's C core behind a pseudo-terminal UART and a
/// loopback TCP port.
///
/// Once ready it prints one JSON line on stdout naming the serial path, the relay's TCP
/// address, the status channel and the control socket. It stops on SIGTERM, SIGINT, SIGHUP, or
/// when the process that started it exits.
#[derive(Debug, Parser)]
#[command(name = "virtual-board", version, about, long_about)]
pub struct Cli {
    /// Board profile: a name in fixtures/boards (or $RELAY_HIL_BOARDS_DIR) or a .toml path.
    #[arg(short, long, default_value = DEFAULT_PROFILE, value_name = "NAME|PATH")]
    profile: String,

    /// Relay TCP port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,

    /// Status channel port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0, conflicts_with = "no_status")]
    status_port: u16,

    /// Serve no status channel.
    #[arg(long)]
    no_status: bool,

    /// Control socket port on 127.0.0.1 (reset, status); 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    control_port: u16,

    /// Pace the UART at the baud rate, both ways, as a real 8N1 line is
    /// [default: the profile's uart.pace].
    #[arg(long)]
    pace: bool,

    /// Baud rate for pacing [default: the profile's uart.baud].
    #[arg(long)]
    baud: Option<u32>,

    /// Also make PATH a symlink to the serial port (removed on exit).
    #[arg(long, value_name = "PATH")]
    link: Option<PathBuf>,

    /// The board's flash, as a file that outlives the process (a missing file starts as an
    /// erased 4 MiB flash). At every boot the ROM checks the image in it: only a valid image
    /// carrying a relay build id runs the relay. Without this option the relay is built in.
    #[arg(long, value_name = "PATH")]
    flash: Option<PathBuf>,

    /// Build id shown in the banner [default: the digest of the core's sources].
    #[arg(long)]
    build_id: Option<String>,

    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// Runs the board as the command line `args` (program name first) asks, to the end.
pub fn main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    // Taken before anything else: a parent that dies after this is always noticed.
    let parent = nix::unistd::getppid();
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let level = ["info", "debug", "trace"][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| format!("virtual_board={level}").into()),
        )
        .init();

    let profile = match Profile::load(&cli.profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("virtual-board: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.baud == Some(0) {
        eprintln!("virtual-board: --baud must be greater than 0");
        return ExitCode::from(2);
    }
    let opts = Options {
        pace: cli.pace || profile.uart.pace,
        baud: cli.baud.unwrap_or(profile.uart.baud),
        port: cli.port,
        status_port: (!cli.no_status).then_some(cli.status_port),
        control_port: cli.control_port,
        link: cli.link,
        flash: cli.flash,
        parent,
        build_id: cli
            .build_id
            .unwrap_or_else(|| relay_core::SOURCE_ID.to_owned()),
        profile,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("virtual-board: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(why) => {
            tracing::info!("stopping: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("virtual-board: {e:#}");
            ExitCode::FAILURE
        }
    }
}
