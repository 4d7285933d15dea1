//! Mailbox limits (docs/MAILBOX.md sections 3 and 5), each with the reason for its value.
//! The wire limits themselves (`MAX_SEALED`, `MAX_TTL`, `MAX_ACK_IDS`, `KEY_SKEW`) are
//! `m2m_proto::mailbox`'s; these are the hub's share.

use std::time::Duration;

/// Messages stored per recipient. An agent away for a week that gets a message a minute
/// has 10,080: the bound holds a week of steady traffic, and a flood from many senders
/// stops there instead of growing the database.
pub const MAILBOX_MESSAGES: i64 = 10_000;

/// Sealed bytes stored per recipient: 256 full-size messages, or 10,000 of 6.5 KiB.
pub const MAILBOX_BYTES: i64 = 64 * 1024 * 1024;

/// Messages one sender may have stored, all recipients together: one agent cannot fill the
/// hub by spreading messages over many recipients.
pub const SENDER_MESSAGES: i64 = 10_000;

/// Sealed bytes one sender may have stored, all recipients together.
pub const SENDER_BYTES: i64 = 64 * 1024 * 1024;

/// Sealed bytes stored in total (`--mail-budget`): the database's share for mail.
pub const MAIL_BUDGET: i64 = 1024 * 1024 * 1024;

/// Messages pushed to one subscription and not acked yet. The SDK acks in batches; 256
/// keeps a fast reader busy while bounding what a slow one makes the hub redeliver.
pub const MAIL_IN_FLIGHT: usize = 256;

/// Messages read from the database and pushed in one delivery turn, at most. Half the
/// in-flight window: a reader acking every 128 is answered with a turn that refills what
/// it acked, two statements (sizes, then rows) per turn instead of per 8 messages.
pub const MAIL_TURN: i64 = 128;

/// Sealed bytes one delivery turn reads, at most (a turn always reads one message): 8
/// full-size messages (`MAX_SEALED`, 256 KiB, a third more as base64) keep what one turn
/// holds near 3 MiB however many small ones [`MAIL_TURN`] allows, and the turn's pushes are
/// charged to the memory budget besides.
pub const MAIL_TURN_BYTES: i64 = 8 * m2m_proto::mailbox::MAX_SEALED as i64;

/// A pushed message not acked this long is pushed again (the contract's `ACK_TIMEOUT`).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The fallback poll: how often a hub on a shared PostgreSQL looks for mail stored through
/// another hub when no doorbell (NOTIFY) came. A cheap `MAX(seq)`; 1 s bounds the delay
/// when notifications are lost (the listener reconnecting).
pub const MAIL_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Mailbox subscriptions held on this hub at once: one per subscribed WebSocket, each a
/// few hundred bytes plus up to `MAIL_IN_FLIGHT` ids; bounded like connections.
pub const MAX_SUBSCRIPTIONS: usize = 100_000;

/// The PostgreSQL channel a storing transaction notifies, payload the recipient id.
pub const MAIL_CHANNEL: &str = "m2m_mail";

/// Room for the fields of a `mail` request besides `sealed` (to 32, id 64, identity 44,
/// signature 88, ttl, correlationId, names): a `mail` text may exceed the usual
/// `max_message_bytes` by the sealed message's base64, never by more than this besides.
pub const MAIL_FRAME_OVERHEAD: usize = 2048;

/// After a delivery turn failed on the database, its redelivery deadline waits at least
/// this long (a doorbell still wakes it sooner): an outage does not spin every
/// subscription's task on a failing query.
pub const MAIL_RETRY: Duration = Duration::from_secs(1);

/// `mail` requests of one WebSocket read batch stored in one transaction. A sender that
/// pipelines (the SDK keeps up to 256 in flight) pays one commit per batch instead of one
/// per message; 256 rows of 6 bound values is 1,536 binds per INSERT, well under
/// SQLite's 32,766 and PostgreSQL's 65,535, and the batch's replies wait at most one
/// such transaction.
pub const MAIL_STORE_BATCH: usize = 256;

/// Sealed bytes a WebSocket holds decoded before storing its batch: with full-size
/// (256 KiB) messages a batch stops at 16 of them, so one connection's pending batch
/// stays a few MiB whatever the message size (and what it holds is charged to the
/// memory budget's frame share besides).
pub const MAIL_STORE_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Rows (or ids) one mail statement names at most (multi-row INSERT, the `IN` lists of
/// the duplicate lookup and of an ack's DELETE): larger sets go in several statements of
/// this many. 256 × 6 binds stays far under both databases' bind limits.
pub const MAIL_SQL_ROWS: usize = 256;
