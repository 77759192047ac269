//! The board's serial port over the network: a Telnet server that speaks RFC 2217's
//! COM-PORT-OPTION, as a lab's serial server does for a remote board. One client at a time holds
//! the line: its data bytes reach the UART's receive side, the UART's output reaches it, and its
//! SET-CONTROL requests move the USB-serial adapter's DTR and RTS.
//!
//! [`Session`] is the protocol with no I/O; [`Port`] carries it over a TCP connection. Section
//! numbers are RFC 2217's (RFC 854 for Telnet itself, RFC 856 for BINARY). What pyserial's client
//! sends and waits for is cited from pyserial 3.5's `serial/rfc2217.py`, the one esptool 4.8.1
//! installs.
//!
//! Every buffer has a bound, and a client that fills one is simply not read until it drains:
//! a flood of data or of negotiation costs the board a few KiB, however long it lasts.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::Context;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

pub const IAC: u8 = 255;
pub const DONT: u8 = 254;
pub const DO: u8 = 253;
pub const WONT: u8 = 252;
pub const WILL: u8 = 251;
pub const SB: u8 = 250;
pub const SE: u8 = 240;

/// The options this server agrees to, each both ways; every other one is refused.
pub const BINARY: u8 = 0;
pub const COM_PORT_OPTION: u8 = 44;

/// COM-PORT-OPTION commands, client to server; the server's answer is the same plus 100.
pub const SIGNATURE: u8 = 0;
pub const SET_BAUDRATE: u8 = 1;
pub const SET_DATASIZE: u8 = 2;
pub const SET_PARITY: u8 = 3;
pub const SET_STOPSIZE: u8 = 4;
pub const SET_CONTROL: u8 = 5;
pub const NOTIFY_LINESTATE: u8 = 6;
pub const NOTIFY_MODEMSTATE: u8 = 7;
pub const FLOWCONTROL_SUSPEND: u8 = 8;
pub const FLOWCONTROL_RESUME: u8 = 9;
pub const SET_LINESTATE_MASK: u8 = 10;
pub const SET_MODEMSTATE_MASK: u8 = 11;
pub const PURGE_DATA: u8 = 12;
pub const SERVER: u8 = 100;

/// IAC SB COM-PORT-OPTION `command` `value` IAC SE, with IAC doubled in the value: a client's
/// command, or with `command + SERVER` the server's answer.
pub fn com_port_option(command: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![IAC, SB, COM_PORT_OPTION, command];
    for &b in value {
        v.push(b);
        if b == IAC {
            v.push(IAC);
        }
    }
    v.extend([IAC, SE]);
    v
}

/// SET-CONTROL values (§3).
pub const FLOW_REQUEST: u8 = 0;
pub const FLOW_NONE: u8 = 1;
pub const BREAK_REQUEST: u8 = 4;
pub const BREAK_ON: u8 = 5;
pub const BREAK_OFF: u8 = 6;
pub const DTR_REQUEST: u8 = 7;
pub const DTR_ON: u8 = 8;
pub const DTR_OFF: u8 = 9;
pub const RTS_REQUEST: u8 = 10;
pub const RTS_ON: u8 = 11;
pub const RTS_OFF: u8 = 12;
pub const FLOW_IN_REQUEST: u8 = 13;
pub const FLOW_IN_NONE: u8 = 14;

/// The UART's frame, the only one the chip's `Serial` uses here and the one pacing counts:
/// 8 data bits, no parity (1 in SET-PARITY's table), 1 stop bit (1 in SET-STOPSIZE's).
const DATASIZE: u8 = 8;
const PARITY_NONE: u8 = 1;
const STOPSIZE_ONE: u8 = 1;

/// Line state bits 5 and 6: the server's transmitter, toward the chip, is empty (§3, §4).
const LINESTATE_TX_EMPTY: u8 = 0x60;
/// The NodeMCU wires none of the adapter's CTS, DSR, RI and CD: their state never changes.
const MODEMSTATE: u8 = 0;

const SIGNATURE_TEXT: &str = concat!("relay-hil virtual-board ", env!("CARGO_PKG_VERSION"));

/// The most of a subnegotiation kept: the longest command is SET-BAUDRATE's six bytes, and a
/// longer one (a client's SIGNATURE text) is dropped whole when it ends.
pub const SUB_MAX: usize = 256;
/// The client's data bytes held for the UART: a client that sends faster than the wire is not
/// read until these have crossed.
pub const RX_MAX: usize = 4096;
/// The UART's output held for a client that reads slowly: the wire waits while it is full, as
/// it waits for the pseudo-terminal when no client is connected.
pub const DATA_MAX: usize = 16 * 1024;
/// Replies not yet taken by the client: past this, the client's requests are not read.
pub const OUT_MAX: usize = 16 * 1024;
/// Bytes read off the socket and not yet parsed.
const INBOX_MAX: usize = 4096;
/// Most of the UART's output moved into the socket's queue at once.
const CHUNK: usize = 4096;

