//! The P2P benchmark: two SDK agents in two processes on loopback.
//!
//! ```text
//!  driver process                              peer process (`p2p-peer`)
//!  ┌──────────────────────────┐               ┌──────────────────────────┐
//!  │ in-process hub (SQLite   │◄── register ──│ Agent: reads its inbox;  │
//!  │ in memory)               │               │ answers `bench.req` with │
//!  │ Agent ── send_direct ────┼── TCP ───────►│ respond (a task each);   │
//!  │       ── request ────────┼──────────────►│ everything else is only  │
//!  │       ◄─ response ───────┼───────────────│ acked                    │
//!  │ raw Initiator (fresh) ───┼──────────────►│                          │
//!  └──────────────────────────┘               └──────────────────────────┘
//! ```
//!
//! Scenarios, each a closed loop with a fixed number of operations in flight:
//! * `messages` — `send_direct` of small payloads over the pooled (reused) connection;
//!   one operation = one message acknowledged by the peer.
//! * `bulk` — the same with large payloads; reported as payload MB/s.
//! * `fresh` — connect, handshake, one message, its ack, close: the original
//!   implementation's pattern. The SDK always pools, so the initiator side here is the
//!   protocol core (`m2m_proto::Initiator`) over a bare `TcpStream`; the responder is the
//!   SDK's.
//! * `fresh-v21` — the same with the 2.1 authenticated handshake (the peer's key from the
//!   hub, our own identity proved): what a one-shot `m2m send` costs the two agents.
//! * `request` / `request-pipelined` — `Agent::request` and the peer's `respond`: one
//!   operation = request, its ack, the response on the peer's own connection back, its ack.
//!
//! Payloads are strings (the plaintext is then exactly `size` bytes); request payloads
//! are `{"data": <string>}` objects because `request` adds a `correlationId` field.
//!
//! The modules: `peer` (the second process and how the driver starts it), `scenario` (one
//! scenario's workers and tally), `fresh` (the raw initiator of the `fresh` scenarios);
//! this file holds the options and [`run_p2p`], which starts the hub and the peer, and runs
//! every scenario `repeat` times.

mod fresh;
mod peer;
pub(crate) mod scenario;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use m2m_agent::{Agent, Value};
use m2m_hub::Hub;
use serde_json::{json, Map};

use crate::defaults::PEER_STOP_GRACE;
use crate::stats::{rate, round1, summarize};
use crate::sys;

use peer::PeerProcess;
pub use peer::{run_peer, PeerCommand, PeerOptions};
use scenario::scenario_run;

/// The message type the peer answers.
const REQUEST_TYPE: &str = "bench.req";
/// The message type the peer only acks.
const MESSAGE_TYPE: &str = "bench.msg";

/// The id the raw initiator declares (the peer does not check it).
const FRESH_FROM: &str = "00000000000000000000000000fe5400";

/// One P2P measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum P2pScenario {
    /// Small messages over one reused connection, many in flight.
    Messages,
    /// Large messages over one reused connection.
    Bulk,
    /// A new connection and handshake per message.
    Fresh,
    /// A new connection and 2.1 authenticated handshake per message.
    FreshV21,
    /// Request/response, one at a time.
    Request,
    /// Request/response, many in flight.
    RequestPipelined,
}

impl P2pScenario {
    /// All scenarios, in the order they run by default.
    pub const ALL: [P2pScenario; 6] = [
        P2pScenario::Messages,
        P2pScenario::Bulk,
        P2pScenario::Fresh,
        P2pScenario::FreshV21,
        P2pScenario::Request,
        P2pScenario::RequestPipelined,
    ];

    /// The scenario's name in options and results.
    pub fn name(self) -> &'static str {
        match self {
            P2pScenario::Messages => "messages",
            P2pScenario::Bulk => "bulk",
            P2pScenario::Fresh => "fresh",
            P2pScenario::FreshV21 => "fresh-v21",
            P2pScenario::Request => "request",
            P2pScenario::RequestPipelined => "request-pipelined",
        }
    }
}

impl FromStr for P2pScenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        P2pScenario::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown scenario `{s}` (messages, bulk, fresh, fresh-v21, request, request-pipelined)"
                )
            })
    }
}

