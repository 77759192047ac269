//! esptool's flasher stub for the ESP8266, spoken by the board itself. A flasher uploads the
//! stub to RAM and starts it; the board cannot run Xtensa code, so once it recognises the stub
//! it answers as the stub would, until the chip resets.
//!
//! The behaviour follows the stub's sources in esptool v4.7.0 (`flasher_stub/`: the binary
//! they build is byte for byte the one esptool 4.8.1 uploads, `stub_flasher/1/esp8266.json`)
//! and esptool's `docs/en/advanced-topics/serial-protocol.rst`. File names below are those
//! sources'.

use flate2::{Decompress, FlushDecompress, Status};

use crate::rom::{self, After, Flash, Regs, SECTOR, checksum, slip, word};

/// Where esptool loads its ESP8266 stub's code, and where it enters it: the `text_start` and
/// `entry` of `stub_flasher/1/esp8266.json`. Every esptool from 3.1 to 5.x uploads its stub
/// there (3.0 and older used other addresses), so these two addresses recognise it.
pub const TEXT: u32 = 0x4010_D000;
pub const ENTRY: u32 = 0x4010_D004;
/// The stub's first words once it runs (stub_flasher.c:467-488).
pub const GREETING: &[u8] = b"OHAI";

const FLASH_BEGIN: u8 = rom::FLASH_BEGIN;
const FLASH_DATA: u8 = rom::FLASH_DATA;
const FLASH_END: u8 = rom::FLASH_END;
const MEM_BEGIN: u8 = rom::MEM_BEGIN;
const MEM_END: u8 = rom::MEM_END;
const MEM_DATA: u8 = rom::MEM_DATA;
const SYNC: u8 = rom::SYNC;
const WRITE_REG: u8 = rom::WRITE_REG;
const READ_REG: u8 = rom::READ_REG;
pub const SPI_SET_PARAMS: u8 = 0x0b;
pub const SPI_ATTACH: u8 = 0x0d;
pub const CHANGE_BAUDRATE: u8 = 0x0f;
pub const FLASH_DEFL_BEGIN: u8 = 0x10;
pub const FLASH_DEFL_DATA: u8 = 0x11;
pub const FLASH_DEFL_END: u8 = 0x12;
pub const SPI_FLASH_MD5: u8 = 0x13;
pub const ERASE_FLASH: u8 = 0xd0;
pub const ERASE_REGION: u8 = 0xd1;
pub const READ_FLASH: u8 = 0xd2;
pub const RUN_USER_CODE: u8 = 0xd3;

/// The stub's error codes (stub_flasher.h:95-110), sent as the first status byte.
const OK: u8 = 0;
const BAD_DATA_LEN: u8 = 0xc0;
const BAD_DATA_CHECKSUM: u8 = 0xc1;
const BAD_BLOCKSIZE: u8 = 0xc2;
const FAILED_SPI_OP: u8 = 0xc4;
const NOT_IN_FLASH_MODE: u8 = 0xc6;
const INFLATE_ERROR: u8 = 0xc7;
const NOT_ENOUGH_DATA: u8 = 0xc8;
const TOO_MUCH_DATA: u8 = 0xc9;
const NOT_IMPLEMENTED: u8 = 0xff;
/// Most commands join their length check and their handler with C's `||`
/// (stub_flasher.c:259-363), so any failure of theirs reads 1 on the wire.
const FAILED: u8 = 1;

/// OK, or 1 for a check the stub joins with `||`.
fn joined(ok: bool) -> u8 {
    if ok { OK } else { FAILED }
}

/// The largest block the stub takes (stub_flasher.h:14; esptool's ESP8266StubLoader writes
/// in blocks of this size, esp8266.py:188).
pub const MAX_WRITE_BLOCK: usize = 0x4000;
/// The stub erases 64 KiB blocks where it can, sectors elsewhere (stub_write_flash.c:243-316).
const ERASE_BLOCK: usize = 0x10000;

