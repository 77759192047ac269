//! Test support: starts a real `virtual-board` process and talks to its PTY and sockets.
//!
//! Every read waits on poll(2) for data with a generous ceiling that only fires on failure.

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use virtual_board::Ready;

/// Ceiling for any single expected event. Generous: it only fires when something is broken.
pub const CEILING: Duration = Duration::from_secs(20);

pub const BIN: &str = env!("CARGO_BIN_EXE_virtual-board");

/// The host's CPUs, shared by the boards of tests running at once. A test that holds a paced
/// line to its rate takes them alone: the virtual board keeps time only while the host runs
/// it, and at 3 Mbaud the firmware's rings last milliseconds (4 KiB: 13.6 ms), which a busy
/// two-core host may keep it waiting for a CPU.
static CPUS: Cpus = Cpus {
    holders: std::sync::Mutex::new(0),
    freed: std::sync::Condvar::new(),
};

/// How many boards share the CPUs, or `ALONE`. Unlike `RwLock`, a share is never held back
/// by a test waiting to run alone, so a test may start a second board while it holds one.
struct Cpus {
    holders: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
}

const ALONE: usize = usize::MAX;

/// A test's hold on the host's CPUs, released after its board is gone.
pub struct CpuShare(bool);

impl CpuShare {
    fn take(alone: bool) -> CpuShare {
        let mut n = CPUS.holders.lock().unwrap_or_else(|e| e.into_inner());
        while *n == ALONE || (alone && *n > 0) {
            n = CPUS.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n = if alone { ALONE } else { *n + 1 };
        CpuShare(alone)
    }
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        let mut n = CPUS.holders.lock().unwrap_or_else(|e| e.into_inner());
        *n = if self.0 { 0 } else { *n - 1 };
        CPUS.freed.notify_all();
    }
}

/// Waits until `fd` is readable or the deadline passes.
fn wait_readable(fd: impl AsFd, deadline: Instant) -> bool {
    wait_for(fd, PollFlags::POLLIN, deadline)
}

fn wait_for(fd: impl AsFd, events: PollFlags, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), events)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Reads from `src` into `buf` until `done(buf)` holds; false on EOF or at the ceiling.
pub fn read_until<R: Read + AsFd>(
    src: &mut R,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = Instant::now() + CEILING;
    let mut chunk = [0u8; 4096];
    while !done(buf) {
        if !wait_readable(&*src, deadline) {
            return false;
        }
        match src.read(&mut chunk) {
            Ok(0) => return done(buf),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return done(buf),
            Err(e) => panic!("read: {e}"),
        }
    }
    true
}

