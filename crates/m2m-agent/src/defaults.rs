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
