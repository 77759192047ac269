//! The UART line between the chip and the host's serial port, one direction at a time.
//!
//! Characters leave their transmitter back to back at its rate (8N1: ten bits each) and reach
//! the receiver as its UART samples them at its own rate. Paced, each character arrives when
//! its stop bit ends, never sooner, so a stretch of traffic can never beat the line; a late
//! reader catches up at once, since the wire kept time while it slept. Two rates too far apart
//! turn characters into the garbage a real line shows: the receiver finds a start bit on each
//! falling edge and samples every bit at its middle, by its own clock.

use std::collections::VecDeque;

/// A rate on the line, in bits per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate(f64);

/// ESP8266_CLOCK (cores/esp8266/esp8266_peri.h:32): the UART's clock.
const UART_CLOCK_HZ: u32 = 80_000_000;

impl Rate {
    /// Exactly `baud`: what a host's serial port is set to.
    pub fn nominal(baud: u32) -> Rate {
        Rate(f64::from(baud.max(1)))
    }

    /// What the ESP8266's UART runs at when a sketch asks for `baud`: the divider is
    /// 80 MHz / baud, truncated (cores/esp8266/uart.cpp:606), so most rates come out fast:
    /// 115200 runs at 115,274 and 921600 at 930,233.
    pub fn esp8266(baud: u32) -> Rate {
        let div = (UART_CLOCK_HZ / baud.max(1)).max(1);
        Rate(f64::from(UART_CLOCK_HZ) / f64::from(div))
    }

    pub fn bits_per_sec(self) -> f64 {
        self.0
    }

    /// Bytes per second at 8N1.
    pub fn bytes_per_sec(self) -> f64 {
        self.0 / 10.0
    }

    fn bit_ns(self) -> f64 {
        1e9 / self.0
    }

    fn char_ns(self) -> f64 {
        1e10 / self.0
    }

    /// Whether a receiver at `rx` reads every character of a transmitter at `self` right, even
    /// back to back: each of its samples, the stop bit's at 9.5 of its bits, must fall inside
    /// the bit it means to read.
    pub fn readable_at(self, rx: Rate) -> bool {
        let r = self.0 / rx.0;
        r > 9.0 / 9.5 && r < 10.0 / 9.5
    }
}

/// A character on the wire: when its start bit began, how long it lasts, and its bits.
#[derive(Clone, Copy, Debug)]
struct Char {
    start: f64,
    len: f64,
    byte: u8,
}

impl Char {
    fn end(&self) -> f64 {
        self.start + self.len
    }

    /// The line's level at `t`, inside this character: start bit low, data LSB first, stop
    /// bit high.
    fn level(&self, t: f64) -> bool {
        match ((t - self.start) / (self.len / 10.0)) as usize {
            0 => false,
            j @ 1..=8 => self.byte >> (j - 1) & 1 == 1,
            _ => true,
        }
    }

    /// Falling edges inside this character at or after `from`: the start bit's, and each
    /// data bit that falls from a one.
    fn falling_edge(&self, from: f64) -> Option<f64> {
        let bit = self.len / 10.0;
        if self.start >= from {
            return Some(self.start);
        }
        (2..=8)
            .filter(|&j| self.byte >> (j - 2) & 1 == 1 && self.byte >> (j - 1) & 1 == 0)
            .map(|j| self.start + j as f64 * bit)
            .find(|&t| t >= from)
    }
}

/// One direction of the line. Times are nanoseconds on the board's clock.
#[derive(Debug)]
pub struct Direction {
    paced: bool,
    tx: Rate,
    rx: Rate,
    /// When the last character on the wire ends.
    free_at: f64,
    /// Characters sent and not yet received, oldest first.
    wire: VecDeque<Char>,
    /// Garbling: where the receiver looks for its next start bit.
    search_from: f64,
}

impl Direction {
    /// Unpaced, the wire is infinitely fast: a character arrives as it is sent, though rates
    /// that disagree still garble it.
    pub fn new(paced: bool, tx: Rate, rx: Rate) -> Direction {
        Direction {
            paced,
            tx,
            rx,
            free_at: 0.0,
            wire: VecDeque::new(),
            search_from: 0.0,
        }
    }

    pub fn paced(&self) -> bool {
        self.paced
    }

    pub fn tx(&self) -> Rate {
        self.tx
    }

    pub fn rx(&self) -> Rate {
        self.rx
    }

    /// The transmitter's rate, for characters sent from now on.
    pub fn set_tx(&mut self, tx: Rate) {
        self.tx = tx;
    }

    /// The receiver's rate, for characters it has not read yet.
    pub fn set_rx(&mut self, rx: Rate) {
        self.rx = rx;
    }

