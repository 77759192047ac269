//! ESP8266 image parsing: what the ROM accepts, what it refuses, and the relay's build id.

use relay_core::image::{self, ImageError, build, build_id_record, parse};
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

/// The ESP8266 Arduino core's firmware.bin: its bootloader's image at 0x0, the application's
/// at 0x1000, and the relay's build id in the application.
fn arduino_layout(app_id: &str) -> Vec<u8> {
    let eboot = image::build(0x4010_f000, 4, &[(0x4010_f000, &[0x11; 900])]);
    let rodata = image::build_id_record(app_id);
    let app = image::build(
        0x4010_0004,
        4,
        &[(0x4020_1010, &[0x22; 3000]), (0x3ffe_8000, &rodata)],
    );
    let mut bin = eboot;
    bin.resize(image::APP_ALIGN, 0xff);
    bin.extend(app);
    bin
}

#[test]
fn firmware_finds_the_build_id_in_the_application_behind_the_bootloader() {
    let bin = arduino_layout("app0001");
    assert_eq!(
        image::parse(&bin).unwrap().build_id(),
        None,
        "eboot carries none"
    );
    let fw = image::parse_firmware(&bin).unwrap();
    assert_eq!(fw.images.len(), 2);
    assert_eq!(fw.len, bin.len());
    assert_eq!(fw.build_id().as_deref(), Some("app0001"));
    assert!(fw.fits(bin.len()).is_ok());
    assert!(matches!(
        fw.fits(bin.len() - 1),
        Err(image::ImageError::TooBig { .. })
    ));
}

#[test]
fn firmware_with_a_corrupt_application_is_refused() {
    let mut bin = arduino_layout("app0001");
    let last = bin.len() - 20;
    bin[last] ^= 0x40;
    assert!(matches!(
        image::parse_firmware(&bin),
        Err(image::ImageError::BadChecksum { .. })
    ));
}
