//! Flashing through espflash and the ROM loader, end to end on the virtual board: the CLI's
//! flash, skip, force and refusals, `run --firmware`, and a board cut off mid-flash.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{printed, relay_hil, temp_dir};
use nodemcu::image;
use relay_hil::board::Board;
use relay_hil::error::{FlashError, HilError};
use relay_hil::flash::{self, Flashed, Image, Progress};
use relay_hil::select::Selection;
use relay_hil::serial::VirtualPort;
use rstest::rstest;

fn make_image(dir: &Path, id: &str, size: usize) -> PathBuf {
    let path = common::relay_image(dir, id, size);
    // A firmware.bin as elf2bin writes it, about `size` bytes.
    let bytes = std::fs::read(&path).unwrap();
    let fw = image::parse_firmware(&bytes).unwrap();
    assert!(fw.app.is_some(), "an application at 0x1000");
    assert_eq!(fw.check_file_crc(), Ok(()));
    assert_eq!(fw.build_id().as_deref(), Some(id));
    assert!(bytes.len().abs_diff(size) <= 16, "{} bytes", bytes.len());
    path
}

fn flash_cli(image: &Path, flash_file: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec![
        "flash",
        "--board",
        "virtual",
        "--firmware",
        image.to_str().unwrap(),
        "--flash-file",
        flash_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = relay_hil(&args);
    (out.status.code().unwrap_or(-1), printed(&out))
}

#[test]
fn flash_writes_the_image_boots_it_then_skips_the_same_build_until_forced() {
    let dir = temp_dir("flash-cycle");
    let flash_file = dir.join("board.flash");
    let first = make_image(&dir, "cycle001", 20_000);
    let len = std::fs::metadata(&first).unwrap().len();
    let (code, text) = flash_cli(&first, &flash_file, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("wrote {len} bytes in ")), "{text}");
    // The ROM autobauded to the default rate; its divider tells espflash the crystal.
    assert!(
        text.contains("at 921600 baud to esp8266 (26 MHz crystal"),
        "{text}"
    );
    assert!(text.contains("runs build cycle001"), "{text}");
    let image = std::fs::read(&first).unwrap();
    assert_eq!(
        &std::fs::read(&flash_file).unwrap()[..image.len()],
        &image[..]
    );

    let (code, text) = flash_cli(&first, &flash_file, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("skipped: the board already runs build cycle001"),
        "{text}"
    );
    assert!(!text.contains("wrote"), "{text}");

    let (code, text) = flash_cli(&first, &flash_file, &["--force"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("wrote {len} bytes")), "{text}");

    let second = make_image(&dir, "cycle002", 5_000);
    let (code, text) = flash_cli(&second, &flash_file, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("runs build cycle002"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_images_are_refused_before_the_board_is_touched() {
    let dir = temp_dir("flash-refuse");
    let flash_file = dir.join("board.flash");
    let good = make_image(&dir, "keep001", 5_000);
    assert_eq!(flash_cli(&good, &flash_file, &[]).0, 0);
    let before = std::fs::read(&flash_file).unwrap();

    let bytes = std::fs::read(&good).unwrap();
    let mut bad_magic = bytes.clone();
    bad_magic[0] = 0x7f;
    let mut bad_crc = bytes.clone();
    let inside = bad_crc.len() - 20;
    bad_crc[inside] ^= 0x01;
    let record = image::build_id_record("big0001");
    let filler = vec![0x5a; 600 << 10];
    // Declares a 512 KiB flash and is bigger than that.
    let too_big = image::build_firmware(
        0,
        &image::AppSections {
            irom0_text: &filler,
            rodata: &record,
            ..Default::default()
        },
    );
    let no_id = image::build_firmware(
        4,
        &image::AppSections {
            rodata: b"someone else's",
            ..Default::default()
        },
    );
    // The bootloader's image says its segment is longer than the file.
    let mut bad_boot = bytes.clone();
    bad_boot[12..16].copy_from_slice(&0x10_0000u32.to_le_bytes());
    // The application's last segment reaches past the end of the file.
    let mut short_app = bytes.clone();
    short_app.truncate(short_app.len() - 24);
    for (name, data, needle) in [
        ("magic", bad_magic, "not the magic 0xe9"),
        (
            "crc",
            bad_crc,
            "bad CRC (the one ESP.checkFlashCRC() checks)",
        ),
        (
            "big",
            too_big,
            "bigger than the board's 524288-byte flash it declares",
        ),
        ("foreign", no_id, "carries no relay build id"),
        (
            "boot",
            bad_boot,
            "truncated image: segment 0 (1048576 bytes) needs bytes 16..1048592",
        ),
        (
            "short",
            short_app,
            "truncated image: the application's segment 4 (",
        ),
    ] {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, data).unwrap();
        let (code, text) = flash_cli(&path, &flash_file, &["--force"]);
        assert_eq!(code, 2, "{name}: {text}");
        assert!(
            text.contains("not a flashable relay image") && text.contains(needle),
            "{name}: {text}"
        );
        assert!(
            !text.contains("flashing "),
            "{name}: nothing was started: {text}"
        );
        assert_eq!(
            std::fs::read(&flash_file).unwrap(),
            before,
            "{name}: the flash is untouched"
        );
    }
    let (code, text) = flash_cli(&dir.join("missing.bin"), &flash_file, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("missing.bin: not a flashable relay image"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A relay firmware.bin exactly as the ESP8266 Arduino core's elf2bin writes one.
fn firmware_file(id: &str) -> Vec<u8> {
    let code: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 1) as u8).collect();
    let rodata = [b"relay ready \0".as_slice(), &image::build_id_record(id)].concat();
    image::build_firmware(
        4,
        &image::AppSections {
            entry: 0x4010_0004,
            irom0_text: &code,
            text: &[0x11; 200],
            text1: &[0x22; 40],
            data: &[0x33; 24],
            rodata: &rodata,
        },
    )
}

/// `ESP.checkFlashCRC()`'s CRC covers the whole file: a byte flipped anywhere is refused before
/// the board is touched, by the ROM's checks where they see it (the bootloader's image), else
/// by the CRC.
#[rstest]
fn a_flipped_byte_anywhere_is_refused_before_the_board_is_touched() {
    let dir = temp_dir("flash-crc");
    let flash_file = dir.join("board.flash");
    let good = firmware_file("crc0001");
    let path = dir.join("firmware.bin");
    std::fs::write(&path, &good).unwrap();
    let (code, text) = flash_cli(&path, &flash_file, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("runs build crc0001"), "{text}");
    let before = std::fs::read(&flash_file).unwrap();

    let fw = image::parse_firmware(&good).unwrap();
    let boot_end = fw.boot.len;
    let app = fw.app.as_ref().unwrap();
    let record = good
        .windows(15)
        .rposition(|w| w == b"relay-build-id:")
        .unwrap();
    let rom = "bad checksum: the image stores";
    let crc = "bad CRC (the one ESP.checkFlashCRC() checks)";
    for (at, needle) in [
        (0x10, rom),                 // eboot's .text
        (boot_end - 1, rom),         // eboot's checksum
        (boot_end, crc),             // elf2bin's 0xAA padding
        (image::APP_START - 1, crc), // the same, last byte
        (image::APP_START, crc),     // the application's magic, which eboot never reads
        (image::APP_START + 3, crc), // its flash size and speed
        (image::APP_START + 4, crc), // its entry
        (image::CRC_LEN_AT, "the CRC's length word at 0x1010 says"),
        (image::CRC_VAL_AT + 3, crc), // the CRC itself
        (image::CRC_VAL_AT + 4, crc), // the first byte of code
        (0x1800, crc),                // code, in the middle
        (record + 16, crc),           // the build id
        (app.end - 1, crc),           // the application's checksum, which eboot never reads
    ] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        std::fs::write(&path, &bad).unwrap();
        let (code, text) = flash_cli(&path, &flash_file, &["--force"]);
        assert_eq!(code, 2, "byte {at:#x}: {text}");
        assert!(
            text.contains("firmware.bin: not a flashable relay image: ") && text.contains(needle),
            "byte {at:#x}: {text}"
        );
        assert_eq!(text.lines().count(), 2, "one line and a hint: {text}");
        assert!(!text.contains("flashing "), "byte {at:#x}: {text}");
        assert_eq!(
            std::fs::read(&flash_file).unwrap(),
            before,
            "byte {at:#x}: the flash is untouched"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_with_firmware_flashes_then_passes_every_scenario() {
    let dir = temp_dir("flash-run");
    let image = make_image(&dir, "run0001", 10_000);
    let out = relay_hil(&[
        "run",
        "--board",
        "virtual",
        "--firmware",
        image.to_str().unwrap(),
        "--flash-file",
        dir.join("board.flash").to_str().unwrap(),
        "--artifacts-dir",
        dir.join("artifacts").to_str().unwrap(),
    ]);
    let text = printed(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("wrote ") && text.contains("build run0001"),
        "{text}"
    );
    // Every scenario but echo_raw, which needs a raw-mode profile.
    let passed = relay_hil::scenario::ALL.len() - 1;
    assert!(
        text.contains(&format!("{passed} passed, 0 failed, 1 skipped")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The CLI's flash as the library does it: the job starts the virtual board on its flash file
/// (making its folder), writes, then skips the same build, and leaves the board ready either
/// way; its retry command names that same board.
#[tokio::test]
async fn a_flash_job_writes_then_skips_and_leaves_the_board_ready() {
    let dir = temp_dir("flash-job");
    let flash_file = dir.join("kept/board.flash");
    let image = make_image(&dir, "job0001", 5_000);
    let (target, opts) = Selection::default()
        .resolve((PathBuf::from(common::BIN), vec!["virtual-board".into()]))
        .unwrap();
    let job = flash::Job {
        image: Image::load(&image).unwrap(),
        force: false,
        baud: flash::DEFAULT_BAUD,
        flash_file: flash_file.clone(),
    };
    for expected in ["written", "skipped"] {
        let mut board = job.attach(&target, &opts).await.unwrap();
        assert_eq!(
            job.retry_command(&board),
            format!(
                "relay-hil flash --force --flash-baud 115200 --firmware {} --board virtual --flash-file {}",
                image.display(),
                flash_file.display()
            )
        );
        let done = job.run(&mut board, opts.banner_timeout, ()).await.unwrap();
        let what = match done {
            Flashed::Written { .. } => "written",
            Flashed::Skipped { .. } => "skipped",
        };
        assert_eq!(what, expected, "{done:?}");
        assert_eq!(board.banner.as_ref().unwrap().build, "job0001");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Cuts the board's power once `after` blocks are written, as a yanked cable would.
struct CutPower {
    control: std::net::SocketAddr,
    after: usize,
}

impl Progress for CutPower {
    fn start(&mut self, _: usize) {}
    fn block(&mut self, done: usize) {
        if done == self.after {
            VirtualPort::command(self.control, "power 0").expect("the power goes");
        }
    }
    fn done(&mut self) {}
}

/// The virtual board as `relay-hil` attaches it, with `flash_file` as its flash if given.
async fn virtual_board(flash_file: Option<&Path>) -> (Board, Duration) {
    let (target, mut opts) = Selection::default()
        .resolve(common::virtual_board())
        .unwrap();
    assert!(opts.virtual_args.is_empty(), "no --flash-file unless given");
    if let Some(f) = flash_file {
        opts.virtual_args = vec!["--flash-file".into(), f.display().to_string()];
    }
    let board = Board::attach(&target, &opts).await.unwrap();
    (board, opts.banner_timeout)
}

/// Flashes at the default rate with no progress shown and no retry hint.
async fn flash_plain(
    board: &mut Board,
    image: &Image,
    force: bool,
    banner_timeout: Duration,
) -> relay_hil::error::Result<Flashed> {
    flash::flash(
        board,
        image,
        force,
        flash::DEFAULT_BAUD,
        banner_timeout,
        (),
        "",
    )
    .await
}

#[tokio::test]
async fn a_board_cut_off_mid_flash_is_reported_half_flashed_and_the_next_flash_works() {
    let dir = temp_dir("flash-cut");
    let image = Image::load(&make_image(&dir, "cut0001", 40_000)).unwrap();
    let len = image.bytes.len();
    let (mut board, banner_timeout) = virtual_board(Some(&dir.join("board.flash"))).await;
    let control = board.control.expect("a virtual board");
    let err = flash::flash(
        &mut board,
        &image,
        true,
        flash::DEFAULT_BAUD,
        banner_timeout,
        CutPower { control, after: 5 },
        "relay-hil flash --force …",
    )
    .await
    .unwrap_err();
    match &err {
        HilError::Flash(FlashError::HalfFlashed { blocks, total, .. }) => {
            assert_eq!((*blocks, *total), (5, len.div_ceil(0x400)));
        }
        other => panic!("not reported half-flashed: {other}"),
    }
    assert!(err.to_string().contains("HALF-FLASHED"), "{err}");
    assert!(
        err.hint().contains("relay-hil flash --force …"),
        "{}",
        err.hint()
    );

    // Power back: the half-written image does not boot; the next flash puts it right.
    assert_eq!(
        VirtualPort::command(control, "power 1").unwrap(),
        "ok halted\n"
    );
    let done = flash_plain(&mut board, &image, false, banner_timeout)
        .await
        .unwrap();
    assert!(
        matches!(done, Flashed::Written { bytes, .. } if bytes == len),
        "{done:?}"
    );
    assert_eq!(board.banner.as_ref().unwrap().build, "cut0001");
    drop(board);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A loader that cannot lock onto the fast rate does not answer there: the flash tries again
/// at 115200 and says so in its result.
#[tokio::test]
async fn a_loader_deaf_at_the_fast_rate_is_flashed_at_115200() {
    let dir = temp_dir("flash-slow");
    let image = Image::load(&make_image(&dir, "slow0001", 5_000)).unwrap();
    let (mut board, banner_timeout) = virtual_board(Some(&dir.join("board.flash"))).await;
    let control = board.control.expect("a virtual board");
    assert_eq!(
        VirtualPort::command(control, "autobaud 115200").unwrap(),
        "ok\n"
    );
    let done = flash_plain(&mut board, &image, true, banner_timeout)
        .await
        .unwrap();
    assert!(
        matches!(
            done,
            Flashed::Written {
                baud: flash::FALLBACK_BAUD,
                ..
            }
        ),
        "{done:?}"
    );
    assert!(
        done.summary().contains("at 115200 baud"),
        "{}",
        done.summary()
    );
    assert_eq!(board.banner.as_ref().unwrap().build, "slow0001");
    drop(board);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A virtual board started without a flash file refuses the write before erasing anything;
/// the error's hint names the option that gives it one.
#[tokio::test]
async fn a_virtual_board_without_a_flash_file_refuses_and_the_hint_names_flash_file() {
    let dir = temp_dir("flash-none");
    let image = Image::load(&make_image(&dir, "none0001", 5_000)).unwrap();
    let (mut board, banner_timeout) = virtual_board(None).await;
    let err = flash_plain(&mut board, &image, true, banner_timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(err, HilError::Flash(FlashError::Refused { .. })),
        "not reported as refused: {err}"
    );
    assert!(err.to_string().contains("FlashBegin"), "{err}");
    assert!(err.hint().contains("--flash-file PATH"), "{}", err.hint());
    drop(board);
    std::fs::remove_dir_all(&dir).unwrap();
}
