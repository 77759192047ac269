//! The RFC 2217 port against Debian's ser2net in RFC 2217 mode, as a labgrid exporter runs it:
//! data both ways byte for byte (IAC bytes included), the rate set on the far side, and the
//! modem lines a bridge on a pseudo-terminal cannot set.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use relay_hil::rfc2217::{Rfc2217Port, Url};
use serialport::{SerialPort, TTYPort};

mod common;

/// ser2net serving one end of a pty pair over RFC 2217; the test holds the other end.
struct Bridge {
    child: Child,
    port: u16,
    device: TTYPort,
    dir: std::path::PathBuf,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bridge() -> Bridge {
    let (device, slave) = TTYPort::pair().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = common::temp_dir("ser2net-rfc2217");
    let config = dir.join("ser2net.yaml");
    std::fs::write(
        &config,
        format!(
            "%YAML 1.1\n---\nconnection: &board\n  accepter: telnet(rfc2217,mode=server),tcp,\
             127.0.0.1,{port}\n  connector: serialdev,{},115200n81,local\n  options:\n    \
             mdns: false\n",
            slave.name().unwrap()
        ),
    )
    .unwrap();
    let child = Command::new("ser2net")
        .args(["-n", "-c"])
        .arg(&config)
        .arg("-P")
        .arg(dir.join("ser2net.pid"))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ser2net is installed (./hil setup)");
    // ser2net announces nothing: its port answering is the only sign that it listens.
    let until = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "ser2net never listened on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(slave);
    Bridge {
        child,
        port,
        device,
        dir,
    }
}

fn read_exactly(r: &mut impl Read, n: usize) -> Vec<u8> {
    let mut got = vec![0u8; n];
    let mut at = 0;
    let until = Instant::now() + Duration::from_secs(10);
    while at < n {
        assert!(Instant::now() < until, "only {at} of {n} bytes arrived");
        match r.read(&mut got[at..]) {
            Ok(k) => at += k,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    got
}

#[test]
fn every_byte_crosses_both_ways_and_the_rate_is_set_on_the_far_side() {
    let mut b = bridge();
    let url = Url::parse(&format!("rfc2217://127.0.0.1:{}?ign_set_control", b.port)).unwrap();
    let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
    b.device.set_timeout(Duration::from_millis(100)).unwrap();
    // Every byte value, 0xFF (telnet's IAC) among them, each way.
    let all: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    port.write_all(&all).unwrap();
    assert_eq!(read_exactly(&mut b.device, all.len()), all);
    b.device.write_all(&all).unwrap();
    assert_eq!(read_exactly(&mut port, all.len()), all);
    // ser2net sets the pty to the rate asked for, and says so.
    port.set_baud_rate(921_600).unwrap();
    assert_eq!(port.baud_rate().unwrap(), 921_600);
    assert_eq!(b.device.baud_rate().unwrap(), 921_600);
    // A clone shares the connection.
    let mut clone = port.try_clone().unwrap();
    clone.write_all(b"from the clone").unwrap();
    assert_eq!(read_exactly(&mut b.device, 14), b"from the clone");
    // Modem lines cannot be set on a pty: with ign_set_control the request goes out anyway.
    port.write_data_terminal_ready(true).unwrap();
    // ser2net answers an input purge, and what the device says next arrives. What it said just
    // before may follow the answer: ser2net 4.3.11 sent it after the answer in 7 of 20 tries.
    b.device.write_all(b"before").unwrap();
    port.clear(serialport::ClearBuffer::Input).unwrap();
    b.device.write_all(b"after").unwrap();
    let mut got = read_exactly(&mut port, 5);
    if got != b"after" {
        got.extend(read_exactly(&mut port, 6));
        assert_eq!(got, b"beforeafter");
    }
}

#[test]
fn a_modem_line_the_bridge_never_confirms_names_the_option() {
    let b = bridge();
    let url = Url::parse(&format!("rfc2217://127.0.0.1:{}?timeout=0.3", b.port)).unwrap();
    let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
    let e = port.write_request_to_send(true).unwrap_err().to_string();
    assert!(
        e.contains("did not confirm RTS on") && e.contains("?ign_set_control"),
        "{e}"
    );
}

#[test]
fn a_port_that_does_not_speak_rfc2217_is_named() {
    // A raw TCP listener that never answers the COM-PORT-OPTION offer.
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = Url::parse(&format!(
        "rfc2217://{}?timeout=0.3",
        raw.local_addr().unwrap()
    ))
    .unwrap();
    let e = Rfc2217Port::open(&url, 115_200).err().unwrap().to_string();
    assert!(e.contains("COM-PORT-OPTION"), "{e}");
}

/// A virtual board started by hand on the `lab` network, with a fresh flash file, and its
/// ready line: a board in a lab, whose serial line is its RFC 2217 port.
fn remote_board(dir: &std::path::Path) -> (Child, serde_json::Value) {
    common::lab_board(&["virtual-board"], &dir.join("flash"))
}

/// `--port rfc2217://…` flashes the board through its loader and runs the whole suite, its
/// resets sent as DTR/RTS over the network: as for a NodeMCU behind ser2net in a lab.
#[test]
fn the_suite_flashes_and_runs_over_rfc2217() {
    let dir = common::temp_dir("remote");
    let (mut board, ready) = remote_board(&dir);
    let url = format!("rfc2217://{}", ready["rfc2217"].as_str().unwrap());
    let image = common::relay_image(&dir, "remote01", 0);
    let out = common::on_lab_network(&mut common::command(&[
        "run",
        "--port",
        &url,
        "--firmware",
        image.to_str().unwrap(),
    ]))
    .arg("--artifacts-dir")
    .arg(dir.join("out"))
    .output()
    .unwrap();
    let _ = board.kill();
    let _ = board.wait();
    let text = common::printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("serial {url}")) && text.contains("build remote01"),
        "{text}"
    );
    let skipped_or_passed = relay_hil::scenario::ALL.len() - 1;
    assert!(
        text.contains(&format!("{skipped_or_passed} passed, 0 failed")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A malformed URL, and a port where nothing speaks RFC 2217: one line each, exit 2.
#[test]
fn a_bad_or_silent_remote_port_is_named() {
    let out = common::relay_hil(&["run", "--port", "rfc2217://lab-3"]);
    assert_eq!(out.status.code(), Some(2));
    let text = common::printed(&out);
    assert!(
        text.starts_with("relay-hil: `rfc2217://lab-3` is not an RFC 2217 port: no :PORT"),
        "{text}"
    );
    let raw = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("rfc2217://{}?timeout=0.5", raw.local_addr().unwrap());
    let out = common::relay_hil(&["run", "--port", &url]);
    assert_eq!(out.status.code(), Some(2));
    let text = common::printed(&out);
    assert!(
        text.contains("COM-PORT-OPTION") && text.contains("hint: is a bridge serving it"),
        "{text}"
    );
}

/// esptool, installed by `./hil setup` (or named by ESPTOOL).
fn esptool() -> std::path::PathBuf {
    let path = std::env::var_os("ESPTOOL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/esptool-4.8.1/bin/esptool.py")
        });
    assert!(
        path.exists(),
        "esptool is not at {}: run ./hil setup (or set ESPTOOL)",
        path.display()
    );
    path
}

/// `relay-hil serve` exporting a virtual board on the `lab` network with a fresh flash file,
/// and the URL it serves at.
fn served_board(dir: &std::path::Path) -> (Child, String) {
    let (serve, serving) =
        common::lab_board(&["serve", "--listen", "127.0.0.1:0"], &dir.join("flash"));
    assert_eq!(serving["board"], "virtual", "{serving}");
    (serve, serving["url"].as_str().unwrap().to_owned())
}

/// esptool with all its defaults (its reset into the loader before, its hard reset after)
/// flashes a board behind `relay-hil serve`, which performs both resets next to the board;
/// the harness then runs the new build there over the same URL.
#[test]
fn esptool_with_its_defaults_flashes_a_served_board() {
    let dir = common::temp_dir("served");
    let (mut serve, url) = served_board(&dir);
    let image = common::relay_image(&dir, "served01", 0);
    let out = Command::new(esptool())
        .args(["--chip", "esp8266", "--port", &url, "write_flash", "0x0"])
        .arg(&image)
        .output()
        .unwrap();
    let log = common::printed(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Hash of data verified.") && log.contains("Hard resetting via RTS pin"),
        "{log}"
    );
    let out = common::on_lab_network(&mut common::command(&[
        "run", "--port", &url, "--only", "echo",
    ]))
    .arg("--artifacts-dir")
    .arg(dir.join("out"))
    .output()
    .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let text = common::printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("build served01") && text.contains("1 passed, 0 failed"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `serve` stopped with SIGTERM (as a service manager stops it) the moment its JSON line says
/// it is up ends cleanly: the handler is in place before the line is printed.
#[test]
fn a_bridge_stopped_as_soon_as_it_is_up_ends_cleanly() {
    let dir = common::temp_dir("term");
    let (mut serve, _url) = served_board(&dir);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve ended with {status}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bridge serves one client at a time (the virtual board's port refuses a second one): a port
/// closed and opened again at once must find the line free, as each scenario test does.
#[test]
fn a_port_closed_and_opened_again_at_once_finds_the_line_free() {
    let dir = common::temp_dir("reopen");
    let (mut board, ready) = remote_board(&dir);
    let url = Url::parse(&format!("rfc2217://{}", ready["rfc2217"].as_str().unwrap())).unwrap();
    for i in 0..20 {
        let port = Rfc2217Port::open(&url, 115_200).unwrap_or_else(|e| panic!("open {i}: {e}"));
        let clone = port.try_clone().unwrap();
        drop(port);
        drop(clone);
    }
    let _ = board.kill();
    let _ = board.wait();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bridge that writes a long stream before it reads again (as `serve` and many bridges do
/// while the board talks): the port keeps reading the bridge's data while its own writes wait,
/// so both streams, each larger than every socket buffer on the way, get through.
#[test]
fn both_directions_flow_while_a_bridge_writes_before_it_reads() {
    use rfc2217::{PortSettings, Server};
    // More than the sockets on the way take in before their reader reads (a loopback socket's
    // buffers grow with use, toward net.ipv4.tcp_rmem's and tcp_wmem's maxima): a port that
    // stops reading while its write waits stalls here, and fails at the ceiling.
    const LEN: usize = 16 << 20;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (negotiated, wait_negotiated) = std::sync::mpsc::channel();
    let bridge = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut server = Server::new(PortSettings::default());
        tcp.write_all(&server.take_output()).unwrap();
        // Negotiate until the client has set the port up and gone quiet.
        tcp.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = tcp.read(&mut buf) {
            let _ = server.receive(&buf[..n]);
            tcp.write_all(&server.take_output()).unwrap();
        }
        negotiated.send(()).unwrap();
        // The whole stream out, reading nothing meanwhile.
        let stream: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        server.write_data(&stream);
        tcp.write_all(&server.take_output()).unwrap();
        // Then everything the port sent.
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = 0;
        while got < LEN {
            let n = tcp
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("after {got} of the port's bytes: {e}"));
            assert!(n > 0, "the port closed after {got} bytes");
            got += server.receive(&buf[..n]).len();
        }
        got
    });
    let url = Url::parse(&format!("rfc2217://{addr}")).unwrap();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
        port.set_timeout(Duration::from_secs(60)).unwrap();
        let mut reader = port.try_clone().unwrap();
        let reading = std::thread::spawn(move || read_exactly(&mut reader, LEN));
        wait_negotiated.recv().unwrap();
        let sent: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
        port.write_all(&sent).unwrap();
        let got = reading.join().unwrap();
        let _ = done.send((got, bridge.join().unwrap()));
    });
    // A port that stops reading while it writes never gets here: the ceiling names it.
    let (got, bridge_got) = finished
        .recv_timeout(Duration::from_secs(60))
        .expect("the streams stalled: the port stopped reading while its write waited");
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(bridge_got, LEN);
}

/// What a scripted bridge's script is given for each chunk it reads: the server, the
/// connection, the chunk's serial data, whether it asked for a purge, and the server's answers.
type Script = dyn FnMut(&mut rfc2217::Server, &mut TcpStream, &[u8], bool, Vec<u8>) -> Vec<u8>
    + Send
    + 'static;

/// A bridge made of the `rfc2217` crate's server, which answers every request itself; for each
/// chunk it reads, `script` returns what to send back, in one write. Its URL gives answers
/// `timeout` seconds.
fn scripted_bridge(timeout: f64, mut script: Box<Script>) -> Url {
    use rfc2217::{PortSettings, Server, ServerEvent};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut server = Server::new(PortSettings::default());
        tcp.write_all(&server.take_output()).unwrap();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tcp.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let data = server.receive(&buf[..n]);
            let mut purged = false;
            while let Some(event) = server.poll_event() {
                purged |= matches!(event, ServerEvent::Purge(_));
            }
            let answers = server.take_output();
            let out = script(&mut server, &mut tcp, &data, purged, answers);
            if tcp.write_all(&out).is_err() {
                return;
            }
        }
    });
    Url::parse(&format!("rfc2217://{addr}?timeout={timeout}")).unwrap()
}

