//! Every limit, timeout and queue size of the `m2m` tool, with the reason for its value.
//! The hub's and the agent's own limits live in `m2m_hub::limits` and
//! `m2m_agent::defaults`; the command line's defaults for them refer to those. The
//! duration defaults here are strings because clap shows them in `--help` as typed.

use std::time::Duration;

// ---- input the tool reads ----

/// A key file is one short line; anything much larger is not one.
pub const MAX_KEY_FILE_LEN: u64 = 1024;
/// Largest payload read from stdin: one P2P frame cannot carry more.
pub const MAX_STDIN_PAYLOAD: usize = m2m_proto::limits::MAX_FRAME_LEN;
/// Longest line accepted in answer to a ping: a pong is a few bytes.
pub const MAX_PING_REPLY: usize = 4096;

// ---- one-shot commands ----

/// `m2m request --timeout`: long enough for a handler that thinks (an LLM call), short
/// enough that a script notices a peer that will never answer.
pub const REQUEST_TIMEOUT: &str = "30s";
/// `m2m ping --timeout`: a pong comes back in one round trip.
pub const PING_TIMEOUT: &str = "10s";

// ---- `m2m listen` ----

/// `--exec-timeout`: what a handler command may take before it is killed and an error is
/// answered; the sender's own request timeout is 30 s by default.
pub const EXEC_TIMEOUT: &str = "30s";
/// `--exec-parallelism`: handler commands running at once; a few per core keeps a slow
/// handler from holding up the others without a fork storm.
pub const EXEC_PARALLELISM: usize = 8;
/// `--unverified-respond-timeout`: an answer to an unauthenticated (2.0) sender goes to the
/// address it claims, which may be anyone's; give up quickly.
pub const UNVERIFIED_RESPOND_TIMEOUT: &str = "3s";
/// Largest handler output read: a response must fit in one P2P frame.
pub const MAX_HANDLER_OUTPUT: usize = m2m_proto::limits::MAX_FRAME_LEN;
/// Handler stderr kept for the error message.
pub const MAX_HANDLER_STDERR: usize = 16 * 1024;

// ---- `m2m agent` (the terminal agent) ----

/// `--port`: the original SDK's P2P port, so a 2.0 peer finds the agent where it expects.
pub const AGENT_PORT: u16 = 4000;
/// How often the peer list and stats refresh by themselves.
pub const TUI_AUTO_REFRESH: Duration = Duration::from_secs(15);
/// Network results waiting to be drawn; the drawing loop takes them every frame.
pub const TUI_EVENT_QUEUE: usize = 256;
/// Log lines kept; older ones are dropped.
pub const TUI_MAX_LOG: usize = 1000;
/// Unanswered requests kept; the oldest is dropped (its sender times out).
pub const TUI_MAX_PENDING_REQUESTS: usize = 100;
/// Longest text accepted in an input field (one P2P frame could not carry more anyway).
pub const TUI_MAX_INPUT: usize = 64 * 1024;

// ---- `m2m demo` ----

/// The whole demo must not hang: every step is local.
pub const DEMO_STEP_TIMEOUT: Duration = Duration::from_secs(20);

// ---- `m2m mcp` ----

/// `--inbox-capacity`: received messages kept until a tool takes them.
pub const MCP_INBOX_CAPACITY: u32 = 1000;
/// Largest `--inbox-capacity`: messages may be large, and all of them are in memory.
pub const MAX_MCP_INBOX_CAPACITY: u32 = 100_000;
/// Time an arrival notice may take to be written to the client. A client that stops reading
/// must not stall the delivery into the inbox (whose bound then drops the oldest instead).
pub const MCP_NOTICE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `request` wait: MCP clients give up on a tool call after a minute or two.
pub const MAX_REQUEST_TIMEOUT_SECS: u32 = 120;
/// `request` wait when none is given.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u32 = 30;
/// Longest `wait_for_message` long-poll, for the same reason.
pub const MAX_WAIT_SECS: u32 = 120;
/// `wait_for_message` long-poll when none is given.
pub const DEFAULT_WAIT_SECS: u32 = 30;
/// Most messages one `inbox` call returns: payloads can be large and land in a context.
pub const MAX_INBOX_LIMIT: u32 = 100;
/// `inbox` batch when no limit is given.
pub const DEFAULT_INBOX_LIMIT: u32 = 20;
/// Longest type, status or capability string accepted (the hub's own limits are similar).
pub const MAX_NAME_LEN: usize = 256;
