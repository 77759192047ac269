//! ESP8266 firmware, as the ROM and the Arduino core's bootloader read it, and the relay's build
//! id in it.
//!
//! A ROM image (all little-endian): an 8-byte header (magic `0xE9`, segment count, SPI flash
//! mode, flash size in the high nibble and frequency in the low one, entry point), then each
//! segment (load address, length, data), then zeros up to one byte short of a 16-byte boundary,
//! then a checksum byte: `0xEF` XOR every byte of every segment's data ([`parse`], [`build`]).
//!
//! A firmware file in the layout of the ESP8266 Arduino core 3.1.2's `tools/elf2bin.py`
//! (PlatformIO's `firmware.bin`; [`parse_firmware`], [`build_firmware`]):
//!
//! | offset | bytes |
//! |---|---|
//! | 0x0 | the bootloader, eboot, as a ROM image: its `.text` and `.rodata` |
//! | then | `0xAA` up to 0x1000, at least 8 bytes |
//! | 0x1000 | the application, laid out as a ROM image: `.irom0.text`, `.text`, `.text1`, `.data`, `.rodata` |
//! | 0x1010 | `.irom0.text` begins with two words: the file's length and its CRC-32 ([`add_crc`]) |

pub const MAGIC: u8 = 0xE9;
pub const CHECKSUM_SEED: u8 = 0xEF;

/// Marks the relay's build id in an image: this text, up to 40 id characters, then a NUL.
pub const BUILD_ID_MARK: &[u8] = b"relay-build-id:";
const BUILD_ID_MAX: usize = 40;

/// The largest ESP8266 flash, size code 9: no firmware image or flash file can be bigger.
pub const FLASH_MAX: u64 = 16 << 20;

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
    #[error(
        "no CRC: the length and CRC words at 0x1010 are zero, as elf2bin writes them before \
         its add_crc"
    )]
    NoCrc,
    #[error("the CRC's length word at 0x1010 says {stored} bytes, the file has {len}")]
    CrcLength { stored: u32, len: usize },
    #[error(
        "bad CRC (the one ESP.checkFlashCRC() checks): the word at 0x1014 is {stored:#010x}, \
         the file's bytes give {computed:#010x}"
    )]
    BadCrc { stored: u32, computed: u32 },
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

/// A firmware file (or a flash dump): the ROM image at 0x0 and, in the ESP8266 Arduino core's
/// layout, the application that its bootloader (eboot) boots from [`APP_START`].
#[derive(Clone, PartialEq, Eq)]
pub struct Firmware<'a> {
    /// The image the ROM boots: eboot, in the Arduino core's layout.
    pub boot: Image<'a>,
    /// The application eboot boots, when the bytes are in the Arduino core's layout.
    pub app: Option<App<'a>>,
    /// Bytes the firmware takes, up to the end of its last image.
    pub len: usize,
    bytes: &'a [u8],
}

/// The application as eboot reads it: a ROM-style header and segments, nothing checked but
/// that they can be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct App<'a> {
    /// The header's first byte: elf2bin writes [`MAGIC`], eboot never reads it.
    pub magic: u8,
    pub entry: u32,
    pub segments: Vec<Segment<'a>>,
    /// The byte where elf2bin puts the application's checksum, when the bytes reach it.
    pub checksum: Option<Checksum>,
    /// Offset, from the start of the firmware, just past the application: past its checksum
    /// byte when the bytes hold it, else past its last segment.
    pub end: usize,
}

/// An XOR checksum as stored and as the segments add up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub stored: u8,
    pub computed: u8,
}

impl Checksum {
    pub fn matches(&self) -> bool {
        self.stored == self.computed
    }
}

/// Where eboot reads the application's header (`APP_START_OFFSET`, tools/sdk/include/
/// spi_flash_geometry.h:11; bootloaders/eboot/eboot.c:36).
pub const APP_START: usize = 0x1000;

/// The load address of the application's first segment, `.irom0.text`: flash from 0x1010 on,
/// as the CPU sees it (`irom0_0_seg`, tools/sdk/ld/eagle.flash.*.ld:13).
pub const IROM_START: u32 = 0x4020_1010;

/// Where elf2bin stores the firmware's length (`__crc_len`) and CRC-32 (`__crc_val`): the first
/// two words of `.irom0.text` (tools/elf2bin.py:34-35; tools/sdk/ld/eagle.app.v6.common.ld.h:
/// 152-155).
pub const CRC_LEN_AT: usize = APP_START + 0x10;
pub const CRC_VAL_AT: usize = CRC_LEN_AT + 4;

