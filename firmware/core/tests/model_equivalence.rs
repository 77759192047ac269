//! Property test: random event sequences through the C core and the Rust model agree byte for
//! byte (UART output, every client's output, closes, accept results and all counters), telnet
//! commands split across reads included.

mod model;

use model::Model;
use proptest::prelude::*;
use relay_core::{Config, Eol, Mode, Relay};

#[derive(Clone, Debug)]
enum Event {
    Accept,
    Input(usize, Vec<u8>),
    Closed(usize),
    Uart(Vec<u8>),
    Overrun,
    UartTake(usize),
    ClientTake(usize, usize),
    Tick(u32),
    NextClose,
}

/// Bytes biased towards terminators so that framing edges come up often.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(b'a'),
            2 => Just(b'\n'),
            2 => Just(b'\r'),
            1 => any::<u8>(),
            // Telnet: IAC, its commands and verbs, NUL after CR, TIMING-MARK.
            1 => Just(0xff),
            1 => 0xf0..=0xfeu8,
            1 => Just(0),
            1 => Just(6),
        ],
        0..max,
    )
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => Just(Event::Accept),
        8 => (0..6usize, bytes(90)).prop_map(|(s, b)| Event::Input(s, b)),
        1 => (0..6usize).prop_map(Event::Closed),
        3 => bytes(300).prop_map(Event::Uart),
        1 => Just(Event::Overrun),
        3 => (0..700usize).prop_map(Event::UartTake),
        3 => (0..6usize, 0..300usize).prop_map(|(s, n)| Event::ClientTake(s, n)),
        2 => (0..1500u32).prop_map(Event::Tick),
        1 => Just(Event::NextClose),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        1..=4usize,
        1..=40usize,
        64..=200usize,
        0..=80usize,
        0..=2000u32,
        any::<bool>(),
        0..3u8,
    )
        .prop_map(
            |(max_clients, max_line, txq_size, extra, stall, raw, eol)| Config {
                max_clients,
                max_line,
                txq_size,
                uartq_size: max_line + 2 + extra,
                stall_timeout_ms: stall,
                mode: if raw { Mode::Raw } else { Mode::Line },
                eol: [Eol::Lf, Eol::Cr, Eol::Crlf][eol as usize],
            },
        )
}

fn take_uart(r: &mut Relay, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let chunk = r.uart_pending();
        if chunk.is_empty() {
            break;
        }
        let k = chunk.len().min(n - out.len());
        out.extend_from_slice(&chunk[..k]);
        r.uart_consume(k);
    }
    out
}

fn take_client(r: &mut Relay, slot: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let chunk = r.client_pending(slot);
        let k = chunk.len().min(n - out.len());
        out.extend_from_slice(&chunk[..k]);
        r.client_consume(slot, k);
        if k == 0 || out.len() == n {
            break;
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn core_agrees_with_model(
        cfg in config(),
        first_id in prop_oneof![Just(1), (u32::MAX - 6)..=u32::MAX],
        events in prop::collection::vec(event(), 1..160),
    ) {
        // Start near the u32 wrap so stall ages and uptime cross it in many cases, and ids too
        // in half of them.
        let start = u32::MAX - 3000;
        let mut core = Relay::new(cfg, start).unwrap();
        let mut model = Model::new(cfg, start);
        core.set_next_id(first_id);
        model.set_next_id(first_id);
        let mut now = start;
        for (step, ev) in events.iter().enumerate() {
            match ev {
                Event::Accept => prop_assert_eq!(core.accept(), model.accept(), "step {}", step),
                Event::Input(s, b) => {
                    prop_assert_eq!(core.client_input(*s, b), model.client_input(*s, b), "step {}", step)
                }
                Event::Closed(s) => {
                    core.client_closed(*s);
                    model.client_closed(*s);
                }
                Event::Uart(b) => {
                    core.uart_input(b);
                    model.uart_input(b);
                }
                Event::Overrun => {
                    core.uart_overrun();
                    model.uart_overrun();
                }
                Event::UartTake(n) => {
                    prop_assert_eq!(take_uart(&mut core, *n), model.uart_take(*n), "step {}", step)
                }
                Event::ClientTake(s, n) => prop_assert_eq!(
                    take_client(&mut core, *s, *n),
                    model.client_take(*s, *n),
                    "step {}", step
                ),
                Event::Tick(dt) => {
                    now = now.wrapping_add(*dt);
                    core.tick(now);
                    model.tick(now);
                }
                Event::NextClose => prop_assert_eq!(core.next_close(), model.next_close(), "step {}", step),
            }
            prop_assert_eq!(core.stats(), model.g, "global counters, step {}", step);
            for slot in 0..cfg.max_clients {
                prop_assert_eq!(core.is_open(slot), model.is_open(slot), "slot {} open, step {}", slot, step);
                prop_assert_eq!(
                    core.client_stats(slot),
                    model.client_counters(slot),
                    "slot {} counters, step {}", slot, step
                );
            }
        }
        // Whatever is still queued must agree too.
        prop_assert_eq!(take_uart(&mut core, usize::MAX), model.uart_take(usize::MAX));
        for slot in 0..cfg.max_clients {
            prop_assert_eq!(take_client(&mut core, slot, usize::MAX), model.client_take(slot, usize::MAX));
        }
    }
}
