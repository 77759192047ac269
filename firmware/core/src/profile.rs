//! Board profiles (`fixtures/boards/*.toml`): a board's relay limits, UART and ports.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Config, ConfigError};

/// Where named profiles live unless `RELAY_HIL_BOARDS_DIR` says otherwise.
pub const DEFAULT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/boards");

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
    /// The file this profile was read from: what to hand another process that needs it.
    #[serde(skip)]
    pub source: PathBuf,
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
    #[error("unknown board profile `{name}`; known profiles in {dir}: {known}")]
    Unknown {
        name: String,
        dir: PathBuf,
        known: String,
    },
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

/// The folder named profiles are looked up in.
pub fn profiles_dir() -> PathBuf {
    let dir = std::env::var_os("RELAY_HIL_BOARDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// Names of the profiles in [`profiles_dir`], sorted.
pub fn known_profiles() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(profiles_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    names.sort();
    names
}

impl Profile {
    /// Loads a profile by name (from [`profiles_dir`]) or by path (anything with a `/` or a
    /// `.toml` ending).
    pub fn load(name_or_path: &str) -> Result<Profile, ProfileError> {
        let is_path = name_or_path.contains('/') || name_or_path.ends_with(".toml");
        let path = if is_path {
            PathBuf::from(name_or_path)
        } else {
            let dir = profiles_dir();
            let path = dir.join(format!("{name_or_path}.toml"));
            if !path.is_file() {
                let known = known_profiles();
                let known = if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                };
                return Err(ProfileError::Unknown {
                    name: name_or_path.to_owned(),
                    dir,
                    known,
                });
            }
            path
        };
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

    /// Parses and validates profile text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
        let mut profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Malformed {
            path: path.to_owned(),
            message: one_line(text, &e),
        })?;
        profile.source = path.to_owned();
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
