//! Every limit, timeout, buffer size and retry delay of the hub in one place, with the
//! reason for its value. The fields of [`crate::HubLimits`], [`crate::StorageTuning`] and
//! [`crate::SweepConfig`] default to these (or to `m2m_proto::limits`, the protocol's own);
//! `docs/SECURITY.md` lists the client-facing ones with their `m2m hub` flags and what an
//! attacker can still do within them. The dashboard's own bounds are in [`dashboard`].
//!
//! The model: every connection is charged to one hub-wide **memory budget**
//! ([`MEMORY_BUDGET`]) for what it may make the hub hold — its read buffer, the unfinished
//! request or frame it is sending, the replies queued for it — and new work is refused
//! when the budget is spent. Counts (connections overall, per source IP, descriptors) and
//! **timeouts at every stage** (accepted → first byte → header → upgrade → first frame →
//! idle, and every write) make sure what is charged is also released.

use std::time::Duration;

/// The port a hub listens on unless told otherwise: the original hub's.
pub const PORT: u16 = 3000;

// --- Relay (docs/RELAY.md section 5) --------------------------------------------------------

/// Most bytes the relay holds at once for all streams, queued towards destinations and
/// not yet written: a full window (256 KiB) for a thousand streams, which the 1 GiB memory
/// budget of a small public hub can spare next to its connections.
pub const RELAY_BUDGET: usize = 256 * 1024 * 1024;

/// Relayed bytes per second a WebSocket may send (token bucket refill): above the 1 GB/s
/// bulk target shared by a handful of agents, far below what one client could make a
/// two-core hub spend on it alone. 0 would mean no limit.
pub const RELAY_RATE: u64 = 64 * 1024 * 1024;

/// Bucket size of [`RELAY_RATE`]: a quarter second of it, so that short bursts (a 64 KiB
/// message, a window's worth) never wait.
pub const RELAY_BURST: u64 = 16 * 1024 * 1024;

/// A relayed stream with no DATA in either direction this long is closed (`idle`): long
/// enough for a pooled P2P session between requests, short enough that abandoned streams
/// do not hold a slot of `maxStreams` forever.
pub const RELAY_STREAM_IDLE: Duration = Duration::from_secs(300);

/// How often the maintenance task asks every attached WebSocket to close its idle streams:
/// a tenth of [`RELAY_STREAM_IDLE`], so a stream is closed at most 10 % late.
pub const RELAY_IDLE_SWEEP: Duration = Duration::from_secs(30);

/// Reachability probes one source IP may cause per second, sustained: an agent probes once
/// per (re)connect, so two a second is plenty, and a hostile client cannot make the hub
/// dial its own address more often.
pub const RELAY_PROBES_PER_IP: u32 = 2;

/// Burst of [`RELAY_PROBES_PER_IP`]: a few agents behind one NAT starting together.
pub const RELAY_PROBE_BURST: u32 = 10;

/// Probes in flight at once, hub-wide: each holds a socket for up to
/// `m2m_proto::defaults::RELAY_PROBE_TIMEOUT`, so this bounds the descriptors they take.
pub const RELAY_PROBES_IN_FLIGHT: usize = 64;

/// Source IPs whose probe rate is tracked at once (least recently seen forgotten first).
pub const RELAY_PROBE_IPS_TRACKED: usize = 65_536;

/// What any relay frame costs of its WebSocket's bytes/s budget at least ([`RELAY_RATE`]):
/// roughly what forwarding it costs the hub and the other end (a queued message, a frame
/// header), so a flood of OPEN/CLOSE/CREDIT frames is bounded like DATA.
pub const RELAY_MIN_FRAME_COST: usize = 64;

/// What a client's task queues towards other WebSockets is handed over once this many
/// bytes wait (or at the end of its read batch, whichever is first): a few 64 KiB DATA
/// frames per lock of the destination's inbox, without holding them back long.
pub const RELAY_PUSH_BYTES: usize = 256 * 1024;

/// Longest `pong` line the probe reads: a P2P pong is a few dozen bytes.
pub const RELAY_PROBE_MAX_LINE: usize = 1024;

