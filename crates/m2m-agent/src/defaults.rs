//! Every limit and timeout of the agent, with the reason for its value.
//!
//! [`AgentConfig`](crate::AgentConfig) starts from these; `m2m listen` has a flag for the
//! ones an operator would change. The protocol's own bounds (line length, handshake and idle
//! deadlines, …) come from [`m2m_proto::limits`] and are repeated here so that this file is
//! the one list; docs/SECURITY.md has the table of what an attacker can still do with each.

use std::time::Duration;

use m2m_proto::limits;

/// Longest P2P line accepted and sent: the protocol's 1 MiB (a 64 KiB bulk message is
/// ~88 KiB once base64-encoded; the original buffers without bound).
pub const MAX_FRAME_LEN: usize = limits::MAX_FRAME_LEN;

/// Simultaneous inbound P2P connections. Each costs a descriptor, a task and its first
/// [`FREE_BUFFER_PER_CONNECTION`]; 1024 fits the default `ulimit -n` with room for the
/// pool's outbound connections.
pub const MAX_INBOUND_CONNECTIONS: usize = limits::MAX_INBOUND_CONNECTIONS;

/// Inbound connections one source address may hold (IPv4 address, or IPv6 /64). An eighth of
/// the slots: many agents behind one NAT still fit, and a single flooding host (issue 13 #5:
/// a 2.0 handshake and a ping every 20 s per connection held all 1,024) leaves the other
/// seven eighths to everyone else.
pub const MAX_INBOUND_PER_IP: usize = MAX_INBOUND_CONNECTIONS / 8;

/// Agent-wide bytes that inbound read buffers may hold beyond each connection's free first
/// [`FREE_BUFFER_PER_CONNECTION`]: room for 128 maximal (1 MiB) lines arriving at once.
/// Without it, 1,024 connections each trickling a 1 MB unfinished line took an agent to
/// +2.1 GB (issue 13 #6). A connection whose line needs more than is left is closed with
/// `overloaded`.
pub const INBOUND_BUFFER_BUDGET: usize = 128 * 1024 * 1024;

/// Read buffer a connection has without asking the budget: one socket read (64 KiB), which
/// holds every message up to ~45 KiB of payload. At most
/// `MAX_INBOUND_CONNECTIONS × 64 KiB` = 64 MiB in all.
pub const FREE_BUFFER_PER_CONNECTION: usize = 64 * 1024;

/// Handshakes one source address may start per second, after a burst of
/// [`HANDSHAKE_BURST_PER_IP`]. Our SDK reuses its pooled connection (one handshake per peer
/// and per 25 s of idleness), but the original opens a connection for every message, so a
/// busy original sender handshakes once per message: 500 a second leaves it room. It caps
/// what one host can make us spend on key exchanges at 500 × (X25519 + Ed25519 sign and
/// verify, ~0.12 ms for 2.1) ≈ 6 % of a core, where replaying one 2.1 handshake on one
/// connection took 1.7 of 2 cores (issue 13 #9).
pub const HANDSHAKES_PER_SECOND_PER_IP: u32 = 500;

/// Handshakes one source address may start at once before the rate applies: a `broadcast`
/// or a restart reconnecting everything at the same moment.
pub const HANDSHAKE_BURST_PER_IP: u32 = 1000;

/// Source addresses whose handshake rate is remembered; beyond it, addresses whose bucket
/// is full again are forgotten (they would start full anyway), then all of them. Bounds the
/// table an attacker with many addresses could grow.
pub const RATE_TRACKED_ADDRESSES: usize = 4096;

/// Time an inbound peer has to complete its handshake (slowloris guard).
pub const HANDSHAKE_TIMEOUT: Duration = limits::HANDSHAKE_TIMEOUT;

/// Inbound connections idle this long are closed: the original's 30 s.
pub const IDLE_TIMEOUT: Duration = limits::PEER_IDLE_TIMEOUT;

/// Time a send may take until its ack, and a write to a peer: the original's 10 s.
pub const SEND_TIMEOUT: Duration = limits::SEND_TIMEOUT;

/// Time [`Agent::respond`](crate::Agent::respond) may take for a message whose sender is
/// not authenticated (2.0): its `from` is only declared, and may name an address that
/// accepts and never acks (a tarpit, issue 13 #7). A real 2.0 peer acks in milliseconds.
pub const UNVERIFIED_RESPOND_TIMEOUT: Duration = Duration::from_secs(3);

/// Answers to one sender running at once in `m2m listen --echo/--exec`: one sender cannot
/// hold more than two of the answer slots, whatever it sends.
pub const MAX_ANSWERS_PER_PEER: usize = 2;

