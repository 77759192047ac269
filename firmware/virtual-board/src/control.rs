//! The control socket: what a USB-serial adapter and a lab bench would do to the board.
//!
//! One command per line; every reply ends with a line that starts with `ok` or `err`.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Pulse EN: every connection drops, the relay restarts, the banner prints again.
    Reset,
    /// The status channel's text.
    Status,
    Help,
}

pub const HELP: &str = "commands: reset, status, help";

impl Command {
    pub fn parse(line: &str) -> Result<Command, String> {
        match line.trim() {
            "reset" => Ok(Command::Reset),
            "status" => Ok(Command::Status),
            "help" => Ok(Command::Help),
            other => Err(format!("err unknown command `{other}`; {HELP}")),
        }
    }
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
    let mut lines = BufReader::new(rd).lines();
    while let Ok(Some(line)) = lines.next_line().await {
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
        assert_eq!(Command::parse("status"), Ok(Command::Status));
        let e = Command::parse("boot").unwrap_err();
        assert!(e.starts_with("err unknown command `boot`"), "{e}");
    }
}