/// Hub-wide memory budget for connection buffers. A 2-core, 4 GiB machine (the small
/// public hub we size for) keeps room for the registry mirror (100k agents with modest
/// metadata are ~200 MiB) and the database next to it.
pub const MEMORY_BUDGET: usize = 1024 * 1024 * 1024;

/// Of the memory budget, `CONNECTION_SHARE / CONNECTION_SHARE_DIVISOR` is for connections
/// (heads, read buffers, allowances); the rest is halved between unfinished frames and
/// queued replies. Separate shares mean that a client spending one of them (half-sent
/// frames, replies it never reads) does not stop anyone from connecting or from getting
/// the small replies the allowances cover. 150,000 WebSockets take ~590 MiB of the 768 MiB
/// connection share of the default budget.
pub const CONNECTION_SHARE: usize = 3;
/// See [`CONNECTION_SHARE`].
pub const CONNECTION_SHARE_DIVISOR: usize = 4;

/// Charged for every TCP connection until its HTTP request head is read (hyper's read
/// buffer grows up to [`MAX_HEADER_BYTES`]) plus hyper's connection state (~4 KiB).
pub const HTTP_CONNECTION_COST: usize = MAX_HEADER_BYTES + 4 * 1024;

/// Largest HTTP request head. A WebSocket upgrade is ~300 bytes and a browser with cookies
/// a few KiB; nginx's default (`large_client_header_buffers`) is 4 × 8 KiB. hyper's own
/// default (~400 KB) let 3,000 half-sent heads take the hub to 1.5 GB. hyper cannot go
/// below 8 KiB.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Charged for every open WebSocket: its read buffer (1 KiB), the session and task
/// (~1 KiB), plus what it may use without touching the shared budget: [`FREE_FRAME_BYTES`]
/// of an unfinished message and [`FREE_REPLY_BYTES`] of queued replies. An agent's
/// registration, heartbeats and lookups never touch the frame or reply shares.
pub const WEBSOCKET_COST: usize = 2 * 1024 + FREE_FRAME_BYTES + FREE_REPLY_BYTES;

/// Bytes of an unfinished WebSocket message covered by [`WEBSOCKET_COST`]; beyond them
/// every KiB received is charged until the message is complete.
pub const FREE_FRAME_BYTES: usize = 1024;

/// Reply bytes waiting to be written that [`WEBSOCKET_COST`] (or, for an HTTP response,
/// [`HTTP_CONNECTION_COST`]) covers; beyond them every KiB is charged until the write
/// completes. A 500-agent `discover` with large metadata is megabytes: 300 clients that
/// never read held 3.8 GB before this bound.
pub const FREE_REPLY_BYTES: usize = 1024;

/// An HTTP response body is handed to hyper this many bytes at a time, so that what a
/// slow reader has not taken yet stays charged to the reply share (hyper asks for more only
/// as its write buffer drains). A quarter of [`crate::defaults::BATCH_BYTES`]: small
/// against a big page, large enough that a fast reader costs a few polls.
pub const HTTP_BODY_CHUNK: usize = 16 * 1024;

/// Simultaneous TCP connections (HTTP or WebSocket). The 100k-agent design target plus
/// headroom for reconnect storms and HTTP clients. Also bounded by the descriptor limit
/// minus [`DESCRIPTOR_RESERVE`].
pub const MAX_HTTP_CONNECTIONS: usize = 160_000;

/// Simultaneous WebSockets (each is also an HTTP connection). 100k agents is the design
/// target; leave headroom for tools and reconnects.
pub const MAX_WEBSOCKETS: usize = 150_000;

/// Descriptors kept free for the database pool, the SQLite journal, log files and the
/// listener itself, so `accept` never fails for want of one: connections beyond
/// `RLIMIT_NOFILE - DESCRIPTOR_RESERVE` are accepted and closed at once (the kernel's
/// backlog does not fill with connections no one answers).
pub const DESCRIPTOR_RESERVE: usize = 128;

/// Simultaneous connections from one source IP (an IPv6 /64 counts as one). A NAT with
/// many agents fits; one host cannot take the hub's connection slots.
pub const MAX_CONNECTIONS_PER_IP: usize = 1024;

/// Registrations per source IP (IPv6 /64) per hour, sustained. Each 2.0 registration makes
/// a row that outlives the WebSocket; one looping register → disconnect client made 83k
/// rows in 30 s before this bound. 3,600 an hour is one a second: a host restarting its
/// agents now and then never notices.
pub const REGISTRATIONS_PER_HOUR: u32 = 3600;

