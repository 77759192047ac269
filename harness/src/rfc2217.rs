//! A serial port at `rfc2217://HOST:PORT[?OPTIONS]`: a board served over the network (ser2net,
//! `relay-hil serve`, the virtual board), behind serialport's `SerialPort` trait.
//!
//! The protocol is the `rfc2217` crate's sans-IO client. Pump threads carry the serial data
//! between the TCP connection and one end of a local socket pair; the port reads and writes the
//! other end, so its file descriptor polls like a tty's and a clone shares the one connection.
//! One thread writes to the network, so no other blocks there while it holds the client: the
//! bridge's answers are read even while a write waits.
//! Settings, modem lines and purges go through the client under a lock, and each waits for the
//! bridge's answer, as pyserial's `rfc2217://` does. What the bridge sends before it answers an
//! input purge predates the purge, and is dropped at the exact byte of the answer.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rfc2217::{Client, Event, NotReady, PortSettings, Purge};
use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits};

/// The URL scheme of a port served over RFC 2217.
pub const SCHEME: &str = "rfc2217://";

/// How long the bridge may take to answer, unless the URL's `timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A parsed `rfc2217://HOST:PORT[?OPTIONS]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `HOST:PORT`, as given.
    pub host_port: String,
    /// Do not wait for the bridge to confirm DTR, RTS and BREAK: a bridge on a pseudo-terminal
    /// (ser2net) cannot set them and never answers (pyserial's option of the same name).
    pub ign_set_control: bool,
    /// How long to wait for any answer of the bridge (`timeout=SECS`).
    pub timeout: Duration,
}

/// A URL that is not one, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{url}` is not an RFC 2217 port: {reason} (rfc2217://HOST:PORT[?ign_set_control][&timeout=SECS])"
)]
pub struct UrlError {
    pub url: String,
    pub reason: String,
}

impl Url {
    /// Whether `port` names an RFC 2217 port rather than a local one.
    pub fn is_url(port: &str) -> bool {
        port.starts_with(SCHEME)
    }

    pub fn parse(url: &str) -> Result<Url, UrlError> {
        let bad = |reason: &str| UrlError {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not start with rfc2217://"))?;
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (host, port) = host_port.rsplit_once(':').ok_or_else(|| bad("no :PORT"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        port.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
        let mut parsed = Url {
            host_port: host_port.to_owned(),
            ign_set_control: false,
            timeout: DEFAULT_TIMEOUT,
        };
        for opt in query.split('&').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                None if opt == "ign_set_control" => parsed.ign_set_control = true,
                Some(("timeout", secs)) => {
                    let secs: f64 = secs
                        .parse()
                        .ok()
                        .filter(|s| (0.001..=86_400.0).contains(s))
                        .ok_or_else(|| bad("timeout takes seconds, from 0.001 to 86400"))?;
                    parsed.timeout = Duration::from_secs_f64(secs);
                }
                _ => return Err(bad(&format!("unknown option `{opt}`"))),
            }
        }
        Ok(parsed)
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}", self.host_port)
    }
}

/// What the pumps and the port share: the client, the connection's write half, and what the
/// bridge has said.
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever the bridge said something or the connection ended.
    heard: Condvar,
    url: Url,
    /// The port's handles (the port and its clones): the last one to drop ends the connection.
    handles: std::sync::atomic::AtomicUsize,
}

/// What the connection's writer sends, in the order the client queued it.
enum Outgoing {
    Bytes(Vec<u8>),
    /// Everything queued is sent: end our side.
    Close,
}

struct State {
    client: Client,
    /// To the writer thread: no thread blocks on the network while it holds this state, so
    /// the bridge's answers are read even while a write waits.
    out: std::sync::mpsc::Sender<Outgoing>,
    /// The connection, to cut it when the bridge does not end its side.
    tcp: TcpStream,
    /// Why the connection ended, once it has.
    ended: Option<String>,
    dtr: Option<bool>,
    rts: Option<bool>,
    brk: Option<bool>,
    /// Purges sent, and answered (the bridge answers each, in order).
    purges_sent: u64,
    purges_answered: u64,
    /// The number of the last input purge sent while it is unanswered, else 0: until its
    /// answer, the bridge's data predates it.
    input_purge: u64,
}

impl State {
    /// Hands what the client has queued to the writer.
    fn flush(&mut self) -> io::Result<()> {
        let out = self.client.take_output();
        if out.is_empty() {
            return Ok(());
        }
        self.out
            .send(Outgoing::Bytes(out))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }

