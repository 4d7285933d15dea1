//! Every resource bound of the hub in one place, with the reason for its value. The fields
//! of [`crate::HubLimits`] default to these; `docs/SECURITY.md` lists them with their
//! `m2m hub` flags and what an attacker can still do within them.
//!
//! The model: every connection is charged to one hub-wide **memory budget**
//! ([`MEMORY_BUDGET`]) for what it may make the hub hold — its read buffer, the unfinished
//! request or frame it is sending, the replies queued for it — and new work is refused
//! when the budget is spent. Counts (connections overall, per source IP, descriptors) and
//! **timeouts at every stage** (accepted → first byte → header → upgrade → first frame →
//! idle, and every write) make sure what is charged is also released.

use std::time::Duration;

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

/// Reply bytes waiting to be written that [`WEBSOCKET_COST`] covers; beyond them every
/// KiB is charged until the write completes. A 500-agent `discover` with large metadata is
/// megabytes: 300 clients that never read held 3.8 GB before this bound.
pub const FREE_REPLY_BYTES: usize = 1024;

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