    fn faithful(&self) -> bool {
        self.tx.readable_at(self.rx)
    }

    /// Puts `bytes` on the wire at `now`, after whatever it is still carrying.
    pub fn send(&mut self, now: f64, bytes: &[u8]) {
        let len = self.tx.char_ns();
        // Unpaced, time stands still: characters follow each other on a virtual line, only so
        // that a receiver at another rate can misread them.
        let mut start = if self.paced {
            self.free_at.max(now)
        } else {
            self.free_at
        };
        if !self.paced && self.wire.is_empty() && self.faithful() {
            // Nothing to time and nothing to garble: skip the bookkeeping.
            self.free_at = 0.0;
            self.search_from = 0.0;
            start = 0.0;
        }
        for &byte in bytes {
            self.wire.push_back(Char { start, len, byte });
            start += len;
        }
        self.free_at = start;
    }

    /// Characters on the wire, not yet received.
    pub fn on_wire(&self) -> usize {
        self.wire.len()
    }

    /// When the wire has carried everything sent so far (paced).
    pub fn free_at(&self) -> f64 {
        self.free_at
    }

    /// When the next character is due, if one is on its way.
    pub fn next_due(&self) -> Option<f64> {
        if !self.paced {
            return (!self.wire.is_empty()).then_some(0.0);
        }
        let first = self.wire.front()?;
        if self.faithful() {
            Some(first.end())
        } else {
            // Whatever the receiver makes of it, it knows once a frame of its own has passed.
            Some(first.start.max(self.search_from) + 10.0 * self.rx.bit_ns())
        }
    }

    /// Sends `bytes` and moves into `out` whatever the receiver has by `now`: unpaced and
    /// with rates that agree, straight through.
    pub fn transmit(&mut self, now: f64, bytes: &[u8], out: &mut impl Extend<u8>) -> usize {
        if !self.paced && self.wire.is_empty() && self.faithful() {
            out.extend(bytes.iter().copied());
            return bytes.len();
        }
        self.send(now, bytes);
        self.receive(now, out)
    }

    /// Moves into `out` what the receiver has read by `now`; returns how many bytes.
    pub fn receive(&mut self, now: f64, out: &mut impl Extend<u8>) -> usize {
        let now = if self.paced { now } else { f64::INFINITY };
        if self.faithful() {
            let mut n = 0;
            while let Some(c) = self.wire.front() {
                if c.end() > now {
                    break;
                }
                out.extend(std::iter::once(c.byte));
                self.search_from = c.end();
                self.wire.pop_front();
                n += 1;
            }
            return n;
        }
        self.decode(now, out)
    }

    /// An ideal UART at the receiver's rate: a falling edge starts a frame, each bit is
    /// sampled at its middle, and a low stop bit (a framing error) still delivers the byte,
    /// as a raw-mode terminal does.
    fn decode(&mut self, now: f64, out: &mut impl Extend<u8>) -> usize {
        let bit = self.rx.bit_ns();
        let mut n = 0;
        loop {
            // The line after the last character is idle (high): it has no edges, so once the
            // wire is empty the receiver has nothing more to read.
            let Some(edge) = self.next_falling_edge(self.search_from) else {
                if let Some(last) = self.wire.back() {
                    self.search_from = self.search_from.max(last.end());
                }
                self.wire.clear();
                return n;
            };
            let stop = edge + 9.5 * bit;
            // Unpaced, a frame may run past the last character into the idle line.
            if stop > now {
                return n;
            }
            let mut byte = 0u8;
            for i in 0..8 {
                if self.level(edge + (1.5 + f64::from(i)) * bit) {
                    byte |= 1 << i;
                }
            }
            out.extend(std::iter::once(byte));
            n += 1;
            self.search_from = stop;
            while self.wire.front().is_some_and(|c| c.end() <= stop) {
                self.wire.pop_front();
            }
        }
    }

    /// The first character still on the line at `t`; characters never overlap, so their ends
    /// are in order.
    fn first_ending_after(&self, t: f64) -> usize {
        self.wire.partition_point(|c| c.end() <= t)
    }

    fn level(&self, t: f64) -> bool {
        self.wire
            .get(self.first_ending_after(t))
            .filter(|c| c.start <= t)
            .is_none_or(|c| c.level(t))
    }

