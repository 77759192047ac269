//! The ESP8266 ROM serial loader, as the virtual board speaks it on its UART: SLIP frames,
//! SYNC, register reads and writes (chip magic, MAC efuses, the SPI flash's id), flash and RAM
//! downloads, and leaving the loader. Flash writes go to the board's flash file. When a flasher
//! uploads esptool's flasher stub and starts it, [`crate::stub`] answers in its place.
//!
//! What the ROM does with each command follows its annotated disassembly (trebisky/esp8266,
//! `reverse/bootrom/boot.txt`, cited below by ROM address) and esptool's protocol
//! documentation (`docs/en/advanced-topics/serial-protocol.rst`, esptool 4.8.1).

use std::collections::HashMap;

use crate::stub::{self, Stub};

const SLIP_END: u8 = 0xC0;
const SLIP_ESC: u8 = 0xDB;
const SLIP_ESC_END: u8 = 0xDC;
const SLIP_ESC_ESC: u8 = 0xDD;

pub const FLASH_BEGIN: u8 = 0x02;
pub const FLASH_DATA: u8 = 0x03;
pub const FLASH_END: u8 = 0x04;
pub const MEM_BEGIN: u8 = 0x05;
pub const MEM_END: u8 = 0x06;
pub const MEM_DATA: u8 = 0x07;
pub const SYNC: u8 = 0x08;
pub const WRITE_REG: u8 = 0x09;
pub const READ_REG: u8 = 0x0a;

/// The ROM's error codes, sent after a status byte of 1.
const E_INVALID: u8 = 0x05;
const E_FAILED: u8 = 0x06;
const E_CHECKSUM: u8 = 0x07;

/// The largest block FLASH_BEGIN and MEM_BEGIN accept, and the largest request a _DATA command
/// may carry (its 16-byte header included): FlashDwnLdStartMsgProc at 0x40003553 and
/// FilePacketSendReqMsgProc at 0x400035ae.
const ROM_BLOCK_MAX: u32 = 0x1800;
const ROM_DATA_MAX: usize = 0x1810;

/// The register the ROM reads to tell chips apart, and the ESP8266's value in it.
const CHIP_MAGIC_REG: u32 = 0x4000_1000;
const CHIP_MAGIC: u32 = 0xfff0_c101;
/// eFuse words 0..3: a MAC of 18:fe:34:xx:xx:xx (the OUI for mac1 bits 16..23 = 0), ESP8266EX.
const EFUSE: [(u32, u32); 4] = [
    (0x3ff0_0050, 0x2a00_0000),
    (0x3ff0_0054, 0x0000_4e4d),
    (0x3ff0_0058, 0),
    (0x3ff0_005c, 0),
];
/// UART0's clock divider, as the ROM leaves it after autobauding to 115200 from its 52 MHz
/// clock: flashers estimate the crystal (26 MHz) from it and the rate they connected at.
const UART_CLKDIV: (u32, u32) = (0x6000_0014, 451);
/// The ROM's UART clock: twice the board's 26 MHz crystal.
const ROM_UART_CLOCK_HZ: u32 = 52_000_000;
/// The SPI controller: a write of USR (bit 18) to CMD runs the command in USR2's low byte and
/// leaves the answer in W0; RDID (0x9f) answers a Winbond W25Q32, the NodeMCU's 4 MiB chip.
const SPI_CMD: u32 = 0x6000_0200;
const SPI_USR2: u32 = 0x6000_0224;
const SPI_W0: u32 = 0x6000_0240;
const SPI_USR: u32 = 1 << 18;
const RDID: u32 = 0x9f;
const FLASH_ID: u32 = 0x0016_40ef;

/// Where flash writes go: the board's flash file, or memory in tests.
pub trait Flash {
    fn size(&self) -> usize;
    /// Writes `data` at `at`; false if it could not.
    fn write(&mut self, at: usize, data: &[u8]) -> bool;
    /// `len` bytes from `at`; `None` past the end or when the flash cannot be read.
    fn read(&self, at: usize, len: usize) -> Option<Vec<u8>>;
    /// Sets `len` bytes from `at` to 0xFF, as a sector erase does.
    fn erase(&mut self, at: usize, len: usize) -> bool {
        self.write(at, &vec![0xff; len])
    }
}

