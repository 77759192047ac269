//! Safe Rust binding to the portable C relay core (`relay.h`), its provisioning and its text.
//!
//! The core is sans-IO: feed it events ([`Relay::accept`], [`Relay::client_input`],
//! [`Relay::client_closed`], [`Relay::uart_input`], [`Relay::tick`]) and drain its work
//! ([`Relay::uart_pending`], [`Relay::client_pending`], [`Relay::next_close`]). The behaviour
//! contract is `firmware/core/README.md`.

pub mod provision;
pub mod text;

use std::alloc::{Layout, alloc_zeroed, dealloc, handle_alloc_error};
use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::ptr::NonNull;

/// What the host C compiler makes of `relay.h` and `provision.h`: their constants, and the
/// size, alignment and field offsets of each struct Rust shares with C. build.rs compiles and
/// runs `src/c_consts.c` to write it, so no number here is written twice.
pub(crate) mod c {
    /// A C struct's layout; `offsets` lists its fields in declaration order.
    pub struct Layout {
        pub size: usize,
        pub align: usize,
        pub offsets: &'static [usize],
    }

    impl Layout {
        /// Whether a Rust type with this size, alignment and field offsets is its twin.
        pub const fn is(&self, size: usize, align: usize, offsets: &[usize]) -> bool {
            if self.size != size || self.align != align || self.offsets.len() != offsets.len() {
                return false;
            }
            let mut i = 0;
            while i < offsets.len() {
                if self.offsets[i] != offsets[i] {
                    return false;
                }
                i += 1;
            }
            true
        }
    }

    include!(concat!(env!("OUT_DIR"), "/c_consts.rs"));
}

/// Fails the build unless the Rust struct is laid out as its C twin: same size, alignment and
/// field offsets, the fields listed in C's order.
macro_rules! same_layout {
    ($t:ty, $c:expr, [$($field:ident),+ $(,)?]) => {
        const _: () = assert!(
            $c.is(size_of::<$t>(), align_of::<$t>(), &[$(::std::mem::offset_of!($t, $field)),+]),
            concat!(stringify!($t), " is not laid out as its C struct")
        );
    };
}
pub(crate) use same_layout;

/// Version of the C core this crate was built from.
pub const VERSION: &str = c::VERSION;

/// Digest of the core's C sources, used as the build id of hosts that embed it.
pub const SOURCE_ID: &str = env!("RELAY_CORE_SOURCE_ID");

/// Longest notice line (overflow, rejection) the core queues to a client.
pub const NOTICE_MAX: usize = c::NOTICE_MAX;

/// Longest end-of-line sequence the core appends to a forwarded line.
pub const EOL_MAX: usize = c::EOL_MAX;

/// Longest status text (`RELAY_STATUS_MAX`) of the core linked here, NUL included.
pub const STATUS_MAX: usize = c::STATUS_MAX;

/// The bounds any build of the core takes (the `RELAY_*_LIMIT`s of `relay.h`): a firmware
/// build's `-D` flags, and so a board profile, may set its limits anywhere up to these.
pub const BUILD_MAX: Limits = Limits {
    max_clients: c::MAX_CLIENTS_LIMIT,
    max_line: c::MAX_LINE_LIMIT,
    txq_size: c::QUEUE_SIZE_LIMIT,
    uartq_size: c::QUEUE_SIZE_LIMIT,
    state_bytes: 0,
};

