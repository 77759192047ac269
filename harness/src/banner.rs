//! Reading the relay's boot banner: the board's identity, address and limits.

use std::collections::HashMap;

use relay_core::{Eol, Mode};

use crate::error::{HilError, Result};

/// The line prefix that marks the banner among whatever else a booting board prints.
pub const PREFIX: &str = "relay ready ";

/// The firmware's boot line: its build, and the digest of its WiFi credentials (`None`: it has
/// none and waits for some).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    pub build: String,
    pub wifi: Option<String>,
}

impl Boot {
    pub fn parse(line: &str) -> Result<Boot> {
        let line = line.trim_end();
        let fields = fields(line, relay_core::provision::BOOT_PREFIX)?;
        Ok(Boot {
            build: fields.get("build")?.to_owned(),
            wifi: Some(fields.get("wifi")?)
                .filter(|w| *w != "none")
                .map(str::to_owned),
        })
    }
}

/// A line's `key=value` fields after its prefix.
struct Fields<'a> {
    line: &'a str,
    map: HashMap<&'a str, &'a str>,
}

impl<'a> Fields<'a> {
    fn bad(&self, reason: String) -> HilError {
        HilError::BadBanner {
            line: self.line.to_owned(),
            reason,
        }
    }

    fn get(&self, key: &str) -> Result<&'a str> {
        self.map
            .get(key)
            .copied()
            .ok_or_else(|| self.bad(format!("no `{key}`")))
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| self.bad(format!("`{key}={v}` is not a number")))
    }
}

fn fields<'a>(line: &'a str, prefix: &str) -> Result<Fields<'a>> {
    let rest = line
        .strip_prefix(prefix)
        .ok_or_else(|| HilError::BadBanner {
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Banner {
    pub version: String,
    pub build: String,
    pub ip: String,
    pub port: u16,
    pub status_port: u16,
    pub max_clients: usize,
    pub max_line: usize,
    pub txq: usize,
    pub uartq: usize,
    pub stall_ms: u32,
    pub mode: Mode,
    pub eol: Eol,
}

impl Banner {
    /// Parses one banner line (with or without its line ending).
    pub fn parse(line: &str) -> Result<Banner> {
        let f = fields(line.trim_end(), PREFIX)?;
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
            max_clients: f.num("max_clients")?,
            max_line: f.num("max_line")?,
            txq: f.num("txq")?,
            uartq: f.num("uartq")?,
            stall_ms: f.num("stall_ms")?,
            mode,
            eol,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "relay ready version=0.1.0 build=abc ip=10.0.0.7 port=8888 status_port=8889 \
                        max_clients=4 max_line=256 txq=1024 uartq=512 stall_ms=5000 mode=line eol=lf\r\n";

    #[test]
    fn parses_what_the_core_prints() {
        let b = Banner::parse(LINE).unwrap();
        assert_eq!(
            (b.ip.as_str(), b.port, b.status_port),
            ("10.0.0.7", 8888, 8889)
        );
        assert_eq!((b.max_clients, b.max_line, b.stall_ms), (4, 256, 5000));
        assert_eq!((b.mode, b.eol), (Mode::Line, Eol::Lf));
    }

    #[test]
    fn parses_the_boot_line() {
        let b = Boot::parse("relay boot version=0.1.0 build=abc wifi=0011aabb listen_ms=250\r\n")
            .unwrap();
        assert_eq!(
            (b.build.as_str(), b.wifi.as_deref()),
            ("abc", Some("0011aabb"))
        );
        let b = Boot::parse("relay boot version=0.1.0 build=abc wifi=none listen_ms=0").unwrap();
        assert_eq!(b.wifi, None);
        assert!(Boot::parse("relay boot version=0.1.0 wifi=none").is_err());
    }

    #[test]
    fn names_what_is_wrong() {
        let e = Banner::parse(&LINE.replace("max_line=256", "max_line=lots")).unwrap_err();
        assert!(
            e.to_string().contains("`max_line=lots` is not a number"),
            "{e}"
        );
        let e = Banner::parse(&LINE.replace(" port=8888", "")).unwrap_err();
        assert!(e.to_string().contains("no `port`"), "{e}");
        let e = Banner::parse("hello").unwrap_err();
        assert!(
            e.to_string().contains("does not start with `relay ready`"),
            "{e}"
        );
    }
}
