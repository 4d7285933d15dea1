//! `disconnect`, and the same for every agent of a WebSocket that closed: the agent is
//! `offline` at once. A write the database cannot take now is retried by the maintenance
//! task (the mirror says `offline` meanwhile).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ErrorCode;
use crate::client::Client;
use crate::directory::Status;
use crate::state::HubState;
use crate::writer::Unavailable;

impl HubState {
    pub(super) async fn disconnect(
        &self,
        client: &mut Client,
        id: &str,
    ) -> Result<m2m_proto::hub::Empty, ErrorCode> {
        let entry = self.owned_entry(client, id)?;
        let version = self.write_offline(&entry).await?;
        if let Some(v) = version {
            self.directory
                .set(&entry, v, Some(Status::Offline), None, None);
        }
        client.owned.retain(|e| !Arc::ptr_eq(e, &entry));
        if client.owned.is_empty() {
            self.registered.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(m2m_proto::hub::Empty {})
    }

    /// The WebSocket closed: its agents are offline at once. If the database cannot take
    /// it now, the mirror says offline anyway and the write is retried until it succeeds.
    pub(crate) async fn close_client(&self, client: &mut Client) {
        let owned = std::mem::take(&mut client.owned);
        if owned.is_empty() {
            return;
        }
        self.registered.fetch_sub(1, Ordering::Relaxed);
        for entry in owned {
            if entry.is_retired() {
                // Registered again elsewhere: that registration is not ours to end.
                continue;
            }
            match self.write_offline(&entry).await {
                Ok(Some(v)) => self
                    .directory
                    .set(&entry, v, Some(Status::Offline), None, None),
                Ok(None) => {}
                Err(Unavailable) => {
                    self.directory.force_status(&entry, Status::Offline);
                    self.pending_offline.lock().push(entry);
                }
            }
        }
    }

    /// Retries offline marks that failed while the database was away.
    pub(crate) async fn retry_pending_offline(&self) {
        let pending = std::mem::take(&mut *self.pending_offline.lock());
        for entry in pending {
            // Its WebSocket is closed: offline it stays, whatever an older stored row says
            // meanwhile. A newer registration of the id (2.1) retired this entry, which
            // then ignores this, and the write is conditional on the old registration.
            self.directory.force_status(&entry, Status::Offline);
            match self.write_offline(&entry).await {
                Ok(Some(v)) => self
                    .directory
                    .set(&entry, v, Some(Status::Offline), None, None),
                Ok(None) => {}
                Err(Unavailable) => self.pending_offline.lock().push(entry),
            }
        }
    }
}
