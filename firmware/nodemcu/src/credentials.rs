//! Where a NodeMCU's firmware keeps its WiFi credentials: the record `relay-core` encodes, at
//! the start of the ESP8266 Arduino core's EEPROM sector.

use relay_core::provision::{RECORD_SIZE, Wifi};

/// The record's distance from the end of flash: the EEPROM sector sits 0x5000 below the end
/// (core 3.1.2, `tools/sdk/ld/eagle.flash.4m.ld:20`: `_EEPROM_start = 0x405fb000`, flash mapped
/// at 0x40200000, on a 4 MiB chip), and the firmware writes the record at its offset 0.
pub const RECORD_FROM_END: usize = 0x5000;

/// The record's offset in a flash of `flash_len` bytes; `None` for a flash too small to hold
/// the sector.
pub fn offset(flash_len: usize) -> Option<usize> {
    flash_len.checked_sub(RECORD_FROM_END)
}

/// The credentials stored in a whole-flash image, if it holds a valid record.
pub fn stored(flash: &[u8]) -> Option<Wifi> {
    let at = offset(flash.len())?;
    Wifi::from_record(flash.get(at..at + RECORD_SIZE)?)
}

/// Writes `wifi`'s record into a whole-flash image; `false` if it is too small.
pub fn store(flash: &mut [u8], wifi: &Wifi) -> bool {
    let Some(at) = offset(flash.len()) else {
        return false;
    };
    match flash.get_mut(at..at + RECORD_SIZE) {
        Some(slot) => {
            slot.copy_from_slice(&wifi.record());
            true
        }
        None => false,
    }
}