/// What elf2bin pads the bootloader's image with, up to [`APP_START`] (tools/elf2bin.py:140-142).
pub const BOOT_PADDING: u8 = 0xAA;

/// Reads a firmware file (or a flash dump from 0x0): the image at 0x0 as the ROM does and, when
/// the bytes are in the ESP8266 Arduino core's layout, the application as eboot does.
///
/// The ROM checks only the image at 0x0: magic, whole segments, checksum ([`parse`]). Whether
/// that image is eboot, which then boots the application at 0x1000, depends on its code, which
/// is not run here; the layout decides instead. The bytes are in the Arduino core's layout when:
///
/// - the image at 0x0 ends at or before [`APP_START`] (elf2bin refuses a bootloader that does
///   not end 8 bytes short of it, tools/elf2bin.py:137-139; eboot reads from 0x1000 whatever
///   precedes it), and
/// - the bytes go on past [`APP_START`], and
/// - the 8 bytes of the application's header are not all `0xFF`: erased flash, where nothing
///   was written. A lone ROM image flashed at 0x0 leaves it so, and the image then stands
///   alone. (Were the image eboot, it would read segments of `0xFFFFFFFF` bytes, fail to read
///   them and reset the chip, eboot.c:77-78 and 273-280: no application runs either way.)
///
/// The padding between the two images is not looked at: elf2bin writes [`BOOT_PADDING`], and
/// neither the ROM nor eboot reads it. The application is read as eboot's
/// `load_app_from_flash_raw` reads it (eboot.c:33-88): neither its magic nor its checksum is
/// checked (elf2bin writes the CRC words into its first segment after computing the checksum,
/// so a real `firmware.bin`'s never matches), but its header and every segment must lie within
/// `bytes`, since eboot's only failure is a flash read that fails (eboot.c:38-39, 49-50,
/// 77-78). A flash dump with a stale application behind a lone image at 0x0 is taken for the
/// Arduino layout.
pub fn parse_firmware(bytes: &[u8]) -> Result<Firmware<'_>, ImageError> {
    let boot = parse(bytes)?;
    let header = &bytes[APP_START.min(bytes.len())..(APP_START + 8).min(bytes.len())];
    let layout =
        boot.len <= APP_START && bytes.len() > APP_START && !header.iter().all(|&b| b == 0xff);
    let app = if layout {
        Some(parse_app(bytes)?)
    } else {
        None
    };
    let len = app.as_ref().map_or(boot.len, |a| a.end);
    Ok(Firmware {
        boot,
        app,
        len,
        bytes,
    })
}

/// The application at [`APP_START`], as eboot reads it (see [`parse_firmware`]).
fn parse_app(bytes: &[u8]) -> Result<App<'_>, ImageError> {
    let truncated = |what: String, from: usize, to: usize| ImageError::Truncated {
        what,
        from,
        to,
        len: bytes.len(),
    };
    let header = bytes
        .get(APP_START..APP_START + 8)
        .ok_or_else(|| truncated("the application's header".into(), APP_START, APP_START + 8))?;
    let entry = u32_at(bytes, APP_START + 4, String::new)?;
    let count = header[1];
    let mut at = APP_START + 8;
    let mut segments = Vec::with_capacity(usize::from(count));
    let mut sum = CHECKSUM_SEED;
    for i in 0..count {
        let what = || format!("the application's segment {i} header");
        bytes
            .get(at..at + 8)
            .ok_or_else(|| truncated(what(), at, at + 8))?;
        let addr = u32_at(bytes, at, what)?;
        let len = u32_at(bytes, at + 4, what)? as usize;
        let from = at + 8;
        let to = from.saturating_add(len);
        let data = bytes.get(from..to).ok_or_else(|| {
            truncated(
                format!("the application's segment {i} ({len} bytes at {addr:#010x})"),
                from,
                to,
            )
        })?;
        sum = data.iter().fold(sum, |s, b| s ^ b);
        segments.push(Segment { addr, data });
        at = to;
    }
    // elf2bin pads from the application's start, which is 16-aligned, as for any image.
    let checksum_at = at | 15;
    let checksum = bytes.get(checksum_at).map(|&stored| Checksum {
        stored,
        computed: sum,
    });
    Ok(App {
        magic: header[0],
        entry,
        segments,
        checksum,
        end: if checksum.is_some() {
            checksum_at + 1
        } else {
            at
        },
    })
}

impl App<'_> {
    /// The relay build id carried in any of its segments.
    pub fn build_id(&self) -> Option<String> {
        self.segments.iter().find_map(|s| find_build_id(s.data))
    }
}