mod ffi {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Config {
        pub max_clients: u16,
        pub max_line: u16,
        pub txq_size: u16,
        pub uartq_size: u16,
        pub stall_timeout_ms: u32,
        pub mode: u8,
        pub eol: u8,
        pub reserved: u16,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ClientStats {
        pub id: u32,
        pub lines: u32,
        pub overflows: u32,
        pub txq_high: u32,
        pub bytes_in: u64,
        pub bytes_out: u64,
        pub drops: u64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Stats {
        pub accepted: u32,
        pub rejected: u32,
        pub disconnects: u32,
        pub stalls: u32,
        pub overflows: u32,
        pub partial_discards: u32,
        pub uart_overruns: u32,
        pub uart_rx: u64,
        pub uart_tx: u64,
        pub drops: u64,
        pub uptime_ms: u64,
    }

    #[repr(C)]
    pub struct BannerInfo {
        pub ip: *const c_char,
        pub build_id: *const c_char,
        pub port: u16,
        pub status_port: u16,
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Limits {
        pub max_clients: u32,
        pub max_line: u32,
        pub txq_size: u32,
        pub uartq_size: u32,
        pub sizeof_relay: u32,
        pub sizeof_config: u32,
    }

    unsafe extern "C" {
        pub fn relay_config_default(cfg: *mut Config);
        pub fn relay_init(r: *mut c_void, cfg: *const Config, now_ms: u32) -> c_int;
        pub fn relay_accept(r: *mut c_void) -> c_int;
        pub fn relay_client_input(
            r: *mut c_void,
            slot: c_int,
            data: *const u8,
            len: usize,
        ) -> usize;
        pub fn relay_client_closed(r: *mut c_void, slot: c_int);
        pub fn relay_uart_input(r: *mut c_void, data: *const u8, len: usize);
        pub fn relay_uart_overrun(r: *mut c_void);
        pub fn relay_tick(r: *mut c_void, now_ms: u32);
        pub fn relay_uart_pending(r: *const c_void, data: *mut *const u8) -> usize;
        pub fn relay_uart_consume(r: *mut c_void, n: usize);
        pub fn relay_client_pending(r: *const c_void, slot: c_int, data: *mut *const u8) -> usize;
        pub fn relay_client_copy(r: *const c_void, slot: c_int, out: *mut u8, max: usize) -> usize;
        pub fn relay_client_consume(r: *mut c_void, slot: c_int, n: usize);
        pub fn relay_next_close(r: *mut c_void) -> c_int;
        pub fn relay_client_open(r: *const c_void, slot: c_int) -> bool;
        pub fn relay_client_stats(r: *const c_void, slot: c_int, out: *mut ClientStats) -> bool;
        pub fn relay_stats(r: *const c_void, out: *mut Stats);
        pub fn relay_format_reject(r: *const c_void, buf: *mut c_char, cap: usize) -> usize;
        pub fn relay_format_banner(
            r: *const c_void,
            info: *const BannerInfo,
            buf: *mut c_char,
            cap: usize,
        ) -> usize;
        pub fn relay_format_status(r: *const c_void, buf: *mut c_char, cap: usize) -> usize;
        pub fn relay_limits(out: *mut Limits);
    }

    // One line per C struct, its fields in C's order.
    #[rustfmt::skip]
    mod layouts {
        use super::*;
        same_layout!(Config, c::CONFIG, [max_clients, max_line, txq_size, uartq_size,
            stall_timeout_ms, mode, eol, reserved]);
        same_layout!(ClientStats, c::CLIENT_STATS, [id, lines, overflows, txq_high, bytes_in,
            bytes_out, drops]);
        same_layout!(Stats, c::STATS, [accepted, rejected, disconnects, stalls, overflows,
            partial_discards, uart_overruns, uart_rx, uart_tx, drops, uptime_ms]);
        same_layout!(BannerInfo, c::BANNER_INFO, [ip, build_id, port, status_port]);
        same_layout!(Limits, c::LIMITS, [max_clients, max_line, txq_size, uartq_size,
            sizeof_relay, sizeof_config]);
    }
}

pub use ffi::{ClientStats, Stats};

/// How client bytes are framed on their way to the UART.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Mode {
    /// Whole lines, never interleaved across clients, with the overflow guard.
    #[default]
    Line = c::MODE_LINE,
    /// Bytes pass through unframed, in chunks of at most `max_line` bytes.
    Raw = c::MODE_RAW,
}

/// The end-of-line sequence the core writes after every forwarded line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Eol {
    #[default]
    Lf = c::EOL_LF,
    Cr = c::EOL_CR,
    Crlf = c::EOL_CRLF,
}

impl Eol {
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Lf => b"\n",
            Eol::Cr => b"\r",
            Eol::Crlf => b"\r\n",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Line => "line",
            Mode::Raw => "raw",
        })
    }
}

impl fmt::Display for Eol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Eol::Lf => "lf",
            Eol::Cr => "cr",
            Eol::Crlf => "crlf",
        })
    }
}

/// The compile-time bounds the C core was built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_clients: usize,
    pub max_line: usize,
    pub txq_size: usize,
    pub uartq_size: usize,
    /// `sizeof(relay_t)`: the RAM one relay instance takes.
    pub state_bytes: usize,
}

