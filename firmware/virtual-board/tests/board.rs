//! The virtual board as a real process: PTY, its own loopback address, the firmware's status
//! channel, control, signals.

mod support;

use std::io::Write;
use std::time::{Duration, Instant};

use rstest::rstest;
use support::{BIN, CEILING, Vb, client_eof, client_line, run_within};
use virtual_board::rfc2217::com_port_option;

#[rstest]
fn ready_line_and_banner_describe_the_board() {
    let vb = Vb::start(&[]);
    let firmware = arduino_host::relay_firmware("nodemcuv2").unwrap();
    assert_eq!(vb.ready.profile, "nodemcu-v2");
    assert_eq!(vb.ready.env, "nodemcuv2");
    assert_eq!(vb.ready.build.as_deref(), Some(firmware.build_id));
    assert!(
        vb.ready.serial.starts_with("/dev/pts/"),
        "{:?}",
        vb.ready.serial
    );
    // A loopback address of its own, and the firmware's own ports on it.
    let ip = vb.ready.tcp.ip();
    assert!(ip.is_loopback() && ip.to_string() != "127.0.0.1", "{ip}");
    assert_eq!(vb.ready.tcp.port(), 8888);
    assert_eq!(
        vb.ready.status.unwrap(),
        std::net::SocketAddr::new(ip, 8889)
    );
    assert_eq!(
        vb.banner,
        format!(
            "relay ready version=0.1.0 build={} ip={ip} port=8888 status_port=8889 \
             max_clients=4 max_line=256 txq=1024 uartq=512 stall_ms=5000 mode=line eol=lf",
            firmware.build_id
        )
    );
}

#[rstest]
fn relays_both_ways() {
    let mut vb = Vb::start(&[]);
    let mut c = vb.connect();
    c.write_all(b"AT+GMR\r\n").unwrap();
    assert_eq!(vb.uart_line(), b"AT+GMR");
    vb.write_uart(b"OK\r\n");
    let mut buf = Vec::new();
    assert_eq!(client_line(&mut c, &mut buf), b"OK");
}

#[rstest]
fn every_uart_byte_reaches_every_client_in_order() {
    let mut vb = Vb::start(&[]);
    let mut clients: Vec<_> = (0..4).map(|_| vb.connect()).collect();
    vb.wait_counter("clients", 4);
    let stream: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    vb.write_uart(&stream);
    for c in &mut clients {
        let mut got = Vec::new();
        assert!(support::read_until(c, &mut got, |b| b.len() >= stream.len()));
        assert_eq!(got, stream, "byte-exact, nothing lost or duplicated");
    }
}

/// Two clients type many lines at once in odd-sized pieces; the UART must see only whole
/// lines, each client's in order.
#[rstest]
fn concurrent_clients_never_mix_a_line() {
    const LINES: usize = 300;
    let mut vb = Vb::start(&[]);
    let writers: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|name| {
            let mut c = vb.connect();
            std::thread::spawn(move || {
                let text: String = (0..LINES)
                    .map(|i| format!("{name}-{i:04}-{}\n", name.repeat(i % 50)))
                    .collect();
                let mut rest = text.as_bytes();
                let mut seed = name.as_bytes()[0] as usize;
                while !rest.is_empty() {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    let n = (seed >> 8) % 23 + 1;
                    let (piece, tail) = rest.split_at(n.min(rest.len()));
                    c.write_all(piece).unwrap();
                    rest = tail;
                }
                c
            })
        })
        .collect();
    let mut next = [0usize; 2];
    for _ in 0..2 * LINES {
        let line = String::from_utf8(vb.uart_line()).unwrap();
        let who = match &line[..2] {
            "A-" => 0,
            "B-" => 1,
            _ => panic!("mixed or foreign line on the UART: {line:?}"),
        };
        let name = &line[..1];
        let i = next[who];
        assert_eq!(
            line,
            format!("{name}-{i:04}-{}", name.repeat(i % 50)),
            "line {i} of {name}"
        );
        next[who] += 1;
    }
    for w in writers {
        drop(w.join().unwrap());
    }
}

#[rstest]
#[case::exactly_the_limit(256, false)]
#[case::one_over(257, true)]
#[case::a_thousand_bytes(1000, true)]
fn overflow_guard_on_a_real_board(#[case] len: usize, #[case] overflows: bool) {
    let mut vb = Vb::start(&[]);
    let mut c = vb.connect();
    let mut long = vec![b'L'; len];
    long.push(b'\n');
    c.write_all(&long).unwrap();
    c.write_all(b"after\n").unwrap();
    let mut buf = Vec::new();
    if overflows {
        assert_eq!(
            client_line(&mut c, &mut buf),
            b"!relay overflow max_line=256"
        );
    } else {
        assert_eq!(vb.uart_line(), vec![b'L'; len]);
    }
    assert_eq!(
        vb.uart_line(),
        b"after",
        "the guard leaves the next line intact"
    );
    assert_eq!(vb.counter("overflows"), u64::from(overflows));
}

#[rstest]
fn client_beyond_capacity_is_rejected_and_the_others_carry_on() {
    let mut vb = Vb::start(&["--profile", "tiny"]);
    let mut a = vb.connect();
    let _b = vb.connect();
    vb.wait_counter("clients", 2);
    let mut third = vb.connect();
    let mut buf = Vec::new();
    assert_eq!(
        client_line(&mut third, &mut buf),
        b"!relay busy max_clients=2"
    );
    client_eof(&mut third, &mut buf);
    assert!(buf.is_empty(), "nothing after the rejection line");
    a.write_all(b"still here\n").unwrap();
    assert_eq!(vb.uart_line(), b"still here");
    assert_eq!(vb.counter("rejected"), 1);
}

#[rstest]
#[case::clean_close(false)]
#[case::reset(true)]
fn a_departing_client_leaks_no_partial_line(#[case] rst: bool) {
    let mut vb = Vb::start(&["--profile", "tiny"]);
    let a = vb.connect();
    let mut b = vb.connect();
    vb.wait_counter("clients", 2);
    (&a).write_all(b"half a li").unwrap();
    b.write_all(b"whole ").unwrap();
    if rst {
        // SO_LINGER 0 turns the close into a RST.
        socket2::SockRef::from(&a)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    drop(a);
    vb.wait_counter("disconnects", 1);
    assert_eq!(vb.counter("partial_discards"), 1);
    b.write_all(b"line\n").unwrap();
    assert_eq!(vb.uart_line(), b"whole line");
    let mut c = vb.connect();
    c.write_all(b"new client\n").unwrap();
    assert_eq!(vb.uart_line(), b"new client", "the freed slot is usable");
}

/// A client with a small receive window, so that a few KiB back it up.
fn small_window_client(vb: &Vb) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(2048).unwrap();
    s.connect(&vb.ready.tcp.into()).unwrap();
    s.into()
}

#[rstest]
fn a_line_sent_just_before_close_still_arrives() {
    let mut vb = Vb::start(&[]);
    let mut a = vb.connect();
    a.write_all(b"last words\n").unwrap();
    drop(a);
    assert_eq!(vb.uart_line(), b"last words");
}

#[rstest]
fn control_reset_reboots_the_relay() {
    let mut vb = Vb::start(&[]);
    let mut c = vb.connect();
    c.write_all(b"x\n").unwrap();
    assert_eq!(vb.uart_line(), b"x");
    // The ROM speaks at 74880 baud: a terminal at the relay's rate sees garbage.
    let rom = vb.rom_line(|vb| assert_eq!(vb.control("reset"), "ok reset\n"), " ets ");
    assert!(rom.contains("rst cause:2"), "{rom}");
    assert_eq!(vb.uart_line_starting("relay ready "), vb.banner);
    let mut buf = Vec::new();
    client_eof(&mut c, &mut buf);
    assert_eq!(vb.counter("accepted"), 0, "counters restart with the relay");
    assert!(vb.control("fly").starts_with("err unknown command `fly`"));
    assert!(
        vb.control("counters")
            .starts_with("counters wait_peek=0 wait_read=0 wait_write=0 ")
    );
}

