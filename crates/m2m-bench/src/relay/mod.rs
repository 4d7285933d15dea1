//! The relay bench (`m2m bench relay`, docs/RELAY.md), raw level: the hub's relay capacity
//! measured with two raw WebSocket clients that speak the relay frames themselves (no SDK,
//! no P2P session inside), so the figures are the hub's and not the agents'.
//!
//! ```text
//!  start hub (`m2m hub`, relay rate limit lifted) ─► X, Y: challenge, signed 2.1 register
//!    (relay-only, port 0), `relay` attach ─► scenarios in order (scenario.rs):
//!    frames (200 B) · bulk (64 KiB) · request (one at a time) · streams (N open, RSS)
//!  each run's figures ─► stats::summarize ─► one JSON document
//! ```
//!
//! `args` is the command line, `client` one attached client and its frame I/O, `scenario`
//! the four measurements.

mod args;
pub(crate) mod client;
mod scenario;
mod sdk;

pub use args::RelayArgs;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::hub::{HubTarget, HubUnderTest};
use crate::stats::summarize;
use crate::sys;
use client::RelayClient;

/// One measurement of the relay bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayScenario {
    /// Small DATA frames pushed on one stream within the credit: frames/s.
    Frames,
    /// 64 KiB DATA frames on one stream: MB/s.
    Bulk,
    /// A record and its echo, one at a time: requests/s and latency.
    Request,
    /// Many streams open at once, one echoed record each: the hub's RSS per stream.
    Streams,
}

impl RelayScenario {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            RelayScenario::Frames => "frames",
            RelayScenario::Bulk => "bulk",
            RelayScenario::Request => "request",
            RelayScenario::Streams => "streams",
        }
    }
}

impl FromStr for RelayScenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "frames" => Ok(RelayScenario::Frames),
            "bulk" => Ok(RelayScenario::Bulk),
            "request" => Ok(RelayScenario::Request),
            "streams" => Ok(RelayScenario::Streams),
            other => Err(format!(
                "unknown relay scenario {other:?} (frames, bulk, request, streams)"
            )),
        }
    }
}

/// Which relay client the bench drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayLevel {
    /// Raw WebSocket clients speaking the relay frames: the hub's capacity.
    Raw,
    /// Relay-only SDK agents, and direct SDK agents in the same run for the ratio.
    Sdk,
}

impl RelayLevel {
    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            RelayLevel::Raw => "raw",
            RelayLevel::Sdk => "sdk",
        }
    }
}

impl FromStr for RelayLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "raw" => Ok(RelayLevel::Raw),
            "sdk" => Ok(RelayLevel::Sdk),
            other => Err(format!("unknown relay level {other:?} (raw, sdk)")),
        }
    }
}

/// What `run_relay` measures and against which hub.
#[derive(Debug, Clone)]
pub struct RelayBenchOptions {
    /// The hub (spawned per run by default).
    pub target: HubTarget,
    /// Registry URL; `None`: a new SQLite file per run.
    pub database: Option<String>,
    /// Scenarios, in order.
    pub scenarios: Vec<RelayScenario>,
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured time before each scenario.
    pub warmup: Duration,
    /// DATA bytes of `frames` and of a `request` / `streams` record.
    pub size: usize,
    /// DATA bytes of `bulk` (at most 65,536, one frame).
    pub bulk_size: usize,
    /// Streams of `streams`.
    pub streams: usize,
    /// Runs (a fresh hub each).
    pub repeat: usize,
    /// Raw clients or SDK agents.
    pub level: RelayLevel,
    /// SDK level: messages in flight in `frames`.
    pub in_flight: usize,
    /// SDK level: messages in flight in `bulk`.
    pub bulk_in_flight: usize,
}

