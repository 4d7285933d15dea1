//! Hub configuration: what the CLI's flags set, with the defaults of PROTOCOL.md and
//! `m2m_proto::limits`. Every bound a client can push against is a field of [`HubLimits`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use m2m_proto::limits;

use crate::defaults;

/// Everything [`crate::Hub::start`] needs.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Where to listen. Default `0.0.0.0:3000`.
    pub bind: SocketAddr,
    /// Registry location: `sqlite://PATH` (created if missing), `sqlite::memory:`, or
    /// `postgres://…`. Default `sqlite://m2m-hub.db` in the working directory.
    pub database: String,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you control).
    pub trust_proxy: bool,
    /// Serve `https`/`wss` directly with this certificate.
    pub tls: Option<TlsConfig>,
    /// The public WebSocket URL shown by `/info` and the 404 page (e.g.
    /// `wss://hub.example.org/ws`). Default: the address the client connected to (never
    /// the request's `Host`, which the client chooses).
    pub public_url: Option<String>,
    /// Bounds on what clients may send.
    pub limits: HubLimits,
    /// Status lifecycle timing.
    pub sweep: SweepConfig,
    /// Write-behind and multi-hub synchronisation timing.
    pub storage: StorageTuning,
    /// Time source. Tests use [`Clock::manual`] to move time without sleeping.
    pub clock: Clock,
    /// Serve the web dashboard at `/dashboard` (its event stream and query API included).
    /// Default on.
    pub dashboard: bool,
    /// The relay (docs/RELAY.md): on by default.
    pub relay: RelayConfig,
    /// The mailbox (docs/MAILBOX.md): on by default.
    pub mailbox: MailboxConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, defaults::PORT)),
            database: "sqlite://m2m-hub.db".to_owned(),
            trust_proxy: false,
            tls: None,
            public_url: None,
            limits: HubLimits::default(),
            sweep: SweepConfig::default(),
            storage: StorageTuning::default(),
            clock: Clock::System,
            dashboard: true,
            relay: RelayConfig::default(),
            mailbox: MailboxConfig::default(),
        }
    }
}

impl HubConfig {
    /// SQLite in memory, bound to `127.0.0.1:0`: a throw-away hub for tests.
    pub fn in_memory() -> Self {
        HubConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            database: "sqlite::memory:".to_owned(),
            ..HubConfig::default()
        }
    }
}

/// PEM certificate chain and private key for `wss://` without a proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert_path: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
}

