//! The suite through a labgrid place: labgrid 26 (installed by ./hil setup under target/tools)
//! runs a coordinator and an exporter on 127.0.0.1; the exporter publishes a virtual board,
//! exported by `relay-hil serve`, as a NetworkSerialPort; `relay-hil run --labgrid PLACE`
//! acquires the place, power-cycles the board through the place's power switch, runs, and
//! releases it: at the end, on a failure and on Ctrl-C.

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
    /// Every level the power switch was set to, in order.
    power: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A power switch as labgrid's `simplerest` model drives it (`labgrid/driver/power/
/// simplerest.py`): `GET /power/0/1` sets it, `GET /power/0` reads it. It switches the
/// virtual board's power through its control socket.
fn power_switch(control: String, seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut on = "1".to_owned();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = String::new();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // The headers, up to the blank line.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let path = request.split(' ').nth(1).unwrap_or("");
            if let Some(level) = path.strip_prefix("/power/0/") {
                let mut board = std::net::TcpStream::connect(&control).unwrap();
                writeln!(board, "power {level}").unwrap();
                let mut reply = String::new();
                BufReader::new(board).read_line(&mut reply).unwrap();
                assert!(reply.starts_with("ok"), "power {level}: {reply}");
                seen.lock().unwrap().push(level.to_owned());
                on = level.to_owned();
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{on}",
                on.len()
            );
        }
    });
    port
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    fn start() -> Lab {
        use std::io::BufRead;
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
        let mut serve = common::command(&["serve", "--listen", "127.0.0.1:0", "--flash-file"])
            .arg(dir.join("flash"))
            .env("RELAY_HIL_WIFI_SSID", "lab")
            .env("RELAY_HIL_WIFI_PASSWORD", "")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        lab.children.push(serve);
        let serving: serde_json::Value = serde_json::from_str(&line).unwrap();
        let url = serving["url"].as_str().unwrap();
        let port = url.rsplit(':').next().unwrap();
        let control = serving["control"].as_str().unwrap().to_owned();
        let switch = power_switch(control, lab.power.clone());
        let config = dir.join("exporter.yaml");
        std::fs::write(
            &config,
            format!(
                "nodemcu:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {port}\n    \
                 speed: 115200\n  NetworkPowerPort:\n    model: simplerest\n    \
                 host: 'http://127.0.0.1:{switch}/power/{{index}}/{{value}}'\n    index: 0\n\
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
        cmd.env("LG_COORDINATOR", &self.coordinator)
            .env("RELAY_HIL_WIFI_SSID", "lab")
            .env("RELAY_HIL_WIFI_PASSWORD", "")
            .env_remove("LG_PLACE")
            .env("PATH", std::env::join_paths(paths).unwrap());
        cmd
    }
}

#[test]
fn the_suite_runs_through_a_labgrid_place_and_every_way_out_releases_it() {
    let lab = Lab::start();

    // Acquired, flashed (the served board's flash starts erased), run, released.
    let image = lab.dir.join("relay.bin");
    let out = common::relay_hil(&[
        "image",
        "--build-id",
        "lab00001",
        "-o",
        image.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", common::printed(&out));
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
    assert_eq!(
        *lab.power.lock().unwrap(),
        ["0", "1"],
        "the place's power switch cut and restored the power first"
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
