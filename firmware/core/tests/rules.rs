//! One test per rule of the relay contract (firmware/core/README.md), edges included.

use relay_core::{Config, Eol, Mode, Relay, STATUS_MAX, limits};
use rstest::{fixture, rstest};

fn cfg() -> Config {
    Config {
        max_clients: 2,
        max_line: 8,
        txq_size: 64,
        uartq_size: 32,
        stall_timeout_ms: 1000,
        mode: Mode::Line,
        eol: Eol::Lf,
    }
}

#[fixture]
fn relay() -> Relay {
    Relay::new(cfg(), 0).unwrap()
}

fn uart(r: &mut Relay) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let n = {
            let chunk = r.uart_pending();
            out.extend_from_slice(chunk);
            chunk.len()
        };
        if n == 0 {
            return out;
        }
        r.uart_consume(n);
    }
}

fn rx(r: &mut Relay, slot: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let n = {
            let chunk = r.client_pending(slot);
            out.extend_from_slice(chunk);
            chunk.len()
        };
        if n == 0 {
            return out;
        }
        r.client_consume(slot, n);
    }
}

/// Offers everything, asserting the core takes it all (the UART queue has room).
fn send(r: &mut Relay, slot: usize, data: &[u8]) {
    assert_eq!(
        r.client_input(slot, data),
        data.len(),
        "core refused bytes of {data:?}"
    );
}

// ---- framing ----

/// `reads` holds the bytes a client sends, with `|` marking where one read ends.
#[rstest]
#[case::lf(b"abc\n", b"abc\n")]
#[case::cr(b"abc\r", b"abc\n")]
#[case::crlf_is_one_terminator(b"abc\r\n", b"abc\n")]
#[case::lfcr_is_two(b"abc\n\r", b"abc\n\n")]
#[case::crcr_is_two(b"a\r\rb\n", b"a\n\nb\n")]
#[case::empty_line(b"\n", b"\n")]
#[case::terminator_split_from_line(b"abc|\n", b"abc\n")]
#[case::crlf_split_across_reads(b"abc\r|\ndef\n", b"abc\ndef\n")]
#[case::cr_then_other_line(b"abc\r|def\n", b"abc\ndef\n")]
#[case::byte_at_a_time(b"a|b|\r|\n|c|\n", b"ab\nc\n")]
#[case::no_terminator_no_output(b"abc", b"")]
#[case::control_bytes_forwarded(b"\x00\x1b[\x7f\n", b"\x00\x1b[\x7f\n")]
#[case::cr_nul_is_one_terminator(b"ab\r\x00cd\n", b"ab\ncd\n")]
#[case::cr_nul_split_across_reads(b"ab\r|\x00cd\n", b"ab\ncd\n")]
// Telnet (line mode): a client's commands never reach the UART.
#[case::iac_iac_is_one_0xff(b"a\xff\xffb\n", b"a\xffb\n")]
#[case::iac_iac_split_across_reads(b"a\xff|\xffb\n", b"a\xffb\n")]
#[case::negotiation_glued_to_a_line(b"\xff\xfb\x1f\xff\xfb\x20\xff\xfd\x01hi\n", b"hi\n")]
#[case::negotiation_split_across_reads(b"a\xff|\xfb|\x18b\n", b"ab\n")]
#[case::commands_are_dropped(b"a\xff\xf4\xff\xf6\xff\xf1b\n", b"ab\n")]
#[case::subnegotiation_is_skipped(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0ok\n", b"ok\n")]
#[case::iac_iac_inside_subnegotiation(b"\xff\xfa\x18\xff\xff\n\xff\xf0ok\n", b"ok\n")]
#[case::crlf_around_a_command(b"ab\r\xff\xf1\ncd\n", b"ab\ncd\n")]
fn framing(mut relay: Relay, #[case] reads: &[u8], #[case] expected: &[u8]) {
    let s = relay.accept().unwrap();
    for r in reads.split(|&b| b == b'|') {
        send(&mut relay, s, r);
    }
    assert_eq!(uart(&mut relay), expected);
}