/// Bounds on client input and on the resources clients may hold. Defaults come from
/// `m2m_proto::limits` and [`crate::defaults`] (where each value is explained).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubLimits {
    /// Hub-wide budget, in bytes, for connection buffers: read buffers, unfinished
    /// requests and frames, queued replies ([`defaults::MEMORY_BUDGET`]). When spent, new
    /// connections are closed at once, a frame that needs more closes its WebSocket (1013)
    /// and a reply that needs more is replaced by an `overloaded` error.
    pub memory_budget: usize,
    /// Largest HTTP request head ([`defaults::MAX_HEADER_BYTES`]); larger get HTTP 431.
    pub max_header_bytes: usize,
    /// Simultaneous TCP connections, HTTP and WebSocket ([`defaults::MAX_HTTP_CONNECTIONS`]).
    pub max_http_connections: usize,
    /// Descriptors kept free below `RLIMIT_NOFILE` ([`defaults::DESCRIPTOR_RESERVE`]).
    pub descriptor_reserve: usize,
    /// Simultaneous connections per source IP, an IPv6 /64 counting as one
    /// ([`defaults::MAX_CONNECTIONS_PER_IP`]); 0: no limit. With `trust_proxy` the IP is the
    /// forwarded one and the bound applies to WebSockets.
    pub max_connections_per_ip: usize,
    /// Registrations per source IP per hour ([`defaults::REGISTRATIONS_PER_HOUR`]); 0: no limit.
    pub registrations_per_hour: u32,
    /// Registrations per source IP at once before the hourly rate applies.
    pub registration_burst: u32,
    /// A plain TCP connection must send its first byte this fast.
    pub first_byte_timeout: Duration,
    /// An HTTP request head must be complete this fast (also the keep-alive idle time).
    pub header_timeout: Duration,
    /// The upgraded stream must be ready this fast after the 101.
    pub upgrade_timeout: Duration,
    /// A WebSocket must send its first message this fast after the challenge.
    pub first_frame_timeout: Duration,
    /// A WebSocket holding a registered agent that sends nothing this long is closed.
    pub registered_idle_timeout: Duration,
    /// Largest WebSocket message answered normally; larger ones get `message_too_large`.
    pub max_message_bytes: usize,
    /// Messages above this are not even buffered: the socket is closed (1009). Keeps a
    /// hostile sender from making the hub hold more than this per connection.
    pub hard_max_message_bytes: usize,
    /// Most capabilities per agent.
    pub max_capabilities: usize,
    /// Longest capability string.
    pub max_capability_len: usize,
    /// Largest metadata object, serialized.
    pub max_metadata_bytes: usize,
    /// Longest `address` at register.
    pub max_address_len: usize,
    /// Longest status string.
    pub max_status_len: usize,
    /// Simultaneous WebSocket connections; more get HTTP 503.
    pub max_connections: usize,
    /// Agents one WebSocket may register (original clients register one).
    pub max_agents_per_connection: usize,
    /// Sustained requests per second per connection (token bucket refill); 0: no limit.
    pub requests_per_second: u32,
    /// Burst of requests per connection (token bucket size).
    pub request_burst: u32,
    /// A connection that has registered nothing and sent nothing this long is closed.
    pub idle_timeout: Duration,
    /// A reply that cannot be written this fast closes the connection (slow reader).
    pub write_timeout: Duration,
    /// TLS handshakes must finish this fast.
    pub tls_handshake_timeout: Duration,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            memory_budget: defaults::MEMORY_BUDGET,
            max_header_bytes: defaults::MAX_HEADER_BYTES,
            max_http_connections: defaults::MAX_HTTP_CONNECTIONS,
            descriptor_reserve: defaults::DESCRIPTOR_RESERVE,
            max_connections_per_ip: defaults::MAX_CONNECTIONS_PER_IP,
            registrations_per_hour: defaults::REGISTRATIONS_PER_HOUR,
            registration_burst: defaults::REGISTRATION_BURST,
            first_byte_timeout: defaults::FIRST_BYTE_TIMEOUT,
            header_timeout: defaults::HEADER_TIMEOUT,
            upgrade_timeout: defaults::UPGRADE_TIMEOUT,
            first_frame_timeout: defaults::FIRST_FRAME_TIMEOUT,
            registered_idle_timeout: defaults::REGISTERED_IDLE_TIMEOUT,
            max_message_bytes: limits::MAX_HUB_MESSAGE,
            hard_max_message_bytes: defaults::HARD_MAX_MESSAGE_FACTOR * limits::MAX_HUB_MESSAGE,
            max_capabilities: limits::MAX_CAPABILITIES,
            max_capability_len: limits::MAX_CAPABILITY_LEN,
            max_metadata_bytes: limits::MAX_METADATA_BYTES,
            max_address_len: limits::MAX_ADDRESS_LEN,
            max_status_len: limits::MAX_STATUS_LEN,
            max_connections: defaults::MAX_WEBSOCKETS,
            max_agents_per_connection: defaults::MAX_AGENTS_PER_CONNECTION,
            requests_per_second: defaults::REQUESTS_PER_SECOND,
            request_burst: defaults::REQUEST_BURST,
            idle_timeout: defaults::IDLE_TIMEOUT,
            write_timeout: defaults::WRITE_TIMEOUT,
            tls_handshake_timeout: defaults::TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// The relay's switches and bounds (docs/RELAY.md section 5; defaults in
