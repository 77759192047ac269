//! Serial ports behind serialport's one `SerialPort` trait, and async line I/O over them.
//!
//! A real NodeMCU's port is serialport's own `TTYPort`. The virtual board's port is a
//! [`VirtualPort`]: the same pseudo-terminal I/O, with DTR and RTS carried to the board's
//! control socket, because a pty rejects the modem-control ioctls.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serialport::{ClearBuffer, DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};
use tokio::io::unix::AsyncFd;

use crate::error::{ControlError, PortError};

type Result<T, E = PortError> = std::result::Result<T, E>;

/// How long a DTR/RTS change may take over the control socket.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a board's port: a local one exclusively ([`open_tty`]), or one served over RFC 2217
/// (`rfc2217://HOST:PORT`), for the async I/O of [`Serial`].
pub fn open_serial(path: &Path, baud: u32) -> Result<Serial> {
    let name = path.to_string_lossy();
    if !crate::rfc2217::Url::is_url(&name) {
        return Serial::new(path, open_tty(path, baud)?);
    }
    let url = crate::rfc2217::Url::parse(&name).map_err(PortError::from)?;
    let port =
        crate::rfc2217::Rfc2217Port::open(&url, baud).map_err(|source| PortError::Remote {
            url: url.to_string(),
            source,
        })?;
    Serial::new(path, port)
}

/// Opens a port exclusively (TIOCEXCL and an exclusive flock: one run per board).
pub fn open_tty(path: &Path, baud: u32) -> Result<TTYPort> {
    if !path.exists() {
        return Err(PortError::Missing {
            path: path.to_owned(),
        });
    }
    serialport::new(path.to_string_lossy(), baud)
        .timeout(Duration::from_millis(100))
        .dtr_on_open(false)
        .open_native()
        .map_err(|source| {
            if source.description.contains("exclusive lock") {
                PortError::Busy {
                    path: path.to_owned(),
                }
            } else {
                PortError::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        })
}

/// The virtual board's serial port: pty I/O, with modem lines on the control socket.
pub struct VirtualPort {
    tty: TTYPort,
    control: SocketAddr,
}

impl VirtualPort {
    pub fn open(path: &Path, baud: u32, control: SocketAddr) -> Result<VirtualPort> {
        Ok(VirtualPort {
            tty: open_tty(path, baud)?,
            control,
        })
    }

    /// Sends one control command and returns its `ok` reply.
    pub fn command(control: SocketAddr, cmd: &str) -> Result<String, ControlError> {
        let io = |source| ControlError::Io {
            addr: control,
            source,
        };
        let mut s = TcpStream::connect_timeout(&control, CONTROL_TIMEOUT).map_err(io)?;
        s.set_read_timeout(Some(CONTROL_TIMEOUT)).map_err(io)?;
        s.write_all(format!("{cmd}\n").as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(s);
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                return Err(ControlError::Closed { addr: control });
            }
            reply.push_str(&line);
            if line.starts_with("ok") {
                return Ok(reply);
            }
            if line.starts_with("err") {
                return Err(ControlError::Refused {
                    addr: control,
                    reply: line.trim_end().to_owned(),
                });
            }
        }
    }

    fn line(&self, name: &str, level: bool) -> serialport::Result<()> {
        Self::command(self.control, &format!("{name} {}", u8::from(level)))
            .map(|_| ())
            .map_err(|e| serialport::Error::new(serialport::ErrorKind::Unknown, e.to_string()))
    }
}

impl AsRawFd for VirtualPort {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.tty.as_raw_fd()
    }
}

impl Read for VirtualPort {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tty.read(buf)
    }
}

impl Write for VirtualPort {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tty.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tty.flush()
    }
}

