//! Benchmarks: throughput both ways, round-trip latency and line rate, on any board, with
//! ser2net run beside it as a reference. Every measurement is bounded in bytes and in time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::board::Board;
use crate::error::{HilError, Result};
use crate::net::Client;

/// How much each measurement moves, and how long it may take.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Bytes the UART sends to the clients, per measurement.
    pub uart_bytes: usize,
    /// Lines each client sends to the UART.
    pub lines: usize,
    /// Bytes per line, terminator included.
    pub line_len: usize,
    /// Round trips for the latency figures.
    pub pings: usize,
    /// Seconds of UART traffic for the paced line-rate figure.
    pub paced_secs: f64,
    /// Ceiling for any one measurement.
    pub limit: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            uart_bytes: 8 << 20,
            lines: 8192,
            line_len: 64,
            pings: 2000,
            paced_secs: 3.0,
            limit: Duration::from_secs(60),
        }
    }

    /// A run that only checks that every measurement works.
    pub fn smoke() -> Sizes {
        Sizes {
            uart_bytes: 64 << 10,
            lines: 200,
            line_len: 64,
            pings: 50,
            paced_secs: 0.3,
            limit: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub bytes: usize,
    pub secs: f64,
    pub bytes_per_sec: f64,
    /// Bytes (UART to clients) or lines (clients to UART) that did not arrive intact.
    pub lost: usize,
    /// Clients to UART only: lines that arrived mixed with another client's bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_lines: Option<usize>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LineRate {
    pub baud: u32,
    /// 8N1: baud / 10.
    pub line_bytes_per_sec: f64,
    pub achieved_bytes_per_sec: f64,
    pub share: f64,
}

impl LineRate {
    /// What `achieved` bytes per second are of an 8N1 line at `baud`.
    pub fn new(baud: u32, achieved: f64) -> LineRate {
        let line = f64::from(baud) / 10.0;
        LineRate {
            baud,
            line_bytes_per_sec: line,
            achieved_bytes_per_sec: achieved,
            share: achieved / line,
        }
    }
}

/// Every figure for one board.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub board: String,
    pub uart_to_clients: Vec<Throughput>,
    pub clients_to_uart: Vec<Throughput>,
    pub latency: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line_rate: Option<LineRate>,
}

fn fail(what: &str, why: impl std::fmt::Display) -> HilError {
    HilError::Bench {
        reason: format!("{what}: {why}"),
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

async fn clients(board: &Board, n: usize) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Client::connect(format!("b{}", i + 1), board.tcp, None).await?);
    }
    Ok(out)
}

/// Closes every client and waits for the relay to close back, so the next measurement finds
/// every slot free.
async fn release(clients: Vec<Client>, limit: Duration) -> Result<()> {
    for c in clients {
        let name = c.name.clone();
        if !c.finish(Instant::now() + limit).await {
            return Err(fail("release", format!("the relay never closed {name}")));
        }
    }
    Ok(())
}

/// Makes sure every client is connected and reading, on any relay: the UART repeats a marker
/// until each client has seen one (so the relay has it), then sends `go` once; every client
/// reads up to `go`, so what follows starts clean.
async fn sync(board: &mut Board, clients: &mut [Client], limit: Duration) -> Result<()> {
    let (hello, go) = (b"\x02bench-hello\x03", b"\x02bench-go\x03");
    let until = Instant::now() + limit;
    for c in clients.iter_mut() {
        loop {
            board.serial.write_all(hello).await?;
            let (got, _) = c
                .read_until(Instant::now() + Duration::from_millis(50), |b| {
                    b.windows(hello.len()).any(|w| w == hello)
                })
                .await;
            if got.windows(hello.len()).any(|w| w == hello) {
                break;
            }
            if Instant::now() > until {
                return Err(fail(
                    "sync",
                    format!("{} never saw the UART marker", c.name),
                ));
            }
        }
    }
    board.serial.write_all(go).await?;
    for c in clients.iter_mut() {
        let (got, _) = c.read_until(until, |b| b.ends_with(go)).await;
        if !got.ends_with(go) {
            return Err(fail(
                "sync",
                format!("{} never saw the start marker", c.name),
            ));
        }
    }
    Ok(())
}

