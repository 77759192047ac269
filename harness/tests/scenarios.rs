//! Every scenario as a cargo test, against the board the environment selects (see the README:
//! the virtual board by default, a NodeMCU with RELAY_HIL_PORT). Each transcript is an insta
//! snapshot, the same for the virtual board and the hardware.
//!
//! The tests come from the scenario list itself (`relay_hil::for_each_scenario!`): one test a
//! scenario, the rstest case `contract::case_N_NAME`, whose snapshot is `scenarios__NAME.snap`.

use relay_hil::board::Board;
use relay_hil::scenario::{self, Outcome};
use relay_hil::select::Selection;

mod common;

/// Scenarios on one real board take turns; virtual boards are one per test.
static ONE_REAL_BOARD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The profile the virtual board takes for each scenario its default profile rules out. A
/// scenario skipped on the virtual board fails, so one that needs a profile of its own shows.
const VIRTUAL_PROFILES: &[(&str, &str)] = &[("echo_raw", "nodemcu-v2-raw")];

#[test]
fn virtual_profiles_are_for_known_scenarios() {
    for (name, _) in VIRTUAL_PROFILES {
        assert!(scenario::find(name).is_some(), "no scenario {name}");
    }
}

/// One rstest case for each scenario, named after it.
macro_rules! contract_tests {
    ($($name:ident),*) => {
        /// Runs scenario `name` and checks its transcript against its snapshot.
        #[rstest::rstest]
        $(#[case::$name(stringify!($name))])*
        #[tokio::test]
        async fn contract(#[case] name: &str) {
            run_contract(name).await;
        }
    };
}

relay_hil::for_each_scenario!(contract_tests);

/// Runs scenario `name` and checks its transcript against its snapshot.
async fn run_contract(name: &str) {
    let mut selection = Selection::from_env().expect("RELAY_HIL_* variables are valid");
    let real = selection.port.is_some() || selection.serial.is_some();
    let _turn = if real {
        Some(ONE_REAL_BOARD.lock().await)
    } else {
        None
    };
    if !real && let Some((_, p)) = VIRTUAL_PROFILES.iter().find(|(n, _)| *n == name) {
        selection.profile = Some((*p).into());
    }
    let (target, opts) = selection
        .resolve(common::virtual_board())
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
