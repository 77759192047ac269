//! The layer's semantics, one test each, observed from outside: the probe sketch runs one
//! Arduino call per command, and the test plays the board and the network's peers.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use rstest::rstest;
use support::{Heard, Probe, Setup, field, hear, num};

const PORT: u16 = 7000;

/// A probe listening on PORT with one accepted client, and that client.
fn connected(p: &mut Probe) -> (std::net::TcpStream, usize) {
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    let c = p.connect(PORT);
    let slot = p.accept(0);
    (c, slot)
}

#[rstest]
fn peek_bytes_of_more_than_is_there_waits_for_the_timeout() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    p.cmd(&format!("timeout {slot} 300"));
    c.write_all(b"ten bytes!").unwrap();
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 10);
    // WiFiClient.cpp:293: it waits for all 128 until the client's timeout.
    let r = p.cmd(&format!("peek {slot} 128"));
    assert_eq!(num(&r, "got"), 10, "{r}");
    assert!(num(&r, "ms") >= 300, "it waited the timeout: {r}");
    assert_eq!(p.counter("wait_peek"), 1);
    assert!(p.counter("blocked_ms") >= 300);
    // What is there comes back at once, with no wait.
    let r = p.cmd(&format!("peek {slot} 10"));
    assert_eq!(num(&r, "got"), 10, "{r}");
    assert_eq!(p.counter("wait_peek"), 1);
}

#[rstest]
fn an_accepted_client_waits_five_seconds_by_default() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    c.write_all(b"x").unwrap();
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 1);
    let r = p.cmd(&format!("peek {slot} 2"));
    assert!(
        num(&r, "ms") >= 5000,
        "WiFiClient.cpp:80, 87: _timeout = 5000: {r}"
    );
}

#[rstest]
fn the_peek_buffer_is_the_first_segment_and_takes_no_wait() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    // 1000 bytes arrive as segments of at most TCP_MSS (536): the view is the first one.
    c.write_all(&[b'a'; 1000]).unwrap();
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 1000);
    let r = p.cmd(&format!("peekbuf {slot}"));
    assert!(num(&r, "n") <= 536, "{r}");
    let first = num(&r, "n");
    let r = p.cmd(&format!("consume {slot} {first}"));
    assert_eq!(num(&r, "n"), 1000 - first, "{r}");
    assert_eq!(p.counter("wait_peek") + p.counter("wait_read"), 0);
}

#[rstest]
fn stop_waits_for_the_acknowledgement_of_what_was_written() {
    let mut p = Probe::with(Setup {
        rtt: Duration::from_millis(150),
        ..Setup::default()
    });
    let (mut c, slot) = connected(&mut p);
    let r = p.cmd(&format!("write {slot} 10"));
    assert_eq!(num(&r, "wrote"), 10);
    // ClientContext.h:316-361: stop() flushes first, until the peer acknowledges.
    let r = p.cmd(&format!("stop {slot}"));
    assert_eq!(field(&r, "ok"), "1", "{r}");
    assert!(num(&r, "ms") >= 100, "it waited about a round trip: {r}");
    assert_eq!(p.counter("wait_flush"), 1);
    assert_eq!(hear(&mut c), Heard::Data(b"wwwwwwwwww".to_vec()));
    assert_eq!(hear(&mut c), Heard::Eof);
}

#[rstest]
fn stop_with_nothing_unacknowledged_does_not_wait() {
    let mut p = Probe::start();
    let (_c, slot) = connected(&mut p);
    p.cmd(&format!("stop {slot}"));
    assert_eq!(p.counter("wait_flush"), 0);
}

