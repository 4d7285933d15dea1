//! The storing half of the mail SQL (docs/PERFORMANCE.md "Mailbox"), written once for
//! both databases as a macro each backend module invokes before
//! [`mail_store_impl`](super::mail_sql::mail_store_impl): the set-based store of a batch
//! and the counter helpers the acks and purges share.

/// Defines, for pool `$pool` of database `$db`, `store_batch` (one transaction per batch:
/// ensures and reads its usage rows once (locked on PostgreSQL, `LOCK_ROWS`), looks up its
/// ids already stored, decides every message in memory
/// ([`plan`](super::mail_batch::plan)), inserts the accepted ones with multi-row
/// `INSERT`s, moves each usage key once and rings each recipient once) and the helpers
/// `move_usage`, `release`, `by_ids` and `gone_rows`.
macro_rules! mail_store_fns {
    ($pool:ty, $db:ty) => {
        /// Adds each (messages, bytes) of `deltas` to its usage key: one `UPDATE … FROM
        /// (VALUES …)` for all keys (the rows are already locked: a store locks its keys
        /// in order, an ack or purge holds `*`, which every mail write takes first).
        async fn move_usage(
            tx: &mut <$db as sqlx::Database>::Connection,
            deltas: &std::collections::BTreeMap<String, (i64, i64)>,
        ) -> Result<(), $crate::error::StoreError> {
            let deltas: Vec<_> = deltas.iter().collect();
            for chunk in deltas.chunks($crate::defaults::mail::MAIL_SQL_ROWS) {
                let mut b = sqlx::QueryBuilder::<$db>::new(
                    "UPDATE m2m_mail_usage AS u SET messages = u.messages + v.column2, \
                     bytes = u.bytes + v.column3 FROM (VALUES ",
                );
                let mut list = b.separated(", ");
                for (key, (m, n)) in chunk {
                    list.push("(")
                        .push_bind_unseparated(key.as_str())
                        .push_unseparated(", ")
                        .push_bind_unseparated(*m)
                        .push_unseparated(", ")
                        .push_bind_unseparated(*n)
                        .push_unseparated(")");
                }
                b.push(") AS v WHERE u.key = v.column1");
                b.build().execute(&mut *tx).await?;
            }
            Ok(())
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
            for d in sums.values_mut() {
                *d = (-d.0, -d.1);
            }
            move_usage(tx, &sums).await
        }

        /// `SELECT id, <column> AS v` for each of `ids` of `recipient` (`v` NULL when not
        /// stored), one lookup of the (recipient, id) index per id. Written as a correlated
        /// subquery per id, not `id IN (...)`: on a fresh table PostgreSQL's planner
        /// (no statistics yet) takes the (recipient, seq) index for an `IN` list and
        /// filters the recipient's whole mailbox, which grows with every batch.
        fn by_ids<'q>(
            column: &'static str,
            recipient: &'q str,
            ids: impl Iterator<Item = &'q str>,
        ) -> sqlx::QueryBuilder<'q, $db> {
            let mut b = sqlx::QueryBuilder::<$db>::new("SELECT v.column1 AS id, (SELECT ");
            b.push(column)
                .push(" FROM m2m_mail WHERE recipient = ")
                .push_bind(recipient)
                .push(" AND id = v.column1) AS v FROM (VALUES ");
            let mut list = b.separated(", ");
            for id in ids {
                list.push("(")
                    .push_bind_unseparated(id)
                    .push_unseparated(")");
            }
            b.push(") AS v");
            b
        }

        fn gone_rows(
            rows: &[<$db as sqlx::Database>::Row],
        ) -> Result<Vec<(String, String, i64)>, $crate::error::StoreError> {
            use sqlx::Row;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get("recipient")?,
                        r.try_get("sender")?,
                        r.try_get("n")?,
                    ))
                })
                .collect()
        }

        async fn store_batch(
            pool: &$pool,
            mails: &[$crate::store::mail::NewMail],
            q: &$crate::store::mail::MailQuotas,
        ) -> Result<Vec<$crate::store::mail::StoreOutcome>, $crate::error::StoreError> {
            use sqlx::Row;
            use $crate::defaults::mail::MAIL_SQL_ROWS;
            if mails.is_empty() {
                return Ok(Vec::new());
            }
            let mut keys: Vec<String> = mails
                .iter()
                .flat_map(|m| $crate::store::mail::usage_keys(&m.recipient, &m.sender))
                .collect();
            keys.sort();
            keys.dedup();
            let mut tx = pool.begin().await?;
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
                    let mut b = by_ids("expires_at", recipient, chunk.iter().copied());
                    for r in b.build().fetch_all(&mut *tx).await? {
                        if let Some(e) = r.try_get::<Option<i64>, _>("v")? {
                            stored.insert((recipient.to_string(), r.try_get("id")?), e);
                        }
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
            move_usage(&mut tx, &plan.deltas).await?;
            for recipient in &plan.rung {
                ring_mail(&mut tx, recipient).await?;
            }
            tx.commit().await?;
            Ok(plan.outcomes)
        }
    };
}

pub(crate) use mail_store_fns;
