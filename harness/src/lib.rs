//! relay-hil: hardware-in-the-loop tests for the ESP8266 serial<->TCP relay.
//!
//! A [`board::Board`] is the virtual board, a NodeMCU on USB, or any serial + TCP endpoint;
//! [`scenario::ALL`] are the checks of the relay contract; [`run`] runs them and returns a
//! [`report::Record`] for each.

pub mod artifacts;
pub mod bench;
pub mod board;
pub mod error;
pub mod flash;
pub mod image;
pub mod labgrid;
pub mod net;
pub mod report;
pub mod rfc2217;
pub mod scenario;
pub mod select;
pub mod serial;
pub mod serve;
pub mod transcript;

use std::time::Instant;

use board::Board;
use error::UsageError;
use report::Record;
use scenario::Scenario;

/// The scenarios `names` name, in that order; every scenario when there are none.
pub fn choose(names: &[String]) -> Result<Vec<&'static Scenario>, UsageError> {
    if names.is_empty() {
        return Ok(scenario::ALL.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            scenario::find(name).ok_or_else(|| UsageError::UnknownScenario {
                name: name.clone(),
                known: scenario::ALL
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_chosen_by_name_in_order_or_all() {
        let names = |chosen: Vec<&Scenario>| chosen.iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(names(choose(&[]).unwrap()).len(), scenario::ALL.len());
        let two = ["capacity".to_owned(), "echo".to_owned()];
        assert_eq!(names(choose(&two).unwrap()), ["capacity", "echo"]);
        let Err(err) = choose(&["teleport".to_owned()]) else {
            panic!("teleport is no scenario");
        };
        assert_eq!(err.to_string(), "unknown scenario `teleport`");
        assert!(
            miette::Diagnostic::help(&err)
                .unwrap()
                .to_string()
                .starts_with("the scenarios are echo, echo_raw"),
        );
    }
}
