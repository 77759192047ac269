//! Bad input: each case gets a one-line diagnosis naming the thing, a hint, and a non-zero exit
//! within a bounded time. Never a hang, never a panic.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use relay_hil::board::{Board, OpenOptions, Target};
use relay_hil::error::HilError;
use relay_hil::select::Selection;
use rstest::rstest;

mod common;

use common::{BIN, relay_hil};

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
    let dir = std::env::temp_dir().join(format!(
        "relay-hil-bad-{}-{}",
        std::process::id(),
        needle.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
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

fn virtual_board() -> (PathBuf, Vec<String>) {
    (PathBuf::from(BIN), vec!["virtual-board".into()])
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
    let flash = std::env::temp_dir().join(format!("relay-hil-erased-{}.bin", std::process::id()));
    let _ = std::fs::remove_file(&flash);
    let target = Target::Virtual {
        program: BIN.into(),
        args: vec![
            "virtual-board".into(),
            "--flash".into(),
            flash.to_str().unwrap().into(),
        ],
    };
    let start = Instant::now();
    let err = Board::open(&target, &opts)
        .await
        .err()
        .expect("an erased board has no banner");
    let _ = std::fs::remove_file(&flash);
    assert!(matches!(err, HilError::NoBanner { .. }), "{err}");
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
    assert!(matches!(err, HilError::PortBusy { .. }), "{err}");
    assert!(
        err.hint().contains("each run locks its port"),
        "{}",
        err.hint()
    );
}