/// The UART sends `sizes.uart_bytes`; every client must receive all of them, in order.
pub async fn uart_to_clients(board: &mut Board, n: usize, sizes: &Sizes) -> Result<Throughput> {
    let mut cs = clients(board, n).await?;
    sync(board, &mut cs, sizes.limit).await?;
    let data: std::sync::Arc<[u8]> = pattern(sizes.uart_bytes).into();
    let start = Instant::now();
    let deadline = start + sizes.limit;
    let readers: Vec<_> = cs
        .into_iter()
        .map(|mut c| {
            let want = std::sync::Arc::clone(&data);
            tokio::spawn(async move {
                let got = c.bytes(want.len(), deadline).await;
                let intact = got
                    .iter()
                    .zip(want.iter())
                    .take_while(|(a, b)| a == b)
                    .count();
                (want.len() - intact, Instant::now(), c)
            })
        })
        .collect();
    for chunk in data.chunks(16 << 10) {
        board.serial.write_all(chunk).await?;
    }
    let (mut lost, mut end, mut done) = (0, start, Vec::new());
    for r in readers {
        let (l, t, c) = r.await.map_err(|e| fail("reader", e))?;
        lost += l;
        end = end.max(t);
        done.push(c);
    }
    let secs = (end - start).as_secs_f64();
    release(done, sizes.limit).await?;
    Ok(Throughput {
        clients: n,
        bytes: data.len(),
        secs,
        bytes_per_sec: data.len() as f64 / secs,
        lost,
        mixed_lines: None,
    })
}

fn bench_line(client: usize, seq: usize, len: usize) -> Vec<u8> {
    let mut line = format!("{}{seq:07}:", (b'A' + client as u8) as char).into_bytes();
    line.resize(len - 1, b'.');
    line.push(b'\n');
    line
}

