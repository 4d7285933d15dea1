//! Prometheus metrics, kept in atomics and written out by hand in the text exposition
//! format at `GET /metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use m2m_proto::hub::AgentCounts;

/// Actions as metric labels; the last one counts requests that named no valid action.
pub const ACTIONS: [&str; 14] = [
    "register",
    "discover",
    "find",
    "lookup",
    "heartbeat",
    "status",
    "disconnect",
    "stats",
    "challenge",
    "relay",
    "mail",
    "mailbox",
    "mail_ack",
    "invalid",
];

/// Label index of an action name.
pub fn action_index(name: Option<&str>) -> usize {
    name.and_then(|n| ACTIONS[..ACTIONS.len() - 1].iter().position(|a| *a == n))
        .unwrap_or(ACTIONS.len() - 1)
}

/// A limit that refused something: a connection, a frame, a reply, a registration, or a
/// client too slow at some stage. Each has a counter, `m2m_hub_refused_total{limit=…}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The connection cap (`max_http_connections`, or the descriptor limit minus reserve).
    HttpConnections,
    /// `max_connections_per_ip`.
    ConnectionsPerIp,
    /// The memory budget could not cover a new connection.
    MemoryConnection,
    /// The memory budget could not cover an unfinished WebSocket message (closed 1013).
    MemoryFrame,
    /// The memory budget could not cover a reply (sent `overloaded` instead).
    MemoryReply,
    /// `registrations_per_hour` of one IP.
    RegistrationsPerIp,
    /// No first byte within `first_byte_timeout`.
    FirstByteTimeout,
    /// No complete request head within `header_timeout`.
    HeaderTimeout,
    /// A request head over `max_header_bytes`.
    HeaderTooLarge,
    /// The upgraded stream was not ready within `upgrade_timeout`.
    UpgradeTimeout,
    /// No first WebSocket message within `first_frame_timeout`.
    FirstFrameTimeout,
    /// A WebSocket closed for idling (`idle_timeout`, `registered_idle_timeout`).
    IdleTimeout,
    /// A write that did not finish within `write_timeout`.
    WriteTimeout,
    /// A text frame that is not UTF-8 (closed 1007).
    InvalidUtf8,
    /// A relay OPEN to an agent id not attached here (CLOSE `unreachable`).
    RelayUnreachable,
    /// A relay stream beyond `maxStreams` (CLOSE `limit`).
    RelayStreams,
    /// Relay bytes the relay budget could not hold (CLOSE `budget`).
    RelayBudget,
    /// A relay frame against the rules: DATA beyond credit, credit beyond the window, a
    /// reused stream id (CLOSE `protocol`), or a malformed frame (closed 1002).
    RelayProtocol,
    /// A relay reader made to wait by the bytes/s limit (`relay_rate`).
    RelayRate,
    /// A relay stream closed for idling (CLOSE `idle`).
    RelayIdle,
    /// A reachability probe not made (per-IP rate or probes in flight).
    RelayProbes,
}

