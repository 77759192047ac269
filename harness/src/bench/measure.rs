//! The measurements: UART to clients, clients to UART, and a short line's round trip.
//!
//! Each runs on any relay, is bounded in bytes and in time, and reports how long its window
//! lasted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};
use crate::net::Client;
use crate::serial::Serial;

use super::rig::failed;

/// A stream that moves nothing for this long has stopped: its window ends at its last byte.
pub const QUIET: Duration = Duration::from_secs(5);

/// The counting pattern's period: a prime, so no line or buffer size lines up with it. Each
/// byte is its own position modulo the period, so a reader finds its place again after a gap.
const PERIOD: usize = 251;

/// The end of a stream: bytes the pattern never carries (and no telnet IAC, 0xFF). The UART
/// repeats it until every client has seen it, since a relay may drop any one copy.
const END: [u8; 4] = [0xFB, 0xFC, 0xFD, 0xFE];

/// The UART's writes and the clients' reads, in bytes.
const CHUNK: usize = 64 << 10;

/// Bytes in each write a client makes towards the UART: they do not line up with lines, as a
/// real client's writes do not.
const CLIENT_WRITE: usize = 1000;

/// Each line a client sends, terminator included.
pub const LINE_LEN: usize = 64;

/// UART to `clients` clients: every client must get every byte, in order.
#[derive(Clone, Debug)]
pub struct Fanout {
    pub clients: usize,
    pub bytes: u64,
    /// Bytes the clients received, summed over clients.
    pub received: u64,
    /// Bytes that never reached a client, summed over clients.
    pub lost_bytes: u64,
    /// Places where a client's stream skipped ahead (bytes dropped there), summed.
    pub gaps: u64,
    /// From the first byte written to the last byte the last client read.
    pub window: Duration,
}

/// Clients to the UART: whole lines, and every byte the UART got.
#[derive(Clone, Debug)]
pub struct Gather {
    pub lines_sent: u64,
    pub intact_lines: u64,
    /// Lines that reached the UART spliced with another client's bytes.
    pub mixed_lines: u64,
    /// Every byte the UART received in the window.
    pub raw_bytes: u64,
    /// From the first write to the last byte the UART read.
    pub window: Duration,
}

/// Round trips of a short line.
#[derive(Clone, Debug)]
pub struct RoundTrip {
    pub pings: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub window: Duration,
}

/// The ping's bytes on the wire: `p` and 7 digits, `\n` to the UART and `\r\n` back.
pub const PING_WIRE_BYTES: u64 = 9 + 10;

/// A buffer of the pattern from which any `CHUNK` bytes starting at any phase can be sliced.
fn pattern() -> Arc<[u8]> {
    (0..PERIOD * ((CHUNK + PERIOD) / PERIOD + 1))
        .map(|i| (i % PERIOD) as u8)
        .collect()
}

async fn connect(tcp: SocketAddr, n: usize) -> Result<Vec<Client>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Client::connect(format!("b{}", i + 1), tcp, None).await?);
    }
    Ok(out)
}

/// Closes every client and waits for the relay to close back, so the next measurement finds
/// every slot free.
async fn release(clients: Vec<Client>, limit: Duration) -> Result<()> {
    for c in clients {
        let name = c.name.clone();
        if !c.finish(Instant::now() + limit).await {
            return Err(failed("release", format!("the relay never closed {name}")));
        }
    }
    Ok(())
}

/// Makes sure every client is connected and reading, on any relay: the UART repeats a marker
/// until each client has seen one (so the relay has it), then sends `go` once; every client
/// reads up to `go`, so what follows starts clean.
async fn sync(serial: &mut Serial, clients: &mut [Client], limit: Duration) -> Result<()> {
    let (hello, go) = (b"\x02bench-hello\x03", b"\x02bench-go\x03");
    let until = Instant::now() + limit;
    let seen = |b: &[u8]| b.windows(hello.len()).any(|w| w == hello);
    for c in clients.iter_mut() {
        loop {
            serial.write_all(hello).await?;
            let (got, _) = c
                .read_until(Instant::now() + Duration::from_millis(50), seen)
                .await;
            if seen(&got) {
                break;
            }
            if Instant::now() > until {
                return Err(failed(
                    "sync",
                    format!("{} never saw the UART marker", c.name),
                ));
            }
        }
    }
    serial.write_all(go).await?;
    for c in clients.iter_mut() {
        let (got, _) = c.read_until(until, |b| b.ends_with(go)).await;
        if !got.ends_with(go) {
            return Err(failed(
                "sync",
                format!("{} never saw the start marker", c.name),
            ));
        }
    }
    Ok(())
}

/// What one client got of the pattern.
struct Got {
    received: u64,
    gaps: u64,
    /// When its last pattern byte came.
    last: Option<Instant>,
}

