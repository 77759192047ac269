//! The bench's results: figures, their statistics and ratios, the JSON and the text table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Value, json};

use super::Plan;
use super::measure::PING_WIRE_BYTES;
use super::rig::REFERENCE;

/// Figures that are better when lower: their ratio is the reference's over the relay's.
const LOWER_IS_BETTER: [&str; 2] = ["round_trip_p50", "round_trip_p99"];

/// Figures with no ratio: a maximum is a scheduling outlier, not a property of the relay.
const NO_RATIO: [&str; 1] = ["round_trip_max"];

/// Bridges of the same kind on the ESP8266, as their users have published them: quoted beside
/// the chip-terms figures, never measured here.
pub const PUBLISHED: [Published; 2] = [
    Published {
        bridge: "ESPHome stream_server",
        bytes_per_sec: 50_000.0,
        baud: Some(921_600),
        note: "about 50 KB/s at 921600 baud, with freezes of a second or two \
               (oxan/esphome-stream-server#36)",
    },
    Published {
        bridge: "mavesp8266",
        bytes_per_sec: 20_000.0,
        baud: None,
        note: "about 20 KB/s",
    },
];

#[derive(Clone, Debug, Serialize)]
pub struct Published {
    pub bridge: &'static str,
    pub bytes_per_sec: f64,
    pub baud: Option<u32>,
    pub note: &'static str,
}

/// The machine the figures come from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub ser2net: Option<String>,
    pub socat: Option<String>,
}

impl Machine {
    pub fn here() -> Machine {
        let (ser2net, socat) = super::rig::versions();
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            ser2net,
            socat,
        }
    }
}

/// One figure's runs, in the order they were taken.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub unit: &'static str,
    /// One value per run; `None` for a run that does not count (a paced run that lost data).
    pub runs: Vec<Option<f64>>,
    pub window_secs: Vec<f64>,
    /// Per-run counts (bytes, lost bytes, mixed lines, pings...), each in run order.
    pub counts: Vec<(&'static str, Vec<u64>)>,
}

