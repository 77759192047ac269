//! Compiles the C relay core with warnings as errors, derives its source id, and writes the
//! headers' constants and struct layouts, as the host C compiler sees them, for the binding.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file of the core, in the order build_id.py and firmware/arduino-host/build.rs hash them.
const SOURCES: [&str; 5] = [
    "relay.h",
    "relay.c",
    "provision.h",
    "provision.c",
    "relay_internal.h",
];
/// The translation units among them.
const UNITS: [&str; 2] = ["relay.c", "provision.c"];
/// The host program that prints the constants and layouts (src/c_consts.c).
const PROBE: &str = "src/c_consts.c";

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for src in SOURCES.into_iter().chain([PROBE]) {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=RELAY_CORE_SANITIZE");

    let mut build = strict(dir);
    build
        .files(UNITS.map(|u| dir.join(u)))
        .flag("-ffreestanding");
    // `RELAY_CORE_SANITIZE=address` builds the core under ASan, whose runtime the test binaries
    // must then preload; `=undefined` under UBSan, aborting at the first report so that a test
    // fails. ci/sanitizers.sh runs both.
    let sanitizer = std::env::var("RELAY_CORE_SANITIZE").unwrap_or_default();
    match sanitizer.as_str() {
        "" => {}
        "address" => {
            build
                .flag("-fsanitize=address")
                .flag("-fno-omit-frame-pointer");
            println!("cargo:rustc-link-lib=dylib=asan");
        }
        "undefined" => {
            build
                .flag("-fsanitize=undefined")
                .flag("-fno-sanitize-recover=all")
                .flag("-fno-omit-frame-pointer");
            println!("cargo:rustc-link-lib=dylib=ubsan");
        }
        other => panic!("RELAY_CORE_SANITIZE={other}: expected address or undefined"),
    }
    build.compile("relay");
    println!("cargo:include={}", dir.display());

    write_c_consts(dir, &out);

    // A stable FNV-1a digest of the core's sources: the build id of anything built from them.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for src in SOURCES {
        let bytes = std::fs::read(dir.join(src)).expect("core source is readable");
        for b in bytes.iter().filter(|&&b| b != b'\r') {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=RELAY_CORE_SOURCE_ID={:012x}", hash >> 16);
}

/// The core's host flags: the probe gets them too (less -ffreestanding, as it prints), so that
/// it sees the same constants and layouts as the library the binding links.
fn strict(dir: &Path) -> cc::Build {
    let mut build = cc::Build::new();
    build
        .include(dir)
        .std("c11")
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Wpedantic")
        .flag("-Wshadow")
        .flag("-Wconversion");
    build
}

/// Compiles and runs the probe; its output, Rust `pub const` items, becomes
/// `$OUT_DIR/c_consts.rs`, which src/lib.rs includes and checks its own types against.
fn write_c_consts(dir: &Path, out: &Path) {
    let exe = out.join("c_consts");
    let compiler = strict(dir).cargo_metadata(false).get_compiler();
    let status = compiler
        .to_command()
        .arg(dir.join(PROBE))
        .arg("-o")
        .arg(&exe)
        .status()
        .expect("the host C compiler runs");
    assert!(status.success(), "compiling {PROBE} failed");
    let run = Command::new(&exe).output().expect("the probe runs");
    assert!(run.status.success(), "{PROBE} failed: {run:?}");
    std::fs::write(out.join("c_consts.rs"), run.stdout).expect("OUT_DIR is writable");
}