impl Refusal {
    const ALL: [Refusal; 21] = [
        Refusal::HttpConnections,
        Refusal::ConnectionsPerIp,
        Refusal::MemoryConnection,
        Refusal::MemoryFrame,
        Refusal::MemoryReply,
        Refusal::RegistrationsPerIp,
        Refusal::FirstByteTimeout,
        Refusal::HeaderTimeout,
        Refusal::HeaderTooLarge,
        Refusal::UpgradeTimeout,
        Refusal::FirstFrameTimeout,
        Refusal::IdleTimeout,
        Refusal::WriteTimeout,
        Refusal::InvalidUtf8,
        Refusal::RelayUnreachable,
        Refusal::RelayStreams,
        Refusal::RelayBudget,
        Refusal::RelayProtocol,
        Refusal::RelayRate,
        Refusal::RelayIdle,
        Refusal::RelayProbes,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::HttpConnections => "http_connections",
            Refusal::ConnectionsPerIp => "connections_per_ip",
            Refusal::MemoryConnection => "memory_connection",
            Refusal::MemoryFrame => "memory_frame",
            Refusal::MemoryReply => "memory_reply",
            Refusal::RegistrationsPerIp => "registrations_per_ip",
            Refusal::FirstByteTimeout => "first_byte_timeout",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::HeaderTooLarge => "header_too_large",
            Refusal::UpgradeTimeout => "upgrade_timeout",
            Refusal::FirstFrameTimeout => "first_frame_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::WriteTimeout => "write_timeout",
            Refusal::InvalidUtf8 => "invalid_utf8",
            Refusal::RelayUnreachable => "relay_unreachable",
            Refusal::RelayStreams => "relay_streams",
            Refusal::RelayBudget => "relay_budget",
            Refusal::RelayProtocol => "relay_protocol",
            Refusal::RelayRate => "relay_rate",
            Refusal::RelayIdle => "relay_idle",
            Refusal::RelayProbes => "relay_probes",
        }
    }
}

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// All counters of one hub.
#[derive(Debug, Default)]
pub struct Metrics {
    ok: [AtomicU64; ACTIONS.len()],
    errors: [AtomicU64; ACTIONS.len()],
    latency: [Histogram; ACTIONS.len()],
    /// WebSockets refused because the connection cap was reached.
    pub rejected_connections: AtomicU64,
    /// Requests refused by the per-connection rate limit.
    pub rate_limited: AtomicU64,
    /// Messages refused for size.
    pub oversized: AtomicU64,
    /// Database operations that failed.
    pub db_errors: AtomicU64,
    /// Heartbeat timestamps written in batches.
    pub liveness_flushed: AtomicU64,
    /// Rows read from the change feed of other hubs.
    pub feed_rows: AtomicU64,
    /// Reads of the change feed (doorbell, poll or catch-up).
    pub feed_reads: AtomicU64,
    /// Change doorbells heard (PostgreSQL notifications).
    pub feed_doorbells: AtomicU64,
    /// Times the doorbell listener (re)connected.
    pub feed_listens: AtomicU64,
    /// Dead hubs whose agents this hub marked offline.
    pub hubs_expired: AtomicU64,
    /// Live hub instances on the registry at the last look (this one included).
    pub instances: AtomicU64,
    /// Refusals by limit, in the order of `Refusal::ALL`.
    refusals: [AtomicU64; Refusal::ALL.len()],
}

/// Gauges read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Open WebSockets.
    pub open_connections: u64,
    /// WebSockets holding a registered agent.
    pub registered_connections: u64,
    /// WebSockets accepted since start.
    pub accepted_connections: u64,
    /// Agents by status.
    pub agents: AgentCounts,
    /// Seconds since start.
    pub uptime: u64,
    /// TCP connections open (HTTP and WebSocket).
    pub http_connections: u64,
    /// Bytes charged to the memory budget now.
    pub memory_used: u64,
    /// The memory budget.
    pub memory_budget: u64,
    /// Relayed DATA bytes since start.
    pub relay_bytes: u64,
    /// Relayed streams opened since start.
    pub relay_streams_total: u64,
    /// Relayed streams open now.
    pub relay_streams: u64,
    /// Bytes charged to the relay budget now.
    pub relay_used: u64,
}

