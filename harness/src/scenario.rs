//! The scenarios: each checks one part of the relay contract (firmware/core/README.md) on
//! whatever board is selected, and records a normalised transcript of what it saw.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use relay_core::Mode;
use relay_core::text::{Counters, Status};

use crate::board::Board;
use crate::net::{Client, End, close_and_wait};
use crate::transcript::{Transcript, show};

/// Ceiling for one expected event: it only fires when something is broken.
pub const CEILING: Duration = Duration::from_secs(20);

/// Ceiling for one exchange while a client holds half a line. A relay answers in milliseconds;
/// one that waits in loop() for the rest of the line freezes for the client's timeout (5 s on
/// the ESP8266 core).
pub const RESPONSIVE: Duration = Duration::from_secs(1);

/// How a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Skip(String),
    Fail(String),
}

pub type Failure = String;
type Run = for<'a> fn(&'a mut Ctx<'_>) -> Pin<Box<dyn Future<Output = Result<(), Failure>> + 'a>>;

pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// Why this board cannot run it, if it cannot.
    pub unsupported: fn(&Board) -> Option<String>,
    /// The firmware counters (virtual board) this scenario moves, and by how much; every
    /// other must stay 0.
    pub allows: &'static [(&'static str, i64)],
    run: Run,
}

/// Declares [`ALL`], each scenario named by its identifier, and `for_each_scenario!`, which
/// hands a macro of the caller's those identifiers: the tests make one test per scenario from
/// it, so a scenario added here is tested without another list to keep in step.
macro_rules! scenarios {
    ($($name:ident { $($field:tt)* },)*) => {
        /// Every scenario, in the order a run takes them.
        pub const ALL: &[Scenario] = &[$(Scenario { name: stringify!($name), $($field)* },)*];

        /// `for_each_scenario!(m)` expands to `m! { echo, echo_raw, … }`: every scenario of
        /// [`scenario::ALL`](crate::scenario::ALL) as an identifier, in its order.
        #[macro_export]
        macro_rules! for_each_scenario {
            ($m:ident) => { $m! { $($name),* } };
        }
    };
}

scenarios! {
    echo {
        about: "a line each way, byte-exact",
        unsupported: needs_line_mode,
        allows: &[],
        run: |c| Box::pin(echo(c)),
    },
    echo_raw {
        about: "every byte value each way, raw mode",
        unsupported: needs_raw_mode,
        allows: &[],
        run: |c| Box::pin(echo_raw(c)),
    },
    ordering {
        about: "concurrent clients: whole lines, each client's in order",
        unsupported: needs_line_mode,
        allows: &[],
        run: |c| Box::pin(ordering(c)),
    },
    fan_out {
        about: "every client gets the same UART stream",
        unsupported: |_| None,
        allows: &[],
        run: |c| Box::pin(fan_out(c)),
    },
    disconnect {
        about: "close, reset and close mid-line free the slot and leak nothing",
        unsupported: needs_line_mode,
        allows: &[],
        run: |c| Box::pin(disconnect(c)),
    },
    capacity {
        about: "the client after the limit is refused; the others carry on",
        unsupported: needs_client_limit,
        allows: &[],
        run: |c| Box::pin(capacity(c)),
    },
    overflow_guard {
        about: "max_line passes; longer lines are refused whole",
        unsupported: needs_guard,
        allows: &[],
        run: |c| Box::pin(overflow_guard(c)),
    },
    responsiveness {
        about: "a client holding half a line never holds up the others",
        unsupported: needs_line_mode,
        allows: &[],
        run: |c| Box::pin(responsiveness(c)),
    },
    connection_budget {
        about: "past the TCP pool, lwIP resets the idlest client for the newcomer",
        unsupported: needs_pcb_pool,
        allows: &[("pcb_resets", 1)],
        run: |c| Box::pin(connection_budget(c)),
    },
    quiet_loop {
        about: "every client and the UART at line rate: no overrun, nothing lost",
        unsupported: needs_line_mode,
        allows: &[],
        run: |c| Box::pin(quiet_loop(c)),
    },
    slow_reader {
        about: "a stalled client is dropped and closed; the others lose nothing",
        unsupported: needs_stall_close,
        allows: &[],
        run: |c| Box::pin(slow_reader(c)),
    },
}

pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

