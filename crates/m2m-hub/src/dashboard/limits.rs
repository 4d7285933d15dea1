//! Every bound of the dashboard, with the reason for its value. These are the dashboard's
//! own: its push endpoint must not be a way to exhaust the hub, whatever the hub's global
//! limits are.

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
