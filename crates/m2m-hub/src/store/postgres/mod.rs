//! PostgreSQL registry, shareable by several hubs.
//!
//! Every write takes `version = nextval('m2m_agents_version_seq')`, so the table doubles as
//! a change feed (`version > watermark`). The sweep runs under a transaction-level advisory
//! lock: when two hubs sweep at once one of them skips, and since the sweep is a set of
//! conditional updates that any hub would compute the same way, a skipped sweep loses
//! nothing.
//!
//! Every transaction that changes agent rows also rings the change doorbell
//! ([`FEED_CHANNEL`](crate::store::FEED_CHANNEL), `writes::ring`) before it commits; a hub
//! hears it on a connection of its own (`listen`). Hub instance rows are in `hubs`.

mod hubs;
mod listen;
mod writes;

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::{
    decode_row, AgentRow, BoxFuture, ChangeListener, ExpiredHubs, HubRow, Loaded, Registry,
    StatusChange, SweepCutoffs, SweepOutcome, Write, COLUMNS,
};
use crate::config::StorageTuning;
use crate::error::StoreError;
use writes::{insert_many, lock_in_id_order, ring, update_one};

/// Advisory lock key of the sweep ("m2m-swp" in ASCII).
const SWEEP_LOCK: i64 = 0x006d_326d_2d73_7770;

/// The shared registry.
#[derive(Debug)]
pub struct PostgresRegistry {
    pool: PgPool,
    /// Where the doorbell listener connects (its own connection, outside the pool).
    options: PgConnectOptions,
}

