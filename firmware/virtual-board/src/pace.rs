//! Pacing a UART direction at a baud rate: a token bucket as deep as the ESP8266's UART FIFO.

use std::time::{Duration, Instant};

/// The ESP8266 UART's hardware FIFO depth: the most it moves in one burst.
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
            tokens: FIFO as f64,
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

    /// How long until `n` bytes (at most a FIFO's worth) may move.
    pub fn wait_for(&self, n: usize) -> Duration {
        let missing = (n.min(FIFO) as f64 - self.tokens).max(0.0);
        Duration::from_secs_f64(missing / self.bytes_per_sec)
    }

    pub fn full(&self) -> bool {
        self.tokens >= FIFO as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_a_tenth_of_the_baud_rate_up_to_one_fifo() {
        let t0 = Instant::now();
        let mut p = Pacer::new(115_200, t0);
        assert_eq!(p.available(t0), FIFO);
        p.spend(FIFO);
        assert_eq!(p.available(t0), 0);
        assert_eq!(
            p.available(t0 + Duration::from_millis(5)),
            57,
            "11.52 bytes per ms"
        );
        assert_eq!(
            p.available(t0 + Duration::from_secs(10)),
            FIFO,
            "capped at the FIFO"
        );
    }

    #[test]
    fn wait_for_is_the_time_to_earn_the_missing_bytes() {
        let t0 = Instant::now();
        let mut p = Pacer::new(9_600, t0);
        p.spend(FIFO);
        assert_eq!(p.wait_for(96), Duration::from_millis(100));
        assert_eq!(
            p.wait_for(10_000),
            p.wait_for(FIFO),
            "never waits for more than a FIFO"
        );
    }
}
