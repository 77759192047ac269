//! `relay-hil`: runs the relay's HIL suite, lists serial ports, monitors a board, or runs the
//! virtual board.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use relay_hil::artifacts::{self, Folder};
use relay_hil::board::{Board, BoardKind, ExternalReset, OpenOptions, Target, list_ports};
use relay_hil::error::{HilError, UsageError, VirtualBoardError};
use relay_hil::flash::{self, Image};
use relay_hil::labgrid;
use relay_hil::report::{self, tally};
use relay_hil::scenario;
use relay_hil::select::Selection;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Hardware-in-the-loop tests for the ESP8266 serial<->TCP relay.
///
/// With no board named, commands run against a virtual board (a NodeMCU twin) that they start
/// and stop themselves. Every board option can also come from its environment variable.
#[derive(Debug, Parser)]
#[command(name = "relay-hil", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// More logging on stderr (-v: debug, -vv: trace). RUST_LOG overrides.
    #[arg(
        short,
        long,
        global = true,
        action = clap::ArgAction::Count,
        help_heading = "Logging"
    )]
    verbose: u8,
}

#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Board")]
struct BoardArgs {
    /// Which kind of board; --port and --serial choose one by themselves.
    #[arg(long, env = "RELAY_HIL_BOARD", value_name = "KIND")]
    board: Option<BoardKind>,

    /// A NodeMCU's serial port, `auto` for the one on USB (CP210x or CH340), or
    /// rfc2217://HOST:PORT[?OPTIONS] for one served over the network. `run` takes several
    /// (repeated or comma-separated; `virtual` for a virtual board) and runs them at once.
    #[arg(
        long,
        env = "RELAY_HIL_PORT",
        value_name = "PATH|auto|URL",
        value_delimiter = ','
    )]
    port: Vec<String>,

    /// A labgrid place: acquired (unless the caller holds it already), reached over its
    /// NetworkSerialPort, released at the end. The coordinator is LG_COORDINATOR's. `run`
    /// takes several (repeated or comma-separated).
    #[arg(
        long,
        env = "LG_PLACE",
        value_name = "PLACE",
        value_delimiter = ',',
        conflicts_with = "serial"
    )]
    labgrid: Vec<String>,

    /// The serial port of any other relay; needs --addr.
    #[arg(
        long,
        env = "RELAY_HIL_SERIAL",
        value_name = "PATH",
        conflicts_with = "port"
    )]
    serial: Option<PathBuf>,

    /// The relay's TCP address: for --serial, or instead of the IP in a NodeMCU's banner.
    #[arg(long, env = "RELAY_HIL_ADDR", value_name = "HOST:PORT")]
    addr: Option<String>,

    /// Board profile: a shipped one (fixtures/boards, built in) or a .toml path [default: nodemcu-v2].
    #[arg(short, long, env = "RELAY_HIL_PROFILE", value_name = "NAME|FILE")]
    profile: Option<String>,

    /// Seconds to wait for the banner after a reset, at most a day [default: 30 for a NodeMCU,
    /// 10 virtual].
    #[arg(
        long,
        env = "RELAY_HIL_BANNER_TIMEOUT",
        value_name = "SECS",
        value_parser = relay_hil::select::wait_secs
    )]
    banner_timeout: Option<u64>,

    /// The virtual board's flash, a file kept between runs, used when a firmware image is
    /// flashed (without one, the virtual board runs its built-in relay).
    #[arg(
        long,
        env = "RELAY_HIL_FLASH_FILE",
        value_name = "FILE",
        default_value = "target/relay-hil/virtual-board.flash"
    )]
    flash_file: PathBuf,

    /// A labgrid place's reset line, once the place is leased.
    #[arg(skip)]
    reset: Option<ExternalReset>,
}

/// `run`'s flashing: an image to flash first, if any.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Flashing")]
struct FirmwareArgs {
    /// Flash this ESP8266 image first (firmware.bin from PlatformIO, or `relay-hil image`).
    #[arg(long, env = "RELAY_HIL_FIRMWARE", value_name = "FILE")]
    firmware: Option<PathBuf>,

    /// Flash even when the board already runs the image's build.
    #[arg(long, requires = "firmware")]
    force: bool,

    #[arg(
        long,
        env = "RELAY_HIL_FLASH_BAUD",
        value_name = "BAUD",
        default_value_t = flash::DEFAULT_BAUD,
        value_parser = flash::baud,
        help = FLASH_BAUD_HELP
    )]
    flash_baud: u32,
}

