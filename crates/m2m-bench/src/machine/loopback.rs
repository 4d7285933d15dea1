//! TCP over 127.0.0.1: bulk throughput, ping-pong, pipelined records, connection rate,
//! and a ping-pong with a second process ([`run_echo_peer`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::defaults::{
    ECHO_ACCEPT_RETRY, ECHO_CONNECT_TIMEOUT, ECHO_STOP_GRACE, PING_PONG_BYTES as PING,
    THROUGHPUT_CHUNK, THROUGHPUT_WARMUP,
};
use crate::stats::{rate, round1, Latency};
use crate::sys::{ChildProcess, CommandLine};

/// What [`run_loopback`] does.
#[derive(Debug, Clone)]
pub struct LoopbackOptions {
    /// Time spent on each test.
    pub duration: Duration,
    /// The second process of the cross-process ping-pong, run with `--connect ADDR`
    /// appended; it must call [`run_echo_peer`]. `None` skips that test.
    pub echo: Option<CommandLine>,
}

impl Default for LoopbackOptions {
    fn default() -> Self {
        LoopbackOptions {
            duration: Duration::from_secs(3),
            echo: None,
        }
    }
}

/// Loopback TCP limits: `{stream_mb_per_s, ping_pong_200b, pipelined_200b_per_s,
/// connections_per_s}`.
pub async fn run_loopback(opts: LoopbackOptions) -> anyhow::Result<Value> {
    let d = opts.duration;
    let stream = stream_throughput(d).await.context("stream test")?;
    let (rtt_rate, rtt) = ping_pong(d).await.context("ping-pong test")?;
    let pipelined = pipelined_records(d, 64).await.context("pipelined test")?;
    let conns = connection_rate(d, 16).await.context("connection test")?;
    let mut result = json!({
        "bench": "loopback",
        "note": "TCP over 127.0.0.1 between two tasks of one process, except \
                 process_ping_pong_200b: this process and a second one, both blocking",
        "stream_64k_writes_mb_per_s": stream,
        "ping_pong_200b": { "round_trips_per_s": rtt_rate, "latency": rtt.summary() },
        "pipelined_200b_64_in_flight_per_s": pipelined,
        "connect_exchange_close_per_s": conns,
    });
    if let Some(echo) = &opts.echo {
        let (rate, lat) = process_ping_pong(d, echo)
            .await
            .context("cross-process ping-pong test")?;
        result["process_ping_pong_200b"] =
            json!({ "round_trips_per_s": rate, "latency": lat.summary() });
    }
    Ok(result)
}

/// A 200-byte ping-pong with [`run_echo_peer`] in a second process, both sides blocking
/// in `read`: what one request/response between two processes costs at the least.
async fn process_ping_pong(d: Duration, echo: &CommandLine) -> anyhow::Result<(f64, Latency)> {
    use std::io::{Read, Write};

    let listener = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    let addr = listener.local_addr()?;
    let mut line = echo.clone();
    line.args.extend(["--connect".to_owned(), addr.to_string()]);
    let mut child = ChildProcess::spawn("loopback echo", &line, false)?;
    // Accept without blocking forever if the child never connects.
    listener.set_nonblocking(true)?;
    let accept_deadline = Instant::now() + ECHO_CONNECT_TIMEOUT;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                child.check_running()?;
                if Instant::now() > accept_deadline {
                    anyhow::bail!("the echo process did not connect");
                }
                tokio::time::sleep(ECHO_ACCEPT_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<(f64, Latency)> {
        let mut s = stream;
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        let msg = [7u8; PING];
        let mut back = [0u8; PING];
        let mut lat = Latency::new();
        let started = Instant::now();
        while started.elapsed() < d {
            let t = Instant::now();
            s.write_all(&msg)?;
            s.read_exact(&mut back)?;
            lat.record(t.elapsed());
        }
        Ok((rate(lat.count(), started.elapsed()), lat))
    })
    .await?;
    child.stop(ECHO_STOP_GRACE).await;
    measured
}