/// Reads `src` to its end into `buf`; false at the ceiling.
pub fn read_to_eof<R: Read + AsFd>(src: &mut R, buf: &mut Vec<u8>) -> bool {
    let deadline = Instant::now() + CEILING;
    let mut chunk = [0u8; 4096];
    loop {
        if !wait_readable(&*src, deadline) {
            return false;
        }
        match src.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// A path in the temporary folder with nothing there, named `vb-PID-N-NAME`: this process's id
/// and a count of the paths it handed out keep it apart from every other test's, and paths
/// made from it with another extension are as much its own.
pub fn temp_path(name: &str) -> PathBuf {
    static MADE: AtomicUsize = AtomicUsize::new(0);
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("vb-{}-{n}-{name}", std::process::id()));
    // Left by an earlier process that had this id.
    let _ = std::fs::remove_file(&p);
    p
}

/// Splits the first complete line (terminated by LF) off the front of `buf`.
pub fn take_line(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let mut line: Vec<u8> = buf.drain(..=end).collect();
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Some(line)
}

pub struct Vb {
    pub child: Child,
    pub ready: Ready,
    pub serial: File,
    /// UART bytes read but not yet taken by a test.
    pub uart: Vec<u8>,
    /// The banner line the board printed at boot.
    pub banner: String,
    /// The board's log lines, when started with [`Vb::start_logged`].
    pub log: Option<std::sync::mpsc::Receiver<String>>,
    /// Dropped after the board: [`Drop`] runs before the fields do.
    _cpus: CpuShare,
}

impl Vb {
    /// Starts a board, reads its ready line, opens its serial port and reads the boot banner.
    pub fn start(args: &[&str]) -> Vb {
        let mut vb = Vb::start_quiet(args);
        vb.banner = vb.uart_line_starting("relay ready ");
        vb
    }

    /// Like [`Vb::start`], with no other test's board running: for tests that hold a paced
    /// line to its rate.
    pub fn start_alone(args: &[&str]) -> Vb {
        let cpus = CpuShare::take(true);
        let mut vb = Vb::spawn_with(args, Stdio::inherit(), cpus);
        vb.banner = vb.uart_line_starting("relay ready ");
        vb
    }

    /// Starts a board and opens its serial port, without expecting a banner.
    pub fn start_quiet(args: &[&str]) -> Vb {
        Vb::spawn(args, Stdio::inherit())
    }

    /// Like [`Vb::start_quiet`], and keeps the board's log for [`Vb::log_line`].
    pub fn start_logged(args: &[&str]) -> Vb {
        let mut vb = Vb::spawn(args, Stdio::piped());
        let err = vb.child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        vb.log = Some(rx);
        vb
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn log_line(&self, needle: &str) -> String {
        let log = self.log.as_ref().expect("started with start_logged");
        let deadline = Instant::now() + CEILING;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with `{needle}` within {CEILING:?}"),
            }
        }
    }

    fn spawn(args: &[&str], stderr: Stdio) -> Vb {
        Vb::spawn_with(args, stderr, CpuShare::take(false))
    }

    fn spawn_with(args: &[&str], stderr: Stdio, cpus: CpuShare) -> Vb {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("virtual-board starts");
        let mut out = child.stdout.take().unwrap();
        let mut buf = Vec::new();
        assert!(
            read_until(&mut out, &mut buf, |b| b.contains(&b'\n')),
            "no ready line from virtual-board {args:?}"
        );
        let line = take_line(&mut buf).unwrap();
        let ready: Ready = serde_json::from_slice(&line).expect("ready line is JSON");
        assert_eq!(ready.event, "ready");
        assert_eq!(ready.pid, child.id());
        let serial = open_serial(&ready.serial);
        Vb {
            child,
            ready,
            serial,
            uart: Vec::new(),
            banner: String::new(),
            log: None,
            _cpus: cpus,
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.ready.tcp).expect("relay port accepts");
        s.set_nodelay(true).unwrap();
        s
    }

    /// Nothing listens at the board's address while no relay runs.
    pub fn refused(&self, why: &str) {
        let e = TcpStream::connect(self.ready.tcp).expect_err(why);
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{why}: {e}"
        );
    }

    /// The next complete UART line.
    pub fn uart_line(&mut self) -> Vec<u8> {
        assert!(
            read_until(&mut self.serial, &mut self.uart, |b| b.contains(&b'\n')),
            "no line on the UART within {CEILING:?}; have {:?}",
            String::from_utf8_lossy(&self.uart)
        );
        take_line(&mut self.uart).unwrap()
    }

    /// Discards what the UART has sent so far, for a board that has gone quiet (held in reset).
    pub fn drain_uart(&mut self) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.serial.read(&mut chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        self.uart.clear();
    }

    /// Skips UART lines until one has `prefix`, and returns it from there: the ROM's text at
    /// 74880 baud reads as garbage at the relay's rate, and may run into the line.
    pub fn uart_line_starting(&mut self, prefix: &str) -> String {
        loop {
            let line = String::from_utf8_lossy(&self.uart_line()).into_owned();
            if let Some(at) = line.find(prefix) {
                return line[at..].to_owned();
            }
        }
    }

    /// Sets the serial port's rate, as a terminal program does.
    pub fn set_rate(&mut self, baud: u32) {
        virtual_board::pty::set_speed(&self.serial, baud).expect("set the port's rate");
    }

    /// Listens at the ROM's 74880 baud while `trigger` restarts the chip, returns the first line
    /// that has `needle`, and goes back to the relay's rate.
    pub fn rom_line(&mut self, trigger: impl FnOnce(&mut Vb), needle: &str) -> String {
        self.set_rate(virtual_board::board::ROM_BAUD);
        trigger(self);
        let line = self.uart_line_starting(needle);
        self.set_rate(self.ready.baud);
        line
    }

    /// Answers the firmware's boot line with credentials; returns its reply line.
    pub fn provision(&mut self, ssid: &str, psk: &str) -> String {
        let boot = self.uart_line_starting("relay boot ");
        assert!(boot.contains(" wifi=none listen_ms=0"), "{boot}");
        let wifi = relay_core::provision::Wifi::new(ssid, psk).unwrap();
        self.write_uart(wifi.request().as_bytes());
        self.uart_line_starting("relay provision ")
    }

    /// Writes all of `data`, waiting while a paced line holds the port full.
    pub fn write_uart(&mut self, mut data: &[u8]) {
        let deadline = Instant::now() + CEILING;
        while !data.is_empty() {
            match self.serial.write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => assert!(
                    wait_for(&self.serial, PollFlags::POLLOUT, deadline),
                    "the serial port took nothing for {CEILING:?}"
                ),
                Err(e) => panic!("write to the serial port: {e}"),
            }
        }
    }

    /// The status channel's text.
    pub fn status(&self) -> String {
        let mut s = TcpStream::connect(self.ready.status.expect("status channel")).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    }

    /// A counter from the status channel's global line.
    pub fn counter(&self, key: &str) -> u64 {
        let text = self.status();
        let status = relay_core::text::Status::parse(&text).unwrap();
        status
            .relay
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    }

    /// A counter of the only connected client.
    pub fn client_counter(&self, key: &str) -> u64 {
        let text = self.status();
        let status = relay_core::text::Status::parse(&text).unwrap();
        let [client] = status.clients.as_slice() else {
            panic!("not exactly one client in {text}");
        };
        client
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    }

    /// Polls the status channel until `key` reaches `value`: the event the test waits for.
    pub fn wait_counter(&self, key: &str, value: u64) {
        self.poll_status(
            || self.counter(key) == value,
            &format!("{key} never reached {value}"),
        );
    }

    /// Polls the status channel until `done`, failing with `what` at the ceiling.
    fn poll_status(&self, done: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + CEILING;
        // Polled: the firmware pushes no counters, and each pass waits on one status reply.
        while !done() {
            assert!(Instant::now() < deadline, "{what}: {}", self.status());
            std::thread::yield_now();
        }
    }

    /// Polls the status channel until its text contains `needle`.
    pub fn wait_status(&self, needle: &str) {
        self.poll_status(
            || self.status().contains(needle),
            &format!("no `{needle}` in the status within {CEILING:?}"),
        );
    }

    /// Sends one control command and returns its reply up to the final ok/err line.
    pub fn control(&self, cmd: &str) -> String {
        let mut s = TcpStream::connect(self.ready.control).unwrap();
        s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut buf = Vec::new();
        let ok = read_until(&mut s, &mut buf, |b| {
            String::from_utf8_lossy(b)
                .lines()
                .any(|l| l.starts_with("ok") || l.starts_with("err"))
                && b.ends_with(b"\n")
        });
        assert!(ok, "no reply to control command {cmd}");
        String::from_utf8(buf).unwrap()
    }

    /// Sends several control commands over one connection, back to back, as a flasher's
    /// DTR/RTS calls follow each other; returns each reply's last line.
    pub fn control_burst(&self, cmds: &[&str]) -> Vec<String> {
        use std::io::BufRead;
        let s = TcpStream::connect(self.ready.control).unwrap();
        s.set_read_timeout(Some(CEILING)).unwrap();
        let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
        cmds.iter()
            .map(|c| {
                (&s).write_all(format!("{c}\n").as_bytes()).unwrap();
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                line.trim_end().to_owned()
            })
            .collect()
    }

    pub fn terminate(&mut self) -> ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Vb {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `virtual-board` with `args`, run to its end; killed at `ceiling`, which fails the test (a
/// board that should have refused to start would otherwise run until the test exits).
pub fn run_within(args: &[&str], ceiling: Duration) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    output_within(cmd, ceiling)
}

/// Runs `cmd` to its end, its output captured; killed at `ceiling`, which fails the test (a
/// tool stuck on a board that stopped answering would otherwise hang it).
pub fn output_within(mut cmd: Command, ceiling: Duration) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} starts: {e}"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(ceiling) {
        Ok(out) => out.expect("the command's output"),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("{cmd:?} still ran after {ceiling:?}");
        }
    }
}

pub fn open_serial(path: &std::path::Path) -> File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    assert!(f.as_raw_fd() >= 0);
    f
}

/// Reads a TCP client until it has a full line; returns it without its terminator.
pub fn client_line(s: &mut TcpStream, buf: &mut Vec<u8>) -> Vec<u8> {
    assert!(
        read_until(s, buf, |b| b.contains(&b'\n')),
        "no line at the client within {CEILING:?}; have {:?}",
        String::from_utf8_lossy(buf)
    );
    take_line(buf).unwrap()
}

/// Reads a TCP client to EOF.
pub fn client_eof(s: &mut TcpStream, buf: &mut Vec<u8>) {
    s.set_nonblocking(true).unwrap();
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + CEILING;
    loop {
        assert!(
            wait_readable(&*s, deadline),
            "the board never closed the connection"
        );
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}