/// Reads one client's stream up to the end marker, checking it against the pattern.
async fn check_stream(
    mut c: Client,
    total: u64,
    deadline: Instant,
    pattern: Arc<[u8]>,
    done: tokio::sync::mpsc::UnboundedSender<()>,
) -> (Got, Client) {
    let mut buf = vec![0u8; CHUNK];
    let mut got = Got {
        received: 0,
        gaps: 0,
        last: None,
    };
    let mut phase = 0usize;
    'read: loop {
        let until = deadline.min(Instant::now() + QUIET);
        let n = match c.read_some(&mut buf, until).await {
            None | Some(0) => break,
            Some(n) => n,
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let want = &pattern[phase..phase + rest.len()];
            let same = if rest == want {
                rest.len()
            } else {
                rest.iter().zip(want).take_while(|(a, b)| a == b).count()
            };
            if same > 0 {
                got.last = Some(Instant::now());
            }
            got.received += same as u64;
            phase = (phase + same) % PERIOD;
            rest = &rest[same..];
            match rest.first() {
                None => {}
                Some(b) if END.contains(b) => break 'read,
                Some(&b) if usize::from(b) < PERIOD => {
                    // Bytes were dropped here: the next one says where the stream goes on.
                    got.gaps += 1;
                    phase = usize::from(b);
                }
                Some(_) => {
                    // A byte the pattern never carries: not the relay's to send, so skipped.
                    got.gaps += 1;
                    rest = &rest[1..];
                }
            }
        }
        if got.received > total {
            break;
        }
    }
    let _ = done.send(());
    (got, c)
}

/// The UART sends `bytes` of a counting pattern; each of `clients` clients must get all of it.
/// A relay may drop bytes for a client that falls behind: they count as lost, and the stream
/// must go on in order after each gap.
pub async fn fanout(
    serial: &mut Serial,
    tcp: SocketAddr,
    clients: usize,
    bytes: u64,
    limit: Duration,
) -> Result<Fanout> {
    let mut cs = connect(tcp, clients).await?;
    sync(serial, &mut cs, limit).await?;
    let pattern = pattern();
    let start = Instant::now();
    let deadline = start + limit;
    let (tx, mut finished) = tokio::sync::mpsc::unbounded_channel();
    let readers: Vec<_> = cs
        .into_iter()
        .map(|c| {
            tokio::spawn(check_stream(
                c,
                bytes,
                deadline,
                Arc::clone(&pattern),
                tx.clone(),
            ))
        })
        .collect();
    let mut sent = 0u64;
    let late = |sent: u64| {
        failed(
            "UART to clients",
            format!("the relay took {sent} of {bytes} bytes from the UART in {limit:?}"),
        )
    };
    while sent < bytes {
        let phase = (sent % PERIOD as u64) as usize;
        let n = (bytes - sent).min(CHUNK as u64) as usize;
        let write = serial.write_all(&pattern[phase..phase + n]);
        tokio::time::timeout_at(deadline.into(), write)
            .await
            .map_err(|_| late(sent))??;
        sent += n as u64;
    }
    // The end marker, again until every reader has seen it (or has given up).
    let mut ended = 0;
    while ended < clients && Instant::now() < deadline {
        tokio::time::timeout_at(deadline.into(), serial.write_all(&END))
            .await
            .map_err(|_| late(sent))??;
        let soon = Instant::now() + Duration::from_millis(20);
        while let Ok(Some(())) = tokio::time::timeout_at(soon.into(), finished.recv()).await {
            ended += 1;
        }
    }
    let (mut received, mut gaps, mut end, mut done) = (0, 0, start, Vec::new());
    for r in readers {
        let (got, c) = r.await.map_err(|source| BenchError::Task {
            what: "reader",
            source,
        })?;
        received += got.received.min(bytes);
        gaps += got.gaps;
        end = end.max(got.last.unwrap_or(start));
        done.push(c);
    }
    release(done, limit).await?;
    Ok(Fanout {
        clients,
        bytes,
        received,
        lost_bytes: bytes * clients as u64 - received,
        gaps,
        window: end - start,
    })
}

/// Line `seq` of client `client`: `A0000042:` then dots, `LINE_LEN` bytes with its `\n`.
fn bench_line(client: usize, seq: u64, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(b'A' + client as u8);
    out.extend_from_slice(format!("{seq:07}:").as_bytes());
    out.resize(start + LINE_LEN - 1, b'.');
    out.push(b'\n');
}

/// Which client sent `line` (without its `\n`) and its number, if it is one whole bench line.
fn parse_line(line: &[u8], clients: usize) -> Option<(usize, u64)> {
    if line.len() != LINE_LEN - 1 || line.get(8) != Some(&b':') {
        return None;
    }
    let who = line[0].wrapping_sub(b'A') as usize;
    let seq = std::str::from_utf8(&line[1..8]).ok()?.parse().ok()?;
    (who < clients && line[9..].iter().all(|&b| b == b'.')).then_some((who, seq))
}

