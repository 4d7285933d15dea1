//! Every bound and timeout of the protocol in one place, with the reason for its value.
//!
//! The hub and the agent take these as defaults (their own `defaults.rs` builds on them);
//! operators can change most of them. Values marked "original" are those of the JS
//! implementation, kept so that original clients see the same behaviour. This module was
//! called `limits`; `m2m_proto::limits` still names it.

use std::time::Duration;

// --- Protocol and pages --------------------------------------------------------------------

/// Protocol version this hub reports in `stats`, `/health` and `/info`: the original's, since
/// 2.1 is a compatible extension and original clients compare against it.
pub const PROTOCOL_VERSION: &str = "2.0.0";

/// Largest page `discover`, `find` and `/agents` return: the original's cap, which bounds
/// the size of one reply.
pub const MAX_PAGE: u32 = 500;
/// Default page of `discover` and `/agents` (original).
pub const DEFAULT_DISCOVER_LIMIT: u32 = 100;
/// Default page of `find` (original).
pub const DEFAULT_FIND_LIMIT: u32 = 10;

// --- P2P connections -----------------------------------------------------------------------

/// Largest P2P line. The original buffers without bound; 1 MiB carries any sane payload
/// (a 64 KiB bulk message is ~88 KiB once base64-encoded) and caps memory per connection.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// A P2P handshake must complete this fast, or the connection is dropped (slowloris guard):
/// the original's send timeout, so an original initiator has given up by then anyway.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The original responder closes a connection idle this long.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Our initiator closes pooled connections idle this long: before the peer's 30 s, so we
/// never write into a connection the peer is closing.
pub const POOL_IDLE_CLOSE: Duration = Duration::from_secs(25);
/// Socket timeout of a send: the original's 10 s.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Simultaneous inbound P2P connections per agent: far more peers than one agent talks to at
/// once, and few enough that their read buffers (64 KiB each) stay at 64 MiB in all.
pub const MAX_INBOUND_CONNECTIONS: usize = 1024;

// --- Buffers kept between messages ---------------------------------------------------------

/// Scratch buffer a P2P session keeps between messages: a 64 KiB bulk message (88 KiB of
/// base64) reuses it; anything larger is allocated for that message and freed after it, so an
/// idle session does not hold the size of the largest message it ever carried.
pub const KEPT_SCRATCH_BUFFER: usize = 128 * 1024;
/// A line decoder's buffer larger than this is freed once it holds nothing: four 64 KiB reads,
/// enough to keep the buffer of a bulk transfer of 64 KiB messages (88 KiB lines) between
/// lines.
pub const KEPT_IDLE_LINE_BUFFER: usize = 256 * 1024;
/// A line decoder moves its unread bytes to the front once more than this much has been
/// consumed before them (and they are less than the consumed part): one socket read's worth,
/// so the copy is rare and never larger than what was read since the last one.
pub const LINE_BUFFER_COMPACT_AFTER: usize = 64 * 1024;

// --- Keys from the wire --------------------------------------------------------------------

/// Longest base64 X25519 SPKI accepted before decoding: the real one is 60 characters (44
/// bytes of DER); twice that leaves room for padding variants and refuses a huge `key` field
/// without decoding it.
pub const MAX_PUBLIC_KEY_B64_LEN: usize = 128;
/// Longest base64 Ed25519 identity key accepted before decoding: the real one is 44
/// characters (32 bytes); anything over 64 is refused without decoding it.
pub const MAX_IDENTITY_KEY_B64_LEN: usize = 64;

// --- Hub requests --------------------------------------------------------------------------

/// Largest hub WebSocket message. A register with the maximum capabilities and metadata
/// (64 × 128 B + 16 KiB) fits in well under this.
pub const MAX_HUB_MESSAGE: usize = 64 * 1024;
/// Most capabilities one agent may register: more than any real agent lists, few enough that
/// one agent adds little to the hub's capability index.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability string: room for namespaced names (`org.example.translate-v2`)
/// without letting one agent's capabilities dominate an index.
pub const MAX_CAPABILITY_LEN: usize = 128;
/// Largest metadata object, as serialized JSON: a description and a few settings fit; it is
/// copied into every `discover` reply that lists the agent, so it stays small.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest address string accepted at register: a DNS name (253 characters at most) and a
/// port fit.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Longest status string: statuses are short words (`online`, `busy`); 64 allows a phrase.
pub const MAX_STATUS_LEN: usize = 64;

// --- Agent ↔ hub timing (all the original's) -----------------------------------------------

/// Agent heartbeat interval (original): well inside the hub's 2-minute idle threshold.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Delay before the agent reconnects to the hub (original's first delay).
pub const RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// Hub request timeout (original).
pub const HUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long discover/find/lookup answers stay in the agent's address cache (original).
pub const ADDRESS_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default request/response timeout (original).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

// --- Hub sweeps (the original's) -----------------------------------------------------------

/// Hub sweep period (original): statuses change at most this late after their threshold.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Unseen this long: online → idle (original; four missed heartbeats).
pub const IDLE_AFTER: Duration = Duration::from_secs(120);
/// Unseen this long: idle → offline (original).
pub const OFFLINE_AFTER: Duration = Duration::from_secs(300);
/// **Ours:** offline rows are deleted after this long (the hub keeps anonymous 2.0 rows
/// shorter): a day keeps the row of an agent that is away overnight, and bounds the
/// table.
pub const OFFLINE_RETENTION: Duration = Duration::from_secs(24 * 3600);

// --- Relay (docs/RELAY.md) -----------------------------------------------------------------

/// Initial flow-control window of a relayed stream, each direction: a few 64 KiB bulk
/// messages in flight (enough for full speed over a LAN or loopback round trip), while a
/// thousand streams still fit in the hub's default relay budget when half of them are full.
pub const RELAY_WINDOW: u32 = 256 * 1024;
/// Streams one WebSocket may have open at once: more peers than one agent talks to at once
/// (the same order as [`MAX_INBOUND_CONNECTIONS`]).
pub const RELAY_MAX_STREAMS: u32 = 1024;
/// How long the hub's reachability probe waits for the `pong` of a registered address: a
/// reachable agent answers a local network round trip within milliseconds; behind NAT the
/// SYN is dropped and only the timeout ends it.
pub const RELAY_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a sender waits for a direct TCP connection before it tries the relay: short,
/// because an agent behind NAT never answers and every message to it would wait this long.
pub const DIRECT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
