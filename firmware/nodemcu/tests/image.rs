//! ESP8266 image parsing: what the ROM accepts, what it refuses, and the relay's build id.

use nodemcu::image::{
    self, APP_START, AppSections, BOOT_PADDING, CRC_LEN_AT, CRC_VAL_AT, IROM_START, ImageError,
    add_crc, build, build_id_record, parse, parse_firmware,
};
use rstest::rstest;

const ENTRY: u32 = 0x4010_0004;
const FOUR_MB: u8 = 4;

fn relay_image(id: &str, code_len: usize) -> Vec<u8> {
    let code: Vec<u8> = (0..code_len).map(|i| (i * 7) as u8).collect();
    let rodata = [b"banner text\0".as_slice(), &build_id_record(id)].concat();
    build(
        ENTRY,
        FOUR_MB,
        &[(0x4010_0000, &code), (0x3ffe_8000, &rodata)],
    )
}

#[rstest]
// Segment data ending at every position within a 16-byte block exercises the padding rule.
fn a_built_image_parses_back_whatever_its_padding(
    #[values(0, 1, 7, 14, 15, 16, 17, 100)] code_len: usize,
) {
    let bytes = relay_image("abc123", code_len);
    assert_eq!(bytes.len() % 16, 0, "an image ends on a 16-byte boundary");
    let img = parse(&bytes).unwrap();
    assert_eq!(
        (img.entry, img.flash_size, img.len),
        (ENTRY, 4 << 20, bytes.len())
    );
    assert_eq!(img.segments.len(), 2);
    assert_eq!(img.segments[0].data.len(), code_len);
    assert_eq!(img.build_id().as_deref(), Some("abc123"));
}

#[rstest]
fn an_image_with_no_relay_build_id_is_still_an_image() {
    let bytes = build(ENTRY, FOUR_MB, &[(0x4010_0000, b"someone else's firmware")]);
    assert_eq!(parse(&bytes).unwrap().build_id(), None);
}

#[rstest]
fn a_flipped_data_byte_fails_the_checksum() {
    let mut bytes = relay_image("abc123", 64);
    bytes[8 + 8 + 10] ^= 0x01;
    assert!(
        matches!(parse(&bytes), Err(ImageError::BadChecksum { .. })),
        "{:?}",
        parse(&bytes)
    );
}

#[rstest]
#[case::elf(b"\x7fELF\x02\x01\x01".to_vec(), "it starts with 0x7f, not the magic 0xe9")]
#[case::zeros(vec![0; 64], "it starts with 0x00")]
#[case::no_segments(vec![0xe9, 0, 2, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xef], "no segments")]
#[case::bad_size_code(vec![0xe9, 1, 2, 0x70, 0, 0, 0, 0], "unknown flash size code 7")]
#[case::empty(
    Vec::new(),
    "truncated image: the header needs bytes 0..8, the file has 0"
)]
fn not_an_image(#[case] bytes: Vec<u8>, #[case] needle: &str) {
    let e = parse(&bytes).unwrap_err().to_string();
    assert!(e.contains(needle), "{e}");
}

#[rstest]
fn every_truncation_is_named_never_a_panic() {
    let bytes = relay_image("abc123", 40);
    for cut in 0..bytes.len() {
        let e = parse(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(e, ImageError::Truncated { .. }),
            "cut at {cut}: {e}"
        );
    }
}

#[rstest]
fn an_image_bigger_than_the_flash_is_refused() {
    let bytes = relay_image("abc123", 2000);
    let img = parse(&bytes).unwrap();
    assert!(img.fits(4 << 20).is_ok());
    let e = img.fits(1024).unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "{} bytes, bigger than the board's 1024-byte flash",
            bytes.len()
        )),
        "{e}"
    );
}

#[rstest]
#[case::plain("5e1f00aa", Some("5e1f00aa"))]
#[case::with_dots("0.1.0-abc_1", Some("0.1.0-abc_1"))]
#[case::empty("", None)]
#[case::spaces("a b", None)]
fn build_ids_are_plain_tokens(#[case] id: &str, #[case] found: Option<&str>) {
    assert_eq!(image::find_build_id(&build_id_record(id)).as_deref(), found);
}

#[rstest]
fn an_unterminated_build_id_is_not_one() {
    let mut rec = build_id_record("abc");
    rec.pop();
    assert_eq!(image::find_build_id(&rec), None);
}

