//! Bad input: each case gets a one-line diagnosis naming the thing, a hint, and a non-zero exit
//! within a bounded time. Never a hang, never a panic.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use relay_hil::board::{Board, OpenOptions, Target};
use relay_hil::error::{BoardError, HilError, PortError};
use relay_hil::select::Selection;
use rstest::rstest;

mod common;

use common::{BIN, relay_hil, virtual_board};

/// Exit 2, no panic, and a first line naming the problem followed by a hint.
fn assert_diagnosis(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let mut lines = err
        .lines()
        .filter(|l| l.starts_with("relay-hil:") || l.starts_with("  hint:"));
    let first = lines.next().unwrap_or_default();
    assert!(first.contains(needle), "expected `{needle}` in: {err}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("  hint: ")),
        "no hint in: {err}"
    );
}

/// A pseudo-terminal that nothing answers on: a serial port that exists but is not a relay.
fn dead_pty() -> (nix::pty::OpenptyResult, PathBuf) {
    let pair = nix::pty::openpty(None, None).unwrap();
    let path = nix::unistd::ttyname(&pair.slave).unwrap();
    (pair, path)
}

#[rstest]
fn missing_port() {
    let out = relay_hil(&["run", "--port", "/dev/ttyUSB-not-there"]);
    assert_diagnosis(&out, "serial port /dev/ttyUSB-not-there does not exist");
}

/// Port 1 on loopback: nothing listens there. An address without a port does not resolve.
#[rstest]
#[case::refused(
    "127.0.0.1:1",
    "cannot reach the relay at 127.0.0.1:1: connection refused"
)]
#[case::unresolvable("no-port-given", "cannot reach the relay at no-port-given")]
fn unreachable_relay(#[case] addr: &str, #[case] needle: &str) {
    let (_pty, path) = dead_pty();
    let out = relay_hil(&["run", "--serial", path.to_str().unwrap(), "--addr", addr]);
    assert_diagnosis(&out, needle);
}

#[rstest]
fn a_bare_pty_cannot_reset() {
    let (_pty, path) = dead_pty();
    let out = relay_hil(&["run", "--port", path.to_str().unwrap()]);
    assert_diagnosis(&out, "cannot set DTR/RTS to reset the board");
}

