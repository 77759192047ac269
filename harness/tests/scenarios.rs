//! Every scenario as a cargo test, against the board the environment selects (see the README:
//! the virtual board by default, a NodeMCU with RELAY_HIL_PORT). Each transcript is an insta
//! snapshot, the same for the virtual board and the hardware.

use std::path::PathBuf;

use relay_hil::board::Board;
use relay_hil::scenario::{self, Outcome};
use relay_hil::select::Selection;
use rstest::rstest;

/// Scenarios on one real board take turns; virtual boards are one per test.
static ONE_REAL_BOARD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn virtual_board() -> (PathBuf, Vec<String>) {
    (
        PathBuf::from(env!("CARGO_BIN_EXE_relay-hil")),
        vec!["virtual-board".into()],
    )
}

#[rstest]
#[case::echo("echo", None)]
#[case::echo_raw("echo_raw", Some("nodemcu-v2-raw"))]
#[case::ordering("ordering", None)]
#[case::fan_out("fan_out", None)]
#[case::disconnect("disconnect", None)]
#[case::capacity("capacity", None)]
#[case::overflow_guard("overflow_guard", None)]
#[case::responsiveness("responsiveness", None)]
#[case::connection_budget("connection_budget", None)]
#[case::quiet_loop("quiet_loop", None)]
#[case::slow_reader("slow_reader", None)]
#[tokio::test]
async fn contract(#[case] name: &str, #[case] virtual_profile: Option<&str>) {
    let mut selection = Selection::from_env().expect("RELAY_HIL_* variables are valid");
    let real = selection.port.is_some() || selection.serial.is_some();
    let _turn = if real {
        Some(ONE_REAL_BOARD.lock().await)
    } else {
        None
    };
    if !real && let Some(p) = virtual_profile {
        selection.profile = Some(p.into());
    }
    let (target, opts) = selection
        .resolve(virtual_board())
        .expect("a usable board selection");
    let mut board = Board::open(&target, &opts)
        .await
        .unwrap_or_else(|e| panic!("cannot open the board: {e}\n  hint: {}", e.hint()));
    let (outcome, transcript) = scenario::find(name)
        .expect("a known scenario")
        .run(&mut board)
        .await;
    match outcome {
        Outcome::Pass => insta::assert_snapshot!(name, transcript.render()),
        // The virtual board can do everything; only a real board's profile may rule one out.
        Outcome::Skip(why) if real => eprintln!("skipped {name}: {why}"),
        Outcome::Skip(why) => panic!("{name} was skipped on the virtual board: {why}"),
        Outcome::Fail(why) => panic!("{name} failed: {why}\n{}", transcript.render()),
    }
}