pub fn limits() -> Limits {
    let mut l = ffi::Limits::default();
    // SAFETY: relay_limits only writes the struct it is given.
    unsafe { ffi::relay_limits(&mut l) };
    // The library linked here and the probe that sized Rust's types saw the same headers.
    assert_eq!(
        (l.sizeof_relay as usize, l.sizeof_config as usize),
        (c::RELAY.size, c::CONFIG.size),
        "the linked core was built with other bounds than its binding"
    );
    Limits {
        max_clients: l.max_clients as usize,
        max_line: l.max_line as usize,
        txq_size: l.txq_size as usize,
        uartq_size: l.uartq_size as usize,
        state_bytes: l.sizeof_relay as usize,
    }
}

/// Runtime configuration; every limit must lie within [`limits()`]. It is also a board
/// profile's `[relay]` section, where a missing key takes its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub max_clients: usize,
    pub max_line: usize,
    pub txq_size: usize,
    pub uartq_size: usize,
    /// A client whose queue overflowed and has not drained to half within this time is
    /// closed. 0 never closes.
    pub stall_timeout_ms: u32,
    pub mode: Mode,
    pub eol: Eol,
}

impl Default for Config {
    fn default() -> Self {
        let mut c = ffi::Config::default();
        // SAFETY: writes the struct it is given.
        unsafe { ffi::relay_config_default(&mut c) };
        Config {
            max_clients: c.max_clients.into(),
            max_line: c.max_line.into(),
            txq_size: c.txq_size.into(),
            uartq_size: c.uartq_size.into(),
            stall_timeout_ms: c.stall_timeout_ms,
            mode: if c.mode == Mode::Raw as u8 {
                Mode::Raw
            } else {
                Mode::Line
            },
            eol: match c.eol {
                x if x == Eol::Cr as u8 => Eol::Cr,
                x if x == Eol::Crlf as u8 => Eol::Crlf,
                _ => Eol::Lf,
            },
        }
    }
}

/// A configuration value the C core refuses, naming the field and its allowed range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value} is out of range: this core accepts {min} ..= {max}")]
pub struct ConfigError {
    pub field: &'static str,
    pub value: usize,
    pub min: usize,
    pub max: usize,
}

