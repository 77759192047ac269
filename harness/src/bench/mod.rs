//! Benchmarks: every relay measured the same way, repeated and interleaved, against ser2net.
//!
//! One harness drives every relay through the same hops; each figure is measured in windows of
//! at least half a second, repeated with the relays interleaved, and reported as min, median
//! and max, with ratios to ser2net tuned.

pub mod measure;
pub mod remote;
pub mod report;
pub mod rig;
pub mod setup;

use std::time::Duration;

pub use report::{Machine, Report, Series};
pub use rig::{REFERENCE, Rig};

use crate::error::Result;
use measure::{LINE_LEN, PING_WIRE_BYTES};
use report::{ChipRate, Figures, RelayFigures};

/// What one measurement moves and who takes part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    /// The UART sends to this many clients.
    Fanout(usize),
    /// This many clients send lines to the UART.
    Gather(usize),
    /// One client's short line to the UART and back.
    RoundTrip,
}

impl Measure {
    /// Every measurement a relay takes, in the order of a rep.
    pub const ALL: [Measure; 6] = [
        Measure::Fanout(1),
        Measure::Fanout(2),
        Measure::Fanout(4),
        Measure::Gather(1),
        Measure::Gather(4),
        Measure::RoundTrip,
    ];

    /// The measurements on the chip's terms: four clients, and the round trip.
    pub const CHIP: [Measure; 3] = [Measure::Fanout(4), Measure::Gather(4), Measure::RoundTrip];

    fn clients(self) -> usize {
        match self {
            Measure::Fanout(n) | Measure::Gather(n) => n,
            Measure::RoundTrip => 1,
        }
    }

    pub fn label(self) -> String {
        let clients = |n: usize| {
            if n == 1 {
                "1 client".to_owned()
            } else {
                format!("{n} clients")
            }
        };
        match self {
            Measure::Fanout(n) => format!("UART -> {}", clients(n)),
            Measure::Gather(n) => format!("{} -> UART", clients(n)),
            Measure::RoundTrip => "round trip".into(),
        }
    }

    /// The stem of its figures' names in the JSON: `uart_to_4_clients`, `4_clients_to_uart`.
    fn stem(self) -> String {
        self.label()
            .replace("UART", "uart")
            .replace(" -> ", "_to_")
            .replace(' ', "_")
    }

    /// The largest size asked of it: bytes, lines per client, or pings.
    fn cap(self) -> u64 {
        const BYTES: u64 = 256 << 20;
        match self {
            Measure::Fanout(_) => BYTES,
            Measure::Gather(n) => BYTES / (n * LINE_LEN) as u64,
            Measure::RoundTrip => 100_000,
        }
    }
}

/// How much to measure, and within what bounds.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Each relay measures each figure this many times, the relays in turn.
    pub reps: usize,
    /// Tiny, once, and never resized: only checks that everything works.
    pub smoke: bool,
    /// A window shorter than this is measured again with more data, up to the size cap.
    pub min_window: Duration,
    /// Ceiling for any one measurement.
    pub limit: Duration,
}

/// The bounds on `--reps`.
pub const REPS: std::ops::RangeInclusive<u32> = 1..=100;

impl Plan {
    pub fn full(reps: usize) -> Plan {
        Plan {
            reps,
            smoke: false,
            min_window: Duration::from_millis(500),
            limit: Duration::from_secs(60),
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            reps: 1,
            smoke: true,
            min_window: Duration::ZERO,
            limit: Duration::from_secs(30),
        }
    }

    /// The first size of a measurement: bytes, lines per client, or pings. A paced UART's is a
    /// second of its line rate (a twentieth in a smoke run).
    fn initial(&self, m: Measure, line_rate: Option<f64>) -> u64 {
        let secs = if self.smoke { 0.05 } else { 1.0 };
        let size = match (m, line_rate) {
            (Measure::Fanout(_), Some(rate)) => rate * secs,
            (Measure::Fanout(_), None) => f64::from(if self.smoke { 64 << 10 } else { 8 << 20 }),
            (Measure::Gather(n), Some(rate)) => rate * secs / (n * LINE_LEN) as f64,
            (Measure::Gather(_), None) => {
                if self.smoke {
                    200.0
                } else {
                    8192.0
                }
            }
            // The wire's share of a round trip, and a WiFi round trip's worth besides.
            (Measure::RoundTrip, Some(rate)) => secs / (PING_WIRE_BYTES as f64 / rate + 0.003),
            (Measure::RoundTrip, None) => {
                if self.smoke {
                    50.0
                } else {
                    500.0
                }
            }
        };
        (size as u64).clamp(1, m.cap())
    }

