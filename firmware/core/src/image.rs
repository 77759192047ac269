//! ESP8266 firmware images, as the ROM bootloader reads them, and the relay's build id in them.
//!
//! Layout (all little-endian): an 8-byte header (magic `0xE9`, segment count, SPI flash mode,
//! flash size in the high nibble and frequency in the low one, entry point), then each segment
//! (load address, length, data), then zeros up to one byte short of a 16-byte boundary, then a
//! checksum byte: `0xEF` XOR every byte of every segment's data.

pub const MAGIC: u8 = 0xE9;
pub const CHECKSUM_SEED: u8 = 0xEF;

/// Marks the relay's build id in an image: this text, up to 40 id characters, then a NUL.
pub const BUILD_ID_MARK: &[u8] = b"relay-build-id:";
const BUILD_ID_MAX: usize = 40;

/// Flash sizes by the header's size code (the high nibble of byte 3).
pub fn flash_size(code: u8) -> Option<usize> {
    const K: usize = 1024;
    Some(match code {
        0 => 512 * K,
        1 => 256 * K,
        2 => 1024 * K,
        3 | 5 => 2048 * K,
        4 | 6 => 4096 * K,
        8 => 8192 * K,
        9 => 16384 * K,
        _ => return None,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    pub addr: u32,
    pub data: &'a [u8],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    pub flash_mode: u8,
    /// The flash the image was built for, in bytes.
    pub flash_size: usize,
    pub flash_freq: u8,
    pub entry: u32,
    pub segments: Vec<Segment<'a>>,
    /// Bytes the image takes, checksum included.
    pub len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("not an ESP8266 image: it starts with {found:#04x}, not the magic 0xe9")]
    BadMagic { found: u8 },
    #[error("not an ESP8266 image: it has no segments")]
    NoSegments,
    #[error("truncated image: {what} needs bytes {from}..{to}, the file has {len}")]
    Truncated {
        what: String,
        from: usize,
        to: usize,
        len: usize,
    },
    #[error("unknown flash size code {code} in the image header")]
    BadFlashSize { code: u8 },
    #[error("bad checksum: the image stores {stored:#04x}, its segments add up to {computed:#04x}")]
    BadChecksum { stored: u8, computed: u8 },
    #[error("the image is {len} bytes, bigger than the board's {flash}-byte flash")]
    TooBig { len: usize, flash: usize },
}

fn u32_at(bytes: &[u8], at: usize, what: impl Fn() -> String) -> Result<u32, ImageError> {
    let b = bytes.get(at..at + 4).ok_or_else(|| ImageError::Truncated {
        what: what(),
        from: at,
        to: at + 4,
        len: bytes.len(),
    })?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads and verifies the image at the start of `bytes` (a file, or a flash dump).
pub fn parse(bytes: &[u8]) -> Result<Image<'_>, ImageError> {
    // The magic first: a file that is not an image at all should hear so, however short.
    if let Some(&first) = bytes.first()
        && first != MAGIC
    {
        return Err(ImageError::BadMagic { found: first });
    }
    let header = bytes.get(..8).ok_or(ImageError::Truncated {
        what: "the header".into(),
        from: 0,
        to: 8,
        len: bytes.len(),
    })?;
    if header[1] == 0 {
        return Err(ImageError::NoSegments);
    }
    let code = header[3] >> 4;
    let size = flash_size(code).ok_or(ImageError::BadFlashSize { code })?;
    let entry = u32_at(bytes, 4, String::new)?;
    let mut at = 8;
    let mut segments = Vec::with_capacity(usize::from(header[1]));
    let mut sum = CHECKSUM_SEED;
    for i in 0..header[1] {
        let addr = u32_at(bytes, at, || format!("segment {i}'s header"))?;
        let len = u32_at(bytes, at + 4, || format!("segment {i}'s header"))? as usize;
        let from = at + 8;
        let data =
            bytes
                .get(from..from.saturating_add(len))
                .ok_or_else(|| ImageError::Truncated {
                    what: format!("segment {i} ({len} bytes)"),
                    from,
                    to: from.saturating_add(len),
                    len: bytes.len(),
                })?;
        sum = data.iter().fold(sum, |s, b| s ^ b);
        segments.push(Segment { addr, data });
        at = from + len;
    }
    // The checksum is the last byte of the 16-byte block the segments end in.
    let checksum_at = at | 15;
    let stored = *bytes
        .get(checksum_at)
        .ok_or_else(|| ImageError::Truncated {
            what: "the checksum".into(),
            from: checksum_at,
            to: checksum_at + 1,
            len: bytes.len(),
        })?;
    if stored != sum {
        return Err(ImageError::BadChecksum {
            stored,
            computed: sum,
        });
    }
    Ok(Image {
        flash_mode: header[2],
        flash_size: size,
        flash_freq: header[3] & 0x0f,
        entry,
        segments,
        len: checksum_at + 1,
    })
}

impl Image<'_> {
    /// Refuses an image that does not fit a flash of `flash` bytes.
    pub fn fits(&self, flash: usize) -> Result<(), ImageError> {
        fits(self.len, flash)
    }

    /// The relay build id carried in any segment, if this is a relay image.
    pub fn build_id(&self) -> Option<String> {
        self.segments.iter().find_map(|s| find_build_id(s.data))
    }
}

