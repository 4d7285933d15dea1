//! PostgreSQL: the hub instance rows (`m2m_hubs`), and the expiry of hubs that stopped
//! saying they are alive (a `kill -9`, a lost machine).
//!
//! The expiry runs under a transaction-level advisory lock of its own: when two hubs look
//! at once, one skips (both would release the same agents). The dead hub's agents go
//! offline through the same statements as a clean shutdown's release (`release_in`), in the
//! same transaction as the deletion of its row, so the change feed and the doorbell carry
//! it to every hub.

use super::{release_in, PostgresRegistry};
use crate::error::StoreError;
use crate::store::{decode_hub, ExpiredHubs, HubRow, HUB_COLUMNS};

/// Advisory lock key of the hub expiry ("m2m-hub" in ASCII).
const EXPIRY_LOCK: i64 = 0x006d_326d_2d68_7562;

impl PostgresRegistry {
    pub(super) async fn announce_hub(&self, hub: &HubRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO m2m_hubs (id, url, started_at, alive_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, alive_at = EXCLUDED.alive_at",
        )
        .bind(&hub.id)
        .bind(&hub.url)
        .bind(hub.started_at)
        .bind(hub.alive_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn hub_alive(&self, id: &str, at: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE m2m_hubs SET alive_at = GREATEST(alive_at, $2) WHERE id = $1")
                .bind(id)
                .bind(at)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(done > 0)
    }

    pub(super) async fn retire_hub(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM m2m_hubs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn expire(
        &self,
        alive_before: i64,
        except: &str,
    ) -> Result<Option<ExpiredHubs>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(EXPIRY_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !locked {
            return Ok(None);
        }
        let hubs: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM m2m_hubs WHERE alive_at < $1 AND id <> $2 ORDER BY id FOR UPDATE",
        )
        .bind(alive_before)
        .bind(except)
        .fetch_all(&mut *tx)
        .await?;
        if hubs.is_empty() {
            return Ok(Some(ExpiredHubs::default()));
        }
        let changed = release_in(&mut tx, Some(&hubs)).await?;
        sqlx::query("DELETE FROM m2m_hubs WHERE id = ANY($1)")
            .bind(&hubs)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(ExpiredHubs { hubs, changed }))
    }

    pub(super) async fn hub_rows(&self) -> Result<Vec<HubRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {HUB_COLUMNS} FROM m2m_hubs ORDER BY started_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_hub).collect()
    }
}