/// Messages buffered for the application before peers are slowed down.
pub const INBOX_CAPACITY: usize = 1024;

/// Bytes of the messages buffered for the application and the request handlers' queues,
/// all together and counted as their lines on the wire, before peers are slowed down
/// (acks stop, as at [`INBOX_CAPACITY`]). The count alone let the queue hold 1024 × 1 MiB;
/// 64 MiB holds 64 maximal messages, or all 1024 of ~64 KiB (the bulk size of
/// docs/PERFORMANCE.md). A message larger than the whole bound still gets into empty
/// queues, so nothing legal is refused.
pub const INBOX_BYTES: usize = 64 * 1024 * 1024;

/// Quiet time after which a limit's refusals count as a new episode: the first refusal of
/// an episode is logged at `warn`, the rest only counted
/// ([`Agent::refusals`](crate::Agent::refusals)), so a flood cannot flood the log.
pub const REFUSAL_EPISODE_QUIET: Duration = Duration::from_secs(60);

// ---- hub ------------------------------------------------------------------------------------

/// Time between heartbeats: the original's 30 s (the hub marks an agent offline after 90 s
/// without one).
pub const HEARTBEAT_INTERVAL: Duration = limits::HEARTBEAT_INTERVAL;

/// First delay before reconnecting to the hub: the original's 5 s; doubles per failure.
pub const RECONNECT_DELAY: Duration = limits::RECONNECT_DELAY;

/// Longest wait between two reconnect attempts: a hub that is down for long is still
/// retried every minute, and a thousand agents reconnecting do not hammer it.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(60);

/// Hubs an agent may be given for failover (`--hub a,b,c`): all on one database, so a few
/// are enough; a longer list is more likely a mistake (a pasted agent list) than a plan.
pub const MAX_HUBS: usize = 16;

/// WebSockets an agent keeps attached to other hubs' relays (to reach relay-only agents
/// held by another hub on the same database): hubs of one deployment are few; the least
/// recently used is closed beyond this.
pub const MAX_FOREIGN_RELAYS: usize = 8;

/// Time a hub request may take: the original's 10 s.
pub const HUB_REQUEST_TIMEOUT: Duration = limits::HUB_REQUEST_TIMEOUT;

/// Default wait of [`Agent::request`](crate::Agent::request) for its response: the
/// original's 30 s.
pub const REQUEST_TIMEOUT: Duration = limits::REQUEST_TIMEOUT;

/// Requests queued for the hub's WebSocket before callers wait: more than one agent's
/// concurrent hub requests ever are, so a caller only waits for a stalled socket.
pub const HUB_OUTGOING_QUEUE: usize = 64;

/// Largest hub reply accepted: a full `discover` page (100 records) with large metadata
/// fits; the hub's own records are bounded far below it.
pub const MAX_HUB_REPLY: usize = 16 * 1024 * 1024;

/// Time the search for our own IPv4 address (a route to the hub) may take before we
/// register `127.0.0.1`: a UDP `connect` sends nothing, so this only bounds a slow DNS.
pub const LOCAL_ADDRESS_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest heartbeat interval used, whatever is configured: tokio's `interval` panics on
/// zero.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1);

// ---- outbound -------------------------------------------------------------------------------

/// Pooled outbound connections idle this long are closed: 5 s before the peer's own 30 s
/// idle close, so we never write into a connection the peer is tearing down.
pub const POOL_IDLE_CLOSE: Duration = limits::POOL_IDLE_CLOSE;

/// How long discover/find/lookup answers are trusted for sends by id: the original's 60 s.
pub const ADDRESS_CACHE_TTL: Duration = limits::ADDRESS_CACHE_TTL;

/// Addresses the cache keeps before expired entries are swept (a discover page adds at most
/// 500). Bounds what a hub answering with many pages can make us hold.
pub const ADDRESS_CACHE_ENTRIES: usize = 16 * 1024;

/// Pool entries (address × credentials) kept before the dead ones are swept.
pub const MAX_POOL_ENTRIES: usize = 1024;

/// Hub-vouched identity keys remembered as checked against their ids before the memo starts
/// over: decoding an Ed25519 point and hashing it cost ~10 µs on every send by id otherwise.
pub const VOUCHED_KEYS: usize = 4096;

/// Sends running at once in a broadcast: enough to hide one peer's latency behind others,
/// few enough that a broadcast to thousands opens connections gradually.
pub const BROADCAST_PARALLELISM: usize = 32;

/// Read buffer of a `ping`'s connection: a pong is 16 bytes.
pub const PING_READ_BUFFER: usize = 4096;

// ---- every connection -----------------------------------------------------------------------