/// The SPI flash's erase unit.
pub const SECTOR: usize = 0x1000;

impl Flash for Vec<u8> {
    fn size(&self) -> usize {
        self.len()
    }
    fn write(&mut self, at: usize, data: &[u8]) -> bool {
        match self.get_mut(at..at.saturating_add(data.len())) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
    fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        self.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
    }
}

/// A board without a flash file has its flash in memory: it boots the built-in relay from it,
/// and no flasher may write or read it.
pub(crate) fn no_flash_file(command: &str) {
    tracing::warn!(
        "refused {command}: flash commands need --flash-file PATH (this board has no flash file; its \
         flash is built in)"
    );
}

/// The flash for one command, leaving it for the next.
fn reborrow<'a>(flash: &'a mut Option<&mut dyn Flash>) -> Option<&'a mut dyn Flash> {
    flash.as_mut().map(|f| &mut **f as &mut dyn Flash)
}

/// What the board must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Stay,
    /// Leave the loader and boot from flash, with no reset in between: the ROM's FLASH_END,
    /// or the stub's RUN_USER_CODE.
    Run,
    /// A software reset: the chip starts again, and since its boot mode was latched at the
    /// last hardware reset (GPIO0 low), it comes back into the serial loader.
    Reboot,
}

/// Undoes SLIP framing, one byte at a time.
#[derive(Debug, Default)]
pub struct Deslip {
    frame: Vec<u8>,
    in_frame: bool,
    escaped: bool,
}

impl Deslip {
    /// Feeds one byte; returns a whole frame when one ends.
    pub fn push(&mut self, b: u8) -> Option<Vec<u8>> {
        match (self.in_frame, self.escaped, b) {
            (false, _, SLIP_END) => {
                self.in_frame = true;
                self.frame.clear();
            }
            (false, _, _) => {} // noise between frames
            (true, false, SLIP_END) if self.frame.is_empty() => {} // back-to-back END
            (true, false, SLIP_END) => {
                self.in_frame = false;
                return Some(std::mem::take(&mut self.frame));
            }
            (true, false, SLIP_ESC) => self.escaped = true,
            (true, true, x) => {
                self.escaped = false;
                self.frame.push(match x {
                    SLIP_ESC_END => SLIP_END,
                    SLIP_ESC_ESC => SLIP_ESC,
                    other => other, // a protocol error; keep the byte, the checksum will tell
                });
            }
            (true, false, x) => self.frame.push(x),
        }
        None
    }
}

pub fn slip(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame.len() + 2);
    out.push(SLIP_END);
    for &b in frame {
        match b {
            SLIP_END => out.extend([SLIP_ESC, SLIP_ESC_END]),
            SLIP_ESC => out.extend([SLIP_ESC, SLIP_ESC_ESC]),
            _ => out.push(b),
        }
    }
    out.push(SLIP_END);
    out
}

fn response(cmd: u8, value: u32, error: Option<u8>) -> Vec<u8> {
    let mut r = vec![0x01, cmd, 2, 0];
    r.extend(value.to_le_bytes());
    r.extend(match error {
        None => [0, 0],
        Some(e) => [1, e],
    });
    slip(&r)
}