#[rstest]
#[case::unknown_key(
    "name = 'x'\n[relay]\nmax_clientz = 2\n",
    "unknown field `max_clientz`"
)]
#[case::out_of_range(
    "name = 'x'\n[relay]\nmax_clients = 99\n",
    "relay.max_clients = 99 is out of range"
)]
#[case::bad_capability("name = 'x'\n[capabilities]\nreset = 'sometimes'\n", "invalid type")]
fn malformed_profile(#[case] text: &str, #[case] needle: &str) {
    let dir = common::temp_dir("bad-profile");
    let path = dir.join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let out = relay_hil(&["run", "--profile", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_diagnosis(&out, needle);
}

#[rstest]
fn unknown_profile() {
    let out = relay_hil(&["run", "--profile", "esp32-c3"]);
    assert_diagnosis(&out, "unknown board profile `esp32-c3`");
}

#[rstest]
#[case::addr_alone(&["run", "--addr", "127.0.0.1:8888"], "--addr needs --serial")]
#[case::serial_alone(&["run", "--serial", "/dev/null"], "names a relay's port but not its --addr")]
fn incomplete_selection(#[case] args: &[&str], #[case] needle: &str) {
    assert_diagnosis(&relay_hil(args), needle);
}

#[rstest]
fn unknown_scenario() {
    let out = relay_hil(&["run", "--only", "teleport"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown scenario `teleport`") && err.contains("echo, echo_raw"),
        "{err}"
    );
}

#[rstest]
#[tokio::test]
async fn a_board_that_never_prints_a_banner_times_out_in_bounded_time() {
    let (_, opts) = Selection::default().resolve(virtual_board()).unwrap();
    let opts = OpenOptions {
        banner_timeout: Duration::from_secs(1),
        ..opts
    };
    // A fresh flash file is an erased flash: the ROM finds no image, no relay runs.
    let dir = common::temp_dir("erased");
    let flash = dir.join("board.flash");
    let target = Target::Virtual {
        program: BIN.into(),
        args: vec![
            "virtual-board".into(),
            "--flash-file".into(),
            flash.to_str().unwrap().into(),
        ],
    };
    let start = Instant::now();
    let err = Board::open(&target, &opts)
        .await
        .err()
        .expect("an erased board has no banner");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        matches!(err, HilError::Board(BoardError::NoBanner { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("no relay banner on /dev/pts/"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}

#[rstest]
#[tokio::test]
async fn a_second_run_on_the_same_board_fails_fast() {
    let (target, opts) = Selection::default().resolve(virtual_board()).unwrap();
    let first = Board::open(&target, &opts).await.unwrap();
    let again = Target::Port {
        path: Some(first.serial.path.clone()),
        addr: None,
    };
    let err = Board::open(&again, &opts)
        .await
        .err()
        .expect("the port is locked by the first run");
    assert!(
        matches!(err, HilError::Port(PortError::Busy { .. })),
        "{err}"
    );
    assert!(
        err.hint().contains("each run locks its port"),
        "{}",
        err.hint()
    );
}

/// A relay image for the virtual board, from `relay-hil image`, in `dir`.
fn relay_image(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("relay.bin");
    let out = relay_hil(&["image", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::printed(&out));
    path
}

/// Runs `args` (`IMAGE` standing for a good relay image) with its memory capped at 100 MB and
/// checks the refusal: exit 2, no panic, one line naming the problem (with a hint from
/// relay-hil), within a ceiling far above the milliseconds it takes.
fn assert_bounded_refusal(args: &[&str], needle: &str) {
    let dir = common::temp_dir("refusal");
    let image = relay_image(&dir);
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == "IMAGE" {
                image.to_str().unwrap()
            } else {
                a
            }
        })
        .collect();
    let out = common::relay_hil_capped(&args, Duration::from_secs(10));
    std::fs::remove_dir_all(&dir).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].contains(needle), "expected `{needle}` in: {err}");
    match lines[0].split(':').next() {
        Some("relay-hil") => {
            assert_eq!(lines.len(), 2, "{err}");
            assert!(lines[1].starts_with("  hint: "), "{err}");
        }
        _ => assert_eq!(lines.len(), 1, "one line from the virtual board: {err}"),
    }
    assert!(out.stdout.is_empty(), "nothing started");
}

/// `/dev/zero` wherever a file is read. Memory is bounded by construction: images and profiles
/// go through `nodemcu::bounded::read`, which reads at most one byte past the bound (16 MiB,
/// 64 KiB), and a flash file is only stat'ed, never read, before the board starts. The cap
/// makes a run that reads more fail here instead of eating the machine.
#[rstest]
#[case::flash_firmware(
    &["flash", "--firmware", "/dev/zero"],
    "relay-hil: /dev/zero: not a flashable relay image: more than 16 MiB, the largest ESP8266 flash"
)]
#[case::run_firmware(
    &["run", "--firmware", "/dev/zero"],
    "relay-hil: /dev/zero: not a flashable relay image: more than 16 MiB"
)]
#[case::run_profile(
    &["run", "-p", "/dev/zero"],
    "relay-hil: board profile /dev/zero is too big: more than 64 KiB"
)]
#[case::flash_profile(
    &["flash", "--firmware", "IMAGE", "--profile", "/dev/zero"],
    "relay-hil: board profile /dev/zero is too big: more than 64 KiB"
)]
#[case::flash_file(
    &["run", "--firmware", "IMAGE", "--flash-file", "/dev/zero"],
    "relay-hil: --flash-file /dev/zero: not a regular file"
)]
#[case::virtual_board_flash(
    &["virtual-board", "--flash-file", "/dev/zero"],
    "virtual-board: --flash-file /dev/zero: not a regular file"
)]
#[case::virtual_board_profile(
    &["virtual-board", "-p", "/dev/zero"],
    "virtual-board: board profile /dev/zero is too big: more than 64 KiB"
)]
fn dev_zero_anywhere_a_file_is_read(#[case] args: &[&str], #[case] needle: &str) {
    assert_bounded_refusal(args, needle);
}

