//! Test support: boots the probe sketch and plays the board around it (the UART's other end and
//! the flash), over real sockets.
//!
//! Every read waits on poll(2) with a generous ceiling that only fires on failure.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arduino_host::{Executable, Network, Options, PROBE, Page, Running};

pub const CEILING: Duration = Duration::from_secs(20);

/// The network every probe may join.
pub const SSID: &str = "probe";

fn unique_ip() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() & 0x3fff;
    Ipv4Addr::from(0x7f80_0000 | (pid << 8) | (n & 0xff))
}

pub struct Probe {
    pub running: Running,
    pub page: Page,
    pub flash: std::fs::File,
    pub ip: Ipv4Addr,
    uart: std::fs::File,
    buf: Vec<u8>,
}

pub struct Setup {
    pub paced: bool,
    pub rtt: Duration,
    pub flash_size: usize,
    pub joined: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            paced: false,
            rtt: Duration::from_millis(2),
            flash_size: 4 << 20,
            joined: true,
        }
    }
}

impl Probe {
    pub fn start() -> Probe {
        Probe::with(Setup::default())
    }

    pub fn with(setup: Setup) -> Probe {
        let flash = tempfile(setup.flash_size);
        let page = Page::new().unwrap();
        let ip = unique_ip();
        let opts = Options {
            network: Network {
                ip,
                ssid: SSID.into(),
                psk: Vec::new(),
            },
            paced: setup.paced,
            rtt: setup.rtt,
        };
        let exe = Executable::new(PROBE.bytes).unwrap();
        let running = arduino_host::boot(&exe, flash.as_fd(), &page, &opts).unwrap();
        let uart = std::fs::File::from(running.uart.try_clone().unwrap());
        let mut p = Probe {
            running,
            page,
            flash,
            ip,
            uart,
            buf: Vec::new(),
        };
        assert_eq!(p.line(), "probe ready");
        if setup.joined {
            assert!(
                p.cmd(&format!("wifi {}", hex(SSID)))
                    .starts_with("wifi status=3 ")
            );
        }
        p
    }

    /// Sends one command and returns its reply line.
    pub fn cmd(&mut self, cmd: &str) -> String {
        self.send(format!("{cmd}\n").as_bytes());
        self.line()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.uart.write_all(bytes).unwrap();
    }

    /// The next line the probe printed.
    pub fn line(&mut self) -> String {
        let deadline = Instant::now() + CEILING;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                return String::from_utf8_lossy(&line).trim_end().to_owned();
            }
            assert!(
                wait(self.uart.as_fd(), deadline),
                "the probe printed no line within {CEILING:?}; have {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.pull();
        }
    }

    /// Reads what the firmware sent.
    pub fn pull(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        match self.uart.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("uart: {e}"),
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.page
            .counters()
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    pub fn connect(&self, port: u16) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr(port), CEILING).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Listens on `port` and accepts one connection into a slot; returns the client and slot.
    pub fn accept(&mut self, srv: u8) -> usize {
        let reply = self.until(&format!("accept {srv}"), |r| !r.starts_with("accept none"));
        field(&reply, "slot").parse().unwrap()
    }

    /// A barrier: the probe runs its system task (UART, lwIP input) before the loop pass that
    /// answers, so whatever the kernel delivered to it before this call has been processed.
    pub fn sync(&mut self) {
        assert!(self.cmd("millis").starts_with("millis now="));
    }

    /// Repeats `cmd` until its reply satisfies `done`: the event a test waits for.
    pub fn until(&mut self, cmd: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CEILING;
        loop {
            let reply = self.cmd(cmd);
            if done(&reply) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "`{cmd}` never gave what was waited for: {reply}"
            );
            // The probe announces nothing, so this asks again; the pause spares the shared CPUs.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A `key=value` field of a reply.
pub fn field<'a>(reply: &'a str, key: &str) -> &'a str {
    reply
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in `{reply}`"))
}

pub fn num(reply: &str, key: &str) -> u64 {
    field(reply, key).parse().unwrap()
}

pub fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn tempfile(size: usize) -> std::fs::File {
    let fd =
        nix::sys::memfd::memfd_create(c"flash", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    let f = std::fs::File::from(fd);
    use std::os::unix::fs::FileExt;
    f.write_all_at(&vec![0xff; size], 0).unwrap();
    f
}

/// Waits until `fd` is readable or the deadline passes.
pub fn wait(fd: std::os::fd::BorrowedFd<'_>, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return true,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// What a TCP peer experiences next: data, an orderly close, or a reset.
#[derive(Debug, PartialEq, Eq)]
pub enum Heard {
    Data(Vec<u8>),
    Eof,
    Reset,
}

pub fn hear(s: &mut TcpStream) -> Heard {
    s.set_read_timeout(Some(CEILING)).unwrap();
    let mut chunk = [0u8; 4096];
    match s.read(&mut chunk) {
        Ok(0) => Heard::Eof,
        Ok(n) => Heard::Data(chunk[..n].to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Heard::Reset,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            panic!("the peer heard nothing within {CEILING:?}")
        }
        Err(e) => panic!("read: {e}"),
    }
}