/// Registrations per source IP allowed at once before the hourly rate applies: a host
/// bringing up a few hundred agents together.
pub const REGISTRATION_BURST: u32 = 600;

/// `offline` 2.0 rows (no identity) are deleted after this long unseen. A 2.0 id is random
/// at every registration: nobody can come back to an old one, so keeping it 24 h (the 2.1
/// retention) only serves lookups of a peer that is gone. With [`REGISTRATIONS_PER_HOUR`]
/// this caps one IP's rows at about `burst + rate × (offline_after + this)`.
pub const ANONYMOUS_RETENTION: Duration = Duration::from_secs(15 * 60);

/// A new TCP connection must send its first byte this fast (plain TCP; TLS has
/// [`TLS_HANDSHAKE_TIMEOUT`]).
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP request head must be complete this long after the connection was accepted, or
/// after the previous response on a kept-alive connection (hyper restarts the timer for
/// each request, so it is also the HTTP idle timeout). Slowloris connections trickling a
/// header were never closed before.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// After the 101 response, the upgraded stream must be handed over this fast.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket must send its first message this long after the challenge. Original agents
/// register at once.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// A WebSocket with nothing registered that sends nothing this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A WebSocket holding a registered agent that sends nothing (not even a ping) this long
/// is closed: agents heartbeat every 30 s, so this is 20 missed heartbeats.
pub const REGISTERED_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// A reply that cannot be written this fast closes the connection (slow reader).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes must finish this fast.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `/health` probes the registry at most this often; answers in between reuse the last
/// probe, so `/health` cannot be used to load the database.
pub const HEALTH_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// A registry probe that takes longer than this counts as a failure.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A WebSocket message larger than this is not even buffered: the socket is closed (1009).
/// Four times the largest message answered normally (`m2m_proto::limits::MAX_HUB_MESSAGE`),
/// so a message slightly over that limit still gets a `message_too_large` reply rather than
/// a closed socket, and a hostile sender cannot make the hub hold more per connection.
pub const HARD_MAX_MESSAGE_FACTOR: usize = 4;

/// Agents one WebSocket may register. Original clients register one; a process hosting a
/// few agents over one connection fits, and one socket cannot fill the directory.
pub const MAX_AGENTS_PER_CONNECTION: usize = 16;

/// Sustained requests per second per WebSocket (token bucket refill). An agent sends one
/// heartbeat per 30 s, but scripts and load tools legitimately drive one connection hard,
/// and the original hub has no limit at all: a tool that works against it must work against
/// us. One connection with one request in flight does 16-17k/s over loopback, with 8 in
/// flight ~120k/s, with 32 ~365k/s (`m2m bench hub --agents 1 --concurrency 1 --pipeline
/// K`). The bound stops one socket from taking a whole 2-core hub (~100k req/s from 64
/// connections), not a busy client (an earlier 5,000/s throttled a closed loop on two
/// connections).
pub const REQUESTS_PER_SECOND: u32 = 50_000;

/// Requests per WebSocket allowed at once (token bucket size): two seconds of
/// [`REQUESTS_PER_SECOND`], so a pipelining client's bursts pass.
pub const REQUEST_BURST: u32 = 100_000;

/// Source IPs whose registration buckets are tracked at once. A full table forgets the
/// buckets that refilled completely (they carry no information), so an attacker spraying
/// addresses cannot grow it; 65,536 buckets are ~3 MiB.
pub const MAX_TRACKED_REGISTRATION_SOURCES: usize = 65_536;

/// Read buffer per WebSocket. Hub requests are a few hundred bytes (eight pipelined
/// lookups fit); a larger message grows the buffer for its read, up to the configured
/// maximum. Every read also zero-fills the free part of the buffer first (tungstenite),
/// so a small one is cheaper per read as well as per connection.
pub const WEBSOCKET_READ_BUFFER: usize = 1024;

/// Replies written with one write at most: a client that keeps many requests in flight
/// still gets its first replies while the hub answers the rest.
pub const BATCH_REPLIES: usize = 32;

