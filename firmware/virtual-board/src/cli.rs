//! The `virtual-board` command line, shared by its own binary and `relay-hil virtual-board`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Options, run};
use clap::Parser;
use nodemcu::profile::{DEFAULT_PROFILE, Profile};

/// A NodeMCU (ESP8266) relay twin: the relay firmware's own sketch, built for the host, behind
/// a pseudo-terminal UART and a loopback address of its own.
///
/// Once ready it prints one JSON line on stdout naming the serial path, the relay's TCP
/// address, the status channel and the control socket. It stops on SIGTERM, SIGINT, SIGHUP, or
/// when the process that started it exits.
#[derive(Debug, Parser)]
#[command(name = "virtual-board", version, about, long_about)]
pub struct Cli {
    /// Board profile: a shipped one (fixtures/boards, built in) or a .toml path.
    #[arg(
        short,
        long,
        default_value = DEFAULT_PROFILE,
        value_name = "NAME|FILE",
        help_heading = "Board"
    )]
    profile: String,

    /// The board's flash, as a file that outlives the process (a missing file starts as an
    /// erased 4 MiB flash). At every boot the ROM checks the image in it: only a valid image
    /// carrying a relay build id runs the relay. Without this option the relay is built in.
    #[arg(long, value_name = "FILE", help_heading = "Board")]
    flash_file: Option<PathBuf>,

    /// Build id of the built-in relay (without --flash-file) [default: the id build_id.py gives
    /// the firmware's sources].
    #[arg(long, value_name = "ID", help_heading = "Board")]
    build_id: Option<String>,

    /// The rate the serial port starts at, as an adapter is left by its last user; whoever
    /// opens it may set another [default: the profile's uart.baud, the firmware's rate].
    #[arg(long, value_name = "BAUD", help_heading = "Serial line")]
    baud: Option<u32>,

    /// Pace the UART line, both ways, as a real 8N1 line is: each side transmits at its own
    /// rate (the host's port at its termios rate, the chip at what its code set) and a
    /// receiver at another rate reads garbage [default: the profile's uart.pace].
    #[arg(long, conflicts_with = "no_pace", help_heading = "Serial line")]
    pace: bool,

    /// Do not pace the UART: an infinitely fast line that waits for the firmware to take each
    /// byte (rates that disagree still garble). Faster than any chip: a burst can outrun what
    /// lwIP sends to clients, and the relay then drops for them.
    #[arg(long, help_heading = "Serial line")]
    no_pace: bool,

    /// Also make PATH a symlink to the serial port (removed on exit).
    #[arg(long, value_name = "PATH", help_heading = "Serial line")]
    link: Option<PathBuf>,

    /// The board's address, a loopback address of its own; the relay listens on the
    /// firmware's ports there [default: 127.64.0.0 plus the process id].
    #[arg(long, value_name = "IP", help_heading = "Network")]
    ip: Option<std::net::Ipv4Addr>,

    /// The WiFi round trip, in milliseconds, at most a day: no acknowledgement reaches the
    /// firmware's TCP stack sooner after its data left (0: as fast as loopback).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 3,
        value_parser = rtt_ms,
        help_heading = "Network"
    )]
    rtt_ms: u64,

    /// The SSID of the network the board's WiFi can join [default: virtual].
    #[arg(
        long,
        env = "RELAY_HIL_WIFI_SSID",
        hide_env_values = true,
        value_name = "SSID",
        help_heading = "Network"
    )]
    wifi_ssid: Option<String>,

    /// The password of that network (empty: an open network).
    #[arg(
        long,
        env = "RELAY_HIL_WIFI_PASSWORD",
        hide_env_values = true,
        default_value = "",
        value_name = "PASSWORD",
        help_heading = "Network"
    )]
    wifi_password: String,

    /// Control socket port on 127.0.0.1 (reset lines, power, counters); 0 picks a free one.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 0,
        help_heading = "Host ports"
    )]
    control_port: u16,

    /// The serial port over RFC 2217 (telnet COM-PORT-OPTION) on 127.0.0.1: data, baud rate,
    /// DTR and RTS, for esptool's and pyserial's rfc2217:// ports; 0 picks a free one.
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 0,
        help_heading = "Host ports"
    )]
    rfc2217_port: u16,

    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, help_heading = "Logging")]
    verbose: u8,
}

/// `--rtt-ms`: at most a day. Longer is a mistake, and the firmware adds it to its clock.
fn rtt_ms(text: &str) -> Result<u64, String> {
    const DAY_MS: u64 = 86_400_000;
    match text.parse::<u64>() {
        Ok(ms) if ms <= DAY_MS => Ok(ms),
        _ => Err(format!(
            "must be a whole number of milliseconds from 0 to {DAY_MS} (a day)"
        )),
    }
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
    if let Err(e) = crate::firmware_for(&profile) {
        eprintln!("virtual-board: {e}");
        return ExitCode::from(2);
    }
    if let Some(path) = &cli.flash_file
        && let Err(e) = crate::board::check_flash_file(path)
    {
        eprintln!("virtual-board: --flash-file {}: {e}", path.display());
        return ExitCode::from(2);
    }
    if cli.baud == Some(0) {
        eprintln!("virtual-board: --baud must be greater than 0");
        return ExitCode::from(2);
    }
    let wifi = match cli.wifi_ssid {
        None => crate::board::built_in_wifi(),
        Some(ssid) => match relay_core::provision::Wifi::new(ssid, cli.wifi_password) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("virtual-board: --wifi-ssid/--wifi-password: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let opts = Options {
        pace: cli.pace || (profile.uart.pace && !cli.no_pace),
        baud: cli.baud.unwrap_or(profile.uart.baud),
        ip: cli.ip.unwrap_or_else(crate::default_ip),
        rtt: std::time::Duration::from_millis(cli.rtt_ms),
        control_port: cli.control_port,
        rfc2217_port: cli.rfc2217_port,
        link: cli.link,
        flash: cli.flash_file,
        parent,
        build_id: cli.build_id,
        wifi,
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
