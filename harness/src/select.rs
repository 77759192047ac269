//! Choosing the board under test from flags or environment variables.

use std::path::PathBuf;
use std::time::Duration;

use nodemcu::profile::{DEFAULT_PROFILE, Profile};
use relay_core::provision::Wifi;

use crate::board::{BoardKind, OpenOptions, Target};
use crate::error::{Result, UsageError};

/// The environment variables, each the same as the flag of the same name.
pub const ENV_PORT: &str = "RELAY_HIL_PORT";
pub const ENV_SERIAL: &str = "RELAY_HIL_SERIAL";
pub const ENV_ADDR: &str = "RELAY_HIL_ADDR";
pub const ENV_PROFILE: &str = "RELAY_HIL_PROFILE";
pub const ENV_BANNER_TIMEOUT: &str = "RELAY_HIL_BANNER_TIMEOUT";
/// WiFi credentials a board is provisioned with over its UART (never a flag: flags show in
/// `ps`). The password may be unset or empty for an open network.
pub const ENV_WIFI_SSID: &str = "RELAY_HIL_WIFI_SSID";
pub const ENV_WIFI_PASSWORD: &str = "RELAY_HIL_WIFI_PASSWORD";

/// The longest wait an option may ask for: a day. Longer is a mistake, and the bound keeps
/// every deadline the harness computes (`Instant::now() + wait`) from overflowing.
pub const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// Whole seconds from 1 to a day (`--banner-timeout`, `RELAY_HIL_BANNER_TIMEOUT`).
pub fn wait_secs(text: &str) -> std::result::Result<u64, String> {
    let max = MAX_WAIT.as_secs();
    match text.parse::<u64>() {
        Ok(secs) if (1..=max).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {max} (a day)"
        )),
    }
}

/// What the user asked for, before anything is opened.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The kind asked for by name (`--board`): a NodeMCU with no port is the one on USB, and
    /// the virtual board takes no port. `None`, or `Endpoint`: the paths below decide.
    pub board: Option<BoardKind>,
    /// A real NodeMCU: a port path, or `auto` to find the one on USB.
    pub port: Option<String>,
    /// Any relay: its serial path (with `addr`).
    pub serial: Option<PathBuf>,
    /// The relay's TCP address: for `serial`, or to override a real board's banner IP.
    pub addr: Option<String>,
    pub profile: Option<String>,
    pub banner_timeout: Option<Duration>,
}

impl Selection {
    /// Reads the `RELAY_HIL_*` variables.
    pub fn from_env() -> Result<Selection> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let banner_timeout = match var(ENV_BANNER_TIMEOUT) {
            None => None,
            Some(v) => Some(Duration::from_secs(wait_secs(&v).map_err(|why| {
                UsageError::Variable {
                    var: ENV_BANNER_TIMEOUT,
                    value: v.clone(),
                    why,
                }
            })?)),
        };
        Ok(Selection {
            board: None,
            port: var(ENV_PORT),
            serial: var(ENV_SERIAL).map(PathBuf::from),
            addr: var(ENV_ADDR),
            profile: var(ENV_PROFILE),
            banner_timeout,
        })
    }

    /// The board to open, and how. `virtual_board` is the command that runs a virtual board
    /// (`relay-hil virtual-board`), used when neither a port nor a serial path is given.
    pub fn resolve(&self, virtual_board: (PathBuf, Vec<String>)) -> Result<(Target, OpenOptions)> {
        let port = match self.board {
            Some(BoardKind::Virtual) if self.port.is_some() || self.serial.is_some() => {
                return Err(UsageError::VirtualWithPort.into());
            }
            Some(BoardKind::Nodemcu) => self.port.clone().or(Some("auto".into())),
            _ => self.port.clone(),
        };
        let profile = Profile::load(self.profile.as_deref().unwrap_or(DEFAULT_PROFILE))?;
        let target = match (&port, &self.serial, &self.addr) {
            (Some(_), Some(_), _) => {
                return Err(UsageError::PortAndSerial.into());
            }
            (Some(port), None, addr) => Target::Port {
                path: (port != "auto").then(|| PathBuf::from(port)),
                addr: addr.clone(),
            },
            (None, Some(serial), Some(addr)) => Target::Endpoint {
                serial: serial.clone(),
                addr: addr.clone(),
            },
            (None, Some(_), None) => {
                return Err(UsageError::SerialWithoutAddr.into());
            }
            (None, None, Some(_)) => {
                return Err(UsageError::AddrAlone.into());
            }
            (None, None, None) => Target::Virtual {
                program: virtual_board.0,
                args: virtual_board.1,
            },
        };
        // A real chip joins WiFi before its banner; the virtual board is ready at once.
        let default_wait = if matches!(target, Target::Virtual { .. }) {
            10
        } else {
            30
        };
        let banner_timeout = self
            .banner_timeout
            .unwrap_or(Duration::from_secs(default_wait));
        let wifi = match wifi_from_env()? {
            Some(w) => Some(w),
            // The virtual board's loopback network takes any credentials.
            None if matches!(target, Target::Virtual { .. }) => {
                Some(virtual_board::board::built_in_wifi())
            }
            None => None,
        };
        Ok((
            target,
            OpenOptions {
                profile,
                banner_timeout,
                wifi,
                virtual_args: Vec::new(),
                reset: None,
            },
        ))
    }
}

/// The credentials in `RELAY_HIL_WIFI_SSID`/`RELAY_HIL_WIFI_PASSWORD`, checked as a board would.
fn wifi_from_env() -> Result<Option<Wifi>> {
    let Some(ssid) = std::env::var_os(ENV_WIFI_SSID).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let psk = std::env::var_os(ENV_WIFI_PASSWORD).unwrap_or_default();
    use std::os::unix::ffi::OsStringExt;
    Wifi::new(ssid.into_vec(), psk.into_vec())
        .map(Some)
        .map_err(|source| {
            UsageError::Wifi {
                vars: "RELAY_HIL_WIFI_SSID/RELAY_HIL_WIFI_PASSWORD",
                source,
            }
            .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HilError;

    fn resolve(sel: Selection) -> Result<Target> {
        sel.resolve(("virtual-board".into(), Vec::new()))
            .map(|(target, _)| target)
    }

    #[test]
    fn a_board_named_by_kind_is_that_kind() {
        let nodemcu = Selection {
            board: Some(BoardKind::Nodemcu),
            ..Selection::default()
        };
        assert!(matches!(
            resolve(nodemcu),
            Ok(Target::Port { path: None, .. })
        ));
        let virtual_board = Selection {
            board: Some(BoardKind::Virtual),
            ..Selection::default()
        };
        assert!(matches!(resolve(virtual_board), Ok(Target::Virtual { .. })));
        let with_port = Selection {
            board: Some(BoardKind::Virtual),
            port: Some("/dev/ttyUSB0".into()),
            ..Selection::default()
        };
        assert!(matches!(
            resolve(with_port),
            Err(HilError::Usage(UsageError::VirtualWithPort))
        ));
    }

    #[test]
    fn a_wait_is_one_second_to_a_day() {
        assert_eq!(wait_secs("1"), Ok(1));
        assert_eq!(wait_secs("86400"), Ok(86_400));
        for bad in ["0", "86401", "18446744073709551616", "-1", "1.5", "ten"] {
            assert!(wait_secs(bad).unwrap_err().contains("(a day)"), "{bad}");
        }
    }
}