/// A relay firmware in the ESP8266 Arduino core's layout, the build id in the application's
/// `.rodata`.
fn firmware(id: &str, irom_len: usize) -> Vec<u8> {
    let irom: Vec<u8> = (0..irom_len).map(|i| (i * 31 + 3) as u8).collect();
    let rodata = [b"banner text\0".as_slice(), &build_id_record(id)].concat();
    image::build_firmware(FOUR_MB, &app(&irom, &rodata))
}

/// An application with these flash code and read-only data, and fixed RAM sections.
fn app<'a>(irom0_text: &'a [u8], rodata: &'a [u8]) -> AppSections<'a> {
    AppSections {
        entry: ENTRY,
        irom0_text,
        text: &[0x11; 301],
        text1: &[0x22; 42],
        data: &[0x33; 17],
        rodata,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

#[rstest]
fn firmware_round_trips_in_the_elf2bin_layout(
    #[values(0, 1, 7, 15, 16, 3000)] irom_len: usize,
    #[values(0, 2, 4)] flash_code: u8,
) {
    let irom: Vec<u8> = (0..irom_len).map(|i| i as u8).collect();
    let rodata = build_id_record("app0001");
    let app = app(&irom, &rodata);
    let bin = image::build_firmware(flash_code, &app);
    let fw = parse_firmware(&bin).unwrap();

    assert!(fw.boot.len + 8 <= APP_START, "elf2bin leaves 8 bytes");
    assert_eq!(fw.boot.segments.len(), 2, "eboot's .text and .rodata");
    assert_eq!(fw.boot.flash_size, image::flash_size(flash_code).unwrap());
    assert!(
        bin[fw.boot.len..APP_START]
            .iter()
            .all(|&b| b == BOOT_PADDING)
    );
    assert_eq!(fw.boot.build_id(), None, "eboot carries none");

    let got = fw.app.as_ref().expect("an application at 0x1000");
    assert_eq!((got.magic, got.entry), (image::MAGIC, ENTRY));
    assert_eq!(bin[APP_START + 3], bin[3], "the same flash size and speed");
    let segments: Vec<(u32, &[u8])> = got.segments.iter().map(|s| (s.addr, s.data)).collect();
    let text1_at = (0x4010_0000u32 + 301).next_multiple_of(4);
    let rodata_at = (0x3ffe_8000u32 + 17).next_multiple_of(4);
    assert_eq!(
        segments,
        [
            (IROM_START, &bin[CRC_LEN_AT..CRC_LEN_AT + 8 + irom_len]),
            (0x4010_0000, app.text),
            (text1_at, app.text1),
            (0x3ffe_8000, app.data),
            (rodata_at, app.rodata),
        ]
    );
    assert_eq!(&segments[0].1[8..], &irom[..], "the CRC words come first");

    assert_eq!(bin.len() % 16, 0, "the checksum ends a 16-byte block");
    assert_eq!((got.end, fw.len), (bin.len(), bin.len()));
    assert_eq!(u32_at(&bin, CRC_LEN_AT) as usize, bin.len());
    let crc = fw.crc().unwrap();
    assert!(crc.matches(), "{crc:?}");
    assert_eq!(fw.check_file_crc(), Ok(()));
    assert_eq!(fw.build_id().as_deref(), Some("app0001"));
    assert!(fw.fits(bin.len()).is_ok());
    assert!(matches!(
        fw.fits(bin.len() - 1),
        Err(ImageError::TooBig { .. })
    ));
}

#[rstest]
fn crc32_is_elf2bins_crc8266() {
    // CRC-32/MPEG-2's check value: MSB first, 0x04C11DB7, init all ones, no final XOR.
    assert_eq!(image::crc32(b"123456789", image::CRC_INIT), 0x0376_e6e7);
    let (a, b) = b"123456789".split_at(4);
    assert_eq!(
        image::crc32(b, image::crc32(a, image::CRC_INIT)),
        0x0376_e6e7
    );
}

#[rstest]
fn the_crc_is_computed_with_its_own_words_zero() {
    let bin = firmware("app0001", 100);
    let mut zeroed = bin.clone();
    zeroed[CRC_LEN_AT..CRC_VAL_AT + 4].fill(0);
    assert_eq!(
        u32_at(&bin, CRC_VAL_AT),
        image::crc32(&zeroed, image::CRC_INIT)
    );
    let mut again = bin.clone();
    add_crc(&mut again);
    assert_eq!(again, bin, "add_crc is idempotent");
}

/// elf2bin computes the application's checksum before add_crc writes the words into its first
/// segment, so a real firmware.bin's never matches; eboot never checks it, nor the magic.
#[rstest]
#[case::as_built(None)]
#[case::checksum_byte(Some(usize::MAX))]
#[case::magic(Some(APP_START))]
fn the_application_checksum_and_magic_are_not_checked(#[case] flip: Option<usize>) {
    let mut bin = firmware("app0001", 100);
    let fw = parse_firmware(&bin).unwrap();
    let sum = fw.app.unwrap().checksum.unwrap();
    assert_ne!(sum.stored, sum.computed, "as in a real firmware.bin");
    match flip {
        None => {}
        Some(usize::MAX) => *bin.last_mut().unwrap() ^= 0x5a,
        Some(at) => bin[at] = 0x00,
    }
    add_crc(&mut bin);
    let fw = parse_firmware(&bin).unwrap();
    assert_eq!(fw.check_file_crc(), Ok(()));
    assert_eq!(fw.build_id().as_deref(), Some("app0001"));
}

/// Neither the ROM nor eboot reads what lies between the two images; elf2bin writes 0xAA.
#[rstest]
fn any_padding_before_the_application_is_accepted(#[values(0xaa, 0x00, 0xff, 0x5c)] pad: u8) {
    let mut bin = firmware("app0001", 100);
    let end = parse(&bin).unwrap().len;
    assert!(bin[end..APP_START].iter().all(|&b| b == BOOT_PADDING));
    bin[end..APP_START].fill(pad);
    add_crc(&mut bin);
    let fw = parse_firmware(&bin).unwrap();
    assert_eq!(fw.build_id().as_deref(), Some("app0001"));
    assert_eq!(fw.check_file_crc(), Ok(()));
}

/// The ROM checks the image at 0x0 whatever follows it: a bad one boots nothing.
#[rstest]
#[case::magic(0, 0x96, "it starts with 0x7f, not the magic 0xe9")]
#[case::eboot_text(8 + 8 + 100, 0x01, "bad checksum: the image stores")]
#[case::eboot_checksum(usize::MAX, 0x01, "bad checksum")]
#[case::segment_count(1, 0x01, "truncated image: segment 2 (")]
#[case::size_code(3, 0x30, "unknown flash size code 7")]
fn a_broken_boot_image_is_refused_as_the_rom_refuses_it(
    #[case] at: usize,
    #[case] xor: u8,
    #[case] needle: &str,
) {
    let mut bin = firmware("app0001", 100);
    let at = if at == usize::MAX {
        parse(&bin).unwrap().len - 1
    } else {
        at
    };
    bin[at] ^= xor;
    add_crc(&mut bin);
    let Err(e) = parse_firmware(&bin) else {
        panic!("accepted")
    };
    assert!(e.to_string().contains(needle), "{e}");
}

/// eboot walks the application's segments from its header and fails when a read does: every
/// byte it reads must be in the file.
#[rstest]
#[case::header_cut(
    Edit::Cut(APP_START + 4),
    "truncated image: the application's header needs bytes 4096..4104, the file has 4100"
)]
#[case::segment_header_cut(
    Edit::Cut(APP_START + 12),
    "the application's segment 0 header needs bytes 4104..4112"
)]
#[case::first_segment_too_long(
    Edit::Word(APP_START + 12, 1 << 20),
    "the application's segment 0 (1048576 bytes at 0x40201010) needs bytes 4112..1052688"
)]
#[case::more_segments(Edit::Byte(APP_START + 1, 200), "the application's segment")]
#[case::cut_in_the_last_segment(Edit::Cut(usize::MAX), "the application's segment 4 (")]
fn an_application_reaching_past_the_end_is_refused(#[case] edit: Edit, #[case] needle: &str) {
    let mut bin = firmware("app0001", 100);
    match edit {
        Edit::Cut(usize::MAX) => bin.truncate(bin.len() - 20),
        Edit::Cut(at) => bin.truncate(at),
        Edit::Word(at, v) => bin[at..at + 4].copy_from_slice(&v.to_le_bytes()),
        Edit::Byte(at, v) => bin[at] = v,
    }
    let Err(e) = parse_firmware(&bin) else {
        panic!("accepted")
    };
    assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains(needle), "{e}");
}