fn needs_line_mode(b: &Board) -> Option<String> {
    (b.limits.mode != Mode::Line).then(|| "the board is in raw mode; this needs line mode".into())
}

fn needs_raw_mode(b: &Board) -> Option<String> {
    (b.limits.mode != Mode::Raw)
        .then(|| "the board is in line mode; this needs a raw-mode profile".into())
}

fn needs_client_limit(b: &Board) -> Option<String> {
    (!b.profile.capabilities.client_limit)
        .then(|| "the profile says the board has no client limit".into())
}

fn needs_guard(b: &Board) -> Option<String> {
    needs_line_mode(b).or_else(|| {
        (!b.profile.capabilities.overflow_guard)
            .then(|| "the profile says the board has no overflow guard".into())
    })
}

fn needs_pcb_pool(b: &Board) -> Option<String> {
    needs_client_limit(b).or_else(|| {
        (b.profile.net.tcp_pcbs == 0)
            .then(|| "the profile gives the board's TCP stack no connection pool".into())
    })
}

fn needs_stall_close(b: &Board) -> Option<String> {
    (!b.profile.capabilities.stall_close)
        .then(|| "the profile says the board never closes a stalled client".into())
}

/// A scenario's view of the board, and its transcript.
pub struct Ctx<'b> {
    pub board: &'b mut Board,
    pub t: Transcript,
    clients: usize,
    before: Option<Counters>,
    /// A second handle on every client socket the scenario has not closed itself, so that its
    /// end can close them all and wait for the relay to close back.
    open: Vec<(String, tokio::net::TcpStream)>,
}

impl Scenario {
    /// Runs the scenario, or says why it is skipped; returns the outcome and the transcript.
    pub async fn run(&self, board: &mut Board) -> (Outcome, Transcript) {
        if let Some(why) = (self.unsupported)(board) {
            return (Outcome::Skip(why), Transcript::default());
        }
        let mut cx = Ctx {
            board,
            t: Transcript::default(),
            clients: 0,
            before: None,
            open: Vec::new(),
        };
        let limits = &cx.board.limits;
        cx.t.note(format!(
            "# {}: max_clients={} max_line={} mode={} eol={}",
            self.name, limits.max_clients, limits.max_line, limits.mode, limits.eol
        ));
        let firmware_before = cx.board.firmware_counters().await;
        let result = cx
            .settle()
            .await
            .and((self.run)(&mut cx).await)
            .and(cx.close_all().await);
        // What the firmware did that the chip must not: found in every scenario's end state.
        let misdeeds = match (firmware_before, cx.board.firmware_counters().await) {
            (Ok(Some(before)), Ok(Some(after))) => firmware_misdeeds(&before, &after, self.allows),
            (Err(e), _) | (_, Err(e)) => Some(format!("cannot read the firmware counters: {e}")),
            _ => None,
        };
        let outcome = match (result, misdeeds) {
            (Ok(()), None) => Outcome::Pass,
            (Ok(()), Some(m)) => Outcome::Fail(m),
            (Err(why), None) => Outcome::Fail(why),
            (Err(why), Some(m)) => Outcome::Fail(format!("{why}; and {m}")),
        };
        (outcome, cx.t)
    }
}

/// What each firmware counter of the virtual board means when it moves.
const MISDEEDS: &[(&str, &str)] = &[
    ("wait_peek", "WiFiClient::peekBytes waited for data"),
    ("wait_read", "a timed read waited for data"),
    (
        "wait_write",
        "WiFiClient::write waited for lwIP to take the data",
    ),
    (
        "wait_flush",
        "WiFiClient::stop/flush waited for acknowledgements",
    ),
    ("wait_delay", "delay() ran in loop()"),
    ("wait_serial", "Serial.write waited for the transmit FIFO"),
    (
        "uart_overruns",
        "the UART receive ring overran and lost bytes",
    ),
    (
        "pcb_resets",
        "lwIP reset a connection to free a PCB for a new one",
    ),
];

/// The counters that moved other than the scenario expects, in words; `None` when the
/// firmware behaved.
fn firmware_misdeeds(
    before: &Counters,
    after: &Counters,
    allows: &[(&str, i64)],
) -> Option<String> {
    let moved: Vec<String> = MISDEEDS
        .iter()
        .filter_map(|(k, what)| {
            let d = after.delta(before, k);
            let expected = allows.iter().find(|(a, _)| a == k).map_or(0, |(_, n)| *n);
            (d != expected).then(|| format!("{k} {d:+} (expected {expected:+}): {what}"))
        })
        .collect();
    if moved.is_empty() {
        return None;
    }
    let blocked = after.delta(before, "blocked_ms");
    Some(format!(
        "the firmware did what the chip must not ({}; {blocked} ms blocked in loop())",
        moved.join("; ")
    ))
}