/// … and at most this many bytes of them (see [`BATCH_REPLIES`]).
pub const BATCH_BYTES: usize = 64 * 1024;

/// hyper refuses a read buffer smaller than this (its `max_buf_size` minimum).
pub const HYPER_MIN_BUF: usize = 8192;

/// How long shutdown waits for HTTP requests in flight before it drops them.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// How long shutdown waits for WebSockets to close before it releases their agents anyway.
/// A WebSocket's close is bounded by [`WRITE_TIMEOUT`], so this lets every one finish.
pub const WEBSOCKET_DRAIN: Duration = Duration::from_secs(10);

/// A failed `accept` (out of descriptors despite the reserve: another part of the process
/// used them) waits this long before the next, rather than spin on the error.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Granularity of the memory budget: one semaphore permit a KiB, so a 1 GiB budget is 2^20
/// permits (the semaphore's limit is far above) and rounding costs under a KiB a charge.
pub const BUDGET_UNIT: usize = 1024;

/// Depth of the database write queue; a full queue makes callers wait (backpressure).
/// 16k writes is several seconds of the writer's commits: a stalled database shows as
/// `unavailable` timeouts long before the queue fills.
pub const WRITE_QUEUE: usize = 16 * 1024;

/// Most writes committed in one transaction: large enough that a register storm commits
/// in few transactions, small enough that one transaction stays short.
pub const MAX_WRITE_BATCH: usize = 512;

/// Heartbeats are kept in memory and written in one batch this often. A crash loses at most
/// this much liveness, which the 2-minute idle rule does not notice.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// PostgreSQL: how often the change feed is read without a doorbell — the fallback poll
/// behind the listener ([`crate::StorageTuning::listen`]). The doorbell brings changes in
/// milliseconds; this only covers a doorbell lost with the listener's connection (which also
/// triggers a read when it is back) or an older hub on the same database that does not ring.
/// Five seconds is ten times fewer reads than the 500 ms polling it replaces, and still well
/// inside the liveness expiry ([`HUB_EXPIRY`]). With the listener off, set the interval to
/// what polling needs (500 ms was the default before the doorbell).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// PostgreSQL: a transaction that took its version numbers this long before it committed
/// is still seen by the polls (the fallback, or every poll with the listener off): each
/// poll re-reads from the watermark it had this long ago. A doorbell read needs no overlap:
/// the doorbell of a late transaction rings at its commit with its smallest version, and
/// the read starts below it. 1.5 s is three of the former 500 ms polls; our transactions
/// take milliseconds.
pub const FEED_LATE_COMMIT: Duration = Duration::from_millis(1500);

/// Watermarks of feed reads closer together than this are kept as one (the first one's
/// time, the last one's value), so a burst of doorbell reads keeps a few hundred marks per
/// [`FEED_LATE_COMMIT`], not one per read; the overlap is short by at most this.
pub const FEED_MARK_GRAIN: Duration = Duration::from_millis(10);

/// PostgreSQL: a doorbell listener that failed (the database unreachable) is made again
/// after this long; the feed is read as soon as it listens again. The fallback poll covers
/// the time in between.
pub const LISTENER_RETRY: Duration = Duration::from_secs(1);

/// PostgreSQL: the doorbell listener's connection must be made this fast (it waits for the
/// database, not for a pool slot: it has a connection of its own).
pub const LISTENER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a hub says it is alive (`alive_at` of its row in `m2m_hubs`) and looks for
/// hubs that stopped saying so. One small UPDATE and one SELECT per hub per period.
pub const HUB_ALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// A hub whose `alive_at` is older than this is taken as dead (killed, its machine lost):
/// another hub marks its agents offline and deletes its row. Three missed refreshes of
/// [`HUB_ALIVE_INTERVAL`], so a hub busy for a few seconds (a long sweep, a GC pause of the
/// database) is not declared dead, and far below the 2-/5-minute sweep that handled it
/// before (the issue asks for at most 30 s). A hub declared dead that was only slow writes
/// its row again at its next refresh; its agents come back online with their next heartbeat.
pub const HUB_EXPIRY: Duration = Duration::from_secs(15);

/// Database connections: the writer, the liveness flush, the sweep, the feed and
/// read-through lookups each hold at most one at a time.
pub const DB_POOL_SIZE: u32 = 8;

