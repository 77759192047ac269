//! The benchmark works beside ser2net and socat, and refuses rates it has no board for.
//!
//! A smoke run: it checks that every measurement completes and what the relay guarantees,
//! never how fast anything is.

mod common;

use common::relay_hil;

use rstest::rstest;
use serde_json::Value;

const RELAYS: [&str; 4] = ["relay", "ser2net-default", "ser2net-tuned", "socat"];

fn runs(figure: &Value, count: &str) -> Vec<u64> {
    figure[count]
        .as_array()
        .unwrap_or_else(|| panic!("no `{count}` in {figure}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

fn stat(figure: &Value, name: &str) -> f64 {
    figure[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no `{name}` in {figure}"))
}

#[rstest]
fn bench_smoke_beside_ser2net_and_socat() {
    let dir = common::temp_dir("bench");
    let json = dir.join("bench.json");
    let out = relay_hil(&[
        "bench",
        "--smoke",
        "--with-ser2net",
        "--json",
        json.to_str().unwrap(),
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "UART -> 4 clients",
        "4 clients -> UART, lines",
        "4 clients -> UART, raw",
        "round trip p99",
        "ser2net-tuned",
        "the relay on the chip's terms",
        "ESPHome stream_server",
    ] {
        assert!(table.contains(row), "no `{row}` in:\n{table}");
    }
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(doc["smoke"], true);
    assert_eq!(doc["reps"], 1);
    assert_eq!(doc["reference"], "ser2net-tuned");
    assert!(
        doc["machine"]["cores"].as_u64().unwrap() >= 1,
        "{}",
        doc["machine"]
    );

    for name in RELAYS {
        let relay = &doc["relays"][name];
        let figures = relay["figures"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: {doc}"));
        assert!(relay["ratios"].is_object(), "{name} has no ratios: {relay}");
        assert!(!relay["setup"].as_str().unwrap().is_empty());
        for (f, fig) in figures {
            let (min, median, max) = (stat(fig, "min"), stat(fig, "median"), stat(fig, "max"));
            assert!(min <= median && median <= max, "{name} {f}: {fig}");
            let windows = fig["window_secs"].as_array().unwrap();
            assert_eq!(fig["runs"].as_array().unwrap().len(), 1, "{name} {f}");
            assert_eq!(windows.len(), 1, "{name} {f}");
            // Every relay gets every line's bytes to the UART: only the order may suffer.
            if f.ends_with("_lines") {
                assert!(runs(fig, "lines_sent")[0] > 0, "{name} {f}");
            }
        }
        let one = |f: &str| stat(&figures[f], "median");
        assert!(one("round_trip_p50") <= one("round_trip_p99"), "{name}");
        assert!(one("round_trip_p99") <= one("round_trip_max"), "{name}");
        // socat serves one client: it has only the one-client figures.
        let four = figures.contains_key("uart_to_4_clients");
        assert_eq!(four, name != "socat", "{name}: {:?}", figures.keys());
    }

    // What the relay guarantees: every line whole, in order, none lost or mixed.
    let relay = &doc["relays"]["relay"]["figures"];
    for f in ["1_client_to_uart_lines", "4_clients_to_uart_lines"] {
        assert_eq!(runs(&relay[f], "lost_lines"), [0], "{f}: {}", relay[f]);
        assert_eq!(runs(&relay[f], "mixed_lines"), [0], "{f}: {}", relay[f]);
    }
    // ser2net and socat flow-control the pseudo-terminal: they lose no byte. The relay, like
    // the chip, never holds its UART back; what it drops for a client is counted, never hidden.
    for name in RELAYS {
        let figures = doc["relays"][name]["figures"].as_object().unwrap();
        for (f, fig) in figures.iter().filter(|(f, _)| f.starts_with("uart_to_")) {
            let (lost, due) = (runs(fig, "lost_bytes")[0], runs(fig, "bytes_expected")[0]);
            assert!(lost <= due, "{name} {f}: {fig}");
            if name != "relay" {
                assert_eq!(lost, 0, "{name} {f}: {fig}");
            }
        }
    }

    // Ratios name figures both sides have; the reference against itself is 1.
    let ratios = doc["relays"]["relay"]["ratios"].as_object().unwrap();
    for f in [
        "uart_to_1_client",
        "4_clients_to_uart_raw",
        "round_trip_p99",
    ] {
        assert!(ratios[f].as_f64().unwrap() > 0.0, "{f}: {ratios:?}");
    }
    assert!(!ratios.contains_key("round_trip_max"), "{ratios:?}");
    for (f, r) in doc["relays"]["ser2net-tuned"]["ratios"]
        .as_object()
        .unwrap()
    {
        assert!((r.as_f64().unwrap() - 1.0).abs() < 1e-9, "{f}: {r}");
    }

    // On the chip's terms: a paced line can never carry more than its rate, and on it the
    // relay loses nothing.
    let chip = &doc["chip_terms"];
    let rates = chip["rates"].as_array().unwrap();
    let bauds: Vec<u64> = rates.iter().map(|r| r["baud"].as_u64().unwrap()).collect();
    assert_eq!(bauds, [115_200, 921_600, 3_000_000]);
    for rate in rates {
        let figures = &rate["figures"];
        // A smoke window lasts a few dozen characters: allow one of them for where it starts.
        for f in ["uart_to_4_clients_share", "4_clients_to_uart_share"] {
            let share = stat(&figures[f], "max");
            assert!(share > 0.0 && share <= 1.01, "{f}: {}", figures[f]);
        }
        assert_eq!(runs(&figures["uart_to_4_clients_share"], "lost_bytes"), [0]);
        assert_eq!(runs(&figures["4_clients_to_uart_share"], "lost_lines"), [0]);
        let p50 = stat(&figures["round_trip_p50"], "median");
        assert!(
            p50 <= stat(&figures["round_trip_p99"], "median"),
            "{figures}"
        );
        let wire = rate["wire_round_trip_us"].as_f64().unwrap();
        let added = stat(&figures["round_trip_p50_added"], "median");
        assert!((p50 - wire - added).abs() < 1e-6, "{rate}");
    }
    assert_eq!(chip["published"].as_array().unwrap().len(), 2, "{chip}");
}

/// `--json -` puts the JSON alone on stdout, ser2net and socat running beside it, so that a pipe
/// can read it; the table goes to stderr.
#[rstest]
fn json_to_stdout_is_the_json_alone() {
    let out = relay_hil(&["bench", "--smoke", "--with-ser2net", "--json", "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // One JSON document and nothing else: serde_json refuses trailing characters.
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}:\n{}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(doc["smoke"], true);
    assert!(doc["relays"]["ser2net-tuned"].is_object(), "{doc}");
    assert!(
        err.contains("UART -> 4 clients"),
        "the table is on stderr: {err}"
    );
    // As a shell pipe reads it.
    let mut tool = std::process::Command::new("python3")
        .args(["-m", "json.tool"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(&mut tool.stdin.take().unwrap(), &out.stdout).unwrap();
    assert!(
        tool.wait().unwrap().success(),
        "python3 -m json.tool refused it"
    );
}

/// A rate no shipped profile runs is refused before anything starts, in one line.
#[rstest]
#[case::unknown(
    "57600",
    "--baud 57600: no board profile runs nodemcu-v2's relay at 57600 baud"
)]
#[case::one_of_two(
    "115200,9600",
    "--baud 9600: no board profile runs nodemcu-v2's relay at 9600 baud"
)]
fn a_rate_with_no_profile_is_refused(#[case] rates: &str, #[case] needle: &str) {
    let out = relay_hil(&["bench", "--smoke", "--baud", rates]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{err}");
    assert!(
        err.contains("the rates that exist: 115200, 921600"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
}

#[rstest]
#[case::zero("0")]
#[case::too_many("101")]
fn reps_are_bounded(#[case] reps: &str) {
    let out = relay_hil(&["bench", "--reps", reps]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("1..=100"), "{err}");
}

/// `bench --remote --smoke`: one rep of a flash and the suite on a virtual board's own port and
/// over RFC 2217 through `relay-hil serve`, every scenario passing on both (a failure stops the
/// bench), each time recorded. It never checks speed.
#[rstest]
fn remoteness_smoke_measures_both_paths() {
    let out = relay_hil(&["bench", "--remote", "--smoke", "--json", "-"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["reps"], 1, "{doc}");
    for path in ["direct", "rfc2217"] {
        for figure in ["flash", "suite"] {
            let times = doc[path][figure].as_array().unwrap();
            assert_eq!(times.len(), 1, "{doc}");
            assert!(times[0].as_f64().unwrap() > 0.0, "{doc}");
        }
    }
    assert!(
        err.contains("rfc2217 (serve)"),
        "the table is on stderr: {err}"
    );
}
