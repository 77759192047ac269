//! Reading a file whose size has a bound, checked before it is read.
//!
//! Every file the harness and the virtual board take from a user (a firmware image, a flash
//! file, a board profile) goes through [`read`], so none can be bigger than its bound in
//! memory: a regular file's length is checked before anything is read, and anything else (a
//! character device such as `/dev/zero`, a FIFO) is read for at most one byte past the bound.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Bigger than the bound: `len` is the length of a regular file, `None` for anything else,
    /// whose length is only known to be past the bound.
    #[error("{}more than {}", len.map_or(String::new(), |n| format!("{n} bytes, ")), Size(*limit))]
    TooBig { len: Option<u64>, limit: u64 },
}

/// Bytes for people: `16 MiB`, `64 KiB`, or a plain count when it is neither.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n >= 1 << 20 && n % (1 << 20) == 0 => write!(f, "{} MiB", n >> 20),
            n if n >= 1 << 10 && n % (1 << 10) == 0 => write!(f, "{} KiB", n >> 10),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// The whole of `path`, refused when it holds more than `limit` bytes.
///
/// Memory is bounded by construction: at most `limit` + 1 bytes are ever read, so the buffer
/// never grows past twice that (the vector's doubling).
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let mut bytes = Vec::new();
    if meta.is_file() {
        if meta.len() > limit {
            return Err(ReadError::TooBig {
                len: Some(meta.len()),
                limit,
            });
        }
        bytes.reserve_exact(meta.len() as usize);
    }
    // The bound holds for a regular file too: it may grow between the check and the read.
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooBig { len: None, limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::FLASH_MAX;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(Size(FLASH_MAX).to_string(), "16 MiB");
        assert_eq!(Size(64 << 10).to_string(), "64 KiB");
        assert_eq!(Size(300).to_string(), "300 bytes");
    }

    #[test]
    fn the_flash_bound_is_the_largest_size_code() {
        let largest = (0..16).filter_map(crate::image::flash_size).max();
        assert_eq!(largest, Some(FLASH_MAX as usize));
    }

    #[test]
    fn a_file_at_the_bound_is_read_and_one_past_it_is_refused() {
        let path = std::env::temp_dir().join(format!("bounded-{}", std::process::id()));
        std::fs::write(&path, [7u8; 10]).unwrap();
        assert_eq!(read(&path, 10).unwrap(), [7u8; 10]);
        let e = read(&path, 9).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(e, ReadError::TooBig { len: Some(10), .. }), "{e}");
        assert_eq!(e.to_string(), "10 bytes, more than 9 bytes");
    }

    #[test]
    fn a_device_is_read_only_one_byte_past_the_bound() {
        let e = read(Path::new("/dev/zero"), FLASH_MAX).unwrap_err();
        assert!(matches!(e, ReadError::TooBig { len: None, .. }), "{e}");
        assert_eq!(e.to_string(), "more than 16 MiB");
        assert_eq!(read(Path::new("/dev/null"), 4).unwrap(), b"");
    }
}
