//! Relay images for the virtual board: elf2bin's firmware layout, a build id, and no code.

use std::path::Path;

use nodemcu::bounded::Size;
use nodemcu::image::{
    APP_START, AppSections, FLASH_MAX, build_firmware, build_id_record, find_build_id,
};

use crate::error::MakeImageError;

/// `--size`: at most the largest flash, so the file is one any board can hold.
pub fn size(text: &str) -> Result<usize, String> {
    match text.parse::<u64>() {
        Ok(n) if n <= FLASH_MAX => Ok(n as usize),
        _ => Err(format!(
            "must be a number of bytes from 0 to {FLASH_MAX} ({}, the largest ESP8266 flash)",
            Size(FLASH_MAX)
        )),
    }
}

/// A firmware file in the ESP8266 Arduino core's layout ([`build_firmware`]) carrying
/// `build_id` in the application's `.rodata`, its application padded with filler so that the
/// file is `size` bytes, to 16 below (the smallest is a little over 4 KiB). The virtual board
/// boots it; a NodeMCU would not.
pub fn relay_image(build_id: &str, size: usize) -> Result<Vec<u8>, MakeImageError> {
    let record = build_id_record(build_id);
    if find_build_id(&record).as_deref() != Some(build_id) {
        return Err(MakeImageError::BuildId(build_id.to_owned()));
    }
    // What the file takes besides the filler: the bootloader and its padding, the application's
    // header, five segment headers, the CRC words and the record.
    let fixed = APP_START + 8 + 5 * 8 + 8 + record.len();
    // The application ends with its checksum byte on a 16-byte boundary: filler up to one byte
    // short of the last boundary within `size` keeps the file within `size`.
    let filler_len = (size / 16 * 16).saturating_sub(fixed + 1);
    // Filler that varies like code does, so SLIP escaping costs what it would.
    let filler: Vec<u8> = (0..filler_len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    Ok(build_firmware(
        4,
        &AppSections {
            entry: 0x4010_0000,
            irom0_text: &filler,
            rodata: &record,
            ..AppSections::default()
        },
    ))
}

/// Writes [`relay_image`] to `path`, and returns its length.
pub fn write(path: &Path, build_id: &str, size: usize) -> Result<usize, MakeImageError> {
    let bytes = relay_image(build_id, size)?;
    std::fs::write(path, &bytes).map_err(|source| MakeImageError::Write {
        path: path.to_owned(),
        source,
    })?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use nodemcu::image::parse_firmware;

    use super::*;

    #[test]
    fn an_image_carries_its_build_id_in_a_whole_firmware_file() {
        let bytes = relay_image("f300", 300_000).unwrap();
        assert!(
            (300_000 - 16..=300_000).contains(&bytes.len()),
            "{}",
            bytes.len()
        );
        let fw = parse_firmware(&bytes).unwrap();
        assert_eq!(fw.check_file_crc(), Ok(()));
        assert_eq!(fw.build_id().as_deref(), Some("f300"));
    }

    #[test]
    fn the_smallest_image_is_the_layout_alone() {
        let bytes = relay_image("tiny", 0).unwrap();
        assert!(bytes.len() > APP_START && bytes.len() < APP_START + 256);
        assert_eq!(parse_firmware(&bytes).unwrap().check_file_crc(), Ok(()));
    }

    #[test]
    fn a_build_id_the_record_cannot_carry_is_refused() {
        for bad in ["", "has space", &"x".repeat(41)] {
            let err = relay_image(bad, 0).unwrap_err();
            assert!(
                err.to_string().contains("must be 1 to 40 letters"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_size_is_at_most_the_largest_flash() {
        assert_eq!(size("16777216"), Ok(16 << 20));
        for bad in ["16777217", "-1", "big"] {
            assert!(size(bad).unwrap_err().contains("(16 MiB"), "{bad}");
        }
    }
}
