//! TCP clients of the relay: connect, send, and read with generous ceilings.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{ConnectError, Unreachable};

/// How long a connect may take before the relay counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Client {
    /// `c1`, `c2`, ... in the order the scenario connected them.
    pub name: String,
    stream: TcpStream,
    pending: Vec<u8>,
}

/// Why a read ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Eof,
    /// The peer reset the connection.
    Reset,
    Timeout,
}

impl Client {
    /// Connects; `recv_buf` shrinks the socket's receive buffer (a slow reader's window).
    pub async fn connect(
        name: String,
        addr: SocketAddr,
        recv_buf: Option<usize>,
    ) -> Result<Client, ConnectError> {
        let err = |why: Unreachable| ConnectError {
            addr: addr.to_string(),
            why,
        };
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| err(e.into()))?;
        if let Some(n) = recv_buf {
            socket
                .set_recv_buffer_size(n as u32)
                .map_err(|e| err(e.into()))?;
        }
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await {
            Err(_) => return Err(err(Unreachable::Timeout(CONNECT_TIMEOUT))),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(err(Unreachable::Refused(e)));
            }
            Ok(Err(e)) => return Err(err(e.into())),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(Client {
            name,
            stream,
            pending: Vec::new(),
        })
    }

    /// A second handle on the same socket: the socket stays open while either is.
    pub fn duplicate(&self) -> std::io::Result<TcpStream> {
        use std::os::fd::AsFd;
        let fd = self.stream.as_fd().try_clone_to_owned()?;
        TcpStream::from_std(std::net::TcpStream::from(fd))
    }

    /// Closes with a FIN and waits for the relay to close back, which frees its slot.
    pub async fn finish(self, deadline: Instant) -> bool {
        close_and_wait(self.stream, deadline).await
    }

    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(data).await
    }

    /// Reads until `done(bytes)` holds, the peer closes, or the deadline passes.
    pub async fn read_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&[u8]) -> bool,
    ) -> (Vec<u8>, Option<End>) {
        let mut buf = [0u8; 4096];
        while !done(&self.pending) {
            match tokio::time::timeout_at(deadline.into(), self.stream.read(&mut buf)).await {
                Err(_) => return (std::mem::take(&mut self.pending), Some(End::Timeout)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (std::mem::take(&mut self.pending), Some(End::Reset));
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return (std::mem::take(&mut self.pending), Some(End::Eof));
                }
                Ok(Ok(n)) => self.pending.extend_from_slice(&buf[..n]),
            }
        }
        (std::mem::take(&mut self.pending), None)
    }

    /// Whatever arrives next, into `buf`: `Some(0)` when the peer closed or reset, `None` at the
    /// deadline. For streams too long to keep: nothing is retained.
    pub async fn read_some(&mut self, buf: &mut [u8], deadline: Instant) -> Option<usize> {
        if !self.pending.is_empty() {
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            return Some(n);
        }
        match tokio::time::timeout_at(deadline.into(), self.stream.read(buf)).await {
            Err(_) => None,
            Ok(Ok(n)) => Some(n),
            Ok(Err(_)) => Some(0),
        }
    }

    /// Exactly `n` bytes, or fewer if the peer closed or the deadline passed.
    pub async fn bytes(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        let (mut got, _) = self.read_until(deadline, |b| b.len() >= n).await;
        if got.len() > n {
            self.pending = got.split_off(n);
        }
        got
    }

    /// Everything until the peer closes or resets; `None` if it has not by the deadline.
    pub async fn until_eof(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        match self.read_until(deadline, |_| false).await {
            (got, Some(End::Eof | End::Reset)) => Some(got),
            _ => None,
        }
    }

    /// Everything until the connection ends, and how it ended.
    pub async fn until_end(&mut self, deadline: Instant) -> (Vec<u8>, End) {
        let (got, end) = self.read_until(deadline, |_| false).await;
        (got, end.unwrap_or(End::Timeout))
    }

    /// Closes with a RST instead of a FIN (SO_LINGER 0), as a crashed client would.
    pub fn reset(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }
}

/// Sends our FIN on `stream`, then reads and discards until the relay closes its side (or
/// resets it): the event that proves the relay let the connection go. False at the deadline.
pub async fn close_and_wait(mut stream: TcpStream, deadline: Instant) -> bool {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
