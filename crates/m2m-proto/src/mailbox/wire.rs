//! Reply bodies and events of the mailbox actions (docs/MAILBOX.md section 3). Replies are
//! wrapped in [`crate::hub::Reply`] like every other.

use serde::{Deserialize, Serialize};

/// `mail` reply body: `{"queued":true,"messageId":…,"expiresAt":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailQueued {
    /// Always `true`.
    pub queued: bool,
    /// The stored message's id.
    pub message_id: String,
    /// When the hub drops it, ms since the epoch.
    pub expires_at: u64,
}

/// `mailbox` reply body: `{"agentId":…,"pending":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailboxSubscribed {
    /// The id whose mail this WebSocket receives.
    pub agent_id: String,
    /// Messages stored for it at subscription.
    pub pending: u64,
}

/// `mail_ack` reply body: `{"acked":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAcked {
    /// Messages deleted.
    pub acked: u64,
}

/// A pushed message:
/// `{"event":"mail","id":…,"from":…,"storedAt":…,"expiresAt":…,"sealed":"<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailEvent {
    /// Always [`super::EVENT_MAIL`].
    pub event: String,
    /// Message id.
    pub id: String,
    /// Sender id as the hub stamped it.
    pub from: String,
    /// When the hub stored it, ms since the epoch.
    pub stored_at: u64,
    /// When the hub drops it, ms since the epoch.
    pub expires_at: u64,
    /// Base64 of the sealed bytes.
    pub sealed: String,
}

/// `{"event":"mail_drained"}`: everything stored has been pushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailDrained {
    /// Always [`super::EVENT_DRAINED`].
    pub event: String,
}

impl Default for MailDrained {
    fn default() -> Self {
        MailDrained {
            event: super::EVENT_DRAINED.to_owned(),
        }
    }
}