/// A regular file one byte past its bound is refused by its length, before it is read (these
/// are sparse: no disk is spent).
#[rstest]
#[case::image(
    "big.bin",
    (16 << 20) + 1,
    &["flash", "--firmware", "FILE"],
    "not a flashable relay image: 16777217 bytes, more than 16 MiB"
)]
#[case::profile(
    "big.toml",
    (64 << 10) + 1,
    &["run", "--profile", "FILE"],
    "is too big: 65537 bytes, more than 64 KiB"
)]
#[case::flash_file(
    "big.flash",
    (16 << 20) + 1,
    &["run", "--firmware", "IMAGE", "--flash-file", "FILE"],
    "--flash-file FILE: 16777217 bytes, more than 16 MiB"
)]
#[case::virtual_board_flash(
    "big.flash",
    (16 << 20) + 1,
    &["virtual-board", "--flash-file", "FILE"],
    "--flash-file FILE: 16777217 bytes, more than 16 MiB"
)]
fn a_file_one_byte_past_its_bound(
    #[case] name: &str,
    #[case] len: u64,
    #[case] args: &[&str],
    #[case] needle: &str,
) {
    let dir = common::temp_dir("past");
    let file = dir.join(name);
    std::fs::File::create(&file).unwrap().set_len(len).unwrap();
    let file = file.to_str().unwrap();
    let args: Vec<&str> = args
        .iter()
        .map(|a| if *a == "FILE" { file } else { a })
        .collect();
    assert_bounded_refusal(&args, &needle.replace("FILE", file));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A FIFO has no length to check: the image is read up to one byte past 16 MiB, then refused.
#[rstest]
fn an_endless_fifo_as_firmware() {
    let dir = common::temp_dir("fifo");
    let fifo = dir.join("firmware.bin");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let path = fifo.clone();
    // Writes until relay-hil closes its end (EPIPE); the test does not wait for it.
    std::thread::spawn(move || {
        use std::io::Write;
        let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while w.write_all(&chunk).is_ok() {}
    });
    assert_bounded_refusal(
        &["flash", "--firmware", fifo.to_str().unwrap()],
        "not a flashable relay image: more than 16 MiB",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `flash` cannot do without an image: clap says so before anything starts.
#[rstest]
fn flash_without_firmware_is_a_usage_error() {
    let out = relay_hil(&["flash", "--board", "virtual"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: the following required arguments were not provided:")
            && err.contains("--firmware <FILE>"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A clap parse error: exit 2, no panic, and a first line naming the option and its range.
fn assert_parse_error(out: &Output, option: &str, range: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: invalid value ") && first.contains(option),
        "{err}"
    );
    assert!(first.contains(range), "{err}");
}

/// Durations at most a day, so no deadline can overflow, and an image no bigger than a flash.
#[rstest]
#[case::banner_timeout_max(
    &["run", "--banner-timeout", "18446744073709551615"],
    "'--banner-timeout <SECS>'",
    "from 1 to 86400 (a day)"
)]
#[case::banner_timeout_a_day_and_a_second(
    &["run", "--banner-timeout", "86401"],
    "'--banner-timeout <SECS>'",
    "from 1 to 86400 (a day)"
)]
#[case::flash_banner_timeout(
    &["flash", "--firmware", "x.bin", "--banner-timeout", "86401"],
    "'--banner-timeout <SECS>'",
    "(a day)"
)]
#[case::rtt(
    &["virtual-board", "--rtt-ms", "86400001"],
    "'--rtt-ms <MS>'",
    "from 0 to 86400000 (a day)"
)]
#[case::image_size(
    &["image", "--size", "99999999999", "-o", "/dev/null"],
    "'--size <BYTES>'",
    "from 0 to 16777216 (16 MiB, the largest ESP8266 flash)"
)]
#[case::image_size_one_past(
    &["image", "--size", "16777217", "-o", "/dev/null"],
    "'--size <BYTES>'",
    "(16 MiB"
)]
fn out_of_range_values_are_parse_errors(
    #[case] args: &[&str],
    #[case] option: &str,
    #[case] range: &str,
) {
    let out = common::relay_hil_capped(args, Duration::from_secs(10));
    assert_parse_error(&out, option, range);
}

#[rstest]
fn an_out_of_range_banner_timeout_variable_is_a_parse_error() {
    let out = common::command(&["run"])
        .env("RELAY_HIL_BANNER_TIMEOUT", "86401")
        .output()
        .unwrap();
    assert_parse_error(&out, "'--banner-timeout <SECS>'", "(a day)");
}

/// The largest image `relay-hil image` makes is exactly the largest flash, and a whole image.
#[rstest]
fn the_largest_image_fills_the_largest_flash() {
    let dir = common::temp_dir("largest-image");
    let path = dir.join("max.bin");
    let out = relay_hil(&["image", "--size", "16777216", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", common::printed(&out));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(bytes.len(), 16 << 20);
    let fw = nodemcu::image::parse_firmware(&bytes).unwrap();
    assert_eq!(fw.check_file_crc(), Ok(()));
}
