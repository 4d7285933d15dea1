//! `mailbox` (docs/MAILBOX.md "Receiving"): subscribes this WebSocket to the mail of its
//! proven identity. The subscription takes the lease (the newest one, on any hub, is the
//! one delivered to) and the first delivery turn runs right after the reply.
//!
//! Also here: how a WebSocket proves the identity that `mail` and `mailbox` act as.

use m2m_proto::hub::errors;
use m2m_proto::mailbox::MailboxSubscribed;
use serde_json::Value;

use super::ErrorCode;
use crate::client::Client;
use crate::mailbox::Delivery;
use crate::reply::ok;
use crate::state::HubState;

impl HubState {
    /// The agent id this WebSocket acts as for the mailbox: the attach proof given now
    /// (`identity`+`signature` over `relay_attach_message(nonce, identity)`, remembered
    /// for later requests), else its 2.1 registration, else a proof given earlier.
    pub(super) fn mail_identity(
        &self,
        client: &mut Client,
        identity: Option<&str>,
        signature: Option<&str>,
    ) -> Result<String, ErrorCode> {
        if let Some(claimed) = identity {
            return super::relay::prove_attach(client, claimed, signature);
        }
        if let Some(entry) = client
            .owned
            .iter()
            .find(|e| e.identity.is_some() && !e.is_replaced())
        {
            return Ok(entry.id.to_string());
        }
        client
            .proven
            .as_deref()
            .map(str::to_owned)
            .ok_or(ErrorCode::from(errors::IDENTITY_REQUIRED))
    }

    pub(super) async fn mailbox_subscribe(
        &self,
        client: &mut Client,
        identity: Option<String>,
        signature: Option<String>,
        cid: Option<Value>,
    ) -> Result<String, ErrorCode> {
        if !self.config.mailbox.enabled {
            return Err(errors::MAILBOX_UNAVAILABLE.into());
        }
        let id = self.mail_identity(client, identity.as_deref(), signature.as_deref())?;
        if let Some(d) = &client.mailbox {
            if d.recipient == id && !d.sub.ended.load(std::sync::atomic::Ordering::Acquire) {
                // Subscribing twice: the same subscription, counted again.
                let pending = self.pending_count(&id).await?;
                return Ok(ok(
                    MailboxSubscribed {
                        agent_id: id,
                        pending,
                    },
                    cid,
                ));
            }
        }
        if let Some(old) = client.mailbox.take() {
            self.mailbox.unsubscribe(&old.recipient, &old.sub);
        }
        let token = format!("{:032x}", rand::random::<u128>());
        // The bound first: a refused subscription must not take the lease from a live one.
        let sub = self
            .mailbox
            .subscribe(&id, token.clone(), self.config.mailbox.max_subscriptions)
            .ok_or(ErrorCode::from(errors::OVERLOADED))?;
        let taken = self
            .mailbox
            .store
            .take_lease(&id, &self.hub_id, &token)
            .await;
        let pending = match taken {
            Ok(()) => self.pending_count(&id).await,
            Err(_) => Err(ErrorCode::from(errors::UNAVAILABLE)),
        };
        let pending = pending.inspect_err(|_| self.mailbox.unsubscribe(&id, &sub))?;
        // The first turn runs once the reply is out (the doorbell holds the wake-up).
        sub.wake.notify_one();
        client.mailbox = Some(Box::new(Delivery::new(id.clone(), sub)));
        tracing::debug!(id = %&id[..8], pending, "mailbox subscribed");
        Ok(ok(
            MailboxSubscribed {
                agent_id: id,
                pending,
            },
            cid,
        ))
    }

    async fn pending_count(&self, id: &str) -> Result<u64, ErrorCode> {
        self.mailbox
            .store
            .count(id, self.now_ms())
            .await
            .map(|n| n.max(0) as u64)
            .map_err(|_| ErrorCode::from(errors::UNAVAILABLE))
    }
}
