//! Setting a bench up: the rates of the chip-terms figures, and the relays that measure them.

use nodemcu::profile::{Profile, known_profiles};

use super::{ChipRig, Rig};
use crate::board::{Board, BoardKind, OpenOptions, Target};
use crate::error::{Result, UsageError};
use crate::select::Selection;

/// The rates of the chip-terms figures on the virtual board when none are asked for.
pub const DEFAULT_BAUDS: [u32; 3] = [115_200, 921_600, 3_000_000];

/// The virtual board's options for the throughput figures: the relay's own throughput, not a
/// modelled line's or WiFi's.
pub const FAST: [&str; 3] = ["--no-pace", "--rtt-ms", "0"];

/// The paced boards the chip-terms figures need, checked before anything starts: each rate
/// `asked` (or [`DEFAULT_BAUDS`]) with the profile that runs `profile`'s relay at it. A NodeMCU
/// is measured at its own rate only; a relay named by hand has no chip-terms figures.
pub fn rates(
    target: &Target,
    profile: &Profile,
    asked: &[u32],
) -> Result<Vec<(u32, Profile)>, UsageError> {
    match target {
        Target::Virtual { .. } => {}
        Target::Port { .. } => {
            let own = profile.uart.baud;
            return match asked {
                [] => Ok(vec![(own, profile.clone())]),
                [rate] if *rate == own => Ok(vec![(own, profile.clone())]),
                _ => Err(UsageError::BaudOfNodemcu {
                    own,
                    profile: profile.name.clone(),
                }),
            };
        }
        Target::Endpoint { .. } if asked.is_empty() => return Ok(Vec::new()),
        Target::Endpoint { .. } => return Err(UsageError::BaudNeedsBoard),
    }
    // The profile itself first, then the shipped ones whose relay keeps the same contract (their
    // queues may be sized for their rate).
    let mut same: Vec<Profile> = vec![profile.clone()];
    same.extend(
        known_profiles()
            .iter()
            .filter_map(|n| Profile::load(n).ok())
            .filter(|p| p.relay.same_contract(&profile.relay) && p.name != profile.name),
    );
    let rates = if asked.is_empty() {
        &DEFAULT_BAUDS[..]
    } else {
        asked
    };
    let mut out: Vec<(u32, Profile)> = Vec::new();
    for &rate in rates {
        match same.iter().find(|p| p.uart.baud == rate) {
            Some(p) if !out.iter().any(|(r, _)| *r == rate) => out.push((rate, p.clone())),
            Some(_) => {}
            None => {
                let mut have: Vec<u32> = same.iter().map(|p| p.uart.baud).collect();
                have.sort_unstable();
                have.dedup();
                let have: Vec<String> = have.iter().map(u32::to_string).collect();
                return Err(UsageError::NoProfileAtRate {
                    rate,
                    profile: profile.name.clone(),
                    have: have.join(", "),
                });
            }
        }
    }
    Ok(out)
}

