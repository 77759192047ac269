//! Pacing a UART direction at a baud rate, the way a UART's FIFO meets its wire.
//!
//! The wire earns credit at baud/10 bytes per second (8N1) while bytes wait for it, up to the
//! ESP8266's 128-byte FIFO: a loop that wakes late catches up, as a FIFO lets a late CPU do.
//! An idle wire earns nothing, so no stretch of traffic ever outruns the line.

use std::time::{Duration, Instant};

/// The ESP8266 UART's hardware FIFO depth.
pub const FIFO: usize = 128;

#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    /// 8N1 framing: a start bit, eight data bits and a stop bit for every byte.
    pub fn new(baud: u32, now: Instant) -> Pacer {
        Pacer {
            bytes_per_sec: f64::from(baud) / 10.0,
            tokens: 0.0,
            last: now,
        }
    }

    /// Bytes that may move now.
    pub fn available(&mut self, now: Instant) -> usize {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.bytes_per_sec).min(FIFO as f64);
        self.last = now;
        self.tokens as usize
    }

    pub fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }

    /// Nothing is waiting for the wire: it earns no credit until something is.
    pub fn idle(&mut self, now: Instant) {
        self.tokens = 0.0;
        self.last = now;
    }

    /// How long until `n` bytes (at most a FIFO's worth) may move.
    pub fn wait_for(&self, n: usize) -> Duration {
        let missing = (n.min(FIFO) as f64 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.bytes_per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earns_a_tenth_of_the_baud_rate_up_to_one_fifo() {
        let t0 = Instant::now();
        let mut p = Pacer::new(115_200, t0);
        assert_eq!(p.available(t0), 0, "nothing has crossed the wire yet");
        assert_eq!(
            p.available(t0 + Duration::from_millis(5)),
            57,
            "11.52 bytes per ms"
        );
        assert_eq!(
            p.available(t0 + Duration::from_secs(10)),
            FIFO,
            "a late loop catches up one FIFO"
        );
    }

    #[test]
    fn an_idle_wire_earns_nothing() {
        let t0 = Instant::now();
        let mut p = Pacer::new(115_200, t0);
        p.idle(t0 + Duration::from_secs(10));
        assert_eq!(p.available(t0 + Duration::from_secs(10)), 0);
    }

    #[test]
    fn wait_for_is_the_time_to_earn_the_missing_bytes() {
        let p = Pacer::new(9_600, Instant::now());
        assert_eq!(p.wait_for(96), Duration::from_millis(100));
        assert_eq!(
            p.wait_for(10_000),
            p.wait_for(FIFO),
            "never waits for more than a FIFO"
        );
    }
}