pub(crate) fn word(data: &[u8], i: usize) -> Option<u32> {
    data.get(4 * i..4 * i + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The protocol's data checksum: 0xEF XORed with every byte.
pub(crate) fn checksum(data: &[u8]) -> u32 {
    data.iter().fold(0xef_u8, |s, b| s ^ b).into()
}

/// The chip's registers as a flasher sees them through READ_REG and WRITE_REG (the ROM's and
/// the stub's alike).
#[derive(Debug, Default)]
pub struct Regs(HashMap<u32, u32>);

impl Regs {
    pub fn read(&self, addr: u32) -> u32 {
        if addr == CHIP_MAGIC_REG {
            return CHIP_MAGIC;
        }
        if let Some(v) = self.0.get(&addr).filter(|_| addr == UART_CLKDIV.0) {
            return *v;
        }
        if let Some((_, v)) = EFUSE.iter().chain([&UART_CLKDIV]).find(|(a, _)| *a == addr) {
            return *v;
        }
        self.0.get(&addr).copied().unwrap_or(0)
    }

    pub fn write(&mut self, addr: u32, value: u32) {
        if addr == SPI_CMD && value & SPI_USR != 0 {
            // Run the user command at once; the flag reads back clear, as when it is done.
            let command = self.read(SPI_USR2) & 0xff;
            self.0
                .insert(SPI_W0, if command == RDID { FLASH_ID } else { 0 });
            self.0.insert(SPI_CMD, value & !SPI_USR);
            return;
        }
        self.0.insert(addr, value);
    }
}

/// A download the ROM has begun: FLASH_BEGIN and MEM_BEGIN fill in the same fields
/// (FlashDwnLdStartMsgProc at 0x40003538, MemDwnLdStartMsgProc at 0x400036c4).
#[derive(Clone, Copy, Debug)]
struct Download {
    /// FLASH_BEGIN's erase size, MEM_BEGIN's total size.
    size: u32,
    blocks: u32,
    block: u32,
    offset: u32,
    /// Blocks received, and bytes.
    next: u32,
    bytes: u32,
}

impl Download {
    fn begin(data: &[u8]) -> Result<Download, u8> {
        match (
            data.len(),
            word(data, 0),
            word(data, 1),
            word(data, 2),
            word(data, 3),
        ) {
            (16, Some(size), Some(blocks), Some(block), Some(offset)) if block <= ROM_BLOCK_MAX => {
                Ok(Download {
                    size,
                    blocks,
                    block,
                    offset,
                    next: 0,
                    bytes: 0,
                })
            }
            _ => Err(E_INVALID),
        }
    }

    /// Checks a _DATA request (FilePacketSendReqMsgProc at 0x400035a0 and
    /// MemPacketSendReqMsgProc at 0x400036f0): the next sequence number, a payload no longer
    /// than the block, and the checksum. Flash blocks must also be whole words.
    fn block<'a>(&self, data: &'a [u8], sum: u32, words: bool) -> Result<&'a [u8], u8> {
        let (Some(len), Some(seq)) = (word(data, 0), word(data, 1)) else {
            return Err(E_INVALID);
        };
        let payload = &data[16.min(data.len())..];
        if data.len() > ROM_DATA_MAX
            || payload.len() != len as usize
            || seq != self.next
            || len > self.block
            || (words && len % 4 != 0)
        {
            return Err(E_INVALID);
        }
        if checksum(payload) != sum {
            return Err(E_CHECKSUM);
        }
        Ok(payload)
    }
}

/// The loader's state between commands.
#[derive(Debug, Default)]
pub struct Loader {
    deslip: Deslip,
    regs: Regs,
    flash: Option<Download>,
    mem: Option<Download>,
    /// esptool's stub code has been uploaded whole to its address in IRAM.
    stub_uploaded: bool,
    /// The flasher stub, once started: it answers instead of the ROM until the chip resets.
    stub: Option<Stub>,
    /// A new UART rate, to take effect once the replies so far have left.
    baud: Option<u32>,
}

impl Loader {
    /// The ROM timed the host's first bytes and set its UART's divider to match `baud`.
    pub fn autobauded(&mut self, baud: u32) {
        let div = (ROM_UART_CLOCK_HZ + baud / 2) / baud.max(1);
        self.regs.0.insert(UART_CLKDIV.0, div);
    }

    /// Takes UART bytes; returns the bytes to send back and what to do next. Bytes after a
    /// command that leaves the loader are not read: the loader no longer listens.
    pub fn input(&mut self, bytes: &[u8], mut flash: Option<&mut dyn Flash>) -> (Vec<u8>, After) {
        let mut out = Vec::new();
        for &b in bytes {
            let Some(frame) = self.deslip.push(b) else {
                continue;
            };
            let after = match self.stub.as_mut() {
                Some(stub) => {
                    let (after, baud) =
                        stub.command(&frame, &mut self.regs, reborrow(&mut flash), &mut out);
                    self.baud = baud.or(self.baud);
                    after
                }
                None => self.command(&frame, reborrow(&mut flash), &mut out),
            };
            if after != After::Stay {
                return (out, after);
            }
        }
        (out, After::Stay)
    }