/// Opens the relay under test (a virtual board runs [`FAST`]), ser2net and socat beside it if
/// `with_ser2net`, and a paced virtual board for each of `rates` (a NodeMCU's own UART is the
/// wire: it measures its rate itself). `progress` hears what is being started.
pub async fn rigs(
    mut target: Target,
    open: &OpenOptions,
    rates: Vec<(u32, Profile)>,
    with_ser2net: bool,
    mut progress: impl FnMut(&str),
) -> Result<(Vec<Rig>, Vec<ChipRig>)> {
    // The paced boards run the program that runs the relay's virtual board.
    let program = match &target {
        Target::Virtual { program, args } => Some((program.clone(), args.clone())),
        _ => None,
    };
    if let Target::Virtual { args, .. } = &mut target {
        args.extend(FAST.map(String::from));
    }
    progress(&format!("opening the board ({})", open.profile.name));
    let board = Board::open(&target, open).await?;
    let setup = match board.kind {
        BoardKind::Virtual => format!(
            "virtual-board {} -p {}; the harness opens its pty",
            FAST.join(" "),
            open.profile.name
        ),
        BoardKind::Nodemcu => format!(
            "a NodeMCU on {} at {} baud, profile {}",
            board.serial.path.display(),
            open.profile.uart.baud,
            open.profile.name
        ),
        BoardKind::Endpoint => format!(
            "{} and {}, profile {}",
            board.serial.path.display(),
            board.tcp,
            open.profile.name
        ),
    };
    let real = board.kind == BoardKind::Nodemcu;
    let mut rigs = vec![Rig::board("relay".into(), setup, board, real)];
    if with_ser2net {
        progress("starting ser2net and socat");
        rigs.push(Rig::ser2net(false).await?);
        rigs.push(Rig::ser2net(true).await?);
        rigs.push(Rig::socat().await?);
    }
    let mut chip = Vec::new();
    for (baud, profile) in rates {
        let Some((program, args)) = &program else {
            chip.push(ChipRig {
                baud,
                profile: profile.name.clone(),
                rig: None,
            });
            continue;
        };
        progress(&format!("opening a paced board ({})", profile.name));
        let sel = Selection {
            profile: Some(profile.load_arg().to_string_lossy().into_owned()),
            ..Selection::default()
        };
        let mut paced = args.clone();
        paced.push("--pace".into());
        let (t, o) = sel.resolve((program.clone(), paced))?;
        let board = Board::open(&t, &o).await?;
        let setup = format!("virtual-board --pace -p {}", profile.name);
        chip.push(ChipRig {
            baud,
            profile: profile.name.clone(),
            rig: Some(Rig::board(format!("relay-{baud}"), setup, board, true)),
        });
    }
    Ok((rigs, chip))
}

#[cfg(test)]
mod tests {
    use nodemcu::profile::DEFAULT_PROFILE;

    use super::*;

    fn virtual_board() -> Target {
        Target::Virtual {
            program: "virtual-board".into(),
            args: Vec::new(),
        }
    }

    fn names(rates: &[(u32, Profile)]) -> Vec<(u32, &str)> {
        rates.iter().map(|(r, p)| (*r, p.name.as_str())).collect()
    }

    #[test]
    fn the_virtual_board_runs_each_default_rate_with_the_profile_built_for_it() {
        let profile = Profile::load(DEFAULT_PROFILE).unwrap();
        let rates = rates(&virtual_board(), &profile, &[]).unwrap();
        assert_eq!(
            names(&rates),
            [
                (115_200, "nodemcu-v2"),
                (921_600, "nodemcu-v2-921600"),
                (3_000_000, "nodemcu-v2-3000000")
            ]
        );
        let once = super::rates(&virtual_board(), &profile, &[921_600, 921_600]).unwrap();
        assert_eq!(names(&once), [(921_600, "nodemcu-v2-921600")]);
    }

    #[test]
    fn a_rate_no_profile_runs_is_refused_naming_the_rates_that_exist() {
        let profile = Profile::load(DEFAULT_PROFILE).unwrap();
        let err = rates(&virtual_board(), &profile, &[115_200, 57_600]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--baud 57600: no board profile runs nodemcu-v2's relay at 57600 baud; the rates \
             that exist: 115200, 921600, 3000000"
        );
    }

    #[test]
    fn a_nodemcu_runs_at_its_own_rate_and_a_relay_named_by_hand_at_none() {
        let profile = Profile::load(DEFAULT_PROFILE).unwrap();
        let nodemcu = Target::Port {
            path: None,
            addr: None,
        };
        assert_eq!(
            names(&rates(&nodemcu, &profile, &[]).unwrap()),
            [(115_200, "nodemcu-v2")]
        );
        assert_eq!(rates(&nodemcu, &profile, &[115_200]).unwrap().len(), 1);
        assert!(matches!(
            rates(&nodemcu, &profile, &[921_600]),
            Err(UsageError::BaudOfNodemcu { own: 115_200, .. })
        ));
        let endpoint = Target::Endpoint {
            serial: "/dev/null".into(),
            addr: "127.0.0.1:1".into(),
        };
        assert!(rates(&endpoint, &profile, &[]).unwrap().is_empty());
        assert!(matches!(
            rates(&endpoint, &profile, &[115_200]),
            Err(UsageError::BaudNeedsBoard)
        ));
    }
}