/// A write under way: FLASH_BEGIN or FLASH_DEFL_BEGIN to FLASH_END (stub_write_flash.c:21-39).
struct Writing {
    next_write: usize,
    remaining: usize,
    next_erase_sector: usize,
    remaining_erase_sectors: usize,
    /// A failure while writing a block, reported with the next command: the stub acknowledges
    /// each block before it writes it.
    last_error: u8,
    inflate: Option<Decompress>,
}

/// A READ_FLASH under way (stub_commands.c:95-141).
struct Read {
    addr: usize,
    len: usize,
    block: usize,
    max_in_flight: usize,
    sent: usize,
    acked: usize,
    md5: md5::Context,
    /// A flash read failed: nothing more is sent.
    broken: bool,
}

/// The stub's state between commands.
#[derive(Default)]
pub struct Stub {
    write: Option<Writing>,
    read: Option<Read>,
    /// MEM_BEGIN's bytes still expected.
    mem: Option<usize>,
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("writing", &self.write.is_some())
            .field("reading", &self.read.is_some())
            .finish()
    }
}

/// A reply: the header (its value, the length of what follows), optional data, then the error
/// and status bytes (stub_flasher.c:186-215, 372-374).
fn reply(op: u8, value: u32, data: &[u8], error: u8, status: u8) -> Vec<u8> {
    let mut r = vec![0x01, op];
    r.extend((data.len() as u16 + 2).to_le_bytes());
    r.extend(value.to_le_bytes());
    r.extend_from_slice(data);
    r.extend([error, status]);
    slip(&r)
}