/// Fails the scenario with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn deadline() -> Instant {
    Instant::now() + CEILING
}

impl Ctx<'_> {
    /// Waits until the previous scenario's clients are gone, notes the counters, and forgets
    /// UART bytes nobody asked for (a boot message, or what a failed scenario left behind).
    async fn settle(&mut self) -> Result<(), Failure> {
        self.board
            .serial
            .discard_input()
            .map_err(|e| e.to_string())?;
        if self.board.status.is_none() {
            return Ok(());
        }
        let until = deadline();
        loop {
            let c = self.status_counters().await?;
            if c.get("clients") == Some(0) {
                self.before = Some(c);
                return Ok(());
            }
            ensure!(
                Instant::now() < until,
                "clients from earlier scenarios never left: {c:?}"
            );
            // Paced polling: the status channel is the only view of the relay's slots, and a
            // real board has few TCP connections to spare for it.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The relay's counters, from its status channel.
    async fn status_counters(&self) -> Result<Counters, Failure> {
        let text = self
            .board
            .status()
            .await
            .ok_or("the status channel did not answer")?;
        Ok(Status::parse(&text).map_err(|e| e.to_string())?.relay)
    }

    /// Checks that each named counter moved by exactly what the scenario expects since it
    /// began, and records how they moved (status channel only).
    async fn counters(&mut self, expected: &[(&str, i64)]) -> Result<(), Failure> {
        let Some(before) = self.before.clone() else {
            self.t.note("counters: not checked (no status channel)");
            return Ok(());
        };
        let now = self.status_counters().await?;
        let moved: Vec<(&str, i64, i64)> = expected
            .iter()
            .map(|&(k, want)| (k, now.delta(&before, k), want))
            .collect();
        let shown: Vec<String> = moved.iter().map(|(k, d, _)| format!("{k} {d:+}")).collect();
        self.t.note(format!("counters: {}", shown.join(", ")));
        let wrong: Vec<String> = moved
            .iter()
            .filter(|(_, d, want)| d != want)
            .map(|(k, d, want)| format!("{k} {d:+} (expected {want:+})"))
            .collect();
        ensure!(
            wrong.is_empty(),
            "the relay's counters disagree with what it did: {}",
            wrong.join(", ")
        );
        Ok(())
    }

    /// Polls the status channel until `key` has moved by `delta` since the scenario began.
    async fn wait_counter(&mut self, key: &str, by: u64) -> Result<(), Failure> {
        let Some(before) = self.before.clone() else {
            return Ok(());
        };
        let until = deadline();
        loop {
            let now = self.status_counters().await?;
            if now.delta(&before, key) >= by as i64 {
                return Ok(());
            }
            ensure!(Instant::now() < until, "{key} never went up by {by}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn connect(&mut self) -> Result<Client, Failure> {
        self.connect_with(None).await
    }

    async fn connect_with(&mut self, recv_buf: Option<usize>) -> Result<Client, Failure> {
        self.clients += 1;
        let name = format!("c{}", self.clients);
        let c = Client::connect(name.clone(), self.board.tcp, recv_buf)
            .await
            .map_err(|e| e.to_string())?;
        self.open
            .push((name.clone(), c.duplicate().map_err(|e| e.to_string())?));
        self.t.note(format!("{name} connects"));
        Ok(c)
    }

    fn forget(&mut self, c: &Client) {
        self.open.retain(|(name, _)| *name != c.name);
    }

    /// Closes `c` with a FIN, as a client that is done does, and waits for the relay to close
    /// back: after that its slot is free.
    async fn close(&mut self, c: Client, note: &str) -> Result<(), Failure> {
        self.forget(&c);
        self.t.note(format!("{} {note}", c.name));
        let name = c.name.clone();
        ensure!(
            c.finish(deadline()).await,
            "the relay never closed {name} after it left"
        );
        Ok(())
    }

    /// Closes `c` with a RST, as a client that crashed does.
    fn reset(&mut self, c: Client, note: &str) {
        self.forget(&c);
        self.t.note(format!("{} {note}", c.name));
        c.reset();
    }

    /// Half-closes every client still open and waits for the relay to close each one back:
    /// the event that proves its slot is free before the next scenario starts.
    async fn close_all(&mut self) -> Result<(), Failure> {
        for (name, stream) in std::mem::take(&mut self.open) {
            ensure!(
                close_and_wait(stream, deadline()).await,
                "the relay never closed {name} after it left"
            );
        }
        Ok(())
    }

    async fn send(&mut self, c: &mut Client, data: &[u8]) -> Result<(), Failure> {
        c.send(data)
            .await
            .map_err(|e| format!("{} could not send: {e}", c.name))?;
        self.t.sent(&c.name, data);
        Ok(())
    }

    async fn uart_send(&mut self, data: &[u8]) -> Result<(), Failure> {
        self.board
            .serial
            .write_all(data)
            .await
            .map_err(|e| e.to_string())?;
        self.t.sent("uart", data);
        Ok(())
    }

    /// The next UART line must be `expected` (without its terminator).
    async fn uart_expect(&mut self, expected: &[u8]) -> Result<(), Failure> {
        let line = self
            .board
            .serial
            .line(deadline())
            .await
            .map_err(|e| e.to_string())?;
        let line =
            line.ok_or_else(|| format!("nothing on the UART; expected {}", show(expected)))?;
        ensure!(
            line == expected,
            "the UART got {} where {} was expected",
            show(&line),
            show(expected)
        );
        self.t.got("uart", &line);
        Ok(())
    }

    /// `c` must receive exactly `expected` next.
    async fn client_expect(&mut self, c: &mut Client, expected: &[u8]) -> Result<(), Failure> {
        let got = c.bytes(expected.len(), deadline()).await;
        ensure!(
            got == expected,
            "{} got {} where {} was expected",
            c.name,
            show(&got),
            show(expected)
        );
        self.t.got(&c.name, &got);
        Ok(())
    }

    /// `c` must be closed by the relay after receiving exactly `expected`; then it closes too,
    /// as a client does when its peer has gone. (Left half-open it would hold one of the
    /// ESP8266's five TCP PCBs, and the next connection would cost another client its own.)
    async fn client_expect_close(&mut self, mut c: Client, expected: &[u8]) -> Result<(), Failure> {
        let got = c
            .until_eof(deadline())
            .await
            .ok_or_else(|| format!("the relay never closed {}", c.name))?;
        ensure!(
            got == expected,
            "{} got {} before its close, not {}",
            c.name,
            show(&got),
            show(expected)
        );
        if !got.is_empty() {
            self.t.got(&c.name, &got);
        }
        self.t.note(format!("{} closed by the relay", c.name));
        self.forget(&c);
        Ok(())
    }

    /// Writes `stream` to the UART; every client must receive all of it, in order.
    async fn stream_to_all(
        &mut self,
        clients: &mut [Client],
        stream: &[u8],
        what: &str,
    ) -> Result<(), Failure> {
        self.board
            .serial
            .write_all(stream)
            .await
            .map_err(|e| e.to_string())?;
        self.t.note(format!("uart -> {what}"));
        // Read together, as programs on several hosts would. Linux acknowledges small segments
        // as its program reads them (tcp_cleanup_rbuf), otherwise on its delayed-ACK timer (40 ms
        // or more): a client left unread meanwhile holds the relay's segments that long, and a
        // queue smaller than that much UART output overflows, on the chip as on the twin.
        let until = deadline();
        let got = futures_util::future::join_all(
            clients.iter_mut().map(|c| c.bytes(stream.len(), until)),
        )
        .await;
        for (c, got) in clients.iter().zip(got) {
            ensure!(
                got == stream,
                "{} got {} of {} bytes, or different ones",
                c.name,
                got.len(),
                stream.len()
            );
            self.t.note(format!(
                "{} <- all {} bytes, in order",
                c.name,
                stream.len()
            ));
        }
        Ok(())
    }

    /// The next `n * lines` UART lines are client `i`'s `line(i, k)` for k = 0, 1, ...: each
    /// whole, each client's in order, in any interleaving of clients (the first byte names the
    /// client: `A` for c1).
    async fn uart_lines_in_order(
        &mut self,
        n: usize,
        lines: usize,
        line: impl Fn(usize, usize) -> Vec<u8>,
    ) -> Result<(), Failure> {
        let mut next = vec![0usize; n];
        for _ in 0..n * lines {
            let got = self
                .board
                .serial
                .line(deadline())
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the UART stopped before every line arrived")?;
            let i = got
                .first()
                .map(|b| b.wrapping_sub(b'A') as usize)
                .filter(|&i| i < n)
                .ok_or_else(|| format!("a mixed or foreign line on the UART: {}", show(&got)))?;
            let want = line(i, next[i]);
            ensure!(
                got == want,
                "c{} line {}: the UART got {}, expected {}",
                i + 1,
                next[i],
                show(&got),
                show(&want)
            );
            next[i] += 1;
        }
        Ok(())
    }

    /// Proves nothing else reached the UART: a marker line from `c` must be the next line.
    async fn uart_quiet(&mut self, c: &mut Client) -> Result<(), Failure> {
        self.send(c, b"marker\n").await?;
        self.uart_expect(b"marker").await
    }

    fn eol(&self) -> &'static [u8] {
        self.board.limits.eol.bytes()
    }
}

async fn echo(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let (line, reply) = (b"hello, relay", b"hello, client\r\n");
    let mut c = cx.connect().await?;
    cx.send(&mut c, &[&line[..], b"\r\n"].concat()).await?;
    cx.uart_expect(line).await?;
    cx.uart_send(reply).await?;
    cx.client_expect(&mut c, reply).await?;
    let uart_tx = line.len() + cx.eol().len();
    cx.counters(&[
        ("accepted", 1),
        ("uart_rx", reply.len() as i64),
        ("uart_tx", uart_tx as i64),
    ])
    .await
}

async fn echo_raw(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let all: Vec<u8> = (0..=255).collect();
    let mut c = cx.connect().await?;
    cx.send(&mut c, &all).await?;
    let got = cx
        .board
        .serial
        .bytes(all.len(), deadline())
        .await
        .map_err(|e| e.to_string())?;
    ensure!(
        got == all,
        "the UART got {} of the 256 byte values, or in the wrong order: {}",
        got.len(),
        show(&got)
    );
    cx.t.got("uart", &got);
    cx.uart_send(&all).await?;
    cx.client_expect(&mut c, &all).await?;
    cx.counters(&[("uart_rx", 256), ("uart_tx", 256)]).await
}

/// Line `n` of client `i`, as the ordering scenario sends it: a 5-byte head and up to 39
/// more, no longer than the board's `max_line`.
fn ordering_line(i: usize, n: usize, max_line: usize) -> Vec<u8> {
    let tag = (b'A' + i as u8) as char;
    let tail = n % (max_line.saturating_sub(5).min(39) + 1);
    format!("{tag}{n:03}:{}", tag.to_string().repeat(tail)).into_bytes()
}

async fn ordering(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    const CLIENTS: usize = 3;
    const LINES: usize = 60;
    let n = CLIENTS.min(cx.board.limits.max_clients);
    let max_line = cx.board.limits.max_line;
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(cx.connect().await?);
    }
    // Every client sends all its lines at once, cut into odd-sized writes.
    let mut writers = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let text: Vec<u8> = (0..LINES)
            .flat_map(|k| [ordering_line(i, k, max_line), b"\n".to_vec()].concat())
            .collect();
        writers.push(tokio::spawn(async move {
            for (k, piece) in text.chunks(7 + 4 * i).enumerate() {
                c.send(piece).await?;
                if k % 5 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<Client, std::io::Error>(c)
        }));
    }
    cx.t.note(format!(
        "c1..c{n} -> {LINES} lines each, at once, in odd-sized pieces"
    ));
    cx.uart_lines_in_order(n, LINES, |i, k| ordering_line(i, k, max_line))
        .await?;
    cx.t.note(format!(
        "uart <- {} whole lines, each client's in order",
        n * LINES
    ));
    let mut clients = Vec::new();
    for w in writers {
        clients.push(
            w.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
    }
    // The other direction: one stream, every client sees it whole and in order.
    let stream: Vec<u8> = (0..3000u32).map(|k| (k % 251) as u8).collect();
    cx.stream_to_all(&mut clients, &stream, "3000 bytes (0, 1, ... 250, 0, ...)")
        .await?;
    // Each line reaches the UART with the board's line ending in place of the client's.
    let uart_tx: usize = (0..n)
        .flat_map(|i| (0..LINES).map(move |k| ordering_line(i, k, max_line).len()))
        .map(|len| len + cx.eol().len())
        .sum();
    cx.counters(&[
        ("accepted", n as i64),
        ("uart_rx", stream.len() as i64),
        ("uart_tx", uart_tx as i64),
    ])
    .await
}

async fn fan_out(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let n = cx.board.limits.max_clients;
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(cx.connect().await?);
    }
    // Every client must be accepted before the stream starts, or a late one misses its head.
    if cx.before.is_some() {
        cx.wait_counter("accepted", n as u64).await?;
    } else if let Some(c) = clients.last_mut() {
        cx.send(c, b"\n").await?;
        cx.uart_expect(b"").await?;
    }
    let stream: Vec<u8> = b"fan-out ".iter().copied().cycle().take(2048).collect();
    cx.stream_to_all(&mut clients, &stream, "\"fan-out \" repeated to 2048 bytes")
        .await?;
    cx.counters(&[
        ("accepted", n as i64),
        ("uart_rx", stream.len() as i64),
        ("drops", 0),
    ])
    .await
}

async fn disconnect(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let eol = cx.eol();
    let mut keeper = cx.connect().await?;
    // 1. A clean close right after a whole line: the line still arrives.
    let mut c = cx.connect().await?;
    cx.send(&mut c, b"last words\n").await?;
    cx.close(c, "closes").await?;
    cx.uart_expect(b"last words").await?;
    // 2. A reset mid-line, then 3. a clean close mid-line: nothing of either line arrives.
    let mut c = cx.connect().await?;
    cx.send(&mut c, b"cut short by a rese").await?;
    cx.reset(c, "resets mid-line");
    // Its slot is free once the relay has seen the reset: on a two-slot board the next client
    // needs it.
    cx.wait_counter("disconnects", 2).await?;
    let mut c = cx.connect().await?;
    cx.send(&mut c, b"half a li").await?;
    cx.close(c, "closes mid-line").await?;
    cx.wait_counter("partial_discards", 2).await?;
    cx.uart_quiet(&mut keeper).await?;
    // The freed slots are usable: fill every slot, and each new client's line gets through.
    let mut fresh = Vec::new();
    for _ in 1..cx.board.limits.max_clients {
        fresh.push(cx.connect().await?);
    }
    for c in &mut fresh {
        let line = format!("{} is in", c.name).into_bytes();
        cx.send(c, &[&line[..], eol].concat()).await?;
        cx.uart_expect(&line).await?;
    }
    // The keeper, the three that left, and one for each slot the keeper leaves free.
    let accepted = 3 + cx.board.limits.max_clients;
    cx.counters(&[
        ("accepted", accepted as i64),
        ("rejected", 0),
        ("disconnects", 3),
        ("partial_discards", 2),
    ])
    .await
}

async fn capacity(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let n = cx.board.limits.max_clients;
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(cx.connect().await?);
    }
    cx.send(&mut clients[0], b"par").await?;
    let extra = cx.connect().await?;
    let busy = format!("!relay busy max_clients={n}\r\n");
    cx.client_expect_close(extra, busy.as_bytes()).await?;
    cx.send(&mut clients[0], b"tial\n").await?;
    cx.uart_expect(b"partial").await?;
    for c in &mut clients {
        let line = format!("{} still here", c.name).into_bytes();
        cx.send(c, &[&line[..], b"\n"].concat()).await?;
        cx.uart_expect(&line).await?;
    }
    cx.counters(&[("accepted", n as i64), ("rejected", 1)])
        .await
}

