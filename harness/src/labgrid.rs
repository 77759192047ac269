//! labgrid places: a board in a lab, acquired through `labgrid-client` and reached over the
//! place's NetworkSerialPort (RFC 2217).
//!
//! The coordinator is `labgrid-client`'s own business: `LG_COORDINATOR` (default
//! `127.0.0.1:20408`) reaches it unchanged. A place the caller has acquired already is used and
//! left acquired; one the harness acquires it releases when the [`Lease`] drops: at the end of
//! the command, on an error, and on Ctrl-C. A place with a power switch (a `*PowerPort`
//! resource, driven by labgrid's power driver) is power-cycled first: every command starts
//! from a cold boot. A place with a digital output named `reset` resets the board through it
//! instead of DTR/RTS.

use std::process::{Command, Output};

use crate::error::LabgridError;

/// The program that speaks to the coordinator, found on PATH.
pub const CLIENT: &str = "labgrid-client";

/// A place in use; releases it when dropped if the harness acquired it.
#[derive(Debug)]
pub struct Lease {
    place: String,
    acquired_here: bool,
    /// The place's serial port, as an `rfc2217://` URL.
    pub url: String,
    /// The place's resources, by class, for a report.
    pub resources: Vec<String>,
    /// Whether the place has a digital output named `reset` (a relay or GPIO on EN).
    pub reset_output: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.acquired_here {
            return;
        }
        match client(&self.place, &["release"]) {
            Ok(_) => tracing::info!(place = %self.place, "released"),
            Err(e) => eprintln!("relay-hil: warning: {e}"),
        }
    }
}

impl Lease {
    /// Whether the place has a power switch (a `*PowerPort` resource).
    pub fn has_power(&self) -> bool {
        self.resources.iter().any(|r| r.ends_with("PowerPort"))
    }

    /// The place's name.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Cuts the board's power and restores it, through the place's power driver.
    pub fn power_cycle(&self) -> Result<(), LabgridError> {
        client(&self.place, &["power", "cycle"])?;
        tracing::info!(place = %self.place, "power-cycled");
        Ok(())
    }
}

/// Sets `place`'s output `reset`: asserted holds the chip in reset, as labgrid's
/// DigitalOutputResetDriver has it (`labgrid/driver/resetdriver.py:23-26`).
pub fn set_reset(place: &str, asserted: bool) -> Result<(), LabgridError> {
    let level = if asserted { "high" } else { "low" };
    client(place, &["io", level, "reset"]).map(|_| ())
}

/// `labgrid-client -p PLACE ARGS`, its stdout on success, its error line otherwise.
fn client(place: &str, args: &[&str]) -> Result<String, LabgridError> {
    let out: Output = Command::new(CLIENT)
        .args(["-p", place])
        .args(args)
        .output()
        .map_err(|source| LabgridError::Client { source })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let message = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .trim_start_matches("labgrid-client: ")
        .to_owned();
    Err(LabgridError::Refused {
        place: place.to_owned(),
        command: args.join(" "),
        message,
    })
}

/// Uses `place`: acquires it unless the caller holds it already, and finds its serial port.
pub fn lease(place: &str) -> Result<Lease, LabgridError> {
    let shown = client(place, &["show"])?;
    let holder = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("acquired: "))
        .unwrap_or("None")
        .to_owned();
    let acquired_here = holder == "None";
    if acquired_here {
        client(place, &["acquire"])?;
        tracing::info!(place, "acquired");
    }
    // From here a failure releases what was acquired.
    let mut lease = Lease {
        place: place.to_owned(),
        acquired_here,
        url: String::new(),
        resources: Vec::new(),
        reset_output: false,
    };
    // `env` answers only its holder: a place someone else holds fails here.
    let env = client(place, &["env"]).map_err(|e| match e {
        LabgridError::Refused { .. } if !acquired_here => LabgridError::Held {
            place: place.to_owned(),
            holder: holder.clone(),
        },
        e => e,
    })?;
    let resources = parse_env(&env);
    lease.resources = resources.iter().map(|r| r.class.clone()).collect();
    lease.reset_output = resources
        .iter()
        .any(|r| r.params.iter().any(|(k, v)| k == "name" && v == "reset"));
    let port = resources
        .iter()
        .find(|r| r.class == "NetworkSerialPort")
        .ok_or_else(|| LabgridError::NoSerialPort {
            place: place.to_owned(),
            found: lease.resources.join(", "),
        })?;
    let param = |k: &str| {
        port.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(p) = param("protocol").filter(|p| *p != "rfc2217") {
        return Err(LabgridError::Protocol {
            place: place.to_owned(),
            protocol: p.to_owned(),
        });
    }
    let (Some(host), Some(port)) = (param("host"), param("port")) else {
        return Err(LabgridError::NoSerialPort {
            place: place.to_owned(),
            found: "a NetworkSerialPort without host and port".into(),
        });
    };
    lease.url = format!("{}{host}:{port}", crate::rfc2217::SCHEME);
    Ok(lease)
}

/// One resource of `labgrid-client env`: its class and its parameters.
#[derive(Debug, PartialEq, Eq)]
struct Resource {
    class: String,
    params: Vec<(String, String)>,
}

/// The resources of `labgrid-client env`'s YAML: `targets: NAME: resources:` and a list of
/// `- CLASS:` mappings with scalar parameters (nested ones are skipped).
fn parse_env(yaml: &str) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut item_indent = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if let Some(class) = text.strip_prefix("- ").and_then(|t| t.strip_suffix(':')) {
            out.push(Resource {
                class: class.to_owned(),
                params: Vec::new(),
            });
            item_indent = Some(indent);
            continue;
        }
        let (Some(at), Some(last)) = (item_indent, out.last_mut()) else {
            continue;
        };
        if indent <= at {
            item_indent = None;
            continue;
        }
        if let Some((k, v)) = text.split_once(": ") {
            last.params
                .push((k.to_owned(), v.trim_matches(['\'', '"']).to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What labgrid-client 26.0.1's `env` prints for a place with a NetworkSerialPort and a
    /// power port.
    const ENV: &str = "targets:
  nodemcu:
    resources:
    - NetworkSerialPort:
        port: 2217
        host: lab-3
        speed: 115200
    - NetworkPowerPort:
        model: simplerest
        host: 'http://pdu/{index}'
        index: '1'
    drivers: {}
";

    #[test]
    fn env_gives_each_resource_and_its_parameters() {
        let r = parse_env(ENV);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].class, "NetworkSerialPort");
        assert_eq!(
            r[0].params,
            [("port", "2217"), ("host", "lab-3"), ("speed", "115200")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(r[1].class, "NetworkPowerPort");
        assert!(
            r[1].params
                .contains(&("host".into(), "http://pdu/{index}".into()))
        );
    }
}
