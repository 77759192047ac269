//! Real clients against the virtual board, each run on a pseudo-terminal as a person runs it:
//! Debian's `telnet`, busybox `telnet`, `plink -telnet`, and `nc -N`. Whatever they negotiate,
//! the UART gets only their typed lines.

mod support;

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use rstest::rstest;
use support::Vb;

/// A program on a pseudo-terminal of its own, the controlling terminal of its own session.
struct Term {
    child: Child,
    master: File,
    screen: Vec<u8>,
}

impl Term {
    fn spawn(argv: &[&str]) -> Term {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave: OwnedFd = pty.slave;
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env("TERM", "dumb")
            .stdin(fd(&slave))
            .stdout(fd(&slave))
            .stderr(fd(&slave));
        // Unsafe as pre_exec is, std's only hook in the child before exec, where setsid must run.
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (./hil setup installs it)", argv[0]));
        drop(slave);
        let master = File::from(pty.master);
        let flags = nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_GETFL).unwrap();
        nix::fcntl::fcntl(
            &master,
            nix::fcntl::FcntlArg::F_SETFL(
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
            ),
        )
        .unwrap();
        Term {
            child,
            master,
            screen: Vec::new(),
        }
    }

    fn keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    /// Reads the terminal until `needle` shows on it.
    fn shows(&mut self, needle: &str) {
        let shown = support::read_until(&mut self.master, &mut self.screen, |b| {
            String::from_utf8_lossy(b).contains(needle)
        });
        assert!(
            shown,
            "{needle:?} never showed; the screen: {:?}",
            String::from_utf8_lossy(&self.screen)
        );
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(vb: &Vb, which: &str) -> Term {
    let (ip, port) = (
        vb.ready.tcp.ip().to_string(),
        vb.ready.tcp.port().to_string(),
    );
    let argv: Vec<&str> = match which {
        "telnet" => vec!["telnet", &ip, &port],
        "busybox" => vec!["busybox", "telnet", &ip, &port],
        "plink" => vec!["plink", "-telnet", "-P", &port, &ip],
        _ => unreachable!(),
    };
    let t = Term::spawn(&argv);
    vb.wait_counter("clients", 1);
    t
}

/// A typed line arrives clean, whatever the client negotiated first (plink sends 21 bytes of
/// it glued to the first line), and the UART's output shows on the client's screen.
#[rstest]
fn a_typed_line_reaches_the_uart_clean(#[values("telnet", "busybox", "plink")] which: &str) {
    let mut vb = Vb::start(&[]);
    let mut t = client(&vb, which);
    t.keys(format!("typed in {which}\r").as_bytes());
    assert_eq!(vb.uart_line(), format!("typed in {which}").as_bytes());
    vb.write_uart(b"from the device\r\n");
    t.shows("from the device");
}

/// Ctrl-C makes Debian's telnet send IAC IP and IAC DO TIMING-MARK, then hide all output until
/// the mark is answered; `mode character` sends DO SGA and DO ECHO. None of it reaches the
/// UART, and the client goes on showing the device's output.
#[rstest]
fn telnet_keeps_showing_output_after_ctrl_c_and_leaks_nothing() {
    let mut vb = Vb::start(&[]);
    let mut t = client(&vb, "telnet");
    // telnet connects before it installs its SIGINT handler (sys_telnet_init), so a Ctrl-C in
    // between kills it (a loaded CI run saw that). A line typed now reaches the UART only once
    // telnet's loop reads the terminal, and by then the handler is in place.
    t.keys(b"ready\r");
    assert_eq!(vb.uart_line(), b"ready");
    let before = vb.client_counter("bytes_in");
    t.keys(b"\x03");
    t.shows("^C");
    // Keys typed while telnet is still handling the interrupt can be lost (a loaded run lost the
    // whole next line). The five bytes its handler sends, IAC IP and IAC DO TIMING-MARK,
    // reaching the relay say it is done.
    vb.wait_status(&format!(" bytes_in={} ", before + 5));
    t.keys(b"after ctrl-c\r");
    assert_eq!(vb.uart_line(), b"after ctrl-c");
    vb.write_uart(b"still shown\r\n");
    t.shows("still shown");
    t.keys(b"\x1d");
    t.shows("telnet>");
    t.keys(b"mode character\r");
    t.keys(b"z\r");
    assert_eq!(vb.uart_line(), b"z");
}

/// A client that half-closes has said all it will: its line reaches the UART, and it receives
/// nothing more (the ESP8266 core writes nothing to a peer that closed, and resets one that
/// left nothing unread).
#[rstest]
fn a_half_closed_client_gets_its_line_through_and_nothing_back() {
    let mut vb = Vb::start(&[]);
    let mut nc = Command::new("nc")
        .args([
            "-N",
            &vb.ready.tcp.ip().to_string(),
            &vb.ready.tcp.port().to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nc (netcat-openbsd; ./hil setup installs it)");
    nc.stdin.take().unwrap().write_all(b"cmd\n").unwrap();
    assert_eq!(vb.uart_line(), b"cmd");
    vb.write_uart(b"reply\r\n");
    // nc ends when the relay closes: whatever it printed by then is what it got.
    let mut stdout = nc.stdout.take().unwrap();
    let mut got = Vec::new();
    let closed = support::read_to_eof(&mut stdout, &mut got);
    let _ = nc.kill();
    let _ = nc.wait();
    assert!(closed, "the relay never closed the half-closed client");
    assert!(
        got.is_empty(),
        "a half-closed client got {:?}",
        String::from_utf8_lossy(&got)
    );
    vb.wait_counter("clients", 0);
    assert_eq!(vb.counter("disconnects"), 1);
}