impl PostgresRegistry {
    /// Connects and migrates (sqlx's migrator takes its own lock, so hubs starting
    /// together do not race).
    pub async fn open(url: &str, tuning: &StorageTuning) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("m2m-hub");
        let pool_options = PgPoolOptions::new()
            .max_connections(tuning.pool_size.max(2))
            .acquire_timeout(tuning.acquire_timeout);
        let pool = match pool_options.clone().connect_with(options.clone()).await {
            Ok(pool) => pool,
            // Like the original hub: a missing database is created (when the role may).
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => {
                create_database(&options).await?;
                pool_options.connect_with(options.clone()).await?
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(PostgresRegistry { pool, options })
    }

    fn changes(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<StatusChange>, StoreError> {
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

/// Creates the database `options` names, connecting to the server's `postgres` database.
async fn create_database(options: &PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::{ConnectOptions, Executor};
    let name = options.get_database().unwrap_or("m2m").replace('"', "\"\"");
    let mut admin = options.clone().database("postgres").connect().await?;
    tracing::info!(database = %name, "creating the registry database");
    match admin
        .execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
    {
        Ok(_) => Ok(()),
        // Another hub created it first.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Registry for PostgresRegistry {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn shared(&self) -> bool {
        true
    }

    fn load(&self) -> BoxFuture<'_, Result<Loaded, StoreError>> {
        Box::pin(async move {
            // The watermark is read first: rows changed meanwhile come again through the
            // feed, which is harmless (versions make applying idempotent).
            let watermark: i64 =
                sqlx::query("SELECT COALESCE(MAX(version), 0)::BIGINT AS v FROM m2m_agents")
                    .fetch_one(&self.pool)
                    .await?
                    .try_get("v")?;
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM m2m_agents"))
                .fetch_all(&self.pool)
                .await?;
            let rows = rows.iter().map(decode_row).collect::<Result<Vec<_>, _>>()?;
            Ok(Loaded { rows, watermark })
        })
    }

    fn changes_since(
        &self,
        version: i64,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<AgentRow>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM m2m_agents WHERE version > $1 ORDER BY version LIMIT $2"
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
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM m2m_agents WHERE id = $1"))
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
            // Updates lock their rows in queue order, the liveness flush in its own: lock
            // every existing row the batch updates first, in id order, as `touch` does, so
            // that the two can never wait for each other (a burst of offline marks at mass
            // disconnect against a flush deadlocked). Fresh inserts lock nothing.
            let updated: Vec<&str> = writes
                .iter()
                .filter_map(|w| match w {
                    Write::Insert(_) => None,
                    Write::SetStatus { id, .. }
                    | Write::Update { id, .. }
                    | Write::SetRelay { id, .. } => Some(id.as_str()),
                })
                .collect();
            if updated.len() > 1 {
                lock_in_id_order(&mut tx, &updated).await?;
            }
            let mut versions = Vec::with_capacity(writes.len());
            let mut i = 0;
            while i < writes.len() {
                // A run of inserts is one statement over arrays: one round trip for a burst
                // of registers.
                let run = writes[i..]
                    .iter()
                    .take_while(|w| matches!(w, Write::Insert(_)))
                    .filter_map(|w| match w {
                        Write::Insert(row) => Some(row),
                        _ => None,
                    })
                    .collect::<Vec<_>>();
                if !run.is_empty() {
                    versions.extend(insert_many(&mut tx, &run).await?);
                    i += run.len();
                    continue;
                }
                let row = update_one(&mut tx, &writes[i]).await?;
                versions.push(row.map(|r| r.try_get::<i64, _>("version")).transpose()?);
                i += 1;
            }
            ring(&mut tx, versions.iter().flatten().min().copied()).await?;
            tx.commit().await?;
            Ok(versions)
        })
    }

    fn touch<'a>(&'a self, seen: &'a [(String, i64)]) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
            let at: Vec<i64> = seen.iter().map(|(_, at)| *at).collect();
            let mut tx = self.pool.begin().await?;
            // The join below locks rows in whatever order the plan yields them; lock them
            // in id order first, as the writer's batches do (see `apply`).
            lock_in_id_order(&mut tx, &ids).await?;
            // New versions make other hubs see the fresher lastSeen through the feed; the
            // doorbell rings in the same statement.
            sqlx::query(
                "WITH moved AS (UPDATE m2m_agents AS a SET last_seen = v.at, \
                 version = nextval('m2m_agents_version_seq') \
                 FROM UNNEST($1::TEXT[], $2::BIGINT[]) AS v(id, at) \
                 WHERE a.id = v.id AND a.last_seen < v.at RETURNING a.version) \
                 SELECT pg_notify($3, MIN(version)::TEXT) FROM moved HAVING COUNT(*) > 0",
            )
            .bind(&ids)
            .bind(&at)
            .bind(crate::store::FEED_CHANNEL)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn sweep(&self, cut: SweepCutoffs) -> BoxFuture<'_, Result<Option<SweepOutcome>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let locked: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1) AS locked")
                .bind(SWEEP_LOCK)
                .fetch_one(&mut *tx)
                .await?
                .try_get("locked")?;
            if !locked {
                return Ok(None);
            }
            // Lock every row the three statements below will change, in id order, as the
            // writer's batches and liveness flushes do: rows locked in scan order here and
            // in id order there could deadlock. (A row idled below with `last_seen` under
            // the offline or purge cutoff is already covered by the first condition.)
            sqlx::query(
                "SELECT 1 FROM m2m_agents WHERE \
                 (status NOT IN ('idle', 'offline') AND last_seen < $1) \
                 OR (status = 'idle' AND last_seen < $2) \
                 OR (status = 'offline' AND last_seen < $3) \
                 ORDER BY id FOR UPDATE",
            )
            .bind(cut.idle_before)
            .bind(cut.offline_before)
            .bind(cut.purge_before)
            .execute(&mut *tx)
            .await?;
            let idled = sqlx::query(
                "UPDATE m2m_agents SET status = 'idle', version = nextval('m2m_agents_version_seq') \
                 WHERE status NOT IN ('idle', 'offline') AND last_seen < $1 \
                 RETURNING id, status, version",
            )
            .bind(cut.idle_before)
            .fetch_all(&mut *tx)
            .await?;
            let offlined = sqlx::query(
                "UPDATE m2m_agents SET status = 'offline', relay = NULL, \
                 version = nextval('m2m_agents_version_seq') \
                 WHERE status = 'idle' AND last_seen < $1 RETURNING id, status, version",
            )
            .bind(cut.offline_before)
            .fetch_all(&mut *tx)
            .await?;
            let purged = sqlx::query(
                "DELETE FROM m2m_agents WHERE status = 'offline' \
                 AND (last_seen < $1 OR (identity IS NULL AND last_seen < $2)) \
                 AND (mailbox IS NULL OR last_seen < $3) RETURNING id",
            )
            .bind(cut.purge_before)
            .bind(cut.purge_anonymous_before)
            .bind(cut.purge_mailbox_before)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<Vec<String>, _>>()?;
            let mut changed = Self::changes(&idled)?;
            changed.extend(Self::changes(&offlined)?);
            ring(&mut tx, changed.iter().map(|c| c.version).min()).await?;
            tx.commit().await?;
            Ok(Some(SweepOutcome { changed, purged }))
        })
    }

    fn release<'a>(
        &'a self,
        hub: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StatusChange>, StoreError>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let hubs = hub.map(|h| vec![h.to_owned()]);
            let changed = release_in(&mut tx, hubs.as_deref()).await?;
            tx.commit().await?;
            Ok(changed)
        })
    }

    fn listen(&self) -> BoxFuture<'_, Result<Option<Box<dyn ChangeListener>>, StoreError>> {
        Box::pin(async move {
            let listener = listen::Doorbell::connect(&self.options).await?;
            Ok(Some(Box::new(listener) as Box<dyn ChangeListener>))
        })
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
        Box::pin(self.expire(alive_before, except))
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
        std::sync::Arc::new(super::mail_postgres::PostgresMail::new(self.pool.clone()))
    }
}

/// Marks `offline` every live agent held by one of `hubs` (every live agent when `None`) in
/// `tx`, and rings the doorbell: a clean shutdown's release and another hub's expiry take
/// this one path, so the feed carries both alike and the records' `relay` is cleared.
async fn release_in(
    tx: &mut sqlx::PgConnection,
    hubs: Option<&[String]>,
) -> Result<Vec<StatusChange>, StoreError> {
    // Id order, as everywhere else that updates several rows (see `sweep`).
    sqlx::query(
        "SELECT 1 FROM m2m_agents \
         WHERE status <> 'offline' AND ($1::TEXT[] IS NULL OR hub = ANY($1)) \
         ORDER BY id FOR UPDATE",
    )
    .bind(hubs)
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "UPDATE m2m_agents SET status = 'offline', relay = NULL, \
         version = nextval('m2m_agents_version_seq') \
         WHERE status <> 'offline' AND ($1::TEXT[] IS NULL OR hub = ANY($1)) \
         RETURNING id, status, version",
    )
    .bind(hubs)
    .fetch_all(&mut *tx)
    .await?;
    let changed = PostgresRegistry::changes(&rows)?;
    ring(tx, changed.iter().map(|c| c.version).min()).await?;
    Ok(changed)
}