    /// Whether the bridge's data is stale: it predates an input purge not yet answered.
    fn stale(&self) -> bool {
        self.input_purge > self.purges_answered
    }

    /// Notes a purge's answer; true if it answers the last input purge.
    fn purge_answered(&mut self) -> bool {
        if self.purges_answered == self.purges_sent {
            return false; // not one of ours (or a timed-out one's late answer)
        }
        self.purges_answered += 1;
        if self.purges_answered == self.input_purge {
            self.input_purge = 0;
            return true;
        }
        false
    }
}

/// Empties the port's end of the local socket pair, without touching the descriptor's flags,
/// which its clones and [`crate::serial::Serial`] share.
fn empty(port_end: &UnixStream) {
    use nix::sys::socket::{MsgFlags, recv};
    let mut buf = [0u8; 4096];
    while matches!(
        recv(port_end.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT),
        Ok(n) if n > 0
    ) {}
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `change` on the state, sends the client's output, and waits until `done` (given
    /// what `change` returned) says so.
    fn request<T>(
        &self,
        what: &str,
        change: impl FnOnce(&mut State) -> T,
        done: impl Fn(&State, &T) -> Wait,
    ) -> serialport::Result<()> {
        let err =
            |m: String| serialport::Error::new(serialport::ErrorKind::Io(io::ErrorKind::Other), m);
        let mut st = self.lock();
        let asked = change(&mut st);
        st.flush()
            .map_err(|e| err(format!("{}: cannot send {what}: {e}", self.url)))?;
        let deadline = Instant::now() + self.url.timeout;
        loop {
            let waiting = match done(&st, &asked) {
                Wait::Done => return Ok(()),
                Wait::Failed(why) => return Err(err(format!("{}: {what}: {why}", self.url))),
                Wait::For(why) => why,
            };
            if let Some(why) = &st.ended {
                return Err(err(format!("{}: {what}: {why}", self.url)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = waiting.map(|w| format!(": {w}")).unwrap_or_default();
                return Err(err(format!(
                    "{}: the bridge did not confirm {what} within {:?}{why}",
                    self.url, self.url.timeout
                )));
            }
            st = self
                .heard
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Sets a modem or break line, waiting for its echo unless the URL says not to.
    fn control(
        &self,
        name: &str,
        level: bool,
        set: impl FnOnce(&mut Client),
        reported: fn(&State) -> Option<bool>,
    ) -> serialport::Result<()> {
        let ign = self.url.ign_set_control;
        self.request(
            &format!("{name} {}", if level { "on" } else { "off" }),
            |st| set(&mut st.client),
            |st, ()| {
                if ign || reported(st) == Some(level) {
                    Wait::Done
                } else {
                    Wait::For(None)
                }
            },
        )
        .map_err(|mut e| {
            if !ign {
                e.description.push_str(
                    "; a bridge on a pseudo-terminal never confirms one: add ?ign_set_control",
                );
            }
            e
        })
    }
}

/// Where a request stands.
enum Wait {
    Done,
    /// Still waiting, and what for, to say at the deadline.
    For(Option<String>),
    /// Waiting cannot help.
    Failed(String),
}

/// Whether the bridge confirmed the settings: fail at once where waiting cannot help.
fn ready(st: &State, _: &()) -> Wait {
    match st.client.readiness() {
        Ok(()) => Wait::Done,
        Err(e @ (NotReady::Refused | NotReady::Mismatched(_))) => Wait::Failed(e.to_string()),
        Err(e) => Wait::For(Some(e.to_string())),
    }
}

/// The bridge to the local socket: serial data out, events noted. `port_end` is the port's
/// end of the pair, emptied where the bridge answers an input purge.
fn pump_in(shared: Arc<Shared>, mut tcp: TcpStream, mut local: UnixStream, port_end: UnixStream) {
    let mut buf = [0u8; 4096];
    let mut payload = Vec::with_capacity(buf.len());
    let why = loop {
        let n = match tcp.read(&mut buf) {
            Ok(0) => break "the bridge closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => break format!("the connection failed: {e}"),
        };
        {
            let mut st = shared.lock();
            // Event by event: the payload before an event's byte precedes it, the rest follows.
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let used = st.client.receive_until_event(rest, &mut payload);
                rest = &rest[used..];
                if st.stale() {
                    payload.clear();
                }
                while let Some(event) = st.client.poll_event() {
                    match event {
                        Event::Dtr(on) => st.dtr = Some(on),
                        Event::Rts(on) => st.rts = Some(on),
                        Event::Break(on) => st.brk = Some(on),
                        // The guard counts every answer; at the last input purge's, everything
                        // written to the pair so far predates the purge.
                        Event::Purged(_) if st.purge_answered() => empty(&port_end),
                        _ => {}
                    }
                }
            }
            // Answers to the bridge's own negotiation.
            if let Err(e) = st.flush() {
                st.ended = Some(format!("the connection failed: {e}"));
            }
            shared.heard.notify_all();
        }
        if local.write_all(&payload).is_err() {
            break "the port was closed".to_owned();
        }
        payload.clear();
    };
    let mut st = shared.lock();
    st.ended.get_or_insert(why);
    shared.heard.notify_all();
    drop(st);
    let _ = local.shutdown(Shutdown::Both);
}

/// The local socket to the client, whose output goes to the writer.
fn pump_out(shared: Arc<Shared>, mut local: UnixStream) {
    let mut buf = [0u8; 4096];
    loop {
        let n = match local.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut st = shared.lock();
        st.client.write_data(&buf[..n]);
        if st.flush().is_err() {
            break;
        }
    }
}

/// The writer: everything queued to the bridge, in order; ends our side on [`Outgoing::Close`].
fn pump_net(shared: Arc<Shared>, mut tcp: TcpStream, queue: std::sync::mpsc::Receiver<Outgoing>) {
    for item in queue {
        match item {
            Outgoing::Bytes(bytes) => {
                if let Err(e) = tcp.write_all(&bytes) {
                    let mut st = shared.lock();
                    st.ended
                        .get_or_insert(format!("the connection failed: {e}"));
                    shared.heard.notify_all();
                    return;
                }
            }
            Outgoing::Close => {
                let _ = tcp.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}

/// A serial port served over RFC 2217.
pub struct Rfc2217Port {
    local: UnixStream,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl Rfc2217Port {
    /// Connects to the bridge and sets its port to `baud`, 8N1, no flow control, waiting for
    /// the bridge to confirm.
    pub fn open(url: &Url, baud: u32) -> io::Result<Rfc2217Port> {
        let addrs: Vec<SocketAddr> = url.host_port.to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
        let tcp = addrs
            .iter()
            .find_map(|a| {
                TcpStream::connect_timeout(a, url.timeout)
                    .map_err(|e| last = e)
                    .ok()
            })
            .ok_or(last)?;
        tcp.set_nodelay(true)?;
        let (local, pump) = UnixStream::pair()?;
        let (out, queue) = std::sync::mpsc::channel();
        let client = Client::new(PortSettings {
            baud_rate: baud,
            ..PortSettings::default()
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                client,
                out,
                tcp: tcp.try_clone()?,
                ended: None,
                dtr: None,
                rts: None,
                brk: None,
                purges_sent: 0,
                purges_answered: 0,
                input_purge: 0,
            }),
            heard: Condvar::new(),
            url: url.clone(),
            handles: std::sync::atomic::AtomicUsize::new(1),
        });
        let (s, w) = (shared.clone(), tcp.try_clone()?);
        std::thread::Builder::new()
            .name("rfc2217-net".into())
            .spawn(move || pump_net(s, w, queue))?;
        let (s, r, p) = (shared.clone(), pump.try_clone()?, local.try_clone()?);
        std::thread::Builder::new()
            .name("rfc2217-in".into())
            .spawn(move || pump_in(s, tcp, r, p))?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name("rfc2217-out".into())
            .spawn(move || pump_out(s, pump))?;
        shared
            .request("the port settings", |_| (), ready)
            .map_err(io::Error::from)?;
        Ok(Rfc2217Port {
            local,
            shared,
            timeout: Duration::from_millis(100),
        })
    }

    fn settings(&self) -> PortSettings {
        self.shared.lock().client.requested_settings()
    }

    fn set_settings(
        &self,
        what: &str,
        f: impl FnOnce(&mut PortSettings),
    ) -> serialport::Result<()> {
        let mut s = self.settings();
        f(&mut s);
        self.shared
            .request(what, |st| st.client.set_port_settings(s), ready)
    }
}

impl AsRawFd for Rfc2217Port {
    fn as_raw_fd(&self) -> RawFd {
        self.local.as_raw_fd()
    }
}

impl Rfc2217Port {
    /// Waits up to the port's timeout for the local socket to be ready for `flags`: the socket
    /// may be non-blocking, as [`crate::serial::Serial`] makes the port's descriptor.
    fn wait(&self, flags: nix::poll::PollFlags) -> io::Result<()> {
        use nix::poll::{PollFd, PollTimeout, poll};
        let ms = PollTimeout::try_from(self.timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.local.as_fd(), flags)];
        if poll(&mut fds, ms)? == 0 {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(())
    }
}

impl Read for Rfc2217Port {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.wait(nix::poll::PollFlags::POLLIN)?;
        self.local.read(buf)
    }
}

impl Write for Rfc2217Port {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wait(nix::poll::PollFlags::POLLOUT)?;
        self.local.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.local.flush()
    }
}

impl SerialPort for Rfc2217Port {
    fn name(&self) -> Option<String> {
        Some(self.shared.url.to_string())
    }
    fn baud_rate(&self) -> serialport::Result<u32> {
        Ok(self.settings().baud_rate)
    }
    fn data_bits(&self) -> serialport::Result<DataBits> {
        Ok(match self.settings().data_bits {
            rfc2217::DataBits::Five => DataBits::Five,
            rfc2217::DataBits::Six => DataBits::Six,
            rfc2217::DataBits::Seven => DataBits::Seven,
            _ => DataBits::Eight,
        })
    }
    fn flow_control(&self) -> serialport::Result<FlowControl> {
        Ok(match self.settings().flow_control {
            rfc2217::FlowControl::XonXoff => FlowControl::Software,
            rfc2217::FlowControl::RtsCts => FlowControl::Hardware,
            _ => FlowControl::None,
        })
    }
    fn parity(&self) -> serialport::Result<Parity> {
        Ok(match self.settings().parity {
            rfc2217::Parity::Odd => Parity::Odd,
            rfc2217::Parity::Even => Parity::Even,
            _ => Parity::None,
        })
    }
    fn stop_bits(&self) -> serialport::Result<StopBits> {
        Ok(match self.settings().stop_bits {
            rfc2217::StopBits::Two => StopBits::Two,
            _ => StopBits::One,
        })
    }
    fn timeout(&self) -> Duration {
        self.timeout
    }
    fn set_baud_rate(&mut self, baud_rate: u32) -> serialport::Result<()> {
        self.set_settings(&format!("{baud_rate} baud"), |s| s.baud_rate = baud_rate)
    }
    fn set_data_bits(&mut self, data_bits: DataBits) -> serialport::Result<()> {
        self.set_settings("the data bits", |s| {
            s.data_bits = match data_bits {
                DataBits::Five => rfc2217::DataBits::Five,
                DataBits::Six => rfc2217::DataBits::Six,
                DataBits::Seven => rfc2217::DataBits::Seven,
                DataBits::Eight => rfc2217::DataBits::Eight,
            }
        })
    }
    fn set_flow_control(&mut self, flow_control: FlowControl) -> serialport::Result<()> {
        self.set_settings("the flow control", |s| {
            s.flow_control = match flow_control {
                FlowControl::None => rfc2217::FlowControl::None,
                FlowControl::Software => rfc2217::FlowControl::XonXoff,
                FlowControl::Hardware => rfc2217::FlowControl::RtsCts,
            }
        })
    }
    fn set_parity(&mut self, parity: Parity) -> serialport::Result<()> {
        self.set_settings("the parity", |s| {
            s.parity = match parity {
                Parity::None => rfc2217::Parity::None,
                Parity::Odd => rfc2217::Parity::Odd,
                Parity::Even => rfc2217::Parity::Even,
            }
        })
    }
    fn set_stop_bits(&mut self, stop_bits: StopBits) -> serialport::Result<()> {
        self.set_settings("the stop bits", |s| {
            s.stop_bits = match stop_bits {
                StopBits::One => rfc2217::StopBits::One,
                StopBits::Two => rfc2217::StopBits::Two,
            }
        })
    }
    fn set_timeout(&mut self, timeout: Duration) -> serialport::Result<()> {
        self.timeout = timeout;
        Ok(())
    }
    fn write_request_to_send(&mut self, level: bool) -> serialport::Result<()> {
        self.shared
            .control("RTS", level, |c| c.set_rts(level), |st| st.rts)
    }
    fn write_data_terminal_ready(&mut self, level: bool) -> serialport::Result<()> {
        self.shared
            .control("DTR", level, |c| c.set_dtr(level), |st| st.dtr)
    }
    fn read_clear_to_send(&mut self) -> serialport::Result<bool> {
        Ok(self.modem(rfc2217::ModemState::CTS))
    }
    fn read_data_set_ready(&mut self) -> serialport::Result<bool> {
        Ok(self.modem(rfc2217::ModemState::DSR))
    }
    fn read_ring_indicator(&mut self) -> serialport::Result<bool> {
        Ok(self.modem(rfc2217::ModemState::RI))
    }
    fn read_carrier_detect(&mut self) -> serialport::Result<bool> {
        Ok(self.modem(rfc2217::ModemState::CD))
    }
    fn bytes_to_read(&self) -> serialport::Result<u32> {
        nix::ioctl_read_bad!(fionread, nix::libc::FIONREAD, nix::libc::c_int);
        let mut n: nix::libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, into n.
        unsafe { fionread(self.local.as_raw_fd(), &mut n) }
            .map_err(|e| serialport::Error::from(io::Error::from(e)))?;
        Ok(n.max(0) as u32)
    }
    fn bytes_to_write(&self) -> serialport::Result<u32> {
        Ok(0)
    }
    /// Waits for the bridge's answer; input received before it is dropped, input after it kept.
    fn clear(&self, buffer_to_clear: ClearBuffer) -> serialport::Result<()> {
        let input = matches!(buffer_to_clear, ClearBuffer::Input | ClearBuffer::All);
        let purge = match buffer_to_clear {
            ClearBuffer::Input => Purge::Receive,
            ClearBuffer::Output => Purge::Transmit,
            ClearBuffer::All => Purge::Both,
        };
        if input {
            // Room for the write the input pump may be blocked in, so that it reads the answer.
            empty(&self.local);
        }
        let what = match purge {
            Purge::Receive => "the input purge",
            Purge::Transmit => "the output purge",
            _ => "the purge",
        };
        let asked = |st: &mut State| {
            st.purges_sent += 1;
            if input {
                st.input_purge = st.purges_sent;
            }
            st.client.purge(purge);
            st.purges_sent
        };
        let answered = |st: &State, &n: &u64| {
            if st.purges_answered >= n {
                Wait::Done
            } else {
                Wait::For(None)
            }
        };
        self.shared.request(what, asked, answered).inspect_err(|_| {
            // Unanswered, the purge no longer holds the data back.
            let mut st = self.shared.lock();
            if st.input_purge == st.purges_sent {
                st.input_purge = 0;
            }
        })
    }
    fn try_clone(&self) -> serialport::Result<Box<dyn SerialPort>> {
        let local = self.local.try_clone()?;
        self.shared
            .handles
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(Rfc2217Port {
            local,
            shared: self.shared.clone(),
            timeout: self.timeout,
        }))
    }
    fn set_break(&self) -> serialport::Result<()> {
        self.shared
            .control("BREAK", true, |c| c.set_break(true), |st| st.brk)
    }
    fn clear_break(&self) -> serialport::Result<()> {
        self.shared
            .control("BREAK", false, |c| c.set_break(false), |st| st.brk)
    }
}

impl Drop for Rfc2217Port {
    /// The last handle ends the connection and waits (up to the URL's timeout) for the bridge
    /// to end its side: a bridge serves one client at a time, and a port opened right after
    /// must find the line free.
    fn drop(&mut self) {
        use std::sync::atomic::Ordering;
        if self.shared.handles.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let mut st = self.shared.lock();
        let _ = st.out.send(Outgoing::Close);
        let deadline = Instant::now() + self.shared.url.timeout;
        while st.ended.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!("{}: the bridge did not close its side", self.shared.url);
                let _ = st.tcp.shutdown(Shutdown::Both);
                break;
            }
            st = self
                .shared
                .heard
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Rfc2217Port {
    fn modem(&self, line: rfc2217::ModemState) -> bool {
        self.shared
            .lock()
            .client
            .modem_state()
            .is_some_and(|m| m.contains(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_options() {
        let u = Url::parse("rfc2217://lab-3:4001?ign_set_control&timeout=0.5").unwrap();
        assert_eq!(u.host_port, "lab-3:4001");
        assert!(u.ign_set_control);
        assert_eq!(u.timeout, Duration::from_millis(500));
        assert_eq!(u.to_string(), "rfc2217://lab-3:4001");
        let u = Url::parse("rfc2217://[::1]:2217").unwrap();
        assert_eq!(
            (u.host_port.as_str(), u.ign_set_control),
            ("[::1]:2217", false)
        );
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("rfc2217://host", "no :PORT"),
            ("rfc2217://:4001", "no host"),
            ("rfc2217://host:0", "1 to 65535"),
            ("rfc2217://host:70000", "1 to 65535"),
            (
                "rfc2217://host:4001?poll_modem",
                "unknown option `poll_modem`",
            ),
            ("rfc2217://host:4001?timeout=-1", "timeout takes seconds"),
            ("telnet://host:4001", "does not start with rfc2217://"),
        ] {
            let e = Url::parse(url).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(url), "{url}: {e}");
        }
    }
}