/// What a session needs of the board: the adapter's modem lines and the UART's rate.
pub trait Line {
    fn dtr(&self) -> bool;
    fn rts(&self) -> bool;
    fn set_dtr(&mut self, on: bool);
    fn set_rts(&mut self, on: bool);
    fn baud(&self) -> u32;
    fn set_baud(&mut self, baud: u32);
}

/// One side of an option we support: whether it is on, and whether we asked for the change and
/// wait for the answer (RFC 854: an answer is never answered, or the two sides would loop).
#[derive(Clone, Copy, Debug, Default)]
struct Opt {
    on: bool,
    asked: bool,
}

/// Where the Telnet parser is, between two bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    Data,
    Iac,
    /// WILL, WONT, DO or DONT: the option byte follows.
    Verb(u8),
    Sub,
    SubIac,
}

/// One client's Telnet and RFC 2217 state, with no I/O: bytes from the client go in through
/// [`Session::feed`], bytes for the UART come out of [`Session::take_rx`], the UART's output
/// goes in through [`Session::uart_output`], and what to send the client is in `out`.
#[derive(Debug)]
pub struct Session {
    parse: Parse,
    sub: Vec<u8>,
    /// The subnegotiation under way is longer than [`SUB_MAX`]: it is dropped when it ends.
    sub_over: bool,
    /// "us" is what this server does (answered to DO/DONT), "him" what the client does
    /// (answered to WILL/WONT).
    us_binary: Opt,
    him_binary: Opt,
    us_com: Opt,
    him_com: Opt,
    /// The client's bytes, on their way to the UART.
    rx: VecDeque<u8>,
    /// The UART's output, not yet escaped into `out`: the "access server receive data buffer"
    /// PURGE-DATA 1 empties.
    data: VecDeque<u8>,
    /// Bytes for the client, in order: replies, notifications and escaped data.
    out: VecDeque<u8>,
    break_on: bool,
    /// FLOWCONTROL-SUSPEND: send the client nothing until FLOWCONTROL-RESUME (§5).
    suspended: bool,
    linestate_mask: u8,
    modemstate_mask: u8,
    /// The line state last seen, to notify a change (§4).
    linestate: u8,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

impl Session {
    /// A new session, which asks for BINARY both ways at once (RFC 856): the line carries all
    /// 256 byte values.
    pub fn new() -> Session {
        let mut s = Session {
            parse: Parse::Data,
            sub: Vec::new(),
            sub_over: false,
            us_binary: Opt::default(),
            him_binary: Opt::default(),
            us_com: Opt::default(),
            him_com: Opt::default(),
            rx: VecDeque::new(),
            data: VecDeque::new(),
            out: VecDeque::new(),
            break_on: false,
            suspended: false,
            // The initial masks (§3): no line state changes, every modem state change.
            linestate_mask: 0,
            modemstate_mask: 255,
            linestate: LINESTATE_TX_EMPTY,
        };
        s.us_binary.asked = true;
        s.him_binary.asked = true;
        s.out.extend([IAC, WILL, BINARY, IAC, DO, BINARY]);
        s
    }

    /// Takes bytes from the client; returns how many it took. It stops early, leaving the rest
    /// for later, while the UART's queue or the replies are full: the client is then not read.
    pub fn feed(&mut self, input: &[u8], line: &mut dyn Line) -> usize {
        let mut taken = input.len();
        for (i, &b) in input.iter().enumerate() {
            if !self.wants_input() {
                taken = i;
                break;
            }
            self.byte(b, line);
        }
        self.notify_linestate();
        taken
    }

    fn byte(&mut self, b: u8, line: &mut dyn Line) {
        match self.parse {
            Parse::Data if b == IAC => self.parse = Parse::Iac,
            Parse::Data => self.rx.push_back(b),
            Parse::Iac => {
                self.parse = Parse::Data;
                match b {
                    // A doubled IAC is the data byte 255 (RFC 854).
                    IAC => self.rx.push_back(IAC),
                    WILL | WONT | DO | DONT => self.parse = Parse::Verb(b),
                    SB => {
                        self.sub.clear();
                        self.sub_over = false;
                        self.parse = Parse::Sub;
                    }
                    // NOP, GA, AYT, BRK, a stray SE...: nothing a serial line does.
                    _ => tracing::debug!("ignored telnet command {b}"),
                }
            }
            Parse::Verb(verb) => {
                self.parse = Parse::Data;
                self.negotiate(verb, b);
            }
            Parse::Sub if b == IAC => self.parse = Parse::SubIac,
            Parse::Sub => self.sub_push(b),
            Parse::SubIac => match b {
                IAC => {
                    self.sub_push(IAC);
                    self.parse = Parse::Sub;
                }
                SE => {
                    self.parse = Parse::Data;
                    self.subnegotiation(line);
                }
                // A subnegotiation must end with IAC SE (RFC 854). Another command cuts it
                // short: it is dropped, and the command is taken as one.
                _ => {
                    tracing::debug!("a subnegotiation was cut short by command {b}");
                    self.parse = Parse::Iac;
                    self.byte(b, line);
                }
            },
        }
    }

