//! PostgreSQL: the statements shared by several writes (row locking in id order, the
//! multi-row insert of a register burst) and the change doorbell every write transaction
//! rings before it commits.

use sqlx::Row;

use crate::error::StoreError;
use crate::store::{json_text, AgentRow, Write, FEED_CHANNEL};

/// Rings the change doorbell in this transaction: `pg_notify` is delivered when (and only
/// if) the transaction commits. `first` is the smallest version the transaction wrote
/// (see [`FEED_CHANNEL`]); `None` (nothing written) rings nothing.
pub(super) async fn ring(
    tx: &mut sqlx::PgConnection,
    first: Option<i64>,
) -> Result<(), StoreError> {
    if let Some(first) = first {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(FEED_CHANNEL)
            .bind(first.to_string())
            .execute(tx)
            .await?;
    }
    Ok(())
}

/// Locks the existing rows of `ids` in id order (the database sorts; `ORDER BY … FOR
/// UPDATE` locks each row as the sort yields it), so that transactions updating
/// overlapping sets of rows queue behind each other instead of deadlocking.
pub(super) async fn lock_in_id_order(
    tx: &mut sqlx::PgConnection,
    ids: &[&str],
) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM m2m_agents WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(ids)
        .execute(tx)
        .await?;
    Ok(())
}

/// Inserts `rows` in one statement; their versions, in order.
pub(super) async fn insert_many(
    tx: &mut sqlx::PgConnection,
    rows: &[&AgentRow],
) -> Result<Vec<Option<i64>>, StoreError> {
    let col = |f: fn(&AgentRow) -> String| rows.iter().map(|r| f(r)).collect::<Vec<String>>();
    let identity: Vec<Option<String>> = rows.iter().map(|r| r.identity.clone()).collect();
    let last_seen: Vec<i64> = rows.iter().map(|r| r.last_seen).collect();
    let created_at: Vec<i64> = rows.iter().map(|r| r.created_at).collect();
    let relay: Vec<Option<String>> = rows.iter().map(|r| r.relay.clone()).collect();
    let reachable: Vec<Option<String>> = rows.iter().map(|r| r.reachable.clone()).collect();
    let mailbox: Vec<Option<String>> = rows.iter().map(|r| r.mailbox.clone()).collect();
    // A 2.1 id registers again on every reconnect: the new registration replaces the row
    // (keeping `created_at`) with a new version. The same id twice in one statement is an
    // error here; the writer then retries the batch one write at a time.
    let returned = sqlx::query(
        "INSERT INTO m2m_agents (id, address, capabilities, metadata, identity, status, \
         last_seen, created_at, hub, session, relay, reachable, mailbox) \
         SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], \
         $6::TEXT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], \
         $12::TEXT[], $13::TEXT[]) \
         ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, \
         capabilities = EXCLUDED.capabilities, metadata = EXCLUDED.metadata, \
         identity = EXCLUDED.identity, status = EXCLUDED.status, \
         last_seen = EXCLUDED.last_seen, hub = EXCLUDED.hub, session = EXCLUDED.session, \
         version = EXCLUDED.version, relay = EXCLUDED.relay, reachable = EXCLUDED.reachable, \
         mailbox = EXCLUDED.mailbox \
         RETURNING id, version",
    )
    .bind(col(|r| r.id.clone()))
    .bind(col(|r| r.address.clone()))
    .bind(col(|r| json_text(&r.capabilities)))
    .bind(col(|r| json_text(&r.metadata)))
    .bind(identity)
    .bind(col(|r| r.status.clone()))
    .bind(last_seen)
    .bind(created_at)
    .bind(col(|r| r.hub.clone()))
    .bind(col(|r| r.token.clone()))
    .bind(relay)
    .bind(reachable)
    .bind(mailbox)
    .fetch_all(&mut *tx)
    .await?;
    let mut by_id = std::collections::HashMap::with_capacity(returned.len());
    for r in &returned {
        by_id.insert(
            r.try_get::<String, _>("id")?,
            r.try_get::<i64, _>("version")?,
        );
    }
    Ok(rows.iter().map(|r| by_id.get(&r.id).copied()).collect())
}

/// One conditional update of a batch (an insert is a run of [`insert_many`] instead): the
/// row's new version, or no row (not there, or registered again since).
pub(super) async fn update_one(
    tx: &mut sqlx::PgConnection,
    write: &Write,
) -> Result<Option<sqlx::postgres::PgRow>, StoreError> {
    Ok(match write {
        Write::Insert(_) => None, // taken by the run above
        Write::SetStatus {
            id,
            token,
            status,
            last_seen,
        } => {
            sqlx::query(
                "UPDATE m2m_agents SET status = $2, \
             last_seen = GREATEST(last_seen, COALESCE($3, last_seen)), \
             version = nextval('m2m_agents_version_seq'), \
             relay = CASE WHEN $2 = 'offline' THEN NULL ELSE relay END \
             WHERE id = $1 AND session = $4 RETURNING version",
            )
            .bind(id)
            .bind(status)
            .bind(last_seen)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?
        }
        Write::Update {
            id,
            token,
            status,
            metadata,
            last_seen,
        } => {
            sqlx::query(
                "UPDATE m2m_agents SET status = $2, metadata = $3, \
             last_seen = GREATEST(last_seen, $4), \
             version = nextval('m2m_agents_version_seq') \
             WHERE id = $1 AND session = $5 RETURNING version",
            )
            .bind(id)
            .bind(status)
            .bind(json_text(metadata))
            .bind(last_seen)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?
        }
        Write::SetRelay {
            id,
            token,
            relay,
            reachable,
        } => {
            sqlx::query(
                "UPDATE m2m_agents SET relay = $2, reachable = $3, \
             version = nextval('m2m_agents_version_seq') \
             WHERE id = $1 AND session = $4 RETURNING version",
            )
            .bind(id)
            .bind(relay)
            .bind(reachable)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?
        }
    })
}
