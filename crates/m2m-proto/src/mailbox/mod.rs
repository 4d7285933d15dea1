//! The mailbox extension (docs/MAILBOX.md): mail for agents that are not running, sealed
//! with HPKE to the recipient's mailbox key and signed by the sender's identity, stored by
//! the hub as opaque bytes.
//!
//! ```text
//! sender:    record.mailbox ─▶ MailboxKey::verify (signed by the record's identity)
//!            MailBody ─▶ seal (sign body, HPKE-seal to the key) ─▶ `mail` action
//! hub:       stores `sealed` as is, pushes it as a `mail` event, deletes it on `mail_ack`
//! recipient: MailboxKeys::secret_for(issued) ─▶ open (HPKE-open, verify signature, check
//!            recipient / sender / id / expiry) ─▶ Opened ─▶ the application
//! ```
//!
//! Pure: no IO, no clock (times are arguments), randomness from the caller. Nothing here
//! panics on input from the hub or a peer.

mod keys;
mod seal;
mod wire;

#[cfg(test)]
mod tests;

pub use keys::{key_message, period_start, KeyError, MailboxKey, MailboxKeys, MailboxSecret};
pub use seal::{open, seal, sealed_issued, valid_message_id, MailBody, OpenError, Opened};
pub use wire::{MailAcked, MailDrained, MailEvent, MailQueued, MailboxSubscribed};

use std::time::Duration;

/// The action that stores a sealed message for a recipient.
pub const ACTION_MAIL: &str = "mail";
/// The action that subscribes a WebSocket to its identity's mail.
pub const ACTION_MAILBOX: &str = "mailbox";
/// The action that acknowledges pushed mail.
pub const ACTION_ACK: &str = "mail_ack";
/// The `event` of a pushed message.
pub const EVENT_MAIL: &str = "mail";
/// The `event` sent when everything stored has been pushed.
pub const EVENT_DRAINED: &str = "mail_drained";

/// How long one mailbox key is current: a week, so a long-lived agent publishes a new key
/// about weekly (rotation) while the sealed message's `issued` lets it re-derive old ones.
pub const KEY_PERIOD: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a hub keeps mail (and the default TTL): a week covers an agent that runs for
/// a weekly task.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How far in the future a key's `issued` may be (clock skew between agents and hubs).
pub const KEY_SKEW: Duration = Duration::from_secs(5 * 60);
/// The largest sealed message (decoded bytes): 256 KiB holds any tool result an LLM agent
/// passes around, and keeps a recipient's 10,000-message quota within a few GiB at worst.
pub const MAX_SEALED: usize = 256 * 1024;
/// The longest message id (a UUID is 36).
pub const MAX_ID_LEN: usize = 64;
/// Most ids in one `mail_ack`: a drain acks in batches of this at most.
pub const MAX_ACK_IDS: usize = 1024;

/// Version byte of the sealed format.
pub const SEALED_VERSION: u8 = 1;
/// Bytes before the HPKE ciphertext: version, `issued`, the encapsulated key.
pub const SEALED_HEADER: usize = 1 + 8 + 32;
/// Label of the body signature and of the HPKE `info`.
pub const MAIL_LABEL: &str = "m2m/2.1 mail";
/// Label of the mailbox key signature and the HKDF salt of key derivation.
pub const KEY_LABEL: &str = "m2m/2.1 mailbox key";

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}
