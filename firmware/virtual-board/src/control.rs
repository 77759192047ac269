//! The control socket: what a USB-serial adapter and a lab bench would do to the board.
//!
//! One command per line; every reply ends with a line that starts with `ok` or `err`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// The longest command line, its terminator aside: every command is a few bytes, and a session
/// never holds more than this of a line.
pub const MAX_LINE: usize = 256;

/// The most of an unknown line quoted back in its `err`, in characters.
const QUOTE_MAX: usize = 32;

/// How long a session closed for a too-long line keeps reading (and discarding) what the
/// client still sends: closing with unread input would reset the connection, and a reset can
/// discard the `err` line before the client reads it.
const LINGER: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Pulse EN: every connection drops, the relay restarts, the banner prints again.
    Reset,
    /// Set the USB-serial adapter's DTR line (true = asserted).
    Dtr(bool),
    /// Set the USB-serial adapter's RTS line (true = asserted).
    Rts(bool),
    /// Cut (false) or restore (true) the board's power, as a lab bench would.
    Power(bool),
    /// The host layer's counters: blocking waits, UART overruns, connections lwIP reset.
    Counters,
    /// The rates of the line's two ends: the chip's UART (the ROM's 74880, the rate its
    /// loader took, a stub's, or the firmware's) and the host's port.
    Baud,
    /// Fault: the ROM loader's autobaud locks only onto rates up to this (0: any), as behind a
    /// marginal cable or bridge.
    Autobaud(u32),
    Help,
}

pub const HELP: &str =
    "commands: reset, dtr 0|1, rts 0|1, power 0|1, counters, baud, autobaud MAX|0, help";

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let level = |w: &str| match w {
            "1" => Ok(true),
            "0" => Ok(false),
            other => Err(format!(
                "err line level must be 0 or 1, not {}",
                quote(other)
            )),
        };
        match words[..] {
            ["reset"] => Ok(Command::Reset),
            ["dtr", l] => level(l).map(Command::Dtr),
            ["rts", l] => level(l).map(Command::Rts),
            ["power", l] => level(l).map(Command::Power),
            ["counters"] => Ok(Command::Counters),
            ["baud"] => Ok(Command::Baud),
            ["autobaud", max] => max.parse().map(Command::Autobaud).map_err(|_| {
                format!(
                    "err autobaud takes a rate in baud, or 0, not {}",
                    quote(max)
                )
            }),
            ["help"] => Ok(Command::Help),
            _ => Err(format!(
                "err unknown command {}; {HELP}",
                quote(line.trim())
            )),
        }
    }
}

/// Text from a client, for a reply: in backquotes, at most [`QUOTE_MAX`] characters of it
/// (then `…`), control characters escaped, so the reply stays one short line.
fn quote(text: &str) -> String {
    let mut out = String::from("`");
    for (i, c) in text.chars().enumerate() {
        if i == QUOTE_MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out.push('`');
    out
}

/// One line from a session, as [`read_line`] found it.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(String),
    /// Longer than [`MAX_LINE`]: the rest of it is still unread.
    TooLong,
    NotUtf8,
    /// The client closed, with no partial line left.
    End,
}

/// The next line, holding at most [`MAX_LINE`] bytes and its terminator in memory. A last line
/// without a newline counts, as for `lines()`.
async fn read_line<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buf.clear();
    // A line, its `\r` and its `\n`, and one byte more to tell a line that is too long.
    let most = MAX_LINE as u64 + 3;
    (&mut *rd).take(most).read_until(b'\n', buf).await?;
    if buf.is_empty() {
        return Ok(Line::End);
    }
    let ended = buf.last() == Some(&b'\n');
    if ended {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    if buf.len() > MAX_LINE {
        return Ok(Line::TooLong);
    }
    Ok(match std::str::from_utf8(buf) {
        Ok(text) => Line::Text(text.to_owned()),
        Err(_) => Line::NotUtf8,
    })
}

pub struct Request {
    pub command: Command,
    pub reply: oneshot::Sender<String>,
}

/// Serves the control listener, handing each parsed command to the board's loop.
pub async fn serve(listener: TcpListener, board: mpsc::Sender<Request>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(session(stream, peer, board.clone()));
            }
            Err(e) => tracing::warn!("control: accept failed: {e}"),
        }
    }
}