impl SerialPort for VirtualPort {
    fn name(&self) -> Option<String> {
        self.tty.name()
    }
    fn baud_rate(&self) -> serialport::Result<u32> {
        self.tty.baud_rate()
    }
    fn data_bits(&self) -> serialport::Result<DataBits> {
        self.tty.data_bits()
    }
    fn flow_control(&self) -> serialport::Result<FlowControl> {
        self.tty.flow_control()
    }
    fn parity(&self) -> serialport::Result<Parity> {
        self.tty.parity()
    }
    fn stop_bits(&self) -> serialport::Result<StopBits> {
        self.tty.stop_bits()
    }
    fn timeout(&self) -> Duration {
        self.tty.timeout()
    }
    fn set_baud_rate(&mut self, baud_rate: u32) -> serialport::Result<()> {
        self.tty.set_baud_rate(baud_rate)
    }
    fn set_data_bits(&mut self, data_bits: DataBits) -> serialport::Result<()> {
        self.tty.set_data_bits(data_bits)
    }
    fn set_flow_control(&mut self, flow_control: FlowControl) -> serialport::Result<()> {
        self.tty.set_flow_control(flow_control)
    }
    fn set_parity(&mut self, parity: Parity) -> serialport::Result<()> {
        self.tty.set_parity(parity)
    }
    fn set_stop_bits(&mut self, stop_bits: StopBits) -> serialport::Result<()> {
        self.tty.set_stop_bits(stop_bits)
    }
    fn set_timeout(&mut self, timeout: Duration) -> serialport::Result<()> {
        self.tty.set_timeout(timeout)
    }
    fn write_request_to_send(&mut self, level: bool) -> serialport::Result<()> {
        self.line("rts", level)
    }
    fn write_data_terminal_ready(&mut self, level: bool) -> serialport::Result<()> {
        self.line("dtr", level)
    }
    // A CP2102 on a NodeMCU has no input modem lines wired: they read as inactive.
    fn read_clear_to_send(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_data_set_ready(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_ring_indicator(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn read_carrier_detect(&mut self) -> serialport::Result<bool> {
        Ok(false)
    }
    fn bytes_to_read(&self) -> serialport::Result<u32> {
        self.tty.bytes_to_read()
    }
    fn bytes_to_write(&self) -> serialport::Result<u32> {
        self.tty.bytes_to_write()
    }
    fn clear(&self, buffer_to_clear: ClearBuffer) -> serialport::Result<()> {
        self.tty.clear(buffer_to_clear)
    }
    fn try_clone(&self) -> serialport::Result<Box<dyn SerialPort>> {
        Ok(Box::new(VirtualPort {
            tty: self.tty.try_clone_native()?,
            control: self.control,
        }))
    }
    fn set_break(&self) -> serialport::Result<()> {
        self.tty.set_break()
    }
    fn clear_break(&self) -> serialport::Result<()> {
        self.tty.clear_break()
    }
}

/// Async, logged I/O on a board's serial port, plus its modem lines.
pub struct Serial {
    pub path: PathBuf,
    port: Box<dyn SerialPort>,
    io: AsyncFd<OwnedFd>,
    /// Received bytes not yet taken by a reader.
    pending: Vec<u8>,
    /// Every byte received since the port was opened, for the run's serial log.
    log: Vec<u8>,
    /// Whether received bytes go to `log`: a benchmark moves too much to keep.
    logging: bool,
}

impl Serial {
    /// Wraps an open port (a TTYPort or a VirtualPort), reading it through a duplicate of its
    /// file descriptor.
    pub fn new<P: SerialPort + AsRawFd + 'static>(path: &Path, port: P) -> Result<Serial> {
        let io_err = |source| PortError::Io {
            path: path.to_owned(),
            source,
        };
        // SAFETY: the port owns this fd and outlives the borrow, which is duplicated at once.
        let fd = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
        let owned = fd.try_clone_to_owned().map_err(io_err)?;
        let flags = nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| io_err(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&owned, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| io_err(e.into()))?;
        // SAFETY: an OwnedFd stays open and names the same file until the AsyncFd drops it.
        let io = unsafe { AsyncFd::register(owned) }.map_err(|e| io_err(e.into()))?;
        Ok(Serial {
            path: path.to_owned(),
            port: Box::new(port),
            io,
            pending: Vec::new(),
            log: Vec::new(),
            logging: true,
        })
    }

    fn io_err(&self, source: std::io::Error) -> PortError {
        PortError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads whatever arrives before `deadline`; false if nothing did.
    async fn fill(&mut self, deadline: Instant) -> Result<bool> {
        let mut buf = [0u8; 4096];
        let wait = tokio::time::timeout_at(deadline.into(), async {
            loop {
                let mut guard = self.io.readable().await?;
                match guard
                    .try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf).map_err(Into::into))
                {
                    Ok(r) => return r,
                    Err(_would_block) => continue,
                }
            }
        });
        match wait.await {
            Err(_elapsed) => Ok(false),
            Ok(Ok(0)) => Err(self.io_err(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(n)) => {
                self.pending.extend_from_slice(&buf[..n]);
                if self.logging {
                    self.log.extend_from_slice(&buf[..n]);
                }
                Ok(true)
            }
            Ok(Err(e)) => Err(self.io_err(e)),
        }
    }

    /// Whatever has arrived (waiting until `deadline` for something); empty if nothing did.
    pub async fn chunk(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        if self.pending.is_empty() {
            self.fill(deadline).await?;
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// The next line (without `\r\n`), or `None` if none completes before `deadline`.
    pub async fn line(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if !self.fill(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// Exactly `n` bytes, or what arrived before `deadline`.
    pub async fn bytes(&mut self, n: usize, deadline: Instant) -> Result<Vec<u8>> {
        while self.pending.len() < n {
            if !self.fill(deadline).await? {
                break;
            }
        }
        let n = n.min(self.pending.len());
        Ok(self.pending.drain(..n).collect())
    }

    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let mut guard = self.io.writable().await.map_err(|e| self.io_err(e))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(Into::into)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(self.io_err(e)),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Forgets anything received and not yet read. A port served over RFC 2217 waits for the
    /// bridge to confirm, so what the board says after this call is kept.
    pub fn discard_input(&mut self) -> Result<()> {
        self.pending.clear();
        self.port
            .clear(ClearBuffer::Input)
            .map_err(|source| PortError::Discard {
                path: self.path.clone(),
                source,
            })
    }

    /// Sets DTR and RTS, in that order.
    pub fn set_lines(&mut self, dtr: bool, rts: bool) -> Result<()> {
        let e = |source| PortError::Lines {
            path: self.path.clone(),
            source,
        };
        self.port.write_data_terminal_ready(dtr).map_err(e)?;
        self.port.write_request_to_send(rts).map_err(e)
    }

    /// Keeps received bytes for [`Serial::log`] (the default), or stops keeping them.
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    pub fn log(&self) -> &[u8] {
        &self.log
    }

    /// Sets the port's rate (the board's UART must run at it to be read).
    pub fn set_baud(&mut self, baud: u32) -> Result<()> {
        self.port
            .set_baud_rate(baud)
            .map_err(|source| PortError::Baud {
                path: self.path.clone(),
                baud,
                source,
            })
    }

    /// A second handle on the port for a flasher, which takes it over until [`Serial::reclaim`].
    pub fn port_for_flashing(&mut self) -> Result<Box<dyn SerialPort>> {
        self.pending.clear();
        self.port.try_clone().map_err(|e| PortError::Io {
            path: self.path.clone(),
            source: e.into(),
        })
    }

    /// Takes the port back after a flasher: forgets what it left unread, and locks the port
    /// again (closing the flasher's handle cleared the lock other opens meet).
    pub fn reclaim(&mut self) -> Result<()> {
        nix::ioctl_none_bad!(tiocexcl, nix::libc::TIOCEXCL);
        // A port served over RFC 2217 is a socket, its one connection the harness's own.
        if nix::unistd::isatty(self.io.get_ref()).unwrap_or(false) {
            // SAFETY: TIOCEXCL takes no argument and the fd is the open port's.
            unsafe { tiocexcl(self.io.get_ref().as_raw_fd()) }.map_err(|e| PortError::Io {
                path: self.path.clone(),
                source: e.into(),
            })?;
        }
        self.discard_input()
    }
}