/// Runs the relay bench `repeat` times; returns `{bench, level, options, runs, summary}`.
pub async fn run_relay(opts: RelayBenchOptions) -> anyhow::Result<Value> {
    let max = m2m_proto::relay::MAX_DATA;
    if opts.size == 0 || opts.size > max || opts.bulk_size == 0 || opts.bulk_size > max {
        anyhow::bail!("--size and --bulk-size must be 1 ..= {max} (one DATA frame)");
    }
    let mut runs = Vec::new();
    for run in 0..opts.repeat.max(1) {
        tracing::info!(run, "relay bench run");
        let hub = HubUnderTest::launch(&opts.target, opts.database.as_deref()).await?;
        let result = match opts.level {
            RelayLevel::Raw => run_once(&opts, &hub).await,
            RelayLevel::Sdk => sdk::run_once(&opts, &hub).await,
        };
        hub.stop().await;
        runs.push(result?);
    }
    Ok(json!({
        "bench": "relay",
        "level": opts.level.name(),
        "options": {
            "scenarios": opts.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "size": opts.size,
            "bulk_size": opts.bulk_size,
            "streams": opts.streams,
            "repeat": opts.repeat,
            "in_flight": opts.in_flight,
            "bulk_in_flight": opts.bulk_in_flight,
        },
        "machine": sys::machine_load(),
        "summary": summarize(&runs),
        "runs": runs,
    }))
}

async fn run_once(opts: &RelayBenchOptions, hub: &HubUnderTest) -> anyhow::Result<Value> {
    let mut x = RelayClient::connect(&hub.ws_url, hub.addr)
        .await
        .context("client X")?;
    let mut y = RelayClient::connect(&hub.ws_url, hub.addr)
        .await
        .context("client Y")?;
    let mut figures = Map::new();
    let mut scenarios = Map::new();
    let before = hub.sample();
    for &scenario in &opts.scenarios {
        let (d, w) = (opts.duration, opts.warmup);
        let (nx, ny, v) = match scenario {
            RelayScenario::Frames => scenario::push(x, y, opts.size, w, d).await,
            RelayScenario::Bulk => scenario::push(x, y, opts.bulk_size, w, d).await,
            RelayScenario::Request => scenario::request(x, y, opts.size, w, d).await,
            RelayScenario::Streams => {
                let rss = || hub.sample().map(|s| s.rss_kib);
                scenario::streams(x, y, opts.streams, opts.size, rss).await
            }
        }
        .with_context(|| format!("relay scenario {}", scenario.name()))?;
        (x, y) = (nx, ny);
        flatten(scenario, &v, &mut figures);
        scenarios.insert(scenario.name().to_owned(), v);
    }
    let after = hub.sample();
    Ok(json!({
        "figures": figures,
        "scenarios": scenarios,
        "hub_cores": sys::cores_used(before, after, opts.duration * opts.scenarios.len() as u32),
        "hub_rss_kib": after.map(|s| s.rss_kib),
        "hub_peak_rss_kib": after.map(|s| s.hwm_kib),
    }))
}