#[derive(Debug)]
enum Edit {
    Cut(usize),
    Word(usize, u32),
    Byte(usize, u8),
}

/// Whatever byte changes, the firmware is refused: by the ROM's checks, eboot's reads, or the
/// CRC that `ESP.checkFlashCRC()` checks, which alone catches every one.
#[rstest]
fn every_flipped_byte_is_refused() {
    let bin = firmware("app0001", 64);
    for at in 0..bin.len() {
        let mut bad = bin.clone();
        bad[at] ^= 0x01;
        let checked = parse_firmware(&bad).and_then(|fw| fw.check_file_crc());
        assert!(checked.is_err(), "byte {at:#x} flipped, yet accepted");
        let crc = image::flash_crc(&bad).unwrap();
        assert!(
            crc.check_file(bad.len()).is_err(),
            "byte {at:#x} flipped, yet the CRC matches"
        );
    }
}

#[rstest]
#[case::no_crc(
    Edit::Word(CRC_LEN_AT, 0),
    "no CRC: the length and CRC words at 0x1010 are zero"
)]
// Past the words and short of the file's end: a CRC over fewer bytes than the file.
#[case::length(
    Edit::Word(CRC_LEN_AT, 4200),
    "the CRC's length word at 0x1010 says 4200 bytes, the file has "
)]
#[case::value(
    Edit::Byte(CRC_VAL_AT, 0),
    "bad CRC (the one ESP.checkFlashCRC() checks): the word at 0x1014 is 0x"
)]
#[case::data(Edit::Byte(APP_START + 100, 0), "bad CRC (the one ESP.checkFlashCRC() checks): the word at 0x1014 is 0x")]
fn crc_failures_are_named(#[case] edit: Edit, #[case] needle: &str) {
    let mut bin = firmware("app0001", 100);
    match edit {
        Edit::Word(at, 0) => bin[at..at + 8].fill(0),
        Edit::Word(at, v) => bin[at..at + 4].copy_from_slice(&v.to_le_bytes()),
        Edit::Byte(at, v) => bin[at] ^= v ^ 0x80,
        Edit::Cut(_) => unreachable!(),
    }
    let fw = parse_firmware(&bin).unwrap();
    assert!(!fw.crc().unwrap().matches());
    let e = fw.check_file_crc().unwrap_err().to_string();
    assert!(e.contains(needle), "{e}");
}