#[rstest]
fn stop_gives_up_after_300_ms_when_nothing_is_acknowledged() {
    // No modelled round trip: what the peer's kernel took is acknowledged at once, so a send
    // buffer that stays full is one the peer will not take.
    let mut p = Probe::with(Setup {
        rtt: Duration::ZERO,
        ..Setup::default()
    });
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    // A peer whose window is full acknowledges nothing more.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(1).unwrap();
    s.connect(&p.addr(PORT).into()).unwrap();
    let slot = p.accept(0);
    // Write until the peer's window is shut: no ACK comes for longer than Linux delays one
    // (TCP_DELACK_MAX, 200 ms).
    let mut unacked = false;
    let deadline = Instant::now() + support::CEILING;
    while !unacked && Instant::now() < deadline {
        let room = num(&p.cmd(&format!("avail {slot}")), "afw");
        if room > 0 {
            p.cmd(&format!("write {slot} {room}"));
            continue;
        }
        let since = Instant::now();
        unacked = true;
        while since.elapsed() < Duration::from_millis(600) {
            if num(&p.cmd(&format!("avail {slot}")), "afw") > 0 {
                unacked = false;
                break;
            }
        }
    }
    assert!(unacked, "the peer never stopped acknowledging");
    // WIFICLIENT_MAX_FLUSH_WAIT_MS (WiFiClient.h:36): 300 ms with no progress.
    let r = p.cmd(&format!("stop {slot}"));
    assert_eq!(field(&r, "ok"), "0", "{r}");
    assert!(num(&r, "ms") >= 300, "{r}");
    drop(s);
}

#[rstest]
fn write_past_the_send_buffer_waits_for_an_acknowledgement() {
    let mut p = Probe::with(Setup {
        rtt: Duration::from_millis(150),
        ..Setup::default()
    });
    let (_c, slot) = connected(&mut p);
    let r = p.cmd(&format!("avail {slot}"));
    assert_eq!(
        num(&r, "afw"),
        1072,
        "TCP_SND_BUF = 2 * TCP_MSS (lwipopts.h:1326): {r}"
    );
    let r = p.cmd(&format!("write {slot} 1072"));
    assert_eq!(
        (num(&r, "wrote"), p.counter("wait_write")),
        (1072, 0),
        "{r}"
    );
    let r = p.cmd(&format!("write {slot} 100"));
    assert_eq!(num(&r, "wrote"), 100, "{r}");
    assert!(
        num(&r, "ms") >= 100,
        "ClientContext.h:487 waits for the ACK: {r}"
    );
    assert_eq!(p.counter("wait_write"), 1);
}

#[rstest]
fn a_ninth_segment_in_flight_waits_even_with_room_in_the_buffer() {
    let mut p = Probe::with(Setup {
        rtt: Duration::from_millis(300),
        ..Setup::default()
    });
    let (_c, slot) = connected(&mut p);
    p.cmd(&format!("nodelay {slot} 1"));
    for _ in 0..8 {
        p.cmd(&format!("write {slot} 10"));
    }
    assert_eq!(p.counter("wait_write"), 0);
    let r = p.cmd(&format!("avail {slot}"));
    assert_eq!(num(&r, "afw"), 1072 - 80, "room for bytes, {r}");
    // TCP_SND_QUEUELEN is 8 pbufs (lwipopts.h:1334): the ninth write waits for an ACK.
    let r = p.cmd(&format!("write {slot} 10"));
    assert!(num(&r, "ms") >= 200, "{r}");
    assert_eq!(p.counter("wait_write"), 1);
}

#[rstest]
fn the_segment_pool_is_shared_by_every_connection() {
    let mut p = Probe::with(Setup {
        rtt: Duration::from_millis(300),
        ..Setup::default()
    });
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    let _a = p.connect(PORT);
    let a = p.accept(0);
    let _b = p.connect(PORT);
    let b = p.accept(0);
    for _ in 0..8 {
        p.cmd(&format!("write {a} 10"));
    }
    for _ in 0..2 {
        p.cmd(&format!("write {b} 10"));
    }
    // MEMP_NUM_TCP_SEG is 10 (lwipopts.h:460): the eleventh segment waits, whoever asks.
    assert_eq!(p.counter("wait_write"), 0);
    let r = p.cmd(&format!("write {b} 10"));
    assert!(num(&r, "ms") >= 200, "{r}");
    assert_eq!(p.counter("wait_write"), 1);
}