impl Stub {
    /// One SLIP frame from the host: a command, or while READ_FLASH runs, an acknowledgement.
    /// Returns what the board does next, and a new UART rate to take once this reply is out.
    pub fn command(
        &mut self,
        frame: &[u8],
        regs: &mut Regs,
        mut flash: Option<&mut dyn Flash>,
        out: &mut Vec<u8>,
    ) -> (After, Option<u32>) {
        if self.read.is_some() {
            self.read_ack(frame, flash, out);
            return (After::Stay, None);
        }
        if frame.len() < 8 || frame[0] != 0x00 {
            return (After::Stay, None);
        }
        let op = frame[1];
        let size = usize::from(u16::from_le_bytes([frame[2], frame[3]]));
        let sum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let data = &frame[8..];
        let len_is = |n: usize| size == n && data.len() == n;
        let mut baud = None;
        let mut value = 0;
        let mut body: Vec<u8> = Vec::new();
        if size > MAX_WRITE_BLOCK + 16 {
            out.extend(reply(op, 0, &[], BAD_DATA_LEN, 0xee));
            return (After::Stay, None);
        }
        let error = match op {
            SYNC if !len_is(36) => BAD_DATA_LEN,
            // Eight answers with a value of 0, as the ROM answers (stub_flasher.c:233-253).
            SYNC => {
                for _ in 0..7 {
                    out.extend(reply(op, 0, &[], OK, 0));
                }
                OK
            }
            READ_REG if !len_is(4) => BAD_DATA_LEN,
            READ_REG => {
                value = regs.read(word(data, 0).unwrap_or(0));
                OK
            }
            WRITE_REG if size % 16 != 0 || data.len() != size => BAD_DATA_LEN,
            // Any number of (address, value, mask, delay) writes; bits outside the mask keep
            // their value (stub_commands.c:247-260).
            WRITE_REG => {
                for w in data.chunks_exact(16) {
                    let [addr, v, mask] = [0, 1, 2].map(|i| word(w, i).unwrap_or(0));
                    let mut new = v & mask;
                    if mask != u32::MAX {
                        new |= regs.read(addr) & !mask;
                    }
                    regs.write(addr, new);
                }
                OK
            }
            SPI_SET_PARAMS => joined(len_is(24)),
            SPI_ATTACH => joined(len_is(4)),
            CHANGE_BAUDRATE if !len_is(8) => BAD_DATA_LEN,
            // The reply goes out at the old rate, then the stub switches (stub_flasher.c:
            // 266-270, 379-381).
            CHANGE_BAUDRATE => {
                baud = word(data, 0);
                OK
            }
            FLASH_BEGIN | FLASH_DEFL_BEGIN
                if len_is(16) && word(data, 2).is_some_and(|b| b as usize > MAX_WRITE_BLOCK) =>
            {
                BAD_BLOCKSIZE
            }
            FLASH_BEGIN | FLASH_DEFL_BEGIN if !len_is(16) => FAILED,
            FLASH_BEGIN | FLASH_DEFL_BEGIN => self.begin(op, data, flash.is_some()),
            // Each block is acknowledged before it is written, so a write's failure is
            // reported with the next one (stub_flasher.c:307-330).
            FLASH_DATA | FLASH_DEFL_DATA => match &self.write {
                Some(w) => {
                    let payload = &data[16.min(data.len())..];
                    if checksum(payload) != sum {
                        BAD_DATA_CHECKSUM
                    } else if word(data, 0) != Some(payload.len() as u32) {
                        BAD_DATA_LEN
                    } else {
                        w.last_error
                    }
                }
                None => NOT_IN_FLASH_MODE,
            },
            // stub_write_flash.c:468-480
            FLASH_END | FLASH_DEFL_END => match self.write.take() {
                None => NOT_IN_FLASH_MODE,
                Some(w) if w.remaining > 0 => {
                    self.write = Some(w);
                    NOT_ENOUGH_DATA
                }
                Some(w) => w.last_error,
            },
            SPI_FLASH_MD5 if !len_is(16) => FAILED,
            // The digest's 16 raw bytes come before the status (stub_commands.c:143-174).
            SPI_FLASH_MD5 => match flash {
                None => {
                    rom::no_flash_file("SPI_FLASH_MD5");
                    FAILED_SPI_OP
                }
                Some(ref f) => {
                    let [addr, len] = [0, 1].map(|i| word(data, i).unwrap_or(0) as usize);
                    match f.read(addr, len) {
                        Some(bytes) => {
                            body = md5::compute(bytes).0.to_vec();
                            OK
                        }
                        None => FAILED,
                    }
                }
            },
            ERASE_FLASH if !len_is(0) => FAILED,
            ERASE_FLASH => match flash {
                None => {
                    rom::no_flash_file("ERASE_FLASH");
                    FAILED_SPI_OP
                }
                Some(ref mut f) => {
                    let size = f.size();
                    joined(f.erase(0, size))
                }
            },
            ERASE_REGION if !len_is(8) => FAILED,
            // Both ends on sector boundaries, else the handler fails (stub_commands.c:45-93).
            ERASE_REGION => match flash {
                None => {
                    rom::no_flash_file("ERASE_REGION");
                    FAILED_SPI_OP
                }
                Some(ref mut f) => {
                    let [at, len] = [0, 1].map(|i| word(data, i).unwrap_or(0) as usize);
                    let fits = at.checked_add(len).is_some_and(|end| end <= f.size());
                    joined(at % SECTOR == 0 && len % SECTOR == 0 && fits && f.erase(at, len))
                }
            },
            READ_FLASH if !len_is(16) => BAD_DATA_LEN,
            READ_FLASH if flash.is_none() => {
                rom::no_flash_file("READ_FLASH");
                FAILED_SPI_OP
            }
            READ_FLASH => OK,
            // No reply: the stub returns into the ROM, which boots from flash (stub_flasher.c:
            // 364-369, 449-459).
            RUN_USER_CODE => return (After::Run, None),
            MEM_BEGIN if !len_is(16) => FAILED,
            MEM_BEGIN => {
                self.mem = word(data, 0).map(|n| n as usize);
                OK
            }
            // stub_commands.c:219-237
            MEM_DATA => {
                let payload = data.get(16..).unwrap_or_default();
                match self.mem {
                    None if !payload.is_empty() => NOT_IN_FLASH_MODE,
                    Some(left) if payload.len() > left => TOO_MUCH_DATA,
                    _ if payload.len() % 4 != 0 => BAD_DATA_LEN,
                    Some(left) => {
                        self.mem = Some(left - payload.len());
                        OK
                    }
                    None => OK,
                }
            }
            MEM_END if !len_is(8) => FAILED,
            MEM_END => joined(self.mem.take().unwrap_or(0) == 0),
            _ => NOT_IMPLEMENTED,
        };
        out.extend(reply(op, value, &body, error, 0));
        if error != OK {
            return (After::Stay, None);
        }
        // What happens after the reply (stub_flasher.c:376-432).
        match op {
            FLASH_DATA | FLASH_DEFL_DATA => {
                let payload = &data[16..];
                if let (Some(w), Some(f)) = (self.write.as_mut(), flash) {
                    if op == FLASH_DATA {
                        w.write(f, payload);
                    } else {
                        w.inflate(f, payload);
                    }
                }
            }
            // 0 reboots; anything else stays in the stub, which is how esptool ends a write
            // and goes on to verify it (cmds.py write_flash, "Leaving...").
            FLASH_END | FLASH_DEFL_END if word(data, 0) == Some(0) => {
                return (After::Reboot, None);
            }
            READ_FLASH => {
                let w = |i| word(data, i).unwrap_or(0) as usize;
                if w(2) <= SECTOR {
                    self.read = Some(Read {
                        addr: w(0),
                        len: w(1),
                        block: w(2),
                        max_in_flight: w(3),
                        sent: 0,
                        acked: 0,
                        md5: md5::Context::new(),
                        broken: false,
                    });
                    self.read_more(flash, out);
                }
                // A larger block: the stub returns at once and sends nothing more
                // (stub_commands.c:106-108).
            }
            // The stub would jump to the code it loaded; see rom::Loader::mem_end for why the
            // board stays instead.
            MEM_END if word(data, 1).is_some_and(|e| e != 0) => {
                tracing::warn!(
                    "refused to run the code loaded to RAM at entry {:#010x}: the virtual board \
                     runs no Xtensa code; esptool's flasher stub goes on answering",
                    word(data, 1).unwrap_or(0)
                );
            }
            _ => {}
        }
        (After::Stay, baud)
    }