/// RFC 1143: the relay enables no option, so it refuses each one asked once, and answers
/// nothing to WONT and DONT (which only confirm that an option is off); RFC 860: DO
/// TIMING-MARK gets WILL TIMING-MARK, so a client waiting for it goes on.
#[rstest]
fn telnet_requests_are_refused_once_and_timing_mark_is_answered(mut relay: Relay) {
    let s = relay.accept().unwrap();
    send(
        &mut relay,
        s,
        b"\xff\xfb\x1f\xff\xfd\x03\xff\xfe\x01\xff\xfc\x18\xff\xfd\x06\xff\xfd\x03",
    );
    assert_eq!(
        rx(&mut relay, s),
        b"\xff\xfe\x1f\xff\xfc\x03\xff\xfb\x06\xff\xfc\x03",
        "DONT NAWS, WONT SGA, (nothing), (nothing), WILL TIMING-MARK, WONT SGA"
    );
    assert_eq!(uart(&mut relay), b"");
}

#[rstest]
fn uart_0xff_is_doubled_only_for_a_client_that_spoke_telnet(mut relay: Relay) {
    let telnet = relay.accept().unwrap();
    let plain = relay.accept().unwrap();
    send(&mut relay, telnet, b"\xff\xf1");
    relay.uart_input(b"a\xffb");
    assert_eq!(rx(&mut relay, telnet), b"a\xff\xffb");
    assert_eq!(rx(&mut relay, plain), b"a\xffb");
}