/// [`crate::defaults`] and `m2m_proto::defaults`, with their reasons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Serve the `relay` action (`--no-relay` turns it off: `relay_unavailable`).
    pub enabled: bool,
    /// Initial flow-control window of every stream, each direction, in bytes.
    pub window: u32,
    /// Streams one WebSocket may have open at once; beyond, CLOSE `limit`.
    pub max_streams: u32,
    /// Bytes held for all streams at once (queued towards destinations, not yet written);
    /// when spent, the stream that needed more is closed (`budget`).
    pub budget: usize,
    /// Relayed bytes per second one WebSocket may send; 0: no limit. Reading waits.
    pub rate: u64,
    /// Bucket size of `rate`, in bytes.
    pub burst: u64,
    /// A stream with no DATA either way this long is closed (`idle`).
    pub stream_idle: Duration,
    /// How often idle streams are looked for.
    pub idle_sweep: Duration,
    /// The reachability probe's whole deadline (connect, ping, pong).
    pub probe_timeout: Duration,
    /// Probes per source IP per second (sustained); 0: no limit.
    pub probes_per_ip: u32,
    /// Probes one source IP may cause at once before the rate applies.
    pub probe_burst: u32,
    /// Probes in flight at once, hub-wide.
    pub probes_in_flight: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            enabled: true,
            window: m2m_proto::defaults::RELAY_WINDOW,
            max_streams: m2m_proto::defaults::RELAY_MAX_STREAMS,
            budget: defaults::RELAY_BUDGET,
            rate: defaults::RELAY_RATE,
            burst: defaults::RELAY_BURST,
            stream_idle: defaults::RELAY_STREAM_IDLE,
            idle_sweep: defaults::RELAY_IDLE_SWEEP,
            probe_timeout: m2m_proto::defaults::RELAY_PROBE_TIMEOUT,
            probes_per_ip: defaults::RELAY_PROBES_PER_IP,
            probe_burst: defaults::RELAY_PROBE_BURST,
            probes_in_flight: defaults::RELAY_PROBES_IN_FLIGHT,
        }
    }
}

/// The mailbox (docs/MAILBOX.md section 3): stored mail for agents that are away. Every
/// default is in [`crate::defaults::mail`] with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxConfig {
    /// Serve `mail`, `mailbox`, `mail_ack` (`--no-mailbox`: `mailbox_unavailable`).
    pub enabled: bool,
    /// Longest a message is kept (`--mail-ttl`); larger `ttl`s are clamped to it.
    pub max_ttl: Duration,
    /// Largest sealed message, decoded (`--mail-max-bytes`): `message_too_large` beyond.
    pub max_sealed: usize,
    /// Sealed bytes stored in total (`--mail-budget`).
    pub budget: i64,
    /// Messages stored per recipient.
    pub recipient_messages: i64,
    /// Sealed bytes stored per recipient.
    pub recipient_bytes: i64,
    /// Messages stored per sender, all recipients.
    pub sender_messages: i64,
    /// Sealed bytes stored per sender, all recipients.
    pub sender_bytes: i64,
    /// Pushed and not acked at once, per subscription.
    pub in_flight: usize,
    /// Pushed again when not acked within this.
    pub ack_timeout: Duration,
    /// The fallback poll for mail stored through other hubs.
    pub sync_interval: Duration,
    /// Subscriptions held at once on this hub.
    pub max_subscriptions: usize,
}

impl Default for MailboxConfig {
    fn default() -> Self {
        use crate::defaults::mail as d;
        MailboxConfig {
            enabled: true,
            max_ttl: m2m_proto::mailbox::MAX_TTL,
            max_sealed: m2m_proto::mailbox::MAX_SEALED,
            budget: d::MAIL_BUDGET,
            recipient_messages: d::MAILBOX_MESSAGES,
            recipient_bytes: d::MAILBOX_BYTES,
            sender_messages: d::SENDER_MESSAGES,
            sender_bytes: d::SENDER_BYTES,
            in_flight: d::MAIL_IN_FLIGHT,
            ack_timeout: d::ACK_TIMEOUT,
            sync_interval: d::MAIL_SYNC_INTERVAL,
            max_subscriptions: d::MAX_SUBSCRIPTIONS,
        }
    }
}