#[rstest]
fn a_sixth_connection_resets_the_idlest_client() {
    let mut p = Probe::start();
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = p.connect(PORT);
        p.accept(0);
        if i > 0 {
            c.write_all(b"!").unwrap();
        }
        clients.push(c);
    }
    p.until("avail 4", |r| num(r, "n") == 1);
    assert_eq!(p.counter("pcb_resets"), 0);
    // Five PCBs (lwipopts.h:444) are in use: tcp_alloc resets the one idle longest, and the
    // first connection is the oldest and quietest (tcp.c:1727-1739: ties go to the oldest).
    let _sixth = p.connect(PORT);
    assert_eq!(hear(&mut clients[0]), Heard::Reset);
    assert_eq!(p.counter("pcb_resets"), 1);
    let r = p.cmd("avail 0");
    assert_eq!(num(&r, "connected"), 0, "the sketch sees it gone: {r}");
    p.accept(0);
}

#[rstest]
fn a_time_wait_pcb_is_recycled_before_anyone_is_reset() {
    let mut p = Probe::start();
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    let mut clients: Vec<_> = (0..5)
        .map(|_| {
            let c = p.connect(PORT);
            p.accept(0);
            c
        })
        .collect();
    // The sketch closes one first; the peer closes back: TIME_WAIT holds that PCB.
    p.cmd("drop 4");
    assert_eq!(hear(&mut clients[4]), Heard::Eof);
    drop(clients.pop());
    p.sync();
    let _sixth = p.connect(PORT);
    p.accept(0);
    assert_eq!((p.counter("pcb_recycled"), p.counter("pcb_resets")), (1, 0));
}

#[rstest]
fn a_full_backlog_holds_new_connections_back_until_one_is_accepted() {
    let mut p = Probe::start();
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 1")), "listen status=1");
    let mut first = p.connect(PORT);
    let mut second = p.connect(PORT);
    first.write_all(b"1").unwrap();
    second.write_all(b"2").unwrap();
    // tcp_in.c:663-668: with the backlog full the SYN is dropped; the second waits.
    p.sync();
    let slot = p.accept(0);
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 1);
    assert_eq!(p.counter("syn_deferred"), 1);
    let slot2 = p.accept(0);
    p.until(&format!("avail {slot2}"), |r| num(r, "n") == 1);
    let r = p.cmd(&format!("read {slot2} 1"));
    assert_eq!(field(&r, "head"), "32", "the second connection's byte: {r}");
}

#[rstest]
fn a_third_listener_finds_no_listen_pcb() {
    let mut p = Probe::start();
    assert_eq!(p.cmd("listen 0 7000 5"), "listen status=1");
    assert_eq!(p.cmd("listen 1 7001 5"), "listen status=1");
    // MEMP_NUM_TCP_PCB_LISTEN is 2 (lwipopts.h:452).
    assert_eq!(p.cmd("listen 2 7002 5"), "listen status=0");
}

#[rstest]
fn a_peer_that_closes_with_nothing_unread_is_reset() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    c.shutdown(std::net::Shutdown::Write).unwrap();
    // ClientContext.h:598-614: a FIN with an empty receive buffer aborts the connection.
    assert_eq!(hear(&mut c), Heard::Reset);
    let r = p.cmd(&format!("avail {slot}"));
    assert_eq!((num(&r, "connected"), num(&r, "status")), (0, 0), "{r}");
}

#[rstest]
fn a_peer_that_closes_leaves_its_data_readable_but_is_not_connected() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    c.write_all(b"hello").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let r = p.until(&format!("avail {slot}"), |r| num(r, "connected") == 0);
    // WiFiClient.cpp:327-333: CLOSE_WAIT counts as closed, even with data to read.
    assert_eq!(num(&r, "n"), 5, "{r}");
    assert_eq!(
        field(&p.cmd(&format!("read {slot} 5")), "head"),
        "68656c6c6f"
    );
}

#[rstest]
fn closing_with_unread_data_resets_the_peer() {
    let mut p = Probe::start();
    let (mut c, slot) = connected(&mut p);
    c.write_all(b"unread").unwrap();
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 6);
    // tcp.c:348-380: tcp_close with data the application never took sends a RST.
    p.cmd(&format!("stop {slot}"));
    assert_eq!(hear(&mut c), Heard::Reset);
}

