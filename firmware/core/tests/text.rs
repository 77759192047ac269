//! The core's text lines round-trip: what the C formatters print, `relay_core::text` reads back.

use relay_core::provision::{LISTEN_MS, Wifi, boot_line};
use relay_core::text::{Banner, Boot, Status};
use relay_core::{Config, Eol, Mode, Relay, VERSION};
use rstest::rstest;

#[rstest]
#[case::default(Config::default())]
#[case::small(Config { max_clients: 2, max_line: 32, txq_size: 128, uartq_size: 64, stall_timeout_ms: 500, ..Config::default() })]
#[case::raw_crlf(Config { mode: Mode::Raw, eol: Eol::Crlf, stall_timeout_ms: 0, ..Config::default() })]
#[case::cr(Config { eol: Eol::Cr, ..Config::default() })]
fn the_banner_carries_the_whole_config(#[case] config: Config) {
    let relay = Relay::new(config, 0).unwrap();
    let line = relay.banner("10.0.0.7", "abc123", 8888, 8889);
    let b = Banner::parse(&line).unwrap();
    assert_eq!(b.relay, config, "{line}");
    assert_eq!(
        (b.version.as_str(), b.build.as_str(), b.ip.as_str()),
        (VERSION, "abc123", "10.0.0.7")
    );
    assert_eq!((b.port, b.status_port), (8888, 8889));
}

#[test]
fn the_status_carries_every_counter_of_the_relay_and_its_clients() {
    let mut relay = Relay::new(Config::default(), 0).unwrap();
    let (a, b) = (relay.accept().unwrap(), relay.accept().unwrap());
    relay.client_input(a, b"one\ntwo\n");
    relay.client_input(b, &[b'x'; 300]);
    relay.client_input(b, b"\nhalf");
    relay.uart_input(b"to all\r\n");
    relay.uart_overrun();
    relay.tick(1234);
    let text = relay.status();
    let s = Status::parse(&text).unwrap();
    let st = relay.stats();
    let expect = [
        ("accepted", u64::from(st.accepted)),
        ("rejected", u64::from(st.rejected)),
        ("disconnects", u64::from(st.disconnects)),
        ("stalls", u64::from(st.stalls)),
        ("overflows", u64::from(st.overflows)),
        ("partial_discards", u64::from(st.partial_discards)),
        ("uart_overruns", u64::from(st.uart_overruns)),
        ("uart_rx", st.uart_rx),
        ("uart_tx", st.uart_tx),
        ("drops", st.drops),
        ("uptime_ms", st.uptime_ms),
        ("clients", 2),
        ("max_clients", 4),
    ];
    for (k, v) in expect {
        assert_eq!(s.relay.get(k), Some(v), "{k} in {text}");
    }
    assert_eq!(
        (s.relay.get("overflows"), s.relay.get("uart_overruns")),
        (Some(1), Some(1))
    );
    assert_eq!(s.version, VERSION);
    assert_eq!(s.clients.len(), 2, "{text}");
    for (c, slot) in s.clients.iter().zip([a, b]) {
        let st = relay.client_stats(slot).unwrap();
        let expect = [
            ("slot", slot as u64),
            ("id", u64::from(st.id)),
            ("bytes_in", st.bytes_in),
            ("bytes_out", st.bytes_out),
            ("lines", u64::from(st.lines)),
            ("overflows", u64::from(st.overflows)),
            ("drops", st.drops),
            ("txq_high", u64::from(st.txq_high)),
            ("txq", relay.client_pending(slot).len() as u64),
        ];
        for (k, v) in expect {
            assert_eq!(c.get(k), Some(v), "client {k} in {text}");
        }
    }
}

#[test]
fn a_status_cut_short_or_foreign_is_refused_with_the_reason() {
    let relay = Relay::new(Config::default(), 0).unwrap();
    let text = relay.status();
    let cut = text.strip_suffix("end\r\n").unwrap();
    let e = Status::parse(cut).unwrap_err();
    assert!(e.reason.contains("before its `end` line"), "{e}");
    let e = Status::parse(&text.replace("accepted=0", "accepted=lots")).unwrap_err();
    assert!(e.reason.contains("`accepted=lots` is not a number"), "{e}");
    let e = Status::parse("hello\r\nend\r\n").unwrap_err();
    assert!(
        e.reason.contains("does not start with `relay status`"),
        "{e}"
    );
}

#[test]
fn the_boot_line_names_the_build_and_the_credentials() {
    let w = Wifi::new("lab", "hunter22").unwrap();
    let b = Boot::parse(&boot_line(Some(&w), "abc123")).unwrap();
    assert_eq!(
        b,
        Boot {
            version: VERSION.to_owned(),
            build: "abc123".to_owned(),
            wifi: Some(w.digest()),
            listen_ms: LISTEN_MS,
        }
    );
    let b = Boot::parse(&boot_line(None, "abc123")).unwrap();
    assert_eq!((b.wifi, b.listen_ms), (None, 0));
}

#[test]
fn a_banner_names_what_is_wrong() {
    let relay = Relay::new(Config::default(), 0).unwrap();
    let line = relay.banner("10.0.0.7", "abc", 8888, 8889);
    let e = Banner::parse(&line.replace("max_line=256", "max_line=lots")).unwrap_err();
    assert!(
        e.to_string().contains("`max_line=lots` is not a number"),
        "{e}"
    );
    let e = Banner::parse(&line.replace(" port=8888", "")).unwrap_err();
    assert!(e.to_string().contains("no `port`"), "{e}");
    let e = Banner::parse(&line.replace("mode=line", "mode=fast")).unwrap_err();
    assert!(e.to_string().contains("unknown mode `fast`"), "{e}");
    let e = Banner::parse("hello").unwrap_err();
    assert!(
        e.to_string().contains("does not start with `relay ready`"),
        "{e}"
    );
    let e = Boot::parse("relay boot version=0.1.0 wifi=none listen_ms=0").unwrap_err();
    assert!(e.to_string().contains("no `build`"), "{e}");
}
