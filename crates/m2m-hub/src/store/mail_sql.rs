//! The SQL of the mail storage, written once for both databases (sqlx binds `$N` on
//! SQLite too) as a macro each backend module invokes.

/// Implements [`MailStore`](super::mail::MailStore) for `$name { pool: $pool }` on
/// database `$db`. The invoking module defines `lock_usage(tx, keys)` (locks the usage
/// rows named, in key order, or nothing), `LOCK_ROWS` (what ends the `SELECT` that reads
/// a storing batch's usage rows: the same lock, or only the order) and `ring_mail(tx,
/// recipient)` (the doorbell of other hubs, in the storing transaction, or nothing), and
/// invokes [`mail_store_fns`](super::mail_sql_store::mail_store_fns) first (the
/// set-based store and the counter helpers).
///
/// An ack looks its ids up (one index lookup each, in one statement), deletes them with
/// one `DELETE … RETURNING` and moves each usage key once; a delivery turn reads the sizes
/// first, then the rows that fit its byte bound.
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

        impl $crate::store::mail::MailStore for $name {
            fn store<'a>(
                &'a self,
                mails: &'a [$crate::store::mail::NewMail],
                q: &'a $crate::store::mail::MailQuotas,
            ) -> $crate::store::BoxFuture<
                'a,
                Result<Vec<$crate::store::mail::StoreOutcome>, $crate::error::StoreError>,
            > {
                Box::pin(store_batch(&self.pool, mails, q))
            }

            fn pending<'a>(
                &'a self,
                recipient: &'a str,
                after: i64,
                now: i64,
                limit: i64,
                max_bytes: i64,
            ) -> $crate::store::BoxFuture<
                'a,
                Result<(Vec<$crate::store::mail::StoredMail>, bool), $crate::error::StoreError>,
            > {
                use sqlx::Row;
                Box::pin(async move {
                    // The sizes first (one row more: whether anything is left), then the
                    // rows that fit: a turn never holds more than `max_bytes` of mail.
                    let sizes = sqlx::query(
                        "SELECT seq, CAST(length(sealed) AS BIGINT) AS n FROM m2m_mail \
                         WHERE recipient = $1 AND seq > $2 AND expires_at > $3 \
                         ORDER BY seq LIMIT $4",
                    )
                    .bind(recipient)
                    .bind(after)
                    .bind(now)
                    .bind(limit.saturating_add(1))
                    .fetch_all(&self.pool)
                    .await?;
                    let (mut taken, mut bytes, mut last) = (0i64, 0i64, after);
                    for r in &sizes {
                        let n: i64 = r.try_get("n")?;
                        if taken == limit || (taken > 0 && bytes.saturating_add(n) > max_bytes) {
                            break;
                        }
                        taken += 1;
                        bytes = bytes.saturating_add(n);
                        last = r.try_get("seq")?;
                    }
                    let more = (taken as usize) < sizes.len();
                    if taken == 0 {
                        return Ok((Vec::new(), more));
                    }
                    let rows = sqlx::query(
                        "SELECT seq, id, sender, sealed, stored_at, expires_at FROM m2m_mail \
                         WHERE recipient = $1 AND seq > $2 AND seq <= $3 AND expires_at > $4 \
                         ORDER BY seq LIMIT $5",
                    )
                    .bind(recipient)
                    .bind(after)
                    .bind(last)
                    .bind(now)
                    .bind(taken)
                    .fetch_all(&self.pool)
                    .await?;
                    let rows = rows
                        .iter()
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
                        .collect::<Result<Vec<_>, $crate::error::StoreError>>()?;
                    Ok((rows, more))
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
                        use sqlx::Row;
                        let mut b = by_ids("seq", recipient, chunk.iter().map(|s| s.as_str()));
                        let mut seqs = Vec::with_capacity(chunk.len());
                        for r in b.build().fetch_all(&mut *tx).await? {
                            if let Some(seq) = r.try_get::<Option<i64>, _>("v")? {
                                seqs.push(seq);
                            }
                        }
                        if seqs.is_empty() {
                            continue;
                        }
                        let mut b = sqlx::QueryBuilder::<$db>::new(
                            "DELETE FROM m2m_mail WHERE seq IN (",
                        );
                        let mut list = b.separated(", ");
                        for seq in seqs {
                            list.push_bind(seq);
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