/// Waits (at most 10 s) until the port has something to read.
fn wait_readable(port: &Rfc2217Port) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the port outlives this call, and with it its descriptor.
    let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)).unwrap(), 1);
}

/// An input purge is over when the bridge answers it: what the bridge sent before the answer
/// (read or not, even in the answer's own segment) is dropped, and what follows it is kept.
#[test]
fn an_input_purge_drops_what_precedes_the_bridges_answer_and_keeps_what_follows() {
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noted = answered.clone();
    let url = scripted_bridge(
        30.0,
        Box::new(move |server, _, data, purged, answers| {
            let mut said = |text: &[u8]| {
                server.write_data(text);
                server.take_output()
            };
            if data == b"go" {
                return [answers, said(b"early\n")].concat();
            }
            if purged {
                // The board spoke before the bridge purged, and again after it answered.
                let stale = said(b"stale\n");
                noted.store(true, std::sync::atomic::Ordering::SeqCst);
                return [stale, answers, said(b"fresh\n")].concat();
            }
            answers
        }),
    );
    let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
    port.write_all(b"go").unwrap();
    wait_readable(&port);
    port.clear(serialport::ClearBuffer::Input).unwrap();
    // The purge is over once clear returns: the board's next words cannot be purged.
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(read_exactly(&mut port, 6), b"fresh\n");
}

