//! Parses the lines the C core formats: the banner, the status text and the boot line.
//!
//! The core is their one writer (`relay_format_banner`, `relay_format_status`,
//! `relay_format_boot` in relay.c) and this module their one reader; `tests/text.rs` round-trips
//! each through both.

use std::collections::BTreeMap;

use crate::{Config, Eol, Mode};

/// What a banner line starts with.
pub const BANNER_PREFIX: &str = crate::c::BANNER_PREFIX;
/// What the status text's first line starts with.
pub const STATUS_PREFIX: &str = crate::c::STATUS_PREFIX;
/// What the boot line starts with.
pub use crate::provision::BOOT_PREFIX;

/// A line that is not what the core prints, and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unreadable relay line `{line}`: {reason}")]
pub struct ParseError {
    pub line: String,
    pub reason: String,
}

/// A line's `key=value` fields after its prefix.
struct Fields<'a> {
    line: &'a str,
    map: BTreeMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    fn of(line: &'a str, prefix: &str) -> Result<Fields<'a>, ParseError> {
        let rest = line.strip_prefix(prefix).ok_or_else(|| ParseError {
            line: line.to_owned(),
            reason: format!("does not start with `{}`", prefix.trim_end()),
        })?;
        Ok(Fields {
            line,
            map: rest
                .split(' ')
                .filter_map(|kv| kv.split_once('='))
                .collect(),
        })
    }

    fn bad(&self, reason: String) -> ParseError {
        ParseError {
            line: self.line.to_owned(),
            reason,
        }
    }

    fn get(&self, key: &str) -> Result<&'a str, ParseError> {
        self.map
            .get(key)
            .copied()
            .ok_or_else(|| self.bad(format!("no `{key}`")))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T, ParseError> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| self.bad(format!("`{key}={v}` is not a number")))
    }

    /// Every field but `skip`, as a number.
    fn numbers(&self, skip: &str) -> Result<Counters, ParseError> {
        self.map
            .keys()
            .filter(|k| **k != skip)
            .map(|k| Ok(((*k).to_owned(), self.num(k)?)))
            .collect::<Result<_, _>>()
            .map(Counters)
    }
}

/// The banner a relay prints once it serves: who it is, where, and its limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Banner {
    pub version: String,
    pub build: String,
    pub ip: String,
    pub port: u16,
    pub status_port: u16,
    /// The relay's configuration, every field of it.
    pub relay: Config,
}

impl Banner {
    /// Parses one banner line, with or without its line ending.
    pub fn parse(line: &str) -> Result<Banner, ParseError> {
        let f = Fields::of(line.trim_end(), BANNER_PREFIX)?;
        let mode = match f.get("mode")? {
            "line" => Mode::Line,
            "raw" => Mode::Raw,
            other => return Err(f.bad(format!("unknown mode `{other}`"))),
        };
        let eol = match f.get("eol")? {
            "lf" => Eol::Lf,
            "cr" => Eol::Cr,
            "crlf" => Eol::Crlf,
            other => return Err(f.bad(format!("unknown eol `{other}`"))),
        };
        Ok(Banner {
            version: f.get("version")?.to_owned(),
            build: f.get("build")?.to_owned(),
            ip: f.get("ip")?.to_owned(),
            port: f.num("port")?,
            status_port: f.num("status_port")?,
            relay: Config {
                max_clients: f.num("max_clients")?,
                max_line: f.num("max_line")?,
                txq_size: f.num("txq")?,
                uartq_size: f.num("uartq")?,
                stall_timeout_ms: f.num("stall_ms")?,
                mode,
                eol,
            },
        })
    }
}

/// Named counters of one status line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// The counter's value; `None` if the line has no such field.
    pub fn get(&self, key: &str) -> Option<u64> {
        self.0.get(key).copied()
    }

    /// How far `key` moved since `before` (a field missing from either counts as 0).
    pub fn delta(&self, before: &Counters, key: &str) -> i64 {
        let at = |c: &Counters| c.get(key).unwrap_or(0) as i64;
        at(self) - at(before)
    }
}

/// The status channel's text: the relay's counters, then one line per open client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub version: String,
    /// The relay's counters (and `clients`, `max_clients`, `uartq`, `uptime_ms`).
    pub relay: Counters,
    /// Each open client's counters, `slot` and `id` among them, in slot order.
    pub clients: Vec<Counters>,
}

impl Status {
    /// Parses a whole status text; one cut short (no `end` line) is refused.
    pub fn parse(text: &str) -> Result<Status, ParseError> {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let head = Fields::of(first, STATUS_PREFIX)?;
        let version = head.get("version")?.to_owned();
        let relay = head.numbers("version")?;
        let mut clients = Vec::new();
        for line in lines {
            if line == "end" {
                return Ok(Status {
                    version,
                    relay,
                    clients,
                });
            }
            clients.push(Fields::of(line, "client ")?.numbers("")?);
        }
        Err(ParseError {
            line: text.lines().last().unwrap_or_default().to_owned(),
            reason: "the status text ends before its `end` line".to_owned(),
        })
    }
}

/// The firmware's boot line: its build, and the digest of its WiFi credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub version: String,
    pub build: String,
    /// `None`: the board has no credentials and waits for some.
    pub wifi: Option<String>,
    /// How long it listens for a provisioning request.
    pub listen_ms: u32,
}

impl Boot {
    /// Parses one boot line, with or without its line ending.
    pub fn parse(line: &str) -> Result<Boot, ParseError> {
        let f = Fields::of(line.trim_end(), BOOT_PREFIX)?;
        Ok(Boot {
            version: f.get("version")?.to_owned(),
            build: f.get("build")?.to_owned(),
            wifi: Some(f.get("wifi")?)
                .filter(|w| *w != "none")
                .map(str::to_owned),
            listen_ms: f.num("listen_ms")?,
        })
    }
}
