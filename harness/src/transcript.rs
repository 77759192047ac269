//! Transcripts: what each side sent and received, normalised so that runs compare exactly.
//!
//! No addresses, ports or timings appear; where events are concurrent the scenario records
//! them in a canonical order (client by client), so a transcript is deterministic and the same
//! on the virtual board and on hardware.

use std::fmt::Write;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transcript {
    lines: Vec<String>,
}

impl Transcript {
    pub fn note(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    /// `who` sent `bytes` (`c1 -> "..."`, or `uart -> "..."` for the device side).
    pub fn sent(&mut self, who: &str, bytes: &[u8]) {
        self.note(format!("{who} -> {}", show(bytes)));
    }

    /// `who` received `bytes`.
    pub fn got(&mut self, who: &str, bytes: &[u8]) {
        self.note(format!("{who} <- {}", show(bytes)));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let _ = writeln!(out, "{l}");
        }
        out
    }
}

/// Bytes as a quoted string: printable ASCII as is, escapes for the rest, and a run of eight
/// or more equal bytes as `"x"*N`, so long payloads stay readable.
pub fn show(bytes: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == bytes[i]).count();
        if run >= 8 {
            if !text.is_empty() {
                parts.push(format!("\"{}\"", std::mem::take(&mut text)));
            }
            parts.push(format!("\"{}\"*{run}", escape(bytes[i])));
            i += run;
        } else {
            text.push_str(&escape(bytes[i]));
            i += 1;
        }
    }
    if !text.is_empty() || parts.is_empty() {
        parts.push(format!("\"{text}\""));
    }
    parts.join(" ")
}

fn escape(b: u8) -> String {
    match b {
        b'\n' => "\\n".into(),
        b'\r' => "\\r".into(),
        b'\t' => "\\t".into(),
        b'"' => "\\\"".into(),
        b'\\' => "\\\\".into(),
        0x20..=0x7e => (b as char).to_string(),
        _ => format!("\\x{b:02x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::show;

    #[test]
    fn shows_bytes_compactly_and_unambiguously() {
        assert_eq!(show(b"hi\r\n"), r#""hi\r\n""#);
        assert_eq!(show(b""), r#""""#);
        assert_eq!(show(&[b'L'; 257]), r#""L"*257"#);
        let mut v = b"ab".to_vec();
        v.extend([0u8; 9]);
        v.extend(b"\"\\\xff");
        assert_eq!(show(&v), r#""ab" "\x00"*9 "\"\\\xff""#);
    }
}
