//! A run's artifact folder: its name, claiming it, writing it, and `latest` naming it.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::ArtifactsError;
use crate::report::Record;
use crate::scenario::Outcome;

/// `YYYYMMDD-HHMMSS` in UTC: when a run started, the start of its folder's name.
pub fn stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Where runs' folders go: `target/relay-hil`, in `$CARGO_TARGET_DIR` when that is set.
pub fn default_base() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("relay-hil")
}

/// Which folder a run writes into.
#[derive(Clone, Copy, Debug)]
pub enum Folder<'a> {
    /// The caller's: created if missing, earlier files overwritten, `latest` left alone.
    Given(&'a Path),
    /// A new one of the run's own under `base`, named after `stamp` and this process, which
    /// `base/latest` names once it is written.
    New { base: &'a Path, stamp: &'a str },
}

/// Where a run's artifacts went.
#[derive(Debug)]
pub struct Saved {
    pub dir: PathBuf,
    /// Why `latest` could not be pointed at `dir`: the folder is whole, the shortcut stale.
    pub latest: Option<std::io::Error>,
}

/// One board's share of a run's artifacts.
pub struct BoardArtifacts<'a> {
    /// Its folder in the run's, for a run of several boards; `None`: the run's folder itself.
    pub folder: Option<String>,
    /// Its JUnit test suite.
    pub suite: String,
    pub records: &'a [Record],
    pub serial_log: &'a [u8],
}

