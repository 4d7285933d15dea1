//! The web dashboard: `GET /dashboard`, a page served by the hub itself that shows its
//! agents live.
//!
//! ```text
//!  Directory ─┐                      ┌─► /dashboard/api/agents   (query.rs: search, filter, paging)
//!  Metrics  ──┼─► sampler (1 s, 200 ms) ┼─► History ring          (history.rs: 15 min chart)
//!  counters ─┘          │            └─► /dashboard/api/history
//!                       └─► Push ──► /dashboard/events (SSE: `stats` each second,
//!                                                     `changed` when the directory moved)
//! ```
//!
//! The page (assets/, embedded in the binary, no build step) loads its table with the query
//! API, then listens to the event stream: a `stats` event redraws the header and chart, a
//! `changed` event makes it query its current page again. So the hub pushes only small,
//! fixed-size events, whatever the number of agents, and a page asks only for the rows it
//! shows. Everything is read-only and answered from memory. The bounds are in
//! `crate::defaults::dashboard`; `HubConfig::dashboard` = false mounts none of it.

pub mod history;
use crate::defaults::dashboard as limits;
pub mod push;
pub mod query;
mod routes;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::state::HubState;
use history::{History, Point};
use push::Push;
use query::Views;

pub use routes::router;

/// The dashboard's part of the hub's state.
#[derive(Debug)]
pub struct Dashboard {
    /// Push streams.
    pub push: Arc<Push>,
    history: Mutex<History>,
    views: Views,
    /// The relay's byte counter at the last reading, and the rate it gave.
    relayed: Mutex<Relayed>,
}

/// Relayed bytes/s between two readings.
#[derive(Debug, Default)]
struct Relayed {
    last: Option<(i64, u64)>,
    per_sec: f64,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            push: Arc::new(Push::default()),
            history: Mutex::new(History::new(limits::HISTORY_POINTS)),
            views: Views::default(),
            relayed: Mutex::new(Relayed::default()),
        }
    }
}

/// The `stats` event and `/dashboard/api/stats`: the header's figures. New figures (relayed
/// bytes/s, mailbox depth) are new optional fields; the page shows a figure only when its
/// field is present.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// When, ms since the epoch.
    pub t: i64,
    /// Agents `online`.
    pub online: u64,
    /// Agents `idle`.
    pub idle: u64,
    /// Agents `offline` (still in the registry).
    pub offline: u64,
    /// Agents with a status they chose (`busy`, …).
    pub other: u64,
    /// All agents in the registry.
    pub total: u64,
    /// Open WebSockets.
    pub connections: u64,
    /// WebSocket requests per second over the last interval.
    pub rps: f64,
    /// Directory generation (moves on register, status, metadata, close).
    pub generation: u64,
    /// Dashboard streams open.
    pub dashboards: usize,
    /// Relayed stream bytes per second over the last interval (absent with the relay off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_bytes_per_sec: Option<f64>,
}

impl Dashboard {
    /// Takes one reading: a history point and the figures.
    fn sample(&self, state: &HubState) -> Figures {
        let now = state.now_ms();
        let online = state.directory.counts().online;
        let point: Point = self
            .history
            .lock()
            .record(now, online, state.metrics.requests_total());
        let bytes = state.relay.bytes_total.load(Ordering::Relaxed);
        let mut relayed = self.relayed.lock();
        relayed.per_sec = match relayed.last {
            Some((t, n)) if now > t => bytes.saturating_sub(n) as f64 * 1000.0 / (now - t) as f64,
            _ => 0.0,
        };
        relayed.last = Some((now, bytes));
        drop(relayed);
        self.figures_at(state, now, point.rps)
    }

    /// The figures now, with the requests/s of the last reading.
    fn figures(&self, state: &HubState) -> Figures {
        let rps = self.history.lock().latest().map_or(0.0, |p| p.rps);
        self.figures_at(state, state.now_ms(), rps)
    }

    fn figures_at(&self, state: &HubState, t: i64, rps: f64) -> Figures {
        let counts = state.directory.counts();
        Figures {
            t,
            online: counts.online,
            idle: counts.idle,
            offline: counts.offline,
            other: counts.total - counts.online - counts.idle - counts.offline,
            total: counts.total,
            connections: state.open.load(Ordering::Relaxed),
            rps,
            generation: state.directory.generation(),
            dashboards: self.push.open(),
            relay_bytes_per_sec: state
                .config
                .relay
                .enabled
                .then(|| self.relayed.lock().per_sec),
        }
    }

    /// Appends the dashboard's counters to the `/metrics` text.
    pub fn render_metrics(&self, out: &mut String) {
        let c = &self.push.counters;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "m2m_hub_dashboard_streams_open",
                "gauge",
                "Dashboard event streams open now.",
                self.push.open() as u64,
            ),
            (
                "m2m_hub_dashboard_queued_bytes",
                "gauge",
                "Bytes queued to dashboard streams now (bounded by the dashboard byte budget).",
                self.push.queued_bytes() as u64,
            ),
            (
                "m2m_hub_dashboard_streams_total",
                "counter",
                "Dashboard event streams opened.",
                load(&c.opened),
            ),
            (
                "m2m_hub_dashboard_streams_refused_total",
                "counter",
                "Dashboard event streams refused at the stream cap.",
                load(&c.refused),
            ),
            (
                "m2m_hub_dashboard_streams_dropped_total",
                "counter",
                "Dashboard event streams dropped because their client did not keep up.",
                load(&c.dropped_slow),
            ),
            (
                "m2m_hub_dashboard_events_total",
                "counter",
                "Events queued to dashboard streams.",
                load(&c.events),
            ),
            (
                "m2m_hub_dashboard_event_bytes_total",
                "counter",
                "Bytes queued to dashboard streams.",
                load(&c.bytes),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

/// Starts the sampler: it records history and feeds the push streams until the hub shuts
/// down. The handle aborts the task when dropped. `None` when the dashboard is off.
pub(crate) fn spawn_sampler(state: Arc<HubState>) -> Option<AbortOnDrop> {
    if !state.config.dashboard {
        return None;
    }
    Some(AbortOnDrop(tokio::spawn(run_sampler(state))))
}

/// A task aborted when its owner goes.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run_sampler(state: Arc<HubState>) {
    let dash = &state.dashboard;
    let mut stats = tokio::time::interval(limits::STATS_INTERVAL);
    let mut changes = tokio::time::interval(limits::CHANGE_POLL);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    changes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced = state.directory.generation();
    loop {
        tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return,
            _ = stats.tick() => {
                let figures = dash.sample(&state);
                let text = serde_json::to_string(&figures).unwrap_or_default();
                if dash.push.open() > 0 {
                    dash.push.broadcast("stats", &text);
                }
            }
            _ = changes.tick() => {
                let generation = state.directory.generation();
                if generation != announced && dash.push.open() > 0 {
                    // Build the view first, so that the queries this event causes see the
                    // change (and one task pays for the rebuild, not every page).
                    dash.views.refresh(&state.directory, true);
                    dash.push.broadcast("changed", &format!("{{\"generation\":{generation}}}"));
                }
                announced = generation;
            }
        }
    }
}