/// Status lifecycle (PROTOCOL.md A2): sweep period and the unseen times that move an agent
/// to `idle` and `offline`, and how long `offline` rows are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepConfig {
    /// How often the sweep runs.
    pub interval: Duration,
    /// Unseen this long: `online` (or an agent-chosen status) → `idle`.
    pub idle_after: Duration,
    /// Unseen this long: `idle` → `offline`.
    pub offline_after: Duration,
    /// `offline` rows unseen this long are deleted.
    pub retention: Duration,
    /// `offline` 2.0 rows (no identity) unseen this long are deleted
    /// ([`defaults::ANONYMOUS_RETENTION`]); the shorter of this and `retention` applies.
    pub anonymous_retention: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            interval: limits::SWEEP_INTERVAL,
            idle_after: limits::IDLE_AFTER,
            offline_after: limits::OFFLINE_AFTER,
            retention: limits::OFFLINE_RETENTION,
            anonymous_retention: defaults::ANONYMOUS_RETENTION,
        }
    }
}

/// How liveness reaches the database and how other hubs' changes reach this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageTuning {
    /// Heartbeats are kept in memory and written in one batch this often.
    pub flush_interval: Duration,
    /// PostgreSQL: how often the change feed is read without a doorbell (the fallback
    /// poll behind the listener; with `listen` off, the polling interval).
    pub sync_interval: Duration,
    /// PostgreSQL: hear the change doorbell (`LISTEN`) and read the feed at once when it
    /// rings. Off: poll every `sync_interval` only (every hub still rings the doorbell).
    pub listen: bool,
    /// How often this hub refreshes its instance row and looks for dead hubs.
    pub alive_interval: Duration,
    /// A hub whose instance row was not refreshed for this long is taken as dead: its
    /// agents go offline.
    pub hub_expiry: Duration,
    /// Database connections.
    pub pool_size: u32,
    /// A request waiting longer than this for a database connection fails `unavailable`.
    pub acquire_timeout: Duration,
    /// Most writes committed in one transaction.
    pub max_batch: usize,
}

impl Default for StorageTuning {
    fn default() -> Self {
        StorageTuning {
            flush_interval: defaults::FLUSH_INTERVAL,
            sync_interval: defaults::SYNC_INTERVAL,
            listen: true,
            alive_interval: defaults::HUB_ALIVE_INTERVAL,
            hub_expiry: defaults::HUB_EXPIRY,
            pool_size: defaults::DB_POOL_SIZE,
            acquire_timeout: defaults::DB_ACQUIRE_TIMEOUT,
            max_batch: defaults::MAX_WRITE_BATCH,
        }
    }
}

/// The hub's time source: wall-clock milliseconds since the epoch (what rows store and the
/// sweep compares) and a monotonic [`Instant`] (what request budgets and registration shares
/// are measured with).
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock, and tokio's monotonic clock (which a test may pause).
    #[default]
    System,
    /// A clock that moves only when told to (tests): both sides move together.
    Manual(ManualClock),
}

impl Clock {
    /// A manual clock starting at `start_ms`, and the handle that moves it.
    pub fn manual(start_ms: i64) -> (Clock, ManualClock) {
        let handle = ManualClock(Arc::new(ManualTime {
            ms: AtomicI64::new(start_ms),
            start_ms,
            start: Instant::now(),
        }));
        (Clock::Manual(handle.clone()), handle)
    }

    /// Milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(m) => m.now_ms(),
        }
    }

    /// Now on the monotonic side.
    pub fn instant(&self) -> Instant {
        match self {
            Clock::System => tokio::time::Instant::now().into_std(),
            Clock::Manual(m) => m.instant(),
        }
    }
}

/// Handle of a [`Clock::Manual`].
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<ManualTime>);

#[derive(Debug)]
struct ManualTime {
    ms: AtomicI64,
    start_ms: i64,
    start: Instant,
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.0.ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Current value.
    pub fn now_ms(&self) -> i64 {
        self.0.ms.load(Ordering::Relaxed)
    }

    /// The monotonic side: the instant the clock was made at, plus how far it moved.
    pub fn instant(&self) -> Instant {
        let moved = self.now_ms().saturating_sub(self.0.start_ms).max(0);
        self.0.start + Duration::from_millis(moved as u64)
    }
}
