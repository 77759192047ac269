//! Run results: the table people read and the JUnit XML that CI systems read.

use std::fmt::Write;
use std::time::Duration;

use crate::scenario::Outcome;
use crate::transcript::Transcript;

/// One scenario's result.
#[derive(Clone, Debug)]
pub struct Record {
    pub scenario: &'static str,
    pub outcome: Outcome,
    pub elapsed: Duration,
    pub transcript: Transcript,
}

/// Counts of passed, failed and skipped scenarios.
pub fn tally(records: &[Record]) -> (usize, usize, usize) {
    let count = |f: fn(&Outcome) -> bool| records.iter().filter(|r| f(&r.outcome)).count();
    (
        count(|o| matches!(o, Outcome::Pass)),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skip(_))),
    )
}

pub fn table(records: &[Record]) -> String {
    let width = records
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>7}  reason\n",
        "scenario", "result", "time"
    );
    for r in records {
        let (result, reason) = match &r.outcome {
            Outcome::Pass => ("pass", ""),
            Outcome::Fail(why) => ("FAIL", why.as_str()),
            Outcome::Skip(why) => ("skip", why.as_str()),
        };
        let time = match r.outcome {
            Outcome::Skip(_) => "-".to_owned(),
            _ => format!("{:.2}s", r.elapsed.as_secs_f64()),
        };
        let row = format!("{:<width$}  {result:<6}  {time:>7}  {reason}", r.scenario);
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let (pass, fail, skip) = tally(records);
    let _ = writeln!(out, "{pass} passed, {fail} failed, {skip} skipped");
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() && c != '\n' && c != '\t' => format!("&#x{:x};", c as u32),
            c => c.to_string(),
        })
        .collect()
}

/// A JUnit XML report: one testsuite for the board, one testcase per scenario.
pub fn junit(records: &[Record], suite: &str) -> String {
    junit_suites(&[(suite, records)])
}

/// A JUnit XML report with a testsuite for each board, one testcase per scenario.
pub fn junit_suites(suites: &[(&str, &[Record])]) -> String {
    let all: Vec<&Record> = suites.iter().flat_map(|(_, r)| r.iter()).collect();
    let count = |o: fn(&Outcome) -> bool| all.iter().filter(|r| o(&r.outcome)).count();
    let fail = count(|o| matches!(o, Outcome::Fail(_)));
    let skip = count(|o| matches!(o, Outcome::Skip(_)));
    let total: f64 = all.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"relay-hil\" tests=\"{}\" failures=\"{fail}\" skipped=\"{skip}\" time=\"{total:.3}\">",
        all.len()
    );
    for (suite, records) in suites {
        suite_xml(&mut out, records, suite);
    }
    out.push_str("</testsuites>\n");
    out
}

fn suite_xml(out: &mut String, records: &[Record], suite: &str) {
    let (_, fail, skip) = tally(records);
    let total: f64 = records.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fail}\" skipped=\"{skip}\" time=\"{total:.3}\">",
        xml(suite),
        records.len()
    );
    for r in records {
        let head = format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            xml(suite),
            r.scenario,
            r.elapsed.as_secs_f64()
        );
        match &r.outcome {
            Outcome::Pass => {
                let _ = writeln!(
                    out,
                    "{head}>\n      <system-out>{}</system-out>\n    </testcase>",
                    xml(&r.transcript.render())
                );
            }
            Outcome::Skip(why) => {
                let _ = writeln!(
                    out,
                    "{head}>\n      <skipped message=\"{}\"/>\n    </testcase>",
                    xml(why)
                );
            }
            Outcome::Fail(why) => {
                let _ = writeln!(
                    out,
                    "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml(why),
                    xml(&r.transcript.render())
                );
            }
        }
    }
    out.push_str("  </testsuite>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<Record> {
        let mut t = Transcript::default();
        t.sent("c1", b"<&>\x01\n");
        vec![
            Record {
                scenario: "echo",
                outcome: Outcome::Pass,
                elapsed: Duration::from_millis(12),
                transcript: t.clone(),
            },
            Record {
                scenario: "echo_raw",
                outcome: Outcome::Skip("line mode".into()),
                elapsed: Duration::ZERO,
                transcript: Transcript::default(),
            },
            Record {
                scenario: "capacity",
                outcome: Outcome::Fail("no \"busy\" line".into()),
                elapsed: Duration::from_secs(2),
                transcript: t,
            },
        ]
    }

    #[test]
    fn table_lists_every_scenario_and_the_totals() {
        let t = table(&records());
        assert!(t.contains("echo_raw  skip          -  line mode"), "{t}");
        assert!(
            t.contains("capacity  FAIL      2.00s  no \"busy\" line"),
            "{t}"
        );
        assert!(t.ends_with("1 passed, 1 failed, 1 skipped\n"), "{t}");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let x = junit(&records(), "relay-hil.virtual");
        assert!(
            x.contains("tests=\"3\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("<skipped message=\"line mode\"/>"), "{x}");
        assert!(
            x.contains("<failure message=\"no &quot;busy&quot; line\">"),
            "{x}"
        );
        assert!(
            x.contains(r"c1 -&gt; &quot;&lt;&amp;&gt;\x01\n&quot;"),
            "{x}"
        );
    }
}
