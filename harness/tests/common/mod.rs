//! Shared by the harness's integration tests: the CLI, with no board chosen by the environment.

use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_relay-hil");

/// `relay-hil` with `args`, every `RELAY_HIL_*` variable cleared so that only `args`
/// choose the board whatever the developer's shell has set.
pub fn relay_hil(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RELAY_HIL_") {
            cmd.env_remove(key);
        }
    }
    cmd.output().expect("relay-hil runs")
}

/// Everything a run printed, stdout then stderr.
#[allow(dead_code)] // every test binary compiles this module; not every one reads output
pub fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh, empty folder for one test, named after it and this process.
#[allow(dead_code)] // every test binary compiles this module; not every one needs a folder
pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("relay-hil-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}