/// `flash`'s image, which it cannot do without.
#[derive(Debug, Args)]
#[command(next_help_heading = "Flashing")]
struct FlashImageArgs {
    /// The ESP8266 image to flash (firmware.bin from PlatformIO, or `relay-hil image`).
    #[arg(long, env = "RELAY_HIL_FIRMWARE", value_name = "FILE")]
    firmware: PathBuf,

    /// Flash even when the board already runs the image's build.
    #[arg(long)]
    force: bool,

    #[arg(
        long,
        env = "RELAY_HIL_FLASH_BAUD",
        value_name = "BAUD",
        default_value_t = flash::DEFAULT_BAUD,
        value_parser = flash::baud,
        help = FLASH_BAUD_HELP
    )]
    flash_baud: u32,
}

/// `--flash-baud`, in `run` and `flash`.
const FLASH_BAUD_HELP: &str = "Serial rate for flashing, from 9600 to 3000000: the ROM loader \
takes its rate from the host's SYNC; if it does not answer, the flash falls back to 115200 \
with a warning";

#[derive(Debug, Args)]
#[command(next_help_heading = "Benchmark")]
struct BenchArgs {
    /// Also measure ser2net 4 as Debian ships it (ser2net-default) and tuned (ser2net-tuned:
    /// chardelay false, 64 KiB buffers; the reference of the ratios), and socat (one client,
    /// the ceiling of a plain copy), each on a pseudo-terminal pair of the harness's own.
    /// Needs Debian's ser2net and socat.
    #[arg(long)]
    with_ser2net: bool,

