//! Board profiles: the shipped ones built in, files read with a bound, every bad field named.

use nodemcu::profile::{Profile, Source, known_profiles};
use relay_core::{Relay, limits};
use rstest::rstest;

#[rstest]
#[case::unknown_key("name='x'\n[relay]\nmax_clientz = 3\n", "unknown field `max_clientz`")]
#[case::wrong_type("name='x'\n[relay]\nmax_line = 'long'\n", "max_line")]
#[case::bad_mode("name='x'\n[relay]\nmode = 'binary'\n", "mode")]
#[case::out_of_range(
    "name='x'\n[relay]\nmax_clients = 65\n",
    "relay.max_clients = 65 is out of range: this core accepts 1 ..= 64"
)]
#[case::zero_baud("name='x'\n[uart]\nbaud = 0\n", "uart.baud must be greater than 0")]
#[case::missing_name("[relay]\nmax_line = 8\n", "missing field `name`")]
fn malformed_profile_is_refused_naming_the_field(#[case] text: &str, #[case] needle: &str) {
    let e = Profile::parse(text, "bad.toml".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains(needle), "{e}");
}

#[rstest]
fn unknown_profile_lists_the_known_ones() {
    let e = Profile::load("no-such-board").unwrap_err().to_string();
    assert!(e.contains("unknown board profile `no-such-board`"), "{e}");
    assert!(e.contains("nodemcu-v2") && e.contains("tiny"), "{e}");
}

#[rstest]
fn shipped_profiles_are_built_in_and_named_after_their_file() {
    let names = known_profiles();
    let on_disk = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/boards"
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "toml")
    })
    .count();
    assert_eq!(names.len(), on_disk, "{names:?}");
    for name in names {
        let p = Profile::load(&name).unwrap();
        assert_eq!(
            (p.name.as_str(), &p.source),
            (name.as_str(), &Source::Shipped)
        );
        assert_eq!(p.load_arg(), std::ffi::OsString::from(&name));
        assert_eq!(Profile::load(&name).unwrap(), p);
    }
}

/// A profile from a file names its file, and another process loads it from there.
#[rstest]
fn a_profile_file_is_loaded_from_its_path() {
    let dir = std::env::temp_dir().join(format!("nodemcu-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mine.toml");
    std::fs::write(&path, "name = 'mine'\n[relay]\nmax_clients = 2\n").unwrap();
    let p = Profile::load(path.to_str().unwrap()).unwrap();
    assert_eq!(p.source, Source::File(path.clone()));
    assert_eq!(p.load_arg(), path.clone().into_os_string());
    assert_eq!(p.origin(), path.display().to_string());
    assert_eq!(p.relay.max_clients, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A profile describes its firmware's build, whose bounds are its own: limits past those of
/// the core linked here load, up to what any build takes; a relay cannot run them here.
#[rstest]
fn a_profile_may_exceed_the_linked_cores_limits_up_to_any_builds() {
    let text = "name='x'\n[relay]\ntxq_size = 4096\n";
    let p = Profile::parse(text, "big.toml".as_ref()).unwrap();
    assert_eq!(p.relay.txq_size, 4096);
    assert!(p.relay.txq_size > limits().txq_size);
    assert!(Relay::new(p.relay, 0).is_err());
    let e = Profile::parse("name='x'\n[relay]\ntxq_size = 65536\n", "big.toml".as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("relay.txq_size = 65536 is out of range"), "{e}");
}
