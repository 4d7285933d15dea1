//! `lookup`: one agent by id, from the mirror or (several hubs on one database) read
//! through from the registry (`proto::LookedUp`).

use std::sync::atomic::Ordering;

use m2m_proto::hub::errors;
use serde_json::Value;

use super::ErrorCode;
use crate::directory::{parse_id, AgentEntry};
use crate::reply::ok_text;
use crate::state::HubState;

impl HubState {
    /// Looks an agent up: the mirror first; with a shared registry an id the mirror does
    /// not know yet (registered through another hub a moment ago) is read from the database.
    /// The reply is `proto::LookedUp`.
    pub(super) async fn lookup(&self, id: &str, cid: Option<Value>) -> Result<String, ErrorCode> {
        let reply = |entry: &AgentEntry| {
            ok_text(256, cid, |out| {
                out.push_str(r#""agent":"#);
                entry.write_record(out);
            })
        };
        let key = parse_id(id).ok_or(ErrorCode::from(errors::AGENT_NOT_FOUND))?;
        if let Some(entry) = self.directory.get(key) {
            return Ok(reply(&entry));
        }
        if !self.registry.shared() {
            return Err(errors::AGENT_NOT_FOUND.into());
        }
        match self.registry.get(id).await {
            Ok(Some(row)) => {
                let entry = self
                    .directory
                    .upsert(&row)
                    .ok_or(ErrorCode::from(errors::AGENT_NOT_FOUND))?;
                Ok(reply(&entry))
            }
            Ok(None) => Err(errors::AGENT_NOT_FOUND.into()),
            Err(e) => {
                self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "lookup read-through failed");
                Err(errors::UNAVAILABLE.into())
            }
        }
    }
}
