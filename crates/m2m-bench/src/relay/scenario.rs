//! The raw relay scenarios, each between two attached clients X and Y, each end in a task
//! of its own (the generator's two ends may use both cores the hub leaves):
//!
//! * `frames` / `bulk` — X pushes DATA of one size on one stream within its credit; Y
//!   counts what arrives in the measured window and returns CREDIT at half the window.
//! * `request` — X sends a 200-byte record, Y echoes it, one at a time (latency).
//! * `streams` — X opens N streams at once, one echoed record each; the hub's RSS before
//!   and with them open gives its memory per stream.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use m2m_proto::relay::{RawAgentId, RecvWindow, SendCredit};
use serde_json::{json, Value};

use super::client::{Got, RelayClient};
use crate::stats::{rate, round1, Latency};

/// How often (in frames) the receiver of a push reads the clock.
const CLOCK_EVERY: u64 = 16;

/// One stream's accounting at one end.
struct Stream {
    send: SendCredit,
    recv: RecvWindow,
    /// Echo bytes owed while the send credit was short.
    owed: usize,
}

impl Stream {
    fn new(window: u32) -> Stream {
        Stream {
            send: SendCredit::new(window),
            recv: RecvWindow::new(window),
            owed: 0,
        }
    }
}

/// `frames` or `bulk`: DATA of `size` bytes pushed from X to Y; Y's figures.
pub(super) async fn push(
    mut x: RelayClient,
    mut y: RelayClient,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(RelayClient, RelayClient, Value)> {
    let sx = x.open(y.raw_id)?;
    x.flush().await?;
    let sy = y.accept(x.raw_id).await?;
    let sender = tokio::spawn(async move {
        let sent = pusher(&mut x, sx, size).await;
        (x, sent)
    });
    let counted = drain(&mut y, sy, warmup, duration).await;
    let (x, sent) = sender.await.context("the pushing task failed")?;
    sent?;
    let (frames, bytes, took) = counted?;
    let figures = json!({
        "frame_bytes": size,
        "frames_per_s": round1(rate(frames, took)),
        "mb_per_s": round1(bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6),
        "frames": frames,
    });
    Ok((x, y, figures))
}

/// Sends DATA within the credit until Y closes the stream.
async fn pusher(c: &mut RelayClient, stream: u32, size: usize) -> anyhow::Result<u64> {
    let payload = vec![0xA5u8; size];
    let mut credit = SendCredit::new(c.window);
    let mut sent = 0u64;
    loop {
        while credit.available() as usize >= size {
            credit.consume(size)?;
            c.data(stream, &payload);
            sent += 1;
            if c.should_flush() {
                c.flush().await?;
            }
        }
        c.flush().await?;
        match c.next().await? {
            Got::Credit { stream: s, bytes } if s == stream => credit.grant(bytes)?,
            Got::Close { stream: s, .. } if s == stream => return Ok(sent),
            _ => {}
        }
    }
}

/// Counts DATA on `stream` during `[warmup, warmup + duration)`, returning credit, then
/// closes the stream: `(frames, bytes, measured time)`.
async fn drain(
    c: &mut RelayClient,
    stream: u32,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Duration)> {
    let mut window = RecvWindow::new(c.window);
    let t0 = Instant::now();
    let (warm, end) = (t0 + warmup, t0 + warmup + duration);
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut mark: Option<(Instant, u64, u64)> = None;
    loop {
        match c.next().await? {
            Got::Data { stream: s, len } if s == stream => {
                window.on_data(len)?;
                frames += 1;
                bytes += len as u64;
                if let Some(n) = window.on_consumed(len) {
                    c.credit(stream, n);
                    c.flush().await?;
                }
                if frames % CLOCK_EVERY == 0 {
                    let now = Instant::now();
                    if mark.is_none() && now >= warm {
                        mark = Some((now, frames, bytes));
                    }
                    if now >= end {
                        if let Some((at, f0, b0)) = mark {
                            c.close(stream);
                            c.flush().await?;
                            return Ok((frames - f0, bytes - b0, now - at));
                        }
                    }
                }
            }
            Got::Close { stream: s, reason } if s == stream => {
                bail!("the hub closed the measured stream ({})", reason.as_str())
            }
            _ => {}
        }
    }
}

/// `request`: one `size`-byte record at a time from X, echoed by Y; X's latencies.
pub(super) async fn request(
    mut x: RelayClient,
    mut y: RelayClient,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(RelayClient, RelayClient, Value)> {
    let sx = x.open(y.raw_id)?;
    x.flush().await?;
    let echo = tokio::spawn(async move {
        let r = echo_server(&mut y, 1).await;
        (y, r)
    });
    let mut s = Stream::new(x.window);
    let record = vec![0x5Au8; size];
    let mut latency = Latency::new();
    let t0 = Instant::now();
    let (warm, end) = (t0 + warmup, t0 + warmup + duration);
    let mut measured_from = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= warm && measured_from.is_none() {
            measured_from = Some(now);
        }
        while (s.send.available() as usize) < size {
            if let Got::Credit { stream, bytes } = x.next().await? {
                if stream == sx {
                    s.send.grant(bytes)?;
                }
            }
        }
        let asked = Instant::now();
        s.send.consume(size)?;
        x.data(sx, &record);
        x.flush().await?;
        let mut got = 0;
        while got < size {
            match x.next().await? {
                Got::Data { stream, len } if stream == sx => {
                    s.recv.on_data(len)?;
                    got += len;
                    if let Some(n) = s.recv.on_consumed(len) {
                        x.credit(sx, n);
                    }
                }
                Got::Credit { stream, bytes } if stream == sx => s.send.grant(bytes)?,
                Got::Close { stream, reason } if stream == sx => {
                    bail!("the hub closed the request stream ({})", reason.as_str())
                }
                _ => {}
            }
        }
        if measured_from.is_some() {
            latency.record(asked.elapsed());
        }
    }
    let took = measured_from.map_or(Duration::ZERO, |t| t.elapsed());
    x.close(sx);
    x.flush().await?;
    let (y, served) = echo.await.context("the echo task failed")?;
    served?;
    let figures = json!({
        "record_bytes": size,
        "requests_per_s": round1(rate(latency.count(), took)),
        "latency_us": latency.summary(),
    });
    Ok((x, y, figures))
}

/// Echoes every record on every stream opened towards `c`, within the credit, until
/// `closes` streams were closed by their opener.
async fn echo_server(c: &mut RelayClient, closes: usize) -> anyhow::Result<()> {
    let mut streams: HashMap<u32, Stream> = HashMap::new();
    let mut closed = 0;
    let zeros = vec![0u8; m2m_proto::relay::MAX_DATA];
    while closed < closes {
        match c.next().await? {
            Got::Open { stream, .. } => {
                streams.insert(stream, Stream::new(c.window));
            }
            Got::Data { stream, len } => {
                let Some(s) = streams.get_mut(&stream) else {
                    continue;
                };
                s.recv.on_data(len)?;
                if let Some(n) = s.recv.on_consumed(len) {
                    c.credit(stream, n);
                }
                s.owed += len;
                send_owed(c, stream, s, &zeros);
            }
            Got::Credit { stream, bytes } => {
                if let Some(s) = streams.get_mut(&stream) {
                    s.send.grant(bytes)?;
                    send_owed(c, stream, s, &zeros);
                }
            }
            Got::Close { stream, .. } => {
                if streams.remove(&stream).is_some() {
                    closed += 1;
                }
            }
        }
        c.flush().await?;
    }
    Ok(())
}

fn send_owed(c: &mut RelayClient, stream: u32, s: &mut Stream, zeros: &[u8]) {
    let n = s.owed.min(s.send.available() as usize).min(zeros.len());
    if n > 0 && s.send.consume(n).is_ok() {
        c.data(stream, &zeros[..n]);
        s.owed -= n;
    }
}

/// `streams`: X opens `count` streams to Y at once, one `size`-byte record echoed on each;
/// the hub's RSS (`sample`, KiB) before and with them all open.
pub(super) async fn streams(
    mut x: RelayClient,
    mut y: RelayClient,
    count: usize,
    size: usize,
    sample: impl Fn() -> Option<u64>,
) -> anyhow::Result<(RelayClient, RelayClient, Value)> {
    if count > x.max_streams as usize {
        bail!(
            "--streams {count} is more than the hub allows one WebSocket ({})",
            x.max_streams
        );
    }
    let peer: RawAgentId = y.raw_id;
    let echo = tokio::spawn(async move {
        let r = echo_server(&mut y, count).await;
        (y, r)
    });
    let before = sample();
    let started = Instant::now();
    let record = vec![0x3Cu8; size];
    let mut pending: HashMap<u32, usize> = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = x.open(peer)?;
        x.data(id, &record);
        pending.insert(id, 0);
        if x.should_flush() {
            x.flush().await?;
        }
    }
    x.flush().await?;
    let mut answered = 0;
    while answered < count {
        match x.next().await? {
            Got::Data { stream, len } => {
                if let Some(got) = pending.get_mut(&stream) {
                    *got += len;
                    if *got >= size {
                        answered += 1;
                    }
                }
            }
            Got::Close { stream, reason } if pending.contains_key(&stream) => {
                bail!(
                    "the hub closed stream {stream} of {count} ({})",
                    reason.as_str()
                )
            }
            _ => {}
        }
    }
    let open_took = started.elapsed();
    let with = sample();
    for id in pending.keys() {
        x.close(*id);
    }
    x.flush().await?;
    let (y, served) = echo.await.context("the echo task failed")?;
    served?;
    let per_stream = match (before, with) {
        // Signed: the allocator may give back more than the streams take (shown as is).
        (Some(b), Some(w)) => json!(round1((w as f64 - b as f64) * 1024.0 / count as f64)),
        _ => Value::Null,
    };
    let figures = json!({
        "streams": count,
        "open_and_echo_ms": round1(open_took.as_secs_f64() * 1e3),
        "hub_rss_before_kib": before,
        "hub_rss_with_streams_kib": with,
        "hub_rss_per_stream_bytes": per_stream,
    });
    Ok((x, y, figures))
}
