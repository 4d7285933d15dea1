//! Relay attachment (docs/RELAY.md): the `relay` action after each registration on a 2.1
//! hub, and the lazy attach of a WebSocket that did not register, proving our key with a
//! signature over the connection's nonce.

use std::sync::Arc;

use m2m_proto::hub::HubRequest;
use m2m_proto::relay::Reachable;

use super::HubPresence;
use crate::error::{AgentError, Result, RELAY_NEEDS_21};
use crate::hub_client::HubClient;
use crate::relay::RelayClient;

impl HubPresence {
    /// After a registration: attaches to the relay on a 2.1 hub (unless turned off). Fails
    /// only for a relay-only agent, which is unreachable without it.
    pub(super) async fn attach_registered(
        &self,
        client: &HubClient,
        hub_verified: bool,
    ) -> Result<Option<Reachable>> {
        let relay_only = self.relay.relay_only;
        if !self.relay.enabled || !hub_verified {
            if relay_only {
                return Err(AgentError::Config(format!(
                    "a relay-only agent needs a 2.1 hub with its relay on: {}",
                    if hub_verified {
                        "the relay is turned off (relay(false))"
                    } else {
                        "this hub is 2.0"
                    }
                )));
            }
            return Ok(None);
        }
        let req = HubRequest {
            action: Some(m2m_proto::relay::ACTION.into()),
            ..HubRequest::default()
        };
        match client.attach_relay(req, self.relay.on_open.clone()).await {
            Ok(relay) => Ok(relay.reachable()),
            Err(e) if relay_only => Err(AgentError::Config(format!(
                "a relay-only agent needs the hub's relay, which refused: {e}"
            ))),
            Err(e) => {
                tracing::debug!(error = %e, "the hub does not relay for us");
                Ok(None)
            }
        }
    }

    /// The relay of the current WebSocket, attaching it now if it is not yet (a WebSocket
    /// that did not register proves our key with the connection's nonce).
    pub(crate) async fn relay(&self) -> Result<Arc<RelayClient>> {
        let connected = self.connected()?;
        if let Some(relay) = connected.client.relay() {
            return Ok(relay);
        }
        if !self.relay.enabled {
            return Err(AgentError::NoRoute {
                agent: String::new(),
                reason: "the relay is turned off (relay(false))".into(),
            });
        }
        let req = if connected.registered {
            if !self.local.hub_verified() {
                return Err(AgentError::NoRoute {
                    agent: String::new(),
                    reason: format!("{RELAY_NEEDS_21} (this hub is 2.0)"),
                });
            }
            HubRequest {
                action: Some(m2m_proto::relay::ACTION.into()),
                ..HubRequest::default()
            }
        } else {
            let Some(nonce) = Self::probe_challenge(&connected.client).await? else {
                return Err(AgentError::NoRoute {
                    agent: String::new(),
                    reason: format!("{RELAY_NEEDS_21} (this hub is 2.0)"),
                });
            };
            self.attach_proof(&nonce)
        };
        let on_open = connected
            .registered
            .then(|| self.relay.on_open.clone())
            .flatten();
        connected.client.attach_relay(req, on_open).await
    }

    /// The relay of the current WebSocket if it is attached (no request).
    pub(crate) fn attached_relay(&self) -> Option<Arc<RelayClient>> {
        self.connected().ok()?.client.relay()
    }
}
