//! A plain Rust model of the relay contract (firmware/core/README.md), written from the text
//! rather than from relay.c, for differential testing against the C core.

use std::collections::VecDeque;

use relay_core::{ClientStats, Config, Mode, NOTICE_MAX, Stats};

/// Where a client's telnet command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Telnet {
    Data,
    Iac,
    /// After WILL, WONT, DO or DONT: the option comes next.
    Verb(u8),
    Sub,
    SubIac,
}

const IAC: u8 = 255;

#[derive(Debug)]
struct Client {
    line: Vec<u8>,
    after_cr: bool,
    telnet: Telnet,
    /// It sent a telnet command: 0xFF from the UART reaches it doubled.
    speaks_telnet: bool,
    overlong: bool,
    queue: VecDeque<u8>,
    /// When the queue first overflowed, until it drains to half.
    overflowed_at: Option<u32>,
    closing: bool,
    c: ClientStats,
}

#[derive(Debug)]
pub struct Model {
    cfg: Config,
    now: u32,
    uart: VecDeque<u8>,
    /// Slots whose completed unit found no room, in the order they were refused.
    waiting: VecDeque<usize>,
    slots: Vec<Option<Client>>,
    next_id: u32,
    pub g: Stats,
}

impl Model {
    pub fn new(cfg: Config, now: u32) -> Model {
        Model {
            cfg,
            now,
            uart: VecDeque::new(),
            waiting: VecDeque::new(),
            slots: (0..cfg.max_clients).map(|_| None).collect(),
            next_id: 1,
            g: Stats::default(),
        }
    }

    /// The id the next accepted connection gets (Relay::set_next_id).
    pub fn set_next_id(&mut self, id: u32) {
        self.next_id = id;
    }