async fn overflow_guard(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let max = cx.board.limits.max_line;
    let notice = format!("!relay overflow max_line={max}\r\n");
    let mut c = cx.connect().await?;
    // Exactly the limit passes.
    let exact = vec![b'='; max];
    cx.send(&mut c, &[&exact[..], b"\n"].concat()).await?;
    cx.uart_expect(&exact).await?;
    // One over and ten times over are refused whole, each with one notice.
    for len in [max + 1, 10 * max] {
        let long = vec![b'+'; len];
        cx.send(&mut c, &[&long[..], b"\n"].concat()).await?;
        cx.client_expect(&mut c, notice.as_bytes()).await?;
    }
    // The next line is handled normally, and nothing of the long ones leaked.
    cx.send(&mut c, b"after\n").await?;
    cx.uart_expect(b"after").await?;
    cx.counters(&[("overflows", 2), ("partial_discards", 0)])
        .await
}

async fn slow_reader(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let stall = Duration::from_millis(cx.board.limits.stall_timeout_ms.into());
    // A small receive window, so that a few KiB back the relay's queue up.
    let mut slow = cx.connect_with(Some(2048)).await?;
    let mut fast = cx.connect().await?;
    if cx.before.is_some() {
        cx.wait_counter("accepted", 2).await?;
    }
    cx.t.note("c1 stops reading; the UART keeps sending");
    let chunk = vec![b'~'; 1024];
    let mut sent = 0usize;
    let until = Instant::now() + stall + CEILING;
    loop {
        cx.board
            .serial
            .write_all(&chunk)
            .await
            .map_err(|e| e.to_string())?;
        sent += chunk.len();
        let got = fast.bytes(chunk.len(), deadline()).await;
        ensure!(
            got == chunk,
            "c2 (reading) lost bytes: got {} of {} after {sent}",
            got.len(),
            chunk.len()
        );
        let stalled = match cx.before.clone() {
            Some(b) => cx.status_counters().await?.delta(&b, "stalls") > 0,
            // Without a status channel: enough to fill any queue, then wait out the timeout.
            None => sent >= 256 << 10,
        };
        if stalled {
            break;
        }
        ensure!(
            Instant::now() < until,
            "c1 was never closed after {sent} bytes"
        );
    }
    cx.t.note("c2 <- every byte the UART sent, in order");
    let got = slow.until_eof(Instant::now() + stall + CEILING).await;
    let got = got.ok_or("the relay never closed the stalled client")?;
    ensure!(
        got.len() < sent,
        "c1 got all {sent} bytes, so nothing was dropped for it"
    );
    ensure!(
        got.iter().all(|&b| b == b'~'),
        "c1 got bytes that were never sent"
    );
    cx.t.note("c1 closed by the relay, having missed bytes");
    if let Some(b) = cx.before.clone() {
        let now = cx.status_counters().await?;
        let (stalls, dropped) = (now.delta(&b, "stalls"), now.delta(&b, "drops") > 0);
        cx.t.note(format!(
            "counters: stalls {stalls:+}, drops went up: {dropped}"
        ));
        ensure!(stalls == 1, "{stalls} stalls counted, not 1");
        ensure!(dropped, "no drops were counted");
    }
    Ok(())
}

