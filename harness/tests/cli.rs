//! The CLI end to end: `run` on the virtual board, and on a relay named by hand.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use rstest::rstest;

mod common;

use common::{BIN, printed, relay_hil, temp_dir};

/// The run succeeded and each of `passed` has a `pass` row.
fn assert_passed(out: &std::process::Output, passed: &[&str]) -> String {
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in passed {
        assert!(row(&table, s).contains(" pass "), "{}", row(&table, s));
    }
    table
}

/// Every scenario in `scenario::ALL` but `except`, in the order a run takes them.
fn scenarios_but(except: &[&str]) -> Vec<&'static str> {
    let all: Vec<&str> = relay_hil::scenario::ALL.iter().map(|s| s.name).collect();
    for name in except {
        assert!(all.contains(name), "no scenario {name}");
    }
    all.into_iter().filter(|n| !except.contains(n)).collect()
}

fn row<'a>(table: &'a str, scenario: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(&format!("{scenario} ")))
        .unwrap_or_else(|| panic!("no row for {scenario}:\n{table}"))
}

#[rstest]
fn run_with_no_options_runs_everything_on_the_virtual_board() {
    let out_dir = temp_dir("run");
    let junit = out_dir.join("extra-junit.xml");
    let out = relay_hil(&[
        "run",
        "--artifacts-dir",
        out_dir.to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    // Everything but echo_raw, which needs a raw-mode profile.
    let all = scenarios_but(&["echo_raw"]);
    let table = assert_passed(&out, &all);
    assert!(table.starts_with("board: virtual (nodemcu-v2)"), "{table}");
    assert!(
        row(&table, "echo_raw").contains("skip")
            && row(&table, "echo_raw").contains("raw-mode profile")
    );
    let n = all.len();
    assert!(
        table.contains(&format!("{n} passed, 0 failed, 1 skipped")),
        "{table}"
    );
    let xml = std::fs::read_to_string(out_dir.join("junit.xml")).unwrap();
    assert!(
        xml.contains(&format!("tests=\"{}\" failures=\"0\" skipped=\"1\"", n + 1)),
        "{xml}"
    );
    assert_eq!(std::fs::read_to_string(&junit).unwrap(), xml);
    // Raw bytes: the ROM's 74880-baud text reads as garbage at the relay's rate.
    let log =
        String::from_utf8_lossy(&std::fs::read(out_dir.join("serial.log")).unwrap()).into_owned();
    assert!(
        log.contains("relay ready version=") && log.contains("hello, relay"),
        "{log}"
    );
    let t = std::fs::read_to_string(out_dir.join("transcripts/echo_raw.txt")).unwrap();
    assert!(t.starts_with("skipped: the board is in line mode"), "{t}");
    std::fs::remove_dir_all(&out_dir).unwrap();
}

/// A virtual board started by hand, once it has booted and printed its banner (a relay named
/// by hand is not reset), and its ready line.
fn booted_board() -> (std::process::Child, serde_json::Value) {
    let mut relay = Command::new(BIN)
        .args(["virtual-board"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(relay.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).unwrap();
    let mut uart = serialport::new(ready["serial"].as_str().unwrap(), 115_200)
        .timeout(std::time::Duration::from_secs(10))
        .open()
        .unwrap();
    let mut seen = Vec::new();
    let banner_done = |seen: &[u8]| {
        let text = String::from_utf8_lossy(seen);
        text.find("relay ready ")
            .is_some_and(|at| text[at..].contains('\n'))
    };
    while !banner_done(&seen) {
        let mut buf = [0u8; 256];
        let n = uart.read(&mut buf).expect("the banner within 10 s");
        seen.extend_from_slice(&buf[..n]);
    }
    (relay, ready)
}

/// `relay-hil run` against the relay of `ready`, named by hand with a profile of `text`,
/// writing into `dir/out`, with `extra` arguments.
fn run_by_hand(
    ready: &serde_json::Value,
    dir: &std::path::Path,
    text: &str,
    extra: &[&str],
) -> std::process::Output {
    let profile = dir.join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let out = dir.join("out");
    let mut args = vec![
        "run",
        "--serial",
        ready["serial"].as_str().unwrap(),
        "--addr",
        ready["tcp"].as_str().unwrap(),
        "--profile",
        profile.to_str().unwrap(),
        "--artifacts-dir",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    relay_hil(&args)
}

/// Any relay, named by its serial path and address, runs what its profile allows and reports
/// the rest as skipped with the reason.
#[rstest]
fn run_against_a_relay_named_by_hand() {
    let (mut relay, ready) = booted_board();
    let dir = temp_dir("endpoint");
    let out = run_by_hand(
        &ready,
        &dir,
        "name = 'foreign'\n[net]\nstatus_port = 0\n\
         [capabilities]\nreset = false\nstatus = false\nstall_close = false\n",
        &[],
    );
    let _ = relay.kill();
    let _ = relay.wait();
    // The profile rules out raw mode and closing a stalled client; everything else passes.
    let table = assert_passed(&out, &scenarios_but(&["echo_raw", "slow_reader"]));
    assert!(table.starts_with("board: endpoint (foreign)"), "{table}");
    assert!(
        row(&table, "slow_reader").contains("never closes a stalled client"),
        "{table}"
    );
    assert!(row(&table, "echo_raw").contains("skip"), "{table}");
    let t = std::fs::read_to_string(dir.join("out/transcripts/echo.txt")).unwrap();
    assert!(
        t.contains("counters: not checked (no status channel)"),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[rstest]
fn scenarios_and_boards_list_what_they_know() {
    let out = relay_hil(&["scenarios"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    let listed: Vec<&str> = text
        .lines()
        .map(|l| l.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(listed, scenarios_but(&[]), "{text}");
    let out = relay_hil(&["boards"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A profile file from anywhere reaches the virtual board the harness starts, not only the
/// ones in fixtures/boards.
#[rstest]
fn run_with_a_profile_file_outside_the_fixtures() {
    let dir = temp_dir("own-profile");
    let profile = dir.join("mine.toml");
    // The limits of the `tiny` firmware build, under another name.
    std::fs::write(
        &profile,
        "name = 'mine'\n[relay]\nmax_clients = 2\nmax_line = 32\ntxq_size = 128\n\
         uartq_size = 64\nstall_timeout_ms = 500\n[firmware]\nenv = 'tiny'\n",
    )
    .unwrap();
    let out = relay_hil(&[
        "run",
        "--only",
        "capacity",
        "--profile",
        profile.to_str().unwrap(),
        "--artifacts-dir",
        dir.join("out").to_str().unwrap(),
    ]);
    assert_passed(&out, &["capacity"]);
    let t = std::fs::read_to_string(dir.join("out/transcripts/capacity.txt")).unwrap();
    assert!(
        t.contains("max_clients=2") && t.contains("!relay busy max_clients=2"),
        "{t}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The folder a run printed on its `artifacts:` line.
fn artifacts_dir(out: &std::process::Output) -> std::path::PathBuf {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("artifacts: "))
        .unwrap_or_else(|| panic!("no artifacts line in:\n{text}"));
    let (dir, _) = line.rsplit_once(" (").expect("`DIR (time)`");
    dir.into()
}

/// Two runs started together, each on its own virtual board, end with a folder each, holding
/// its own run's junit.xml, and `latest` points at one of them. The runs differ in their
/// profile, which their transcripts (in the JUnit file) name.
#[rstest]
fn two_runs_at_once_never_share_a_folder() {
    let target = temp_dir("two-runs");
    let runs: Vec<_> = [("nodemcu-v2", "max_clients=4"), ("tiny", "max_clients=2")]
        .into_iter()
        .map(|(profile, limits)| {
            let child = common::command(&["run", "--only", "echo", "--profile", profile])
                .env("CARGO_TARGET_DIR", &target)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (child, limits)
        })
        .collect();
    let base = target.join("relay-hil");
    let mut dirs = Vec::new();
    for (child, limits) in runs {
        let out = child.wait_with_output().unwrap();
        assert_passed(&out, &["echo"]);
        let dir = artifacts_dir(&out);
        assert_eq!(dir.parent(), Some(base.as_path()), "{}", dir.display());
        let xml = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
        assert!(xml.contains("tests=\"1\" failures=\"0\""), "{xml}");
        assert!(xml.contains(limits), "{limits} is not in:\n{xml}");
        dirs.push(dir);
    }
    assert_ne!(dirs[0], dirs[1]);
    let latest = std::fs::read_link(base.join("latest")).unwrap();
    assert!(
        dirs.iter()
            .any(|d| d.file_name() == Some(latest.as_os_str())),
        "latest -> {}",
        latest.display()
    );
    let mut names: Vec<String> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        3,
        "two folders and `latest`, nothing else: {names:?}"
    );
    std::fs::remove_dir_all(&target).unwrap();
}

/// A relay whose status channel stops counting overflows fails `overflow_guard`, naming the
/// counter: the board here is a virtual board whose status text passes through a proxy that
/// reports `overflows=0` whatever the relay counted.
#[rstest]
fn a_relay_that_stops_counting_fails_the_run() {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let (mut relay, ready) = booted_board();
    let status: std::net::SocketAddr = ready["status"].as_str().unwrap().parse().unwrap();
    let proxy = TcpListener::bind((status.ip(), 0)).unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in proxy.incoming() {
            let (Ok(mut client), Ok(mut board)) = (client, TcpStream::connect(status)) else {
                return;
            };
            let mut text = String::new();
            if board.read_to_string(&mut text).is_err() {
                return;
            }
            let forged: Vec<String> = text
                .split(' ')
                .map(|kv| match kv.split_once('=') {
                    Some(("overflows", _)) => "overflows=0".to_owned(),
                    _ => kv.to_owned(),
                })
                .collect();
            let _ = client.write_all(forged.join(" ").as_bytes());
        }
    });
    let dir = temp_dir("uncounted");
    let out = run_by_hand(
        &ready,
        &dir,
        &format!("name = 'uncounted'\n[net]\nstatus_port = {proxy_port}\n"),
        &["--only", "overflow_guard"],
    );
    let _ = relay.kill();
    let _ = relay.wait();
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(
        row(&table, "overflow_guard").contains("overflows +0 (expected +2)"),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An installed `relay-hil` needs nothing from the tree it was built in: a copy in an empty
/// folder runs the suite there, its profiles and firmware built in, its artifacts and flash
/// file written beside it. Where user namespaces allow, the build tree is hidden from it
/// (an empty tmpfs mounted over the workspace), so a binary that reached into it would fail.
#[rstest]
fn a_copy_in_an_empty_folder_runs_the_suite() {
    let dir = temp_dir("installed");
    let bin = dir.join("relay-hil");
    std::fs::copy(BIN, &bin).unwrap();
    let tree = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let hidden = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "mount",
            "-t",
            "tmpfs",
            "none",
        ])
        .arg(tree)
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if hidden {
        let mut c = Command::new("unshare");
        c.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs none "$1" && test -z "$(ls -A "$1")" && exec ./relay-hil run"#)
            .arg("sh")
            .arg(tree);
        c
    } else {
        eprintln!("no user namespaces here: the build tree stays visible");
        let mut c = Command::new(&bin);
        c.arg("run");
        c
    };
    let out = cmd
        .current_dir(&dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let table = assert_passed(&out, &["echo", "capacity", "overflow_guard"]);
    assert!(table.contains("10 passed, 0 failed, 1 skipped"), "{table}");
    assert!(dir.join("target/relay-hil/latest/junit.xml").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// README.md, whose synopsis and option tables document both command lines.
fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// Every option named in `text`: `-x` or `--long-name`, where a word starts.
fn options_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut prev = ' ';
    for (at, c) in text.char_indices() {
        if c == '-' && !(prev.is_alphanumeric() || prev == '-' || prev == '_') {
            let word: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let name = word.trim_start_matches('-');
            let dashes = word.len() - name.len();
            let letter = name.starts_with(|c: char| c.is_ascii_alphabetic());
            if letter && ((dashes == 1 && name.len() == 1) || (dashes == 2 && name.len() > 1)) {
                found.insert(word);
            }
        }
        prev = c;
    }
    found
}

/// The options in the first column of the table whose header row is `header`, the first such
/// after `after`.
fn table_options(readme: &str, after: &str, header: &str) -> BTreeSet<String> {
    let from = readme
        .find(after)
        .unwrap_or_else(|| panic!("no `{after}` in README"));
    let at = from + readme[from..].find(header).expect("the table's header");
    readme[at..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .flat_map(|row| options_in(row.split('|').nth(1).unwrap_or("")))
        .collect()
}

/// The options `relay-hil ARGS -h` lists: each one's short form, if any, and long form.
fn help_options(args: &[&str]) -> (String, Vec<(Option<String>, String)>) {
    let out = relay_hil(args);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {help}");
    let options = help
        .lines()
        .filter(|l| l.starts_with("  ") && l.trim_start().starts_with('-'))
        .map(|l| {
            // Up to the description, two spaces on.
            let head = l.trim_start().split("  ").next().unwrap();
            let names: Vec<String> = head
                .split(", ")
                .map(|w| w.split([' ', '<', '.', '[']).next().unwrap().to_owned())
                .collect();
            match names.as_slice() {
                [short, long] => (Some(short.clone()), long.clone()),
                [long] => (None, long.clone()),
                _ => panic!("unexpected option line `{l}`"),
            }
        })
        .filter(|(_, long)| long != "--help" && long != "--version")
        .collect();
    (help, options)
}

/// Each `relay-hil` line of the README's synopsis against its command's `--help`: every option
/// it names exists, every option there is in the synopsis or in the board options' table, and
/// every command has its line.
#[rstest]
fn the_readme_synopsis_matches_the_help() {
    let readme = readme();
    let section = &readme[readme.find("## The harness: `relay-hil`").unwrap()..];
    let block = section.split("```").nth(1).expect("the synopsis block");
    let table = table_options(
        &readme,
        "**Choosing the board.**",
        "| option | variable | meaning |",
    );
    let mut documented = BTreeSet::new();
    for line in block.lines().filter_map(|l| l.strip_prefix("relay-hil ")) {
        let line = line.split('#').next().unwrap();
        let command = line.split_whitespace().next().unwrap();
        documented.insert(command.to_owned());
        if command == "virtual-board" {
            continue; // its own options, below
        }
        let (help, options) = help_options(&[command, "-h"]);
        let synopsis = options_in(line);
        let known: BTreeSet<&String> = options
            .iter()
            .flat_map(|(short, long)| short.iter().chain([long]))
            .collect();
        for o in &synopsis {
            assert!(
                known.contains(o),
                "`{o}` is not an option of `{command}`:\n{help}"
            );
        }
        for (short, long) in &options {
            let listed = |o: &String| synopsis.contains(o) || table.contains(o);
            assert!(
                listed(long) || short.as_ref().is_some_and(listed),
                "`{command} {long}` is in neither the synopsis nor the options table"
            );
        }
        // A positional the synopsis shows, such as `[NAME]`, is one the command takes.
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap();
        for (at, _) in line.match_indices('[') {
            let word = line[at + 1..].split(']').next().unwrap();
            if !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase()) {
                assert!(
                    usage.contains(&format!("<{word}>")) || usage.contains(&format!("[{word}]")),
                    "`{command}` takes no {word}: {usage}"
                );
            }
        }
    }
    let (help, _) = help_options(&["-h"]);
    let commands: BTreeSet<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .filter(|c| c != "help")
        .collect();
    assert_eq!(documented, commands, "the synopsis has a line per command");
}

/// The virtual board's options table lists exactly the options its `--help` shows.
#[rstest]
fn the_readme_lists_the_virtual_board_s_options() {
    let table = table_options(
        &readme(),
        "**Options** (`cargo run -q -p relay-hil -- virtual-board --help`",
        "| option | default | meaning |",
    );
    let (help, options) = help_options(&["virtual-board", "-h"]);
    let mut shown = BTreeSet::new();
    for (short, long) in options {
        assert!(
            table.contains(&long),
            "`{long}` is not in the README's table"
        );
        if let Some(short) = short {
            assert!(
                table.contains(&short),
                "`{short}` is not in the README's table"
            );
            shown.insert(short);
        }
        shown.insert(long);
    }
    assert_eq!(
        table, shown,
        "options in the README's table that --help lacks:\n{help}"
    );
}

/// Two virtual boards named at once run side by side: one exit code, a folder and a JUnit
/// suite for each, and the run's report holding both. Side by side, the whole run takes less
/// than its two suites' times added up (each waits out slow_reader's 5 s stall timeout), which
/// only a run that took the boards in turn could not.
#[rstest]
fn two_boards_run_side_by_side_with_a_suite_each() {
    let dir = temp_dir("two-boards");
    let started = std::time::Instant::now();
    let out = relay_hil(&[
        "run",
        "--port",
        "virtual,virtual",
        "--artifacts-dir",
        dir.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        table.matches("10 passed, 0 failed, 1 skipped").count(),
        2,
        "{table}"
    );
    let all = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert_eq!(all.matches("<testsuite ").count(), 2, "{all}");
    let mut suites = 0.0;
    for i in 1..=2 {
        let own = std::fs::read_to_string(dir.join(format!("{i}-virtual/junit.xml"))).unwrap();
        assert!(
            own.contains(&format!("<testsuite name=\"relay-hil.virtual.{i}\"")),
            "{own}"
        );
        let time = own.split("<testsuite ").nth(1).unwrap();
        let time = time
            .split("time=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        suites += time.parse::<f64>().unwrap();
        assert!(dir.join(format!("{i}-virtual/serial.log")).is_file());
    }
    assert!(
        took.as_secs_f64() < suites,
        "the run took {took:?}, its suites {suites:.1} s added up: not side by side"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A board that cannot be used among several: the others still run and report, and the run
/// exits 2, naming which board failed.
#[rstest]
fn one_unusable_board_among_several_exits_2_and_the_others_still_report() {
    let dir = temp_dir("one-missing");
    let out = relay_hil(&[
        "run",
        "--port",
        "virtual,/dev/no-such-board",
        "--only",
        "echo",
        "--artifacts-dir",
        dir.to_str().unwrap(),
    ]);
    let text = printed(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("board 2: relay-hil: serial port /dev/no-such-board does not exist"),
        "{text}"
    );
    assert!(text.contains("1 passed, 0 failed"), "{text}");
    assert!(dir.join("1-virtual/junit.xml").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Several boards are for `run`: any other command names the rule.
#[rstest]
fn several_boards_are_for_run_only() {
    let out = relay_hil(&["monitor", "--port", "virtual,virtual"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        printed(&out).contains("several boards (--port A,B, --labgrid A,B) are for `run`"),
        "{}",
        printed(&out)
    );
}
