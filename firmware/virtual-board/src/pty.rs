//! The board's UART: a raw pseudo-terminal whose slave path the harness opens.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

pub struct Pty {
    /// Our end: bytes written here arrive on the slave, like a UART's TX pin.
    pub master: OwnedFd,
    /// Held open so that the master never reads EIO while nobody has the port open.
    _slave: OwnedFd,
    pub path: PathBuf,
    link: Option<PathBuf>,
}

impl Pty {
    /// Opens a raw, non-blocking pty pair; `link` is an optional symlink to the slave path.
    pub fn open(link: Option<&Path>) -> io::Result<Pty> {
        let pair = openpty(None, None)?;
        // Raw on the slave: no echo, no CR/LF rewriting, no signals, just like a UART.
        let mut t = tcgetattr(&pair.slave)?;
        cfmakeraw(&mut t);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &t)?;
        let flags = OFlag::from_bits_truncate(fcntl(pair.master.as_fd(), FcntlArg::F_GETFL)?);
        fcntl(
            pair.master.as_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )?;
        let path = nix::unistd::ttyname(pair.slave.as_fd())?;
        let link = match link {
            Some(l) => {
                // Replace only a stale symlink: never clobber a real file.
                if l.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink())
                {
                    std::fs::remove_file(l)?;
                }
                std::os::unix::fs::symlink(&path, l).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create link {}: {e}", l.display()))
                })?;
                Some(l.to_owned())
            }
            None => None,
        };
        Ok(Pty {
            master: pair.master,
            _slave: pair.slave,
            path,
            link,
        })
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(l) = &self.link {
            let _ = std::fs::remove_file(l);
        }
    }
}