#[rstest]
fn letting_go_of_the_last_reference_closes_without_a_wait() {
    let mut p = Probe::with(Setup {
        rtt: Duration::from_millis(150),
        ..Setup::default()
    });
    let (mut c, slot) = connected(&mut p);
    c.write_all(b"unread").unwrap();
    p.until(&format!("avail {slot}"), |r| num(r, "n") == 6);
    p.cmd(&format!("write {slot} 10"));
    // ClientContext.h:115-127: unref takes the unread data and closes, with no flush.
    p.cmd(&format!("drop {slot}"));
    assert_eq!(p.counter("wait_flush"), 0);
    assert_eq!(hear(&mut c), Heard::Data(b"wwwwwwwwww".to_vec()));
    assert_eq!(hear(&mut c), Heard::Eof);
}

#[rstest]
fn the_receive_window_holds_what_the_sketch_has_not_read() {
    let mut p = Probe::start();
    let (c, slot) = connected(&mut p);
    let writer = std::thread::spawn(move || {
        let mut c = c;
        let _ = c.write_all(&vec![b'.'; 64 << 10]);
        c
    });
    // TCP_WND = 4 * TCP_MSS (lwipopts.h:1251): lwIP holds no more for the sketch.
    let r = p.until(&format!("avail {slot}"), |r| num(r, "n") >= 2144);
    assert_eq!(num(&r, "n"), 2144, "{r}");
    p.sync();
    let r = p.cmd(&format!("avail {slot}"));
    assert_eq!(num(&r, "n"), 2144, "still: {r}");
    for _ in 0..40 {
        p.cmd(&format!("read {slot} 2048"));
    }
    drop(writer);
}

