//! The hub load generator.
//!
//! ```text
//!  start hub (child process | URL | in-process)
//!    → connect N WebSockets (from 127.0.0.x source addresses past ~25k)
//!    → register phase: C workers, each registering its share of the N connections
//!    → for each action (discover, lookup, heartbeat): closed loop, C requests in flight
//!      for `duration` after `warmup`; worker w rotates over its N/C connections, so every
//!      connection sends only total/N requests per second (the hub's per-connection rate
//!      limit is never the bound with enough agents)
//!    → optional hold: all N stay connected, each heartbeats once per interval, hub RSS
//!      sampled every second
//! ```
//!
//! The generator is a minimal WebSocket client of its own (`rawws.rs`) that checks
//! replies with a substring test (`"status":"ok"`) and parses JSON only for `register` (to learn the id), for
//! errors, and for one `discover` reply in a thousand (to report how many agents came
//! back): it must stay cheaper than the hub it measures, on the same two cores.
//!
//! The modules, in the order a run uses them:
//!
//! * `target` — the hub under test: spawned, external or in-process, ready, stopped
//!   ([`HubCommand`], [`HubTarget`], [`serve_hub`]).
//! * `client` — one raw WebSocket connection to it, a request and its reply.
//! * `measure` — one run: connect, register, the action phases, the hold, the end state.
//! * `load` — the closed-loop workers: registration, then one action per phase.
//! * `hold` — every agent connected and heartbeating on a schedule.
//! * `report` — what a worker tallies and how a run turns into JSON figures.

mod client;
mod hold;
mod load;
mod measure;
mod report;
mod target;

use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};

use crate::stats::summarize;
use crate::sys;
use report::options_json;

pub(crate) use client::open_ws;
pub(crate) use target::{bench_hub_config, HubUnderTest};
pub use target::{serve_hub, HubCommand, HubTarget, ServeHubOptions};

/// A closed-loop phase after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HubAction {
    /// `discover` of one capability, `limit` results (100 by default).
    Discover,
    /// `lookup` of a random registered agent.
    Lookup,
    /// `heartbeat` of the connection's own agent.
    Heartbeat,
}

impl HubAction {
    /// All phases, in the order they run by default.
    pub const ALL: [HubAction; 3] = [HubAction::Discover, HubAction::Lookup, HubAction::Heartbeat];

    /// The action's wire name.
    pub fn name(self) -> &'static str {
        match self {
            HubAction::Discover => "discover",
            HubAction::Lookup => "lookup",
            HubAction::Heartbeat => "heartbeat",
        }
    }
}

impl FromStr for HubAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "discover" => Ok(HubAction::Discover),
            "lookup" => Ok(HubAction::Lookup),
            "heartbeat" => Ok(HubAction::Heartbeat),
            other => Err(format!(
                "unknown hub action `{other}` (discover, lookup, heartbeat)"
            )),
        }
    }
}

/// What [`run_hub`] does.
#[derive(Debug, Clone)]
pub struct HubBenchOptions {
    /// The hub under test.
    pub target: HubTarget,
    /// Registry URL (`postgres://…`; `{unique}` in it becomes a new random name per run,
    /// e.g. a fresh database); `None`: a new SQLite file in a temporary directory.
    pub database: Option<String>,
    /// Agents registered.
    pub agents: usize,
    /// Agents registered on each WebSocket (1: one connection per agent, as agents
    /// usually run; K: ⌈agents / K⌉ connections, to hold more agents than this machine's
    /// file-descriptor limit allows connections — the hub's cap is 16).
    pub agents_per_connection: usize,
    /// Requests in flight (closed loop: one per worker).
    pub concurrency: usize,
    /// WebSocket connects in flight while connecting the agents.
    pub connect_concurrency: usize,
    /// Measured time per action phase.
    pub duration: Duration,
    /// Unmeasured time before each action phase.
    pub warmup: Duration,
    /// Requests each worker sends on its connection before reading the replies (1: one
    /// request at a time per connection; K: a batch of K written at once, as a client
    /// with several requests outstanding does). In flight in total: concurrency × K.
    pub pipeline: usize,
    /// Action phases, in order.
    pub actions: Vec<HubAction>,
    /// `limit` of each discover.
    pub discover_limit: u32,
    /// 1: every agent has the capability `bench` and discover asks for it (every agent
    /// matches; the hub pages 100 out of N). G > 1: agent i also has `g{i % G}` and
    /// discover asks for one such group.
    pub capability_groups: usize,
    /// Keep all agents connected this long, heartbeating, sampling the hub's RSS.
    pub hold: Option<Duration>,
    /// Time between two heartbeats of one agent during the hold.
    pub hold_heartbeat_interval: Duration,
    /// Source addresses 127.0.0.1..=127.0.0.K; `None`: one per 25k connections.
    pub source_ips: Option<usize>,
    /// Runs (each with a fresh hub when spawned).
    pub repeat: usize,
    /// D > 0: every action phase runs twice, without and then with D dashboards open on
    /// the hub (`<action>_with_dashboards`), to measure what they cost.
    pub dashboards: usize,
}

impl Default for HubBenchOptions {
    fn default() -> Self {
        HubBenchOptions {
            target: HubTarget::InProcess,
            database: None,
            agents: 10_000,
            agents_per_connection: 1,
            concurrency: 64,
            connect_concurrency: 128,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            pipeline: 1,
            actions: HubAction::ALL.to_vec(),
            discover_limit: 100,
            capability_groups: 1,
            hold: None,
            hold_heartbeat_interval: Duration::from_secs(30),
            source_ips: None,
            repeat: 1,
            dashboards: 0,
        }
    }
}

impl HubBenchOptions {
    /// WebSockets opened.
    pub fn connections(&self) -> usize {
        self.agents.div_ceil(self.agents_per_connection.max(1))
    }
}

/// Runs the hub benchmark `opts.repeat` times; returns `{bench, options, runs, summary}`.
pub async fn run_hub(opts: HubBenchOptions) -> anyhow::Result<Value> {
    if opts.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if opts.agents_per_connection == 0 {
        bail!("--agents-per-connection must be at least 1");
    }
    let connections = opts.connections();
    // Each agent is a descriptor here and one in the hub; a spawned hub inherits this
    // limit, an in-process one shares it.
    let per_agent = if opts.target == HubTarget::InProcess {
        2
    } else {
        1
    };
    let want = (connections as u64) * per_agent + 2_048;
    let fd = sys::raise_fd_limit(want)?;
    if fd.soft < want {
        bail!(
            "{connections} connections need ~{want} file descriptors per process, but the hard \
             limit is {} and this process may not raise it (no CAP_SYS_RESOURCE); use fewer \
             agents or more --agents-per-connection",
            fd.hard
        );
    }
    let mut runs = Vec::new();
    for run in 0..opts.repeat.max(1) {
        tracing::info!(run, "hub bench run");
        runs.push(run_once(&opts).await?);
    }
    Ok(json!({
        "bench": "hub",
        "options": options_json(&opts),
        "fd_limit": {"soft": fd.soft, "hard": fd.hard},
        "machine": sys::machine_load(),
        "summary": summarize(&runs),
        "runs": runs,
    }))
}

async fn run_once(opts: &HubBenchOptions) -> anyhow::Result<Value> {
    let hub = target::HubUnderTest::start(opts).await?;
    let result = measure::measure(opts, &hub).await;
    hub.stop().await;
    result
}

#[cfg(test)]
mod tests;
