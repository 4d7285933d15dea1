//! The SDK side of the mailbox (docs/MAILBOX.md): mail for agents that are not running,
//! sealed to the recipient's mailbox key and signed by the sender, stored by the hub as
//! opaque bytes.
//!
//! - **Receiving** ([`MailboxReceiver`], `subscription.rs`): after every registration on a
//!   2.1 hub the agent publishes its current mailbox key and sends the `mailbox` action
//!   (`hub_presence/mailbox_attach.rs`); the hub pushes `mail` events, which are opened
//!   (`m2m_proto::mailbox::open`: decrypted, signature, recipient, sender, id and expiry
//!   checked), de-duplicated by (sender, message id) (`seen.rs`, optionally kept in a file),
//!   handed to the inbox as a [`Message`] with `route: Route::Mailbox`, and acked in
//!   batches. A message that fails a check is dropped with the reason, counted, and acked
//!   too: it can never become valid, and the hub would otherwise push it again forever.
//! - **Sending** (`send.rs`): a send whose target is offline or unreachable, and whose
//!   record publishes a mailbox key that verifies under its identity, is sealed and stored
//!   with the `mail` action (`Agent::send_with`).
//! - **Short-lived agents** (`fetch.rs`): [`fetch_mail`] subscribes without registering,
//!   drains, acks and returns.

mod fetch;
mod seen;
pub(crate) mod send;
pub(crate) mod subscription;

pub use fetch::{fetch_mail, FetchMail, FetchReport};

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use m2m_proto::mailbox::{open, sealed_issued, MailEvent, MailboxKeys, MailboxSecret, OpenError};
use parking_lot::Mutex;

use crate::defaults::MAIL_SECRETS;
use crate::message::{Message, Route};
use seen::SeenSet;

/// Milliseconds since the epoch now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The reason of a message dropped because it was delivered before.
pub(crate) const DUPLICATE: &str = "duplicate";

/// What the agent needs to open its mail, shared across reconnects: its keys, a few
/// derived secrets, the ids already delivered and the drop counters.
#[derive(Debug)]
pub(crate) struct MailboxReceiver {
    keys: MailboxKeys,
    me: String,
    secrets: Mutex<Vec<MailboxSecret>>,
    seen: Mutex<SeenSet>,
    dropped: Mutex<BTreeMap<String, u64>>,
}

impl MailboxReceiver {
    /// The receiver of `keys`' identity, remembering `seen_ids` delivered ids (kept in
    /// `state_file` when given).
    pub(crate) fn new(
        keys: MailboxKeys,
        seen_ids: usize,
        state_file: Option<&std::path::Path>,
    ) -> Self {
        MailboxReceiver {
            me: keys.identity().agent_id().to_owned(),
            keys,
            secrets: Mutex::new(Vec::new()),
            seen: Mutex::new(SeenSet::new(seen_ids, state_file)),
            dropped: Mutex::new(BTreeMap::new()),
        }
    }

    /// The keys.
    pub(crate) fn keys(&self) -> &MailboxKeys {
        &self.keys
    }

    /// The secret for a sealed message's period, from the cache or derived.
    fn secret_for(&self, issued: u64, now: u64) -> Result<MailboxSecret, OpenError> {
        let mut secrets = self.secrets.lock();
        if let Some(s) = secrets.iter().find(|s| s.issued() == issued) {
            return Ok(s.clone());
        }
        let secret = self
            .keys
            .secret_for(issued, now)
            .ok_or(OpenError::UnknownKey)?;
        if secrets.len() >= MAIL_SECRETS {
            secrets.remove(0);
        }
        secrets.push(secret.clone());
        Ok(secret)
    }

    /// Opens a pushed message and checks it (docs/MAILBOX.md section 2, duplicate last);
    /// the message for the application and when it expires, or the reason to drop it. Does
    /// not mark it seen ([`MailboxReceiver::delivered`] does, once it is delivered).
    pub(crate) fn open(&self, event: &MailEvent, now: u64) -> Result<(Message, u64), &'static str> {
        let sealed = B64
            .decode(&event.sealed)
            .map_err(|_| OpenError::Malformed.reason())?;
        let issued = sealed_issued(&sealed).map_err(OpenError::reason)?;
        let secret = self.secret_for(issued, now).map_err(OpenError::reason)?;
        let opened = open(&secret, &self.me, &event.from, &event.id, &sealed, now)
            .map_err(OpenError::reason)?;
        let body = opened.body;
        if self.seen.lock().contains(&body.from, &body.id) {
            return Err(DUPLICATE);
        }
        let message = Message {
            from: body.from,
            message_type: body.message_type,
            payload: body.payload,
            correlation_id: body.correlation_id,
            timestamp: body.sent_at,
            encrypted: true,
            authenticated: true,
            route: Route::Mailbox,
        };
        Ok((message, body.expires_at))
    }

    /// Remembers that the message `id` from `from` was delivered (until `expires_at`).
    pub(crate) fn delivered(&self, from: &str, id: &str, expires_at: u64) {
        self.seen.lock().insert(from, id, expires_at, now_ms());
    }

    /// Counts a dropped message.
    pub(crate) fn count_drop(&self, reason: &str) {
        *self.dropped.lock().entry(reason.to_owned()).or_default() += 1;
    }

    /// Drops so far, by reason.
    pub(crate) fn dropped(&self) -> BTreeMap<String, u64> {
        self.dropped.lock().clone()
    }

    /// Writes the delivered ids to the state file (before they are acked).
    pub(crate) fn persist(&self) {
        self.seen.lock().persist(now_ms());
    }
}