    fn next_falling_edge(&self, from: f64) -> Option<f64> {
        self.wire
            .range(self.first_ending_after(from)..)
            .find_map(|c| c.falling_edge(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn receive_all(d: &mut Direction) -> Vec<u8> {
        let mut out = Vec::new();
        d.receive(f64::INFINITY, &mut out);
        out
    }

    #[test]
    fn the_esp8266_divider_runs_fast_of_most_rates() {
        assert!((Rate::esp8266(115_200).bits_per_sec() - 115_273.775).abs() < 0.01);
        assert!((Rate::esp8266(921_600).bits_per_sec() - 930_232.558).abs() < 0.01);
        assert_eq!(Rate::esp8266(74_880), Rate::esp8266(74_880));
        assert!((Rate::esp8266(3_000_000).bits_per_sec() - 3_076_923.077).abs() < 0.01);
    }

    #[test]
    fn a_paced_character_arrives_when_its_stop_bit_ends_and_never_sooner() {
        let rate = Rate::nominal(9_600); // 1,041,667 ns a character
        let mut d = Direction::new(true, rate, rate);
        d.send(0.0, b"ab");
        let mut out = Vec::new();
        assert_eq!(d.receive(1.041 * MS, &mut out), 0);
        assert_eq!(d.receive(1.042 * MS, &mut out), 1);
        assert_eq!(d.next_due(), Some(2.0 * 1e10 / 9600.0));
        // A late reader gets everything the wire carried meanwhile.
        assert_eq!(d.receive(50.0 * MS, &mut out), 1);
        assert_eq!(out, b"ab");
    }

    #[test]
    fn back_to_back_characters_keep_the_line_rate_exactly() {
        let rate = Rate::esp8266(921_600);
        let mut d = Direction::new(true, rate, Rate::nominal(921_600));
        let data = vec![0x5a; 93_023];
        d.send(0.0, &data);
        let mut out = Vec::new();
        // One second of line carries 93,023.26 characters.
        d.receive(1000.0 * MS, &mut out);
        assert_eq!(out.len(), 93_023);
        // An idle wire earns nothing: a later send starts then.
        d.send(5000.0 * MS, b"x");
        assert_eq!(d.next_due(), Some(5000.0 * MS + rate.char_ns()));
    }

    #[test]
    fn rates_within_the_receivers_tolerance_read_right() {
        let text = b"relay ready \x00\xff\x55\xaa";
        for (tx, rx) in [
            (Rate::esp8266(921_600), Rate::nominal(921_600)),
            (Rate::nominal(115_200), Rate::nominal(119_000)),
            (Rate::nominal(115_200), Rate::nominal(111_000)),
        ] {
            let mut d = Direction::new(true, tx, rx);
            d.send(0.0, text);
            assert_eq!(receive_all(&mut d), text, "{tx:?} read at {rx:?}");
        }
        assert!(!Rate::nominal(115_200).readable_at(Rate::nominal(109_000)));
    }

    #[test]
    fn a_faster_receiver_reads_the_classic_garbage() {
        // 0xff at 115200 read at 230400: the start bit lasts two of the receiver's bits, so
        // its first data bit reads low.
        let mut d = Direction::new(true, Rate::nominal(115_200), Rate::nominal(230_400));
        d.send(0.0, &[0xff]);
        assert_eq!(receive_all(&mut d), [0xfe]);
        // 0x00 is nine bits low: one zero byte (with a framing error), then idle.
        d.send(10.0 * MS, &[0x00]);
        assert_eq!(receive_all(&mut d), [0x00]);
    }

    #[test]
    fn the_roms_74880_text_is_garbage_at_115200() {
        let text = b"ets Jan  8 2013,rst cause:2, boot mode:(3,6)\r\n";
        let mut d = Direction::new(true, Rate::nominal(74_880), Rate::nominal(115_200));
        d.send(0.0, text);
        let got = receive_all(&mut d);
        assert_ne!(got, text);
        assert!(!got.is_empty());
        assert!(!got.windows(3).any(|w| w == b"ets"), "{got:?}");
    }

    #[test]
    fn unpaced_is_instant_but_still_garbles_a_mismatch() {
        let mut d = Direction::new(false, Rate::nominal(115_200), Rate::nominal(115_200));
        d.send(0.0, b"hello");
        let mut out = Vec::new();
        d.receive(0.0, &mut out);
        assert_eq!(out, b"hello");
        let mut d = Direction::new(false, Rate::nominal(115_200), Rate::nominal(230_400));
        d.send(0.0, &[0xff, 0xff]);
        assert_eq!(receive_all(&mut d), [0xfe, 0xfe]);
    }

    #[test]
    fn a_receiver_that_changes_rate_reads_what_follows_at_the_new_one() {
        let mut d = Direction::new(true, Rate::nominal(74_880), Rate::nominal(115_200));
        d.send(0.0, b"boot text");
        let mut junk = Vec::new();
        d.receive(10.0 * MS, &mut junk);
        d.set_tx(Rate::nominal(115_200));
        d.send(20.0 * MS, b"relay");
        assert_eq!(receive_all(&mut d), b"relay");
    }
}
