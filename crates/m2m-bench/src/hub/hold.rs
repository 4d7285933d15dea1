//! `--hold`: every agent stays connected and heartbeats once per interval, the whole
//! population's beats spread evenly, while the hub's RSS is sampled.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::client::{call, outcome, RegisteredClient};
use super::report::{mib, Tally};
use super::target::HubUnderTest;
use crate::defaults;
use crate::stats::round1;
use crate::sys::{self, ProcSample};

/// All agents stay connected; each heartbeats once per `interval` (spread evenly), while
/// the hub's RSS is sampled every second.
pub(super) async fn hold_phase(
    chunks: Vec<Vec<RegisteredClient>>,
    hub: &HubUnderTest,
    hold: Duration,
    interval: Duration,
) -> anyhow::Result<(Vec<Vec<RegisteredClient>>, Value)> {
    let started = Instant::now();
    let deadline = started + hold;
    let workers = chunks.len().max(1);
    let max_rss = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = {
        let pid = hub.pid;
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(s) = pid.and_then(ProcSample::read) {
                    let mut m = max_rss.lock().await;
                    m.0 = m.0.max(s.rss_kib);
                    m.1 = s.rss_kib;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep((deadline - now).min(defaults::HOLD_RSS_SAMPLE_EVERY)).await;
            }
        })
    };
    let before = (hub.sample(), ProcSample::current());
    let mut tasks = Vec::new();
    for (w, chunk) in chunks.into_iter().enumerate() {
        // Stagger workers so the whole population's heartbeats are evenly spread.
        let offset = interval.mul_f64(w as f64 / workers as f64 / chunk.len().max(1) as f64);
        tasks.push(tokio::spawn(hold_worker(
            chunk,
            started + offset,
            interval,
            deadline,
        )));
    }
    let mut back = Vec::new();
    let mut tally = Tally::default();
    let mut lost = 0;
    let mut beaten = 0;
    for t in tasks {
        let (conns, t, l, b) = t.await?;
        back.push(conns);
        tally.add(t);
        lost += l;
        beaten += b;
    }
    let _ = sampler.await;
    let elapsed = started.elapsed();
    let after = (hub.sample(), ProcSample::current());
    let (max_kib, last_kib) = *max_rss.lock().await;
    let connections: usize = back.iter().map(Vec::len).sum();
    let connected: usize = back.iter().flatten().map(|c| c.ids.len()).sum();
    Ok((
        back,
        json!({
            "seconds": round1(elapsed.as_secs_f64()),
            "agents_connected": connected,
            "agents_heartbeated": beaten,
            "connections_open": connections,
            "connections_lost": lost,
            "heartbeat_interval_s": interval.as_secs_f64(),
            "heartbeats": tally.json(elapsed),
            "hub_rss_mib_max": mib(max_kib),
            "hub_rss_mib_last": mib(last_kib),
            "hub_hwm_mib": after.0.map(|s| mib(s.hwm_kib)),
            "hub_cpu_cores": sys::cores_used(before.0, after.0, elapsed),
            "generator_cpu_cores": sys::cores_used(Some(before.1), Some(after.1), elapsed),
            "generator_rss_mib": mib(after.1.rss_kib),
        }),
    ))
}

async fn hold_worker(
    mut conns: Vec<RegisteredClient>,
    first: Instant,
    interval: Duration,
    deadline: Instant,
) -> (Vec<RegisteredClient>, Tally, u64, usize) {
    let mut tally = Tally::default();
    let mut lost = 0;
    let mut beaten = std::collections::HashSet::new();
    // Every agent heartbeats once per interval: connection by connection, each
    // connection's agents in turn.
    let agents: usize = conns.iter().map(|c| c.ids.len().max(1)).sum();
    if agents == 0 {
        return (conns, tally, 0, 0);
    }
    let step = interval / u32::try_from(agents).unwrap_or(u32::MAX);
    let mut next = first;
    let (mut k, mut j, mut i) = (0usize, 0usize, 0usize);
    while next < deadline && !conns.is_empty() {
        tokio::time::sleep_until(next).await;
        next += step;
        k %= conns.len();
        let at = k;
        i += 1;
        let slot = (conns[at].index, j);
        let text = format!(
            r#"{{"action":"heartbeat","id":"{}","correlationId":"h{i}"}}"#,
            conns[at].ids.get(j).map_or("", String::as_str)
        );
        j += 1;
        if j >= conns[at].ids.len() {
            (j, k) = (0, at + 1);
        }
        let t = Instant::now();
        match call(&mut conns[at].ws, text).await {
            Ok(reply) => {
                tally.latency.record(t.elapsed());
                match outcome(&reply) {
                    Ok(()) => {
                        tally.ok += 1;
                        beaten.insert(slot);
                    }
                    Err(code) => tally.error(code),
                }
            }
            Err(_) => {
                // Its agents are gone with it; the connection swapped into its place
                // starts from its first agent.
                lost += 1;
                conns.swap_remove(at);
                (j, k) = (0, at);
            }
        }
    }
    let beaten = beaten.len();
    (conns, tally, lost, beaten)
}
