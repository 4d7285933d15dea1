//! The hubs bench (`m2m bench hubs`, issue 20): how fast a change made through one hub is
//! visible through another hub on the same PostgreSQL database, with the change doorbell
//! (LISTEN/NOTIFY) and with polling only, and what each adds to the database's work.
//!
//! ```text
//!  per mode: fresh database ─► hub A, hub B in this process (limits lifted)
//!    K workers, each a WebSocket to A: register ─► wait until B's mirror has it
//!                                      status busy ─► wait until B says busy
//!                                      disconnect ─► wait until B says offline
//!    (each wait timed from A's ok reply: the change is committed then)
//!  pg_stat_database before the hubs start and after they stopped ─► commits, rows read
//!  B's /metrics ─► feed reads, rows, doorbells        each mode's JSON ─► one document
//! ```
//!
//! B is watched in-process through [`m2m_hub::HubState::mirrored_status`] (what its
//! `lookup`/`find` answer from) every millisecond, so the figures are the propagation plus
//! at most about a millisecond of the watch, and the observer puts no load on B's sockets.

mod args;
pub(crate) mod db;

pub use args::HubsArgs;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use m2m_hub::{Hub, HubState, RunningHub};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::defaults::{HUBS_SETTLE, HUBS_VISIBLE_TIMEOUT, HUBS_WATCH_EVERY};
use crate::hub::bench_hub_config;
use crate::stats::Latency;

/// How hub B learns of A's changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubsMode {
    /// The change doorbell (LISTEN/NOTIFY) with the default fallback poll.
    Doorbell,
    /// Polls only (the listener off), every `poll_interval`.
    Polling,
}

impl HubsMode {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            HubsMode::Doorbell => "doorbell",
            HubsMode::Polling => "polling",
        }
    }
}

impl FromStr for HubsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "doorbell" => Ok(HubsMode::Doorbell),
            "polling" => Ok(HubsMode::Polling),
            other => Err(format!("unknown hubs mode {other:?} (doorbell, polling)")),
        }
    }
}

/// What the hubs bench does.
#[derive(Debug, Clone)]
pub struct HubsBenchOptions {
    /// The PostgreSQL server (a URL whose role may create databases).
    pub postgres: String,
    /// Changes per mode.
    pub changes: usize,
    /// Changes in flight at once.
    pub in_flight: usize,
    /// Modes, in order.
    pub modes: Vec<HubsMode>,
    /// The polling interval of [`HubsMode::Polling`].
    pub poll_interval: Duration,
}

/// The three changes of one agent, in order.
const KINDS: [&str; 3] = ["register", "status", "offline"];

/// Runs every mode; one JSON document.
pub async fn run_hubs(opts: HubsBenchOptions) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for mode in &opts.modes {
        runs.push(run_mode(&opts, *mode).await?);
    }
    Ok(json!({
        "bench": "hubs",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "changes": opts.changes,
        "in_flight": opts.in_flight,
        "watch_every_us": HUBS_WATCH_EVERY.as_micros() as u64,
        "runs": runs,
    }))
}

async fn run_mode(opts: &HubsBenchOptions, mode: HubsMode) -> anyhow::Result<Value> {
    let name = format!(
        "m2m_bench_hubs_{}_{:08x}",
        mode.name(),
        rand::random::<u32>()
    );
    let mut admin = db::admin(&opts.postgres).await?;
    db::create(&mut admin, &name).await?;
    let result = measure(opts, mode, &name, &mut admin).await;
    if let Err(e) = db::drop(&mut admin, &name).await {
        tracing::warn!(error = %e, database = %name, "could not drop the bench database");
    }
    result
}