/// Leaves out the bytes, which may be a whole flash.
impl std::fmt::Debug for Firmware<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Firmware")
            .field("boot", &self.boot)
            .field("app", &self.app)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Firmware<'_> {
    /// The relay build id the firmware runs with: the application's, in the Arduino layout
    /// (eboot carries none), else the lone image's.
    pub fn build_id(&self) -> Option<String> {
        match &self.app {
            Some(app) => app.build_id(),
            None => self.boot.build_id(),
        }
    }

    /// Refuses firmware that does not fit a flash of `flash` bytes.
    pub fn fits(&self, flash: usize) -> Result<(), ImageError> {
        fits(self.len, flash)
    }

    /// The length and CRC words elf2bin stores, in the Arduino layout when the bytes reach
    /// them; `None` for a lone ROM image, which carries none.
    pub fn crc(&self) -> Option<FlashCrc> {
        self.app.as_ref()?;
        flash_crc(self.bytes)
    }

    /// Checks a firmware file's CRC as `ESP.checkFlashCRC()` would once it is flashed: in the
    /// Arduino layout the words must be there, the length must be the file's (elf2bin stores
    /// `len(raw)`, tools/elf2bin.py:182) and the CRC must match. A lone ROM image has none to
    /// check.
    pub fn check_file_crc(&self) -> Result<(), ImageError> {
        if self.app.is_none() {
            return Ok(());
        }
        let crc = self.crc().ok_or(ImageError::Truncated {
            what: "the CRC words".into(),
            from: CRC_LEN_AT,
            to: CRC_VAL_AT + 4,
            len: self.bytes.len(),
        })?;
        crc.check_file(self.bytes.len())
    }
}