/// A request waiting longer than this for a database connection fails `unavailable`
/// (shorter than a client's usual 5 s request timeout, so it gets an answer).
pub const DB_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// SQLite: how long a statement waits for the file lock (another process opening the same
/// file, a backup) before it fails.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite: rows per multi-row INSERT (SQLite allows 32,766 bound values; 11 per row).
pub const SQLITE_INSERT_CHUNK: usize = 1000;

/// Rows read from the change feed per query: one poll after a register storm of another hub
/// reads at most this many rows at once.
pub const FEED_PAGE: i64 = 5000;

/// Heartbeats written per statement (bounded bind parameters and statement size).
pub const FLUSH_CHUNK: usize = 5000;

/// The shortest period of the background timers: a zero or tiny interval in a configuration
/// would otherwise spin the maintenance task.
pub const MIN_TIMER_PERIOD: Duration = Duration::from_millis(10);

/// How stale the listing order may get from heartbeats alone: the directory's snapshot is
/// rebuilt at most this often when only heartbeats moved agents (membership, status and
/// metadata changes rebuild it at once). Reordering costs a sort of all agents; heartbeats
/// arrive at tens of thousands per second, and the original orders by whole seconds
/// unseen, so a finer order would show nothing more.
pub const REORDER_AFTER: Duration = Duration::from_secs(1);

/// The mailbox (docs/MAILBOX.md).
pub mod mail;

/// The dashboard's own bounds: its push endpoint must not be a way to exhaust the hub,
/// whatever the hub's global limits are.
pub mod dashboard {
    use std::time::Duration;

    /// Push (SSE) streams open at once; more get HTTP 503. A dashboard is a person looking at
    /// a page: a few dozen covers a team with several tabs each, and every stream costs a
    /// task's worth of memory plus its queue (see [`CLIENT_QUEUE_EVENTS`]).
    pub const MAX_PUSH_CLIENTS: usize = 64;

    /// Events waiting for one push client. The sampler sends at most one `stats` event per
    /// [`STATS_INTERVAL`] and one `changed` event per [`CHANGE_POLL`]; a client that has not
    /// taken 32 events (several seconds of them) is not reading, and is dropped rather than
    /// buffered for.
    pub const CLIENT_QUEUE_EVENTS: usize = 32;

    /// Bytes queued for all push clients together (the byte budget). Events are a few hundred
    /// bytes; 64 clients × 32 events × 512 B is 1 MiB, so the budget is only reached when
    /// clients stop reading — and then the client whose event does not fit is dropped.
    pub const PUSH_BYTE_BUDGET: usize = 1024 * 1024;

    /// Longest a push stream lives. The browser's `EventSource` reconnects by itself (after
    /// [`RETRY_MS`]); ending streams bounds how long any one connection holds a slot.
    pub const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(15 * 60);

    /// `retry:` sent to browsers: how soon an `EventSource` reconnects after its stream ends.
    pub const RETRY_MS: u64 = 1000;

    /// How often the sampler reads the hub's counters: one history point and one `stats` event
    /// per interval; requests/s is the difference of two readings.
    pub const STATS_INTERVAL: Duration = Duration::from_secs(1);

    /// How often the sampler looks for a changed directory (a register, a status change, a
    /// close). The issue asks for an update on screen within 1 s of a change; 200 ms leaves the
    /// rest of that second for the page's query and drawing, and coalesces bursts of changes
    /// into at most five events a second.
    pub const CHANGE_POLL: Duration = Duration::from_millis(200);

    /// History points kept: 15 minutes at one a [`STATS_INTERVAL`].
    pub const HISTORY_POINTS: usize = 15 * 60;

    /// Largest page of the agent query. The page shows 50; the bound keeps one request from
    /// serializing the whole directory.
    pub const MAX_PAGE: usize = 200;

    /// Longest free-text or capability search string: capabilities are at most 64 bytes
    /// (`m2m_proto::limits`), and no search needs more than a few words.
    pub const MAX_SEARCH_LEN: usize = 256;

    /// The query's sorted view of the directory is rebuilt at most this often when the
    /// directory keeps changing: a rebuild sorts every agent (tens of ms at 100k).
    pub const VIEW_REBUILD_AFTER: Duration = Duration::from_millis(250);
}
