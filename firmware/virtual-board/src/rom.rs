//! The ESP8266 ROM serial loader, as the virtual board speaks it on its UART: SLIP frames,
//! SYNC, register reads and writes (chip magic, MAC efuses, the SPI flash's id), flash and RAM
//! downloads. Flash writes go to the board's flash file.

use std::collections::HashMap;

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
/// clock: flashers estimate the crystal (26 MHz) from it.
const UART_CLKDIV: (u32, u32) = (0x6000_0014, 451);
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
    /// Sets `len` bytes from `at` to 0xFF, as a sector erase does.
    fn erase(&mut self, at: usize, len: usize) -> bool {
        self.write(at, &vec![0xff; len])
    }
}

/// The SPI flash's erase unit.
const SECTOR: usize = 0x1000;

impl Flash for Vec<u8> {
    fn size(&self) -> usize {
        self.len()
    }
    fn write(&mut self, at: usize, data: &[u8]) -> bool {
        match self.get_mut(at..at + data.len()) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }
}

/// What the board must do after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Stay,
    /// FLASH_END or MEM_END asked to leave the loader and run.
    Run,
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

fn word(data: &[u8], i: usize) -> Option<u32> {
    data.get(4 * i..4 * i + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The loader's state between commands.
#[derive(Debug, Default)]
pub struct Loader {
    deslip: Deslip,
    regs: HashMap<u32, u32>,
    /// FLASH_BEGIN's offset and block size, and the next block expected.
    flash: Option<(usize, usize, u32)>,
    mem: Option<u32>,
}

impl Loader {
    /// Takes UART bytes; returns the bytes to send back and what to do next.
    pub fn input(&mut self, bytes: &[u8], flash: &mut dyn Flash) -> (Vec<u8>, After) {
        let mut out = Vec::new();
        let mut after = After::Stay;
        for &b in bytes {
            if let Some(frame) = self.deslip.push(b) {
                let (reply, a) = self.command(&frame, flash);
                out.extend(reply);
                if a == After::Run {
                    after = After::Run;
                }
            }
        }
        (out, after)
    }

    fn command(&mut self, frame: &[u8], flash: &mut dyn Flash) -> (Vec<u8>, After) {
        if frame.len() < 8 || frame[0] != 0x00 {
            return (Vec::new(), After::Stay); // not a request: the ROM ignores it
        }
        let cmd = frame[1];
        let size = usize::from(u16::from_le_bytes([frame[2], frame[3]]));
        let checksum = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let data = &frame[8..];
        if data.len() != size {
            return (response(cmd, 0, Some(E_INVALID)), After::Stay);
        }
        let ok = |v| (response(cmd, v, None), After::Stay);
        let err = |e| (response(cmd, 0, Some(e)), After::Stay);
        match cmd {
            // The ROM answers a SYNC eight times; flashers read them all.
            SYNC => (
                (0..8)
                    .flat_map(|_| response(SYNC, 0x2012_0707, None))
                    .collect(),
                After::Stay,
            ),
            READ_REG => match word(data, 0) {
                Some(addr) => ok(self.read_reg(addr)),
                None => err(E_INVALID),
            },
            WRITE_REG => match (word(data, 0), word(data, 1), word(data, 2)) {
                (Some(addr), Some(value), Some(mask)) => {
                    let mask = if mask == 0 { u32::MAX } else { mask };
                    let old = self.read_reg(addr);
                    self.write_reg(addr, (old & !mask) | (value & mask));
                    ok(0)
                }
                _ => err(E_INVALID),
            },
            FLASH_BEGIN => match (word(data, 0), word(data, 1), word(data, 2), word(data, 3)) {
                (Some(_erase), Some(blocks), Some(block), Some(offset)) => {
                    let (offset, block) = (offset as usize, block as usize);
                    let end = offset.saturating_add(blocks as usize * block);
                    if end > flash.size() {
                        return err(E_FAILED);
                    }
                    // The ROM erases the sectors the blocks will land in before any arrives
                    // (flashers size the request around its erase-size quirk to get exactly
                    // these), so a cut mid-flash leaves erased flash behind the last block.
                    let first = offset / SECTOR * SECTOR;
                    let last = end.div_ceil(SECTOR) * SECTOR;
                    if end > offset && !flash.erase(first, last.min(flash.size()) - first) {
                        return err(E_FAILED);
                    }
                    self.flash = Some((offset, block, 0));
                    ok(0)
                }
                _ => err(E_INVALID),
            },
            FLASH_DATA => {
                let (Some(len), Some(seq), Some((offset, block, next))) =
                    (word(data, 0), word(data, 1), self.flash)
                else {
                    return err(E_INVALID);
                };
                let payload = &data[16.min(data.len())..];
                if payload.len() != len as usize || seq != next {
                    return err(E_INVALID);
                }
                if payload.iter().fold(0xef_u8, |s, b| s ^ b) as u32 != checksum {
                    return err(E_CHECKSUM);
                }
                if !flash.write(offset + seq as usize * block, payload) {
                    return err(E_FAILED);
                }
                self.flash = Some((offset, block, next + 1));
                ok(0)
            }
            // Data 0 asks to leave the loader and boot; anything else stays.
            FLASH_END => {
                self.flash = None;
                let run = word(data, 0) == Some(0);
                (
                    response(cmd, 0, None),
                    if run { After::Run } else { After::Stay },
                )
            }
            MEM_BEGIN => {
                self.mem = Some(0);
                ok(0)
            }
            MEM_DATA => match (self.mem, word(data, 1)) {
                (Some(next), Some(seq)) if seq == next => {
                    let payload = &data[16.min(data.len())..];
                    if payload.iter().fold(0xef_u8, |s, b| s ^ b) as u32 != checksum {
                        return err(E_CHECKSUM);
                    }
                    self.mem = Some(next + 1);
                    ok(0)
                }
                _ => err(E_INVALID),
            },
            // Code loaded to RAM cannot run here; a MEM_END that asks to execute reboots instead.
            MEM_END => {
                self.mem = None;
                let run = word(data, 0) == Some(0);
                (
                    response(cmd, 0, None),
                    if run { After::Run } else { After::Stay },
                )
            }
            _ => err(E_INVALID),
        }
    }

    fn read_reg(&self, addr: u32) -> u32 {
        if addr == CHIP_MAGIC_REG {
            return CHIP_MAGIC;
        }
        if let Some((_, v)) = EFUSE.iter().chain([&UART_CLKDIV]).find(|(a, _)| *a == addr) {
            return *v;
        }
        self.regs.get(&addr).copied().unwrap_or(0)
    }

    fn write_reg(&mut self, addr: u32, value: u32) {
        if addr == SPI_CMD && value & SPI_USR != 0 {
            // Run the user command at once; the flag reads back clear, as when it is done.
            let command = self.read_reg(SPI_USR2) & 0xff;
            self.regs
                .insert(SPI_W0, if command == RDID { FLASH_ID } else { 0 });
            self.regs.insert(SPI_CMD, value & !SPI_USR);
            return;
        }
        self.regs.insert(addr, value);
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
        let (out, _) = l.input(&request(SYNC, &sync, 0), &mut Vec::new());
        assert_eq!(frames(&out).len(), 8);
        let (out, _) = l.input(
            &request(READ_REG, &CHIP_MAGIC_REG.to_le_bytes(), 0),
            &mut Vec::new(),
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
        l.input(&request(FLASH_BEGIN, &begin, 0), &mut flash);
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
            &mut flash,
        );
        assert_eq!(&frames(&out)[0][8..], &[1, E_CHECKSUM]);
        let (out, _) = l.input(&request(FLASH_DATA, &block(0, 0xaa), sum(0xaa)), &mut flash);
        assert_eq!(&frames(&out)[0][8..], &[0, 0]);
        let (out, _) = l.input(&request(FLASH_DATA, &block(5, 0xaa), sum(0xaa)), &mut flash);
        assert_eq!(&frames(&out)[0][8..], &[1, E_INVALID], "out of sequence");
        assert!(flash[0x400..0x800].iter().all(|&b| b == 0xaa));
        assert!(flash[..0x400].iter().all(|&b| b == 0xff));
        let (_, after) = l.input(&request(FLASH_END, &0u32.to_le_bytes(), 0), &mut flash);
        assert_eq!(after, After::Run);
    }

    #[test]
    fn the_spi_flash_answers_rdid() {
        let mut l = Loader::default();
        l.write_reg(SPI_USR2, (7 << 28) | RDID);
        l.write_reg(SPI_CMD, SPI_USR);
        assert_eq!(l.read_reg(SPI_CMD) & SPI_USR, 0);
        assert_eq!(l.read_reg(SPI_W0), FLASH_ID);
    }

    #[test]
    fn an_unknown_command_gets_an_error() {
        let mut l = Loader::default();
        let (out, _) = l.input(&request(0x42, &[], 0), &mut Vec::new());
        assert_eq!(&frames(&out)[0][..2], &[0x01, 0x42]);
        assert_eq!(&frames(&out)[0][8..], &[1, E_INVALID]);
    }
}