    /// The next size after a window of `secs` that was too short, or `None` if it will do.
    fn grow(&self, m: Measure, size: u64, secs: f64) -> Option<u64> {
        let min = self.min_window.as_secs_f64();
        if self.smoke || secs >= min || size >= m.cap() {
            return None;
        }
        // Aim at 1.5 times the minimum, so that the next window clears it despite jitter.
        let factor = (1.5 * min / secs.max(1e-6)).clamp(1.5, 16.0);
        Some(((size as f64 * factor) as u64).min(m.cap()))
    }
}

/// A paced board that gives the chip-terms figures at one rate: its own rig, or the relay's
/// when the relay is a real board, whose UART is the wire.
pub struct ChipRig {
    pub baud: u32,
    /// The profile it runs.
    pub profile: String,
    /// `None`: the relay's own rig (`rigs[0]`).
    pub rig: Option<Rig>,
}

/// One measurement's outcome, as figures.
enum Outcome {
    Fanout(measure::Fanout),
    Gather(measure::Gather),
    RoundTrip(measure::RoundTrip),
}

impl Outcome {
    fn window(&self) -> Duration {
        match self {
            Outcome::Fanout(f) => f.window,
            Outcome::Gather(g) => g.window,
            Outcome::RoundTrip(r) => r.window,
        }
    }
}