/// Messages one connection may have sent and not yet had acked. Far more than a pipeline
/// needs (acks come back within a round trip); at the bound a sender waits for a place
/// before sealing, so a peer that stops acking costs us at most this many queued messages
/// per connection, and its senders wait instead of queuing more (each send is bounded by
/// [`SEND_TIMEOUT`]).
pub const MAX_AWAITING_ACK: usize = 4096;

/// Bytes read from a stream at once; also a connection's free read buffer
/// ([`FREE_BUFFER_PER_CONNECTION`]).
pub const READ_CHUNK: usize = FREE_BUFFER_PER_CONNECTION;

/// Least room asked for a read while part of a line is buffered: the buffer then grows by
/// what arrives, not by a whole read per byte trickled in.
pub const MIN_READ: usize = 8 * 1024;

/// Pending output an inbound connection writes at once, even mid-read: acks and answers to
/// a long burst of small messages do not pile up in memory.
pub const FLUSH_AT: usize = 256 * 1024;

/// Output buffer a connection keeps between writes; a larger one is released once written,
/// so that a burst of large messages does not pin its memory on an idle connection.
pub const KEEP_OUTPUT_CAPACITY: usize = 1024 * 1024;

/// Pause after a failed `accept` (out of file descriptors and the like) before the next:
/// the error would otherwise repeat at once, in a busy loop.
pub const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);

// ---- the application side -------------------------------------------------------------------

/// Requests of one type waiting for their handler ([`Agent::on_request`](crate::Agent::on_request))
/// before senders are slowed down.
pub const HANDLER_QUEUE: usize = 256;

/// Handler calls of one [`Agent::on_request`](crate::Agent::on_request) running at once;
/// further requests wait in the queue (and then in the senders' unacked messages): a flood
/// of requests costs bounded memory and tasks.
pub const HANDLERS_AT_ONCE: usize = 64;

/// Events kept for a slow [`Agent::events`](crate::Agent::events) subscriber before it
/// misses some: events are rare (connects, reconnects, errors).
pub const EVENT_CAPACITY: usize = 64;

/// How long [`Agent::disconnect`](crate::Agent::disconnect) waits for the agent's tasks to
/// stop: each has a deadline of its own, so this only bounds a bug.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

// ---- the relay (docs/RELAY.md) ---------------------------------------------------------------

/// How long a direct dial may take before a send falls back to the relay (when the record
/// has one): long enough for a slow link's TCP handshake, short enough that an agent behind
/// NAT is reached through the relay without the sender noticing much (the proto default).
pub const DIRECT_CONNECT_TIMEOUT: Duration = m2m_proto::defaults::DIRECT_CONNECT_TIMEOUT;

/// Relay frames that may arrive between the hub's `relay` reply and the moment the reply's
/// reader installed the relay client (an OPEN right after the attach): kept, not dropped;
/// beyond this the hub is misbehaving and the rest is dropped (each stream then fails).
pub const RELAY_EARLY_FRAMES: usize = 256;

/// Relay frames written to the hub's WebSocket in one batch before a flush: many small
/// frames (acks, credits) cost one write, and a large batch still yields to text requests.
pub const RELAY_WRITE_BATCH: usize = 64;

/// Mailbox: how long the acks of delivered mail are gathered into one `mail_ack` (flushed
/// sooner on `mail_drained` or at [`m2m_proto::mailbox::MAX_ACK_IDS`]). 50 ms batches a
/// drain of thousands of messages into a few requests and is far below the hub's 30 s
/// redelivery timeout.
pub const MAIL_ACK_DELAY: Duration = Duration::from_millis(50);

/// Mailbox: ids of delivered mail remembered to drop a redelivered or replayed message.
/// The hub holds at most 10,000 messages per recipient, so twice that covers every id that
/// can come again while it is stored (~1 MiB in memory or in the state file).
pub const MAIL_SEEN_IDS: usize = 20_000;

/// Mailbox: `mail`/`mail_drained` events buffered between the hub connection's task and the
/// mailbox task. The hub has at most 256 messages in flight per subscription; an event that
/// does not fit is dropped unacked, and the hub pushes it again after its ack timeout.
pub const MAIL_EVENT_QUEUE: usize = 1024;

/// Mailbox: derived key pairs kept (deriving one costs an HKDF and an X25519 base-point
/// multiplication): the current period and the two before cover all mail the hub can hold.
pub const MAIL_SECRETS: usize = 4;

/// Mailbox: the default TTL of mail we queue: the protocol's maximum (a week), which the
/// hub clamps to its own.
pub const MAIL_TTL: Duration = m2m_proto::mailbox::MAX_TTL;