/// Each of `n` clients sends `sizes.lines` lines at once; the UART must get every line whole.
pub async fn clients_to_uart(board: &mut Board, n: usize, sizes: &Sizes) -> Result<Throughput> {
    let cs = clients(board, n).await?;
    board.serial.discard_input();
    let (lines, len) = (sizes.lines, sizes.line_len);
    let start = Instant::now();
    let deadline = start + sizes.limit;
    let writers: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let all: Vec<u8> = (0..lines).flat_map(|k| bench_line(i, k, len)).collect();
                // Writes that do not line up with lines, as a real client's do not.
                for chunk in all.chunks(1000) {
                    c.send(chunk).await?;
                }
                Ok::<Client, std::io::Error>(c)
            })
        })
        .collect();
    let (mut next, mut intact, mut mixed) = (vec![0usize; n], 0usize, 0usize);
    while intact + mixed < n * lines {
        let Some(mut line) = board.serial.line(deadline).await? else {
            break;
        };
        line.push(b'\n');
        let who = line
            .first()
            .map(|b| b.wrapping_sub(b'A') as usize)
            .filter(|&i| i < n);
        match who {
            Some(i) if line == bench_line(i, next[i], len) => {
                next[i] += 1;
                intact += 1;
            }
            _ => mixed += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut done = Vec::new();
    for w in writers {
        done.push(
            w.await
                .map_err(|e| fail("writer", e))?
                .map_err(|e| fail("writer", e))?,
        );
    }
    release(done, sizes.limit).await?;
    let bytes = intact * len;
    Ok(Throughput {
        clients: n,
        bytes,
        secs,
        bytes_per_sec: bytes as f64 / secs,
        lost: n * lines - intact,
        mixed_lines: Some(mixed),
    })
}

/// Round trips of a short line: client -> UART, then UART -> client.
pub async fn latency(board: &mut Board, sizes: &Sizes) -> Result<Latency> {
    let mut cs = clients(board, 1).await?;
    sync(board, &mut cs, sizes.limit).await?;
    let mut c = cs.pop().expect("one client");
    board.serial.discard_input();
    let mut rtts = Vec::with_capacity(sizes.pings);
    for i in 0..sizes.pings {
        let ping = format!("p{i:07}");
        let start = Instant::now();
        let deadline = start + sizes.limit;
        c.send(format!("{ping}\n").as_bytes())
            .await
            .map_err(|e| fail("ping", e))?;
        loop {
            match board.serial.line(deadline).await? {
                Some(l) if l == ping.as_bytes() => break,
                Some(_) => continue,
                None => return Err(fail("latency", format!("{ping} never reached the UART"))),
            }
        }
        let pong = format!("{ping}\r\n");
        board.serial.write_all(pong.as_bytes()).await?;
        let (got, _) = c
            .read_until(deadline, |b| b.ends_with(pong.as_bytes()))
            .await;
        if !got.ends_with(pong.as_bytes()) {
            return Err(fail("latency", format!("{ping} never came back")));
        }
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    release(vec![c], sizes.limit).await?;
    rtts.sort_by(f64::total_cmp);
    let at = |q: f64| rtts[((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1];
    Ok(Latency {
        count: rtts.len(),
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
    })
}

/// UART to one client on a paced line: the share of the line rate the relay delivers.
pub async fn line_rate(board: &mut Board, baud: u32, sizes: &Sizes) -> Result<LineRate> {
    let line = f64::from(baud) / 10.0;
    let bytes = (line * sizes.paced_secs) as usize;
    let t = uart_to_clients(
        board,
        1,
        &Sizes {
            uart_bytes: bytes,
            ..sizes.clone()
        },
    )
    .await?;
    if t.lost > 0 {
        return Err(fail("line rate", format!("{} bytes lost", t.lost)));
    }
    Ok(LineRate::new(baud, t.bytes_per_sec))
}

/// Every figure for `board`; `paced` is a second board with a paced UART, when there is one.
pub async fn measure(
    board: &mut Board,
    paced: Option<(&mut Board, u32)>,
    sizes: &Sizes,
    mut step: impl FnMut(&str),
) -> Result<Figures> {
    let label = format!("{} ({})", board.kind, board.profile.name);
    let max = board.limits.max_clients;
    let mut uart_to = Vec::new();
    for n in [1, 2, 4].into_iter().filter(|&n| n <= max) {
        step(&format!("{label}: UART to {n} client(s)"));
        uart_to.push(uart_to_clients(board, n, sizes).await?);
    }
    let mut to_uart = Vec::new();
    for n in [1, 4].into_iter().filter(|&n| n <= max) {
        step(&format!("{label}: {n} client(s) to the UART"));
        to_uart.push(clients_to_uart(board, n, sizes).await?);
    }
    step(&format!("{label}: latency"));
    let lat = latency(board, sizes).await?;
    let rate = match paced {
        Some((b, baud)) => {
            step(&format!("{label}: line rate at {baud} baud"));
            Some(line_rate(b, baud, sizes).await?)
        }
        None => None,
    };
    Ok(Figures {
        board: label,
        uart_to_clients: uart_to,
        clients_to_uart: to_uart,
        latency: lat,
        line_rate: rate,
    })
}

/// ser2net on one end of a socat pseudo-terminal pair: the reference relay.
pub struct Ser2net {
    socat: Child,
    ser2net: Child,
    pub version: String,
    /// The device side: what the harness opens as the board's UART.
    pub serial: PathBuf,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Ser2net {
    /// Starts socat and ser2net under `dir`, ready for `max_clients` connections.
    pub async fn start(dir: &Path, max_clients: usize) -> Result<Ser2net> {
        let need = |tool: &str, e: std::io::Error| {
            fail(
                "ser2net",
                format!("cannot run {tool} ({e}); install it with: apt-get install ser2net socat"),
            )
        };
        std::fs::create_dir_all(dir).map_err(|e| fail("ser2net", e))?;
        let (dev, serial) = (dir.join("dev"), dir.join("uart"));
        let mut socat = Command::new("socat")
            .args(["-d", "-d"])
            .arg(format!("pty,raw,echo=0,link={}", dev.display()))
            .arg(format!("pty,raw,echo=0,link={}", serial.display()))
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| need("socat", e))?;
        let mut lines = BufReader::new(socat.stderr.take().expect("piped")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("starting data transfer loop") {
                    return true;
                }
            }
            false
        });
        if !ready.await.unwrap_or(false) {
            return Err(fail("ser2net", "socat did not open its pseudo-terminals"));
        }
        // socat keeps logging; its stderr must keep draining.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| fail("ser2net", e))?;
        let config = dir.join("ser2net.yaml");
        let yaml = format!(
            "%YAML 1.1\n---\nconnection: &bench\n  accepter: tcp,127.0.0.1,{}\n  \
             connector: serialdev,{},115200n81,local\n  options:\n    max-connections: {max_clients}\n    mdns: false\n",
            port.port(),
            dev.display()
        );
        std::fs::write(&config, yaml).map_err(|e| fail("ser2net", e))?;
        let version = std::process::Command::new("ser2net")
            .arg("-v")
            .output()
            .map_err(|e| need("ser2net", e))
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .replace("ser2net version ", "")
            })?;
        let ser2net = Command::new("ser2net")
            .args(["-n", "-c"])
            .arg(&config)
            .arg("-P")
            .arg(dir.join("ser2net.pid"))
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| need("ser2net", e))?;
        // Ready when it accepts: poll the port, which is the only signal ser2net gives.
        let until = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(port).await.is_err() {
            if Instant::now() > until {
                return Err(fail(
                    "ser2net",
                    format!("nothing listens on {port} after 10 s"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Ser2net {
            socat,
            ser2net,
            version,
            serial,
            addr: port,
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Ser2net {
    fn drop(&mut self) {
        let _ = self.ser2net.start_kill();
        let _ = self.socat.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The figures side by side, with ratios (ours over the reference) where both exist.
pub fn table(ours: &Figures, reference: Option<&Figures>) -> String {
    use std::fmt::Write;
    let mb = |t: &Throughput| format!("{:.2} MB/s", t.bytes_per_sec / 1e6);
    let mut out = String::new();
    let head = reference.map_or(String::new(), |r| {
        format!("  {:>22}  {:>6}", r.board, "ratio")
    });
    let _ = writeln!(out, "{:<30}  {:>22}{head}", "measure", ours.board);
    let mut row = |name: String, a: String, b: Option<String>, ratio: Option<f64>| {
        let tail = match (reference, b) {
            (Some(_), Some(b)) => format!(
                "  {b:>22}  {:>6}",
                ratio.map_or("-".into(), |r| format!("{r:.2}"))
            ),
            (Some(_), None) => format!("  {:>22}  {:>6}", "n/a", "-"),
            _ => String::new(),
        };
        let _ = writeln!(out, "{name:<30}  {a:>22}{tail}");
    };
    let find = |v: &[Throughput], n: usize| v.iter().find(|t| t.clients == n).cloned();
    for t in &ours.uart_to_clients {
        let r = reference.and_then(|r| find(&r.uart_to_clients, t.clients));
        let loss = |t: &Throughput| format!("{}, lost {}", mb(t), t.lost);
        row(
            format!("UART -> {} client(s)", t.clients),
            loss(t),
            r.as_ref().map(loss),
            r.as_ref().map(|r| t.bytes_per_sec / r.bytes_per_sec),
        );
    }
    for t in &ours.clients_to_uart {
        let r = reference.and_then(|r| find(&r.clients_to_uart, t.clients));
        let show = |t: &Throughput| format!("{}, mixed {}", mb(t), t.mixed_lines.unwrap_or(0));
        row(
            format!("{} client(s) -> UART, lines", t.clients),
            show(t),
            r.as_ref().map(show),
            r.as_ref().map(|r| t.bytes_per_sec / r.bytes_per_sec),
        );
    }
    let us = |l: &Latency| format!("{:.0} / {:.0} / {:.0} us", l.p50_us, l.p99_us, l.max_us);
    row(
        "round trip p50 / p99 / max".into(),
        us(&ours.latency),
        reference.map(|r| us(&r.latency)),
        // Lower is better: the ratio is theirs over ours, so above 1 means we are faster.
        reference.map(|r| r.latency.p99_us / ours.latency.p99_us),
    );
    if let Some(l) = &ours.line_rate {
        row(
            format!("line rate at {} baud", l.baud),
            format!("{:.1}% of {:.0} B/s", l.share * 100.0, l.line_bytes_per_sec),
            None,
            None,
        );
    }
    out
}