#[rstest]
fn slow_reader_is_closed_and_the_others_keep_up() {
    let mut vb = Vb::start(&["--profile", "tiny"]);
    let slow = small_window_client(&vb);
    let mut fast = vb.connect();
    vb.wait_counter("clients", 2);
    // The slow client never reads: once its socket buffers fill, its queue overflows.
    let chunk = vec![b'.'; 4096];
    let mut got = Vec::new();
    let mut sent = 0;
    while vb.counter("stalls") == 0 {
        vb.write_uart(&chunk);
        sent += chunk.len();
        let ok = support::read_until(&mut fast, &mut got, |b| b.len() >= sent);
        assert!(
            ok,
            "fast client has {} of {sent} bytes; {}",
            got.len(),
            vb.status()
        );
        assert!(sent < 512 << 20, "the slow client was never closed");
    }
    assert_eq!(got.len(), sent, "the fast client lost nothing");
    assert!(vb.counter("drops") > 0);
    drop(slow);
}

#[rstest]
fn sigterm_stops_cleanly_and_removes_the_link() {
    let dir = support::temp_path("link");
    let link = dir.to_str().unwrap().to_owned();
    let mut vb = Vb::start(&["--link", &link]);
    assert_eq!(std::fs::read_link(&dir).unwrap(), vb.ready.serial);
    let status = vb.terminate();
    assert!(status.success(), "{status}");
    assert!(dir.symlink_metadata().is_err(), "the link is gone");
}

/// A SIGTERM sent as soon as the ready line is read finds the handlers in place: a clean stop.
#[rstest]
fn sigterm_right_after_the_ready_line_stops_cleanly() {
    let dir = support::temp_path("early-term");
    let mut vb = Vb::start_quiet(&["--link", dir.to_str().unwrap()]);
    let status = vb.terminate();
    assert!(status.success(), "{status}");
    assert!(dir.symlink_metadata().is_err(), "the link is gone");
}

#[rstest]
fn exits_when_its_parent_goes_away() {
    // A shell starts the board and then becomes `sleep`: killing it orphans the board.
    let mut parent = std::process::Command::new("sh")
        .args(["-c", "\"$0\" & exec sleep 600", BIN])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = parent.stdout.take().unwrap();
    let mut buf = Vec::new();
    assert!(support::read_until(&mut out, &mut buf, |b| b.contains(&b'\n')));
    let ready: virtual_board::Ready =
        serde_json::from_slice(&support::take_line(&mut buf).unwrap()).unwrap();
    let pid = rustix::process::Pid::from_raw(ready.pid as i32).expect("a board's pid");
    let pidfd =
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).expect("pidfd_open");
    parent.kill().unwrap();
    parent.wait().unwrap();
    // A pidfd becomes readable when its process exits.
    let mut fds = [nix::poll::PollFd::new(
        std::os::fd::AsFd::as_fd(&pidfd),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(
        &mut fds,
        nix::poll::PollTimeout::from(CEILING.as_millis() as u16),
    )
    .unwrap();
    if n == 0 {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ready.pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("the orphaned board is still running");
    }
}

#[rstest]
#[case::unknown_field(
    "name = 'x'\n[relay]\nmax_clientz = 2\n",
    "unknown field `max_clientz`"
)]
#[case::out_of_range(
    "name = 'x'\n[relay]\nmax_line = 99999\n",
    "relay.max_line = 99999 is out of range"
)]
#[case::not_toml("name = \n", "malformed board profile")]
fn malformed_profile_fails_fast_naming_the_field(#[case] text: &str, #[case] needle: &str) {
    refused_profile(text, needle);
}

/// Starts the board with a profile file holding `text`: it must stop before it is ready, with
/// exit 2 and one line containing `needle`.
fn refused_profile(text: &str, needle: &str) {
    let path = support::temp_path("profile.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["--profile", path.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty(), "no ready line for a bad profile");
}

/// Each shipped profile describes the firmware environment it names: the twin runs that build.
#[rstest]
fn every_shipped_profile_matches_its_firmware_build(
    #[values(
        "nodemcu-v2",
        "nodemcu-v2-raw",
        "nodemcu-v2-921600",
        "nodemcu-v2-3000000",
        "tiny"
    )]
    name: &str,
) {
    let profile = nodemcu::profile::Profile::load(name).unwrap();
    let build = virtual_board::firmware_for(&profile).unwrap();
    assert_eq!(build.env, profile.firmware.env);
}

#[rstest]
#[case::limit(
    "name = 'x'\n[relay]\nmax_clients = 3\n",
    "relay.max_clients is 3, the build has RELAY_MAX_CLIENTS=4"
)]
#[case::port(
    "name = 'x'\n[net]\nport = 23\n",
    "net.port is 23, the build has RELAY_PORT=8888"
)]
#[case::env(
    "name = 'x'\n[firmware]\nenv = 'esp32'\n",
    "firmware.env `esp32` is no environment"
)]
fn a_profile_its_firmware_build_does_not_match_is_refused(
    #[case] text: &str,
    #[case] needle: &str,
) {
    refused_profile(text, needle);
}

