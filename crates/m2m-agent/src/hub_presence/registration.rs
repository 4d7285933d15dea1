//! Registration at the hub: the `challenge` probe that tells a 2.1 hub from a 2.0 one, the
//! `register` request (signed over the connection's nonce on a 2.1 hub), and the status
//! restored after a re-registration.

use m2m_proto::hub::{errors as hub_errors, Empty, HubRequest, Registered};
use m2m_proto::identity::registration_message;
use serde_json::Value;

use super::{Connected, HubPresence, Registration, Standing};
use crate::error::{AgentError, Result};
use crate::hub_client::HubClient;

/// The reply to the `challenge` probe of a 2.1 hub.
#[derive(Debug, serde::Deserialize)]
struct ChallengeReply {
    nonce: String,
}

impl HubPresence {
    /// The nonce of a 2.1 hub, `None` for a 2.0 hub (which does not know the action).
    pub(crate) async fn probe_challenge(client: &HubClient) -> Result<Option<String>> {
        let req = HubRequest {
            action: Some("challenge".into()),
            ..HubRequest::default()
        };
        match client.request::<ChallengeReply>(req).await {
            Ok(reply) => Ok(Some(reply.nonce)),
            Err(AgentError::Hub(e)) if e == hub_errors::UNKNOWN_ACTION => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a WebSocket and registers on it; it replaces the current one.
    pub(crate) async fn register(&self) -> Result<Standing> {
        let client = self.open().await?;
        let reg = self.registration.lock().clone();
        let registered = match self.register_on(&client, &reg).await {
            Ok(r) => r,
            Err(e) => {
                client.close();
                return Err(e);
            }
        };
        let (registered, hub_verified) = registered;
        if let Some(status) = reg.status {
            let req = HubRequest {
                action: Some("status".into()),
                id: Some(registered.id.clone().into()),
                status: Some(status.into()),
                ..HubRequest::default()
            };
            if let Err(e) = client.request::<Empty>(req).await {
                tracing::debug!(error = %e, "restoring status after register failed");
            }
        }
        let reachable = match self.attach_registered(&client, hub_verified).await {
            Ok(reachable) => reachable,
            Err(e) => {
                client.close();
                return Err(e);
            }
        };
        self.subscribe_mailbox(&client, hub_verified).await;
        let standing = Standing {
            id: registered.id.clone(),
            address: registered.address,
            hub_verified,
            reachable,
        };
        self.install(
            Connected {
                client,
                id: registered.id,
                registered: true,
            },
            &standing,
        );
        self.local.set_hub_verified(hub_verified);
        Ok(standing)
    }

    /// Probes for 2.1, then registers; returns the hub's answer and whether it verified us.
    async fn register_on(
        &self,
        client: &HubClient,
        reg: &Registration,
    ) -> Result<(Registered, bool)> {
        let nonce = Self::probe_challenge(client).await?;
        let mut req = HubRequest {
            action: Some("register".into()),
            address: Some(reg.address.clone().into()),
            capabilities: Some(reg.capabilities.clone().into()),
            metadata: Some(Value::Object(reg.metadata.clone())),
            ..HubRequest::default()
        };
        let identity = self.local.identity();
        if let Some(nonce) = &nonce {
            let public = identity.public();
            let signed = registration_message(nonce, &public, &reg.address, &reg.capabilities);
            req.identity = Some(public.to_b64().into());
            req.signature = Some(identity.sign_b64(&signed).into());
            // Not covered by the registration's signature: signed on its own.
            req.mailbox = self.mailbox_key();
        }
        let registered: Registered = client.request(req).await?;
        if nonce.is_some() && registered.id != identity.agent_id() {
            // A 2.1 hub must register us under the id our key proves; anything else would
            // have peers address us under an id our handshakes contradict.
            return Err(AgentError::Hub(format!(
                "hub registered us as {} instead of our identity's id {}",
                registered.id,
                identity.agent_id()
            )));
        }
        Ok((registered, nonce.is_some()))
    }
}
