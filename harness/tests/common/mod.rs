//! Shared by the harness's integration tests: the CLI, with no board chosen by the environment.

// Every test binary compiles this module; not every one uses all of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BIN: &str = env!("CARGO_BIN_EXE_relay-hil");

/// `relay-hil` with `args`, every `RELAY_HIL_*` variable cleared so that only `args`
/// choose the board whatever the developer's shell has set.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RELAY_HIL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// [`command`] run to its end.
pub fn relay_hil(args: &[&str]) -> Output {
    command(args).output().expect("relay-hil runs")
}

/// The virtual board as a board selection starts it: this `relay-hil`'s `virtual-board`.
pub fn virtual_board() -> (PathBuf, Vec<String>) {
    (PathBuf::from(BIN), vec!["virtual-board".into()])
}

/// The most private memory (heap, anonymous maps, data) a [`relay_hil_capped`] run may take.
pub const MEMORY_CAP: u64 = 100 << 20;

/// [`relay_hil`] with its memory capped at [`MEMORY_CAP`] (RLIMIT_DATA: an allocation past it
/// fails, so a run that needs more cannot succeed) and its time at `ceiling`, past which it is
/// killed and the test fails.
pub fn relay_hil_capped(args: &[&str], ceiling: std::time::Duration) -> Output {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut cmd = command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Unsafe because pre_exec is: std's only hook in the child before exec, where the limit
    // must be set so that it holds from the first allocation on.
    // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let cap = libc::rlimit {
                rlim_cur: MEMORY_CAP,
                rlim_max: MEMORY_CAP,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &cap) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().expect("relay-hil runs");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(ceiling) {
        Ok(out) => out.expect("relay-hil's output"),
        Err(_) => {
            // Our child, which the waiting thread has not reaped yet.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("relay-hil {args:?} still ran after {ceiling:?}");
        }
    }
}

/// Everything a run printed, stdout then stderr.
pub fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh, empty folder, named `relay-hil-TAG-PID-N`: this process's id and a count of the
/// folders it made keep it apart from every other test's, whatever their tags.
pub fn temp_dir(tag: &str) -> PathBuf {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("relay-hil-{tag}-{}-{n}", std::process::id()));
    // Left by an earlier process that had this id.
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).unwrap();
    d
}

/// `relay-hil image --build-id ID --size SIZE`, written to `DIR/ID.bin` (0: the smallest).
#[allow(dead_code)] // every test binary compiles this module; not every one flashes
pub fn relay_image(dir: &std::path::Path, id: &str, size: usize) -> PathBuf {
    let path = dir.join(format!("{id}.bin"));
    let size = size.to_string();
    let out = relay_hil(&[
        "image",
        "--build-id",
        id,
        "--size",
        &size,
        "-o",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", printed(&out));
    path
}

/// `cmd` on the `lab` network: the WiFi a board started by it joins, or the credentials the
/// harness provisions a board with.
#[allow(dead_code)] // every test binary compiles this module; not every one needs a network
pub fn on_lab_network(cmd: &mut Command) -> &mut Command {
    cmd.env("RELAY_HIL_WIFI_SSID", "lab")
        .env("RELAY_HIL_WIFI_PASSWORD", "")
}

/// `relay-hil ARGS --flash-file FLASH` (the virtual board, or `serve` with one) on the `lab`
/// network, once it has printed its one JSON line: the process and that line.
#[allow(dead_code)] // every test binary compiles this module; not every one starts a board
pub fn lab_board(
    args: &[&str],
    flash: &std::path::Path,
) -> (std::process::Child, serde_json::Value) {
    use std::io::BufRead;
    let mut child = on_lab_network(&mut command(args))
        .arg("--flash-file")
        .arg(flash)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("relay-hil runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("its JSON line");
    let value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: `{line}`"));
    (child, value)
}
