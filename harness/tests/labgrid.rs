//! The suite through a labgrid place: labgrid 26 (installed by ./hil setup under target/tools)
//! runs a coordinator and an exporter on 127.0.0.1; the exporter publishes a virtual board,
//! exported by `relay-hil serve`, as a NetworkSerialPort; `relay-hil run --labgrid PLACE`
//! acquires the place, runs, and releases it: at the end, on a failure and on Ctrl-C.

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
        let config = dir.join("exporter.yaml");
        std::fs::write(
            &config,
            format!(
                "nodemcu:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {port}\n    \
                 speed: 115200\ndead:\n  NetworkSerialPort:\n    host: 127.0.0.1\n    port: {}\n",
                free_port()
            ),
        )
        .unwrap();
        // The exporter retries until the coordinator listens.
        lab.children.push(
            Command::new(bin.join("labgrid-exporter"))
                .args(["-c", &coordinator, "-n", "lab", "--hostname", "127.0.0.1"])
                .arg(&config)
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
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