    /// The UART rate a CHANGE_BAUDRATE asked for, once: it applies after the reply has left.
    pub fn take_baud(&mut self) -> Option<u32> {
        self.baud.take()
    }

    /// Whether esptool's flasher stub answers instead of the ROM.
    pub fn stub_running(&self) -> bool {
        self.stub.is_some()
    }

    fn command(&mut self, frame: &[u8], flash: Option<&mut dyn Flash>, out: &mut Vec<u8>) -> After {
        if frame.len() < 8 || frame[0] != 0x00 {
            return After::Stay; // not a request: the ROM ignores it
        }
        let cmd = frame[1];
        let size = usize::from(u16::from_le_bytes([frame[2], frame[3]]));
        let sum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let data = &frame[8..];
        let mut reply = |value, error| out.extend(response(cmd, value, error));
        if data.len() != size {
            reply(0, Some(E_INVALID));
            return After::Stay;
        }
        match cmd {
            // The ROM answers a SYNC eight times; flashers read them all.
            SYNC => (0..8).for_each(|_| reply(0x2012_0707, None)),
            READ_REG => match word(data, 0) {
                Some(addr) => reply(self.regs.read(addr), None),
                None => reply(0, Some(E_INVALID)),
            },
            WRITE_REG => match (word(data, 0), word(data, 1), word(data, 2)) {
                (Some(addr), Some(value), Some(mask)) => {
                    let mask = if mask == 0 { u32::MAX } else { mask };
                    let old = self.regs.read(addr);
                    self.regs.write(addr, (old & !mask) | (value & mask));
                    reply(0, None);
                }
                _ => reply(0, Some(E_INVALID)),
            },
            FLASH_BEGIN => {
                let result =
                    Download::begin(data).and_then(|d| Self::erase_for(&d, flash).map(|()| d));
                self.flash = result.ok();
                reply(0, result.err());
            }
            FLASH_DATA => {
                let result = match (self.flash.as_mut(), flash) {
                    (Some(d), Some(flash)) => d.block(data, sum, true).and_then(|payload| {
                        let at = d.offset as usize + d.next as usize * d.block as usize;
                        if !flash.write(at, payload) {
                            return Err(E_FAILED);
                        }
                        d.next += 1;
                        d.bytes += payload.len() as u32;
                        Ok(())
                    }),
                    _ => Err(E_INVALID),
                };
                reply(0, result.err());
            }
            // FLASH_END always leaves the loader and boots from flash, whatever its data word:
            // FlashDwnLdStopReqMsgProc (0x40003658) never reads it and ends UartDwnLdProc's
            // loop, the dispatcher (0x400034d9) clears the entry point, and main then loads the
            // application from flash (0x4000108a-0x400010a8). It fails with 6, and leaves all
            // the same, when the blocks or bytes do not add up to what FLASH_BEGIN announced.
            // esptool sends 1 here for "run user code" (loader.py:970-980 flash_finish and run,
            // loader.py:1532-1540 soft_reset); its documentation's "0 to reboot" is the stub's.
            FLASH_END => {
                let d = self.flash.take();
                let whole = d.is_none_or(|d| d.next == d.blocks && d.bytes == d.size);
                reply(0, (!whole).then_some(E_FAILED));
                return After::Run;
            }
            MEM_BEGIN => {
                let result = Download::begin(data);
                if let Ok(d) = result {
                    self.stub_uploaded &= d.offset != stub::TEXT;
                }
                self.mem = result.ok();
                reply(0, result.err());
            }
            MEM_DATA => {
                let result = match self.mem.as_mut() {
                    Some(d) => d.block(data, sum, false).map(|payload| {
                        d.next += 1;
                        d.bytes += payload.len() as u32;
                        if d.offset == stub::TEXT && d.bytes >= d.size {
                            self.stub_uploaded = true;
                        }
                    }),
                    None => Err(E_INVALID),
                };
                reply(0, result.err());
            }
            MEM_END => return self.mem_end(data, out),
            _ => reply(0, Some(E_INVALID)),
        }
        After::Stay
    }

