//! WiFi credentials and the UART provisioning exchange, through the C core's one implementation
//! (`provision.h`).
//!
//! A board prints a boot line naming its stored credentials by digest, then listens for a
//! `relay provision` request (for [`LISTEN_MS`] when it has credentials, until it gets some when
//! it has none). The contract is in `firmware/core/README.md`.

use std::ffi::c_char;
use std::fmt;

use crate::{c, format_text, same_layout};

pub const SSID_MAX: usize = c::SSID_MAX;
pub const PSK_MAX: usize = c::PSK_MAX;
/// How long a provisioned board listens after its boot line.
pub const LISTEN_MS: u32 = c::PROVISION_LISTEN_MS;
/// Size of the record a board keeps in flash.
pub const RECORD_SIZE: usize = c::CRED_RECORD_SIZE;
/// What a boot line starts with.
pub const BOOT_PREFIX: &str = c::BOOT_PREFIX;
/// What a reply to a request starts with.
pub const REPLY_PREFIX: &str = c::PROVISION_PREFIX;

#[repr(C)]
#[derive(Clone, Copy)]
struct RawWifi {
    ssid_len: u8,
    psk_len: u8,
    ssid: [u8; SSID_MAX + 1],
    psk: [u8; PSK_MAX + 1],
}

impl RawWifi {
    const EMPTY: RawWifi = RawWifi {
        ssid_len: 0,
        psk_len: 0,
        ssid: [0; SSID_MAX + 1],
        psk: [0; PSK_MAX + 1],
    };
}

/// `RELAY_PROVISION_LINE_MAX`.
const LINE_MAX: usize = c::PROVISION_LINE_MAX;

#[repr(C)]
struct RawProvision {
    len: u16,
    overlong: u8,
    line: [u8; LINE_MAX],
}

same_layout!(RawWifi, c::WIFI, [ssid_len, psk_len, ssid, psk]);
same_layout!(RawProvision, c::PROVISION, [len, overlong, line]);

unsafe extern "C" {
    fn relay_provision_input(p: *mut RawProvision, byte: u8, out: *mut RawWifi) -> i32;
    fn relay_provision_strerror(result: i32) -> *const c_char;
    fn relay_wifi_digest(w: *const RawWifi) -> u32;
    fn relay_wifi_encode(w: *const RawWifi, rec: *mut u8, cap: usize) -> usize;
    fn relay_wifi_decode(rec: *const u8, len: usize, out: *mut RawWifi) -> bool;
    fn relay_format_boot(
        stored: *const RawWifi,
        build_id: *const c_char,
        buf: *mut c_char,
        cap: usize,
    ) -> usize;
    fn relay_format_provision_reply(
        result: i32,
        w: *const RawWifi,
        buf: *mut c_char,
        cap: usize,
    ) -> usize;
    fn relay_format_provision_request(w: *const RawWifi, buf: *mut c_char, cap: usize) -> usize;
}

/// A network's name and password (empty for an open network).
#[derive(Clone, PartialEq, Eq)]
pub struct Wifi {
    pub ssid: Vec<u8>,
    pub psk: Vec<u8>,
}

impl fmt::Debug for Wifi {
    // The password stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wifi")
            .field("ssid", &String::from_utf8_lossy(&self.ssid))
            .field("digest", &self.digest())
            .finish()
    }
}

/// Why a board refused credentials, in the core's own words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    code: i32,
    pub reason: String,
}

const E_FORMAT: i32 = c::PROV_E_FORMAT;
const E_SSID: i32 = c::PROV_E_SSID;
const E_PSK: i32 = c::PROV_E_PSK;

impl Refused {
    fn of(code: i32) -> Refused {
        // SAFETY: the core returns a static NUL-terminated string for every value.
        let reason = unsafe { std::ffi::CStr::from_ptr(relay_provision_strerror(code)) };
        Refused {
            code,
            reason: reason.to_string_lossy().into_owned(),
        }
    }
}

impl Wifi {
    /// Checks the credentials as a board does: by putting their request through its parser.
    pub fn new(ssid: impl Into<Vec<u8>>, psk: impl Into<Vec<u8>>) -> Result<Wifi, Refused> {
        let w = Wifi {
            ssid: ssid.into(),
            psk: psk.into(),
        };
        if w.ssid.len() > SSID_MAX {
            return Err(Refused::of(E_SSID));
        }
        if w.psk.len() > PSK_MAX {
            return Err(Refused::of(E_PSK));
        }
        let mut p = Provisioner::default();
        w.request()
            .bytes()
            .find_map(|b| p.input(b))
            .unwrap_or(Err(Refused::of(E_FORMAT)))
    }

