//! What the workers tally and how a run becomes JSON: the options echoed back, one
//! phase's counts and latencies, and the figures `summary` compares across runs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{HubBenchOptions, HubTarget};
use crate::stats::{rate, round1, round3, Latency};

pub(super) fn options_json(o: &HubBenchOptions) -> Value {
    json!({
        "target": match &o.target {
            HubTarget::Spawn(c) => json!({"spawn": c.0.display()}),
            HubTarget::External { ws_url, pid } => json!({"url": ws_url, "pid": pid}),
            HubTarget::InProcess => json!("in-process"),
        },
        "database": o.database.as_deref().map(redact).unwrap_or_else(|| "sqlite (temporary file)".into()),
        "agents": o.agents,
        "agents_per_connection": o.agents_per_connection,
        "connections": o.connections(),
        "concurrency": o.concurrency,
        "duration_s": o.duration.as_secs_f64(),
        "warmup_s": o.warmup.as_secs_f64(),
        "pipeline": o.pipeline,
        "actions": o.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "discover_limit": o.discover_limit,
        "capability_groups": o.capability_groups,
        "hold_s": o.hold.map(|h| h.as_secs_f64()),
        "hold_heartbeat_interval_s": o.hold_heartbeat_interval.as_secs_f64(),
        "dashboards": o.dashboards,
    })
}

/// `postgres://user:secret@host/db` → `postgres://user:…@host/db`.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// What a worker measured in one phase.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) latency: Latency,
    pub(super) ok: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) discover_returned: Option<u64>,
    pub(super) discover_reply_bytes: Option<u64>,
}

impl Tally {
    pub(super) fn add(&mut self, other: Tally) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if other.discover_returned.is_some() {
            self.discover_returned = other.discover_returned;
            self.discover_reply_bytes = other.discover_reply_bytes;
        }
    }

    pub(super) fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    pub(super) fn json(&self, elapsed: Duration) -> Value {
        let failed: u64 = self.errors.values().sum();
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round3(elapsed.as_secs_f64()),
            "ops_per_s": rate(self.ok + failed, elapsed),
            "ok_per_s": rate(self.ok, elapsed),
            "latency": self.latency.summary(),
        })
    }
}

pub(super) fn mib(kib: u64) -> f64 {
    round1(kib as f64 / 1024.0)
}

pub(super) fn phase_figures(
    figures: &mut Map<String, Value>,
    name: &str,
    t: &Tally,
    elapsed: Duration,
) {
    let failed: u64 = t.errors.values().sum();
    figures.insert(format!("{name}_ops_per_s"), json!(rate(t.ok, elapsed)));
    if failed > 0 {
        figures.insert(format!("{name}_errors"), json!(failed));
    }
    if t.latency.count() > 0 {
        figures.insert(format!("{name}_p50_us"), json!(t.latency.quantile_us(0.5)));
        figures.insert(format!("{name}_p99_us"), json!(t.latency.quantile_us(0.99)));
    }
}
