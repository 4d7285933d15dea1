//! `status`: an agent's own status string and metadata (merged into what it has),
//! written before it is acknowledged.

use std::sync::Arc;

use m2m_proto::hub::errors;
use serde_json::{Map, Value};

use super::ErrorCode;
use crate::client::Client;
use crate::directory::Status;
use crate::state::HubState;
use crate::store::Write;

impl HubState {
    pub(super) async fn set_status(
        &self,
        client: &mut Client,
        id: &str,
        status: Option<String>,
        metadata: Map<String, Value>,
    ) -> Result<m2m_proto::hub::Empty, ErrorCode> {
        let entry = self.owned_entry(client, id)?;
        let status = status.filter(|s| !s.is_empty());
        if status
            .as_ref()
            .is_some_and(|s| s.len() > self.config.limits.max_status_len)
        {
            return Err(errors::STATUS_TOO_LONG.into());
        }
        let current = entry.state();
        let mut merged = (*current.metadata).clone();
        merged.extend(metadata);
        self.check_metadata(&merged)?;
        let new_status = status
            .as_deref()
            .map(Status::from_wire)
            .unwrap_or(current.status);
        let now = self.now_ms();
        let version = self
            .writer
            .write(Write::Update {
                id: id.to_owned(),
                token: entry.token.to_string(),
                status: new_status.as_str().to_owned(),
                metadata: merged.clone(),
                last_seen: now,
            })
            .await?
            .ok_or(ErrorCode::from(errors::AGENT_NOT_FOUND))?;
        self.directory.set(
            &entry,
            version,
            Some(new_status),
            Some(Arc::new(merged)),
            Some(now),
        );
        Ok(m2m_proto::hub::Empty {})
    }
}