    /// FLASH_BEGIN: the ROM erases the sectors the blocks will land in before any arrives
    /// (flashers size the request around its erase-size quirk to get exactly these), so a cut
    /// mid-flash leaves erased flash behind the last block. Nothing to write is no flash
    /// command: esptool sends it to attach the flash and before FLASH_END.
    fn erase_for(d: &Download, flash: Option<&mut dyn Flash>) -> Result<(), u8> {
        if d.size == 0 && d.blocks == 0 {
            return Ok(());
        }
        let Some(flash) = flash else {
            no_flash_file("FLASH_BEGIN");
            // What FLASH_BEGIN answers when its erase fails (0x40003580-0x4000358a).
            return Err(E_FAILED);
        };
        let offset = d.offset as usize;
        let end = offset.saturating_add(d.blocks as usize * d.block as usize);
        if end > flash.size() {
            return Err(E_FAILED);
        }
        let first = offset / SECTOR * SECTOR;
        let last = end.div_ceil(SECTOR) * SECTOR;
        if end > offset && !flash.erase(first, last.min(flash.size()) - first) {
            return Err(E_FAILED);
        }
        Ok(())
    }

    /// MEM_END's first byte 0 leaves the loader and jumps to the entry point in its second
    /// word; anything else stays (MemDwnLdStopReqMsgProc at 0x4000377c). esptool sends 0 with
    /// an entry point, and 1 without one (loader.py:877-892). An entry point of 0 makes the
    /// ROM boot from flash instead (main at 0x4000109c-0x400010a8).
    fn mem_end(&mut self, data: &[u8], out: &mut Vec<u8>) -> After {
        if data.len() > 8 {
            out.extend(response(MEM_END, 0, Some(E_INVALID)));
            return After::Stay;
        }
        out.extend(response(MEM_END, 0, None));
        self.mem = None;
        let execute = data.first() == Some(&0);
        let entry = word(data, 1).unwrap_or(0);
        match (execute, entry) {
            (false, _) => After::Stay,
            (true, 0) => After::Run,
            // esptool's flasher stub: the board speaks its protocol from here on, starting
            // with the greeting the stub sends once it runs (loader.py:1076-1083).
            (true, stub::ENTRY) if self.stub_uploaded => {
                tracing::info!("esptool's flasher stub runs: the board answers in its place");
                out.extend(slip(stub::GREETING));
                self.stub = Some(Stub::default());
                After::Stay
            }
            // A real ROM would jump into the code, and only that code would answer from then
            // on. Xtensa code cannot run here, so the board stays in the ROM loader: the
            // flasher still gets answers and can tell that its code never started, where
            // booting the flash instead would put the firmware's text in its SLIP stream.
            (true, entry) => {
                tracing::warn!(
                    "refused to run the code loaded to RAM at entry {entry:#010x}: the virtual \
                     board runs no Xtensa code and knows only esptool's flasher stub (entry \
                     {:#010x}); it stays in the ROM loader",
                    stub::ENTRY
                );
                After::Stay
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cmd: u8, data: &[u8], checksum: u32) -> Vec<u8> {
        let mut f = vec![0x00, cmd];
        f.extend((data.len() as u16).to_le_bytes());
        f.extend(checksum.to_le_bytes());
        f.extend_from_slice(data);
        slip(&f)
    }

    fn frames(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut d = Deslip::default();
        bytes.iter().filter_map(|&b| d.push(b)).collect()
    }

    #[test]
    fn slip_round_trips_the_special_bytes() {
        let data = [0x01, SLIP_END, 0x02, SLIP_ESC, 0x03];
        assert_eq!(frames(&slip(&data)), vec![data.to_vec()]);
        assert_eq!(
            &slip(&data)[1..8],
            &[0x01, 0xdb, 0xdc, 0x02, 0xdb, 0xdd, 0x03]
        );
    }

    #[test]
    fn sync_is_answered_eight_times_and_the_chip_is_an_esp8266() {
        let mut l = Loader::default();
        let mut sync = vec![0x07, 0x07, 0x12, 0x20];
        sync.extend([0x55; 32]);
        let (out, _) = l.input(&request(SYNC, &sync, 0), Some(&mut Vec::new()));
        assert_eq!(frames(&out).len(), 8);
        let (out, _) = l.input(
            &request(READ_REG, &CHIP_MAGIC_REG.to_le_bytes(), 0),
            Some(&mut Vec::new()),
        );
        let r = &frames(&out)[0];
        assert_eq!(&r[4..8], &CHIP_MAGIC.to_le_bytes());
        assert_eq!(&r[8..], &[0, 0], "status ok");
    }

    #[test]
    fn flash_blocks_land_in_order_and_a_bad_checksum_is_refused() {
        let mut l = Loader::default();
        let mut flash = vec![0xff; 0x1000];
        let begin: Vec<u8> = [0x800u32, 2, 0x400, 0x400]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        l.input(&request(FLASH_BEGIN, &begin, 0), Some(&mut flash));
        let block = |seq: u32, fill: u8| {
            let mut d: Vec<u8> = [0x400u32, seq, 0, 0]
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect();
            d.extend([fill; 0x400]);
            d
        };
        let sum = |fill: u8| u32::from((0..0x400).fold(0xef_u8, |s, _| s ^ fill));
        let (out, _) = l.input(
            &request(FLASH_DATA, &block(0, 0xaa), sum(0xaa) ^ 1),
            Some(&mut flash),
        );
        assert_eq!(&frames(&out)[0][8..], &[1, E_CHECKSUM]);
        let (out, _) = l.input(
            &request(FLASH_DATA, &block(0, 0xaa), sum(0xaa)),
            Some(&mut flash),
        );
        assert_eq!(&frames(&out)[0][8..], &[0, 0]);
        let (out, _) = l.input(
            &request(FLASH_DATA, &block(5, 0xaa), sum(0xaa)),
            Some(&mut flash),
        );
        assert_eq!(&frames(&out)[0][8..], &[1, E_INVALID], "out of sequence");
        assert!(flash[0x400..0x800].iter().all(|&b| b == 0xaa));
        assert!(flash[..0x400].iter().all(|&b| b == 0xff));
        let (_, after) = l.input(
            &request(FLASH_END, &0u32.to_le_bytes(), 0),
            Some(&mut flash),
        );
        assert_eq!(after, After::Run);
    }

    #[test]
    fn the_spi_flash_answers_rdid() {
        let mut l = Loader::default();
        l.regs.write(SPI_USR2, (7 << 28) | RDID);
        l.regs.write(SPI_CMD, SPI_USR);
        assert_eq!(l.regs.read(SPI_CMD) & SPI_USR, 0);
        assert_eq!(l.regs.read(SPI_W0), FLASH_ID);
    }

    #[test]
    fn an_unknown_command_gets_an_error() {
        let mut l = Loader::default();
        let (out, _) = l.input(&request(0x42, &[], 0), Some(&mut Vec::new()));
        assert_eq!(&frames(&out)[0][..2], &[0x01, 0x42]);
        assert_eq!(&frames(&out)[0][8..], &[1, E_INVALID]);
    }

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// A _DATA request: length, sequence, two zero words, then the payload.
    fn data_request(cmd: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut d = words(&[payload.len() as u32, seq, 0, 0]);
        d.extend_from_slice(payload);
        request(cmd, &d, checksum(payload))
    }

    /// The status bytes of the `i`th reply in `out`.
    fn status(out: &[u8], i: usize) -> Vec<u8> {
        let f = &frames(out)[i];
        f[f.len() - 2..].to_vec()
    }

    #[test]
    fn flash_end_leaves_the_loader_whatever_its_word() {
        for word in [0u32, 1] {
            let mut l = Loader::default();
            let mut flash = vec![0xff; 0x1000];
            let (_, after) = l.input(
                &request(FLASH_BEGIN, &words(&[0, 0, 0x400, 0]), 0),
                Some(&mut flash),
            );
            assert_eq!(after, After::Stay);
            let (out, after) = l.input(&request(FLASH_END, &words(&[word]), 0), Some(&mut flash));
            assert_eq!(after, After::Run, "FLASH_END {word}");
            assert_eq!(
                status(&out, 0),
                [0, 0],
                "nothing announced, nothing missing"
            );
        }
    }

    #[test]
    fn mem_end_runs_ram_code_only_when_its_flag_is_zero() {
        let mut l = Loader::default();
        let mem_end = |flag, entry| request(MEM_END, &words(&[flag, entry]), 0);
        let (out, after) = l.input(&mem_end(1, 0), None);
        assert_eq!((status(&out, 0), after), (vec![0, 0], After::Stay));
        // Code that is not esptool's stub cannot run: the board stays in the ROM loader.
        let (out, after) = l.input(&mem_end(0, 0x4010_0004), None);
        assert_eq!((frames(&out).len(), after), (1, After::Stay));
        assert!(!l.stub_running());
        let (_, after) = l.input(&mem_end(0, 0), None);
        assert_eq!(
            after,
            After::Run,
            "no entry point: the ROM boots from flash"
        );
    }

    /// Uploads a stand-in for esptool's stub to its address and starts it.
    fn stub_loader() -> Loader {
        let mut l = Loader::default();
        let code = [0x5a; 8];
        l.input(
            &request(MEM_BEGIN, &words(&[8, 1, 0x1800, stub::TEXT]), 0),
            None,
        );
        l.input(&data_request(MEM_DATA, 0, &code), None);
        let (out, after) = l.input(&request(MEM_END, &words(&[0, stub::ENTRY]), 0), None);
        assert_eq!(after, After::Stay);
        assert_eq!(
            frames(&out)[1],
            stub::GREETING,
            "the stub greets once it runs"
        );
        assert!(l.stub_running());
        l
    }

    #[test]
    fn the_stub_starts_only_once_its_code_is_uploaded() {
        let mut l = Loader::default();
        let (out, _) = l.input(&request(MEM_END, &words(&[0, stub::ENTRY]), 0), None);
        assert_eq!(frames(&out).len(), 1, "no greeting");
        assert!(!l.stub_running());
        stub_loader();
    }

    #[test]
    fn the_stub_inflates_what_it_writes_and_hashes_it() {
        use std::io::Write;
        let mut l = stub_loader();
        let mut flash = vec![0u8; 0x20000];
        let image: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&image).unwrap();
        let packed = z.finish().unwrap();
        let blocks = packed.len().div_ceil(stub::MAX_WRITE_BLOCK) as u32;
        let begin = words(&[
            image.len() as u32,
            blocks,
            stub::MAX_WRITE_BLOCK as u32,
            0x1000,
        ]);
        let (out, _) = l.input(
            &request(stub::FLASH_DEFL_BEGIN, &begin, 0),
            Some(&mut flash),
        );
        assert_eq!(status(&out, 0), [0, 0]);
        for (seq, block) in packed.chunks(stub::MAX_WRITE_BLOCK).enumerate() {
            let req = data_request(stub::FLASH_DEFL_DATA, seq as u32, block);
            let (out, _) = l.input(&req, Some(&mut flash));
            assert_eq!(status(&out, 0), [0, 0], "block {seq}");
        }
        assert_eq!(&flash[0x1000..0x1000 + image.len()], &image[..]);
        assert!(
            flash[..0x1000].iter().all(|&b| b == 0),
            "nothing before the offset"
        );
        let tail = 0x1000 + image.len();
        assert!(
            flash[tail..0xb000].iter().all(|&b| b == 0xff),
            "its last sector erased"
        );
        assert!(flash[0xb000..].iter().all(|&b| b == 0), "nothing past it");
        let (out, after) = l.input(
            &request(stub::FLASH_DEFL_END, &words(&[1]), 0),
            Some(&mut flash),
        );
        assert_eq!(
            (status(&out, 0), after),
            (vec![0, 0], After::Stay),
            "1 stays in the stub"
        );
        let md5 = words(&[0x1000, image.len() as u32, 0, 0]);
        let (out, _) = l.input(&request(stub::SPI_FLASH_MD5, &md5, 0), Some(&mut flash));
        assert_eq!(&frames(&out)[0][8..24], &md5::compute(&image).0);
        assert_eq!(status(&out, 0), [0, 0]);
    }

    #[test]
    fn the_stub_sends_each_flash_block_once_the_last_is_acknowledged() {
        let mut l = stub_loader();
        let mut flash: Vec<u8> = (0..0x3000u32).map(|i| (i % 253) as u8).collect();
        let read = words(&[0, 0x2800, 0x1000, 64]);
        let (out, _) = l.input(&request(stub::READ_FLASH, &read, 0), Some(&mut flash));
        let f = frames(&out);
        assert_eq!(
            (f.len(), status(&out, 0)),
            (2, vec![0, 0]),
            "the reply, then one block"
        );
        assert_eq!(f[1], &flash[..0x1000]);
        let ack = |n: u32| slip(&n.to_le_bytes());
        let (out, _) = l.input(&ack(0x1000), Some(&mut flash));
        assert_eq!(frames(&out), [flash[0x1000..0x2000].to_vec()]);
        let (out, _) = l.input(&ack(0x2000), Some(&mut flash));
        assert_eq!(
            frames(&out),
            [flash[0x2000..0x2800].to_vec()],
            "the short last block"
        );
        let (out, _) = l.input(&ack(0x2800), Some(&mut flash));
        assert_eq!(frames(&out), [md5::compute(&flash[..0x2800]).0.to_vec()]);
        let (out, _) = l.input(&request(READ_REG, &words(&[CHIP_MAGIC_REG]), 0), None);
        assert_eq!(
            &frames(&out)[0][4..8],
            &CHIP_MAGIC.to_le_bytes(),
            "commands again"
        );
    }

    #[test]
    fn the_stub_changes_the_rate_after_its_reply_and_leaves_as_asked() {
        let mut l = stub_loader();
        let (out, after) = l.input(
            &request(stub::CHANGE_BAUDRATE, &words(&[460_800, 115_200]), 0),
            None,
        );
        assert_eq!((status(&out, 0), after), (vec![0, 0], After::Stay));
        assert_eq!(l.take_baud(), Some(460_800));
        assert_eq!(l.take_baud(), None);
        let mut flash = vec![0xff; 0x1000];
        l.input(
            &request(FLASH_BEGIN, &words(&[0, 0, 0x4000, 0]), 0),
            Some(&mut flash),
        );
        let (_, after) = l.input(&request(FLASH_END, &words(&[0]), 0), Some(&mut flash));
        assert_eq!(after, After::Reboot, "FLASH_END 0 reboots the stub");
        let mut l = stub_loader();
        let (out, after) = l.input(&request(stub::RUN_USER_CODE, &[], 0), None);
        assert_eq!(
            (out.len(), after),
            (0, After::Run),
            "no reply, the firmware runs"
        );
    }

    #[test]
    fn without_a_flash_file_flash_commands_are_refused() {
        let mut l = Loader::default();
        let begin = |size| request(FLASH_BEGIN, &words(&[size, size / 0x400, 0x400, 0]), 0);
        let (out, _) = l.input(&begin(0), None);
        assert_eq!(status(&out, 0), [0, 0], "attaching the flash is no write");
        let (out, _) = l.input(&begin(0x1000), None);
        assert_eq!(status(&out, 0), [1, E_FAILED]);
        let mut l = stub_loader();
        for (cmd, data) in [
            (stub::FLASH_DEFL_BEGIN, words(&[0x1000, 1, 0x4000, 0])),
            (stub::SPI_FLASH_MD5, words(&[0, 0x1000, 0, 0])),
            (stub::READ_FLASH, words(&[0, 0x1000, 0x1000, 64])),
            (stub::ERASE_REGION, words(&[0, 0x1000])),
            (stub::ERASE_FLASH, vec![]),
        ] {
            let (out, _) = l.input(&request(cmd, &data, 0), None);
            assert_eq!(frames(&out).len(), 1, "{cmd:#x}: a reply, no data");
            assert_eq!(status(&out, 0), [0xc4, 0], "{cmd:#x}: failed SPI operation");
        }
    }
}