    fn sub_push(&mut self, b: u8) {
        if self.sub.len() < SUB_MAX {
            self.sub.push(b);
        } else {
            self.sub_over = true;
        }
    }

    fn option(&mut self, verb: u8, opt: u8) -> Option<&mut Opt> {
        let him = matches!(verb, WILL | WONT);
        match (opt, him) {
            (BINARY, false) => Some(&mut self.us_binary),
            (BINARY, true) => Some(&mut self.him_binary),
            (COM_PORT_OPTION, false) => Some(&mut self.us_com),
            (COM_PORT_OPTION, true) => Some(&mut self.him_com),
            _ => None,
        }
    }

    /// DO, DONT, WILL or WONT for `opt`. BINARY and COM-PORT-OPTION are agreed both ways, as
    /// pyserial's client asks (rfc2217.py:429-440); the rest (its ECHO and SGA among them)
    /// refused. A request for the state an option is already in gets no answer (RFC 854).
    fn negotiate(&mut self, verb: u8, opt: u8) {
        let wants = matches!(verb, WILL | DO);
        let (yes, no) = if matches!(verb, WILL | WONT) {
            (DO, DONT)
        } else {
            (WILL, WONT)
        };
        let Some(o) = self.option(verb, opt) else {
            if wants {
                self.out.extend([IAC, no, opt]);
            }
            return;
        };
        let asked = std::mem::take(&mut o.asked);
        if o.on == wants {
            return;
        }
        o.on = wants;
        if !asked {
            self.out.extend([IAC, if wants { yes } else { no }, opt]);
        }
        if opt == COM_PORT_OPTION && verb == WILL {
            // The modem lines once, as pyserial's own server does (rfc2217.py:993-995): its
            // client raises on reading CTS or DSR until it has had a NOTIFY-MODEMSTATE
            // (rfc2217.py:925-931).
            self.reply(NOTIFY_MODEMSTATE, &[MODEMSTATE & self.modemstate_mask]);
        }
    }

    /// A subnegotiation, IAC SB to IAC SE. Only COM-PORT-OPTION's are read, and only once the
    /// client has said WILL COM-PORT-OPTION and been answered DO (§1).
    fn subnegotiation(&mut self, line: &mut dyn Line) {
        if self.sub_over {
            tracing::debug!("dropped a subnegotiation longer than {SUB_MAX} bytes");
            return;
        }
        let sub = std::mem::take(&mut self.sub);
        match sub.split_first() {
            Some((&COM_PORT_OPTION, rest)) if self.him_com.on => match rest.split_first() {
                Some((&command, value)) => self.command(command, value, line),
                None => tracing::debug!("an empty COM-PORT-OPTION subnegotiation"),
            },
            Some((&COM_PORT_OPTION, _)) => {
                tracing::debug!("a COM-PORT-OPTION command before the option was agreed")
            }
            _ => tracing::debug!("ignored a subnegotiation for another option"),
        }
        self.sub = sub;
        self.sub.clear();
    }

    /// One COM-PORT-OPTION command. Each answer is the server's code (the command plus 100)
    /// with the value now in force, which is what pyserial's client waits for: it compares it
    /// with what it asked (rfc2217.py:364-373) and, for SET-CONTROL, fails after its timeout
    /// without one (rfc2217.py:878-888, 350-362). A command whose value has the wrong length
    /// is malformed, and gets no answer.
    fn command(&mut self, command: u8, value: &[u8], line: &mut dyn Line) {
        let byte = match value {
            [b] => Some(*b),
            _ => None,
        };
        match (command, byte) {
            // An empty SIGNATURE asks for the server's; a client's own is only logged (§2).
            (SIGNATURE, _) if value.is_empty() => {
                self.reply(SIGNATURE, SIGNATURE_TEXT.as_bytes());
            }
            (SIGNATURE, _) => tracing::debug!(
                "client signature {:?}",
                String::from_utf8_lossy(&value[..value.len().min(64)])
            ),
            // Four bytes, network order; 0 asks for the rate (§2). The UART follows it as it
            // follows a flasher's CHANGE_BAUDRATE, until the next reset.
            (SET_BAUDRATE, _) => {
                let Ok(rate) = <[u8; 4]>::try_from(value) else {
                    tracing::debug!("SET-BAUDRATE with {} bytes", value.len());
                    return;
                };
                let rate = u32::from_be_bytes(rate);
                if rate != 0 {
                    line.set_baud(rate);
                }
                self.reply(SET_BAUDRATE, &line.baud().to_be_bytes());
            }
            // The chip's UART frame is 8N1: any request is answered with it, the frame in force,
            // and pyserial reports a refusal when that is not what it asked
            // (rfc2217.py:364-373, 344-345).
            (SET_DATASIZE, Some(_)) => self.reply(SET_DATASIZE, &[DATASIZE]),
            (SET_PARITY, Some(_)) => self.reply(SET_PARITY, &[PARITY_NONE]),
            (SET_STOPSIZE, Some(_)) => self.reply(SET_STOPSIZE, &[STOPSIZE_ONE]),
            (SET_CONTROL, Some(v)) => self.control(v, line),
            // Polls: the state now, whatever the masks, which govern only what is sent
            // unasked (§4).
            (NOTIFY_LINESTATE, _) => self.reply(NOTIFY_LINESTATE, &[self.current_linestate()]),
            (NOTIFY_MODEMSTATE, _) => self.reply(NOTIFY_MODEMSTATE, &[MODEMSTATE]),
            (FLOWCONTROL_SUSPEND, _) => self.suspended = true,
            (FLOWCONTROL_RESUME, _) => self.suspended = false,
            (SET_LINESTATE_MASK, Some(m)) => {
                self.linestate_mask = m;
                self.reply(SET_LINESTATE_MASK, &[m]);
            }
            (SET_MODEMSTATE_MASK, Some(m)) => {
                self.modemstate_mask = m;
                self.reply(SET_MODEMSTATE_MASK, &[m]);
            }
            // 1: the server's receive buffer (the UART's output not yet sent), 2: its transmit
            // buffer (the client's bytes not yet on the wire), 3: both (§3).
            (PURGE_DATA, Some(which @ 1..=3)) => {
                if which & 1 != 0 {
                    self.data.clear();
                }
                if which & 2 != 0 {
                    self.rx.clear();
                }
                self.reply(PURGE_DATA, &[which]);
            }
            _ => tracing::debug!(
                "ignored COM-PORT-OPTION command {command} with {} value bytes",
                value.len()
            ),
        }
    }