#[rstest]
fn unknown_profile_names_the_known_ones() {
    let out = std::process::Command::new(BIN)
        .args(["--profile", "esp32"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("unknown board profile `esp32`"), "{err}");
    for known in [
        "nodemcu-v2",
        "nodemcu-v2-raw",
        "nodemcu-v2-921600",
        "nodemcu-v2-3000000",
        "tiny",
    ] {
        assert!(err.contains(known), "{known} missing from: {err}");
    }
}

/// Pacing is a lower bound on time: no byte crosses the line sooner than its transmitter's
/// rate allows, the chip's (80 MHz / (80 MHz / baud): 930,233 for 921600) towards the host and
/// the host's port's towards the chip. Only this bound is asserted, since it cannot flake on a
/// loaded machine; `relay-hil bench` measures how close the line comes to its rate.
#[rstest]
#[case::at_115200("nodemcu-v2", 115_200)]
#[case::at_921600("nodemcu-v2-921600", 921_600)]
#[case::at_3000000("nodemcu-v2-3000000", 3_000_000)]
fn the_line_is_never_faster_than_its_transmitters(#[case] profile: &str, #[case] baud: u32) {
    use virtual_board::wire::Rate;
    // A short WiFi round trip: at 3 Mbaud the default 3 ms lets lwIP's 1072-byte send buffer
    // carry only 357 KB/s to a client, too close to the line's 300 KB/s to be what is tested.
    let mut vb = Vb::start_alone(&["--pace", "--rtt-ms", "1", "-p", profile]);
    assert!(vb.ready.paced);
    assert_eq!(vb.ready.baud, baud);
    let mut c = vb.connect();
    vb.wait_counter("clients", 1);
    let line = [b'p'; 200];
    let lines = 40;
    // The chip's transmitter: the relay writes each line and its LF.
    let start = Instant::now();
    for _ in 0..lines {
        c.write_all(&line).unwrap();
        c.write_all(b"\n").unwrap();
    }
    for _ in 0..lines {
        assert_eq!(vb.uart_line(), line);
    }
    let bytes = f64::from(lines * 201);
    let chip = Rate::esp8266(baud).bytes_per_sec();
    let floor = Duration::from_secs_f64(bytes / chip);
    let elapsed = start.elapsed();
    assert!(
        elapsed >= floor,
        "{elapsed:?} < {floor:?}: the chip's UART outran its rate"
    );

    // The host's transmitter: its port's rate, exactly.
    let stream: Vec<u8> = (0..=255u8).cycle().take(8_040).collect();
    let start = Instant::now();
    vb.write_uart(&stream);
    let mut got = Vec::new();
    assert!(
        support::read_until(&mut c, &mut got, |b| b.len() >= stream.len()),
        "{} of {} bytes; {}",
        got.len(),
        stream.len(),
        vb.status()
    );
    let elapsed = start.elapsed();
    assert_eq!(got, stream);
    let floor = Duration::from_secs_f64(stream.len() as f64 / Rate::nominal(baud).bytes_per_sec());
    assert!(
        elapsed >= floor,
        "{elapsed:?} < {floor:?}: the host's port outran its rate"
    );
}

/// A port at another rate than the chip's reads garbage, and reads right once it matches.
#[rstest]
fn a_port_at_another_rate_reads_garbage() {
    let mut vb = Vb::start(&[]);
    let mut c = vb.connect();
    vb.wait_counter("clients", 1);
    vb.set_rate(921_600);
    c.write_all(b"hello, relay\n").unwrap();
    let mut seen = Vec::new();
    // The relay's 13 characters at 115200 come out as more, shorter ones at 921600.
    assert!(support::read_until(&mut vb.serial, &mut seen, |b| b.len() >= 13));
    assert!(
        !seen.windows(5).any(|w| w == b"hello"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(vb.control("baud"), "ok 115200 host=921600\n");
    vb.set_rate(115_200);
    vb.drain_uart();
    c.write_all(b"hello again\n").unwrap();
    assert_eq!(vb.uart_line_starting("hello"), "hello again");
}

/// Over a slow WiFi round trip the relay still carries the whole line rate to a client: at
/// 115200 baud a 60 ms round trip brings 691 bytes, more than the one 536-byte segment a
/// write may hold, so it takes both of a client's writes in flight each round trip.
#[rstest]
fn a_long_wifi_round_trip_still_carries_the_line_rate() {
    let mut vb = Vb::start_alone(&["--pace", "--rtt-ms", "60"]);
    let mut c = vb.connect();
    vb.wait_counter("clients", 1);
    let stream: Vec<u8> = (0..=255u8).cycle().take(23_040).collect(); // 2 s of line
    vb.write_uart(&stream);
    let mut got = Vec::new();
    assert!(
        support::read_until(&mut c, &mut got, |b| b.len() >= stream.len()),
        "the client has {} of {} bytes; {}",
        got.len(),
        stream.len(),
        vb.status()
    );
    assert_eq!(got, stream);
    assert_eq!(vb.counter("drops"), 0, "{}", vb.status());
}

/// The NodeMCU auto-reset circuit, driven the way esptool and the harness drive it.
#[rstest]
fn modem_lines_reset_the_chip_or_enter_the_loader() {
    let mut vb = Vb::start(&[]);
    let mut c = vb.connect();
    c.write_all(b"before\n").unwrap();
    assert_eq!(vb.uart_line(), b"before");

    // Hard reset: RTS alone pulls EN low; releasing it boots the firmware (GPIO0 high).
    assert_eq!(vb.control("rts 1"), "ok held\n");
    let mut buf = Vec::new();
    client_eof(&mut c, &mut buf);
    let rom = vb.rom_line(
        |vb| assert_eq!(vb.control("rts 0"), "ok booting\n"),
        " ets ",
    );
    assert!(rom.contains("boot mode:(3,6)"), "{rom}");
    assert_eq!(vb.uart_line_starting("relay ready "), vb.banner);

    // esptool's loader entry: EN low, then DTR and RTS swap one call at a time. Between the
    // two calls both are asserted (EN and GPIO0 high); the EN delay keeps that from booting.
    assert_eq!(vb.control("dtr 0"), "ok running\n");
    assert_eq!(vb.control("rts 1"), "ok held\n");
    let rom = vb.rom_line(
        |vb| {
            assert_eq!(vb.control("dtr 1"), "ok booting\n");
            assert_eq!(vb.control("rts 0"), "ok booting\n");
        },
        " ets ",
    );
    assert!(
        rom.contains("boot mode:(1,7)"),
        "GPIO0 was low at boot: {rom}"
    );
    assert_eq!(
        vb.control("dtr 0"),
        "ok loader\n",
        "GPIO0 rising later changes nothing"
    );
    vb.refused("no relay runs in the loader");
    assert_eq!(vb.control("reset"), "ok reset\n");
    assert_eq!(vb.uart_line_starting("relay ready "), vb.banner);
}

fn flash_path(tag: &str) -> std::path::PathBuf {
    support::temp_path(&format!("flash-{tag}.bin"))
}

/// A relay firmware.bin as the ESP8266 Arduino core's elf2bin writes it: the ROM boots the
/// bootloader at 0x0, which boots the application, and its build id, at 0x1000.
fn relay_image(build_id: &str) -> Vec<u8> {
    use nodemcu::image::{AppSections, build_firmware, build_id_record};
    let code = vec![0x55u8; 300];
    let rodata = build_id_record(build_id);
    build_firmware(
        4,
        &AppSections {
            entry: 0x4010_0004,
            irom0_text: &code,
            rodata: &rodata,
            ..AppSections::default()
        },
    )
}

/// Writes `image` at the start of the flash file, as a flasher would.
fn write_flash(path: &std::path::Path, image: &[u8]) {
    let mut flash = std::fs::read(path).unwrap_or_else(|_| vec![0xff; 4 << 20]);
    flash[..image.len()].copy_from_slice(image);
    // Provisioned, as a board that has joined a network before.
    let wifi = relay_core::provision::Wifi::new("lab", "").unwrap();
    assert!(nodemcu::credentials::store(&mut flash, &wifi));
    std::fs::write(path, flash).unwrap();
}

#[rstest]
fn a_relay_image_in_flash_boots_with_its_build_id() {
    let path = flash_path("relay");
    write_flash(&path, &relay_image("feedc0de01"));
    let vb = Vb::start(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    assert!(vb.banner.contains(" build=feedc0de01 "), "{}", vb.banner);
    assert_eq!(vb.ready.build.as_deref(), Some("feedc0de01"));
    drop(vb);
    std::fs::remove_file(&path).unwrap();
}

#[rstest]
#[case::erased(None, "ets_main.c")]
#[case::bad_checksum(Some(300), "csum err")]
#[case::not_a_relay(Some(usize::MAX), "")]
fn no_relay_boots_from_a_flash_without_a_good_relay_image(
    #[case] corrupt: Option<usize>,
    #[case] rom: &str,
) {
    let path = flash_path("bad");
    match corrupt {
        None => {}
        Some(usize::MAX) => write_flash(
            &path,
            &nodemcu::image::build(0x4010_0004, 4, &[(0x4010_0000, b"not ours")]),
        ),
        Some(at) => {
            let mut img = relay_image("feedc0de01");
            img[at] ^= 0xff;
            write_flash(&path, &img);
        }
    }
    // The port starts at the ROM's rate, so its power-on text reads right.
    let mut vb = Vb::start_quiet(&["--flash-file", path.to_str().unwrap(), "--baud", "74880"]);
    assert_eq!(vb.ready.build, None, "no relay runs");
    let line = vb.uart_line_starting(" ets ");
    assert!(line.contains("boot mode:(3,6)"), "{line}");
    if !rom.is_empty() {
        assert_eq!(String::from_utf8_lossy(&vb.uart_line()).trim_end(), "");
        assert_eq!(String::from_utf8_lossy(&vb.uart_line()).trim_end(), rom);
    }
    vb.refused("no relay answers");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
}

/// The flash is a file: it outlives the process, and the ROM reads it again at every boot.
#[rstest]
fn the_flash_outlives_the_process_and_is_read_at_every_boot() {
    let path = flash_path("persist");
    let mut vb = Vb::start_quiet(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        4 << 20,
        "an erased 4 MiB flash"
    );
    assert_eq!(vb.ready.build, None);
    write_flash(&path, &relay_image("second01"));
    assert_eq!(vb.control("reset"), "ok reset\n");
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=second01 ")
    );
    assert!(vb.terminate().success());
    let again = Vb::start(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    assert!(
        again.banner.contains(" build=second01 "),
        "{}",
        again.banner
    );
    drop(again);
    std::fs::remove_file(&path).unwrap();
}

/// The ROM reads at most 16 MiB of flash at a boot: a flash file that grew past that since the
/// board started boots nothing, and the board reads none of it.
#[rstest]
fn a_flash_file_grown_past_16_mib_boots_nothing() {
    let path = flash_path("grown");
    write_flash(&path, &relay_image("grown01"));
    let mut vb = Vb::start(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    assert!(vb.banner.contains(" build=grown01 "), "{}", vb.banner);
    // Sparse: the relay image stays at 0x0, followed by zeros.
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((16 << 20) + 1).unwrap();
    vb.set_rate(virtual_board::board::ROM_BAUD);
    assert_eq!(vb.control("reset"), "ok reset\n");
    let rom = vb.uart_line_starting(" ets ");
    assert!(rom.contains("rst cause:2"), "{rom}");
    assert_eq!(String::from_utf8_lossy(&vb.uart_line()).trim_end(), "");
    assert_eq!(
        String::from_utf8_lossy(&vb.uart_line()).trim_end(),
        "ets_main.c"
    );
    vb.refused("no relay runs");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
}

/// A flash file the board cannot hold stops it before it starts: exit 2 and one line, at once.
#[rstest]
#[case::device("/dev/zero", "--flash-file /dev/zero: not a regular file")]
#[case::past_16_mib("BIG", "bytes, more than 16 MiB (the largest ESP8266 flash)")]
fn an_unusable_flash_file_is_refused_at_start(#[case] flash: &str, #[case] needle: &str) {
    // Sparse: no disk is spent.
    let big = flash_path("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let flash = if flash == "BIG" {
        big.to_str().unwrap()
    } else {
        flash
    };
    let out = run_within(&["--flash-file", flash], Duration::from_secs(10));
    std::fs::remove_file(&big).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty(), "no ready line");
}

/// A duration past a day is a parse error naming the option.
#[rstest]
fn an_rtt_past_a_day_is_refused() {
    let out = run_within(&["--rtt-ms", "86400001"], Duration::from_secs(10));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with("error: invalid value '86400001' for '--rtt-ms <MS>'")
            && err.contains("(a day)"),
        "{err}"
    );
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kb * 1024
}

/// The control socket's replies on one connection, a line each, read as `send` is written.
struct Control {
    stream: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
}

impl Control {
    fn connect(vb: &Vb) -> Control {
        let stream = std::net::TcpStream::connect(vb.ready.control).unwrap();
        stream.set_read_timeout(Some(CEILING)).unwrap();
        let reader = std::io::BufReader::new(stream.try_clone().unwrap());
        Control { stream, reader }
    }

    /// Sends `bytes` and returns the next reply line, without its newline; empty at EOF.
    fn send(&mut self, bytes: &[u8]) -> String {
        use std::io::BufRead;
        self.stream.write_all(bytes).unwrap();
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        String::from_utf8(line).unwrap().trim_end().to_owned()
    }
}

/// A control line holds at most 256 bytes, its terminator aside: one more is refused, and the
/// connection closed.
#[rstest]
#[case::exactly_the_limit(256, "ok commands: ")]
#[case::with_crlf_at_the_limit(-256, "ok commands: ")]
#[case::one_over(257, "err line too long (at most 256 bytes)")]
fn a_control_line_is_at_most_256_bytes(#[case] len: i32, #[case] reply: &str) {
    let vb = Vb::start(&[]);
    let mut c = Control::connect(&vb);
    let end = if len < 0 { "\r\n" } else { "\n" };
    let line = format!(
        "{:<width$}{end}",
        "help",
        width = len.unsigned_abs() as usize
    );
    let got = c.send(line.as_bytes());
    assert!(got.starts_with(reply), "{got}");
    if got.starts_with("err") {
        assert_eq!(c.send(b""), "", "closed after the err");
    } else {
        assert!(
            c.send(b"help\n").starts_with("ok "),
            "the connection goes on"
        );
    }
}

/// 64 MiB with no newline: the board answers once, without the line, closes, and holds none of
/// it (its peak memory barely moves); the next connection is served.
#[rstest]
fn an_endless_control_line_is_refused_without_being_held() {
    let vb = Vb::start(&[]);
    let before = peak_rss(vb.ready.pid);
    let mut s = std::net::TcpStream::connect(vb.ready.control).unwrap();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..1024 {
            if w.write_all(&chunk).is_err() {
                return; // the board has closed
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    // Blocking reads: the writer shares this socket, and must not see EAGAIN.
    s.set_read_timeout(Some(CEILING)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the board never closed the connection: {e}"),
        }
    }
    writer.join().unwrap();
    let grew = peak_rss(vb.ready.pid).saturating_sub(before);
    assert!(grew < 8 << 20, "the board grew by {} KiB", grew >> 10);
    assert!(
        got == b"err line too long (at most 256 bytes)\n",
        "{} bytes: {:?}",
        got.len(),
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(vb.control("help").starts_with("ok "));
}

/// A refused line is quoted back only in part, and bytes that are not UTF-8 get an `err`; the
/// connection carries on after both.
#[rstest]
fn unknown_and_non_utf8_control_lines_get_short_errors() {
    let vb = Vb::start(&[]);
    let mut c = Control::connect(&vb);
    let got = c.send(format!("{}\n", "y".repeat(200)).as_bytes());
    assert!(
        got.starts_with(&format!("err unknown command `{}…`; ", "y".repeat(32))),
        "{got}"
    );
    assert!(
        !got.contains(&"y".repeat(33)),
        "the line came back whole: {got}"
    );
    assert_eq!(
        c.send(b"dtr \xff\xfe\n"),
        "err not UTF-8: a command line must be UTF-8 text"
    );
    assert!(c.send(b"help\n").starts_with("ok commands: "));
}

/// esptool, installed by `./hil setup` (or named by ESPTOOL).
fn esptool_path() -> std::path::PathBuf {
    let path = std::env::var_os("ESPTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/tools/esptool-4.8.1/bin/esptool.py")
        });
    assert!(
        path.exists(),
        "esptool is not at {}: run ./hil setup (or set ESPTOOL)",
        path.display()
    );
    path
}

/// Puts the board in its ROM loader as esptool's classic reset does: EN low, DTR and RTS swap
/// back to back, then GPIO0 is let go.
/// Whatever the UART sent before EN went low is discarded: the held chip is silent, so the next
/// reset line is the loader's.
fn enter_loader(vb: &mut Vb) {
    assert_eq!(vb.control_burst(&["dtr 0", "rts 1"])[1], "ok held");
    vb.drain_uart();
    let rom = vb.rom_line(
        |vb| {
            assert_eq!(
                vb.control_burst(&["dtr 1", "rts 0"]),
                ["ok booting", "ok booting"]
            )
        },
        " ets ",
    );
    assert!(rom.contains("boot mode:(1,7)"), "{rom}");
    assert_eq!(vb.control("dtr 0"), "ok loader\n");
}

/// Runs esptool against the board, which is already in its loader (`--before no_reset`:
/// esptool's own reset pulses its port's modem lines, which a pseudo-terminal does not have).
fn esptool(vb: &Vb, args: &[&str]) -> std::process::Output {
    std::process::Command::new(esptool_path())
        .args(["--chip", "esp8266", "--port"])
        .arg(&vb.ready.serial)
        .args(["--before", "no_reset"])
        .args(args)
        .output()
        .unwrap()
}

/// esptool's output, both streams, for assertions and failure messages.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs esptool and expects it to succeed; returns what it printed.
fn esptool_ok(vb: &Vb, args: &[&str]) -> String {
    let out = esptool(vb, args);
    let text = printed(&out);
    assert!(out.status.success(), "esptool {args:?} failed:\n{text}");
    text
}

/// esptool writes `image` at 0 through the ROM loader (no stub, no resets of its own).
fn esptool_write(vb: &Vb, image: &std::path::Path) -> std::process::Output {
    esptool(
        vb,
        &[
            "--after",
            "no_reset",
            "--no-stub",
            "write_flash",
            "--flash_size",
            "keep",
            "0x0",
            image.to_str().unwrap(),
        ],
    )
}

/// A relay image written to a file beside the flash file, for esptool to flash.
fn image_file(flash: &std::path::Path, build_id: &str) -> (std::path::PathBuf, Vec<u8>) {
    let image = relay_image(build_id);
    let path = flash.with_extension(format!("{build_id}.img"));
    std::fs::write(&path, &image).unwrap();
    (path, image)
}

/// A board whose flash already runs the relay `old` and holds credentials, as one that has
/// joined its network before: a flash that boots after esptool leaves prints its banner with
/// no exchange on the UART, where esptool may still be reading when the firmware starts.
fn provisioned_board(path: &std::path::Path, old: &str) -> Vb {
    write_flash(path, &relay_image(old));
    let vb = Vb::start(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    assert!(
        vb.banner.contains(&format!(" build={old} ")),
        "{}",
        vb.banner
    );
    vb
}

/// The board boots into the relay with `build_id`, whose fresh flash has no credentials yet.
fn boots_provisioned(vb: &mut Vb, build_id: &str) {
    assert!(vb.provision("lab", "").starts_with("relay provision ok "));
    let banner = vb.uart_line_starting("relay ready ");
    assert!(banner.contains(&format!(" build={build_id} ")), "{banner}");
}

/// A flasher that is not ours flashes the board through its ROM loader, and esptool's `run`
/// (FLASH_END with 1: run the user code) boots what it wrote.
#[rstest]
fn esptool_flashes_the_board_through_the_rom_loader() {
    let path = flash_path("esptool");
    let (image_file, image) = image_file(&path, "viaesptool1");
    let mut vb = provisioned_board(&path, "before01");
    enter_loader(&mut vb);
    let out = esptool_write(&vb, &image_file);
    let log = printed(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Chip is ESP8266EX") && log.contains("MAC: 18:fe:34:"),
        "{log}"
    );
    assert!(
        log.contains("Crystal is 26MHz") && !log.contains("quite different"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Wrote {} bytes at 0x00000000",
            image.len().div_ceil(0x400) * 0x400
        )),
        "{log}"
    );
    assert_eq!(
        &std::fs::read(&path).unwrap()[..image.len()],
        &image[..],
        "the flash holds the image"
    );
    esptool_ok(&vb, &["--after", "no_reset", "--no-stub", "run"]);
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=viaesptool1 ")
    );
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&image_file).unwrap();
}

/// `--after soft_reset` leaves the loader for the firmware: through the ROM, FLASH_END with 1;
/// through esptool's stub, RUN_USER_CODE.
#[rstest]
fn esptool_soft_reset_boots_what_it_wrote(#[values(true, false)] stub: bool) {
    let path = flash_path(if stub { "soft-stub" } else { "soft-rom" });
    let id = if stub { "softstub01" } else { "softrom01" };
    let (image_file, image) = image_file(&path, id);
    let mut vb = provisioned_board(&path, "before01");
    enter_loader(&mut vb);
    let mut args = vec!["--after", "soft_reset"];
    if !stub {
        args.push("--no-stub");
    }
    args.extend(["write_flash", "0x0", image_file.to_str().unwrap()]);
    let log = esptool_ok(&vb, &args);
    assert_eq!(log.contains("Stub running..."), stub, "{log}");
    assert!(log.contains("Soft resetting..."), "{log}");
    assert_eq!(&std::fs::read(&path).unwrap()[..image.len()], &image[..]);
    let banner = vb.uart_line_starting("relay ready ");
    assert!(banner.contains(&format!(" build={id} ")), "{banner}");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&image_file).unwrap();
}