    /// Measure every figure this many times, the relays interleaved; 1 to 100.
    #[arg(
        long,
        env = "RELAY_HIL_BENCH_REPS",
        value_name = "N",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=100)
    )]
    reps: u32,

    /// Baud rates of the relay on the chip's terms, repeatable or comma-separated; each needs
    /// a shipped board profile with that uart.baud whose relay keeps --profile's
    /// contract (its queues may be sized for the rate) [default: 115200,921600,3000000 on the
    /// virtual board; a NodeMCU's own rate].
    #[arg(
        long,
        env = "RELAY_HIL_BENCH_BAUD",
        value_name = "BAUD",
        value_delimiter = ','
    )]
    baud: Vec<u32>,

    /// A tiny run, once and with short windows, that only checks that every measurement
    /// works (what CI runs); overrides --reps.
    #[arg(long)]
    smoke: bool,

    /// Measure instead the cost of remoteness: a 300,000-byte flash and the whole suite on a
    /// virtual board over RFC 2217 through `relay-hil serve`, against one on its own port,
    /// interleaved --reps times (once with --smoke); the ratios are remote over own.
    #[arg(long, conflicts_with_all = ["with_ser2net", "baud"])]
    remote: bool,

    /// Write every figure as JSON to FILE (`-`: stdout, and the table goes to stderr).
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scenarios and print a table; write transcripts, the serial log and JUnit XML.
    Run {
        #[command(flatten)]
        board: BoardArgs,

        #[command(flatten)]
        firmware: FirmwareArgs,

        /// Run only this scenario (repeatable). `relay-hil scenarios` lists them.
        #[arg(long, value_name = "NAME", help_heading = "Scenarios")]
        only: Vec<String>,

        /// Also write the JUnit XML report here.
        #[arg(long, value_name = "FILE", help_heading = "Output")]
        junit: Option<PathBuf>,

        /// Artifact folder [default: a new folder target/relay-hil/<YYYYMMDD-HHMMSS>-<pid>,
        /// which target/relay-hil/latest then points at].
        #[arg(long, value_name = "DIR", help_heading = "Output")]
        artifacts_dir: Option<PathBuf>,
    },
    /// Measure the relay beside ser2net and socat: throughput both ways, round trip, and the
    /// relay on the chip's terms (a paced UART).
    ///
    /// The harness plays the device on the UART and every TCP client, in one process, the same
    /// way for every relay, each one pseudo-terminal hop away. The virtual board runs unpaced
    /// and with no modelled WiFi round trip for the throughput figures, and paced at each
    /// --baud for the chip-terms figures. Every window lasts at least 0.5 s (the size grows
    /// until it does), every measurement is bounded in bytes and to 60 s. Each rep measures
    /// every figure on every relay in turn; the table shows min, median and max, and the ratio
    /// of each median to ser2net-tuned's (for the round trip, theirs over ours): above 1 means
    /// the relay is ahead.
    Bench {
        #[command(flatten)]
        board: BoardArgs,

        #[command(flatten)]
        bench: BenchArgs,
    },
    /// Flash a relay image through the ROM serial loader (espflash), reset, and wait for the
    /// banner with the image's build id.
    ///
    /// The image is checked first (magic, checksum, whole segments, elf2bin's CRC, size, relay
    /// build id): a bad one is refused before the board is touched. A board already running the image's build is left alone.
    Flash {
        #[command(flatten)]
        board: BoardArgs,

        #[command(flatten)]
        firmware: FlashImageArgs,
    },
    /// Write a relay image for the virtual board: a firmware file in the ESP8266 Arduino core's
    /// layout (a bootloader's image at 0x0, the application at 0x1000, elf2bin's CRC) that
    /// carries a build id and no code (a NodeMCU would not run it).
    Image {
        /// Build id to carry [default: the digest of the core's sources].
        #[arg(long, value_name = "ID", help_heading = "Image")]
        build_id: Option<String>,

        /// Where to write it.
        #[arg(short, long, value_name = "FILE", help_heading = "Output")]
        output: PathBuf,

        /// Pad the application with filler to make the file this many bytes (to 16 bytes
        /// below), as big as a real firmware (a NodeMCU relay build is about 300 KB), to
        /// measure flashing; at most 16 MiB, the largest flash. The smallest file is a little
        /// over 4 KiB: the application starts at 0x1000.
        #[arg(
            long,
            value_name = "BYTES",
            default_value_t = 0,
            value_parser = relay_hil::image::size,
            help_heading = "Image"
        )]
        size: usize,
    },
    /// List the scenarios.
    Scenarios,
    /// List serial ports with their USB ids and the profile that fits each.
    Boards,
    /// Watch a board's UART and one TCP client side by side, and type into either.
    ///
    /// Lines typed go to the TCP client; a line starting with `uart:` goes to the UART
    /// instead. Ctrl-D or Ctrl-C ends it.
    Monitor {
        #[command(flatten)]
        board: BoardArgs,
    },
    /// Export the board over RFC 2217, for a harness elsewhere (`--port rfc2217://HOST:PORT`),
    /// esptool, or a labgrid exporter's NetworkSerialPort.
    ///
    /// One client at a time holds the board. A reset or a reset into the ROM loader that the
    /// client asks for with DTR and RTS is performed here, at the chip's timing, as esptool's
    /// esp_rfc2217_server does: across a network the lines arrive too slowly to do it. Prints
    /// one JSON line once it listens; stops on Ctrl-C or SIGTERM.
    Serve {
        #[command(flatten)]
        board: BoardArgs,

        /// Where to listen: 0.0.0.0:PORT serves the network, as a lab needs.
        #[arg(
            long,
            env = "RELAY_HIL_LISTEN",
            value_name = "HOST:PORT",
            default_value = "127.0.0.1:2217",
            help_heading = "Serving"
        )]
        listen: std::net::SocketAddr,
    },
    /// Run the virtual board in the foreground (`relay-hil virtual-board --help`).
    #[command(disable_help_flag = true)]
    VirtualBoard {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

impl BoardArgs {
    /// One board's options for each board named (ports, then places): `run` takes several.
    fn each(&self) -> Vec<BoardArgs> {
        if self.port.len() + self.labgrid.len() < 2 {
            return vec![self.clone()];
        }
        let stem = self.flash_file.with_extension("");
        let ports = self.port.iter().map(|p| (Some(p), None));
        let places = self.labgrid.iter().map(|p| (None, Some(p)));
        ports
            .chain(places)
            .enumerate()
            .map(|(i, (port, place))| {
                let virtual_board = port.is_some_and(|p| p == "virtual");
                BoardArgs {
                    board: virtual_board.then_some(BoardKind::Virtual).or(self.board),
                    port: port
                        .filter(|_| !virtual_board)
                        .cloned()
                        .into_iter()
                        .collect(),
                    labgrid: place.cloned().into_iter().collect(),
                    // Virtual boards flashed at once each keep their own flash.
                    flash_file: stem.with_extension(format!("{}.flash", i + 1)),
                    ..self.clone()
                }
            })
            .collect()
    }

    /// These options with a labgrid place resolved to its serial port, and the lease that
    /// keeps the place until it drops.
    async fn leased(&self) -> Result<(BoardArgs, Option<labgrid::Lease>), HilError> {
        match self.labgrid.as_slice() {
            [] => Ok((self.clone(), None)),
            [place] if self.port.is_empty() => {
                let place = place.clone();
                // A place with a power switch starts from a cold boot.
                let lease = tokio::task::spawn_blocking(move || {
                    let lease = labgrid::lease(&place)?;
                    if lease.has_power() {
                        lease.power_cycle()?;
                    }
                    Ok::<_, HilError>(lease)
                })
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
                let reset = lease.reset_output.then(|| {
                    let place = lease.place().to_owned();
                    ExternalReset {
                        name: format!("labgrid place {place}'s output `reset`"),
                        set: std::sync::Arc::new(move |asserted| {
                            labgrid::set_reset(&place, asserted).map_err(|e| e.to_string())
                        }),
                    }
                });
                let args = BoardArgs {
                    port: vec![lease.url.clone()],
                    labgrid: Vec::new(),
                    reset,
                    ..self.clone()
                };
                Ok((args, Some(lease)))
            }
            _ => Err(UsageError::SeveralBoards.into()),
        }
    }

    fn selection(&self) -> Selection {
        Selection {
            board: self.board,
            port: self.port.first().cloned(),
            serial: self.serial.clone(),
            addr: self.addr.clone(),
            profile: self.profile.clone(),
            banner_timeout: self.banner_timeout.map(Duration::from_secs),
        }
    }

    /// The board to open; the virtual board is this program's `virtual-board` command.
    fn resolve(&self) -> Result<(Target, OpenOptions), HilError> {
        if self.port.len() + self.labgrid.len() > 1 {
            return Err(UsageError::SeveralBoards.into());
        }
        let me = std::env::current_exe().map_err(VirtualBoardError::Program)?;
        let (target, mut opts) = self
            .selection()
            .resolve((me, vec!["virtual-board".into()]))?;
        opts.reset = self.reset.clone();
        Ok((target, opts))
    }

    async fn open(&self) -> Result<Board, HilError> {
        let (target, opts) = self.resolve()?;
        let spinner = spinner(format!("opening the board ({})", opts.profile.name));
        let board = Board::open(&target, &opts).await;
        spinner.finish_and_clear();
        board
    }

    /// Opens the board, first flashing `firmware` if one is given (`force`: even when it runs
    /// the image's build); prints what the flash did.
    async fn open_flashed(
        &self,
        firmware: Option<&Path>,
        force: bool,
        baud: u32,
    ) -> Result<Board, HilError> {
        let Some(path) = firmware else {
            return self.open().await;
        };
        // Checked before anything is opened: a bad image never reaches the board.
        let job = flash::Job {
            image: Image::load(path)?,
            force,
            baud,
            flash_file: self.flash_file.clone(),
        };
        let (target, opts) = self.resolve()?;
        let mut board = job.attach(&target, &opts).await?;
        eprintln!(
            "flashing {} (build {}, {} bytes) to {}",
            path.display(),
            job.image.build_id,
            job.image.bytes.len(),
            board.serial.path.display()
        );
        let bar = ProgressBar::new(0).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} blocks {elapsed} (ETA {eta})")
                .expect("a valid template"),
        );
        let done = job.run(&mut board, opts.banner_timeout, bar).await?;
        eprintln!("{}", done.summary());
        Ok(board)
    }
}

