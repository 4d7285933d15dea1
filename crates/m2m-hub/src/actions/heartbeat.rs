//! `heartbeat`: liveness in memory only (the maintenance task flushes it in batches); it
//! writes only when it brings an `idle` or `offline` agent back `online`.

use m2m_proto::hub::errors;
use m2m_proto::hub::HeartbeatAck;

use super::ErrorCode;
use crate::client::Client;
use crate::directory::Status;
use crate::state::HubState;
use crate::store::Write;

impl HubState {
    /// Liveness in memory only; an agent the sweep made `idle` (or `offline` while its
    /// WebSocket stayed open) is `online` again, a status the agent chose is kept.
    pub(super) async fn heartbeat(
        &self,
        client: &mut Client,
        id: &str,
    ) -> Result<HeartbeatAck, ErrorCode> {
        let entry = self.owned_entry(client, id)?;
        let now = self.now_ms();
        self.directory.touch(&entry, now);
        if matches!(entry.status(), Status::Idle | Status::Offline) {
            // Rare: boxed (see `dispatch`).
            let version = Box::pin(self.writer.write(Write::SetStatus {
                id: id.to_owned(),
                token: entry.token.to_string(),
                status: m2m_proto::hub::status::ONLINE.to_owned(),
                last_seen: Some(now),
            }))
            .await?
            .ok_or(ErrorCode::from(errors::AGENT_NOT_FOUND))?;
            self.directory
                .set(&entry, version, Some(Status::Online), None, Some(now));
        }
        Ok(HeartbeatAck {
            timestamp: u64::try_from(now).unwrap_or(0),
        })
    }
}