/// The headline numbers of a scenario as flat `figures` (what `summarize` and compare.py
/// read).
fn flatten(scenario: RelayScenario, v: &Value, out: &mut Map<String, Value>) {
    let mut put = |name: &str, value: &Value| {
        if value.is_number() {
            out.insert(name.to_owned(), value.clone());
        }
    };
    match scenario {
        RelayScenario::Frames => put("frames_per_s", &v["frames_per_s"]),
        RelayScenario::Bulk => put("bulk_mb_per_s", &v["mb_per_s"]),
        RelayScenario::Request => {
            put("request_per_s", &v["requests_per_s"]);
            put("request_p50_us", &v["latency_us"]["p50_us"]);
            put("request_p99_us", &v["latency_us"]["p99_us"]);
        }
        RelayScenario::Streams => {
            put("streams_open_ms", &v["open_and_echo_ms"]);
            put("hub_rss_per_stream_bytes", &v["hub_rss_per_stream_bytes"]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_parse_and_name_themselves() {
        for s in [
            RelayScenario::Frames,
            RelayScenario::Bulk,
            RelayScenario::Request,
            RelayScenario::Streams,
        ] {
            assert_eq!(s.name().parse::<RelayScenario>(), Ok(s));
        }
        assert!("bogus".parse::<RelayScenario>().is_err());
    }

    /// Every scenario against a real hub (in this process): the clients register, attach,
    /// keep within their credit (the hub would close the stream with `protocol`) and all
    /// 64 streams get their echo.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_scenario_runs_against_a_relaying_hub() {
        let doc = run_relay(RelayBenchOptions {
            target: HubTarget::InProcess,
            database: None,
            scenarios: vec![
                RelayScenario::Frames,
                RelayScenario::Bulk,
                RelayScenario::Request,
                RelayScenario::Streams,
            ],
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            size: 200,
            bulk_size: 65_536,
            streams: 64,
            repeat: 1,
            level: RelayLevel::Raw,
            in_flight: 256,
            bulk_in_flight: 16,
        })
        .await
        .unwrap();
        let f = &doc["runs"][0]["figures"];
        for name in [
            "frames_per_s",
            "bulk_mb_per_s",
            "request_per_s",
            "request_p99_us",
        ] {
            assert!(f[name].as_f64().unwrap() > 0.0, "{name}: {doc}");
        }
        let s = &doc["runs"][0]["scenarios"];
        assert_eq!(s["bulk"]["frame_bytes"], 65_536);
        assert!(s["bulk"]["frames"].as_u64().unwrap() > 0, "{doc}");
        assert_eq!(s["streams"]["streams"], 64);
        assert!(s["streams"]["hub_rss_with_streams_kib"].as_u64().unwrap() > 0);
    }

    /// The SDK level: relay-only agents through a real hub and direct agents in the same
    /// run, every operation on the route it names (a wrong route is counted as an error).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sdk_level_measures_both_routes() {
        let doc = run_relay(RelayBenchOptions {
            target: HubTarget::InProcess,
            database: None,
            scenarios: vec![
                RelayScenario::Frames,
                RelayScenario::Bulk,
                RelayScenario::Request,
                RelayScenario::Streams,
            ],
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            size: 200,
            bulk_size: 65_536,
            streams: 4,
            repeat: 1,
            level: RelayLevel::Sdk,
            in_flight: 32,
            bulk_in_flight: 4,
        })
        .await
        .unwrap();
        assert_eq!(doc["level"], "sdk");
        let f = doc["runs"][0]["figures"].as_object().unwrap();
        for route in ["relay", "direct"] {
            for name in [
                "msgs_per_s",
                "bulk_mb_per_s",
                "request_per_s",
                "request_p99_us",
            ] {
                let key = format!("sdk_{route}_{name}");
                assert!(f[&key].as_f64().unwrap() > 0.0, "{key}: {doc}");
            }
        }
        assert!(f["sdk_frames_relay_over_direct"].as_f64().unwrap() > 0.0);
        let streams = &doc["runs"][0]["relay"]["streams"];
        assert_eq!(streams["streams"], 4, "{doc}");
        assert!(streams["hub_rss_with_streams_kib"].as_u64().unwrap() > 0);
        assert!(
            !f.keys().any(|k| k.ends_with("_errors")),
            "an operation failed or took the other route: {doc}"
        );
    }

    #[test]
    fn figures_are_flat_numbers() {
        let mut out = Map::new();
        let request =
            json!({"requests_per_s": 9000.0, "latency_us": {"p50_us": 80.0, "p99_us": 200.0}});
        flatten(RelayScenario::Request, &request, &mut out);
        let streams = json!({"open_and_echo_ms": 12.0, "hub_rss_per_stream_bytes": null});
        flatten(RelayScenario::Streams, &streams, &mut out);
        assert_eq!(
            Value::Object(out),
            json!({"request_per_s": 9000.0, "request_p50_us": 80.0, "request_p99_us": 200.0,
                   "streams_open_ms": 12.0})
        );
    }
}