/// What [`run_p2p`] does.
#[derive(Debug, Clone)]
pub struct P2pBenchOptions {
    /// How to start the second process.
    pub peer: PeerCommand,
    /// Scenarios, in order.
    pub scenarios: Vec<P2pScenario>,
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured time before each scenario.
    pub warmup: Duration,
    /// Payload bytes of `messages`, `fresh` and the requests.
    pub message_size: usize,
    /// Payload bytes of `bulk`.
    pub bulk_size: usize,
    /// Messages in flight in `messages`.
    pub in_flight: usize,
    /// Messages in flight in `bulk`.
    pub bulk_in_flight: usize,
    /// Connections in flight in `fresh`.
    pub fresh_in_flight: usize,
    /// Requests in flight in `request-pipelined`.
    pub request_in_flight: usize,
    /// Runs of every scenario.
    pub repeat: usize,
}

impl P2pBenchOptions {
    /// Defaults of the issue's targets, with `peer` as the second process.
    pub fn new(peer: PeerCommand) -> Self {
        P2pBenchOptions {
            peer,
            scenarios: P2pScenario::ALL.to_vec(),
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            message_size: 200,
            bulk_size: 64 * 1024,
            in_flight: 256,
            bulk_in_flight: 16,
            fresh_in_flight: 16,
            request_in_flight: 64,
            repeat: 1,
        }
    }
}

/// Runs the P2P benchmark; returns `{bench, options, runs, summary}`.
pub async fn run_p2p(opts: P2pBenchOptions) -> anyhow::Result<Value> {
    let hub = Hub::start(crate::hub::bench_hub_config(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        "sqlite::memory:".into(),
    ))
    .await
    .context("starting the in-process hub")?;
    let outcome = async {
        let peer = PeerProcess::start(&opts.peer, &hub.ws_url()).await?;
        let result = drive(&opts, &hub.ws_url(), &peer).await;
        peer.process.stop(PEER_STOP_GRACE).await;
        result
    }
    .await;
    if let Err(e) = hub.shutdown().await {
        tracing::warn!(error = %e, "hub shutdown");
    }
    let runs = outcome?;
    Ok(json!({
        "bench": "p2p",
        "options": {
            "peer": opts.peer.0.display(),
            "scenarios": opts.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "message_size": opts.message_size,
            "bulk_size": opts.bulk_size,
            "in_flight": opts.in_flight,
            "bulk_in_flight": opts.bulk_in_flight,
            "fresh_in_flight": opts.fresh_in_flight,
            "request_in_flight": opts.request_in_flight,
        },
        "machine": sys::machine_load(),
        "summary": summarize(&runs),
        "runs": runs,
    }))
}

async fn drive(
    opts: &P2pBenchOptions,
    hub_url: &str,
    peer: &PeerProcess,
) -> anyhow::Result<Vec<Value>> {
    let agent = Agent::builder()
        .hub(hub_url)
        .port(0)
        .configure(|c| c.bind_ip = Ipv4Addr::LOCALHOST.into())
        .connect()
        .await
        .context("starting the driver agent")?;
    let mut runs = Vec::new();
    for _ in 0..opts.repeat.max(1) {
        let mut figures = Map::new();
        let mut run = Map::new();
        for scenario in &opts.scenarios {
            let (tally, elapsed, cores) = scenario_run(opts, *scenario, &agent, peer).await?;
            let name = scenario.name();
            let size = match scenario {
                P2pScenario::Bulk => opts.bulk_size,
                _ => opts.message_size,
            };
            let mut j = tally.json(elapsed);
            j["payload_bytes"] = json!(size);
            j["driver_cpu_cores"] = cores.0;
            j["peer_cpu_cores"] = cores.1;
            let key = name.replace('-', "_");
            figures.insert(format!("{key}_per_s"), json!(rate(tally.ok, elapsed)));
            if *scenario == P2pScenario::Bulk {
                let mb = tally.ok as f64 * size as f64 / 1e6 / elapsed.as_secs_f64();
                j["payload_mb_per_s"] = json!(round1(mb));
                figures.insert("bulk_mb_per_s".into(), json!(round1(mb)));
            }
            if tally.latency.count() > 0 {
                figures.insert(
                    format!("{key}_p50_us"),
                    json!(tally.latency.quantile_us(0.5)),
                );
                figures.insert(
                    format!("{key}_p99_us"),
                    json!(tally.latency.quantile_us(0.99)),
                );
            }
            let failed: u64 = tally.errors.values().sum();
            if failed > 0 {
                figures.insert(format!("{key}_errors"), json!(failed));
            }
            run.insert(name.to_owned(), j);
        }
        run.insert("figures".into(), Value::Object(figures));
        runs.push(Value::Object(run));
    }
    let _ = agent.disconnect().await;
    Ok(runs)
}
