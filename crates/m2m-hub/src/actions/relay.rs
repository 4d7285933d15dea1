//! `relay` (docs/RELAY.md section 1): attaches this WebSocket to the relay under a verified
//! agent id — its 2.1 registration, or the proof of a key over this WebSocket's nonce.
//!
//! A registered agent's address is probed first (dialled at this WebSocket's own IP only).
//! The probe runs in a task of its own; the client's task keeps serving meanwhile, and the
//! probe hands the reply back through the attachment's [`Port`](crate::relay) inbox, which
//! the client's task drains as it does relayed frames: the reply and the attachment
//! becoming routable happen there, in order, so no frame reaches the client before its
//! `relay` reply.

use std::sync::Arc;

use m2m_proto::hub::errors;
use m2m_proto::hub::reply::RelayAttached;
use m2m_proto::identity::{relay_attach_message, IdentityKey};
use m2m_proto::relay::{id_text, raw_id, Reachable};
use serde_json::Value;

use super::ErrorCode;
use crate::client::Client;
use crate::metrics::Refusal;
use crate::relay::{probe, Attachment, Msg};
use crate::reply::ok;
use crate::state::HubState;
use crate::store::Write;

/// Checks the attach proof of a WebSocket that did not register (docs/RELAY.md section 1:
/// the key, and a signature over this connection's nonce), used by `relay`, `mailbox` and
/// `mail`; remembers the proven id on the client and returns it.
pub(super) fn prove_attach(
    client: &mut Client,
    claimed: &str,
    signature: Option<&str>,
) -> Result<String, ErrorCode> {
    let key = IdentityKey::from_b64(claimed).map_err(|_| errors::INVALID_IDENTITY)?;
    let signature = signature.ok_or(errors::INVALID_SIGNATURE)?;
    key.verify(&relay_attach_message(&client.nonce, &key), signature)
        .map_err(|_| errors::INVALID_SIGNATURE)?;
    let id = key.agent_id();
    client.proven = Some(id.as_str().into());
    Ok(id)
}

/// The reply of a `relay` whose answer comes later (after the probe): nothing now.
pub(crate) const DEFERRED: String = String::new();

impl HubState {
    pub(super) async fn relay_attach(
        &self,
        client: &mut Client,
        identity: Option<String>,
        signature: Option<String>,
        cid: Option<Value>,
    ) -> Result<String, ErrorCode> {
        if !self.config.relay.enabled {
            return Err(errors::RELAY_UNAVAILABLE.into());
        }
        let (id, registered) = match identity.as_deref() {
            Some(claimed) => {
                let id = prove_attach(client, claimed, signature.as_deref())?;
                let entry = client.owned(&id).filter(|e| !e.is_replaced());
                (id, entry)
            }
            None => {
                let entry = client
                    .owned
                    .iter()
                    .find(|e| e.identity.is_some() && !e.is_replaced())
                    .cloned()
                    .ok_or(ErrorCode::from(errors::IDENTITY_REQUIRED))?;
                (entry.id.to_string(), Some(entry))
            }
        };
        let raw = raw_id(&id).ok_or(ErrorCode::from(errors::INVALID_IDENTITY))?;
        let url = self.relay_url(client);
        let reply = Reply {
            url,
            id,
            window: self.config.relay.window,
            max_streams: self.config.relay.max_streams,
            cid,
        };
        if let Some(att) = client.relay.as_deref_mut() {
            if att.port.id == raw {
                if !att.active {
                    // Asked again while the probe runs: routable now, answered without
                    // the probe's result (its own reply still follows it).
                    att.active = true;
                    self.relay.insert(&att.port);
                }
                // Attaching twice is harmless: the same reply.
                return Ok(reply.text(att.reachable));
            }
            att.end(&self.relay, None);
        }
        let port = self.relay.port(raw);
        let mut att = Box::new(Attachment::new(port.clone(), &self.relay));
        let probe_to = registered
            .as_ref()
            .and_then(|e| e.address.rsplit_once(':'))
            .map(|(_, p)| p.parse::<u16>().unwrap_or(0));
        let reachable = match probe_to {
            None => None,
            Some(0) => Some(Reachable::Relay),
            Some(p) => match self.relay.probe_permit(client.ip, self.instant()) {
                None => {
                    self.metrics.refused(Refusal::RelayProbes);
                    None
                }
                Some(permit) => {
                    // The probe task owns a handle on the port only: when the WebSocket
                    // closes first, its result is pushed into a closed port and dropped.
                    let (ip, timeout) = (client.ip, self.config.relay.probe_timeout);
                    tokio::spawn(async move {
                        let reachable = probe(ip, p, timeout).await;
                        drop(permit);
                        let _ = port.push_one(Msg::Attached {
                            reply: reply.text(Some(reachable)),
                            reachable: Some(reachable),
                        });
                    });
                    client.relay = Some(att);
                    return Ok(DEFERRED);
                }
            },
        };
        att.active = true;
        att.reachable = reachable;
        self.relay.insert(&att.port);
        client.relay = Some(att);
        self.publish_relay(client).await;
        Ok(reply.text(reachable))
    }

    /// Writes the record's relay fields for the registered agent this WebSocket is
    /// attached as (a WebSocket attached with a proof only has no record to change).
    pub(crate) async fn publish_relay(&self, client: &Client) {
        let Some(att) = client.relay.as_deref().filter(|a| a.active) else {
            return;
        };
        let id = id_text(&att.port.id);
        let Some(entry) = client.owned(&id).filter(|e| !e.is_replaced()) else {
            return;
        };
        let url = self.relay_url(client);
        let reachable = att.reachable;
        let write = Write::SetRelay {
            id,
            token: entry.token.to_string(),
            relay: Some(url.to_string()),
            reachable: reachable.map(|r| r.as_str().to_owned()),
        };
        match self.writer.write(write).await {
            Ok(Some(version)) => self
                .directory
                .set_relay(&entry, version, Some(url), reachable),
            Ok(None) => {}
            Err(_) => tracing::warn!("relay fields of a record not written"),
        }
    }

    /// The URL records name for this hub's relay: `public_url`, or the URL this client
    /// reached the hub at.
    pub(crate) fn relay_url(&self, client: &Client) -> Arc<str> {
        match (&self.config.public_url, &client.hub_url) {
            (Some(url), _) => Arc::from(url.as_str()),
            (None, Some(url)) => url.clone(),
            (None, None) => Arc::from(crate::http::websocket_url(self, None)),
        }
    }
}

/// What the `relay` reply says besides `reachable`.
struct Reply {
    url: Arc<str>,
    id: String,
    window: u32,
    max_streams: u32,
    cid: Option<Value>,
}

impl Reply {
    fn text(&self, reachable: Option<Reachable>) -> String {
        ok(
            RelayAttached {
                relay: self.url.to_string(),
                agent_id: self.id.clone(),
                reachable,
                window: self.window,
                max_streams: self.max_streams,
            },
            self.cid.clone(),
        )
    }
}