impl Metrics {
    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|r| *r == why) {
            self.refusals[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one request and its duration.
    pub fn request(&self, action: usize, ok: bool, took: Duration) {
        let counter = if ok { &self.ok } else { &self.errors };
        counter[action].fetch_add(1, Ordering::Relaxed);
        self.latency[action].observe(took);
    }

    /// WebSocket requests answered since start, ok or not (the dashboard's requests/s).
    pub fn requests_total(&self) -> u64 {
        let sum = |c: &[AtomicU64]| c.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();
        sum(&self.ok) + sum(&self.errors)
    }

    /// The text exposition.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP m2m_hub_connections_open WebSocket connections open now."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_connections_open gauge");
        let _ = writeln!(out, "m2m_hub_connections_open {}", g.open_connections);
        let _ = writeln!(
            out,
            "# HELP m2m_hub_connections_registered WebSocket connections holding a registered agent."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_connections_registered gauge");
        let _ = writeln!(
            out,
            "m2m_hub_connections_registered {}",
            g.registered_connections
        );
        let _ = writeln!(
            out,
            "# HELP m2m_hub_connections_total WebSocket connections accepted."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_connections_total counter");
        let _ = writeln!(out, "m2m_hub_connections_total {}", g.accepted_connections);
        let _ = writeln!(
            out,
            "# HELP m2m_hub_connections_rejected_total WebSocket upgrades refused at the connection cap."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_connections_rejected_total counter");
        let _ = writeln!(
            out,
            "m2m_hub_connections_rejected_total {}",
            load(&self.rejected_connections)
        );
        let _ = writeln!(
            out,
            "# HELP m2m_hub_agents Agents in the registry by status."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_agents gauge");
        let other = g.agents.total - g.agents.online - g.agents.idle - g.agents.offline;
        for (label, n) in [
            ("online", g.agents.online),
            ("idle", g.agents.idle),
            ("offline", g.agents.offline),
            ("other", other),
        ] {
            let _ = writeln!(out, "m2m_hub_agents{{status=\"{label}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_requests_total WebSocket requests by action and result."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_requests_total counter");
        for (i, action) in ACTIONS.iter().enumerate() {
            let _ = writeln!(
                out,
                "m2m_hub_requests_total{{action=\"{action}\",result=\"ok\"}} {}",
                load(&self.ok[i])
            );
            let _ = writeln!(
                out,
                "m2m_hub_requests_total{{action=\"{action}\",result=\"error\"}} {}",
                load(&self.errors[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_request_duration_seconds Time to answer a WebSocket request."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_request_duration_seconds histogram");
        for (i, action) in ACTIONS.iter().enumerate() {
            let h = &self.latency[i];
            let mut cumulative = 0;
            for (b, bound) in BUCKETS.iter().enumerate() {
                cumulative += load(&h.buckets[b]);
                let _ = writeln!(
                    out,
                    "m2m_hub_request_duration_seconds_bucket{{action=\"{action}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let count = load(&h.count);
            let _ = writeln!(
                out,
                "m2m_hub_request_duration_seconds_bucket{{action=\"{action}\",le=\"+Inf\"}} {count}"
            );
            let sum = load(&h.sum_ns) as f64 / 1e9;
            let _ = writeln!(
                out,
                "m2m_hub_request_duration_seconds_sum{{action=\"{action}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "m2m_hub_request_duration_seconds_count{{action=\"{action}\"}} {count}"
            );
        }
        for (name, help, value) in [
            (
                "m2m_hub_rate_limited_total",
                "Requests refused by the per-connection rate limit.",
                load(&self.rate_limited),
            ),
            (
                "m2m_hub_oversized_messages_total",
                "WebSocket messages refused for size.",
                load(&self.oversized),
            ),
            (
                "m2m_hub_database_errors_total",
                "Database operations that failed.",
                load(&self.db_errors),
            ),
            (
                "m2m_hub_liveness_flushed_total",
                "Heartbeat timestamps written to the database in batches.",
                load(&self.liveness_flushed),
            ),
            (
                "m2m_hub_feed_rows_total",
                "Rows read from the registry's change feed.",
                load(&self.feed_rows),
            ),
            (
                "m2m_hub_feed_reads_total",
                "Reads of the registry's change feed (doorbell, poll or catch-up).",
                load(&self.feed_reads),
            ),
            (
                "m2m_hub_feed_doorbells_total",
                "Change doorbells heard (PostgreSQL LISTEN/NOTIFY).",
                load(&self.feed_doorbells),
            ),
            (
                "m2m_hub_feed_listens_total",
                "Times the change doorbell listener connected or reconnected.",
                load(&self.feed_listens),
            ),
            (
                "m2m_hub_hubs_expired_total",
                "Hubs taken as dead (liveness expired) whose agents this hub marked offline.",
                load(&self.hubs_expired),
            ),
            (
                "m2m_hub_relay_bytes_total",
                "Bytes of stream data relayed.",
                g.relay_bytes,
            ),
            (
                "m2m_hub_relay_streams_total",
                "Streams opened through the relay.",
                g.relay_streams_total,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_refused_total Connections, frames, replies and registrations refused, by the limit that refused them."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_refused_total counter");
        for (i, why) in Refusal::ALL.iter().enumerate() {
            let _ = writeln!(
                out,
                "m2m_hub_refused_total{{limit=\"{}\"}} {}",
                why.label(),
                load(&self.refusals[i])
            );
        }
        for (name, help, value) in [
            (
                "m2m_hub_http_connections_open",
                "TCP connections open (HTTP and WebSocket).",
                g.http_connections,
            ),
            (
                "m2m_hub_memory_used_bytes",
                "Bytes of connection buffers charged to the memory budget.",
                g.memory_used,
            ),
            (
                "m2m_hub_memory_budget_bytes",
                "The memory budget for connection buffers.",
                g.memory_budget,
            ),
            (
                "m2m_hub_instances",
                "Live hub instances on the registry at the last look, this one included.",
                load(&self.instances),
            ),
            (
                "m2m_hub_relay_streams",
                "Streams open through the relay now.",
                g.relay_streams,
            ),
            (
                "m2m_hub_relay_used_bytes",
                "Relayed bytes queued towards destinations, charged to the relay budget.",
                g.relay_used,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_uptime_seconds Seconds since the hub started."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_uptime_seconds gauge");
        let _ = writeln!(out, "m2m_hub_uptime_seconds {}", g.uptime);
        out
    }
}
