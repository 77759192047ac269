//! The suite through a labgrid place: labgrid 26 (installed by ./hil setup under target/tools)
//! runs a coordinator and an exporter on 127.0.0.1; the exporter publishes a virtual board,
//! exported by `relay-hil serve`, as a NetworkSerialPort; `relay-hil run --labgrid PLACE`
//! acquires the place, power-cycles the board through the place's power switch, resets it
//! through the place's reset line, runs, and releases it: at the end, on a failure and on
//! Ctrl-C.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

/// labgrid's programs, installed by `./hil setup` (or in LABGRID_BIN).
fn labgrid_bin() -> PathBuf {
    let dir = std::env::var_os("LABGRID_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tools/labgrid-26.0.1/bin")
        });
    assert!(
        dir.join("labgrid-client").exists(),
        "labgrid is not in {}: run ./hil setup (or set LABGRID_BIN)",
        dir.display()
    );
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A lab on this machine: a coordinator, `relay-hil serve` with a virtual board, and an
/// exporter publishing it (place `nodemcu`) beside a port where nothing listens (place `dead`).
struct Lab {
    coordinator: String,
    bin: PathBuf,
    dir: PathBuf,
    children: Vec<Child>,
    /// Every setting of the lab's switches (`power 0`, `reset 1`...), in order.
    power: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The lab's switches, on one HTTP server, driving the virtual board through its control
/// socket: a power switch as labgrid's `simplerest` model drives it (`GET /power/0/1` sets it,
/// `GET /power/0` reads it; `labgrid/driver/power/simplerest.py`), and a reset line as its
/// `HttpDigitalOutput` does (`PUT /reset` with `1` or `0`; `driver/httpdigitaloutput.py`),
/// wired as a relay on EN would be: RTS, with DTR released, holds the chip in reset.
fn switches(control: String, seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> u16 {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let board = move |cmd: String| {
        let mut board = std::net::TcpStream::connect(&control).unwrap();
        writeln!(board, "{cmd}").unwrap();
        let mut reply = String::new();
        BufReader::new(board).read_line(&mut reply).unwrap();
        assert!(reply.starts_with("ok"), "{cmd}: {reply}");
    };
    std::thread::spawn(move || {
        let mut power = "1".to_owned();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The headers, up to the blank line, for the body's length.
            let mut length = 0;
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                header.clear();
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            let path = request.split(' ').nth(1).unwrap_or("");
            if let Some(level) = path.strip_prefix("/power/0/") {
                board(format!("power {level}"));
                seen.lock().unwrap().push(format!("power {level}"));
                power = level.to_owned();
            } else if path == "/reset" && request.starts_with("PUT ") {
                board(format!("rts {body}"));
                seen.lock().unwrap().push(format!("reset {body}"));
            }
            let answer = if path.starts_with("/power") {
                power.as_str()
            } else {
                ""
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    port
}

impl Lab {
    fn start() -> Lab {
        let bin = labgrid_bin();
        let dir = common::temp_dir("lab");
        let coordinator = format!("127.0.0.1:{}", free_port());
        let mut lab = Lab {
            coordinator: coordinator.clone(),
            bin: bin.clone(),
            dir: dir.clone(),
            children: Vec::new(),
            power: Default::default(),
        };
        lab.children.push(
            // Its places and resources files go to its working folder.
            Command::new(bin.join("labgrid-coordinator"))
                .args(["-l", &coordinator])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let (serve, serving) =
            common::lab_board(&["serve", "--listen", "127.0.0.1:0"], &dir.join("flash"));
        lab.children.push(serve);
        let url = serving["url"].as_str().unwrap();
        let port = url.rsplit(':').next().unwrap();
        let control = serving["control"].as_str().unwrap().to_owned();
        let switch = switches(control, lab.power.clone());
        let config = dir.join("exporter.yaml");
        std::fs::write(
            &config,
            format!(
                "nodemcu:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {port}\n    \
                 speed: 115200\n  NetworkPowerPort:\n    model: simplerest\n    \
                 host: 'http://127.0.0.1:{switch}/power/{{index}}/{{value}}'\n    index: 0\n  \
                 reset:\n    cls: HttpDigitalOutput\n    url: http://127.0.0.1:{switch}/reset\n    \
                 body_asserted: '1'\n    body_deasserted: '0'\n\
                 dead:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {}\n",
                free_port()
            ),
        )
        .unwrap();
        // The exporter gives up on a coordinator that does not listen yet: wait for it (it
        // announces nothing; its port answering is the sign).
        let until = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(&coordinator).is_err() {
            assert!(Instant::now() < until, "the coordinator never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        lab.children.push(
            Command::new(bin.join("labgrid-exporter"))
                .args(["-c", &coordinator, "-n", "lab", "--hostname", "127.0.0.1"])
                .arg(&config)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("exporter.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        // Published: polled, as the coordinator announces nothing to a client that waits.
        let until = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&lab.client(&["resources"]).stdout)
            .contains("lab/dead/NetworkSerialPort")
        {
            assert!(
                Instant::now() < until,
                "the exporter never published its resources"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        for (place, group) in [("nodemcu", "nodemcu"), ("dead", "dead")] {
            lab.ok(&["-p", place, "create"]);
            lab.ok(&["-p", place, "add-match", &format!("lab/{group}/*")]);
        }
        lab
    }

    fn client(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("labgrid-client"))
            .args(args)
            .env("LG_COORDINATOR", &self.coordinator)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.client(args);
        assert!(
            out.status.success(),
            "labgrid-client {args:?}: {}",
            common::printed(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn holder(&self, place: &str) -> String {
        let shown = self.ok(&["-p", place, "show"]);
        shown
            .lines()
            .find_map(|l| l.trim().strip_prefix("acquired: "))
            .unwrap()
            .to_owned()
    }

    /// `relay-hil` with the lab's coordinator and labgrid-client on PATH.
    fn relay_hil(&self, args: &[&str]) -> Command {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.bin.clone()];
        paths.extend(std::env::split_paths(&path));
        let mut cmd = common::command(args);
        common::on_lab_network(&mut cmd)
            .env("LG_COORDINATOR", &self.coordinator)
            .env_remove("LG_PLACE")
            .env("PATH", std::env::join_paths(paths).unwrap());
        cmd
    }
}

#[test]
fn the_suite_runs_through_a_labgrid_place_and_every_way_out_releases_it() {
    let lab = Lab::start();

    // Acquired, flashed (the served board's flash starts erased), run, released.
    let image = common::relay_image(&lab.dir, "lab00001", 0);
    let out = lab
        .relay_hil(&[
            "run",
            "--labgrid",
            "nodemcu",
            "--firmware",
            image.to_str().unwrap(),
        ])
        .arg("--artifacts-dir")
        .arg(lab.dir.join("out"))
        .output()
        .unwrap();
    let text = common::printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("build lab00001"), "{text}");
    let switched = lab.power.lock().unwrap().clone();
    assert_eq!(
        switched[..2],
        ["power 0", "power 1"],
        "the place's power switch cut and restored the power first"
    );
    // Every reset after the flash (the one into the banner) went through the reset line.
    assert!(
        switched[2..].chunks(2).all(|p| p == ["reset 1", "reset 0"]) && switched.len() > 2,
        "{switched:?}"
    );
    let passed = relay_hil::scenario::ALL.len() - 1;
    assert!(
        text.contains(&format!("{passed} passed, 0 failed")),
        "{text}"
    );
    assert_eq!(lab.holder("nodemcu"), "None", "released at the end");

    // A place the caller holds (LG_PLACE) is used and stays the caller's.
    lab.ok(&["-p", "nodemcu", "acquire"]);
    let holder = lab.holder("nodemcu");
    let out = lab
        .relay_hil(&["run", "--only", "echo", "--artifacts-dir"])
        .arg(lab.dir.join("out2"))
        .env("LG_PLACE", "nodemcu")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::printed(&out));
    assert_eq!(lab.holder("nodemcu"), holder, "still the caller's");
    lab.ok(&["-p", "nodemcu", "release"]);

    // A place whose port does not answer: exit 2, released.
    let out = lab
        .relay_hil(&["run", "--labgrid", "dead"])
        .output()
        .unwrap();
    let text = common::printed(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("cannot open serial port rfc2217://127.0.0.1:"),
        "{text}"
    );
    assert_eq!(lab.holder("dead"), "None", "released on a failure");

    // Ctrl-C mid-run: released.
    let mut run = lab
        .relay_hil(&["run", "--labgrid", "nodemcu", "--only", "slow_reader"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while lab.holder("nodemcu") == "None" {
        assert!(Instant::now() < until, "the run never acquired the place");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(lab.holder("nodemcu"), "None", "released on Ctrl-C");
}

#[test]
fn a_place_that_does_not_exist_is_named() {
    let lab = Lab::start();
    let out = lab
        .relay_hil(&["run", "--labgrid", "nowhere"])
        .output()
        .unwrap();
    let text = common::printed(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.starts_with("relay-hil: labgrid place nowhere: `labgrid-client show` failed:"),
        "{text}"
    );
}
