//! SQLite registry: one file (or memory) owned by one hub.
//!
//! WAL journal with `synchronous=NORMAL`: a commit is an append to the WAL, durable against
//! a crash of the hub (not of the machine between checkpoints), which is what a phone book
//! needs. Versions come from a counter in this process: the hub is the only writer.

mod hubs;

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    decode_row, json_text, AgentRow, BoxFuture, ChangeListener, ExpiredHubs, HubRow, Loaded,
    Registry, StatusChange, SweepCutoffs, SweepOutcome, Write, COLUMNS,
};
use crate::config::StorageTuning;
use crate::defaults::{SQLITE_BUSY_TIMEOUT, SQLITE_INSERT_CHUNK as INSERT_CHUNK};
use crate::error::StoreError;
use m2m_proto::hub::status;

/// The embedded registry.
#[derive(Debug)]
pub struct SqliteRegistry {
    pool: SqlitePool,
    version: AtomicI64,
}

impl SqliteRegistry {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn open(url: &str, tuning: &StorageTuning) -> Result<Self, StoreError> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if in_memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let mut pool = SqlitePoolOptions::new().acquire_timeout(tuning.acquire_timeout);
        pool = if in_memory {
            // Every connection to `:memory:` is its own database: keep exactly one, forever.
            pool.max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            pool.max_connections(tuning.pool_size.clamp(1, 8))
        };
        let pool = pool.connect_with(options).await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let max: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM m2m_agents")
            .fetch_one(&pool)
            .await?
            .try_get("v")?;
        Ok(SqliteRegistry {
            pool,
            version: AtomicI64::new(max),
        })
    }

    fn next_version(&self) -> i64 {
        self.version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Marks `offline` every live agent held by `hub` (all when `None`).
    async fn release_hub(&self, hub: Option<&str>) -> Result<Vec<StatusChange>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let sql = if hub.is_some() {
            "UPDATE m2m_agents SET status = 'offline', version = ?1, relay = NULL \
                 WHERE status <> 'offline' AND hub = ?2 RETURNING id, status, version"
        } else {
            "UPDATE m2m_agents SET status = 'offline', version = ?1, relay = NULL \
                 WHERE status <> 'offline' RETURNING id, status, version"
        };
        debug_assert_eq!(status::OFFLINE, "offline");
        self.status_changes(sql, self.next_version(), None, hub, &mut conn)
            .await
    }

    async fn status_changes(
        &self,
        sql: &str,
        version: i64,
        before: Option<i64>,
        hub: Option<&str>,
        conn: &mut sqlx::SqliteConnection,
    ) -> Result<Vec<StatusChange>, StoreError> {
        let mut q = sqlx::query(sql).bind(version);
        if let Some(before) = before {
            q = q.bind(before);
        }
        if let Some(hub) = hub {
            q = q.bind(hub.to_owned());
        }
        let rows = q.fetch_all(conn).await?;
        rows.iter()
            .map(|r| {
                Ok(StatusChange {
                    id: r.try_get("id")?,
                    status: r.try_get("status")?,
                    version: r.try_get("version")?,
                })
            })
            .collect()
    }
}

impl Registry for SqliteRegistry {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn shared(&self) -> bool {
        false
    }

