//! The closed-loop load: each worker registers its share of the connections, then for
//! one action keeps `pipeline` requests in flight on one connection after another until the
//! phase's deadline, tallying replies after the warm-up.

use std::sync::Arc;

use anyhow::Context;
use serde_json::Value;
use tokio::time::Instant;

use super::client::{call, outcome, recv, RegisteredClient};
use super::report::Tally;
use super::HubAction;
use crate::defaults;
use crate::rawws::RawWs;

/// A tiny xorshift: lookup targets need to be spread, not unpredictable.
struct Spread(u64);

impl Spread {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

pub(super) async fn register_worker(
    conns: Vec<(usize, RawWs)>,
    groups: usize,
    agents: usize,
    per_connection: usize,
) -> anyhow::Result<(Vec<RegisteredClient>, Tally)> {
    let mut tally = Tally::default();
    let mut out = Vec::with_capacity(conns.len());
    for (index, mut ws) in conns {
        let first = index * per_connection;
        let mut ids = Vec::with_capacity(per_connection);
        for agent in first..(first + per_connection).min(agents) {
            let caps = if groups > 1 {
                format!(r#"["bench","g{}"]"#, agent % groups)
            } else {
                r#"["bench"]"#.to_owned()
            };
            let text = format!(
                r#"{{"action":"register","address":"127.0.0.1:{}","capabilities":{caps},"metadata":{{"bench":true,"n":{agent}}},"correlationId":"r{agent}"}}"#,
                10_000 + agent % 50_000
            );
            let t = Instant::now();
            let reply = call(&mut ws, text)
                .await
                .with_context(|| format!("register of agent {agent} on connection {index}"))?;
            tally.latency.record(t.elapsed());
            match outcome(&reply) {
                Ok(()) => {
                    let v: Value = serde_json::from_str(&reply).context("register reply")?;
                    tally.ok += 1;
                    ids.push(v.get("id").and_then(Value::as_str).unwrap_or("").to_owned());
                }
                Err(code) => {
                    tally.error(code);
                    ids.push(String::new());
                }
            }
        }
        out.push(RegisteredClient { ws, index, ids });
    }
    Ok((out, tally))
}

#[derive(Clone, Copy)]
pub(super) struct PhaseJob {
    pub(super) action: HubAction,
    pub(super) warm_end: Instant,
    pub(super) deadline: Instant,
    pub(super) discover_limit: u32,
    pub(super) groups: usize,
    pub(super) pipeline: usize,
    pub(super) seed: u64,
}

fn request_text(
    job: &PhaseJob,
    conn: &RegisteredClient,
    ids: &[String],
    spread: &mut Spread,
    n: u64,
) -> String {
    match job.action {
        HubAction::Lookup => format!(
            r#"{{"action":"lookup","id":"{}","correlationId":"l{n}"}}"#,
            ids[spread.next(ids.len())]
        ),
        HubAction::Heartbeat => format!(
            r#"{{"action":"heartbeat","id":"{}","correlationId":"h{n}"}}"#,
            conn.id()
        ),
        HubAction::Discover => {
            let cap = if job.groups > 1 {
                format!("g{}", spread.next(job.groups))
            } else {
                "bench".to_owned()
            };
            format!(
                r#"{{"action":"discover","id":"{}","capabilities":["{cap}"],"limit":{},"correlationId":"d{n}"}}"#,
                conn.id(),
                job.discover_limit
            )
        }
    }
}

pub(super) async fn phase_worker(
    mut conns: Vec<RegisteredClient>,
    ids: Arc<Vec<String>>,
    job: PhaseJob,
) -> anyhow::Result<(Vec<RegisteredClient>, Tally)> {
    let mut tally = Tally::default();
    let mut spread = Spread(job.seed | 1);
    let mut n: u64 = 0;
    // Measured replies, for sampling discover results from the first one on.
    let mut sampled: u64 = 0;
    let len = conns.len();
    if len == 0 {
        return Ok((conns, tally));
    }
    loop {
        let started = Instant::now();
        if started >= job.deadline {
            break;
        }
        let conn = &mut conns[(n as usize) % len];
        for _ in 0..job.pipeline {
            n += 1;
            let text = request_text(&job, conn, &ids, &mut spread, n);
            conn.ws.feed(&text);
        }
        conn.ws.flush().await?;
        for _ in 0..job.pipeline {
            let reply = recv(&mut conn.ws)
                .await
                .with_context(|| format!("{} on connection {}", job.action.name(), conn.index))?;
            if started < job.warm_end {
                continue;
            }
            tally.latency.record(started.elapsed());
            match outcome(reply) {
                Ok(()) => tally.ok += 1,
                Err(code) => tally.error(code),
            }
            sampled += 1;
            if job.action == HubAction::Discover && sampled % defaults::DISCOVER_SAMPLE_EVERY == 1 {
                tally.discover_reply_bytes = Some(reply.len() as u64);
                if let Ok(v) = serde_json::from_str::<Value>(reply) {
                    tally.discover_returned = v
                        .get("agents")
                        .and_then(Value::as_array)
                        .map(|a| a.len() as u64);
                }
            }
        }
    }
    Ok((conns, tally))
}
