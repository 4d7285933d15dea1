//! Every bound and timeout of the protocol in one place, with the reason for its value.
//!
//! The hub and the agent take these as defaults; operators can change most of them.

use std::time::Duration;

/// Protocol version this hub reports in `stats`, `/health` and `/info` (the original's).
pub const PROTOCOL_VERSION: &str = "2.0.0";

/// Largest page `discover`, `find` and `/agents` return: the original's cap.
pub const MAX_PAGE: u32 = 500;
/// Default page of `discover` and `/agents` (original).
pub const DEFAULT_DISCOVER_LIMIT: u32 = 100;
/// Default page of `find` (original).
pub const DEFAULT_FIND_LIMIT: u32 = 10;

/// Largest P2P line. The original buffers without bound; 1 MiB carries any sane payload
/// (a 64 KiB bulk message is ~88 KiB once base64-encoded) and caps memory per connection.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// A P2P handshake must complete this fast, or the connection is dropped (slowloris guard).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The original responder closes a connection idle this long.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Our initiator closes pooled connections idle this long: before the peer's 30 s, so we
/// never write into a connection the peer is closing.
pub const POOL_IDLE_CLOSE: Duration = Duration::from_secs(25);
/// Socket timeout of a send: the original's 10 s.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Scratch buffer a P2P session keeps between messages: a 64 KiB bulk message (88 KiB of
/// base64) reuses it; anything larger is allocated for that message and freed after it, so an
/// idle session does not hold the size of the largest message it ever carried.
pub const KEPT_SCRATCH_BUFFER: usize = 128 * 1024;
/// Simultaneous inbound P2P connections per agent.
pub const MAX_INBOUND_CONNECTIONS: usize = 1024;

/// Largest hub WebSocket message. A register with the maximum capabilities and metadata
/// fits in well under this.
pub const MAX_HUB_MESSAGE: usize = 64 * 1024;
/// Most capabilities one agent may register.
pub const MAX_CAPABILITIES: usize = 64;
/// Longest capability string.
pub const MAX_CAPABILITY_LEN: usize = 128;
/// Largest metadata object, as serialized JSON.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest address string accepted at register.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Longest status string.
pub const MAX_STATUS_LEN: usize = 64;

/// Agent heartbeat interval (original).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Delay before the agent reconnects to the hub (original's first delay).
pub const RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// Hub request timeout (original).
pub const HUB_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long discover/find/lookup answers stay in the agent's address cache (original).
pub const ADDRESS_CACHE_TTL: Duration = Duration::from_secs(60);
/// Default request/response timeout (original).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Hub sweep period (original).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
/// Unseen this long: online → idle (original).
pub const IDLE_AFTER: Duration = Duration::from_secs(120);
/// Unseen this long: idle → offline (original).
pub const OFFLINE_AFTER: Duration = Duration::from_secs(300);
/// **Ours:** offline rows are deleted after this long.
pub const OFFLINE_RETENTION: Duration = Duration::from_secs(24 * 3600);