impl Config {
    /// The allowed range for each field in the core linked here, in the order it checks them.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.check_within(&limits())
    }

    /// Whether some build of the core takes this configuration: a board profile describes its
    /// firmware's build, whose bounds are its own, not those of the core linked here.
    pub fn check_buildable(&self) -> Result<(), ConfigError> {
        self.check_within(&BUILD_MAX)
    }

    /// Whether the two relays behave alike to their clients and UART: all but the queue
    /// sizes, which a build sizes for its line rate.
    pub fn same_contract(&self, other: &Config) -> bool {
        Config {
            txq_size: other.txq_size,
            uartq_size: other.uartq_size,
            ..*self
        } == *other
    }

    fn check_within(&self, l: &Limits) -> Result<(), ConfigError> {
        let ranges = [
            ("max_clients", self.max_clients, 1, l.max_clients),
            ("max_line", self.max_line, 1, l.max_line),
            ("txq_size", self.txq_size, NOTICE_MAX, l.txq_size),
            (
                "uartq_size",
                self.uartq_size,
                self.max_line + EOL_MAX,
                l.uartq_size,
            ),
        ];
        for (field, value, min, max) in ranges {
            if value < min || value > max {
                return Err(ConfigError {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        Ok(())
    }

    fn to_ffi(self) -> Result<ffi::Config, ConfigError> {
        self.check()?;
        // check() bounds every field by a u16 compile-time limit.
        let narrow = |v: usize| u16::try_from(v).expect("checked above");
        Ok(ffi::Config {
            max_clients: narrow(self.max_clients),
            max_line: narrow(self.max_line),
            txq_size: narrow(self.txq_size),
            uartq_size: narrow(self.uartq_size),
            stall_timeout_ms: self.stall_timeout_ms,
            mode: self.mode as u8,
            eol: self.eol as u8,
            reserved: 0,
        })
    }
}

/// A client slot index, as handed out by [`Relay::accept`].
pub type Slot = usize;

/// One relay instance: the C `relay_t`, owned by Rust.
pub struct Relay {
    // Allocated with RELAY_LAYOUT, C's own size and alignment of relay_t.
    state: NonNull<u8>,
    config: Config,
}

const _: () = assert!(
    c::RELAY_NEXT_ID_SIZE == size_of::<u32>() && c::RELAY_NEXT_ID_OFFSET % align_of::<u32>() == 0,
    "relay_t's next_id is not an aligned uint32_t"
);

const RELAY_LAYOUT: Layout = match Layout::from_size_align(c::RELAY.size, c::RELAY.align) {
    Ok(layout) => layout,
    Err(_) => panic!("sizeof and _Alignof of relay_t make no Rust Layout"),
};

impl Drop for Relay {
    fn drop(&mut self) {
        // SAFETY: state was allocated in Relay::new with RELAY_LAYOUT and is freed only here.
        unsafe { dealloc(self.state.as_ptr(), RELAY_LAYOUT) }
    }
}

// SAFETY: relay_t holds no pointers or thread-affine state; it is plain memory.
unsafe impl Send for Relay {}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn slot_arg(slot: Slot) -> c_int {
    // Out-of-range slots are rejected by the core itself; saturate rather than wrap.
    c_int::try_from(slot).unwrap_or(c_int::MAX)
}

pub(crate) fn format_text(f: impl Fn(*mut c_char, usize) -> usize) -> String {
    let mut buf = vec![0u8; 512];
    loop {
        let n = f(buf.as_mut_ptr().cast(), buf.len());
        if n < buf.len() {
            buf.truncate(n);
            return String::from_utf8_lossy(&buf).into_owned();
        }
        buf.resize(n + 1, 0);
    }
}

impl Relay {
    pub fn new(config: Config, now_ms: u32) -> Result<Relay, ConfigError> {
        let cfg = config.to_ffi()?;
        // SAFETY: RELAY_LAYOUT's size, sizeof(relay_t), is not zero.
        let state = NonNull::new(unsafe { alloc_zeroed(RELAY_LAYOUT) })
            .unwrap_or_else(|| handle_alloc_error(RELAY_LAYOUT));
        // Owned from here, so an early return frees it.
        let mut relay = Relay { state, config };
        // SAFETY: state is zeroed memory with relay_t's size and alignment.
        let rc = unsafe { ffi::relay_init(relay.raw_mut(), &cfg, now_ms) };
        assert_eq!(
            rc,
            c::OK,
            "relay_init refused a config that passed Config::check"
        );
        Ok(relay)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn raw(&self) -> *const c_void {
        self.state.as_ptr().cast()
    }

    fn raw_mut(&mut self) -> *mut c_void {
        self.state.as_ptr().cast()
    }

    /// Sets the id the next accepted connection gets, as if that many had connected before:
    /// reaching the ids' u32 wrap by accepting takes 2^32 connections. For tests only; the core
    /// has no such call, so this writes `relay_t`'s `next_id` where C placed it.
    #[doc(hidden)]
    pub fn set_next_id(&mut self, id: u32) {
        assert_ne!(id, 0, "0 is a free slot's id");
        // SAFETY: state is a relay_t, aligned as C aligns it, with an aligned uint32_t next_id
        // at RELAY_NEXT_ID_OFFSET (checked above); the core reads it only when it accepts.
        unsafe {
            self.state
                .as_ptr()
                .add(c::RELAY_NEXT_ID_OFFSET)
                .cast::<u32>()
                .write(id)
        }
    }

    /// Takes a free slot, or `None` when all are taken: the platform then sends
    /// [`Relay::reject_line`] and closes the connection.
    pub fn accept(&mut self) -> Option<Slot> {
        // SAFETY: self.state is an initialised relay_t.
        let slot = unsafe { ffi::relay_accept(self.raw_mut()) };
        usize::try_from(slot).ok()
    }

    /// Offers bytes received from a client and returns how many the core took. The rest must
    /// be offered again later, after the UART queue drained.
    pub fn client_input(&mut self, slot: Slot, data: &[u8]) -> usize {
        // SAFETY: data is a valid slice; the core reads at most len bytes of it.
        unsafe {
            ffi::relay_client_input(self.raw_mut(), slot_arg(slot), data.as_ptr(), data.len())
        }
    }

    pub fn client_closed(&mut self, slot: Slot) {
        // SAFETY: initialised relay_t; the core ignores invalid slots.
        unsafe { ffi::relay_client_closed(self.raw_mut(), slot_arg(slot)) }
    }

    pub fn uart_input(&mut self, data: &[u8]) {
        // SAFETY: data is a valid slice of len bytes.
        unsafe { ffi::relay_uart_input(self.raw_mut(), data.as_ptr(), data.len()) }
    }

    /// The platform lost UART input: its receive buffer overflowed.
    pub fn uart_overrun(&mut self) {
        // SAFETY: the relay is initialised.
        unsafe { ffi::relay_uart_overrun(self.raw_mut()) }
    }

    pub fn tick(&mut self, now_ms: u32) {
        // SAFETY: initialised relay_t.
        unsafe { ffi::relay_tick(self.raw_mut(), now_ms) }
    }

    /// The next contiguous bytes for the UART (possibly not all that is queued).
    pub fn uart_pending(&self) -> &[u8] {
        let mut p = std::ptr::null();
        // SAFETY: the core points p into its own queue, valid while self is not mutated.
        let n = unsafe { ffi::relay_uart_pending(self.raw(), &mut p) };
        if n == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(p, n) }
        }
    }

    pub fn uart_consume(&mut self, n: usize) {
        // SAFETY: initialised relay_t; the core clamps n.
        unsafe { ffi::relay_uart_consume(self.raw_mut(), n) }
    }

    /// The next contiguous bytes queued for a client.
    pub fn client_pending(&self, slot: Slot) -> &[u8] {
        let mut p = std::ptr::null();
        // SAFETY: as for uart_pending.
        let n = unsafe { ffi::relay_client_pending(self.raw(), slot_arg(slot), &mut p) };
        if n == 0 {
            &[]
        } else {
            unsafe { std::slice::from_raw_parts(p, n) }
        }
    }

    /// Copies the bytes queued for a client into `out`, as many as fit, across the ring's
    /// end; nothing is consumed.
    pub fn client_copy(&self, slot: Slot, out: &mut [u8]) -> usize {
        // SAFETY: initialised relay_t; the core writes at most out.len() bytes.
        unsafe { ffi::relay_client_copy(self.raw(), slot_arg(slot), out.as_mut_ptr(), out.len()) }
    }

    pub fn client_consume(&mut self, slot: Slot, n: usize) {
        // SAFETY: initialised relay_t; the core clamps n and ignores invalid slots.
        unsafe { ffi::relay_client_consume(self.raw_mut(), slot_arg(slot), n) }
    }

    /// A slot the core has closed (stall timeout). It is already free: close its socket.
    pub fn next_close(&mut self) -> Option<Slot> {
        // SAFETY: initialised relay_t.
        let slot = unsafe { ffi::relay_next_close(self.raw_mut()) };
        usize::try_from(slot).ok()
    }

    pub fn is_open(&self, slot: Slot) -> bool {
        // SAFETY: initialised relay_t.
        unsafe { ffi::relay_client_open(self.raw(), slot_arg(slot)) }
    }

    pub fn client_stats(&self, slot: Slot) -> Option<ClientStats> {
        let mut out = ClientStats::default();
        // SAFETY: out is a valid ClientStats with the C layout.
        unsafe { ffi::relay_client_stats(self.raw(), slot_arg(slot), &mut out) }.then_some(out)
    }

    pub fn stats(&self) -> Stats {
        let mut out = Stats::default();
        // SAFETY: out is a valid Stats with the C layout.
        unsafe { ffi::relay_stats(self.raw(), &mut out) };
        out
    }

    /// The line sent to a client refused for lack of a slot.
    pub fn reject_line(&self) -> String {
        // SAFETY: the formatter writes at most cap bytes into buf.
        format_text(|buf, cap| unsafe { ffi::relay_format_reject(self.raw(), buf, cap) })
    }

    /// The one-line boot banner. `ip` and `build_id` are sanitised by the core.
    pub fn banner(&self, ip: &str, build_id: &str, port: u16, status_port: u16) -> String {
        let c = |s: &str| CString::new(s.replace('\0', "?")).expect("NULs replaced");
        let (ip, build_id) = (c(ip), c(build_id));
        let info = ffi::BannerInfo {
            ip: ip.as_ptr(),
            build_id: build_id.as_ptr(),
            port,
            status_port,
        };
        // SAFETY: info's strings outlive the call; the formatter bounds its writes by cap.
        format_text(|buf, cap| unsafe { ffi::relay_format_banner(self.raw(), &info, buf, cap) })
    }

    /// The status channel's text: a global line, one line per open client, then `end`.
    pub fn status(&self) -> String {
        // SAFETY: as for banner.
        format_text(|buf, cap| unsafe { ffi::relay_format_status(self.raw(), buf, cap) })
    }
}