/// esptool with its default flasher stub: a compressed write it checks by MD5, verify_flash,
/// read_flash at a faster rate, erase_region and erase_flash, each against the flash file.
#[rstest]
fn esptool_stub_writes_verifies_reads_and_erases_the_flash() {
    let path = flash_path("stub");
    let (image_file, image) = image_file(&path, "stubwrite1");
    let mut vb = Vb::start_quiet(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    enter_loader(&mut vb);
    let image_arg = image_file.to_str().unwrap();
    let log = esptool_ok(
        &vb,
        &["--after", "no_reset", "write_flash", "0x0", image_arg],
    );
    assert!(log.contains("Stub running..."), "{log}");
    assert!(
        log.contains(&format!("Wrote {} bytes (", image.len())),
        "compressed: {log}"
    );
    assert!(log.contains("Hash of data verified."), "{log}");
    // `--after no_reset` ends with FLASH_END 0: the stub reboots into the ROM loader.
    assert_eq!(vb.control("dtr 0"), "ok loader\n");
    assert_eq!(&std::fs::read(&path).unwrap()[..image.len()], &image[..]);
    assert_eq!(vb.control("reset"), "ok reset\n");
    boots_provisioned(&mut vb, "stubwrite1");

    // From here the stub stays between runs, and answers the next one's SYNC itself.
    enter_loader(&mut vb);
    let stay = ["--after", "no_reset_stub"];
    let log = esptool_ok(
        &vb,
        &[&stay[..], &["verify_flash", "0x0", image_arg]].concat(),
    );
    assert!(log.contains("-- verify OK (digest matched)"), "{log}");
    assert_eq!(vb.control("dtr 0"), "ok stub\n");

    // A faster rate for the read: the stub takes it after its reply, until the next reset.
    let read_file = path.with_extension("read");
    let read_arg = read_file.to_str().unwrap();
    let read = ["--baud", "921600", "read_flash", "0x0", "0x12000", read_arg];
    let log = esptool_ok(&vb, &[&stay[..], &read].concat());
    assert!(log.contains("Stub is already running."), "{log}");
    assert!(log.contains("Changing baud rate to 921600"), "{log}");
    assert_eq!(vb.control("baud"), "ok 921600 host=921600\n");
    let flash = std::fs::read(&path).unwrap();
    assert_eq!(std::fs::read(&read_file).unwrap(), &flash[..0x12000]);
    enter_loader(&mut vb);
    assert_eq!(
        vb.control("baud"),
        "ok 74880 host=115200\n",
        "a reset brings the ROM's rate back"
    );

    esptool_ok(
        &vb,
        &[&stay[..], &["erase_region", "0x1000", "0x1000"]].concat(),
    );
    let erased = std::fs::read(&path).unwrap();
    assert!(erased[0x1000..0x2000].iter().all(|&b| b == 0xff));
    assert_eq!(
        erased[..0x1000],
        flash[..0x1000],
        "before the region, as it was"
    );
    assert_eq!(erased[0x2000..], flash[0x2000..], "after it, as it was");

    esptool_ok(&vb, &[&stay[..], &["erase_flash"]].concat());
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0xff));
    drop(vb);
    for f in [&path, &image_file, &read_file] {
        std::fs::remove_file(f).unwrap();
    }
}

