//! Compiles the C relay core with warnings as errors and derives its source id.

use std::path::Path;

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

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    for src in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=RELAY_CORE_SANITIZE");

    let mut build = cc::Build::new();
    build
        .files(UNITS.map(|u| dir.join(u)))
        .include(dir)
        .std("c11")
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-Wpedantic")
        .flag("-Wshadow")
        .flag("-Wconversion")
        .flag("-ffreestanding");
    // `RELAY_CORE_SANITIZE=address` builds the core under ASan; the test binary must then run
    // with the ASan runtime preloaded (see ci/asan.sh).
    if let Ok(san) = std::env::var("RELAY_CORE_SANITIZE") {
        if !san.is_empty() {
            build
                .flag(format!("-fsanitize={san}"))
                .flag("-fno-omit-frame-pointer");
            println!(
                "cargo:rustc-link-lib=dylib={}",
                if san == "address" { "asan" } else { &san }
            );
        }
    }
    build.compile("relay");
    println!("cargo:include={}", dir.display());

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