/// Runs `m` on `rig`, growing its size until its window lasts `plan.min_window`; the size that
/// did is kept in `size` for the next rep.
async fn measure_sized(rig: &mut Rig, m: Measure, size: &mut u64, plan: &Plan) -> Result<Outcome> {
    loop {
        let (tcp, limit) = (rig.tcp, plan.limit);
        let serial = rig.serial();
        let out = match m {
            Measure::Fanout(n) => {
                Outcome::Fanout(measure::fanout(serial, tcp, n, *size, limit).await?)
            }
            Measure::Gather(n) => {
                Outcome::Gather(measure::gather(serial, tcp, n, *size, limit).await?)
            }
            Measure::RoundTrip => {
                Outcome::RoundTrip(measure::round_trip(serial, tcp, *size, limit).await?)
            }
        };
        match plan.grow(m, *size, out.window().as_secs_f64()) {
            Some(bigger) => *size = bigger,
            None => return Ok(out),
        }
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}

fn fanout_counts(f: &measure::Fanout) -> [(&'static str, u64); 4] {
    [
        ("bytes_sent", f.bytes),
        // What every client should have got, summed: what `lost_bytes` is out of.
        ("bytes_expected", f.bytes * f.clients as u64),
        ("lost_bytes", f.lost_bytes),
        ("gaps", f.gaps),
    ]
}

/// Files a relay's outcome under its figures.
fn record(figures: &mut Figures, m: Measure, out: &Outcome) {
    let stem = m.stem();
    match out {
        Outcome::Fanout(f) => {
            // What each client got, on average: a relay that drops bytes gets no credit for them.
            let each = f.received as f64 / f.clients as f64;
            figures.series(&stem, "B/s").push(
                Some(each / secs(f.window)),
                f.window,
                &fanout_counts(f),
            );
        }
        Outcome::Gather(g) => {
            let counts = [
                ("lines_sent", g.lines_sent),
                ("lost_lines", g.lines_sent - g.intact_lines),
                ("mixed_lines", g.mixed_lines),
            ];
            let whole = (g.intact_lines * LINE_LEN as u64) as f64 / secs(g.window);
            figures
                .series(&format!("{stem}_lines"), "B/s")
                .push(Some(whole), g.window, &counts);
            figures.series(&format!("{stem}_raw"), "B/s").push(
                Some(g.raw_bytes as f64 / secs(g.window)),
                g.window,
                &[("raw_bytes", g.raw_bytes)],
            );
        }
        Outcome::RoundTrip(r) => {
            for (name, v) in [("p50", r.p50_us), ("p99", r.p99_us), ("max", r.max_us)] {
                figures.series(&format!("round_trip_{name}"), "us").push(
                    Some(v),
                    r.window,
                    &[("pings", r.pings)],
                );
            }
        }
    }
}

/// Files a paced board's outcome as shares of its line rate and the round trip it adds to the
/// wire. A run that lost anything does not count towards the share.
fn record_chip(rate: &mut ChipRate, m: Measure, out: &Outcome) {
    let (line, wire) = (rate.line_bytes_per_sec, rate.wire_round_trip_us);
    let chip_line = rate.chip_line_bytes_per_sec;
    let figures = &mut rate.figures;
    let stem = m.stem();
    match out {
        Outcome::Fanout(f) => {
            let share = (f.lost_bytes == 0).then(|| f.bytes as f64 / secs(f.window) / line);
            figures.series(&format!("{stem}_share"), "share").push(
                share,
                f.window,
                &fanout_counts(f),
            );
        }
        Outcome::Gather(g) => {
            let lost = g.lines_sent - g.intact_lines;
            let share = (lost == 0).then(|| g.raw_bytes as f64 / secs(g.window) / chip_line);
            figures.series(&format!("{stem}_share"), "share").push(
                share,
                g.window,
                &[
                    ("lines_sent", g.lines_sent),
                    ("lost_lines", lost),
                    ("mixed_lines", g.mixed_lines),
                ],
            );
        }
        Outcome::RoundTrip(r) => {
            for (name, v) in [("p50", r.p50_us), ("p99", r.p99_us)] {
                let counts = [("pings", r.pings)];
                figures.series(&format!("round_trip_{name}"), "us").push(
                    Some(v),
                    r.window,
                    &counts,
                );
                figures
                    .series(&format!("round_trip_{name}_added"), "us")
                    .push(Some(v - wire), r.window, &counts);
            }
        }
    }
}

/// Measures every relay in `rigs` (the relay first) and every paced board in `chip`, `plan.reps`
/// times: in each rep every figure is taken on each relay in turn. `progress` hears what is
/// being measured.
pub async fn run(
    rigs: &mut [Rig],
    chip: &mut [ChipRig],
    plan: &Plan,
    machine: Machine,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    let mut relays: Vec<RelayFigures> = rigs
        .iter()
        .map(|r| RelayFigures::new(&r.name, &r.setup))
        .collect();
    let mut rates: Vec<ChipRate> = chip
        .iter()
        .map(|c| {
            let setup = c.rig.as_ref().map_or(&rigs[0].setup, |r| &r.setup);
            ChipRate::new(c.baud, &c.profile, setup)
        })
        .collect();
    let mut sizes = std::collections::HashMap::new();
    let steps: usize = plan.reps
        * (rigs
            .iter()
            .map(|r| {
                Measure::ALL
                    .iter()
                    .filter(|m| m.clients() <= r.max_clients)
                    .count()
            })
            .sum::<usize>()
            + chip.len() * Measure::CHIP.len());
    let mut step = 0;
    for rep in 1..=plan.reps {
        for m in Measure::ALL {
            for (i, rig) in rigs.iter_mut().enumerate() {
                if m.clients() > rig.max_clients {
                    continue;
                }
                step += 1;
                progress(&format!(
                    "[{step}/{steps}] rep {rep}/{}: {}: {}",
                    plan.reps,
                    rig.name,
                    m.label()
                ));
                let size = sizes
                    .entry((rig.name.clone(), m))
                    .or_insert_with(|| plan.initial(m, rig.line_rate));
                let out = measure_sized(rig, m, size, plan).await?;
                record(&mut relays[i].figures, m, &out);
            }
        }
        for (c, rate) in chip.iter_mut().zip(rates.iter_mut()) {
            for m in Measure::CHIP {
                let rig = match c.rig.as_mut() {
                    Some(r) => r,
                    None => &mut rigs[0],
                };
                if m.clients() > rig.max_clients {
                    continue;
                }
                step += 1;
                progress(&format!(
                    "[{step}/{steps}] rep {rep}/{}: relay at {} baud, paced: {}",
                    plan.reps,
                    c.baud,
                    m.label()
                ));
                let size = sizes
                    .entry((format!("paced-{}", c.baud), m))
                    .or_insert_with(|| plan.initial(m, rig.line_rate));
                let out = measure_sized(rig, m, size, plan).await?;
                record_chip(rate, m, &out);
            }
        }
    }
    Ok(Report::new(plan, machine, relays, rates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_named_after_their_measurement() {
        let stems: Vec<String> = Measure::ALL.iter().map(|m| m.stem()).collect();
        assert_eq!(
            stems,
            [
                "uart_to_1_client",
                "uart_to_2_clients",
                "uart_to_4_clients",
                "1_client_to_uart",
                "4_clients_to_uart",
                "round_trip"
            ]
        );
    }

    #[test]
    fn a_short_window_grows_the_size_within_its_cap() {
        let plan = Plan::full(5);
        let m = Measure::Fanout(1);
        assert_eq!(plan.grow(m, 1000, 0.6), None, "long enough");
        assert_eq!(plan.grow(m, 1000, 0.25), Some(3000), "towards 0.75 s");
        assert_eq!(
            plan.grow(m, 1000, 0.0),
            Some(16_000),
            "at most 16 times a step"
        );
        assert_eq!(plan.grow(m, 1000, 0.49), Some(1530), "at least 1.5 times");
        assert_eq!(plan.grow(m, m.cap() - 1, 0.1), Some(m.cap()));
        assert_eq!(plan.grow(m, m.cap(), 0.1), None, "the cap is the last size");
        assert_eq!(
            Plan::smoke().grow(m, 1000, 0.001),
            None,
            "a smoke run never grows"
        );
    }

    #[test]
    fn a_paced_measurement_starts_at_a_second_of_the_line() {
        let plan = Plan::full(5);
        assert_eq!(plan.initial(Measure::Fanout(4), Some(11_520.0)), 11_520);
        assert_eq!(plan.initial(Measure::Gather(4), Some(11_520.0)), 45);
        assert_eq!(plan.initial(Measure::Fanout(4), None), 8 << 20);
    }
}
