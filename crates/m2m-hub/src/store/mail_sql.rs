//! The SQL of the mail storage, written once for both databases (sqlx binds `$N` on
//! SQLite too) as a macro each backend module invokes.

/// Implements [`MailStore`](super::mail::MailStore) for `$name { pool: $pool }` on
/// database `$db`. The invoking module defines `lock_usage(tx, keys)` (locks the usage
/// rows named, in key order, or nothing), `LOCK_ROWS` (what ends the `SELECT` that reads
/// a storing batch's usage rows: the same lock, or only the order) and `ring_mail(tx,
/// recipient)` (the doorbell of other hubs, in the storing transaction, or nothing).
///
/// A store is set-based: one transaction per batch ensures and reads its usage rows once,
/// looks up its ids already stored with one query per recipient, decides every message in
/// memory ([`plan`](super::mail_batch::plan)), inserts the accepted ones with one
/// multi-row `INSERT`, moves each usage key once and rings each recipient once. An ack is
/// one `DELETE … RETURNING` and one update per key.
macro_rules! mail_store_impl {
    ($name:ident, $pool:ty, $db:ty) => {
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
                use $crate::defaults::mail::MAIL_SQL_ROWS;
                use sqlx::Row;
                Box::pin(async move {
                    if mails.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut keys: Vec<String> = mails
                        .iter()
                        .flat_map(|m| $crate::store::mail::usage_keys(&m.recipient, &m.sender))
                        .collect();
                    keys.sort();
                    keys.dedup();
                    let mut tx = self.pool.begin().await?;
                    let mut usage = std::collections::HashMap::new();
                    for chunk in keys.chunks(MAIL_SQL_ROWS) {
                        let mut b = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO m2m_mail_usage (key, messages, bytes) ",
                        );
                        b.push_values(chunk, |mut row, key| {
                            row.push_bind(key).push("0").push("0");
                        });
                        b.push(" ON CONFLICT (key) DO NOTHING");
                        b.build().execute(&mut *tx).await?;
                    }
                    // Read (and on PostgreSQL lock, in key order) the batch's counters once.
                    for chunk in keys.chunks(MAIL_SQL_ROWS) {
                        let mut b = sqlx::QueryBuilder::<$db>::new(
                            "SELECT key, messages, bytes FROM m2m_mail_usage WHERE key IN (",
                        );
                        let mut list = b.separated(", ");
                        for key in chunk {
                            list.push_bind(key);
                        }
                        b.push(")").push(LOCK_ROWS);
                        for r in b.build().fetch_all(&mut *tx).await? {
                            let key: String = r.try_get("key")?;
                            usage.insert(key, (r.try_get("messages")?, r.try_get("bytes")?));
                        }
                    }
                    // The batch's ids already stored, per recipient.
                    let mut ids: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
                    for m in mails {
                        ids.entry(&m.recipient).or_default().push(&m.id);
                    }
                    let mut stored = std::collections::HashMap::new();
                    for (recipient, ids) in &mut ids {
                        ids.sort_unstable();
                        ids.dedup();
                        for chunk in ids.chunks(MAIL_SQL_ROWS) {
                            let mut b = sqlx::QueryBuilder::<$db>::new(
                                "SELECT id, expires_at FROM m2m_mail WHERE recipient = ",
                            );
                            b.push_bind(*recipient).push(" AND id IN (");
                            let mut list = b.separated(", ");
                            for id in chunk {
                                list.push_bind(*id);
                            }
                            b.push(")");
                            for r in b.build().fetch_all(&mut *tx).await? {
                                let id: String = r.try_get("id")?;
                                stored.insert(
                                    (recipient.to_string(), id),
                                    r.try_get::<i64, _>("expires_at")?,
                                );
                            }
                        }
                    }
                    let plan = $crate::store::mail_batch::plan(mails, &stored, &usage, q);
                    for chunk in plan.accepted.chunks(MAIL_SQL_ROWS) {
                        let mut b = sqlx::QueryBuilder::<$db>::new(
                            "INSERT INTO m2m_mail (recipient, id, sender, sealed, stored_at, \
                             expires_at) ",
                        );
                        b.push_values(chunk, |mut row, i| {
                            let m = &mails[*i];
                            row.push_bind(&m.recipient)
                                .push_bind(&m.id)
                                .push_bind(&m.sender)
                                .push_bind(&m.sealed)
                                .push_bind(m.stored_at)
                                .push_bind(m.expires_at);
                        });
                        b.build().execute(&mut *tx).await?;
                    }
                    // Key order, as they were locked.
                    for (key, (m, n)) in &plan.deltas {
                        bump(&mut tx, key, *m, *n, None).await?;
                    }
                    for recipient in &plan.rung {
                        ring_mail(&mut tx, recipient).await?;
                    }
                    tx.commit().await?;
                    Ok(plan.outcomes)
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
                    // The total row first, as a store locks it first (`*` sorts before
                    // `r:`/`s:`): a delete racing a store of the same id cannot deadlock.
                    lock_usage(&mut tx, &["*".to_owned()]).await?;
                    let mut ids: Vec<&String> = ids.iter().collect();
                    ids.sort_unstable();
                    ids.dedup();
                    let mut gone = Vec::new();
                    for chunk in ids.chunks($crate::defaults::mail::MAIL_SQL_ROWS) {
                        let mut b = sqlx::QueryBuilder::<$db>::new(
                            "DELETE FROM m2m_mail WHERE recipient = ",
                        );
                        b.push_bind(recipient).push(" AND id IN (");
                        let mut list = b.separated(", ");
                        for id in chunk {
                            list.push_bind(*id);
                        }
                        b.push(
                            ") RETURNING recipient, sender, CAST(length(sealed) AS BIGINT) AS n",
                        );
                        let rows = b.build().fetch_all(&mut *tx).await?;
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
                    // The total row first, as a store locks it first (`*` sorts before
                    // `r:`/`s:`): a delete racing a store of the same id cannot deadlock.
                    lock_usage(&mut tx, &["*".to_owned()]).await?;
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
