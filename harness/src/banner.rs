//! Reading the relay's boot banner: the board's identity, address and limits.

use std::collections::HashMap;

use relay_core::{Eol, Mode};

use crate::error::{HilError, Result};

/// The line prefix that marks the banner among whatever else a booting board prints.
pub const PREFIX: &str = "relay ready ";

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
        let line = line.trim_end();
        let bad = |reason: String| HilError::BadBanner {
            line: line.to_owned(),
            reason,
        };
        let rest = line
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad(format!("does not start with `{}`", PREFIX.trim_end())))?;
        let fields: HashMap<&str, &str> = rest
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let get = |key: &str| {
            fields
                .get(key)
                .copied()
                .ok_or_else(|| bad(format!("no `{key}`")))
        };
        fn num<T: std::str::FromStr>(
            v: &str,
            key: &str,
            bad: &dyn Fn(String) -> HilError,
        ) -> Result<T> {
            v.parse()
                .map_err(|_| bad(format!("`{key}={v}` is not a number")))
        }
        let mode = match get("mode")? {
            "line" => Mode::Line,
            "raw" => Mode::Raw,
            other => return Err(bad(format!("unknown mode `{other}`"))),
        };
        let eol = match get("eol")? {
            "lf" => Eol::Lf,
            "cr" => Eol::Cr,
            "crlf" => Eol::Crlf,
            other => return Err(bad(format!("unknown eol `{other}`"))),
        };
        Ok(Banner {
            version: get("version")?.to_owned(),
            build: get("build")?.to_owned(),
            ip: get("ip")?.to_owned(),
            port: num(get("port")?, "port", &bad)?,
            status_port: num(get("status_port")?, "status_port", &bad)?,
            max_clients: num(get("max_clients")?, "max_clients", &bad)?,
            max_line: num(get("max_line")?, "max_line", &bad)?,
            txq: num(get("txq")?, "txq", &bad)?,
            uartq: num(get("uartq")?, "uartq", &bad)?,
            stall_ms: num(get("stall_ms")?, "stall_ms", &bad)?,
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
