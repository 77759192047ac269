//! relay-hil: hardware-in-the-loop tests for the ESP8266 serial<->TCP relay.
//!
//! A [`board::Board`] is the virtual board, a NodeMCU on USB, or any serial + TCP endpoint;
//! [`scenario::ALL`] are the checks of the relay contract; [`run`] runs them and returns a
//! [`report::Record`] for each.

pub mod artifacts;
pub mod banner;
pub mod bench;
pub mod board;
pub mod error;
pub mod flash;
pub mod image;
pub mod net;
pub mod report;
pub mod scenario;
pub mod select;
pub mod serial;
pub mod transcript;

use std::time::Instant;

use board::Board;
use report::Record;
use scenario::Scenario;

/// Runs `scenarios` in order on `board`, calling `progress` before and after each one.
pub async fn run(
    board: &mut Board,
    scenarios: &[&'static Scenario],
    mut progress: impl FnMut(&'static Scenario, Option<&Record>),
) -> Vec<Record> {
    let mut records = Vec::new();
    for &s in scenarios {
        progress(s, None);
        let start = Instant::now();
        let (outcome, transcript) = s.run(board).await;
        let record = Record {
            scenario: s.name,
            outcome,
            elapsed: start.elapsed(),
            transcript,
        };
        progress(s, Some(&record));
        records.push(record);
    }
    records
}