#[rstest]
fn raw_mode_is_byte_transparent() {
    let mut r = Relay::new(
        Config {
            mode: Mode::Raw,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let s = r.accept().unwrap();
    send(&mut r, s, b"\xff\xfb\x01\xff");
    assert_eq!(uart(&mut r), b"\xff\xfb\x01\xff");
    r.uart_input(b"\xff");
    assert_eq!(rx(&mut r, s), b"\xff", "no answer, no doubling");
}

#[rstest]
#[case::lf(Eol::Lf, b"x\n")]
#[case::cr(Eol::Cr, b"x\r")]
#[case::crlf(Eol::Crlf, b"x\r\n")]
fn eol_written_after_each_line(#[case] eol: Eol, #[case] expected: &[u8]) {
    let mut r = Relay::new(Config { eol, ..cfg() }, 0).unwrap();
    let s = r.accept().unwrap();
    send(&mut r, s, b"x\r\n");
    assert_eq!(uart(&mut r), expected);
}

#[rstest]
fn lines_of_one_client_keep_order_and_count(mut relay: Relay) {
    let s = relay.accept().unwrap();
    send(&mut relay, s, b"1\n2\n3\n");
    assert_eq!(uart(&mut relay), b"1\n2\n3\n");
    assert_eq!(relay.client_stats(s).unwrap().lines, 3);
    assert_eq!(relay.client_stats(s).unwrap().bytes_in, 6);
}

#[rstest]
fn clients_never_interleave_and_go_out_in_completion_order(mut relay: Relay) {
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    send(&mut relay, a, b"aaa");
    send(&mut relay, b, b"bbb");
    send(&mut relay, a, b"AA");
    send(&mut relay, b, b"BB\n");
    send(&mut relay, a, b"\n");
    assert_eq!(uart(&mut relay), b"bbbBB\naaaAA\n");
}

// ---- overflow guard ----

#[rstest]
fn line_of_exactly_max_line_passes(mut relay: Relay) {
    let s = relay.accept().unwrap();
    send(&mut relay, s, b"12345678\n");
    assert_eq!(uart(&mut relay), b"12345678\n");
    assert_eq!(relay.stats().overflows, 0);
    assert!(rx(&mut relay, s).is_empty());
}

#[rstest]
#[case::max_line_plus_one(b"123456789".to_vec())]
#[case::ten_times(vec![b'x'; 80])]
#[case::other_control_bytes_inside(b"12345678\x0b\x0c90".to_vec())]
fn overlong_line_is_discarded_with_one_notice(mut relay: Relay, #[case] line: Vec<u8>) {
    let s = relay.accept().unwrap();
    for chunk in line.chunks(5) {
        send(&mut relay, s, chunk);
    }
    send(&mut relay, s, b"\nok\n");
    assert_eq!(
        uart(&mut relay),
        b"ok\n",
        "no fragment of the long line reaches the UART"
    );
    assert_eq!(rx(&mut relay, s), b"!relay overflow max_line=8\r\n");
    assert_eq!(relay.client_stats(s).unwrap().overflows, 1);
    assert_eq!(relay.client_stats(s).unwrap().lines, 1);
    assert_eq!(relay.stats().overflows, 1);
}

#[rstest]
fn overlong_line_ending_in_crlf_does_not_leave_an_empty_line(mut relay: Relay) {
    let s = relay.accept().unwrap();
    send(&mut relay, s, b"123456789\r");
    send(&mut relay, s, b"\nnext\n");
    assert_eq!(uart(&mut relay), b"next\n");
}

#[rstest]
fn overflow_does_not_disturb_other_clients(mut relay: Relay) {
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    send(&mut relay, b, b"hal");
    send(&mut relay, a, &[b'z'; 1000]);
    send(&mut relay, b, b"f\n");
    assert_eq!(uart(&mut relay), b"half\n");
    assert!(rx(&mut relay, b).is_empty());
}

// ---- raw mode ----

#[rstest]
fn raw_mode_passes_every_byte_value_in_chunks() {
    let mut r = Relay::new(
        Config {
            mode: Mode::Raw,
            max_line: 8,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let s = r.accept().unwrap();
    let all: Vec<u8> = (0..=255).collect();
    let mut out = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let n = r.client_input(s, rest);
        assert!(
            n > 0 && n <= 8,
            "raw chunks are at most max_line bytes, got {n}"
        );
        rest = &rest[n..];
        out.extend(uart(&mut r));
    }
    assert_eq!(out, all);
    assert_eq!(
        r.client_stats(s).unwrap().lines,
        32,
        "256 bytes in 8-byte chunks"
    );
}

#[rstest]
fn raw_mode_interleaves_only_at_chunk_boundaries() {
    let mut r = Relay::new(
        Config {
            mode: Mode::Raw,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let a = r.accept().unwrap();
    let b = r.accept().unwrap();
    send(&mut r, a, b"AAAA");
    send(&mut r, b, b"bbbb");
    send(&mut r, a, b"A\n");
    assert_eq!(uart(&mut r), b"AAAAbbbbA\n");
}

// ---- UART queue full: back-pressure without reordering ----

#[rstest]
fn full_uart_queue_holds_the_terminator_back() {
    let mut r = Relay::new(
        Config {
            uartq_size: 10,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let s = r.accept().unwrap();
    send(&mut r, s, b"1234567\n"); // 8 of 10 bytes used
    assert_eq!(
        r.client_input(s, b"abc\n"),
        3,
        "content is taken, the terminator waits"
    );
    assert_eq!(r.client_input(s, b"\n"), 0, "still no room");
    assert_eq!(uart(&mut r), b"1234567\n");
    assert_eq!(r.client_input(s, b"\n"), 1);
    assert_eq!(uart(&mut r), b"abc\n");
}

#[rstest]
fn waiting_line_is_not_overtaken_by_a_shorter_one() {
    let mut r = Relay::new(
        Config {
            uartq_size: 12,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let a = r.accept().unwrap();
    let b = r.accept().unwrap();
    send(&mut r, a, b"1234567\n"); // 8 of 12
    assert_eq!(r.client_input(a, b"AAAAAA\n"), 6); // needs 7, has 4: a waits
    assert_eq!(
        r.client_input(b, b"b\n"),
        1,
        "b's 2-byte line fits but must queue behind a"
    );
    r.uart_consume(8);
    assert_eq!(r.client_input(b, b"\n"), 0, "a is still first in line");
    assert_eq!(r.client_input(a, b"\n"), 1);
    assert_eq!(r.client_input(b, b"\n"), 1);
    assert_eq!(uart(&mut r), b"AAAAAA\nb\n");
}

// ---- slots, rejection, disconnect ----

#[rstest]
fn client_beyond_the_limit_is_rejected_and_others_do_not_notice(mut relay: Relay) {
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    send(&mut relay, a, b"par");
    assert_eq!(relay.accept(), None);
    assert_eq!(relay.reject_line(), "!relay busy max_clients=2\r\n");
    send(&mut relay, a, b"tial\n");
    relay.uart_input(b"hi");
    assert_eq!(uart(&mut relay), b"partial\n");
    assert_eq!(rx(&mut relay, a), b"hi");
    assert_eq!(rx(&mut relay, b), b"hi");
    let s = relay.stats();
    assert_eq!((s.accepted, s.rejected), (2, 1));
}

#[rstest]
#[case::mid_line(b"half".as_slice(), 1)]
#[case::mid_overlong_line(b"0123456789abc".as_slice(), 1)]
#[case::after_complete_line(b"whole\n".as_slice(), 0)]
#[case::without_sending(b"".as_slice(), 0)]
fn disconnect_frees_the_slot_and_never_leaks_a_partial_line(
    mut relay: Relay,
    #[case] sent: &[u8],
    #[case] discarded: u32,
) {
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    send(&mut relay, b, b"other ");
    send(&mut relay, a, sent);
    let before = uart(&mut relay);
    relay.client_closed(a);
    assert_eq!(relay.stats().partial_discards, discarded);
    assert_eq!(relay.stats().disconnects, 1);
    assert!(!relay.is_open(a));
    send(&mut relay, b, b"ok\n");
    let mut all = before;
    all.extend(uart(&mut relay));
    let whole_lines_only: &[u8] = if sent.ends_with(b"\n") {
        b"whole\nother ok\n"
    } else {
        b"other ok\n"
    };
    assert_eq!(all, whole_lines_only);
    assert_eq!(
        relay.accept(),
        Some(a),
        "the freed slot is taken by the next client"
    );
    assert_eq!(
        relay.client_stats(a).unwrap().id,
        3,
        "a new connection, not the old one"
    );
    send(&mut relay, a, b"fresh\n");
    assert_eq!(
        uart(&mut relay),
        b"fresh\n",
        "no state carried over from the old client"
    );
}

#[rstest]
fn ids_wrap_from_u32_max_to_1_never_0(mut relay: Relay) {
    // 2^32 accepts away: start where they would have left it.
    relay.set_next_id(u32::MAX - 1);
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    relay.client_closed(a);
    let c = relay.accept().unwrap();
    relay.client_closed(b);
    let d = relay.accept().unwrap();
    let id = |s| relay.client_stats(s).unwrap().id;
    assert_eq!((id(c), id(d)), (1, 2), "after u32::MAX comes 1, not 0");
    assert!(relay.status().contains(" id=1 "), "{}", relay.status());
}

#[rstest]
fn disconnect_while_waiting_drops_the_slot_from_the_queue() {
    let mut r = Relay::new(
        Config {
            uartq_size: 10,
            ..cfg()
        },
        0,
    )
    .unwrap();
    let a = r.accept().unwrap();
    let b = r.accept().unwrap();
    send(&mut r, a, b"1234567\n");
    assert_eq!(r.client_input(a, b"xxx\n"), 3);
    r.client_closed(a);
    assert_eq!(
        r.client_input(b, b"b\n"),
        2,
        "b is not stuck behind the departed client"
    );
    assert_eq!(uart(&mut r), b"1234567\nb\n");
}

// ---- UART -> clients ----

#[rstest]
fn uart_bytes_fan_out_to_every_client_in_order(mut relay: Relay) {
    let a = relay.accept().unwrap();
    let b = relay.accept().unwrap();
    relay.uart_input(b"one ");
    relay.uart_input(b"two");
    assert_eq!(rx(&mut relay, a), b"one two");
    assert_eq!(rx(&mut relay, b), b"one two");
    assert_eq!(relay.stats().uart_rx, 7);
}

#[rstest]
fn full_queue_drops_for_that_client_alone_and_records_high_water(mut relay: Relay) {
    let slow = relay.accept().unwrap();
    let fast = relay.accept().unwrap();
    for _ in 0..5 {
        relay.uart_input(&[b'u'; 20]);
        assert_eq!(rx(&mut relay, fast).len(), 20);
    }
    let s = relay.client_stats(slow).unwrap();
    assert_eq!((s.drops, s.txq_high), (100 - 64, 64));
    assert_eq!(relay.client_stats(fast).unwrap().drops, 0);
    assert_eq!(
        rx(&mut relay, slow),
        vec![b'u'; 64],
        "the queued prefix is intact"
    );
}

#[rstest]
#[case::never_reads(0, true)]
#[case::drips_but_never_drains_to_half(1, true)]
#[case::drains_to_half(32, false)]
fn stalled_client_is_closed_after_the_timeout(
    mut relay: Relay,
    #[case] read_per_tick: usize,
    #[case] closed: bool,
) {
    let slow = relay.accept().unwrap();
    let other = relay.accept().unwrap();
    relay.uart_input(&[0; 100]);
    for t in (0..=1000).step_by(100) {
        relay.tick(t);
        relay.uart_input(b"more");
        rx(&mut relay, other);
        if relay.is_open(slow) && read_per_tick > 0 {
            relay.client_consume(slow, read_per_tick);
        }
        if t < 1000 {
            assert_eq!(relay.next_close(), None, "closed too early at {t} ms");
        }
    }
    assert_eq!(relay.next_close(), closed.then_some(slow));
    assert_eq!(
        relay.next_close(),
        None,
        "a slot is handed out to close once"
    );
    assert_eq!(relay.stats().stalls, u32::from(closed));
    assert!(relay.is_open(other), "the other client is unaffected");
}

#[rstest]
fn stall_timer_survives_the_u32_clock_wrap() {
    let start = u32::MAX - 400;
    let mut r = Relay::new(cfg(), start).unwrap();
    let s = r.accept().unwrap();
    r.uart_input(&[0; 100]);
    r.tick(start.wrapping_add(999));
    assert_eq!(r.next_close(), None);
    r.tick(start.wrapping_add(1000));
    assert_eq!(r.next_close(), Some(s));
    assert_eq!(r.stats().uptime_ms, 1000);
}

#[rstest]
fn zero_stall_timeout_never_closes(#[values(0, 10_000_000)] idle: u32) {
    let mut r = Relay::new(
        Config {
            stall_timeout_ms: 0,
            ..cfg()
        },
        0,
    )
    .unwrap();
    r.accept().unwrap();
    r.uart_input(&[0; 100]);
    r.tick(idle);
    assert_eq!(r.next_close(), None);
}

// ---- text ----

#[rstest]
fn banner_names_version_build_ip_port_limits_and_mode(relay: Relay) {
    assert_eq!(
        relay.banner("192.168.4.2", "abc123", 8888, 8889),
        "relay ready version=0.1.0 build=abc123 ip=192.168.4.2 port=8888 status_port=8889 \
         max_clients=2 max_line=8 txq=64 uartq=32 stall_ms=1000 mode=line eol=lf\r\n"
    );
}

#[rstest]
fn banner_keeps_hostile_platform_strings_on_one_line(relay: Relay) {
    let b = relay.banner("a b\r\nc", &"x".repeat(100), 1, 0);
    assert!(b.contains(" ip=a?b??c "), "{b}");
    assert!(b.contains(&format!(" build={} ", "x".repeat(40))), "{b}");
    assert_eq!(b.matches('\n').count(), 1);
}

#[rstest]
fn status_reports_global_and_per_client_counters(mut relay: Relay) {
    let a = relay.accept().unwrap();
    send(&mut relay, a, b"hello\n");
    relay.uart_input(b"x");
    relay.uart_overrun();
    relay.tick(1234);
    assert_eq!(
        relay.status(),
        "relay status version=0.1.0 uptime_ms=1234 clients=1 max_clients=2 accepted=1 \
         rejected=0 disconnects=0 stalls=0 overflows=0 partial_discards=0 uart_overruns=1 \
         uart_rx=1 uart_tx=0 \
         drops=0 uartq=6\r\nclient slot=0 id=1 bytes_in=6 bytes_out=0 lines=1 overflows=0 \
         drops=0 txq=1 txq_high=1\r\nend\r\n"
    );
}

#[rstest]
fn status_text_fits_the_documented_bound_at_maximum_counts() {
    let l = limits();
    let mut r = Relay::new(
        Config {
            max_clients: l.max_clients,
            ..Config::default()
        },
        0,
    )
    .unwrap();
    while r.accept().is_some() {}
    r.tick(u32::MAX);
    // RELAY_STATUS_MAX counts the NUL.
    assert!(r.status().len() < STATUS_MAX);
}

// ---- configuration ----

#[rstest]
#[case::no_clients(Config { max_clients: 0, ..cfg() }, "max_clients")]
#[case::too_many_clients(Config { max_clients: 1000, ..cfg() }, "max_clients")]
#[case::zero_line(Config { max_line: 0, ..cfg() }, "max_line")]
#[case::line_above_bound(Config { max_line: 100_000, ..cfg() }, "max_line")]
#[case::txq_cannot_hold_a_notice(Config { txq_size: 10, ..cfg() }, "txq_size")]
#[case::uartq_cannot_hold_a_line(Config { uartq_size: 9, ..cfg() }, "uartq_size")]
fn out_of_range_config_names_the_field(#[case] c: Config, #[case] field: &str) {
    let e = Relay::new(c, 0).unwrap_err();
    assert_eq!(e.field, field);
    assert!(e.to_string().starts_with(field), "{e}");
}

#[rstest]
fn default_config_matches_the_compile_time_bounds() {
    let (c, l) = (Config::default(), limits());
    assert_eq!(
        (c.max_clients, c.max_line, c.txq_size, c.uartq_size),
        (4, 256, 1024, 512)
    );
    assert_eq!(
        (l.max_clients, l.max_line, l.txq_size, l.uartq_size),
        (4, 256, 1024, 512)
    );
    assert_eq!(
        (c.mode, c.eol, c.stall_timeout_ms),
        (Mode::Line, Eol::Lf, 5000)
    );
}

#[rstest]
fn invalid_slots_are_ignored(mut relay: Relay) {
    for slot in [2, 7, usize::MAX] {
        assert_eq!(relay.client_input(slot, b"x\n"), 0);
        relay.client_closed(slot);
        relay.client_consume(slot, 1);
        assert!(relay.client_pending(slot).is_empty());
        assert!(relay.client_stats(slot).is_none());
    }
    assert_eq!(relay.stats().disconnects, 0);
}

/// Queue sizes are a build's, for its line rate; the rest is the relay's contract.
#[rstest]
fn the_contract_is_all_but_the_queue_sizes() {
    let a = cfg();
    assert!(a.same_contract(&Config {
        txq_size: 4096,
        uartq_size: 1024,
        ..a
    }));
    assert!(!a.same_contract(&Config {
        max_clients: 1,
        ..a
    }));
    assert!(!a.same_contract(&Config {
        mode: Mode::Raw,
        ..a
    }));
}

/// `relay_client_copy` fills a buffer from a client's queue across the ring's end, where
/// `relay_client_pending` stops, and consumes nothing: a platform whose writes are counted
/// (lwIP's segments) fills each one.
#[rstest]
#[case::all_of_it(64, 50)]
#[case::less_than_queued(20, 20)]
#[case::nothing_asked(0, 0)]
fn client_copy_crosses_the_ring_end_and_consumes_nothing(
    mut relay: Relay,
    #[case] max: usize,
    #[case] copied: usize,
) {
    let s = relay.accept().unwrap();
    // 40 bytes in and out leave the queue's head at 40 of 64: the next 50 wrap.
    relay.uart_input(&[b'x'; 40]);
    assert_eq!(rx(&mut relay, s).len(), 40);
    let data: Vec<u8> = (0..50).collect();
    relay.uart_input(&data);
    assert_eq!(
        relay.client_pending(s).len(),
        24,
        "the ring's end cuts the run"
    );
    let mut out = vec![0xAA; max];
    assert_eq!(relay.client_copy(s, &mut out), copied);
    assert_eq!(out[..copied], data[..copied]);
    assert_eq!(rx(&mut relay, s), data, "nothing was consumed");
    assert_eq!(
        relay.client_copy(s, &mut out),
        0,
        "an empty queue copies nothing"
    );
    assert_eq!(
        relay.client_copy(7, &mut out),
        0,
        "an invalid slot copies nothing"
    );
}