async fn responsiveness(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let eol = cx.eol();
    let mut holder = cx.connect().await?;
    let mut other = cx.connect().await?;
    if cx.before.is_some() {
        cx.wait_counter("accepted", 2).await?;
    }
    cx.send(&mut holder, b"half a li").await?;
    cx.t.note("c1 holds half a line; c2 and the UART talk meanwhile");
    for k in 0..5 {
        let start = Instant::now();
        cx.uart_send(format!("tick {k}\r\n").as_bytes()).await?;
        cx.client_expect(&mut other, format!("tick {k}\r\n").as_bytes())
            .await?;
        cx.send(&mut other, format!("tock {k}\n").as_bytes())
            .await?;
        cx.uart_expect(format!("tock {k}").as_bytes()).await?;
        let took = start.elapsed();
        ensure!(
            took < RESPONSIVE,
            "exchange {k} took {took:.1?} while c1 held half a line: the relay waited for it"
        );
    }
    cx.send(&mut holder, &[b"ne".as_slice(), eol].concat())
        .await?;
    cx.uart_expect(b"half a line").await?;
    cx.counters(&[("accepted", 2), ("partial_discards", 0)])
        .await
}

async fn connection_budget(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    let n = cx.board.limits.max_clients;
    let pcbs = cx.board.profile.net.tcp_pcbs;
    let eol = cx.eol();
    ensure!(
        pcbs > n,
        "the profile's tcp_pcbs ({pcbs}) leaves no room past max_clients ({n})"
    );
    // c1 first and quiet, so that it is the one idle longest.
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut c = cx.connect().await?;
        let line = format!("{} in", c.name).into_bytes();
        cx.send(&mut c, &[&line[..], eol].concat()).await?;
        cx.uart_expect(&line).await?;
        clients.push(c);
    }
    // Each refused client stays half-open: its PCB is held until it closes too.
    let busy = format!("!relay busy max_clients={n}\r\n");
    let mut refused = Vec::new();
    for _ in n..pcbs {
        let mut e = cx.connect().await?;
        let (got, end) = e.until_end(deadline()).await;
        ensure!(
            got == busy.as_bytes() && end == End::Eof,
            "{} got {} and {end:?} where the busy line and a close were expected",
            e.name,
            show(&got)
        );
        cx.t.got(&e.name, &got);
        cx.t.note(format!(
            "{} closed by the relay; it stays half-open",
            e.name
        ));
        refused.push(e);
    }
    cx.t.note(format!(
        "all {pcbs} of the board's TCP connections are taken"
    ));
    let mut newcomer = cx.connect().await?;
    let (got, end) = clients[0].until_end(deadline()).await;
    ensure!(
        got.is_empty() && end == End::Reset,
        "{} got {} and {end:?} where a reset was expected: lwIP resets the idlest client",
        clients[0].name,
        show(&got)
    );
    let c1 = clients.remove(0);
    cx.forget(&c1);
    cx.t.note(format!(
        "{} reset by the relay: the idlest, its PCB taken",
        c1.name
    ));
    let line = format!("{} took the slot", newcomer.name).into_bytes();
    cx.send(&mut newcomer, &[&line[..], eol].concat()).await?;
    cx.uart_expect(&line).await?;
    for c in &mut clients {
        let line = format!("{} still here", c.name).into_bytes();
        cx.send(c, &[&line[..], eol].concat()).await?;
        cx.uart_expect(&line).await?;
    }
    // The refused clients close now, so the status channel has a PCB to answer with.
    for e in refused {
        cx.close(e, "closes").await?;
    }
    // The newcomer took c1's slot: lwIP reset c1, and the relay saw it go.
    cx.counters(&[
        ("accepted", n as i64 + 1),
        ("rejected", (pcbs - n) as i64),
        ("disconnects", 1),
    ])
    .await
}