/// Min, median and max of the runs that count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Series {
    pub fn push(&mut self, value: Option<f64>, window: Duration, counts: &[(&'static str, u64)]) {
        self.runs.push(value);
        self.window_secs.push(window.as_secs_f64());
        for &(name, n) in counts {
            match self.counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, v)) => v.push(n),
                None => self.counts.push((name, vec![n])),
            }
        }
    }

    pub fn stats(&self) -> Option<Stats> {
        let mut v: Vec<f64> = self.runs.iter().flatten().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Stats {
            min: v[0],
            median,
            max: v[v.len() - 1],
        })
    }

    /// The sum of a count over every run.
    pub fn total(&self, name: &str) -> Option<u64> {
        self.counts
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.iter().sum())
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let stats = self.stats();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("unit", self.unit)?;
        m.serialize_entry("min", &stats.map(|x| x.min))?;
        m.serialize_entry("median", &stats.map(|x| x.median))?;
        m.serialize_entry("max", &stats.map(|x| x.max))?;
        m.serialize_entry("runs", &self.runs)?;
        m.serialize_entry("window_secs", &self.window_secs)?;
        for (k, v) in &self.counts {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Named figures in the order they were first taken.
#[derive(Clone, Debug, Default)]
pub struct Figures(pub Vec<(String, Series)>);

impl Figures {
    pub fn series(&mut self, name: &str, unit: &'static str) -> &mut Series {
        let at = match self.0.iter().position(|(k, _)| k == name) {
            Some(i) => i,
            None => {
                self.0.push((
                    name.to_owned(),
                    Series {
                        unit,
                        ..Series::default()
                    },
                ));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    pub fn get(&self, name: &str) -> Option<&Series> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, s)| s)
    }
}

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One relay's figures.
#[derive(Clone, Debug)]
pub struct RelayFigures {
    pub name: String,
    pub setup: String,
    pub figures: Figures,
}

impl RelayFigures {
    pub fn new(name: &str, setup: &str) -> RelayFigures {
        RelayFigures {
            name: name.to_owned(),
            setup: setup.to_owned(),
            figures: Figures::default(),
        }
    }
}

/// The chip-terms figures at one baud rate.
#[derive(Clone, Debug, Serialize)]
pub struct ChipRate {
    pub baud: u32,
    pub profile: String,
    /// How the paced board runs, exactly.
    pub setup: String,
    /// The host's port towards the chip, 8N1: baud / 10.
    pub line_bytes_per_sec: f64,
    /// The chip's UART towards the host: its divider is 80 MHz / baud, truncated
    /// (cores/esp8266/uart.cpp:606), so it runs a little fast of the nominal rate.
    pub chip_line_bytes_per_sec: f64,
    /// The ping and its answer on the wire at this rate: what no relay can take off a round trip.
    pub wire_round_trip_us: f64,
    pub figures: Figures,
}

impl ChipRate {
    pub fn new(baud: u32, profile: &str, setup: &str) -> ChipRate {
        let line = f64::from(baud) / 10.0;
        ChipRate {
            baud,
            profile: profile.to_owned(),
            setup: setup.to_owned(),
            line_bytes_per_sec: line,
            chip_line_bytes_per_sec: virtual_board::wire::Rate::esp8266(baud).bytes_per_sec(),
            wire_round_trip_us: PING_WIRE_BYTES as f64 / line * 1e6,
            figures: Figures::default(),
        }
    }
}

/// Everything a bench run found.
#[derive(Clone, Debug)]
pub struct Report {
    pub smoke: bool,
    pub reps: usize,
    pub min_window_secs: f64,
    pub machine: Machine,
    pub relays: Vec<RelayFigures>,
    pub chip: Vec<ChipRate>,
}

impl Report {
    pub fn new(
        plan: &Plan,
        machine: Machine,
        relays: Vec<RelayFigures>,
        chip: Vec<ChipRate>,
    ) -> Report {
        Report {
            smoke: plan.smoke,
            reps: plan.reps,
            min_window_secs: plan.min_window.as_secs_f64(),
            machine,
            relays,
            chip,
        }
    }

    fn reference(&self) -> Option<&RelayFigures> {
        self.relays.iter().find(|r| r.name == REFERENCE)
    }

    /// Each figure's median against the reference's: ours over theirs, and theirs over ours
    /// where lower is better, so above 1 always means this relay is ahead.
    pub fn ratios(&self, relay: &RelayFigures) -> Vec<(String, f64)> {
        let Some(reference) = self.reference() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, s) in &relay.figures.0 {
            if NO_RATIO.contains(&name.as_str()) {
                continue;
            }
            let (Some(ours), Some(theirs)) = (
                s.stats(),
                reference.figures.get(name).and_then(Series::stats),
            ) else {
                continue;
            };
            let ratio = if LOWER_IS_BETTER.contains(&name.as_str()) {
                theirs.median / ours.median
            } else {
                ours.median / theirs.median
            };
            out.push((name.clone(), ratio));
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> Value {
        let mut relays = serde_json::Map::new();
        for r in &self.relays {
            let ratios: serde_json::Map<String, Value> = self
                .ratios(r)
                .into_iter()
                .map(|(k, v)| (k, json!(v)))
                .collect();
            relays.insert(
                r.name.clone(),
                json!({ "setup": r.setup, "figures": r.figures, "ratios": ratios }),
            );
        }
        let chip = (!self.chip.is_empty()).then(|| {
            json!({
                "rates": self.chip,
                "published": PUBLISHED,
                "published_note": "published by their users; not measured here",
            })
        });
        json!({
            "smoke": self.smoke,
            "reps": self.reps,
            "min_window_secs": self.min_window_secs,
            "reference": self.reference().map(|r| r.name.clone()),
            "machine": self.machine,
            "relays": relays,
            "chip_terms": chip,
        })
    }

    /// The text table: min, median and max for each relay, and the ratio to the reference.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let names: Vec<&str> = self.relays.iter().map(|r| r.name.as_str()).collect();
        let _ = writeln!(
            out,
            "{} rep(s), relays interleaved: {}{}",
            self.reps,
            names.join(", "),
            if self.reference().is_some() {
                format!("; ratio: median against {REFERENCE}'s, above 1 = ahead")
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "{:<24} {:<16} {:>10} {:>10} {:>10} {:<5} {:>6}  notes",
            "figure", "relay", "min", "median", "max", "unit", "ratio"
        );
        let mut names: Vec<&str> = Vec::new();
        for r in &self.relays {
            for (n, _) in &r.figures.0 {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        for figure in names {
            let mut first = true;
            for r in &self.relays {
                let Some(s) = r.figures.get(figure) else {
                    continue;
                };
                let ratio = self
                    .ratios(r)
                    .into_iter()
                    .find(|(k, _)| k == figure)
                    .map_or("-".to_owned(), |(_, v)| format!("{v:.2}"));
                let label = if first { title(figure) } else { String::new() };
                first = false;
                let _ = writeln!(
                    out,
                    "{label:<24} {:<16} {}  {ratio:>6}  {}",
                    r.name,
                    cells(s),
                    notes(s)
                );
            }
        }
        if !self.chip.is_empty() {
            let _ = writeln!(
                out,
                "\nthe relay on the chip's terms: a paced UART, 4 clients, shares of the 8N1 line \
                 rate (a run that lost data does not count)"
            );
            let _ = writeln!(
                out,
                "{:<24} {:<16} {:>10} {:>10} {:>10} {:<5}  notes",
                "figure", "baud", "min", "median", "max", "unit"
            );
            for rate in &self.chip {
                for (name, s) in &rate.figures.0 {
                    let extra = match name.as_str() {
                        // Towards the clients the host's port sets the pace; towards the UART,
                        // the chip's divider.
                        n if n.starts_with("uart_to") && n.ends_with("_share") => {
                            format!("of {:.0} B/s; ", rate.line_bytes_per_sec)
                        }
                        n if n.ends_with("_share") => {
                            format!("of {:.0} B/s; ", rate.chip_line_bytes_per_sec)
                        }
                        n if n.ends_with("_added") => {
                            format!("minus {:.0} us on the wire; ", rate.wire_round_trip_us)
                        }
                        _ => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "{:<24} {:<16} {}  {extra}{}",
                        title(name),
                        rate.baud,
                        cells(s),
                        notes(s)
                    );
                }
            }
            let _ = writeln!(out, "published, not measured here:");
            for p in PUBLISHED {
                let _ = writeln!(out, "  {}: {}", p.bridge, p.note);
            }
        }
        out
    }
}

/// A figure's name as the table shows it.
fn title(name: &str) -> String {
    let mut t = name
        .replace("uart_to_", "UART -> ")
        .replace("_to_uart", " -> UART")
        .replace("round_trip_", "round trip ")
        .replace('_', " ");
    if let Some(rest) = t.strip_suffix(" lines") {
        t = format!("{rest}, lines");
    } else if let Some(rest) = t.strip_suffix(" raw") {
        t = format!("{rest}, raw");
    } else if let Some(rest) = t.strip_suffix(" share") {
        t = rest.to_owned();
    }
    t
}

/// min, median, max and unit, scaled for reading.
fn cells(s: &Series) -> String {
    let (scale, unit, digits) = match s.unit {
        "B/s" => (1e-6, "MB/s", 2),
        "share" => (100.0, "%", 1),
        _ => (1.0, s.unit, 0),
    };
    match s.stats() {
        Some(st) => format!(
            "{:>10.*} {:>10.*} {:>10.*} {unit:<5}",
            digits,
            st.min * scale,
            digits,
            st.median * scale,
            digits,
            st.max * scale
        ),
        None => format!("{:>10} {:>10} {:>10} {unit:<5}", "-", "-", "-"),
    }
}

/// Losses, splices and the shortest window, summed over runs.
fn notes(s: &Series) -> String {
    let mut parts = Vec::new();
    let of = |n: u64, total: Option<u64>| match total {
        Some(t) if t > 0 && n > 0 => format!("{n} of {t} ({:.1}%)", n as f64 * 100.0 / t as f64),
        _ => n.to_string(),
    };
    if let Some(n) = s.total("lost_bytes") {
        parts.push(format!("lost bytes {}", of(n, s.total("bytes_expected"))));
    }
    if let Some(n) = s.total("gaps").filter(|&g| g > 0) {
        parts.push(format!("{n} gaps"));
    }
    for (name, what) in [("lost_lines", "lost lines"), ("mixed_lines", "mixed")] {
        if let Some(n) = s.total(name) {
            parts.push(format!("{what} {}", of(n, s.total("lines_sent"))));
        }
    }
    let shortest = s.window_secs.iter().copied().fold(f64::INFINITY, f64::min);
    if shortest.is_finite() {
        parts.push(format!("window >= {shortest:.2} s"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(values: &[f64]) -> Series {
        let mut s = Series {
            unit: "B/s",
            ..Series::default()
        };
        for &v in values {
            s.push(Some(v), Duration::from_secs(1), &[("lost_bytes", 0)]);
        }
        s
    }

    #[test]
    fn min_median_max_of_odd_and_even_runs() {
        let st = series(&[3.0, 1.0, 2.0]).stats().unwrap();
        assert_eq!((st.min, st.median, st.max), (1.0, 2.0, 3.0));
        assert_eq!(series(&[4.0, 1.0, 2.0, 3.0]).stats().unwrap().median, 2.5);
    }

    #[test]
    fn a_run_that_does_not_count_is_left_out_of_the_stats() {
        let mut s = series(&[2.0]);
        s.push(None, Duration::from_secs(1), &[("lost_bytes", 7)]);
        assert_eq!(s.stats().unwrap().max, 2.0);
        assert_eq!(s.total("lost_bytes"), Some(7));
        assert_eq!(s.runs.len(), s.window_secs.len());
    }

    #[test]
    fn ratios_favour_the_relay_above_one_either_way() {
        let mut ours = RelayFigures::new("relay", "");
        let mut theirs = RelayFigures::new(REFERENCE, "");
        for (r, (rate, p99)) in [(&mut ours, (4.0, 100.0)), (&mut theirs, (2.0, 300.0))] {
            r.figures
                .0
                .push(("uart_to_1_client".into(), series(&[rate])));
            r.figures.0.push(("round_trip_p99".into(), series(&[p99])));
            r.figures.0.push(("round_trip_max".into(), series(&[p99])));
        }
        let plan = Plan::smoke();
        let machine = Machine {
            cores: 1,
            kernel: String::new(),
            ser2net: None,
            socat: None,
        };
        let report = Report::new(&plan, machine, vec![ours, theirs], Vec::new());
        let ratios = report.ratios(&report.relays[0]);
        assert_eq!(
            ratios,
            vec![
                ("uart_to_1_client".to_owned(), 2.0),
                ("round_trip_p99".to_owned(), 3.0)
            ]
        );
    }

    #[test]
    fn titles_read_as_the_figures() {
        assert_eq!(title("uart_to_4_clients"), "UART -> 4 clients");
        assert_eq!(title("4_clients_to_uart_raw"), "4 clients -> UART, raw");
        assert_eq!(title("1_client_to_uart_lines"), "1 client -> UART, lines");
        assert_eq!(title("round_trip_p99_added"), "round trip p99 added");
        assert_eq!(title("uart_to_4_clients_share"), "UART -> 4 clients");
    }
}