/// A bridge that never answers a purge is named, and the port reads on afterwards.
#[test]
fn a_purge_the_bridge_never_answers_is_named_and_the_port_reads_on() {
    // The port waits out the timeout here, so it is short; the port's opening gets it too.
    let url = scripted_bridge(
        2.0,
        Box::new(|server, _, data, purged, answers| {
            if purged {
                return Vec::new();
            }
            if data == b"next" {
                server.write_data(b"after\n");
                return [answers, server.take_output()].concat();
            }
            answers
        }),
    );
    let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
    let e = port
        .clear(serialport::ClearBuffer::Input)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("did not confirm the input purge within 2s"),
        "{e}"
    );
    port.write_all(b"next").unwrap();
    assert_eq!(read_exactly(&mut port, 6), b"after\n");
}

/// A purge asked for while the bridge floods a port nobody reads: what the input pump was
/// handing over when the purge was asked for is dropped with the rest, and the answer, read
/// behind the flood, ends the purge.
#[test]
fn an_input_purge_gets_through_a_flood_nobody_reads() {
    let (full, is_full) = std::sync::mpsc::channel();
    let url = scripted_bridge(
        30.0,
        Box::new(move |server, tcp, data, purged, answers| {
            if data == b"go" {
                // Until the connection's buffers are full: the port's input pump is behind.
                tcp.write_all(&answers).unwrap();
                server.write_data(&[b's'; 64 << 10]);
                let flood = server.take_output();
                tcp.set_nonblocking(true).unwrap();
                let mut sent = 0usize;
                loop {
                    match tcp.write(&flood) {
                        Ok(n) => sent += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => panic!("flood: {e}"),
                    }
                    assert!(sent < 1 << 30, "1 GiB went out and no buffer filled");
                }
                tcp.set_nonblocking(false).unwrap();
                full.send(()).unwrap();
                return Vec::new();
            }
            if purged {
                server.write_data(b"fresh\n");
                return [answers, server.take_output()].concat();
            }
            answers
        }),
    );
    let mut port = Rfc2217Port::open(&url, 115_200).unwrap();
    port.write_all(b"go").unwrap();
    is_full
        .recv_timeout(Duration::from_secs(30))
        .expect("the flood never filled the buffers");
    port.clear(serialport::ClearBuffer::Input).unwrap();
    assert_eq!(read_exactly(&mut port, 6), b"fresh\n");
}
