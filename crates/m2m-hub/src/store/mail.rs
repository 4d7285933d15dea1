//! Mail storage (docs/MAILBOX.md section 3): the sealed messages and the quota counters, on
//! the registry's own database. Both databases run the same statements (sqlx binds `$N`
//! on SQLite too), written once in the macro of `mail_sql.rs`; what differs (row locks,
//! the NOTIFY) is two functions each backend defines.
//!
//! Quotas are counters in `m2m_mail_usage` (per recipient `r:<id>`, per sender `s:<id>`,
//! in total `*`), moved by conditional updates in the transaction that stores, acks or
//! purges, so several hubs on one PostgreSQL share them exactly.

use std::fmt;

use super::BoxFuture;
use crate::error::StoreError;

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    /// Recipient id.
    pub recipient: String,
    /// Message id (the sender's).
    pub id: String,
    /// Sender id, as the hub stamped it.
    pub sender: String,
    /// The sealed bytes, opaque.
    pub sealed: Vec<u8>,
    /// Stored at, ms since the epoch.
    pub stored_at: i64,
    /// Dropped at, ms since the epoch.
    pub expires_at: i64,
}

/// The quotas a store is checked against (docs/MAILBOX.md "Quotas").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailQuotas {
    /// Messages stored per recipient.
    pub recipient_messages: i64,
    /// Sealed bytes stored per recipient.
    pub recipient_bytes: i64,
    /// Messages stored per sender, all recipients.
    pub sender_messages: i64,
    /// Sealed bytes stored per sender, all recipients.
    pub sender_bytes: i64,
    /// Sealed bytes stored in total.
    pub budget_bytes: i64,
}

/// What became of one [`NewMail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Stored; expires then.
    Stored {
        /// ms since the epoch.
        expires_at: i64,
    },
    /// The same (recipient, id) was already stored: nothing stored.
    Duplicate {
        /// The stored message's expiry, ms since the epoch.
        expires_at: i64,
    },
    /// A quota is reached.
    Full,
}

/// One stored message, as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMail {
    /// Order of storing (larger is newer).
    pub seq: i64,
    /// Message id.
    pub id: String,
    /// Sender id.
    pub sender: String,
    /// The sealed bytes as stored.
    pub sealed: Vec<u8>,
    /// Stored at, ms since the epoch.
    pub stored_at: i64,
    /// Dropped at, ms since the epoch.
    pub expires_at: i64,
}

/// Messages and sealed bytes stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailUsage {
    /// Messages.
    pub messages: i64,
    /// Sealed bytes.
    pub bytes: i64,
}

/// The mail storage of one database.
pub trait MailStore: Send + Sync + fmt::Debug {
    /// Stores `mails` in one transaction, in order; one outcome each.
    fn store<'a>(
        &'a self,
        mails: &'a [NewMail],
        quotas: &'a MailQuotas,
    ) -> BoxFuture<'a, Result<Vec<StoreOutcome>, StoreError>>;
    /// Up to `limit` messages of `recipient` not expired at `now` with `seq` above
    /// `after`, oldest first, and no more than `max_bytes` sealed bytes in all (the first
    /// always); whether more such messages are stored past them.
    fn pending<'a>(
        &'a self,
        recipient: &'a str,
        after: i64,
        now: i64,
        limit: i64,
        max_bytes: i64,
    ) -> BoxFuture<'a, Result<(Vec<StoredMail>, bool), StoreError>>;
    /// How many messages of `recipient` are stored and not expired at `now`.
    fn count<'a>(&'a self, recipient: &'a str, now: i64) -> BoxFuture<'a, Result<i64, StoreError>>;
    /// Deletes those of `ids` stored for `recipient`; how many were.
    fn ack<'a>(
        &'a self,
        recipient: &'a str,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Deletes mail expired at `now` and all mail of `recipients` (purged records); how
    /// many messages.
    fn purge<'a>(
        &'a self,
        now: i64,
        recipients: &'a [String],
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Records `token` (on `hub`) as the newest subscription of `recipient`.
    fn take_lease<'a>(
        &'a self,
        recipient: &'a str,
        hub: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The newest subscription token of `recipient`, if any.
    fn lease<'a>(&'a self, recipient: &'a str)
        -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    /// The largest `seq` ever stored (cheap: the other hubs' new mail shows here).
    fn last_seq(&self) -> BoxFuture<'_, Result<i64, StoreError>>;
    /// Everything stored (the `*` counter).
    fn usage(&self) -> BoxFuture<'_, Result<MailUsage, StoreError>>;
}

/// The usage counter keys of a message: recipient, sender, total.
pub(crate) fn usage_keys(recipient: &str, sender: &str) -> [String; 3] {
    [
        format!("r:{recipient}"),
        format!("s:{sender}"),
        "*".to_owned(),
    ]
}