/// A board without a flash file refuses flash writes, through the ROM and through the stub,
/// and its log says why; it goes on answering, and a reset boots its built-in relay.
#[rstest]
fn a_board_without_a_flash_file_refuses_flash_writes_and_says_why(
    #[values(true, false)] stub: bool,
) {
    let path = flash_path(if stub { "noflash-stub" } else { "noflash-rom" });
    let (image_file, _) = image_file(&path, "noflash01");
    let mut vb = Vb::start_logged(&[]);
    vb.banner = vb.uart_line_starting("relay ready ");
    enter_loader(&mut vb);
    let mut args = vec!["--after", "no_reset"];
    if !stub {
        args.push("--no-stub");
    }
    args.extend(["write_flash", "0x0", image_file.to_str().unwrap()]);
    let out = esptool(&vb, &args);
    let log = printed(&out);
    assert!(!out.status.success(), "{log}");
    let refusal = if stub {
        "Failed to enter compressed flash mode (result was C400: Failed SPI operation)"
    } else {
        "Failed to enter Flash download mode (result was 0106: Operation or feature not supported)"
    };
    assert!(log.contains(refusal), "{log}");
    let why = vb.log_line("flash commands need --flash-file PATH");
    assert!(why.contains("WARN"), "{why}");
    let state = if stub { "ok stub\n" } else { "ok loader\n" };
    assert_eq!(vb.control("dtr 0"), state, "still answering");
    assert_eq!(vb.control("reset"), "ok reset\n");
    assert_eq!(vb.uart_line_starting("relay ready "), vb.banner);
    drop(vb);
    std::fs::remove_file(&image_file).unwrap();
}

/// Code loaded to RAM that is not esptool's stub cannot run on the twin: the board says so in
/// its log and stays in the ROM loader, which goes on answering.
#[rstest]
fn ram_code_that_is_not_the_stub_is_refused_and_the_loader_answers_on() {
    let path = flash_path("ram");
    let code = nodemcu::image::build(0x4010_0004, 4, &[(0x4010_0000, &[0x55; 64])]);
    let ram_file = path.with_extension("ram");
    std::fs::write(&ram_file, code).unwrap();
    let mut vb = Vb::start_logged(&["--flash-file", path.to_str().unwrap()]);
    enter_loader(&mut vb);
    let log = esptool_ok(&vb, &["--no-stub", "load_ram", ram_file.to_str().unwrap()]);
    assert!(log.contains("executing at 40100004"), "{log}");
    let refused = vb.log_line("refused to run the code loaded to RAM at entry 0x40100004");
    assert!(refused.contains("WARN"), "{refused}");
    let log = esptool_ok(&vb, &["--after", "no_reset", "--no-stub", "read_mac"]);
    assert!(log.contains("MAC: 18:fe:34:"), "{log}");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&ram_file).unwrap();
}

/// esptool with all its defaults but `--before no_reset` writes and verifies the flash, then
/// cannot pulse RTS for its hard reset: a pseudo-terminal has no modem lines, and pyserial's
/// TIOCMBIS on it fails with ENOTTY, which esptool reports as a warning. The write is whole,
/// the stub still runs, and a reset boots what was written.
#[rstest]
fn esptool_defaults_write_the_flash_but_cannot_hard_reset_a_pty() {
    let path = flash_path("defaults");
    let (image_file, image) = image_file(&path, "defaults01");
    let mut vb = Vb::start_quiet(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    enter_loader(&mut vb);
    let log = esptool_ok(&vb, &["write_flash", "0x0", image_file.to_str().unwrap()]);
    assert!(log.contains("Hash of data verified."), "{log}");
    assert!(log.contains("Hard resetting via RTS pin..."), "{log}");
    assert!(
        log.contains("WARNING: Chip was NOT reset. Setting RTS/DTR lines is not supported"),
        "{log}"
    );
    assert_eq!(&std::fs::read(&path).unwrap()[..image.len()], &image[..]);
    assert_eq!(
        vb.control("dtr 0"),
        "ok stub\n",
        "no reset reached the board"
    );
    assert_eq!(vb.control("reset"), "ok reset\n");
    boots_provisioned(&mut vb, "defaults01");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&image_file).unwrap();
}

