//! `mail_ack` (docs/MAILBOX.md "Acknowledging"): deletes acked mail of this WebSocket's
//! subscription (ids it does not hold are ignored) and frees room for more pushes.

use std::sync::atomic::Ordering;

use m2m_proto::hub::errors;
use m2m_proto::mailbox::MailAcked;

use super::ErrorCode;
use crate::client::Client;
use crate::state::HubState;

impl HubState {
    /// `mail_ack`: deletes the acked mail of this WebSocket's subscription.
    pub(super) async fn mail_ack(
        &self,
        client: &mut Client,
        ids: Vec<String>,
    ) -> Result<MailAcked, ErrorCode> {
        let d = client
            .mailbox
            .as_deref_mut()
            .ok_or(ErrorCode::from(errors::IDENTITY_REQUIRED))?;
        let acked = self
            .mailbox
            .store
            .ack(&d.recipient, &ids)
            .await
            .map_err(|_| ErrorCode::from(errors::UNAVAILABLE))?;
        d.acked(&ids);
        self.mailbox
            .counters
            .acked
            .fetch_add(acked, Ordering::Relaxed);
        Ok(MailAcked { acked })
    }
}
