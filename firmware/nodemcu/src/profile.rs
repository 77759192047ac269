//! Board profiles: a board's relay limits, UART and ports, shipped (`fixtures/boards/*.toml`,
//! built in) or from a file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use relay_core::{Config, ConfigError};
use serde::Deserialize;

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));

/// The profile used when none is named.
pub const DEFAULT_PROFILE: &str = "nodemcu-v2";

/// The largest profile file read: the shipped ones are under 1 KiB.
pub const PROFILE_MAX: u64 = 64 << 10;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Short name, equal to the file stem.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The core's runtime limits.
    #[serde(default)]
    pub relay: Config,
    #[serde(default)]
    pub uart: UartSection,
    #[serde(default)]
    pub net: NetSection,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub firmware: FirmwareSection,
    /// Where this profile came from.
    #[serde(skip)]
    pub source: Source,
}

/// Where a profile came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Source {
    /// Built in from `fixtures/boards/<name>.toml`.
    #[default]
    Shipped,
    /// Read from this file.
    File(PathBuf),
}

/// What the board behind a profile can be asked to do. A scenario that needs a capability the
/// profile lacks is reported as skipped, with the reason.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Resets through DTR/RTS (the NodeMCU auto-reset circuit) and prints the relay banner.
    pub reset: bool,
    /// Serves the status channel, so scenarios can check counters.
    pub status: bool,
    /// Frames lines and guards against overlong ones (this relay's line mode).
    pub overflow_guard: bool,
    /// Refuses clients beyond `relay.max_clients` with a rejection line.
    pub client_limit: bool,
    /// Closes a client whose queue stays full for `relay.stall_timeout_ms`.
    pub stall_close: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            reset: true,
            status: true,
            overflow_guard: true,
            client_limit: true,
            stall_close: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UartSection {
    /// Line rate in bits per second (8N1: ten bits a byte).
    pub baud: u32,
    /// Pace the virtual board's UART at `baud`, both ways, as the wire does (the default).
    /// Off, the line is infinitely fast and waits for the firmware instead.
    pub pace: bool,
}

impl Default for UartSection {
    fn default() -> Self {
        UartSection {
            baud: 115_200,
            pace: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetSection {
    /// The relay's TCP port on a real board.
    pub port: u16,
    /// The status channel's TCP port; 0 serves none.
    pub status_port: u16,
    /// The TCP stack's pool of connections (lwIP's MEMP_NUM_TCP_PCB: 5 on the ESP8266 core);
    /// 0 when it has no small bound.
    pub tcp_pcbs: usize,
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            port: 8888,
            status_port: 8889,
            tcp_pcbs: 5,
        }
    }
}

/// The firmware build a profile describes: the virtual board runs that build, and a NodeMCU
/// must be flashed with it for the profile's limits to hold.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirmwareSection {
    /// Its PlatformIO environment in firmware/esp8266/platformio.ini.
    pub env: String,
}

impl Default for FirmwareSection {
    fn default() -> Self {
        FirmwareSection {
            env: "nodemcuv2".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown board profile `{name}`; the shipped ones are {known}, or give a .toml path")]
    Unknown { name: String, known: String },
    #[error("cannot read board profile {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("board profile {path} is too big: {source}; a profile is a short TOML file")]
    TooBig {
        path: PathBuf,
        source: crate::bounded::ReadError,
    },
    #[error("malformed board profile {path}: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("invalid board profile {path}: relay.{source}")]
    Invalid { path: PathBuf, source: ConfigError },
    #[error("invalid board profile {path}: {field} {problem}")]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
}

/// A toml error as one line that names the key (`relay.max_line`) and where it stands.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    let Some(span) = e.span() else { return message };
    let before = &text[..span.start.min(text.len())];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.len() - line_start + 1;
    let line = text[line_start..].lines().next().unwrap_or_default();
    // The key on that line, under the last [table] header above it.
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty());
    let table = before.lines().rev().find_map(|l| {
        let l = l.trim();
        l.strip_prefix('[')?.strip_suffix(']').map(str::trim)
    });
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k} (line {line_no}, column {column}): {message}"),
        (None, Some(k)) => format!("{k} (line {line_no}, column {column}): {message}"),
        _ => format!("line {line_no}, column {column}: {message}"),
    }
}

/// Names of the shipped profiles, sorted.
pub fn known_profiles() -> Vec<String> {
    SHIPPED.iter().map(|(name, _)| (*name).to_owned()).collect()
}

impl Profile {
    /// Loads a profile by name (a shipped one) or by path (anything with a `/` or a `.toml`
    /// ending).
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let is_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
        if !is_path {
            let Some((name, text)) = SHIPPED.iter().find(|(n, _)| *n == name_or_path) else {
                return Err(ProfileError::Unknown {
                    name: name_or_path.to_owned(),
                    known: known_profiles().join(", "),
                });
            };
            let mut profile = Profile::parse(text, &shipped_path(name))?;
            profile.source = Source::Shipped;
            return Ok(profile);
        }
        let path = PathBuf::from(name_or_path);
        let read = |source| ProfileError::Read {
            path: path.clone(),
            source,
        };
        let bytes = crate::bounded::read(&path, PROFILE_MAX).map_err(|e| match e {
            crate::bounded::ReadError::Io(e) => read(e),
            too_big => ProfileError::TooBig {
                path: path.clone(),
                source: too_big,
            },
        })?;
        let text = String::from_utf8(bytes)
            .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Profile::parse(&text, &path)
    }

    /// What [`Profile::load`] takes to load this profile again, in another process.
    pub fn load_arg(&self) -> OsString {
        match &self.source {
            Source::Shipped => self.name.clone().into(),
            Source::File(path) => path.clone().into(),
        }
    }

    /// Where it came from, for messages: its file, or its name and `(built in)`.
    pub fn origin(&self) -> String {
        match &self.source {
            Source::Shipped => format!("{} (built in)", self.name),
            Source::File(path) => path.display().to_string(),
        }
    }

    /// Parses and validates profile text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let mut profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Malformed {
            path: path.to_owned(),
            message: one_line(text, &e),
        })?;
        profile.source = Source::File(path.to_owned());
        profile
            .relay
            .check_buildable()
            .map_err(|source| ProfileError::Invalid {
                path: path.to_owned(),
                source,
            })?;
        if profile.uart.baud == 0 {
            return Err(ProfileError::Field {
                path: path.to_owned(),
                field: "uart.baud",
                problem: "must be greater than 0".into(),
            });
        }
        Ok(profile)
    }
}

/// The path a shipped profile's messages name: its file in the source tree.
fn shipped_path(name: &str) -> PathBuf {
    PathBuf::from(format!("fixtures/boards/{name}.toml"))
}