    fn raw(&self) -> RawWifi {
        let mut raw = RawWifi {
            ssid_len: self.ssid.len() as u8,
            psk_len: self.psk.len() as u8,
            ..RawWifi::EMPTY
        };
        raw.ssid[..self.ssid.len()].copy_from_slice(&self.ssid);
        raw.psk[..self.psk.len()].copy_from_slice(&self.psk);
        raw
    }

    fn from_raw(raw: &RawWifi) -> Wifi {
        Wifi {
            ssid: raw.ssid[..usize::from(raw.ssid_len)].to_vec(),
            psk: raw.psk[..usize::from(raw.psk_len)].to_vec(),
        }
    }

    /// What boot lines and replies show instead of the credentials: 8 hex digits.
    pub fn digest(&self) -> String {
        // SAFETY: raw is a valid relay_wifi_t.
        format!("{:08x}", unsafe { relay_wifi_digest(&self.raw()) })
    }

    /// The record a board keeps in flash.
    pub fn record(&self) -> [u8; RECORD_SIZE] {
        let mut rec = [0u8; RECORD_SIZE];
        // SAFETY: rec holds RECORD_SIZE bytes, as cap says.
        let n = unsafe { relay_wifi_encode(&self.raw(), rec.as_mut_ptr(), rec.len()) };
        assert_eq!(n, RECORD_SIZE, "valid credentials always encode");
        rec
    }

    /// Credentials from a flash record; `None` for erased, foreign or corrupt bytes.
    pub fn from_record(rec: &[u8]) -> Option<Wifi> {
        let mut raw = RawWifi::EMPTY;
        // SAFETY: rec is readable for rec.len() bytes; raw is a valid out-pointer.
        unsafe { relay_wifi_decode(rec.as_ptr(), rec.len(), &mut raw) }
            .then(|| Wifi::from_raw(&raw))
    }

    /// The request line a host sends, terminator included.
    pub fn request(&self) -> String {
        let raw = self.raw();
        // SAFETY: raw outlives the call; the formatter bounds its writes by cap.
        format_text(|buf, cap| unsafe { relay_format_provision_request(&raw, buf, cap) })
    }
}

/// The boot line of a board running `build_id` with `stored` credentials (or none).
pub fn boot_line(stored: Option<&Wifi>, build_id: &str) -> String {
    let raw = stored.map(Wifi::raw);
    let ptr = raw
        .as_ref()
        .map_or(std::ptr::null(), |r| r as *const RawWifi);
    let id = std::ffi::CString::new(build_id.replace('\0', "?")).expect("NULs replaced");
    // SAFETY: ptr is null or points at raw, which outlives the call, as does id.
    format_text(|buf, cap| unsafe { relay_format_boot(ptr, id.as_ptr(), buf, cap) })
}

/// A request received byte by byte, as a board receives one.
pub struct Provisioner(RawProvision);

impl Default for Provisioner {
    fn default() -> Self {
        Provisioner(RawProvision {
            len: 0,
            overlong: 0,
            line: [0; LINE_MAX],
        })
    }
}

impl Provisioner {
    /// One UART byte; at the end of a request, its outcome (other lines are ignored).
    pub fn input(&mut self, byte: u8) -> Option<Result<Wifi, Refused>> {
        let mut raw = RawWifi::EMPTY;
        // SAFETY: both pointers are valid for the call.
        match unsafe { relay_provision_input(&mut self.0, byte, &mut raw) } {
            c::PROV_NONE => None,
            c::PROV_OK => Some(Ok(Wifi::from_raw(&raw))),
            e => Some(Err(Refused::of(e))),
        }
    }
}

/// The reply a board sends to a request's outcome, terminator included.
pub fn reply_line(outcome: &Result<Wifi, Refused>) -> String {
    let (code, raw) = match outcome {
        Ok(w) => (c::PROV_OK, w.raw()),
        Err(e) => (e.code, RawWifi::EMPTY),
    };
    // SAFETY: raw outlives the call; the formatter bounds its writes by cap.
    format_text(|buf, cap| unsafe { relay_format_provision_reply(code, &raw, buf, cap) })
}