    /// FLASH_BEGIN or FLASH_DEFL_BEGIN: the total to write (uncompressed) and the offset; the
    /// stub erases as it writes (stub_write_flash.c:200-230).
    fn begin(&mut self, op: u8, data: &[u8], have_flash: bool) -> u8 {
        let w = |i| word(data, i).unwrap_or(0) as usize;
        let (total, offset) = (w(0), w(3));
        if total > 0 && !have_flash {
            rom::no_flash_file(if op == FLASH_BEGIN {
                "FLASH_BEGIN"
            } else {
                "FLASH_DEFL_BEGIN"
            });
            self.write = None;
            return FAILED_SPI_OP;
        }
        self.write = Some(Writing {
            next_write: offset,
            remaining: total,
            next_erase_sector: offset / SECTOR,
            remaining_erase_sectors: (offset % SECTOR + total).div_ceil(SECTOR),
            last_error: OK,
            inflate: (op == FLASH_DEFL_BEGIN).then(|| Decompress::new(true)),
        });
        OK
    }

    /// Sends blocks while fewer than `max_in_flight` bytes are unacknowledged: the stub counts
    /// bytes there, not the packets its documentation names, so with esptool's 64 only one
    /// block is ever in flight (stub_commands.c:110-135).
    fn read_more(&mut self, flash: Option<&mut dyn Flash>, out: &mut Vec<u8>) {
        let Some(r) = self.read.as_mut() else {
            return;
        };
        if r.acked < r.len && r.acked <= r.sent {
            while !r.broken && r.sent < r.len && r.sent - r.acked < r.max_in_flight {
                let n = (r.len - r.sent).min(r.block);
                match flash.as_ref().and_then(|f| f.read(r.addr, n)) {
                    Some(bytes) => {
                        r.md5.consume(&bytes);
                        out.extend(slip(&bytes));
                        r.addr += n;
                        r.sent += n;
                    }
                    None => r.broken = true,
                }
            }
            return;
        }
        self.finish_read(out);
    }