/// A client of the board's RFC 2217 port that speaks the protocol by hand, to send what
/// pyserial never would.
struct Rfc {
    s: std::net::TcpStream,
    raw: Vec<u8>,
}

/// What the board has sent on its RFC 2217 port so far, the Telnet undone.
#[derive(Debug, Default)]
struct Heard {
    data: Vec<u8>,
    /// Each subnegotiation, IAC SB and IAC SE left off: `[44, code, value...]`.
    subs: Vec<Vec<u8>>,
    /// Each DO, DONT, WILL or WONT, with its option.
    verbs: Vec<[u8; 2]>,
}

fn hear(raw: &[u8]) -> Heard {
    use virtual_board::rfc2217::{DO, DONT, IAC, SB, SE, WILL, WONT};
    let mut h = Heard::default();
    let mut sub: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < raw.len() {
        let (b, next) = (raw[i], raw.get(i + 1).copied());
        let byte = match (b, next) {
            (IAC, None) => break,
            (IAC, Some(IAC)) => 0xff,
            (IAC, Some(SB)) => {
                sub = Some(Vec::new());
                i += 2;
                continue;
            }
            (IAC, Some(SE)) => {
                h.subs.push(sub.take().unwrap_or_default());
                i += 2;
                continue;
            }
            (IAC, Some(v @ (WILL | WONT | DO | DONT))) => {
                let Some(&opt) = raw.get(i + 2) else { break };
                h.verbs.push([v, opt]);
                i += 3;
                continue;
            }
            (IAC, Some(_)) => {
                i += 2;
                continue;
            }
            (b, _) => b,
        };
        i += if b == IAC { 2 } else { 1 };
        match sub.as_mut() {
            Some(s) => s.push(byte),
            None => h.data.push(byte),
        }
    }
    h
}