/// Writes a run's artifacts into `folder`: each board's transcripts, serial log and JUnit
/// file (in a folder of its own when there are several), the whole run's JUnit report (a
/// suite per board) as `junit.xml` there and at `junit` if given, and for a new folder the
/// `latest` link.
pub fn save(
    folder: Folder<'_>,
    boards: &[BoardArtifacts<'_>],
    junit: Option<&Path>,
) -> Result<Saved, ArtifactsError> {
    let dir = match folder {
        Folder::Given(dir) => dir.to_owned(),
        Folder::New { base, stamp } => {
            claim_run_dir(base, stamp, std::process::id()).map_err(|source| {
                ArtifactsError::Claim {
                    base: base.to_owned(),
                    source,
                }
            })?
        }
    };
    let suites: Vec<(&str, &[Record])> = boards
        .iter()
        .map(|b| (b.suite.as_str(), b.records))
        .collect();
    let junit_xml = crate::report::junit_suites(&suites);
    let write = |dir: &Path| -> std::io::Result<()> {
        for b in boards {
            let own = crate::report::junit(b.records, &b.suite);
            match &b.folder {
                Some(name) => write_artifacts(&dir.join(name), b.records, b.serial_log, &own)?,
                None => write_artifacts(dir, b.records, b.serial_log, &own)?,
            }
        }
        std::fs::write(dir.join("junit.xml"), &junit_xml)
    };
    write(&dir).map_err(|source| ArtifactsError::Write {
        dir: dir.clone(),
        source,
    })?;
    if let Some(path) = junit {
        std::fs::write(path, &junit_xml).map_err(|source| ArtifactsError::Junit {
            path: path.to_owned(),
            source,
        })?;
    }
    let latest = match folder {
        Folder::Given(_) => None,
        Folder::New { base, .. } => link_latest(base, &dir).err(),
    };
    Ok(Saved { dir, latest })
}

/// Writes every transcript, the serial log and the JUnit file under `dir`.
fn write_artifacts(
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
    use std::time::Duration;

    use super::*;
    use crate::transcript::Transcript;

    fn at(secs: u64) -> String {
        stamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn a_stamp_is_the_utc_civil_time() {
        assert_eq!(at(0), "19700101-000000");
        assert_eq!(
            at(951_868_799),
            "20000229-235959",
            "a leap day of a leap century"
        );
        assert_eq!(at(1_795_674_504), "20261126-062824");
        assert_eq!(at(4_107_499_200), "21000228-120000");
        assert_eq!(at(4_107_542_400), "21000301-000000", "2100 has no leap day");
    }

    fn base(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("relay-hil-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn records() -> Vec<Record> {
        let mut t = Transcript::default();
        t.sent("c1", b"hello\n");
        vec![
            Record {
                scenario: "echo",
                outcome: Outcome::Pass,
                elapsed: Duration::ZERO,
                transcript: t,
            },
            Record {
                scenario: "capacity",
                outcome: Outcome::Fail("no busy line".into()),
                elapsed: Duration::ZERO,
                transcript: Transcript::default(),
            },
        ]
    }

    fn one_board<'a>(records: &'a [Record], serial_log: &'a [u8]) -> BoardArtifacts<'a> {
        BoardArtifacts {
            folder: None,
            suite: "relay-hil.virtual".into(),
            records,
            serial_log,
        }
    }

    /// Two boards: a folder each with its own suite, and the run's report holds both suites.
    #[test]
    fn several_boards_get_a_folder_and_a_suite_each() {
        let base = base("save-two");
        let records = records();
        let boards: Vec<BoardArtifacts<'_>> = (1..=2)
            .map(|i| BoardArtifacts {
                folder: Some(format!("{i}-virtual")),
                suite: format!("relay-hil.virtual.{i}"),
                records: &records,
                serial_log: b"uart",
            })
            .collect();
        let dir = base.join("run");
        let saved = save(Folder::Given(&dir), &boards, None).unwrap();
        let all = std::fs::read_to_string(saved.dir.join("junit.xml")).unwrap();
        assert_eq!(all.matches("<testsuite ").count(), 2, "{all}");
        assert!(
            all.contains("<testsuites name=\"relay-hil\" tests=\"4\" failures=\"2\""),
            "{all}"
        );
        for i in 1..=2 {
            let own = std::fs::read_to_string(dir.join(format!("{i}-virtual/junit.xml"))).unwrap();
            assert!(
                own.contains(&format!("name=\"relay-hil.virtual.{i}\"")),
                "{own}"
            );
            assert!(
                dir.join(format!("{i}-virtual/transcripts/echo.txt"))
                    .exists()
            );
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_new_folder_holds_the_run_and_latest_names_it() {
        let base = base("save-new");
        let junit =
            std::env::temp_dir().join(format!("relay-hil-junit-{}.xml", std::process::id()));
        let records = records();
        let saved = save(
            Folder::New {
                base: &base,
                stamp: "20260101-000000",
            },
            &[one_board(&records, b"uart")],
            Some(&junit),
        )
        .unwrap();
        assert!(saved.latest.is_none(), "{:?}", saved.latest);
        assert_eq!(saved.dir.parent(), Some(base.as_path()));
        assert_eq!(
            std::fs::read_link(base.join("latest")).unwrap(),
            saved.dir.file_name().map(Path::new).unwrap()
        );
        let failed = std::fs::read_to_string(saved.dir.join("transcripts/capacity.txt")).unwrap();
        assert!(failed.ends_with("FAILED: no busy line\n"), "{failed}");
        assert_eq!(
            std::fs::read(saved.dir.join("serial.log")).unwrap(),
            b"uart"
        );
        let xml = std::fs::read_to_string(&junit).unwrap();
        assert_eq!(
            xml,
            std::fs::read_to_string(saved.dir.join("junit.xml")).unwrap()
        );
        assert!(
            xml.contains("<testsuite name=\"relay-hil.virtual\" tests=\"2\""),
            "{xml}"
        );
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_file(&junit).unwrap();
    }

    #[test]
    fn a_given_folder_is_written_as_asked_and_latest_stays_away() {
        let base = base("save-given");
        let dir = base.join("mine");
        let records = records();
        let saved = save(Folder::Given(&dir), &[one_board(&records, b"")], None).unwrap();
        assert_eq!(saved.dir, dir);
        assert!(dir.join("transcripts/echo.txt").exists());
        assert!(!base.join("latest").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn an_unwritable_base_is_reported_naming_it() {
        let records = records();
        let err = save(
            Folder::New {
                base: Path::new("/dev/null/runs"),
                stamp: "20260101-000000",
            },
            &[one_board(&records, b"")],
            None,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot make a run folder in /dev/null/runs: "),
            "{err}"
        );
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