async fn quiet_loop(cx: &mut Ctx<'_>) -> Result<(), Failure> {
    const LINES: usize = 40;
    let n = cx.board.limits.max_clients;
    let len = cx.board.limits.max_line.min(60);
    let eol = cx.eol();
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(cx.connect().await?);
    }
    if cx.before.is_some() {
        cx.wait_counter("accepted", n as u64).await?;
    }
    let line_of = move |i: usize, k: usize| -> Vec<u8> {
        let tag = (b'A' + i as u8) as char;
        let head = format!("{tag}{k:03}");
        let mut l = head.into_bytes();
        l.resize(len.max(4), tag as u8);
        l
    };
    // Every client reads the UART stream while it writes its lines: all at once, at the rate
    // the line allows.
    let stream: Vec<u8> = (0..4096u32).map(|k| b'a' + (k % 26) as u8).collect();
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let text: Vec<u8> = (0..LINES)
            .flat_map(|k| [line_of(i, k), eol.to_vec()].concat())
            .collect();
        let want = stream.len();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            let writer = async {
                for piece in text.chunks(97) {
                    c.send(piece).await?;
                }
                Ok::<(), std::io::Error>(())
            };
            writer
                .await
                .map_err(|e| format!("{} could not send: {e}", c.name))?;
            got.extend(c.bytes(want, deadline()).await);
            Ok::<(Client, Vec<u8>), String>((c, got))
        }));
    }
    cx.board
        .serial
        .write_all(&stream)
        .await
        .map_err(|e| e.to_string())?;
    cx.t.note(format!(
        "c1..c{n} -> {LINES} lines each while uart -> {} bytes to all",
        stream.len()
    ));
    cx.uart_lines_in_order(n, LINES, line_of).await?;
    cx.t.note(format!(
        "uart <- {} whole lines, each client's in order",
        n * LINES
    ));
    for t in tasks {
        let (c, got) = t.await.map_err(|e| e.to_string())??;
        ensure!(
            got == stream,
            "{} got {} of {} UART bytes, or different ones",
            c.name,
            got.len(),
            stream.len()
        );
        cx.t.note(format!(
            "{} <- all {} bytes, in order",
            c.name,
            stream.len()
        ));
        drop(c); // its duplicate in `open` is what closes it at the end
    }
    cx.counters(&[("uart_overruns", 0), ("drops", 0), ("overflows", 0)])
        .await
}
