//! Builds the host layer and links sketches against it: the relay firmware once for each
//! PlatformIO environment in firmware/esp8266/platformio.ini, with that environment's flags,
//! and the probe sketch the layer's own tests drive.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const LAYER: [&str; 7] = [
    "src/host.cpp",
    "src/main.cpp",
    "src/uart.cpp",
    "src/lwip.cpp",
    "src/ClientContext.cpp",
    "src/wifi.cpp",
    "src/eeprom.cpp",
];

/// The relay core's files, in the order build_id.py hashes them (firmware/core/build.rs lists
/// the same), and the translation units among them (library.json's srcFilter).
const CORE_SOURCES: [&str; 5] = [
    "relay.h",
    "relay.c",
    "provision.h",
    "provision.c",
    "relay_internal.h",
];
const CORE_UNITS: [&str; 2] = ["relay.c", "provision.c"];

/// Room in the build id record: the virtual board writes a flashed image's id (up to 40
/// characters) over the host build's own.
const BUILD_ID_MAX: usize = 40;

/// The lwIP variant PlatformIO builds by default (tools/platformio-build.py:244-250).
const LWIP_DEFINES: [(&str, &str); 3] = [
    ("TCP_MSS", "536"),
    ("LWIP_FEATURES", "1"),
    ("LWIP_IPV6", "0"),
];

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let core = dir.join("../core");
    let sketch = dir.join("../esp8266");
    let ini = sketch.join("platformio.ini");
    for f in LAYER {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=include");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=tests/probe/probe.cpp");
    for f in CORE_SOURCES {
        println!("cargo:rerun-if-changed={}", core.join(f).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        sketch.join("src/main.cpp").display()
    );
    println!("cargo:rerun-if-changed={}", ini.display());

    let layer = cxx(&dir)
        .files(LAYER.map(|f| dir.join(f)))
        .compile_intermediates();
    let text = std::fs::read_to_string(&ini).expect("platformio.ini is readable");
    let envs = environments(&text);
    assert!(!envs.is_empty(), "no [env:NAME] in {}", ini.display());

    let mut programs = String::from("pub static RELAY_FIRMWARE: &[Program] = &[\n");
    for (env, defines) in &envs {
        let id = build_id(&core, &sketch, env);
        let padded = format!("\"{id}{}\"", "\\0".repeat(BUILD_ID_MAX - id.len()));
        let mut objects = layer.clone();
        let mut c = cc_build(&dir, false);
        let mut cpp = cxx(&dir);
        for (k, v) in defines {
            c.define(k, v.as_str());
            cpp.define(k, v.as_str());
        }
        cpp.define("RELAY_BUILD_ID", padded.as_str());
        objects.extend(
            c.files(CORE_UNITS.map(|u| core.join(u)))
                .compile_intermediates(),
        );
        objects.extend(
            cpp.file(sketch.join("src/main.cpp"))
                .compile_intermediates(),
        );
        let exe = out.join(format!("relay-firmware-{env}"));
        link(&dir, &objects, &exe);
        let defs: String = defines
            .iter()
            .map(|(k, v)| format!("({k:?}, {v:?}), "))
            .collect();
        writeln!(
            programs,
            "    Program {{ name: \"relay firmware\", env: {env:?}, build_id: {id:?}, \
             defines: &[{defs}], bytes: include_bytes!({:?}) }},",
            exe.display()
        )
        .unwrap();
    }
    programs.push_str("];\n");

    let mut probe_objects = layer;
    probe_objects.extend(
        cxx(&dir)
            .file(dir.join("tests/probe/probe.cpp"))
            .compile_intermediates(),
    );
    let probe = out.join("probe");
    link(&dir, &probe_objects, &probe);
    writeln!(
        programs,
        "pub static PROBE: Program = Program {{ name: \"probe\", env: \"probe\", build_id: \"\", \
         defines: &[], bytes: include_bytes!({:?}) }};",
        probe.display()
    )
    .unwrap();
    std::fs::write(out.join("programs.rs"), programs).unwrap();
}

fn cc_build(dir: &Path, cpp: bool) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(cpp)
        .cargo_metadata(false)
        .warnings_into_errors(true)
        .flag("-Wall")
        .flag("-Wextra")
        .opt_level(2)
        .debug(true)
        .include(dir.join("include"))
        .include(dir.join("src"))
        .include(dir.join("../core"));
    for (k, v) in LWIP_DEFINES {
        b.define(k, v);
    }
    if cpp {
        b.std("gnu++17");
    } else {
        b.std("c11");
    }
    b
}

fn cxx(dir: &Path) -> cc::Build {
    cc_build(dir, true)
}

fn link(dir: &Path, objects: &[PathBuf], exe: &Path) {
    let compiler = cxx(dir).get_compiler();
    let status = Command::new(compiler.path())
        .args(objects)
        .arg("-o")
        .arg(exe)
        .status()
        .expect("the C++ compiler runs");
    assert!(status.success(), "linking {} failed", exe.display());
}

/// `[env:NAME]` sections and the -D flags of each, with `${env.build_flags}` from `[env]`
/// expanded: the subset of PlatformIO's format the firmware's file uses.
fn environments(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut section = String::new();
    let mut in_flags = false;
    for raw in text.lines() {
        let line = raw.split(';').next().unwrap_or("").trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            in_flags = false;
            if section.starts_with("env:") {
                order.push(section.clone());
            }
            continue;
        }
        let continued = raw.starts_with(' ') || raw.starts_with('\t');
        if !continued {
            in_flags = false;
            if let Some((key, value)) = line.split_once('=') {
                if key.trim() == "build_flags" {
                    in_flags = true;
                    sections
                        .entry(section.clone())
                        .or_default()
                        .extend(value.split_whitespace().map(str::to_owned));
                }
            }
        } else if in_flags {
            sections
                .entry(section.clone())
                .or_default()
                .extend(line.split_whitespace().map(str::to_owned));
        }
    }
    let common = sections.get("env").cloned().unwrap_or_default();
    order
        .iter()
        .map(|s| {
            let mut defines = Vec::new();
            for flag in sections.get(s).cloned().unwrap_or_default() {
                let flags = if flag == "${env.build_flags}" {
                    common.clone()
                } else {
                    vec![flag]
                };
                for f in flags {
                    if let Some(d) = f.strip_prefix("-D") {
                        let (k, v) = d.split_once('=').unwrap_or((d, "1"));
                        defines.push((k.to_owned(), v.to_owned()));
                    }
                }
            }
            (s.trim_start_matches("env:").to_owned(), defines)
        })
        .collect()
}

/// The id build_id.py gives this environment: FNV-1a 64 over the same files and the name.
fn build_id(core: &Path, sketch: &Path, env: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let files = CORE_SOURCES
        .map(|f| core.join(f))
        .into_iter()
        .chain([sketch.join("src/main.cpp"), sketch.join("platformio.ini")]);
    let mut data = Vec::new();
    for f in files {
        data.extend(std::fs::read(&f).expect("a firmware source is readable"));
    }
    data.retain(|&b| b != b'\r');
    data.extend(env.as_bytes());
    for b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
}
