//! The provisioning exchange and the credential record, through the C core.

use relay_core::provision::{self, Provisioner, RECORD_SIZE, Wifi, boot_line, reply_line};
use rstest::rstest;

fn feed(p: &mut Provisioner, text: &[u8]) -> Vec<Result<Wifi, provision::Refused>> {
    text.iter().filter_map(|&b| p.input(b)).collect()
}

#[test]
fn a_request_round_trips_through_the_parser() {
    let w = Wifi::new("my net", "hunter22").unwrap();
    let req = w.request();
    assert!(
        req.starts_with("relay provision ssid=6d79206e6574 psk="),
        "{req}"
    );
    assert!(req.ends_with("\r\n"));
    let got = feed(&mut Provisioner::default(), req.as_bytes());
    assert_eq!(got, vec![Ok(w.clone())]);
    assert_eq!(
        reply_line(&got[0]),
        format!("relay provision ok wifi={}\r\n", w.digest())
    );
}

#[test]
fn other_lines_are_ignored_and_a_request_after_them_still_counts() {
    let w = Wifi::new("lab", "").unwrap();
    let mut text = b"hello\r\nrelay ready whatever\n\n".to_vec();
    text.extend(w.request().as_bytes());
    assert_eq!(feed(&mut Provisioner::default(), &text), vec![Ok(w)]);
}

#[rstest]
#[case::no_ssid(b"relay provision ssid= psk=\n" as &[u8], "the ssid must be 1 to 32 bytes")]
#[case::odd_hex(b"relay provision ssid=616 psk=\n", "expected `relay provision")]
#[case::not_hex(b"relay provision ssid=zz psk=\n", "the ssid must be 1 to 32 bytes")]
#[case::no_psk_field(b"relay provision ssid=61\n", "expected `relay provision")]
#[case::short_psk(b"relay provision ssid=61 psk=61626364\n", "the password must be")]
#[case::trailing(b"relay provision ssid=61 psk= extra\n", "expected `relay provision")]
#[case::control_char_psk(b"relay provision ssid=61 psk=0a6162636465666768\n", "the password")]
#[case::nul_mid_ssid(b"relay provision ssid=610062 psk=\n", "the ssid must not contain")]
#[case::nul_ends_ssid(b"relay provision ssid=6100 psk=\n", "the ssid must not contain a NUL")]
#[case::nul_ssid(b"relay provision ssid=00 psk=\n", "the ssid must not contain a NUL")]
#[case::nul_in_psk(b"relay provision ssid=61 psk=616263640065666768\n", "the password")]
fn bad_requests_are_refused_with_a_reason(#[case] line: &[u8], #[case] reason: &str) {
    let got = feed(&mut Provisioner::default(), line);
    assert_eq!(got.len(), 1, "{got:?}");
    let e = got[0].clone().unwrap_err();
    assert!(e.reason.starts_with(reason), "{e}");
    assert!(reply_line(&got[0]).starts_with(&format!("relay provision error {reason}")));
}

#[test]
fn an_overlong_request_is_refused_and_the_next_one_parses() {
    let mut text = b"relay provision ssid=".to_vec();
    text.extend(std::iter::repeat_n(b'6', 400));
    text.push(b'\n');
    let w = Wifi::new("x", "12345678").unwrap();
    text.extend(w.request().as_bytes());
    let got = feed(&mut Provisioner::default(), &text);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].clone().unwrap_err().reason, "request too long");
    assert_eq!(got[1], Ok(w));
}

#[rstest]
#[case::ssid_too_long(&[b'a'; 33] as &[u8], b"" as &[u8])]
#[case::empty_ssid(b"", b"")]
#[case::psk_too_short(b"a", b"1234567")]
#[case::psk_too_long(b"a", &[b'a'; 65])]
#[case::psk_64_not_hex(b"a", &[b'z'; 64])]
fn invalid_credentials_are_refused(#[case] ssid: &[u8], #[case] psk: &[u8]) {
    assert!(Wifi::new(ssid, psk).is_err());
}

#[test]
fn an_ssid_with_a_nul_is_refused_by_wifi_new_as_by_a_board() {
    let host = Wifi::new(b"lab\0net".as_slice(), "password").unwrap_err();
    assert_eq!(host.reason, "the ssid must not contain a NUL byte");
    let board = feed(
        &mut Provisioner::default(),
        b"relay provision ssid=6c6162006e6574 psk=70617373776f7264\n",
    );
    assert_eq!(board, vec![Err(host)]);
}

#[rstest]
#[case::open(b"cafe" as &[u8], b"" as &[u8])]
#[case::longest(&[0xff; 32], &[b'~'; 63])]
#[case::raw_key(b"n", &[b'a'; 64])]
fn valid_credentials_survive_the_flash_record(#[case] ssid: &[u8], #[case] psk: &[u8]) {
    let w = Wifi::new(ssid, psk).unwrap();
    let rec = w.record();
    assert_eq!(rec.len(), RECORD_SIZE);
    assert_eq!(Wifi::from_record(&rec), Some(w));
}

#[test]
fn erased_or_corrupt_records_hold_no_credentials() {
    assert_eq!(Wifi::from_record(&[0xff; RECORD_SIZE]), None);
    assert_eq!(Wifi::from_record(&[0; RECORD_SIZE]), None);
    let rec = Wifi::new("net", "password").unwrap().record();
    assert_eq!(Wifi::from_record(&rec[..RECORD_SIZE - 1]), None);
    for i in [0, 4, 9, 50, RECORD_SIZE - 1] {
        let mut bad = rec;
        bad[i] ^= 0x01;
        assert_eq!(Wifi::from_record(&bad), None, "flipped byte {i}");
    }
}

#[test]
fn the_digest_tells_credentials_apart_and_hides_them() {
    let a = Wifi::new("net", "password").unwrap();
    let b = Wifi::new("net", "passwore").unwrap();
    let c = Wifi::new("ne", "tpassword").unwrap();
    assert_ne!(a.digest(), b.digest());
    assert_ne!(a.digest(), c.digest(), "the lengths are part of the digest");
    assert_eq!(a.digest().len(), 8);
    assert!(!format!("{a:?}").contains("password"), "{a:?}");
}

#[test]
fn the_boot_line_names_the_build_and_the_stored_credentials() {
    let w = Wifi::new("net", "password").unwrap();
    assert_eq!(
        boot_line(Some(&w), "abc123"),
        format!(
            "relay boot version=0.1.0 build=abc123 wifi={} listen_ms=250\r\n",
            w.digest()
        )
    );
    assert_eq!(
        boot_line(None, "has space"),
        "relay boot version=0.1.0 build=has?space wifi=none listen_ms=0\r\n"
    );
}