    pub fn accept(&mut self) -> Option<usize> {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            self.g.rejected += 1;
            return None;
        };
        self.slots[slot] = Some(Client {
            line: Vec::new(),
            after_cr: false,
            telnet: Telnet::Data,
            speaks_telnet: false,
            overlong: false,
            queue: VecDeque::new(),
            overflowed_at: None,
            closing: false,
            c: ClientStats {
                id: self.next_id,
                ..Default::default()
            },
        });
        // 0 is a free slot's id: after u32::MAX, ids start again at 1.
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.g.accepted += 1;
        Some(slot)
    }

    fn open(&self, slot: usize) -> bool {
        matches!(self.slots.get(slot), Some(Some(c)) if !c.closing)
    }

    /// A unit may go to the UART when no other slot is waiting ahead of it and it fits whole.
    fn may_commit(&self, slot: usize, need: usize) -> bool {
        let first = self.waiting.front().is_none_or(|&s| s == slot);
        first && self.cfg.uartq_size - self.uart.len() >= need
    }

    fn wait(&mut self, slot: usize) {
        if !self.waiting.contains(&slot) {
            self.waiting.push_back(slot);
        }
    }

    fn commit(&mut self, slot: usize, unit: &[u8]) {
        self.uart.extend(unit);
        if self.waiting.front() == Some(&slot) {
            self.waiting.pop_front();
        }
        self.slots[slot].as_mut().unwrap().c.lines += 1;
    }

    fn queue_to(&mut self, slot: usize, bytes: &[u8], whole_or_nothing: bool) {
        let now = self.now;
        let cap = self.cfg.txq_size;
        let c = self.slots[slot].as_mut().unwrap();
        let room = cap - c.queue.len();
        let take = if bytes.len() <= room {
            bytes.len()
        } else if whole_or_nothing {
            0
        } else {
            room
        };
        c.queue.extend(&bytes[..take]);
        c.c.txq_high = c.c.txq_high.max(c.queue.len() as u32);
        let dropped = (bytes.len() - take) as u64;
        if dropped > 0 {
            c.c.drops += dropped;
            self.g.drops += dropped;
            c.overflowed_at.get_or_insert(now);
        }
    }

    pub fn client_input(&mut self, slot: usize, data: &[u8]) -> usize {
        if !self.open(slot) || data.is_empty() {
            return 0;
        }
        let n = match self.cfg.mode {
            Mode::Raw => {
                let chunk = &data[..data.len().min(self.cfg.max_line)];
                if !self.may_commit(slot, chunk.len()) {
                    self.wait(slot);
                    return 0;
                }
                self.commit(slot, chunk);
                chunk.len()
            }
            Mode::Line => self.input_line(slot, data),
        };
        self.slots[slot].as_mut().unwrap().c.bytes_in += n as u64;
        n
    }

    fn input_line(&mut self, slot: usize, data: &[u8]) -> usize {
        let eol = self.cfg.eol.bytes();
        for (i, &b) in data.iter().enumerate() {
            let c = self.slots[slot].as_mut().unwrap();
            // Telnet first: its commands are out of band, so CR, command, LF is still CR LF.
            if c.telnet != Telnet::Data || b == IAC {
                if self.telnet(slot, b) {
                    let c = self.slots[slot].as_mut().unwrap();
                    c.after_cr = false;
                    self.content(slot, IAC);
                }
                continue;
            }
            if std::mem::take(&mut c.after_cr) && (b == b'\n' || b == 0) {
                continue; // the LF of a CR LF, or the NUL of telnet's bare CR
            }
            match b {
                b'\r' | b'\n' => {
                    if c.overlong {
                        c.overlong = false;
                    } else {
                        let mut unit = c.line.clone();
                        unit.extend_from_slice(eol);
                        if !self.may_commit(slot, unit.len()) {
                            self.wait(slot);
                            return i;
                        }
                        self.commit(slot, &unit);
                    }
                    let c = self.slots[slot].as_mut().unwrap();
                    c.line.clear();
                    c.after_cr = b == b'\r';
                }
                _ => self.content(slot, b),
            }
        }
        data.len()
    }

    /// A byte of line content: kept, or the overflow guard.
    fn content(&mut self, slot: usize, b: u8) {
        let c = self.slots[slot].as_mut().unwrap();
        if c.overlong {
            return;
        }
        if c.line.len() < self.cfg.max_line {
            c.line.push(b);
            return;
        }
        c.line.clear();
        c.overlong = true;
        c.c.overflows += 1;
        self.g.overflows += 1;
        let notice = format!("!relay overflow max_line={}\r\n", self.cfg.max_line);
        assert!(notice.len() < NOTICE_MAX);
        self.queue_to(slot, notice.as_bytes(), true);
    }

    /// One byte of a telnet command; true when it stands for a 0xFF data byte. The relay
    /// refuses every option (WILL gets DONT, DO gets WONT) but DO TIMING-MARK, which gets WILL;
    /// WONT and DONT get nothing; subnegotiation is skipped to IAC SE.
    fn telnet(&mut self, slot: usize, b: u8) -> bool {
        let c = self.slots[slot].as_mut().unwrap();
        let (next, reply) = match (c.telnet, b) {
            (Telnet::Data, _) => (Telnet::Iac, None),
            (Telnet::Iac, IAC) => {
                c.speaks_telnet = true;
                c.telnet = Telnet::Data;
                return true;
            }
            (Telnet::Iac, 251..=254) => (Telnet::Verb(b), None),
            (Telnet::Iac, 250) => (Telnet::Sub, None),
            (Telnet::Iac, _) => (Telnet::Data, None),
            (Telnet::Verb(251), opt) => (Telnet::Data, Some([IAC, 254, opt])),
            (Telnet::Verb(253), 6) => (Telnet::Data, Some([IAC, 251, 6])),
            (Telnet::Verb(253), opt) => (Telnet::Data, Some([IAC, 252, opt])),
            (Telnet::Verb(_), _) => (Telnet::Data, None),
            (Telnet::Sub, IAC) => (Telnet::SubIac, None),
            (Telnet::Sub, _) => (Telnet::Sub, None),
            (Telnet::SubIac, 240) => (Telnet::Data, None),
            (Telnet::SubIac, _) => (Telnet::Sub, None),
        };
        if c.telnet == Telnet::Iac {
            c.speaks_telnet = true;
        }
        c.telnet = next;
        if let Some(r) = reply {
            self.queue_to(slot, &r, true);
        }
        false
    }

    fn free(&mut self, slot: usize) {
        let c = self.slots[slot].take().unwrap();
        if !c.line.is_empty() || c.overlong {
            self.g.partial_discards += 1;
        }
        self.waiting.retain(|&s| s != slot);
        self.g.disconnects += 1;
    }

    pub fn client_closed(&mut self, slot: usize) {
        if matches!(self.slots.get(slot), Some(Some(_))) {
            self.free(slot);
        }
    }

    pub fn uart_input(&mut self, data: &[u8]) {
        self.g.uart_rx += data.len() as u64;
        for slot in 0..self.slots.len() {
            if !self.open(slot) || data.is_empty() {
                continue;
            }
            if !self.slots[slot].as_ref().unwrap().speaks_telnet {
                self.queue_to(slot, data, false);
                continue;
            }
            // Each 0xFF doubled, the pair queued whole or not at all.
            for (k, run) in data.split(|&b| b == IAC).enumerate() {
                if k > 0 {
                    self.queue_to(slot, &[IAC, IAC], true);
                }
                self.queue_to(slot, run, false);
            }
        }
    }

    /// The contract: the platform reports each overflow of its UART receive buffer once.
    pub fn uart_overrun(&mut self) {
        self.g.uart_overruns += 1;
    }

    pub fn tick(&mut self, now: u32) {
        self.g.uptime_ms += u64::from(now.wrapping_sub(self.now));
        self.now = now;
        let timeout = self.cfg.stall_timeout_ms;
        if timeout == 0 {
            return;
        }
        for slot in 0..self.slots.len() {
            if let Some(c) = self.slots[slot].as_mut()
                && !c.closing
                && c.overflowed_at
                    .is_some_and(|t| now.wrapping_sub(t) >= timeout)
            {
                c.closing = true;
                self.g.stalls += 1;
                self.waiting.retain(|&s| s != slot);
            }
        }
    }

    pub fn uart_take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.uart.len());
        self.g.uart_tx += n as u64;
        self.uart.drain(..n).collect()
    }

    pub fn client_take(&mut self, slot: usize, n: usize) -> Vec<u8> {
        if !self.open(slot) {
            return Vec::new();
        }
        let half = self.cfg.txq_size / 2;
        let c = self.slots[slot].as_mut().unwrap();
        let n = n.min(c.queue.len());
        c.c.bytes_out += n as u64;
        let out: Vec<u8> = c.queue.drain(..n).collect();
        if c.queue.len() <= half {
            c.overflowed_at = None;
        }
        out
    }

    pub fn next_close(&mut self) -> Option<usize> {
        let slot = self
            .slots
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.closing))?;
        self.free(slot);
        Some(slot)
    }

    pub fn client_counters(&self, slot: usize) -> Option<ClientStats> {
        self.slots.get(slot)?.as_ref().map(|c| c.c)
    }

    pub fn is_open(&self, slot: usize) -> bool {
        self.open(slot)
    }
}