async fn session(stream: TcpStream, peer: SocketAddr, board: mpsc::Sender<Request>) {
    tracing::debug!("control: {peer} connected");
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::with_capacity(MAX_LINE + 3);
    loop {
        let line = match read_line(&mut rd, &mut buf).await {
            Ok(Line::Text(line)) => line,
            Ok(Line::NotUtf8) => {
                let reply = "err not UTF-8: a command line must be UTF-8 text\n";
                if wr.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Line::TooLong) => {
                let reply = format!("err line too long (at most {MAX_LINE} bytes)\n");
                if wr.write_all(reply.as_bytes()).await.is_ok() {
                    let _ = wr.shutdown().await;
                    // Discard what is left, in a fixed buffer, until the client closes or the
                    // linger ends.
                    let mut sink = [0u8; 4096];
                    let _ = tokio::time::timeout(LINGER, async {
                        while let Ok(1..) = rd.read(&mut sink).await {}
                    })
                    .await;
                }
                tracing::debug!("control: {peer} sent a line over {MAX_LINE} bytes; closed");
                return;
            }
            Ok(Line::End) | Err(_) => return,
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match Command::parse(&line) {
            Ok(command) => {
                let (tx, rx) = oneshot::channel();
                if board.send(Request { command, reply: tx }).await.is_err() {
                    return; // the board is shutting down
                }
                rx.await
                    .unwrap_or_else(|_| "err board is shutting down".into())
            }
            Err(e) => e,
        };
        if wr
            .write_all(format!("{}\n", reply.trim_end()).as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_commands_and_names_unknown_ones() {
        assert_eq!(Command::parse(" reset \r"), Ok(Command::Reset));
        assert_eq!(Command::parse("counters"), Ok(Command::Counters));
        assert_eq!(Command::parse("baud"), Ok(Command::Baud));
        assert_eq!(
            Command::parse("autobaud 115200"),
            Ok(Command::Autobaud(115_200))
        );
        assert!(Command::parse("autobaud fast").is_err());
        assert_eq!(Command::parse("dtr 1"), Ok(Command::Dtr(true)));
        assert_eq!(Command::parse("rts  0"), Ok(Command::Rts(false)));
        assert!(Command::parse("rts 2").unwrap_err().contains("0 or 1"));
        let e = Command::parse("boot").unwrap_err();
        assert!(e.starts_with("err unknown command `boot`"), "{e}");
    }

    #[test]
    fn a_reply_quotes_only_a_short_prefix_of_what_it_refuses() {
        let e = Command::parse(&"x".repeat(MAX_LINE)).unwrap_err();
        let quoted = format!("`{}…`", "x".repeat(QUOTE_MAX));
        assert!(
            e.starts_with(&format!("err unknown command {quoted};")),
            "{e}"
        );
        let e = Command::parse(&format!("dtr {}", "1".repeat(100))).unwrap_err();
        assert!(e.ends_with(&format!("`{}…`", "1".repeat(QUOTE_MAX))), "{e}");
        let e = Command::parse("\x1b[2J").unwrap_err();
        assert!(e.starts_with("err unknown command `\\u{1b}[2J`"), "{e}");
    }

    /// Every line `input` holds, as `read_line` reads them, up to the first that ends a session.
    async fn lines(input: &[u8]) -> Vec<Line> {
        let mut rd = BufReader::new(input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let line = read_line(&mut rd, &mut buf).await.unwrap();
            let last = matches!(line, Line::TooLong | Line::End);
            out.push(line);
            if last {
                assert!(buf.len() <= MAX_LINE + 3, "held {} bytes", buf.len());
                return out;
            }
        }
    }

    #[tokio::test]
    async fn a_line_is_at_most_max_line_bytes_and_utf8() {
        let text = |s: &str| Line::Text(s.to_owned());
        let full = "x".repeat(MAX_LINE);
        let input = format!("{full}\n{full}\r\nreset");
        assert_eq!(
            lines(input.as_bytes()).await,
            [text(&full), text(&full), text("reset"), Line::End]
        );
        let over = format!("{full}y\n");
        assert_eq!(lines(over.as_bytes()).await, [Line::TooLong]);
        let endless = vec![b'x'; 1 << 20];
        assert_eq!(lines(&endless).await, [Line::TooLong]);
        assert_eq!(
            lines(b"\xff\xfe\nhelp\n").await,
            [Line::NotUtf8, text("help"), Line::End]
        );
    }
}