/// The CRC-32 elf2bin and the Arduino core compute (tools/elf2bin.py:145-162, `crc8266`;
/// cores/esp8266/crc32.cpp): most significant bit first, polynomial 0x04C11DB7, no reflection,
/// no final XOR. `crc` is [`CRC_INIT`] for a first part, or the result of the previous part.
pub fn crc32(bytes: &[u8], crc: u32) -> u32 {
    bytes.iter().fold(crc, |mut crc, &b| {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04c1_1db7
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// The CRC's initial value (tools/elf2bin.py:147; cores/esp8266/coredecls.h:34).
pub const CRC_INIT: u32 = 0xffff_ffff;

/// The length and CRC words of elf2bin's `add_crc`, and what the bytes give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashCrc {
    /// `__crc_len`, the word at [`CRC_LEN_AT`]: how many bytes from 0x0 the CRC covers.
    /// elf2bin stores the file's length; in a flash dump it is shorter than the dump.
    pub len: u32,
    /// `__crc_val`, the word at [`CRC_VAL_AT`].
    pub stored: u32,
    /// The CRC of the first `len` bytes with both words taken as zero, as
    /// `ESP.checkFlashCRC()` computes it over flash (cores/esp8266/Esp.cpp:466-480); `None`
    /// when `len` ends inside the words or past the bytes given.
    pub computed: Option<u32>,
}

impl FlashCrc {
    /// What `ESP.checkFlashCRC()` returns on a chip whose flash holds these bytes from 0x0.
    pub fn matches(&self) -> bool {
        self.computed == Some(self.stored)
    }

    /// The check for a firmware file of `file_len` bytes, as elf2bin wrote it.
    pub fn check_file(&self, file_len: usize) -> Result<(), ImageError> {
        if self.len == 0 && self.stored == 0 {
            return Err(ImageError::NoCrc);
        }
        if self.len as usize != file_len {
            return Err(ImageError::CrcLength {
                stored: self.len,
                len: file_len,
            });
        }
        match self.computed {
            Some(computed) if computed != self.stored => Err(ImageError::BadCrc {
                stored: self.stored,
                computed,
            }),
            // A length of the file's that ends inside the words.
            None => Err(ImageError::CrcLength {
                stored: self.len,
                len: file_len,
            }),
            Some(_) => Ok(()),
        }
    }
}

/// The words at [`CRC_LEN_AT`] and [`CRC_VAL_AT`] and the CRC they claim, whatever the bytes
/// are; `None` when the bytes end before the words do. [`Firmware::crc`] reads them only where
/// the layout has them.
pub fn flash_crc(bytes: &[u8]) -> Option<FlashCrc> {
    let word = |at: usize| u32_at(bytes, at, String::new).ok();
    let len = word(CRC_LEN_AT)?;
    let stored = word(CRC_VAL_AT)?;
    let covered = len as usize;
    let computed = (covered >= CRC_VAL_AT + 4 && covered <= bytes.len()).then(|| {
        let crc = crc32(&bytes[..CRC_LEN_AT], CRC_INIT);
        let crc = crc32(&[0; 8], crc);
        crc32(&bytes[CRC_VAL_AT + 4..covered], crc)
    });
    Some(FlashCrc {
        len,
        stored,
        computed,
    })
}

/// Stores the length and CRC words as elf2bin's `add_crc` does (tools/elf2bin.py:174-186): the
/// CRC of all of `bytes` with both words zero, then the length and the CRC.
///
/// # Panics
/// If `bytes` ends before the words, or is 4 GiB or more.
pub fn add_crc(bytes: &mut [u8]) {
    let len = u32::try_from(bytes.len()).expect("a firmware under 4 GiB");
    bytes[CRC_LEN_AT..CRC_VAL_AT + 4].fill(0);
    let crc = crc32(bytes, CRC_INIT);
    bytes[CRC_LEN_AT..CRC_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
    bytes[CRC_VAL_AT..CRC_VAL_AT + 4].copy_from_slice(&crc.to_le_bytes());
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

/// Builds a lone ROM image from segments (for tests and fixtures): DIO, 40 MHz, `flash_code`
/// size, laid out as elf2bin writes one (tools/elf2bin.py:106-139).
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

/// An application's sections, as elf2bin takes them from the sketch's ELF.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppSections<'a> {
    pub entry: u32,
    /// Code run from flash: what the linker puts after `__crc_len` and `__crc_val`.
    pub irom0_text: &'a [u8],
    /// Code loaded into IRAM, at 0x40100000.
    pub text: &'a [u8],
    /// More IRAM code, after `.text`.
    pub text1: &'a [u8],
    /// Initialised data, loaded into DRAM at 0x3FFE8000.
    pub data: &'a [u8],
    /// Constants, after `.data` in DRAM.
    pub rodata: &'a [u8],
}

/// A stand-in for eboot's `.text` (IRAM at 0x4010F000, bootloaders/eboot/eboot.ld:7) and
/// `.rodata` (DRAM): filler, not code.
const EBOOT_TEXT_AT: u32 = 0x4010_f000;
const EBOOT_RODATA_AT: u32 = 0x3ffe_8000;
const EBOOT_TEXT_LEN: usize = 0x600;
const EBOOT_RODATA_LEN: usize = 0x40;

/// Builds a firmware file exactly as the ESP8266 Arduino core's elf2bin lays one out
/// (tools/elf2bin.py:234-247), for tests and for `relay-hil image`: a stand-in bootloader's
/// image (`.text`, `.rodata`) at 0x0, [`BOOT_PADDING`] up to [`APP_START`], the application's
/// image there with its segments in elf2bin's order (`.irom0.text` at [`IROM_START`] starting
/// with the 8 bytes of the CRC words, `.text`, `.text1`, `.data`, `.rodata`) and its checksum
/// computed with those words zero, then [`add_crc`]. DIO, 40 MHz, `flash_code` size in both
/// headers.
pub fn build_firmware(flash_code: u8, app: &AppSections<'_>) -> Vec<u8> {
    let filler = |n: usize, k: usize| (0..n).map(|i| (i * k + 5) as u8).collect::<Vec<u8>>();
    let (text, rodata) = (filler(EBOOT_TEXT_LEN, 13), filler(EBOOT_RODATA_LEN, 7));
    let mut out = build(
        EBOOT_TEXT_AT,
        flash_code,
        &[(EBOOT_TEXT_AT, &text), (EBOOT_RODATA_AT, &rodata)],
    );
    assert!(out.len() + 8 <= APP_START, "elf2bin.py:137-139");
    out.resize(APP_START, BOOT_PADDING);
    let irom = [&[0; 8], app.irom0_text].concat();
    let after = |at: u32, data: &[u8]| (at + data.len() as u32).next_multiple_of(4);
    out.extend(build(
        app.entry,
        flash_code,
        &[
            (IROM_START, &irom),
            (0x4010_0000, app.text),
            (after(0x4010_0000, app.text), app.text1),
            (0x3ffe_8000, app.data),
            (after(0x3ffe_8000, app.data), app.rodata),
        ],
    ));
    add_crc(&mut out);
    out
}

/// The bytes a relay firmware carries to name its build.
pub fn build_id_record(id: &str) -> Vec<u8> {
    let mut v = BUILD_ID_MARK.to_vec();
    v.extend(id.bytes().take(BUILD_ID_MAX));
    v.push(0);
    v
}