    /// SET-CONTROL (§3). DTR and RTS drive the board's reset circuit as the control socket's
    /// `dtr` and `rts` do. The NodeMCU's adapter has no flow control to offer (its RTS drives
    /// EN, and the chip's CTS is not wired), so every flow-control request is answered "none".
    /// A BREAK holds the adapter's transmit line at space: the client's bytes wait until it
    /// ends, and the chip, whose UART driver ignores a break, sees nothing.
    fn control(&mut self, value: u8, line: &mut dyn Line) {
        let answer = match value {
            FLOW_REQUEST..=3 | 17 | 19 => FLOW_NONE,
            FLOW_IN_REQUEST..=16 | 18 => FLOW_IN_NONE,
            BREAK_ON | BREAK_OFF => {
                self.break_on = value == BREAK_ON;
                value
            }
            BREAK_REQUEST if self.break_on => BREAK_ON,
            BREAK_REQUEST => BREAK_OFF,
            DTR_ON | DTR_OFF => {
                line.set_dtr(value == DTR_ON);
                value
            }
            DTR_REQUEST if line.dtr() => DTR_ON,
            DTR_REQUEST => DTR_OFF,
            RTS_ON | RTS_OFF => {
                line.set_rts(value == RTS_ON);
                value
            }
            RTS_REQUEST if line.rts() => RTS_ON,
            RTS_REQUEST => RTS_OFF,
            _ => {
                tracing::debug!("ignored SET-CONTROL {value}");
                return;
            }
        };
        self.reply(SET_CONTROL, &[answer]);
    }

    fn reply(&mut self, command: u8, value: &[u8]) {
        self.out.extend(com_port_option(command + SERVER, value));
    }

    fn current_linestate(&self) -> u8 {
        if self.rx.is_empty() {
            LINESTATE_TX_EMPTY
        } else {
            0
        }
    }

    /// A change of line state, ANDed with the mask, is sent when the result is not zero (§3).
    fn notify_linestate(&mut self) {
        let now = self.current_linestate();
        if now == self.linestate {
            return;
        }
        self.linestate = now;
        let masked = now & self.linestate_mask;
        if self.him_com.on && masked != 0 {
            self.reply(NOTIFY_LINESTATE, &[masked]);
        }
    }

    /// Whether the client's bytes wait for the wire (not while a BREAK holds it).
    pub fn rx_waiting(&self) -> bool {
        !self.break_on && !self.rx.is_empty()
    }

    /// Moves up to `buf.len()` of the client's bytes onto the wire.
    pub fn take_rx(&mut self, buf: &mut [u8]) -> usize {
        if self.break_on {
            return 0;
        }
        let n = buf.len().min(self.rx.len());
        for (dst, src) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *dst = src;
        }
        self.notify_linestate();
        n
    }

    /// How many of the UART's bytes the session can hold now.
    pub fn uart_room(&self) -> usize {
        DATA_MAX.saturating_sub(self.data.len())
    }

    /// The UART's output, for the client.
    pub fn uart_output(&mut self, bytes: &[u8]) {
        self.data.extend(bytes);
    }

    /// What to send the client next: the replies, then the UART's bytes with IAC doubled.
    /// Empty while the client has suspended the flow.
    pub fn pending(&mut self) -> &[u8] {
        if self.suspended {
            return &[];
        }
        if self.out.is_empty() {
            let n = self.data.len().min(CHUNK);
            for b in self.data.drain(..n) {
                self.out.push_back(b);
                if b == IAC {
                    self.out.push_back(IAC);
                }
            }
        }
        self.out.make_contiguous()
    }