    fn load(&self) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM m2m_agents"))
                .fetch_all(&self.pool)
                .await?;
            let rows = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
            Ok(Loaded {
                rows,
                watermark: self.version.load(Ordering::Relaxed),
            })
        })
    }

    fn changes_since(
        &self,
        version: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<AgentRow>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM m2m_agents WHERE version > ?1 ORDER BY version LIMIT ?2"
            ))
            .bind(version)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(decode_row).collect()
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<AgentRow>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM m2m_agents WHERE id = ?1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
            row.as_ref().map(decode_row).transpose()
        })
    }

    fn apply<'a>(
        &'a self,
        writes: &'a [Write],
    ) -> BoxFuture<'a, Result<Vec<Option<i64>>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut versions = Vec::with_capacity(writes.len());
            let mut i = 0;
            while i < writes.len() {
                // A run of inserts is one multi-row statement: a statement is a round trip
                // to SQLite's worker thread, and registers come in bursts.
                let run = writes[i..]
                    .iter()
                    .take(INSERT_CHUNK)
                    .take_while(|w| matches!(w, Write::Insert(_)))
                    .filter_map(|w| match w {
                        Write::Insert(row) => Some(row),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if !run.is_empty() {
                    let first = self.version.fetch_add(run.len() as i64, Ordering::Relaxed) + 1;
                    let mut q = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO m2m_agents (id, address, capabilities, metadata, identity, \
                         status, last_seen, created_at, hub, session, version, relay, reachable, mailbox) ",
                    );
                    q.push_values(run.iter().enumerate(), |mut b, (n, row)| {
                        b.push_bind(row.id.clone())
                            .push_bind(row.address.clone())
                            .push_bind(json_text(&row.capabilities))
                            .push_bind(json_text(&row.metadata))
                            .push_bind(row.identity.clone())
                            .push_bind(row.status.clone())
                            .push_bind(row.last_seen)
                            .push_bind(row.created_at)
                            .push_bind(row.hub.clone())
                            .push_bind(row.token.clone())
                            .push_bind(first + n as i64)
                            .push_bind(row.relay.clone())
                            .push_bind(row.reachable.clone())
                            .push_bind(row.mailbox.clone());
                    });
                    // A 2.1 id registers again on every reconnect: the new registration
                    // replaces the row (rows are applied in order, so within one statement
                    // the later registration of an id wins).
                    q.push(
                        " ON CONFLICT (id) DO UPDATE SET address = excluded.address, \
                         capabilities = excluded.capabilities, metadata = excluded.metadata, \
                         identity = excluded.identity, status = excluded.status, \
                         last_seen = excluded.last_seen, hub = excluded.hub, \
                         session = excluded.session, version = excluded.version, \
                         relay = excluded.relay, reachable = excluded.reachable, \
                         mailbox = excluded.mailbox",
                    );
                    q.build().execute(&mut *tx).await?;
                    versions.extend((0..run.len()).map(|n| Some(first + n as i64)));
                    i += run.len();
                    continue;
                }
                let version = self.next_version();
                let done = match &writes[i] {
                    Write::Insert(_) => 0, // taken by the run above
                    Write::SetStatus {
                        id,
                        token,
                        status,
                        last_seen,
                    } => sqlx::query(
                        "UPDATE m2m_agents SET status = ?2, \
                         last_seen = MAX(last_seen, COALESCE(?3, last_seen)), version = ?4, \
                         relay = CASE WHEN ?2 = 'offline' THEN NULL ELSE relay END \
                         WHERE id = ?1 AND session = ?5",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(last_seen)
                    .bind(version)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::Update {
                        id,
                        token,
                        status,
                        metadata,
                        last_seen,
                    } => sqlx::query(
                        "UPDATE m2m_agents SET status = ?2, metadata = ?3, \
                         last_seen = MAX(last_seen, ?4), version = ?5 \
                         WHERE id = ?1 AND session = ?6",
                    )
                    .bind(id)
                    .bind(status)
                    .bind(json_text(metadata))
                    .bind(last_seen)
                    .bind(version)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                    Write::SetRelay {
                        id,
                        token,
                        relay,
                        reachable,
                    } => sqlx::query(
                        "UPDATE m2m_agents SET relay = ?2, reachable = ?3, version = ?4 \
                         WHERE id = ?1 AND session = ?5",
                    )
                    .bind(id)
                    .bind(relay)
                    .bind(reachable)
                    .bind(version)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected(),
                };
                versions.push((done > 0).then_some(version));
                i += 1;
            }
            tx.commit().await?;
            Ok(versions)
        })
    }

    fn touch<'a>(&'a self, seen: &'a [(String, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            for (id, at) in seen {
                sqlx::query("UPDATE m2m_agents SET last_seen = MAX(last_seen, ?1) WHERE id = ?2")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn sweep(&self, cut: SweepCutoffs) -> BoxFuture<'_, Result<Option<SweepOutcome>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let mut changed = self
                .status_changes(
                    "UPDATE m2m_agents SET status = 'idle', version = ?1 \
                     WHERE status NOT IN ('idle', 'offline') AND last_seen < ?2 \
                     RETURNING id, status, version",
                    self.next_version(),
                    Some(cut.idle_before),
                    None,
                    &mut tx,
                )
                .await?;
            changed.extend(
                self.status_changes(
                    "UPDATE m2m_agents SET status = 'offline', version = ?1, relay = NULL \
                     WHERE status = 'idle' AND last_seen < ?2 RETURNING id, status, version",
                    self.next_version(),
                    Some(cut.offline_before),
                    None,
                    &mut tx,
                )
                .await?,
            );
            let purged = sqlx::query(
                "DELETE FROM m2m_agents WHERE status = 'offline' \
                 AND (last_seen < ?1 OR (identity IS NULL AND last_seen < ?2)) \
                 AND (mailbox IS NULL OR last_seen < ?3) RETURNING id",
            )
            .bind(cut.purge_before)
            .bind(cut.purge_anonymous_before)
            .bind(cut.purge_mailbox_before)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<Vec<String>, _>>()?;
            tx.commit().await?;
            Ok(Some(SweepOutcome { changed, purged }))
        })
    }

    fn release<'a>(
        &'a self,
        hub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StatusChange>, StoreError>> {
        Box::pin(self.release_hub(hub))
    }

    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    fn announce<'a>(&'a self, hub: &'a HubRow) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.announce_hub(hub))
    }

    fn alive<'a>(&'a self, id: &'a str, at: i64) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.hub_alive(id, at))
    }

    fn retire<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.retire_hub(id))
    }

    fn expire_hubs<'a>(
        &'a self,
        alive_before: i64,
        except: &'a str,
    ) -> BoxFuture<'a, Result<Option<ExpiredHubs>, StoreError>> {
        Box::pin(async move { self.expire(alive_before, except).await.map(Some) })
    }

    fn instances(&self) -> BoxFuture<'_, Result<Vec<HubRow>, StoreError>> {
        Box::pin(self.hub_rows())
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.pool.close().await })
    }

    fn mail(&self) -> std::sync::Arc<dyn super::mail::MailStore> {
        std::sync::Arc::new(super::mail_sqlite::SqliteMail::new(self.pool.clone()))
    }
}
