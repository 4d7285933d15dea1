//! Relays of other hubs (issue 20; docs/RELAY.md "Across hubs"). Hubs on one database
//! share the registry, but a relay-only agent is attached to one of them: its record names
//! that hub's relay URL. A sender at another hub reaches it by attaching to that relay too —
//! a WebSocket of its own that does not register, proving our key with the attach proof over
//! that hub's nonce — and opens its stream there. The session inside is the same end-to-end
//! 2.1 session as through our own hub.
//!
//! Bounds: at most [`MAX_FOREIGN_RELAYS`] such WebSockets, the least recently used closed
//! when another is needed; one that closed is opened again at the next send. Only `ws://`
//! and `wss://` URLs are dialled, and only the ones records name (which hubs write, not
//! agents).

use std::sync::Arc;

use m2m_proto::hub::HubRequest;
use tokio::time::Instant;

use super::HubPresence;
use crate::defaults::MAX_FOREIGN_RELAYS;
use crate::error::{AgentError, Result, RELAY_NEEDS_21};
use crate::hub_client::HubClient;
use crate::relay::RelayClient;

/// The WebSockets attached to other hubs' relays.
#[derive(Debug, Default)]
pub(crate) struct ForeignRelays {
    /// Held while one is opened, so concurrent sends to one hub open one WebSocket.
    opening: tokio::sync::Mutex<()>,
    open: parking_lot::Mutex<Vec<Foreign>>,
}

#[derive(Debug)]
struct Foreign {
    url: String,
    client: HubClient,
    used: Instant,
}

impl ForeignRelays {
    /// The attached relay at `url`, if its WebSocket is still open (marks it used).
    fn get(&self, url: &str) -> Option<Arc<RelayClient>> {
        let mut open = self.open.lock();
        open.retain(|f| !f.client.is_closed());
        let f = open.iter_mut().find(|f| f.url == url)?;
        f.used = Instant::now();
        f.client.relay()
    }

    /// Keeps `client` for `url`, closing the least recently used beyond the bound.
    fn insert(&self, url: &str, client: HubClient) {
        let mut open = self.open.lock();
        // One WebSocket per hub: an older one (its relay detached) is replaced.
        open.retain(|f| {
            let keep = f.url != url;
            if !keep {
                f.client.close();
            }
            keep
        });
        while open.len() >= MAX_FOREIGN_RELAYS {
            let oldest = (0..open.len())
                .min_by_key(|&i| open[i].used)
                .expect("not empty");
            open.swap_remove(oldest).client.close();
        }
        open.push(Foreign {
            url: url.to_owned(),
            client,
            used: Instant::now(),
        });
    }

    /// Closes them all (the agent disconnects).
    pub(crate) fn close_all(&self) {
        for f in self.open.lock().drain(..) {
            f.client.close();
        }
    }
}

impl HubPresence {
    /// The relay of the hub at `url` (not ours), attaching a WebSocket of our own to it if
    /// none is open.
    pub(crate) async fn foreign_relay(&self, url: &str) -> Result<Arc<RelayClient>> {
        let no_route = |reason: String| AgentError::NoRoute {
            agent: String::new(),
            reason,
        };
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("ws://") || lower.starts_with("wss://")) {
            return Err(no_route(format!(
                "its record names a relay that is not a WebSocket URL ({url})"
            )));
        }
        if let Some(relay) = self.foreign.get(url) {
            return Ok(relay);
        }
        let _one = self.foreign.opening.lock().await;
        if let Some(relay) = self.foreign.get(url) {
            return Ok(relay);
        }
        let client = HubClient::connect(
            url,
            self.timing.request_timeout,
            &self.cancel,
            &self.tracker,
        )
        .await?;
        let attached = async {
            let Some(nonce) = Self::probe_challenge(&client).await? else {
                return Err(no_route(format!(
                    "{RELAY_NEEDS_21} (the hub at {url} is 2.0)"
                )));
            };
            let req = self.attach_proof(&nonce);
            client.attach_relay(req, None).await
        }
        .await;
        match attached {
            Ok(relay) => {
                tracing::debug!(%url, "attached to another hub's relay");
                self.foreign.insert(url, client);
                Ok(relay)
            }
            Err(e) => {
                client.close();
                Err(e)
            }
        }
    }

    /// The `relay` action of a WebSocket that did not register: our key and a signature over
    /// the connection's nonce (docs/RELAY.md section 1).
    pub(super) fn attach_proof(&self, nonce: &str) -> HubRequest {
        let identity = self.local.identity();
        let public = identity.public();
        HubRequest {
            action: Some(m2m_proto::relay::ACTION.into()),
            identity: Some(public.to_b64().into()),
            signature: Some(
                identity
                    .sign_b64(&m2m_proto::identity::relay_attach_message(nonce, &public))
                    .into(),
            ),
            ..HubRequest::default()
        }
    }
}