    /// An acknowledgement: four bytes, the total the host has received; anything else ends
    /// the read.
    fn read_ack(&mut self, frame: &[u8], flash: Option<&mut dyn Flash>, out: &mut Vec<u8>) {
        let Some(r) = self.read.as_mut() else {
            return;
        };
        match (frame.len(), word(frame, 0)) {
            (4, Some(acked)) => {
                r.acked = acked as usize;
                self.read_more(flash, out);
            }
            _ => self.finish_read(out),
        }
    }

    /// The MD5 of everything sent, then back to commands.
    fn finish_read(&mut self, out: &mut Vec<u8>) {
        if let Some(r) = self.read.take() {
            out.extend(slip(&r.md5.compute().0));
        }
    }
}

impl Writing {
    /// Writes a block, erasing the sectors it reaches first; a final block's padding past
    /// the total is dropped (stub_write_flash.c:323-361).
    fn write(&mut self, flash: &mut dyn Flash, data: &[u8]) {
        let data = &data[..data.len().min(self.remaining)];
        if data.is_empty() {
            return;
        }
        let last_sector = (self.next_write + data.len()) / SECTOR;
        while self.remaining_erase_sectors > 0 && self.next_erase_sector <= last_sector {
            let sectors = ERASE_BLOCK / SECTOR;
            let n = if self.remaining_erase_sectors >= sectors
                && self.next_erase_sector % sectors == 0
            {
                sectors
            } else {
                1
            };
            let at = self.next_erase_sector * SECTOR;
            let len = (n * SECTOR).min(flash.size().saturating_sub(at));
            if len == 0 || !flash.erase(at, len) {
                self.last_error = FAILED_SPI_OP;
            }
            self.remaining_erase_sectors -= n;
            self.next_erase_sector += n;
        }
        if !flash.write(self.next_write, data) {
            self.last_error = FAILED_SPI_OP;
        }
        self.next_write += data.len();
        self.remaining -= data.len();
    }

    /// Inflates a block of the zlib stream and writes what comes out
    /// (stub_write_flash.c:417-466).
    fn inflate(&mut self, flash: &mut dyn Flash, mut data: &[u8]) {
        let Some(mut z) = self.inflate.take() else {
            self.last_error = INFLATE_ERROR;
            return;
        };
        // After the last byte only the stream's 4-byte Adler-32 may follow.
        if self.remaining == 0 && data.len() > 4 {
            self.last_error = TOO_MUCH_DATA;
            self.inflate = Some(z);
            return;
        }
        let mut buf = vec![0u8; 0x8000];
        let mut done = false;
        while !data.is_empty() && self.remaining > 0 && !done {
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let status = z.decompress(data, &mut buf, FlushDecompress::None);
            let used = (z.total_in() - before_in) as usize;
            let made = (z.total_out() - before_out) as usize;
            data = &data[used..];
            self.write(flash, &buf[..made]);
            match status {
                Ok(Status::StreamEnd) => done = true,
                Ok(_) if used == 0 && made == 0 => break,
                Ok(_) => {}
                Err(_) => {
                    self.last_error = INFLATE_ERROR;
                    break;
                }
            }
        }
        if done && self.remaining > 0 {
            self.last_error = NOT_ENOUGH_DATA;
        }
        self.inflate = Some(z);
    }
}
