//! Shared by the harness's integration tests: the CLI, with no board chosen by the environment.

use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_relay-hil");

/// `relay-hil` with `args`, the `RELAY_HIL_*` board variables cleared so that only `args`
/// choose the board whatever the developer's shell has set.
pub fn relay_hil(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RELAY_HIL_PORT")
        .env_remove("RELAY_HIL_SERIAL")
        .env_remove("RELAY_HIL_ADDR")
        .env_remove("RELAY_HIL_PROFILE")
        .output()
        .expect("relay-hil runs")
}