/// The second process of the cross-process ping-pong: connects to `addr` and sends back
/// every 200-byte record until the bench closes the connection.
pub fn run_echo_peer(addr: SocketAddr) -> anyhow::Result<()> {
    use std::io::{ErrorKind, Read, Write};

    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let mut buf = [0u8; PING];
    loop {
        match s.read_exact(&mut buf) {
            Ok(()) => s.write_all(&buf)?,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

async fn listener() -> anyhow::Result<(TcpListener, SocketAddr)> {
    let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let a = l.local_addr()?;
    Ok((l, a))
}

async fn stream_throughput(d: Duration) -> anyhow::Result<f64> {
    let (l, addr) = listener().await?;
    let received = Arc::new(AtomicU64::new(0));
    let server = {
        let received = received.clone();
        tokio::spawn(async move {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        })
    };
    let mut c = TcpStream::connect(addr).await?;
    let chunk = vec![0u8; THROUGHPUT_CHUNK];
    let started = Instant::now();
    let mut at_start = 0;
    let warm = THROUGHPUT_WARMUP.min(d / 4);
    let mut warmed = false;
    let deadline = started + warm + d;
    let mut measure_start = started;
    while Instant::now() < deadline {
        c.write_all(&chunk).await?;
        if !warmed && started.elapsed() >= warm {
            warmed = true;
            at_start = received.load(Ordering::Relaxed);
            measure_start = Instant::now();
        }
    }
    let bytes = received.load(Ordering::Relaxed) - at_start;
    let elapsed = measure_start.elapsed();
    drop(c);
    let _ = server.await;
    Ok(round1(bytes as f64 / 1e6 / elapsed.as_secs_f64()))
}

async fn ping_pong(d: Duration) -> anyhow::Result<(f64, Latency)> {
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 200];
        while s.read_exact(&mut buf).await.is_ok() {
            if s.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let msg = [7u8; 200];
    let mut back = [0u8; 200];
    let mut lat = Latency::new();
    let started = Instant::now();
    while started.elapsed() < d {
        let t = Instant::now();
        c.write_all(&msg).await?;
        c.read_exact(&mut back).await?;
        lat.record(t.elapsed());
    }
    let n = lat.count();
    drop(c);
    let _ = server.await;
    Ok((rate(n, started.elapsed()), lat))
}

/// 200-byte records, at most `window` unacknowledged, each acked by 8 bytes: the
/// transport's ceiling for small acknowledged messages with no crypto and no JSON.
async fn pipelined_records(d: Duration, window: usize) -> anyhow::Result<f64> {
    const RECORD: usize = 200;
    const ACK: usize = 8;
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move {
        let Ok((s, _)) = l.accept().await else { return };
        let _ = s.set_nodelay(true);
        let (mut r, mut w) = s.into_split();
        let mut buf = vec![0u8; 64 * 1024];
        let mut pending = 0usize;
        let acks = vec![b'k'; 64 * 1024 / RECORD * ACK + ACK];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
            pending += n;
            let records = pending / RECORD;
            pending %= RECORD;
            if records > 0 && w.write_all(&acks[..records * ACK]).await.is_err() {
                break;
            }
        }
    });
    let c = TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let (mut r, mut w) = c.into_split();
    let credits = Arc::new(Semaphore::new(window));
    let acked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (credits, acked) = (credits.clone(), acked.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut pending = 0usize;
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                pending += n;
                let k = pending / ACK;
                pending %= ACK;
                acked.fetch_add(k as u64, Ordering::Relaxed);
                credits.add_permits(k);
            }
        })
    };
    let records = vec![b'r'; RECORD * window];
    let started = Instant::now();
    while started.elapsed() < d {
        let Ok(first) = credits.acquire().await else {
            break;
        };
        first.forget();
        let mut k = 1;
        while let Ok(p) = credits.try_acquire() {
            p.forget();
            k += 1;
        }
        w.write_all(&records[..k * RECORD]).await?;
    }
    let n = acked.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    drop(w);
    let _ = reader.await;
    let _ = server.await;
    Ok(rate(n, elapsed))
}

/// Connect, one byte each way, close — `workers` at a time.
async fn connection_rate(d: Duration, workers: usize) -> anyhow::Result<f64> {
    let (l, addr) = listener().await?;
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() {
                    let _ = s.write_all(&b).await;
                }
            });
        }
    });
    let deadline = Instant::now() + d;
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                let mut b = [1u8; 1];
                if s.write_all(&b).await.is_ok() && s.read_exact(&mut b).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    server.abort();
    Ok(rate(done.load(Ordering::Relaxed), elapsed))
}