/// A flash holds the firmware and, past `__crc_len`, whatever was there: the CRC covers the
/// first `__crc_len` bytes, and a dump is not the file elf2bin wrote.
#[rstest]
fn in_a_flash_dump_the_crc_covers_crc_len_bytes() {
    let bin = firmware("app0001", 100);
    let mut flash = vec![0xff; 4 << 20];
    flash[..bin.len()].copy_from_slice(&bin);
    flash[bin.len() + 5] = 0x42;
    let fw = parse_firmware(&flash).unwrap();
    assert_eq!(
        (fw.len, fw.build_id().as_deref()),
        (bin.len(), Some("app0001"))
    );
    let crc = fw.crc().unwrap();
    assert_eq!(crc.len as usize, bin.len());
    assert!(crc.matches(), "stale bytes past __crc_len do not count");
    assert!(matches!(
        fw.check_file_crc(),
        Err(ImageError::CrcLength { .. })
    ));
    flash[bin.len() - 1] ^= 0x01;
    assert!(!parse_firmware(&flash).unwrap().crc().unwrap().matches());
    let short = &flash[..bin.len() - 1];
    let crc = parse_firmware(short).unwrap().crc().unwrap();
    assert_eq!(crc.computed, None, "__crc_len reaches past the bytes");
}

/// A lone image flashed at 0x0 leaves erased flash at 0x1000: no application is read there,
/// and the image carries no CRC words.
#[rstest]
fn a_lone_image_in_erased_flash_stands_alone() {
    let img = relay_image("lone001", 100);
    let mut flash = vec![0xff; 4 << 20];
    flash[..img.len()].copy_from_slice(&img);
    for bytes in [&img[..], &flash[..]] {
        let fw = parse_firmware(bytes).unwrap();
        assert_eq!(fw.app, None);
        assert_eq!(fw.len, img.len());
        assert_eq!(fw.build_id().as_deref(), Some("lone001"));
        assert_eq!(fw.crc(), None);
        assert_eq!(fw.check_file_crc(), Ok(()));
    }
}

/// A lone image longer than 4 KiB is not followed by an application, whatever its bytes.
#[rstest]
fn a_lone_image_past_0x1000_stands_alone() {
    let img = relay_image("big0001", 20_000);
    let fw = parse_firmware(&img).unwrap();
    assert_eq!((&fw.app, fw.len), (&None, img.len()));
    assert_eq!(fw.build_id().as_deref(), Some("big0001"));
}
