//! Run results: the table people read, the JUnit XML that CI systems read, and artifacts.

use std::fmt::Write;
use std::path::{Path, PathBuf};
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
    let (_, fail, skip) = tally(records);
    let total: f64 = records.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"relay-hil\" tests=\"{}\" failures=\"{fail}\" skipped=\"{skip}\" time=\"{total:.3}\">",
        records.len()
    );
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
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Writes every transcript, the serial log and the JUnit file under `dir`.
pub fn write_artifacts(
    dir: &Path,
    records: &[Record],
    serial_log: &[u8],
    junit_xml: &str,
) -> std::io::Result<()> {
    let transcripts = dir.join("transcripts");
    std::fs::create_dir_all(&transcripts)?;
    for r in records {
        let mut text = r.transcript.render();
        match &r.outcome {
            Outcome::Fail(why) => _ = writeln!(text, "FAILED: {why}"),
            Outcome::Skip(why) => _ = writeln!(text, "skipped: {why}"),
            Outcome::Pass => {}
        }
        std::fs::write(transcripts.join(format!("{}.txt", r.scenario)), text)?;
    }
    std::fs::write(dir.join("serial.log"), serial_log)?;
    std::fs::write(dir.join("junit.xml"), junit_xml)
}

/// Claims a new artifact folder under `base` for one run: `<stamp>-<pid>`, or `<stamp>-<pid>-2`,
/// `-3`... when that exists. `create_dir` fails on an existing folder, so two runs can never both
/// own one, whatever their stamps and process ids.
pub fn claim_run_dir(base: &Path, stamp: &str, pid: u32) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(base)?;
    let name = format!("{stamp}-{pid}");
    // Bounded: a thousand folders of one process in one second means something else is wrong.
    for n in 1..=1000 {
        let dir = match n {
            1 => base.join(&name),
            n => base.join(format!("{name}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{name} and 999 numbered folders after it already exist"),
    ))
}

/// Points `base/latest` at `dir`, a folder in `base`, with a relative link (the tree can move).
/// The link is made under a name of its own and renamed over `latest`, which replaces it
/// atomically: a reader never finds `latest` missing or half made, and of two runs ending at
/// once the later rename wins.
pub fn link_latest(base: &Path, dir: &Path) -> std::io::Result<()> {
    let name = dir.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a run folder has a name")
    })?;
    let mut temp = std::ffi::OsString::from(".latest-");
    temp.push(name);
    let temp = base.join(temp);
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(name, &temp)?;
    std::fs::rename(&temp, base.join("latest")).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
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

#[cfg(test)]
mod run_dirs {
    use super::*;

    fn base(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("relay-hil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn runs_with_the_same_stamp_and_pid_each_get_a_folder() {
        let base = base("claim");
        // Claimed from eight threads at once: every folder is someone's, and only one's.
        let mut dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let claims: Vec<_> = (0..8)
                .map(|_| s.spawn(|| claim_run_dir(&base, "20260101-000000", 42).unwrap()))
                .collect();
            claims.into_iter().map(|c| c.join().unwrap()).collect()
        });
        dirs.sort();
        dirs.dedup();
        assert_eq!(dirs.len(), 8, "{dirs:?}");
        assert!(dirs.contains(&base.join("20260101-000000-42")));
        assert!(dirs.contains(&base.join("20260101-000000-42-8")));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn latest_follows_the_last_run_linked_and_leaves_nothing_behind() {
        let base = base("latest");
        let first = claim_run_dir(&base, "20260101-000000", 1).unwrap();
        let second = claim_run_dir(&base, "20260101-000000", 2).unwrap();
        link_latest(&base, &first).unwrap();
        link_latest(&base, &second).unwrap();
        let link = std::fs::read_link(base.join("latest")).unwrap();
        assert_eq!(link, Path::new("20260101-000000-2"), "relative to base");
        let mut names: Vec<String> = std::fs::read_dir(&base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["20260101-000000-1", "20260101-000000-2", "latest"]);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