async fn measure(
    opts: &HubsBenchOptions,
    mode: HubsMode,
    name: &str,
    admin: &mut sqlx::PgConnection,
) -> anyhow::Result<Value> {
    let url = db::with_database(&opts.postgres, name)?;
    let mut config = bench_hub_config(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), url);
    config.dashboard = false;
    if mode == HubsMode::Polling {
        config.storage.listen = false;
        config.storage.sync_interval = opts.poll_interval;
    }
    let before = db::counters(admin, name).await?;
    let a = Hub::start(config.clone()).await.context("starting hub A")?;
    let b = Hub::start(config.clone()).await.context("starting hub B")?;
    // Let B's listener connect and the start-up reads finish.
    tokio::time::sleep(HUBS_SETTLE).await;

    let cycles = opts.changes.div_ceil(KINDS.len());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..opts.in_flight.min(cycles.max(1)) {
        let (url, b, next) = (a.ws_url(), b.state().clone(), next.clone());
        workers.spawn(worker(url, b, next, cycles, w));
    }
    let mut by_kind: Vec<Latency> = KINDS.iter().map(|_| Latency::new()).collect();
    while let Some(done) = workers.join_next().await {
        let tally = done.context("a worker panicked")??;
        for (all, one) in by_kind.iter_mut().zip(&tally) {
            all.merge(one);
        }
    }
    let elapsed = started.elapsed();
    let b_metrics = scrape(&b).await.unwrap_or_default();
    a.shutdown().await.context("stopping hub A")?;
    b.shutdown().await.context("stopping hub B")?;
    // The server counts a backend's work when it reports it (at the latest when it exits).
    tokio::time::sleep(HUBS_SETTLE).await;
    let after = db::counters(admin, name).await?;

    let mut all = Latency::new();
    let mut kinds = serde_json::Map::new();
    for (kind, lat) in KINDS.iter().zip(&by_kind) {
        all.merge(lat);
        kinds.insert((*kind).to_owned(), lat.summary());
    }
    let metric = |m: &str| {
        b_metrics
            .lines()
            .find_map(|l| l.strip_prefix(m)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let changes = all.count() as usize;
    Ok(json!({
        "mode": mode.name(),
        "listen": config.storage.listen,
        "sync_interval_ms": config.storage.sync_interval.as_millis() as u64,
        "changes": changes,
        "seconds": crate::stats::round3(elapsed.as_secs_f64()),
        "visible_on_b": all.summary(),
        "by_change": kinds,
        // Both hubs' whole lifetime (start-up and shutdown included), as the server counts.
        "database": after.delta(&before, changes),
        "hub_b": {
            "feed_reads": metric("m2m_hub_feed_reads_total"),
            "feed_rows": metric("m2m_hub_feed_rows_total"),
            "doorbells": metric("m2m_hub_feed_doorbells_total"),
        },
    }))
}

/// One worker: agents registered, changed and disconnected one after another through A,
/// each change timed until B shows it.
async fn worker(
    a_url: String,
    b: Arc<HubState>,
    next: Arc<AtomicUsize>,
    cycles: usize,
    w: usize,
) -> anyhow::Result<Vec<Latency>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(a_url.as_str())
        .await
        .context("connecting to hub A")?;
    let mut tally: Vec<Latency> = KINDS.iter().map(|_| Latency::new()).collect();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= cycles {
            return Ok(tally);
        }
        let cap = format!("hubs-bench-{w}-{n}");
        let reply = call(
            &mut ws,
            json!({"action":"register","address":"127.0.0.1:9","capabilities":[cap]}),
        )
        .await?;
        let id = reply["id"]
            .as_str()
            .with_context(|| format!("register failed: {reply}"))?
            .to_owned();
        tally[0].record(visible(&b, &id, None).await?);
        call(&mut ws, json!({"action":"status","id":id,"status":"busy"})).await?;
        tally[1].record(visible(&b, &id, Some("busy")).await?);
        call(&mut ws, json!({"action":"disconnect","id":id})).await?;
        tally[2].record(visible(&b, &id, Some("offline")).await?);
    }
}

/// Sends a request to A and waits for its ok reply.
async fn call<S>(ws: &mut S, request: Value) -> anyhow::Result<Value>
where
    S: SinkExt<Message, Error = tokio_tungstenite::tungstenite::Error>
        + StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    ws.send(Message::Text(request.to_string().into())).await?;
    loop {
        let msg = ws.next().await.context("hub A closed the WebSocket")??;
        let Message::Text(text) = msg else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        if v.get("event").is_some() {
            continue; // the 2.1 challenge
        }
        if v["status"] != "ok" {
            bail!("hub A refused {request}: {v}");
        }
        return Ok(v);
    }
}

/// How long until B's mirror holds `id` (with `status`, when given), from now.
async fn visible(b: &HubState, id: &str, status: Option<&str>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let seen = || match (b.mirrored_status(id), status) {
        (Some(_), None) => true,
        (Some(s), Some(want)) => s == want,
        (None, _) => false,
    };
    tokio::time::timeout(HUBS_VISIBLE_TIMEOUT, async {
        while !seen() {
            tokio::time::sleep(HUBS_WATCH_EVERY).await;
        }
    })
    .await
    .with_context(|| {
        format!("a change of {id} was not visible on hub B within {HUBS_VISIBLE_TIMEOUT:?}")
    })?;
    Ok(start.elapsed())
}

/// B's `/metrics` text.
async fn scrape(hub: &RunningHub) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(hub.local_addr()).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_replaces_the_one_in_the_url() {
        assert_eq!(
            db::with_database("postgres://u:p@h:5432/postgres", "x").unwrap(),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            db::with_database("postgres://h/db?sslmode=disable", "x").unwrap(),
            "postgres://h/x?sslmode=disable"
        );
        assert_eq!(
            db::with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
        assert!("doorbell,polling"
            .split(',')
            .all(|m| m.parse::<HubsMode>().is_ok()));
        assert!("push".parse::<HubsMode>().is_err());
    }
}
