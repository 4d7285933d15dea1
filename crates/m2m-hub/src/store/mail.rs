//! Mail storage (docs/MAILBOX.md section 3): the sealed messages and the quota counters, on
//! the registry's own database. Both databases run the same statements (sqlx binds `$N`
//! on SQLite too), written once in [`mail_store_impl`]; what differs (row locks) is a
//! parameter.
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
    /// `after`, oldest first.
    fn pending<'a>(
        &'a self,
        recipient: &'a str,
        after: i64,
        now: i64,
        limit: i64,
    ) -> BoxFuture<'a, Result<Vec<StoredMail>, StoreError>>;
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
    [format!("r:{recipient}"), format!("s:{sender}"), "*".to_owned()]
}

/// Implements [`MailStore`] for `$name { pool: $pool }` on database `$db`. `$lock` is a
/// statement locking the usage rows named by `$1` (a text array) in key order, or `""`.
macro_rules! mail_store_impl {
    ($name:ident, $pool:ty, $db:ty, $lock:expr) => {
        /// Mail storage on the registry's pool.
        #[derive(Debug)]
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            /// Mail storage on `pool` (migrated by the registry).
            pub fn new(pool: $pool) -> Self {
                $name { pool }
            }
        }

        async fn bump(
            tx: &mut <$db as sqlx::Database>::Connection,
            key: &str,
            messages: i64,
            bytes: i64,
            max: Option<(i64, i64)>,
        ) -> Result<bool, $crate::error::StoreError> {
            let (max_messages, max_bytes) = max.unwrap_or((i64::MAX, i64::MAX));
            let done = sqlx::query(
                "UPDATE m2m_mail_usage SET messages = messages + $2, bytes = bytes + $3 \
                 WHERE key = $1 AND messages + $2 <= $4 AND bytes + $3 <= $5",
            )
            .bind(key)
            .bind(messages)
            .bind(bytes)
            .bind(max_messages)
            .bind(max_bytes)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(done > 0)
        }

        /// Takes the deleted rows' (recipient, sender, bytes) off the counters.
        async fn release(
            tx: &mut <$db as sqlx::Database>::Connection,
            gone: &[(String, String, i64)],
        ) -> Result<(), $crate::error::StoreError> {
            let mut sums: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
            for (r, s, b) in gone {
                for key in $crate::store::mail::usage_keys(r, s) {
                    let e = sums.entry(key).or_default();
                    e.0 += 1;
                    e.1 += b;
                }
            }
            // BTreeMap: key order, as the storing side locks them.
            for (key, (m, b)) in sums {
                bump(tx, &key, -m, -b, None).await?;
            }
            Ok(())
        }

        fn gone_rows(
            rows: &[<$db as sqlx::Database>::Row],
        ) -> Result<Vec<(String, String, i64)>, $crate::error::StoreError> {
            use sqlx::Row;
            rows.iter()
                .map(|r| Ok((r.try_get("recipient")?, r.try_get("sender")?, r.try_get("n")?)))
                .collect()
        }

        impl $crate::store::mail::MailStore for $name {
            fn store<'a>(
                &'a self,
                mails: &'a [$crate::store::mail::NewMail],
                q: &'a $crate::store::mail::MailQuotas,
            ) -> $crate::store::BoxFuture<
                'a,
                Result<Vec<$crate::store::mail::StoreOutcome>, $crate::error::StoreError>,
            > {
                use $crate::store::mail::StoreOutcome;
                use sqlx::Row;
                Box::pin(async move {
                    let mut keys: Vec<String> = mails
                        .iter()
                        .flat_map(|m| $crate::store::mail::usage_keys(&m.recipient, &m.sender))
                        .collect();
                    keys.sort();
                    keys.dedup();
                    let mut tx = self.pool.begin().await?;
                    for key in &keys {
                        sqlx::query(
                            "INSERT INTO m2m_mail_usage (key, messages, bytes) VALUES ($1, 0, 0) \
                             ON CONFLICT (key) DO NOTHING",
                        )
                        .bind(key)
                        .execute(&mut *tx)
                        .await?;
                    }
                    let lock: &str = $lock;
                    if !lock.is_empty() {
                        sqlx::query(lock).bind(&keys).execute(&mut *tx).await?;
                    }
                    let mut out = Vec::with_capacity(mails.len());
                    for m in mails {
                        let inserted = sqlx::query(
                            "INSERT INTO m2m_mail (recipient, id, sender, sealed, stored_at, \
                             expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (recipient, id) DO NOTHING",
                        )
                        .bind(&m.recipient)
                        .bind(&m.id)
                        .bind(&m.sender)
                        .bind(&m.sealed)
                        .bind(m.stored_at)
                        .bind(m.expires_at)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if inserted == 0 {
                            let row = sqlx::query(
                                "SELECT expires_at FROM m2m_mail WHERE recipient = $1 AND id = $2",
                            )
                            .bind(&m.recipient)
                            .bind(&m.id)
                            .fetch_one(&mut *tx)
                            .await?;
                            out.push(StoreOutcome::Duplicate {
                                expires_at: row.try_get("expires_at")?,
                            });
                            continue;
                        }
                        let n = m.sealed.len() as i64;
                        let [r, s, all] =
                            $crate::store::mail::usage_keys(&m.recipient, &m.sender);
                        let limits = [
                            (r, Some((q.recipient_messages, q.recipient_bytes))),
                            (s, Some((q.sender_messages, q.sender_bytes))),
                            (all, Some((i64::MAX, q.budget_bytes))),
                        ];
                        let mut taken = 0;
                        for (key, max) in &limits {
                            if !bump(&mut tx, key, 1, n, *max).await? {
                                break;
                            }
                            taken += 1;
                        }
                        if taken == limits.len() {
                            out.push(StoreOutcome::Stored {
                                expires_at: m.expires_at,
                            });
                            continue;
                        }
                        // A quota is reached: undo what this message took.
                        for (key, _) in &limits[..taken] {
                            bump(&mut tx, key, -1, -n, None).await?;
                        }
                        sqlx::query("DELETE FROM m2m_mail WHERE recipient = $1 AND id = $2")
                            .bind(&m.recipient)
                            .bind(&m.id)
                            .execute(&mut *tx)
                            .await?;
                        out.push(StoreOutcome::Full);
                    }
                    tx.commit().await?;
                    Ok(out)
                })
            }

            fn pending<'a>(
                &'a self,
                recipient: &'a str,
                after: i64,
                now: i64,
                limit: i64,
            ) -> $crate::store::BoxFuture<
                'a,
                Result<Vec<$crate::store::mail::StoredMail>, $crate::error::StoreError>,
            > {
                use sqlx::Row;
                Box::pin(async move {
                    let rows = sqlx::query(
                        "SELECT seq, id, sender, sealed, stored_at, expires_at FROM m2m_mail \
                         WHERE recipient = $1 AND seq > $2 AND expires_at > $3 \
                         ORDER BY seq LIMIT $4",
                    )
                    .bind(recipient)
                    .bind(after)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                    rows.iter()
                        .map(|r| {
                            Ok($crate::store::mail::StoredMail {
                                seq: r.try_get("seq")?,
                                id: r.try_get("id")?,
                                sender: r.try_get("sender")?,
                                sealed: r.try_get("sealed")?,
                                stored_at: r.try_get("stored_at")?,
                                expires_at: r.try_get("expires_at")?,
                            })
                        })
                        .collect()
                })
            }

            fn count<'a>(
                &'a self,
                recipient: &'a str,
                now: i64,
            ) -> $crate::store::BoxFuture<'a, Result<i64, $crate::error::StoreError>> {
                use sqlx::Row;
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT COUNT(*) AS n FROM m2m_mail \
                         WHERE recipient = $1 AND expires_at > $2",
                    )
                    .bind(recipient)
                    .bind(now)
                    .fetch_one(&self.pool)
                    .await?;
                    Ok(row.try_get("n")?)
                })
            }

            fn ack<'a>(
                &'a self,
                recipient: &'a str,
                ids: &'a [String],
            ) -> $crate::store::BoxFuture<'a, Result<u64, $crate::error::StoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let mut gone = Vec::new();
                    for id in ids {
                        let rows = sqlx::query(
                            "DELETE FROM m2m_mail WHERE recipient = $1 AND id = $2 \
                             RETURNING recipient, sender, CAST(length(sealed) AS BIGINT) AS n",
                        )
                        .bind(recipient)
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                        gone.extend(gone_rows(&rows)?);
                    }
                    release(&mut tx, &gone).await?;
                    tx.commit().await?;
                    Ok(gone.len() as u64)
                })
            }

            fn purge<'a>(
                &'a self,
                now: i64,
                recipients: &'a [String],
            ) -> $crate::store::BoxFuture<'a, Result<u64, $crate::error::StoreError>> {
                Box::pin(async move {
                    let mut tx = self.pool.begin().await?;
                    let rows = sqlx::query(
                        "DELETE FROM m2m_mail WHERE expires_at <= $1 \
                         RETURNING recipient, sender, CAST(length(sealed) AS BIGINT) AS n",
                    )
                    .bind(now)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut gone = gone_rows(&rows)?;
                    for r in recipients {
                        let rows = sqlx::query(
                            "DELETE FROM m2m_mail WHERE recipient = $1 \
                             RETURNING recipient, sender, CAST(length(sealed) AS BIGINT) AS n",
                        )
                        .bind(r)
                        .fetch_all(&mut *tx)
                        .await?;
                        gone.extend(gone_rows(&rows)?);
                        sqlx::query("DELETE FROM m2m_mail_leases WHERE recipient = $1")
                            .bind(r)
                            .execute(&mut *tx)
                            .await?;
                    }
                    release(&mut tx, &gone).await?;
                    tx.commit().await?;
                    Ok(gone.len() as u64)
                })
            }

            fn take_lease<'a>(
                &'a self,
                recipient: &'a str,
                hub: &'a str,
                token: &'a str,
            ) -> $crate::store::BoxFuture<'a, Result<(), $crate::error::StoreError>> {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO m2m_mail_leases (recipient, hub, token) VALUES ($1, $2, $3) \
                         ON CONFLICT (recipient) DO UPDATE SET hub = excluded.hub, \
                         token = excluded.token",
                    )
                    .bind(recipient)
                    .bind(hub)
                    .bind(token)
                    .execute(&self.pool)
                    .await?;
                    Ok(())
                })
            }

            fn lease<'a>(
                &'a self,
                recipient: &'a str,
            ) -> $crate::store::BoxFuture<'a, Result<Option<String>, $crate::error::StoreError>>
            {
                use sqlx::Row;
                Box::pin(async move {
                    let row = sqlx::query("SELECT token FROM m2m_mail_leases WHERE recipient = $1")
                        .bind(recipient)
                        .fetch_optional(&self.pool)
                        .await?;
                    Ok(match row {
                        Some(r) => Some(r.try_get("token")?),
                        None => None,
                    })
                })
            }

            fn last_seq(
                &self,
            ) -> $crate::store::BoxFuture<'_, Result<i64, $crate::error::StoreError>> {
                use sqlx::Row;
                Box::pin(async move {
                    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM m2m_mail")
                        .fetch_one(&self.pool)
                        .await?;
                    Ok(row.try_get("s")?)
                })
            }

            fn usage(
                &self,
            ) -> $crate::store::BoxFuture<
                '_,
                Result<$crate::store::mail::MailUsage, $crate::error::StoreError>,
            > {
                use sqlx::Row;
                Box::pin(async move {
                    let row = sqlx::query(
                        "SELECT messages, bytes FROM m2m_mail_usage WHERE key = '*'",
                    )
                    .fetch_optional(&self.pool)
                    .await?;
                    Ok(match row {
                        Some(r) => $crate::store::mail::MailUsage {
                            messages: r.try_get("messages")?,
                            bytes: r.try_get("bytes")?,
                        },
                        None => Default::default(),
                    })
                })
            }
        }
    };
}

pub(crate) use mail_store_impl;