    /// The client took `n` bytes of [`Session::pending`].
    pub fn sent(&mut self, n: usize) {
        self.out.drain(..n);
    }

    /// Whether anything waits to go to the client.
    pub fn has_pending(&self) -> bool {
        !self.suspended && (!self.out.is_empty() || !self.data.is_empty())
    }

    /// Whether the session can take more from the client now.
    pub fn wants_input(&self) -> bool {
        self.rx.len() < RX_MAX && !self.answers_unread()
    }

    /// Whether the client has left [`OUT_MAX`] bytes of answers unread.
    pub fn answers_unread(&self) -> bool {
        self.out.len() >= OUT_MAX
    }

    /// Drops everything waiting for a client that has gone.
    fn discard_output(&mut self) -> bool {
        let had = !(self.out.is_empty() && self.data.is_empty());
        self.out.clear();
        self.data.clear();
        had
    }
}

/// A client on the board's RFC 2217 port.
pub struct Port {
    stream: TcpStream,
    peer: SocketAddr,
    session: Session,
    inbox: VecDeque<u8>,
    /// UART output the pseudo-terminal could not take while this client held the line.
    pub pty_dropped: u64,
    /// The client was last seen leaving its answers unread.
    unread: bool,
    closed: bool,
}

impl Port {
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Port {
        // Replies are small and a flasher waits for each: send them at once.
        let _ = stream.set_nodelay(true);
        tracing::info!("RFC 2217 client {peer} holds the serial line");
        Port {
            stream,
            peer,
            session: Session::new(),
            inbox: VecDeque::new(),
            pty_dropped: 0,
            unread: false,
            closed: false,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the client's bytes wait for the wire.
    pub fn rx_waiting(&self) -> bool {
        self.session.rx_waiting()
    }

    /// Moves up to `buf.len()` of the client's bytes onto the wire.
    pub fn take_rx(&mut self, buf: &mut [u8]) -> usize {
        self.session.take_rx(buf)
    }

    /// How many of the UART's bytes the client's queue can take now; the wire no longer
    /// waits for a client that has gone.
    pub fn uart_room(&self) -> usize {
        if self.closed {
            return usize::MAX;
        }
        self.session.uart_room()
    }

    /// The UART's output, for the client.
    pub fn uart_output(&mut self, bytes: &[u8]) {
        if !self.closed {
            self.session.uart_output(bytes);
        }
    }

    /// The client has gone, and what it sent before it went has crossed the wire: a line
    /// sent just before a close still arrives, as through any serial server.
    pub fn finished(&self) -> bool {
        self.closed && self.inbox.is_empty() && !self.session.rx_waiting()
    }

    /// Moves what can move without waiting: replies and UART output to the client, the
    /// client's bytes into the session. Returns whether anything moved.
    pub fn serve(&mut self, line: &mut dyn Line) -> bool {
        let mut progress = self.flush();
        let mut buf = [0u8; INBOX_MAX];
        let room = INBOX_MAX - self.inbox.len();
        if room > 0 && !self.closed {
            match self.stream.try_read(&mut buf[..room]) {
                Ok(0) => self.closed = true,
                Ok(n) => {
                    self.inbox.extend(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    tracing::debug!("{}: {e}", self.peer);
                    self.closed = true;
                }
            }
        }
        if !self.inbox.is_empty() {
            let taken = self.session.feed(self.inbox.make_contiguous(), line);
            self.inbox.drain(..taken);
            progress |= taken > 0;
        }
        progress |= self.flush();
        let unread = self.session.answers_unread();
        if unread && !self.unread {
            tracing::debug!(
                "{} reads none of its answers: its requests wait until it does",
                self.peer
            );
        }
        self.unread = unread;
        progress
    }

    fn flush(&mut self) -> bool {
        if self.closed {
            return self.session.discard_output();
        }
        let mut progress = false;
        while !self.closed {
            let pending = self.session.pending();
            if pending.is_empty() {
                break;
            }
            match self.stream.try_write(pending) {
                Ok(n) => {
                    self.session.sent(n);
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("{}: {e}", self.peer);
                    self.closed = true;
                }
            }
        }
        progress
    }

    /// Whether the connection may have work for [`Port::serve`]; registers for a wake-up.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> bool {
        let mut ready = false;
        if self.closed {
            return false; // the wire drains what is left, at its own pace
        }
        if self.inbox.len() < INBOX_MAX
            && self.session.wants_input()
            && self.stream.poll_read_ready(cx).is_ready()
        {
            ready = true;
        }
        if self.session.has_pending() && self.stream.poll_write_ready(cx).is_ready() {
            ready = true;
        }
        ready
    }
}

/// What a client that connects while another holds the line is told, before it is closed.
pub const BUSY: &str =
    "virtual-board: the serial port is in use by another RFC 2217 client; try again later\r\n";

/// How long a refused connection is drained before it closes: closing with unread input
/// would reset it, and a reset can discard the refusal before the client reads it.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// How many refused connections may linger at once: past this, a flood of connections gets
/// its line and an immediate close, so it costs the board no more than these.
pub const LINGERING: usize = 8;

/// Refuses a second client: one line, then a close. `linger` is a permit to drain the
/// connection for [`LINGER`] first, out of [`LINGERING`].
pub async fn refuse(
    mut stream: TcpStream,
    peer: SocketAddr,
    linger: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    use tokio::io::AsyncReadExt;
    let Some(_linger) = linger else {
        tracing::debug!("refused RFC 2217 client {peer} at once: {LINGERING} refusals linger");
        let _ = stream.try_write(BUSY.as_bytes());
        return;
    };
    tracing::info!("refused RFC 2217 client {peer}: another holds the serial line");
    if stream.write_all(BUSY.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(1..) = stream.read(&mut sink).await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The board's side: the modem lines and the rate, and every change made to them.
    #[derive(Debug, Default)]
    struct Board {
        dtr: bool,
        rts: bool,
        baud: u32,
        changes: Vec<String>,
    }

    impl Line for Board {
        fn dtr(&self) -> bool {
            self.dtr
        }
        fn rts(&self) -> bool {
            self.rts
        }
        fn set_dtr(&mut self, on: bool) {
            self.dtr = on;
            self.changes.push(format!("dtr {}", u8::from(on)));
        }
        fn set_rts(&mut self, on: bool) {
            self.rts = on;
            self.changes.push(format!("rts {}", u8::from(on)));
        }
        fn baud(&self) -> u32 {
            self.baud
        }
        fn set_baud(&mut self, baud: u32) {
            self.baud = baud;
            self.changes.push(format!("baud {baud}"));
        }
    }

    fn board() -> Board {
        Board {
            baud: 115_200,
            ..Board::default()
        }
    }

    fn out(s: &mut Session) -> Vec<u8> {
        let bytes = s.pending().to_vec();
        s.sent(bytes.len());
        bytes
    }

    fn rx(s: &mut Session) -> Vec<u8> {
        let mut buf = vec![0; RX_MAX];
        let n = s.take_rx(&mut buf);
        buf.truncate(n);
        buf
    }

    /// What pyserial's client sends on open (rfc2217.py:434-440, 471-473) and the server's
    /// greeting's answers (its acknowledgements of our BINARY requests).
    const PYSERIAL_OPEN: [u8; 15] = [
        IAC, DO, 1, IAC, WILL, 3, IAC, DO, 3, IAC, DO, 44, IAC, WILL, 44,
    ];

    /// A session past pyserial's opening, its output read.
    fn agreed(b: &mut Board) -> Session {
        let mut s = Session::new();
        s.feed(&PYSERIAL_OPEN, b);
        s.feed(&[IAC, WILL, BINARY, IAC, DO, BINARY], b);
        out(&mut s);
        s
    }

    #[test]
    fn agrees_to_binary_and_com_port_option_and_refuses_the_rest() {
        let mut b = board();
        let mut s = Session::new();
        assert_eq!(out(&mut s), [IAC, WILL, BINARY, IAC, DO, BINARY]);
        assert_eq!(s.feed(&PYSERIAL_OPEN, &mut b), PYSERIAL_OPEN.len());
        let mut want = vec![
            IAC, WONT, 1, // ECHO
            IAC, DONT, 3, // the client's SGA
            IAC, WONT, 3, // ours
            IAC, WILL, 44, IAC, DO, 44,
        ];
        want.extend(com_port_option(NOTIFY_MODEMSTATE + SERVER, &[0]));
        assert_eq!(out(&mut s), want);
        // The client's acknowledgements of our requests, and requests for what is already
        // agreed, are never answered.
        s.feed(&[IAC, WILL, BINARY, IAC, DO, BINARY, IAC, DO, 44], &mut b);
        assert_eq!(out(&mut s), [0u8; 0]);
        // Turning an agreed option off is acknowledged once.
        s.feed(&[IAC, DONT, BINARY, IAC, DONT, BINARY], &mut b);
        assert_eq!(out(&mut s), [IAC, WONT, BINARY]);
        assert!(b.changes.is_empty());
    }

    #[test]
    fn iac_is_doubled_both_ways() {
        let mut b = board();
        let mut s = agreed(&mut b);
        s.feed(&[b'a', IAC, IAC, b'b', IAC], &mut b);
        s.feed(&[IAC, b'c'], &mut b);
        assert_eq!(rx(&mut s), [b'a', 0xff, b'b', 0xff, b'c']);
        s.uart_output(&[1, 0xff, 2]);
        assert_eq!(out(&mut s), [1, IAC, IAC, 2]);
    }

    #[test]
    fn set_control_drives_the_lines_and_answers_with_the_state() {
        let mut b = board();
        let mut s = agreed(&mut b);
        for (v, want) in [
            (RTS_ON, RTS_ON),
            (RTS_REQUEST, RTS_ON),
            (RTS_OFF, RTS_OFF),
            (DTR_ON, DTR_ON),
            (DTR_REQUEST, DTR_ON),
            (DTR_OFF, DTR_OFF),
            (3, FLOW_NONE), // hardware flow control: there is none
            (FLOW_REQUEST, FLOW_NONE),
            (16, FLOW_IN_NONE),
            (BREAK_REQUEST, BREAK_OFF),
        ] {
            s.feed(&com_port_option(SET_CONTROL, &[v]), &mut b);
            assert_eq!(
                out(&mut s),
                com_port_option(SET_CONTROL + SERVER, &[want]),
                "value {v}"
            );
        }
        assert_eq!(b.changes, ["rts 1", "rts 0", "dtr 1", "dtr 0"]);
        s.feed(&com_port_option(SET_CONTROL, &[99]), &mut b);
        assert_eq!(out(&mut s), [0u8; 0], "an undefined value gets no answer");
    }

    #[test]
    fn a_break_holds_the_clients_bytes_until_it_ends() {
        let mut b = board();
        let mut s = agreed(&mut b);
        s.feed(&com_port_option(SET_CONTROL, &[BREAK_ON]), &mut b);
        s.feed(b"held", &mut b);
        assert!(!s.rx_waiting());
        assert_eq!(rx(&mut s), [0u8; 0]);
        s.feed(&com_port_option(SET_CONTROL, &[BREAK_REQUEST]), &mut b);
        s.feed(&com_port_option(SET_CONTROL, &[BREAK_OFF]), &mut b);
        let mut want = com_port_option(SET_CONTROL + SERVER, &[BREAK_ON]);
        want.extend(com_port_option(SET_CONTROL + SERVER, &[BREAK_ON]));
        want.extend(com_port_option(SET_CONTROL + SERVER, &[BREAK_OFF]));
        assert_eq!(out(&mut s), want);
        assert_eq!(rx(&mut s), b"held");
    }

    #[test]
    fn the_rate_follows_set_baudrate_and_the_frame_stays_8n1() {
        let mut b = board();
        let mut s = agreed(&mut b);
        s.feed(
            &com_port_option(SET_BAUDRATE, &460_800u32.to_be_bytes()),
            &mut b,
        );
        s.feed(&com_port_option(SET_BAUDRATE, &[0, 0, 0, 0]), &mut b);
        let mut want = com_port_option(SET_BAUDRATE + SERVER, &460_800u32.to_be_bytes());
        want.extend(com_port_option(
            SET_BAUDRATE + SERVER,
            &460_800u32.to_be_bytes(),
        ));
        assert_eq!(out(&mut s), want);
        assert_eq!(b.changes, ["baud 460800"], "a query changes nothing");
        // A rate with an IAC byte in it is escaped both ways.
        s.feed(
            &com_port_option(SET_BAUDRATE, &0x0001_c2ffu32.to_be_bytes()),
            &mut b,
        );
        assert_eq!(
            out(&mut s),
            com_port_option(SET_BAUDRATE + SERVER, &[0, 1, 0xc2, 0xff])
        );
        for (command, asked, have) in [
            (SET_DATASIZE, 7, DATASIZE),
            (SET_DATASIZE, 0, DATASIZE),
            (SET_PARITY, 3, PARITY_NONE),
            (SET_STOPSIZE, 2, STOPSIZE_ONE),
        ] {
            s.feed(&com_port_option(command, &[asked]), &mut b);
            assert_eq!(out(&mut s), com_port_option(command + SERVER, &[have]));
        }
    }

    #[test]
    fn masks_notifications_purges_and_signature() {
        let mut b = board();
        let mut s = agreed(&mut b);
        s.feed(&com_port_option(SET_MODEMSTATE_MASK, &[255]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(SET_MODEMSTATE_MASK + SERVER, &[255])
        );
        s.feed(&com_port_option(NOTIFY_MODEMSTATE, &[]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(NOTIFY_MODEMSTATE + SERVER, &[0])
        );
        s.feed(&com_port_option(NOTIFY_LINESTATE, &[]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(NOTIFY_LINESTATE + SERVER, &[0x60])
        );

        // With the transmitter's bits in the mask, their change is notified, once.
        s.feed(&com_port_option(SET_LINESTATE_MASK, &[0x40]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(SET_LINESTATE_MASK + SERVER, &[0x40])
        );
        s.feed(b"xy", &mut b);
        assert_eq!(out(&mut s), [0u8; 0], "the new state ANDs to zero");
        rx(&mut s);
        assert_eq!(
            out(&mut s),
            com_port_option(NOTIFY_LINESTATE + SERVER, &[0x40])
        );

        // PURGE-DATA 1 drops the UART's output not yet sent; 2 the client's bytes.
        s.feed(&com_port_option(SET_LINESTATE_MASK, &[0]), &mut b);
        out(&mut s);
        s.uart_output(b"stale");
        s.feed(b"late", &mut b);
        s.feed(&com_port_option(PURGE_DATA, &[3]), &mut b);
        assert_eq!(out(&mut s), com_port_option(PURGE_DATA + SERVER, &[3]));
        assert_eq!(rx(&mut s), [0u8; 0]);
        s.feed(&com_port_option(PURGE_DATA, &[4]), &mut b);
        assert_eq!(out(&mut s), [0u8; 0], "an undefined purge gets no answer");

        s.feed(&com_port_option(SIGNATURE, &[]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(SIGNATURE + SERVER, SIGNATURE_TEXT.as_bytes())
        );
        s.feed(&com_port_option(SIGNATURE, b"client 1.0"), &mut b);
        assert_eq!(out(&mut s), [0u8; 0]);
    }

    #[test]
    fn a_suspended_client_is_sent_nothing_until_it_resumes() {
        let mut b = board();
        let mut s = agreed(&mut b);
        s.feed(&com_port_option(FLOWCONTROL_SUSPEND, &[]), &mut b);
        s.uart_output(b"wait");
        s.feed(&com_port_option(SET_CONTROL, &[DTR_REQUEST]), &mut b);
        assert!(!s.has_pending());
        assert_eq!(out(&mut s), [0u8; 0]);
        s.feed(&com_port_option(FLOWCONTROL_RESUME, &[]), &mut b);
        let mut want = com_port_option(SET_CONTROL + SERVER, &[DTR_OFF]);
        want.extend(b"wait");
        assert_eq!([out(&mut s), out(&mut s)].concat(), want);
    }

    #[test]
    fn com_port_commands_before_the_option_is_agreed_are_ignored() {
        let mut b = board();
        let mut s = Session::new();
        out(&mut s);
        s.feed(&com_port_option(SET_CONTROL, &[RTS_ON]), &mut b);
        assert_eq!(out(&mut s), [0u8; 0]);
        assert!(b.changes.is_empty());
    }

    #[test]
    fn malformed_subnegotiations_are_dropped_and_the_stream_goes_on() {
        let mut b = board();
        let mut s = agreed(&mut b);
        // Wrong lengths, another option, a stray SE, an empty one.
        let mut input = com_port_option(SET_BAUDRATE, &[1, 2, 3]);
        input.extend(com_port_option(SET_CONTROL, &[]));
        input.extend(com_port_option(SET_CONTROL, &[RTS_ON, RTS_ON]));
        input.extend([IAC, SB, 24, 1, IAC, SE]);
        input.extend([IAC, SE, IAC, SB, IAC, SE]);
        input.extend([IAC, SB, COM_PORT_OPTION, IAC, SE]);
        // Cut short by a negotiation: dropped, and the negotiation is answered.
        input.extend([IAC, SB, COM_PORT_OPTION, SET_CONTROL, IAC, DO, 99]);
        input.extend(b"ok");
        assert_eq!(s.feed(&input, &mut b), input.len());
        assert_eq!(out(&mut s), [IAC, WONT, 99]);
        assert_eq!(rx(&mut s), b"ok");
        assert!(b.changes.is_empty());
        // Longer than SUB_MAX: dropped whole, even though it starts as a valid command.
        let mut long = vec![IAC, SB, COM_PORT_OPTION, SET_CONTROL, RTS_ON];
        long.extend(vec![0; 10 * SUB_MAX]);
        long.extend([IAC, SE]);
        s.feed(&long, &mut b);
        assert_eq!(out(&mut s), [0u8; 0]);
        assert!(
            s.sub.capacity() <= SUB_MAX,
            "held {} bytes",
            s.sub.capacity()
        );
        // A subnegotiation never ended swallows what follows, in bounded memory.
        let mut endless = vec![IAC, SB, COM_PORT_OPTION];
        endless.extend(vec![b'z'; 1 << 20]);
        assert_eq!(s.feed(&endless, &mut b), endless.len());
        assert!(s.sub.capacity() <= SUB_MAX && s.rx.is_empty());
        s.feed(&[IAC, SE], &mut b);
        s.feed(&com_port_option(SET_CONTROL, &[RTS_REQUEST]), &mut b);
        assert_eq!(
            out(&mut s),
            com_port_option(SET_CONTROL + SERVER, &[RTS_OFF])
        );
    }

    #[test]
    fn a_client_that_does_not_read_is_not_read_either() {
        let mut b = board();
        let mut s = agreed(&mut b);
        let flood: Vec<u8> = [IAC, DO, 99].repeat(1 << 16);
        let taken = s.feed(&flood, &mut b);
        assert!(taken < flood.len(), "took all {taken}");
        assert!(s.out.len() < OUT_MAX + 16 && !s.wants_input());
        let data = vec![b'd'; 1 << 16];
        let mut s = agreed(&mut b);
        let taken = s.feed(&data, &mut b);
        assert_eq!(taken, RX_MAX, "the rest waits for the wire");
        assert!(!s.wants_input());
        rx(&mut s);
        assert!(s.wants_input());
    }
}