impl Rfc {
    fn connect(vb: &Vb) -> Rfc {
        let s = std::net::TcpStream::connect(vb.ready.rfc2217).unwrap();
        s.set_nodelay(true).unwrap();
        Rfc { s, raw: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Reads until what was heard satisfies `done`, and returns it.
    fn hear_until(&mut self, what: &str, done: impl Fn(&Heard) -> bool) -> Heard {
        let ok = support::read_until(&mut self.s, &mut self.raw, |raw| done(&hear(raw)));
        let heard = hear(&self.raw);
        assert!(ok, "never heard {what}: {heard:?}");
        heard
    }

    /// Agrees COM-PORT-OPTION both ways, as pyserial's client asks.
    fn agree(&mut self) {
        use virtual_board::rfc2217::{COM_PORT_OPTION as COM, DO, IAC, WILL};
        self.send(&[IAC, WILL, COM, IAC, DO, COM]);
        self.hear_until("COM-PORT-OPTION agreed", |h| {
            h.verbs.contains(&[DO, COM]) && h.verbs.contains(&[WILL, COM])
        });
    }

    /// Sends a COM-PORT-OPTION command and returns the value of the board's answer to it.
    fn ask(&mut self, command: u8, value: &[u8]) -> Vec<u8> {
        let code = command + virtual_board::rfc2217::SERVER;
        let answers = |h: &Heard| h.subs.iter().filter(|s| s.get(1) == Some(&code)).count();
        let before = answers(&hear(&self.raw));
        self.send(&com_port_option(command, value));
        let heard = self.hear_until(&format!("an answer {code}"), |h| answers(h) > before);
        let answer = heard
            .subs
            .iter()
            .rfind(|s| s.get(1) == Some(&code))
            .unwrap();
        answer[2..].to_vec()
    }

    /// Waits for a line of UART output that contains `needle`.
    fn uart_line_with(&mut self, needle: &str) -> String {
        let has = |h: &Heard| {
            String::from_utf8_lossy(&h.data)
                .lines()
                .any(|l| l.contains(needle))
        };
        let heard = self.hear_until(needle, |h| has(h) && h.data.ends_with(b"\n"));
        let text = String::from_utf8_lossy(&heard.data).into_owned();
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap()
            .to_owned()
    }
}

/// IAC is doubled on the RFC 2217 line both ways; the client's SET-CONTROL moves the same DTR
/// and RTS as the control socket, and is answered with the line's state: an RTS pulse resets
/// the board, and DTR on with RTS off in one segment (where pyserial would wait in between)
/// enters the ROM loader.
#[rstest]
fn rfc2217_carries_every_byte_and_the_reset_lines() {
    use virtual_board::rfc2217::{
        DTR_OFF, DTR_ON, DTR_REQUEST, IAC, RTS_OFF, RTS_ON, SET_BAUDRATE, SET_CONTROL,
    };
    let mut vb = Vb::start(&[]);
    let mut c = Rfc::connect(&vb);
    c.agree();
    // The client's 0xFF, doubled, reaches the chip once: the relay passes it to a TCP client.
    let mut tcp = vb.connect();
    vb.wait_counter("clients", 1);
    c.send(&[b'a', IAC, IAC, b'b', b'\n']);
    let mut buf = Vec::new();
    assert_eq!(client_line(&mut tcp, &mut buf), [b'a', 0xff, b'b']);
    // The chip's 0xFF reaches the client doubled, and the pseudo-terminal as it is. (The relay
    // reads its TCP clients as telnet: IAC IAC is its 0xFF too.)
    tcp.write_all(&[b'c', 0xff, 0xff, b'd', b'\n']).unwrap();
    c.hear_until("the chip's 0xFF", |h| {
        h.data.ends_with(&[b'c', 0xff, b'd', b'\n'])
    });
    let doubled = [b'c', IAC, IAC, b'd', b'\n'];
    assert!(c.raw.windows(5).any(|w| w == doubled), "{:?}", c.raw);
    assert_eq!(vb.uart_line(), [b'c', 0xff, b'd']);

    // SET-BAUDRATE sets the adapter's rate, the host's end of the line: at the ROM's 74880 the
    // client reads the ROM, and the relay's 115200 no longer.
    assert_eq!(c.ask(SET_BAUDRATE, &[0; 4]), 115_200u32.to_be_bytes());
    assert_eq!(
        c.ask(SET_BAUDRATE, &74_880u32.to_be_bytes()),
        74_880u32.to_be_bytes()
    );
    assert_eq!(vb.control("baud"), "ok 115200 host=74880\n");
    // An RTS pulse is the NodeMCU's reset: EN low, then high with GPIO0 high.
    assert_eq!(c.ask(SET_CONTROL, &[RTS_ON]), [RTS_ON]);
    assert_eq!(vb.control("dtr 0"), "ok held\n");
    client_eof(&mut tcp, &mut buf);
    assert_eq!(c.ask(SET_CONTROL, &[RTS_OFF]), [RTS_OFF]);
    let rom = c.uart_line_with(" ets Jan  8 2013,rst cause:2");
    assert!(rom.contains("boot mode:(3,6)"), "{rom}");
    assert_eq!(
        c.ask(SET_BAUDRATE, &115_200u32.to_be_bytes()),
        115_200u32.to_be_bytes()
    );
    c.uart_line_with("relay ready ");
    assert_eq!(vb.control("baud"), "ok 115200 host=115200\n");

    // Held, then both changes at once: EN rises with GPIO0 already low.
    c.ask(SET_BAUDRATE, &74_880u32.to_be_bytes());
    assert_eq!(c.ask(SET_CONTROL, &[RTS_ON]), [RTS_ON]);
    c.send(
        &[
            com_port_option(SET_CONTROL, &[DTR_ON]),
            com_port_option(SET_CONTROL, &[RTS_OFF]),
        ]
        .concat(),
    );
    let rom = c.uart_line_with("boot mode:(1,");
    assert!(rom.contains("rst cause:2, boot mode:(1,7)"), "{rom}");
    // One set of lines: the control socket moves what the client set, and the client sees it.
    assert_eq!(vb.control("dtr 0"), "ok loader\n");
    assert_eq!(c.ask(SET_CONTROL, &[DTR_REQUEST]), [DTR_OFF]);
}

/// A second client is told the line is taken, and closed; the first carries on, and once it
/// has gone the next client is served.
#[rstest]
fn a_second_rfc2217_client_is_refused_while_one_holds_the_line() {
    use virtual_board::rfc2217::{BUSY, RTS_REQUEST, SET_CONTROL};
    let vb = Vb::start(&[]);
    let mut first = Rfc::connect(&vb);
    first.agree();
    let mut second = std::net::TcpStream::connect(vb.ready.rfc2217).unwrap();
    let mut refused = Vec::new();
    assert!(support::read_to_eof(&mut second, &mut refused));
    assert_eq!(String::from_utf8_lossy(&refused), BUSY);
    assert_eq!(first.ask(SET_CONTROL, &[RTS_REQUEST]).len(), 1);
    // The board closes its end once it has let the first client go.
    first.s.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(support::read_to_eof(&mut first.s, &mut first.raw));
    let mut next = Rfc::connect(&vb);
    next.agree();
    assert_eq!(next.ask(SET_CONTROL, &[RTS_REQUEST]).len(), 1);
}

/// A client that sends a line and closes at once, as `nc` does, still gets it onto the wire:
/// the board lets the client go only once its bytes have crossed.
#[rstest]
fn a_line_sent_just_before_an_rfc2217_client_closes_still_arrives() {
    let vb = Vb::start(&[]);
    let mut tcp = vb.connect();
    vb.wait_counter("clients", 1);
    let mut c = Rfc::connect(&vb);
    c.send(&b"last words\n".repeat(8));
    drop(c);
    let mut buf = Vec::new();
    for _ in 0..8 {
        assert_eq!(client_line(&mut tcp, &mut buf), b"last words");
    }
}

/// Subnegotiations cut short, never ended or too long are dropped; a client that floods the
/// board with negotiation and reads none of the answers is not read either, once the answers
/// waiting for it reach their bound (the board logs when). Nothing of it is held: the board's
/// peak memory barely moves, and every request is answered once the client reads.
#[rstest]
fn malformed_and_flooding_rfc2217_clients_are_held_in_bounded_memory() {
    use virtual_board::rfc2217::{
        COM_PORT_OPTION as COM, DO, IAC, RTS_OFF, RTS_REQUEST, SB, SE, SET_CONTROL, SUB_MAX, WONT,
    };
    let mut vb = Vb::start_logged(&["-v"]);
    // The UART says nothing more once the banner is out: all the client hears are answers.
    vb.uart_line_starting("relay ready ");
    let before = peak_rss(vb.ready.pid);
    let grown = || peak_rss(vb.ready.pid).saturating_sub(before);
    let mut c = Rfc::connect(&vb);
    c.agree();
    c.s.set_write_timeout(Some(CEILING)).unwrap();

    // Cut short by a negotiation, which is answered; truncated; longer than the bound.
    c.send(&[IAC, SB, COM, SET_CONTROL, IAC, DO, 99]);
    c.hear_until("WONT 99", |h| h.verbs.contains(&[WONT, 99]));
    c.send(&com_port_option(SET_CONTROL, &[]));
    let mut long = vec![IAC, SB, COM, SET_CONTROL, RTS_OFF];
    long.extend(vec![0; 4 * SUB_MAX]);
    long.extend([IAC, SE]);
    c.send(&long);
    // 64 MiB in one subnegotiation that never ends: taken and dropped as it comes.
    c.send(&[IAC, SB, COM]);
    let chunk = vec![b'z'; 1 << 20];
    for _ in 0..64 {
        c.send(&chunk);
    }
    c.send(&[IAC, SE]);
    assert_eq!(c.ask(SET_CONTROL, &[RTS_REQUEST]), [RTS_OFF]);
    assert!(grown() < 8 << 20, "the board grew by {} KiB", grown() >> 10);

    // 48 MiB of requests, far more than the sockets between client and board can hold,
    // sent while nothing is read.
    const REQUESTS: usize = 16 << 20;
    let mut writer = c.s.try_clone().unwrap();
    let flood = std::thread::spawn(move || {
        let requests = [IAC, DO, 99].repeat(1 << 16);
        for _ in 0..REQUESTS >> 16 {
            writer.write_all(&requests).unwrap();
        }
    });
    vb.log_line("reads none of its answers: its requests wait until it does");
    assert!(grown() < 8 << 20, "the board grew by {} KiB", grown() >> 10);

    // Read, and the rest goes: one answer to each request, and no more.
    c.s.set_read_timeout(Some(CEILING)).unwrap();
    let mut answers = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    while answers < 3 * REQUESTS {
        let n = std::io::Read::read(&mut c.s, &mut chunk).unwrap();
        assert!(n > 0, "the board closed after {answers} answer bytes");
        for (i, &b) in chunk[..n].iter().enumerate() {
            assert_eq!(
                b,
                [IAC, WONT, 99][(answers + i) % 3],
                "answer byte {}",
                answers + i
            );
        }
        answers += n;
    }
    flood.join().unwrap();
    assert_eq!(answers, 3 * REQUESTS);
    assert!(grown() < 8 << 20, "the board grew by {} KiB", grown() >> 10);
    c.raw.clear();
    assert_eq!(c.ask(SET_CONTROL, &[RTS_REQUEST]), [RTS_OFF]);
}

/// rfc2217://ADDRESS for esptool and pyserial: no options.
fn rfc2217_url(vb: &Vb) -> String {
    format!("rfc2217://{}", vb.ready.rfc2217)
}

/// Runs esptool against the board's RFC 2217 port, with no options in the URL and none of
/// esptool's own options but `args`.
fn esptool_rfc2217(vb: &Vb, args: &[&str]) -> std::process::Output {
    let mut esptool = std::process::Command::new(esptool_path());
    esptool
        .args(["--chip", "esp8266", "--port", &rfc2217_url(vb)])
        .args(args);
    support::output_within(esptool, TOOL_CEILING)
}

/// A ceiling for one esptool or pyserial run over RFC 2217, which pyserial's waits for
/// answers make slow: a flash takes about 15 s.
const TOOL_CEILING: Duration = Duration::from_secs(180);

/// pyserial, as esptool's venv installs it, runs `script` with the port's URL as argv[1].
fn pyserial(vb: &Vb, script: &str) -> String {
    let mut python = std::process::Command::new(esptool_path().with_file_name("python"));
    python.args(["-c", script, &rfc2217_url(vb)]);
    let out = support::output_within(python, TOOL_CEILING);
    let text = printed(&out);
    assert!(out.status.success(), "pyserial script failed:\n{text}");
    text
}

/// esptool writes the flash over rfc2217:// with no URL options: pyserial waits for an answer
/// to every SET-CONTROL (serial/rfc2217.py:878-888), and the board gives one, so
/// `?ign_set_control` is not needed. The board is put in its loader first (`--before
/// no_reset`): over RFC 2217 esptool's reset cannot do it (the next test). Its `--after
/// hard_reset` pulses RTS (esptool/reset.py:155-165) while DTR is asserted, as pyserial asserts
/// both on open (serial/serialutil.py:216-217, serial/rfc2217.py:489-492), and on the NodeMCU's
/// circuit that moves nothing: the board stays in the stub. A pyserial client that opens the port with DTR and
/// RTS off then pulses RTS, which resets the board, and reads the banner of what was written
/// over the same connection.
#[rstest]
fn esptool_writes_over_rfc2217_and_a_pyserial_rts_pulse_boots_it() {
    let path = flash_path("rfc2217");
    let (image_file, image) = image_file(&path, "rfc2217w1");
    let mut vb = provisioned_board(&path, "before01");
    enter_loader(&mut vb);
    let out = esptool_rfc2217(
        &vb,
        &[
            "--before",
            "no_reset",
            "write_flash",
            "0x0",
            image_file.to_str().unwrap(),
        ],
    );
    let log = printed(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Stub running..."), "{log}");
    assert!(
        log.contains(&format!("Wrote {} bytes (", image.len())),
        "compressed: {log}"
    );
    assert!(log.contains("Hash of data verified."), "{log}");
    assert!(log.contains("Hard resetting via RTS pin..."), "{log}");
    assert_eq!(&std::fs::read(&path).unwrap()[..image.len()], &image[..]);
    // DTR is still asserted: setting it again changes nothing, and names the chip's state.
    assert_eq!(
        vb.control("dtr 1"),
        "ok stub\n",
        "RTS moved with DTR asserted: no reset"
    );

    let printed = pyserial(
        &vb,
        r#"
import sys, serial
port = serial.serial_for_url(sys.argv[1], 74880, do_not_open=True, timeout=20)
port.dtr = False  # GPIO0 high: the ROM boots the flash
port.rts = False
port.open()
port.rts = True   # EN low
port.rts = False  # EN high
while True:
    line = port.readline()
    sys.stdout.write(line.decode("latin-1"))
    if not line:
        break
    if b"boot mode:" in line:
        port.baudrate = 115200  # the ROM's text read, on to the relay's rate
    if b"relay ready " in line:  # after what was still at the old rate: garbage
        break
"#,
    );
    assert!(
        printed.contains("rst cause:2, boot mode:(3,6)"),
        "{printed}"
    );
    let banner = printed.lines().find(|l| l.contains("relay ready "));
    assert!(
        banner.is_some_and(|b| b.contains(" build=rfc2217w1 ")),
        "{printed}"
    );
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=rfc2217w1 "),
        "the pseudo-terminal has the banner too"
    );
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&image_file).unwrap();
}

/// esptool's default reset over RFC 2217 cannot enter the ROM loader of a NodeMCU. Over an
/// rfc2217:// port esptool uses ClassicReset (esptool/loader.py:684-695), which asserts DTR,
/// then releases RTS (esptool/reset.py:101-102); pyserial waits for the answer to each
/// SET-CONTROL, polling every 50 ms (serial/rfc2217.py:350-362, 878-888), so both lines stay
/// asserted for at least 50 ms with EN high and GPIO0 high, and the ROM samples GPIO0 sooner
/// (25 ms here, about a millisecond on the board) and boots the flash. A real NodeMCU behind
/// any RFC 2217 server that applies the lines as they come does the same
/// (espressif/esptool#383); esptool's esp_rfc2217_server replays the reset on the server's
/// side for this reason. One connect attempt shows it; esptool's default seven repeat it.
#[rstest]
fn esptool_default_reset_over_rfc2217_boots_the_flash_not_the_loader() {
    let path = flash_path("rfc2217-reset");
    let mut vb = provisioned_board(&path, "before01");
    let out = esptool_rfc2217(&vb, &["--connect-attempts", "1", "read_mac"]);
    let log = printed(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("Failed to connect to ESP8266"), "{log}");
    // The relay boots: GPIO0 was high when the ROM looked.
    assert_eq!(vb.uart_line_starting("relay ready "), vb.banner);
    assert_eq!(vb.control("dtr 0"), "ok running\n");
    drop(vb);
    std::fs::remove_file(&path).unwrap();
}

/// A faster rate over RFC 2217: esptool's stub takes CHANGE_BAUDRATE, then pyserial's
/// SET-BAUDRATE moves the adapter's end to match. The read comes back whole while
/// nobody reads the pseudo-terminal: while a client holds the line the wire waits for it, and
/// the pseudo-terminal, a copy, loses what it cannot hold (a few KiB).
#[rstest]
fn esptool_reads_the_flash_over_rfc2217_at_a_faster_rate_with_the_pty_unread() {
    let path = flash_path("rfc2217-read");
    let mut vb = provisioned_board(&path, "before01");
    enter_loader(&mut vb);
    let read_file = path.with_extension("read");
    let out = esptool_rfc2217(
        &vb,
        &[
            "--before",
            "no_reset",
            "--after",
            "no_reset_stub",
            "--baud",
            "921600",
            "read_flash",
            "0x0",
            "0x40000",
            read_file.to_str().unwrap(),
        ],
    );
    let log = printed(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Changing baud rate to 921600"), "{log}");
    // The stub keeps its rate; with the client gone, the host's end is the pseudo-terminal's.
    assert_eq!(vb.control("baud"), "ok 921600 host=115200\n");
    let flash = std::fs::read(&path).unwrap();
    assert_eq!(std::fs::read(&read_file).unwrap(), &flash[..0x40000]);
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&read_file).unwrap();
}

/// One ROM-loader request, SLIP-framed, as a flasher sends it.
fn rom_request(cmd: u8, data: &[u8], checksum: u32) -> Vec<u8> {
    let mut f = vec![0x00, cmd];
    f.extend((data.len() as u16).to_le_bytes());
    f.extend(checksum.to_le_bytes());
    f.extend_from_slice(data);
    virtual_board::rom::slip(&f)
}

/// A power cut in the middle of a flash leaves the flash half-written; the ROM must refuse to
/// boot it, and the next complete flash must work.
#[rstest]
fn a_power_cut_mid_flash_leaves_a_board_that_boots_nothing_until_reflashed() {
    use virtual_board::rom::{FLASH_BEGIN, FLASH_DATA};
    let path = flash_path("powercut");
    // Segments spanning three 0x400 blocks, the build id in the last one.
    let code = vec![0x55u8; 2500];
    let rodata = nodemcu::image::build_id_record("cut0001");
    let image = nodemcu::image::build(
        0x4010_0004,
        4,
        &[(0x4010_0000, &code), (0x3ffe_8000, &rodata)],
    );
    assert!(image.len() > 2 * 0x400);
    let mut vb = Vb::start_quiet(&["--flash-file", path.to_str().unwrap(), "--wifi-ssid", "lab"]);
    enter_loader(&mut vb);
    let words = |w: &[u32]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    vb.write_uart(&rom_request(FLASH_BEGIN, &words(&[0x1000, 3, 0x400, 0]), 0));
    let first = &image[..0x400];
    let sum = first.iter().fold(0xefu8, |s, b| s ^ b);
    vb.write_uart(&rom_request(
        FLASH_DATA,
        &[words(&[0x400, 0, 0, 0]), first.to_vec()].concat(),
        sum.into(),
    ));
    // Both replies (status 0) must be back before the power goes: the block is in flash.
    let mut replies = Vec::new();
    assert!(support::read_until(&mut vb.serial, &mut replies, |b| b
        .iter()
        .filter(|&&x| x == 0xc0)
        .count()
        >= 4));
    assert_eq!(vb.control("power 0"), "ok off\n");
    assert_eq!(
        vb.control("reset"),
        "ok reset\n",
        "a reset without power does nothing"
    );
    let rom = vb.rom_line(
        |vb| {
            assert_eq!(
                vb.control("power 1"),
                "ok halted\n",
                "half an image does not boot"
            )
        },
        " ets ",
    );
    assert!(rom.contains("rst cause:1"), "a power-on reset: {rom}");
    assert_eq!(
        &std::fs::read(&path).unwrap()[..0x400],
        first,
        "the first block survived the cut"
    );

    // The next flash, complete this time, boots.
    let image_file = path.with_extension("img");
    std::fs::write(&image_file, &image).unwrap();
    enter_loader(&mut vb);
    let out = esptool_write(&vb, &image_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(vb.control("reset"), "ok reset\n");
    assert!(vb.provision("lab", "").starts_with("relay provision ok "));
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=cut0001 ")
    );
    drop(vb);
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&image_file).unwrap();
}

