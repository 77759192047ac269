//! The benchmark works, beside ser2net too. A smoke run: it checks that every measurement
//! completes and that the relay loses nothing, never how fast anything is.

mod common;

use common::relay_hil;

use rstest::rstest;

#[rstest]
fn bench_smoke_beside_ser2net() {
    let json = std::env::temp_dir().join(format!("relay-hil-bench-{}.json", std::process::id()));
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
        "UART -> 4 client(s)",
        "4 client(s) -> UART, lines",
        "round trip p50 / p99 / max",
        "line rate at 115200 baud",
    ] {
        assert!(table.contains(row), "no `{row}` in:\n{table}");
    }
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert_eq!(doc["smoke"], true);
    let relay = &doc["relay"];
    let reference = &doc["reference"];
    assert!(
        reference["board"].as_str().unwrap().starts_with("ser2net "),
        "{reference}"
    );
    for dir in ["uart_to_clients", "clients_to_uart"] {
        let runs = relay[dir].as_array().unwrap();
        assert!(
            !runs.is_empty() && runs.len() == reference[dir].as_array().unwrap().len(),
            "{doc}"
        );
        for t in runs {
            assert_eq!(t["lost"], 0, "the relay lost data: {t}");
            assert!(
                t["mixed_lines"].is_null() || t["mixed_lines"] == 0,
                "a mixed line: {t}"
            );
            assert!(t["bytes_per_sec"].as_f64().unwrap() > 0.0, "{t}");
        }
    }
    let lat = &relay["latency"];
    assert!(
        lat["p50_us"].as_f64().unwrap() <= lat["p99_us"].as_f64().unwrap(),
        "{lat}"
    );
    assert!(
        lat["p99_us"].as_f64().unwrap() <= lat["max_us"].as_f64().unwrap(),
        "{lat}"
    );
    // A paced line can never carry more than its rate.
    assert!(
        relay["line_rate"]["share"].as_f64().unwrap() <= 1.0 + 1e-3,
        "{}",
        relay["line_rate"]
    );
}