/// Each of `clients` clients sends `lines` lines at once; the UART must get every line whole.
pub async fn gather(
    serial: &mut Serial,
    tcp: SocketAddr,
    clients: usize,
    lines: u64,
    limit: Duration,
) -> Result<Gather> {
    let mut cs = connect(tcp, clients).await?;
    sync(serial, &mut cs, limit).await?;
    serial.discard_input()?;
    let start = Instant::now();
    let deadline = start + limit;
    let writers: Vec<_> = cs
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(CLIENT_WRITE + LINE_LEN);
                let mut next = 0;
                while next < lines || !buf.is_empty() {
                    while buf.len() < CLIENT_WRITE && next < lines {
                        bench_line(i, next, &mut buf);
                        next += 1;
                    }
                    let n = buf.len().min(CLIENT_WRITE);
                    match tokio::time::timeout_at(deadline.into(), c.send(&buf[..n])).await {
                        Ok(Ok(())) => {
                            buf.drain(..n);
                        }
                        _ => break,
                    }
                }
                c
            })
        })
        .collect();
    let total = clients as u64 * lines;
    let (mut next, mut intact, mut mixed, mut raw) = (vec![0u64; clients], 0u64, 0u64, 0u64);
    let (mut ends, mut last) = (0u64, start);
    let mut line = Vec::with_capacity(4 * LINE_LEN);
    while ends < total {
        let until = deadline.min(Instant::now() + QUIET);
        let chunk = serial.chunk(until).await?;
        if chunk.is_empty() {
            break;
        }
        last = Instant::now();
        raw += chunk.len() as u64;
        for &b in &chunk {
            if b != b'\n' {
                // A splice can make a line of any length; it is mixed whatever its tail.
                if line.len() < 4 * LINE_LEN {
                    line.push(b);
                }
                continue;
            }
            ends += 1;
            match parse_line(&line, clients) {
                Some((who, seq)) if seq == next[who] => {
                    next[who] += 1;
                    intact += 1;
                }
                _ => mixed += 1,
            }
            line.clear();
        }
    }
    let window = last - start;
    let mut done = Vec::new();
    for w in writers {
        // A writer still blocked here is one whose relay stopped taking its bytes.
        match tokio::time::timeout(Duration::from_secs(1), w).await {
            Ok(Ok(c)) => done.push(c),
            Ok(Err(source)) => {
                return Err(BenchError::Task {
                    what: "writer",
                    source,
                }
                .into());
            }
            Err(_) => {}
        }
    }
    if done.len() == clients {
        release(done, limit).await?;
    }
    Ok(Gather {
        lines_sent: total,
        intact_lines: intact,
        mixed_lines: mixed,
        raw_bytes: raw,
        window,
    })
}

/// `pings` round trips of a short line: client -> UART, then UART -> client.
pub async fn round_trip(
    serial: &mut Serial,
    tcp: SocketAddr,
    pings: u64,
    limit: Duration,
) -> Result<RoundTrip> {
    let mut cs = connect(tcp, 1).await?;
    sync(serial, &mut cs, limit).await?;
    let mut c = cs.pop().expect("one client");
    serial.discard_input()?;
    let mut rtts = Vec::with_capacity(pings as usize);
    let begin = Instant::now();
    let deadline = begin + limit;
    for i in 0..pings {
        let ping = format!("p{:07}", i % 10_000_000);
        let start = Instant::now();
        c.send(format!("{ping}\n").as_bytes())
            .await
            .map_err(|source| BenchError::Io {
                what: "ping",
                source,
            })?;
        loop {
            match serial.line(deadline).await? {
                Some(l) if l == ping.as_bytes() => break,
                Some(_) => continue,
                None => {
                    return Err(failed(
                        "round trip",
                        format!("{ping} never reached the UART"),
                    ));
                }
            }
        }
        let pong = format!("{ping}\r\n");
        serial.write_all(pong.as_bytes()).await?;
        let (got, _) = c
            .read_until(deadline, |b| b.ends_with(pong.as_bytes()))
            .await;
        if !got.ends_with(pong.as_bytes()) {
            return Err(failed("round trip", format!("{ping} never came back")));
        }
        rtts.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let window = begin.elapsed();
    release(vec![c], limit).await?;
    rtts.sort_by(f64::total_cmp);
    let at = |q: f64| rtts[((rtts.len() as f64 * q).ceil() as usize).clamp(1, rtts.len()) - 1];
    Ok(RoundTrip {
        pings,
        p50_us: at(0.50),
        p99_us: at(0.99),
        max_us: at(1.0),
        window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bench_line_parses_back_and_a_splice_does_not() {
        let mut buf = Vec::new();
        bench_line(2, 42, &mut buf);
        assert_eq!(buf.len(), LINE_LEN);
        assert_eq!(parse_line(&buf[..LINE_LEN - 1], 4), Some((2, 42)));
        assert_eq!(parse_line(&buf[..LINE_LEN - 1], 2), None);
        let mut spliced = buf[..20].to_vec();
        spliced.extend_from_slice(&buf[..LINE_LEN - 21]);
        assert_eq!(parse_line(&spliced, 4), None);
    }

    #[test]
    fn the_pattern_slices_at_any_phase() {
        let p = pattern();
        for phase in [0, 1, PERIOD - 1] {
            let s = &p[phase..phase + CHUNK];
            assert!(
                s.iter()
                    .enumerate()
                    .all(|(i, &b)| b as usize == (phase + i) % PERIOD)
            );
        }
    }
}