#[rstest]
fn keepalive_is_off_until_the_sketch_asks() {
    let mut p = Probe::start();
    let (_c, slot) = connected(&mut p);
    let timers = |p: &Probe| {
        let out = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established", "src", &p.ip.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!timers(&p).contains("keepalive"), "{}", timers(&p));
    // ClientContext.h:49-50: keep-alive not enabled by default.
    let r = p.cmd(&format!("keepalive {slot} 30 5 3"));
    assert_eq!(r, "keepalive enabled=1");
    let t = timers(&p);
    assert!(
        t.contains("timer:(keepalive,"),
        "the host keeps it alive now: {t}"
    );
}

#[rstest]
#[case::paced(true)]
#[case::unpaced(false)]
fn the_receive_ring_holds_size_minus_one_and_an_overrun_drops_the_oldest(#[case] paced: bool) {
    let mut p = Probe::with(Setup {
        paced,
        ..Setup::default()
    });
    assert_eq!(p.cmd("rxsize 256"), "rxsize size=256");
    p.send(b"hold 200\n");
    assert_eq!(p.line(), "hold start");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    p.send(&data);
    let r = p.line();
    if paced {
        // uart.cpp:149-181: the ISR drops the oldest byte for each new one; 255 stay in the
        // ring and up to 15 in the FIFO, below the 16-byte interrupt threshold.
        // 62 batches of 16 went to the ring, which kept the last 255 of them; 8 wait in the
        // FIFO.
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(num(&r, "avail"), 255 + 8, "{r}");
        assert_eq!(field(&r, "overrun"), "1", "{r}");
        assert_eq!(
            field(&r, "head"),
            hex(&data[992 - 255..992 - 247]),
            "the oldest kept: {r}"
        );
        assert_eq!(field(&r, "tail"), hex(&data[992..]), "the newest: {r}");
        assert_eq!(p.counter("uart_overruns"), 1);
        assert_eq!(p.counter("uart_lost"), 1000 - 263);
    } else {
        // An infinitely fast line waits for room: nothing is lost.
        assert_eq!(field(&r, "overrun"), "0", "{r}");
        assert_eq!(field(&r, "head"), "0001020304050607", "{r}");
        assert_eq!(p.counter("uart_lost"), 0);
    }
}

#[rstest]
fn serial_write_waits_while_the_transmit_fifo_holds_127() {
    let mut p = Probe::with(Setup {
        paced: true,
        ..Setup::default()
    });
    // At 50 baud a byte takes 200 ms on the wire (divider 1,600,000 of 80 MHz, 10 bits). An
    // idle wire takes the first byte into the shift register, so 128 fit at once; then the
    // FIFO holds 127, which uart_write counts as full (uart.cpp:504-507) although
    // availableForWrite still reports 1 (uart.cpp:555-561). The next byte waits for the first
    // to leave the wire.
    let r = p.cmd("serialwrite 128 1 50");
    let r = &r[r.find("serialwrite ").expect("the reply")..];
    assert_eq!(num(r, "before"), 128, "{r}");
    assert_eq!(num(r, "mid"), 1, "{r}");
    assert!(
        num(r, "first_us") < 200_000,
        "the first 128 bytes waited: {r}"
    );
    assert!(
        num(r, "first_us") + num(r, "second_us") >= 199_000,
        "byte 129 went before byte 1 left the wire: {r}"
    );
    assert_eq!(p.counter("wait_serial"), 1);
}

#[rstest]
fn an_unpaced_wire_takes_every_byte_at_once() {
    let mut p = Probe::start();
    let r = p.cmd("serialwrite 128 1000 50");
    let r = &r[r.find("serialwrite ").expect("the reply")..];
    assert_eq!(num(r, "mid"), 128, "{r}");
    assert_eq!(p.counter("wait_serial"), 0);
}

#[rstest]
fn delay_in_loop_is_a_blocking_wait_and_in_setup_is_not() {
    let mut p = Probe::start();
    assert_eq!(p.counter("wait_delay"), 0, "setup() called delay(5)");
    let r = p.cmd("delay 20");
    assert!(num(&r, "ms") >= 20, "{r}");
    assert_eq!(p.counter("wait_delay"), 1);
}

#[rstest]
fn eeprom_commit_erases_and_writes_the_sector_0x5000_below_the_end() {
    use std::os::unix::fs::FileExt;
    let mut p = Probe::start();
    let at = (4u64 << 20) - 0x5000;
    p.flash.write_all_at(&[0x11; 4096], at).unwrap();
    // EEPROM.cpp:45-71, 119-137: a word-rounded RAM copy, then erase and write.
    assert_eq!(p.cmd("eeprom 6 171"), "eeprom commit=1 length=8");
    let mut sector = vec![0u8; 4096];
    p.flash.read_exact_at(&mut sector, at).unwrap();
    assert_eq!(&sector[..6], &[0xab; 6]);
    assert_eq!(&sector[6..8], &[0x11; 2], "the copy was read from flash");
    assert!(
        sector[8..].iter().all(|&b| b == 0xff),
        "the rest of the sector is erased"
    );
    assert_eq!(field(&p.cmd("eepromread 8"), "head"), "abababababab1111");
}

#[rstest]
fn wifi_joins_only_the_boards_network_and_takes_its_address() {
    let mut p = Probe::with(Setup {
        joined: false,
        ..Setup::default()
    });
    assert_eq!(p.cmd(&format!("listen 0 {PORT} 5")), "listen status=1");
    // Not joined: the board's address answers nothing yet.
    let _early = p.connect(PORT);
    assert_eq!(p.cmd("accept 0"), "accept none");
    let ssid = support::hex(support::SSID);
    // ESP8266WiFiSTA.cpp:555-572: the reasons a join fails.
    assert!(
        p.cmd("wifi 6f74686572")
            .starts_with("wifi status=1 ip=0.0.0.0")
    );
    assert!(
        p.cmd(&format!("wifi {ssid} 70617373776f7264"))
            .starts_with("wifi status=6 ")
    );
    let r = p.cmd(&format!("wifi {ssid}"));
    assert_eq!(r, format!("wifi status=3 ip={}", p.ip));
    p.accept(0);
}
