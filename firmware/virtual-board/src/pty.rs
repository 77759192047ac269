//! The board's UART: a raw pseudo-terminal whose slave path the harness opens, and the rate its
//! termios says the host's serial port runs at.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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
    /// Opens a raw, non-blocking pty pair at `baud`, as a USB-serial adapter comes up at the
    /// rate its last user left; `link` is an optional symlink to the slave path.
    pub fn open(link: Option<&Path>, baud: u32) -> io::Result<Pty> {
        let pair = openpty(None, None)?;
        // Raw on the slave: no echo, no CR/LF rewriting, no signals, just like a UART.
        let mut t = tcgetattr(&pair.slave)?;
        cfmakeraw(&mut t);
        tcsetattr(&pair.slave, SetArg::TCSANOW, &t)?;
        set_speed(&pair.slave, baud)?;
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

nix::ioctl_read_bad!(tcgets2, libc::TCGETS2, libc::termios2);
nix::ioctl_write_ptr_bad!(tcsets2, libc::TCSETS2, libc::termios2);

/// The rate a terminal's termios sets, any rate (termios2's `c_ospeed`, which the kernel fills
/// for the standard rates too). On a pty master it is the slave's: what the host set.
pub fn speed(fd: impl AsFd) -> io::Result<u32> {
    let mut t = std::mem::MaybeUninit::<libc::termios2>::uninit();
    // SAFETY: TCGETS2 fills a termios2 on success.
    unsafe { tcgets2(fd.as_fd().as_raw_fd(), t.as_mut_ptr()) }?;
    // SAFETY: initialised by the successful ioctl.
    Ok(unsafe { t.assume_init() }.c_ospeed)
}

/// Sets a terminal to `baud` both ways, as serialport and pyserial do for any rate (BOTHER).
pub fn set_speed(fd: impl AsFd, baud: u32) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let mut t = std::mem::MaybeUninit::<libc::termios2>::uninit();
    // SAFETY: TCGETS2 fills a termios2 on success.
    unsafe { tcgets2(raw, t.as_mut_ptr()) }?;
    // SAFETY: initialised by the successful ioctl.
    let mut t = unsafe { t.assume_init() };
    t.c_cflag &= !(libc::CBAUD | (libc::CBAUD << libc::IBSHIFT));
    t.c_cflag |= libc::BOTHER | (libc::BOTHER << libc::IBSHIFT);
    t.c_ospeed = baud;
    t.c_ispeed = baud;
    // SAFETY: a termios2 read from the same terminal, with only its rate changed.
    unsafe { tcsets2(raw, &t) }?;
    Ok(())
}

impl Drop for Pty {
    fn drop(&mut self) {
        if let Some(l) = &self.link {
            let _ = std::fs::remove_file(l);
        }
    }
}