fn spinner(msg: String) -> ProgressBar {
    let p = ProgressBar::new_spinner().with_message(msg);
    p.enable_steady_tick(Duration::from_millis(100));
    p
}

/// Prints the one-line diagnosis and its hint; exit 2: the board or the options cannot be used.
fn fail(e: &dyn miette::Diagnostic) -> ExitCode {
    eprintln!("relay-hil: {e}");
    if let Some(hint) = e.help() {
        eprintln!("  hint: {hint}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::VirtualBoard { args } = cli.command {
        let argv = std::iter::once(OsString::from("relay-hil virtual-board")).chain(args);
        return virtual_board::cli::main(argv);
    }
    let level = ["warn", "info", "debug"][usize::from(cli.verbose.min(2))];
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| format!("relay_hil={level}").into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay-hil: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        tokio::select! {
            // Polled first, so the handler is in place before dispatch takes anything (a labgrid
            // place) that Ctrl-C must give back; until then SIGINT would kill the process.
            biased;
            _ = tokio::signal::ctrl_c() => {
                eprintln!("relay-hil: interrupted");
                ExitCode::from(130)
            }
            code = dispatch(cli.command) => code,
        }
    })
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Run {
            board,
            firmware,
            only,
            junit,
            artifacts_dir,
        } => run(board, firmware, only, junit, artifacts_dir).await,
        Command::Flash { board, firmware } => {
            let (board, _lease) = match board.leased().await {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            match board
                .open_flashed(
                    Some(&firmware.firmware),
                    firmware.force,
                    firmware.flash_baud,
                )
                .await
            {
                Ok(b) => {
                    let build = b.banner.as_ref().map_or("unknown", |x| x.build.as_str());
                    println!("board: {} runs build {build}", b.serial.path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        Command::Image {
            build_id,
            output,
            size,
        } => image(build_id, &output, size),
        Command::Bench { board, bench: b } => {
            let (board, _lease) = match board.leased().await {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            bench(board, b).await
        }
        Command::Scenarios => {
            for s in scenario::ALL {
                println!("{:<16} {}", s.name, s.about);
            }
            ExitCode::SUCCESS
        }
        Command::Boards => boards(),
        Command::Monitor { board } => {
            let (board, _lease) = match board.leased().await {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            monitor(board).await
        }
        Command::Serve { board, listen } => {
            let (board, _lease) = match board.leased().await {
                Ok(x) => x,
                Err(e) => return fail(&e),
            };
            serve(board, listen).await
        }
        Command::VirtualBoard { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Writes a virtual-board relay image and says what it wrote.
fn image(build_id: Option<String>, output: &Path, size: usize) -> ExitCode {
    let id = build_id.unwrap_or_else(|| relay_core::SOURCE_ID.to_owned());
    match relay_hil::image::write(output, &id, size) {
        Ok(len) => {
            println!("{}: build {id}, {len} bytes", output.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn run(
    args: BoardArgs,
    firmware: FirmwareArgs,
    only: Vec<String>,
    junit: Option<PathBuf>,
    artifacts_dir: Option<PathBuf>,
) -> ExitCode {
    let chosen = match relay_hil::choose(&only) {
        Ok(chosen) => chosen,
        Err(e) => return fail(&e),
    };
    // The run's name is when it started; its folder is claimed once there are results.
    let stamp = artifacts::stamp(SystemTime::now());
    let started = Instant::now();
    let boards = args.each();
    let several = boards.len() > 1;
    let local = tokio::task::LocalSet::new();
    let runs = local
        .run_until(async {
            let tasks: Vec<_> = boards
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    let label = several.then(|| format!("board {}: ", i + 1));
                    tokio::task::spawn_local(run_board(b, firmware.clone(), chosen.clone(), label))
                })
                .collect();
            let mut runs = Vec::new();
            for t in tasks {
                runs.push(
                    t.await
                        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
                );
            }
            runs
        })
        .await;
    let mut done = Vec::new();
    let mut unusable = false;
    for (i, run) in runs.into_iter().enumerate() {
        match run {
            Ok(r) => {
                if several {
                    println!("board {}: {} ({})", i + 1, r.kind, r.serial);
                }
                print!("{}", report::table(&r.records));
                done.push((i, r));
            }
            Err(e) => {
                unusable = true;
                if several {
                    eprint!("board {}: ", i + 1);
                }
                fail(&e);
            }
        }
    }
    let base = artifacts::default_base();
    let folder = match &artifacts_dir {
        Some(dir) => Folder::Given(dir),
        None => Folder::New {
            base: &base,
            stamp: &stamp,
        },
    };
    // One JUnit suite for each board, and with several boards one folder each in the run's.
    let boards: Vec<artifacts::BoardArtifacts<'_>> = done
        .iter()
        .map(|(i, r)| artifacts::BoardArtifacts {
            folder: several.then(|| format!("{}-{}", i + 1, r.kind)),
            suite: match several {
                true => format!("relay-hil.{}.{}", r.kind, i + 1),
                false => format!("relay-hil.{}", r.kind),
            },
            records: &r.records,
            serial_log: &r.serial_log,
        })
        .collect();
    if !boards.is_empty() {
        let saved = match artifacts::save(folder, &boards, junit.as_deref()) {
            Ok(saved) => saved,
            Err(e) => return fail(&e),
        };
        if let Some(e) = saved.latest {
            // The run's own folder is whole; only the shortcut to it is stale.
            eprintln!(
                "relay-hil: warning: cannot point {} at {}: {e}",
                base.join("latest").display(),
                saved.dir.display()
            );
        }
        println!(
            "artifacts: {} ({:.1}s)",
            saved.dir.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let failed = done.iter().any(|(_, r)| tally(&r.records).1 > 0);
    match (unusable, failed) {
        (true, _) => ExitCode::from(2),
        (false, true) => ExitCode::FAILURE,
        (false, false) => ExitCode::SUCCESS,
    }
}

/// What one board's run produced.
struct BoardRun {
    kind: BoardKind,
    serial: String,
    records: Vec<report::Record>,
    serial_log: Vec<u8>,
}

/// Opens (and flashes) one board, prints its line, and runs `chosen` on it; `label` names the
/// board among several, whose runs show no progress bar.
async fn run_board(
    args: BoardArgs,
    firmware: FirmwareArgs,
    chosen: Vec<&'static scenario::Scenario>,
    label: Option<String>,
) -> Result<BoardRun, HilError> {
    let (args, _lease) = args.leased().await?;
    let mut board = args
        .open_flashed(
            firmware.firmware.as_deref(),
            firmware.force,
            firmware.flash_baud,
        )
        .await?;
    let banner = board.banner.as_ref();
    println!(
        "{}{} ({}), build {}, serial {}, relay {}",
        label.as_deref().unwrap_or("board: "),
        board.kind,
        board.profile.name,
        banner.map_or("unknown", |b| b.build.as_str()),
        board.serial.path.display(),
        board.tcp
    );
    let bar = match label {
        Some(_) => ProgressBar::hidden(),
        None => ProgressBar::new(chosen.len() as u64).with_style(
            ProgressStyle::with_template("{pos}/{len} {wide_msg}").expect("a valid template"),
        ),
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    let records = relay_hil::run(&mut board, &chosen, |s, done| match done {
        None => bar.set_message(format!("{}: {}", s.name, s.about)),
        Some(_) => bar.inc(1),
    })
    .await;
    bar.finish_and_clear();
    Ok(BoardRun {
        kind: board.kind,
        serial: board.serial.path.display().to_string(),
        records,
        serial_log: board.serial.log().to_vec(),
    })
}

async fn bench(args: BoardArgs, opts: BenchArgs) -> ExitCode {
    use relay_hil::bench::{self, Machine, Plan};
    if opts.remote {
        return remoteness(args, opts).await;
    }
    let plan = if opts.smoke {
        Plan::smoke()
    } else {
        Plan::full(opts.reps as usize)
    };
    let (target, open) = match args.resolve() {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    let rates = match bench::setup::rates(&target, &open.profile, &opts.baud) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let spinner = spinner("starting".into());
    let result: Result<bench::Report, HilError> = async {
        let (mut rigs, mut chip) =
            bench::setup::rigs(target, &open, rates, opts.with_ser2net, |msg| {
                spinner.set_message(msg.to_owned())
            })
            .await?;
        bench::run(&mut rigs, &mut chip, &plan, Machine::here(), |msg| {
            spinner.set_message(msg.to_owned())
        })
        .await
    }
    .await;
    spinner.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    // `--json -`: stdout carries the JSON alone, for a pipe; the table goes to stderr.
    let to_stdout = opts.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if to_stdout {
        eprint!("{}", report.table());
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = opts.json {
        let text = serde_json::to_string_pretty(&report.json()).expect("figures serialise");
        let written = if to_stdout {
            println!("{text}");
            Ok(())
        } else {
            std::fs::write(&path, text + "\n")
        };
        if let Err(e) = written {
            eprintln!("relay-hil: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// `bench --remote`: the suite and a flash over RFC 2217 against the board's own port.
async fn remoteness(args: BoardArgs, opts: BenchArgs) -> ExitCode {
    let (target, open) = match args.resolve() {
        Ok(x) => x,
        Err(e) => return fail(&e),
    };
    let Target::Virtual { program, .. } = &target else {
        eprintln!("relay-hil: --remote measures virtual boards: name no board");
        return ExitCode::from(2);
    };
    let reps = if opts.smoke { 1 } else { opts.reps as usize };
    let dir = std::env::temp_dir().join(format!("relay-hil-remote-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("relay-hil: cannot make {}: {e}", dir.display());
        return ExitCode::from(2);
    }
    let spinner = spinner("starting".into());
    let measured = relay_hil::bench::remote::measure(program, &open, &dir, reps, |m| {
        spinner.set_message(m.to_owned())
    })
    .await;
    spinner.finish_and_clear();
    let _ = std::fs::remove_dir_all(&dir);
    let r = match measured {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let to_stdout = opts.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    if to_stdout {
        eprint!("{}", r.table());
    } else {
        print!("{}", r.table());
    }
    if let Some(path) = opts.json {
        let text = serde_json::to_string_pretty(&r).expect("times serialise");
        let written = if to_stdout {
            println!("{text}");
            Ok(())
        } else {
            std::fs::write(&path, text + "\n")
        };
        if let Err(e) = written {
            eprintln!("relay-hil: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn boards() -> ExitCode {
    let ports = list_ports();
    if ports.is_empty() {
        println!("no serial ports found");
        return ExitCode::SUCCESS;
    }
    println!(
        "{:<24} {:<10} {:<8} {:<12} stable name",
        "port", "usb", "bridge", "profile"
    );
    for p in ports {
        let usb = p
            .usb
            .map_or("-".into(), |(v, d)| format!("{v:04x}:{d:04x}"));
        let profile = if p.bridge.is_some() {
            nodemcu::profile::DEFAULT_PROFILE
        } else {
            "-"
        };
        println!(
            "{:<24} {:<10} {:<8} {:<12} {}",
            p.path.display(),
            usb,
            p.bridge.unwrap_or("-"),
            profile,
            p.by_id.map_or("-".into(), |b| b.display().to_string())
        );
    }
    ExitCode::SUCCESS
}

async fn serve(args: BoardArgs, listen: std::net::SocketAddr) -> ExitCode {
    let board = async {
        let (target, opts) = args.resolve()?;
        let opts = flash::with_flash_file(&target, &opts, &args.flash_file)?;
        Board::attach(&target, &opts).await
    };
    let mut board = match board.await {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("relay-hil: cannot listen on {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let url = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), relay_hil::serve::url);
    let serving = relay_hil::serve::Serving {
        event: "serving",
        url,
        board: board.kind.to_string(),
        serial: board.serial.path.display().to_string(),
        control: board.control.map(|c| c.to_string()),
    };
    // Installed before the line that says the bridge is up, so a SIGTERM sent on reading it
    // stops the bridge cleanly rather than killing it.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    println!("{}", serde_json::to_string(&serving).unwrap_or_default());
    let stop = async {
        match term {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    match relay_hil::serve::serve(&mut board, listener, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn monitor(args: BoardArgs) -> ExitCode {
    let mut board = match args.open().await {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    let mut client = match relay_hil::net::Client::connect("monitor".into(), board.tcp, None).await
    {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Some(b) = &board.banner {
        println!(
            "banner: relay {} build {} ip {} port {}",
            b.version, b.build, b.ip, b.port
        );
    }
    println!(
        "serial {}  relay {}  (type to send over TCP; `uart:` sends to the UART)",
        board.serial.path.display(),
        board.tcp
    );
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let soon = Instant::now() + Duration::from_millis(50);
        tokio::select! {
            line = stdin.next_line() => match line {
                Ok(Some(l)) => {
                    let sent = match l.strip_prefix("uart:") {
                        Some(rest) => board.serial.write_all(format!("{rest}\r\n").as_bytes()).await.map_err(|e| e.to_string()),
                        None => client.send(format!("{l}\n").as_bytes()).await.map_err(|e| e.to_string()),
                    };
                    if let Err(e) = sent {
                        eprintln!("relay-hil: {e}");
                        return ExitCode::FAILURE;
                    }
                }
                _ => return ExitCode::SUCCESS,
            },
            got = board.serial.chunk(soon) => match got {
                Ok(b) if !b.is_empty() => print!("uart| {}", String::from_utf8_lossy(&b)),
                Ok(_) => {}
                Err(e) => return fail(&e),
            },
            (got, end) = client.read_until(soon, |b| !b.is_empty()) => {
                if !got.is_empty() {
                    print!("tcp | {}", String::from_utf8_lossy(&got));
                }
                if end == Some(relay_hil::net::End::Eof) {
                    println!("relay-hil: the relay closed the connection");
                    return ExitCode::SUCCESS;
                }
            }
        }
    }
}
