//! SQLite: the hub instance rows. One hub uses the file, so the row is its own (and, after a
//! crash, the previous process's, which the expiry check deletes: its agents were already
//! marked offline at start).

use super::SqliteRegistry;
use crate::error::StoreError;
use crate::store::{decode_hub, ExpiredHubs, HubRow, HUB_COLUMNS};

impl SqliteRegistry {
    pub(super) async fn announce_hub(&self, hub: &HubRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO m2m_hubs (id, url, started_at, alive_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, alive_at = excluded.alive_at",
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
        let done = sqlx::query("UPDATE m2m_hubs SET alive_at = MAX(alive_at, ?2) WHERE id = ?1")
            .bind(id)
            .bind(at)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    pub(super) async fn retire_hub(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM m2m_hubs WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn expire(
        &self,
        alive_before: i64,
        except: &str,
    ) -> Result<ExpiredHubs, StoreError> {
        let stale: Vec<String> =
            sqlx::query_scalar("SELECT id FROM m2m_hubs WHERE alive_at < ?1 AND id <> ?2")
                .bind(alive_before)
                .bind(except)
                .fetch_all(&self.pool)
                .await?;
        let mut expired = ExpiredHubs::default();
        for hub in stale {
            // The same path as a clean shutdown's release.
            expired.changed.extend(self.release_hub(Some(&hub)).await?);
            self.retire_hub(&hub).await?;
            expired.hubs.push(hub);
        }
        Ok(expired)
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