/// A board with a relay image but no credentials waits for them on the UART, refuses bad ones
/// with a reason, keeps good ones in its flash's EEPROM sector, and starts the relay.
#[rstest]
fn an_unprovisioned_board_waits_for_credentials_and_keeps_them_in_flash() {
    use relay_core::provision::Wifi;
    let path = flash_path("provision");
    let image = relay_image("prov0001");
    let mut flash = vec![0xffu8; 4 << 20];
    flash[..image.len()].copy_from_slice(&image);
    std::fs::write(&path, &flash).unwrap();
    let mut vb = Vb::start_quiet(&[
        "--flash-file",
        path.to_str().unwrap(),
        "--wifi-ssid",
        "lab net",
        "--wifi-password",
        "correct horse",
    ]);
    let boot = vb.uart_line_starting("relay boot ");
    assert_eq!(
        boot,
        "relay boot version=0.1.0 build=prov0001 wifi=none listen_ms=0"
    );
    vb.write_uart(b"relay provision ssid=6c6162 psk=2a\r\n");
    let refused = vb.uart_line_starting("relay provision ");
    assert!(
        refused.starts_with("relay provision error the password must be"),
        "{refused}"
    );
    let wifi = Wifi::new("lab net", "correct horse").unwrap();
    vb.write_uart(wifi.request().as_bytes());
    assert_eq!(
        vb.uart_line_starting("relay provision "),
        format!("relay provision ok wifi={}", wifi.digest())
    );
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=prov0001 ")
    );
    let flash = std::fs::read(&path).unwrap();
    assert_eq!(nodemcu::credentials::stored(&flash), Some(wifi.clone()));

    // Provisioned now: the next boot names the credentials and starts without being asked.
    assert_eq!(vb.control("reset"), "ok reset\n");
    assert!(
        vb.uart_line_starting("relay boot ")
            .contains(&format!(" wifi={} listen_ms=250", wifi.digest()))
    );
    assert!(
        vb.uart_line_starting("relay ready ")
            .contains(" build=prov0001 ")
    );
    drop(vb);
    std::fs::remove_file(&path).unwrap();
}