fn fits(len: usize, flash: usize) -> Result<(), ImageError> {
    if len > flash {
        return Err(ImageError::TooBig { len, flash });
    }
    Ok(())
}

/// A firmware file: the image the ROM boots at 0x0 and, in the ESP8266 Arduino core's layout,
/// the application image that its bootloader (eboot) boots at the next 4 KiB boundary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firmware<'a> {
    pub images: Vec<Image<'a>>,
    /// Bytes the firmware takes, up to the end of its last image.
    pub len: usize,
}

/// Where the Arduino core's bootloader looks for the application.
pub const APP_ALIGN: usize = 0x1000;

/// Reads and verifies every image in a firmware file (or a flash dump).
pub fn parse_firmware(bytes: &[u8]) -> Result<Firmware<'_>, ImageError> {
    let boot = parse(bytes)?;
    let mut len = boot.len;
    let mut images = vec![boot];
    let app_at = len.next_multiple_of(APP_ALIGN);
    if bytes.get(app_at) == Some(&MAGIC) && bytes[len..app_at].iter().all(|&b| b == 0xff || b == 0)
    {
        let app = parse(&bytes[app_at..])?;
        len = app_at + app.len;
        images.push(app);
    }
    Ok(Firmware { images, len })
}

impl Firmware<'_> {
    /// The relay build id carried in any of its images.
    pub fn build_id(&self) -> Option<String> {
        self.images.iter().find_map(Image::build_id)
    }

    /// Refuses firmware that does not fit a flash of `flash` bytes.
    pub fn fits(&self, flash: usize) -> Result<(), ImageError> {
        fits(self.len, flash)
    }
}

/// The first `relay-build-id:<id>\0` in `bytes`.
pub fn find_build_id(bytes: &[u8]) -> Option<String> {
    let at = bytes
        .windows(BUILD_ID_MARK.len())
        .position(|w| w == BUILD_ID_MARK)?
        + BUILD_ID_MARK.len();
    let rest = &bytes[at..];
    let end = rest.iter().take(BUILD_ID_MAX + 1).position(|&b| b == 0)?;
    let id = &rest[..end];
    let ok = !id.is_empty()
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b));
    ok.then(|| String::from_utf8_lossy(id).into_owned())
}

/// Builds an image from segments (for tests and fixtures): DIO, 40 MHz, `flash_code` size.
pub fn build(entry: u32, flash_code: u8, segments: &[(u32, &[u8])]) -> Vec<u8> {
    let count = u8::try_from(segments.len()).expect("at most 255 segments");
    let mut out = vec![MAGIC, count, 2, flash_code << 4];
    out.extend(entry.to_le_bytes());
    let mut sum = CHECKSUM_SEED;
    for (addr, data) in segments {
        let len = u32::try_from(data.len()).expect("a segment under 4 GiB");
        out.extend(addr.to_le_bytes());
        out.extend(len.to_le_bytes());
        out.extend_from_slice(data);
        sum = data.iter().fold(sum, |s, b| s ^ b);
    }
    out.resize(out.len() | 15, 0);
    out.push(sum);
    out
}

/// The bytes a relay firmware carries to name its build.
pub fn build_id_record(id: &str) -> Vec<u8> {
    let mut v = BUILD_ID_MARK.to_vec();
    v.extend(id.bytes().take(BUILD_ID_MAX));
    v.push(0);
    v
}
