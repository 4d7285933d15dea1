//! Routing policy: how an agent id becomes an address to dial and what the peer there must
//! prove. An id resolves through the address cache, else a hub `lookup`; an offline agent is
//! refused; the identity key the hub publishes for the id is checked against the id (the id
//! is the key's hash) and demanded in the handshake, so a lying hub gets the send refused,
//! not redirected. Keys that passed are remembered ([`VouchedKeys`]).
//!
//! Relay (docs/RELAY.md section 4): a record that says `reachable: "relay"`, or whose port
//! is 0, is sent to through the relay at once; any other is dialled directly within
//! `direct_connect_timeout`, and a dial that fails (connect or handshake: nothing was sent)
//! falls back to the relay when the record names one. The relayed session is 2.1 and must
//! prove the identity the record publishes; the record's relay must be our own hub's.

use std::collections::HashMap;

use m2m_proto::hub::status;
use m2m_proto::relay::{is_relay_only_address, Reachable};
use m2m_proto::IdentityKey;
use parking_lot::Mutex;
use serde_json::Value;

use super::Agent;
use crate::defaults::VOUCHED_KEYS;
use crate::error::{AgentError, Result, RELAY_NEEDS_21};
use crate::message::Route;
use crate::peer::{Credentials, Dial, PoolError};

/// Where a send by id goes: what the hub's record says, its identity checked.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub id: String,
    pub address: String,
    /// The identity key the hub vouches for under `id`.
    pub expect: Option<IdentityKey>,
    /// The public URL of the hub relaying for it.
    pub relay: Option<String>,
    pub reachable: Option<Reachable>,
}

/// Identity keys from hub records already checked against their ids: decoding an Ed25519
/// point and hashing it cost ~10 µs, on every send by id otherwise. By key text: the id it
/// was checked for, and the key.
#[derive(Debug, Default)]
pub(super) struct VouchedKeys(Mutex<HashMap<String, (String, IdentityKey)>>);

impl VouchedKeys {
    /// The identity key the hub vouches for under `id` (none if it vouches for nothing),
    /// checked by [`checked_key`]; the keys that passed are remembered.
    pub(super) fn check(
        &self,
        id: &str,
        address: &str,
        identity: Option<&str>,
    ) -> Result<Option<IdentityKey>> {
        let Some(text) = identity else {
            return Ok(None);
        };
        if let Some((checked_id, key)) = self.0.lock().get(text) {
            if checked_id == id {
                return Ok(Some(*key));
            }
        }
        let key = checked_key(id, address, text)?;
        let mut vouched = self.0.lock();
        if vouched.len() >= VOUCHED_KEYS {
            vouched.clear();
        }
        vouched.insert(text.to_owned(), (id.to_owned(), key));
        Ok(Some(key))
    }
}

impl Agent {
    /// The record of agent `id` and the identity key the hub vouches for: from the cache,
    /// else from the hub.
    pub(super) async fn resolve(&self, id: &str) -> Result<Target> {
        let known = match self.inner.cache.get(id) {
            Some(k) => k,
            None => {
                let r = self.lookup(id).await?;
                crate::cache::Known::of(
                    &r.address,
                    Some(&r.status),
                    r.identity.as_deref(),
                    r.relay.as_deref(),
                    r.reachable,
                )
            }
        };
        if known.status.as_deref() == Some(status::OFFLINE) {
            return Err(AgentError::AgentOffline(id.to_owned()));
        }
        let expect = self
            .inner
            .vouched
            .check(id, &known.address, known.identity.as_deref())?;
        Ok(Target {
            id: id.to_owned(),
            address: known.address,
            expect,
            relay: known.relay,
            reachable: known.reachable,
        })
    }

    /// Sends to `target` by the route its record calls for; returns the route taken.
    pub(super) async fn deliver_to(
        &self,
        target: &Target,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<Route> {
        if self.inner.cancel.is_cancelled() {
            return Err(AgentError::Disconnected);
        }
        let no_listener = is_relay_only_address(&target.address);
        let relay_first = no_listener || target.reachable == Some(Reachable::Relay);
        if no_listener && target.relay.is_none() {
            return Err(AgentError::NoRoute {
                agent: target.id.clone(),
                reason: format!("{RELAY_NEEDS_21} (its record names no relay)"),
            });
        }
        if !(relay_first && target.relay.is_some()) {
            let dial = Dial::Tcp {
                address: target.address.clone(),
                timeout: self.inner.config.direct_connect_timeout,
            };
            let credentials = self.credentials(target.expect);
            let sent = self
                .inner
                .pool
                .try_send(&dial, &credentials, message_type, payload, correlation_id)
                .await;
            match sent {
                Ok(()) => return Ok(Route::Direct),
                Err(PoolError::Send(e)) => return Err(e),
                Err(PoolError::Dial(e)) if target.relay.is_none() || !self.inner.config.relay => {
                    return Err(e)
                }
                Err(PoolError::Dial(e)) => {
                    tracing::debug!(id = %target.id, error = %e, "direct dial failed; trying the relay");
                }
            }
        }
        self.send_relayed(target, message_type, payload, correlation_id)
            .await
            .map(|()| Route::Relay)
    }

    /// Sends to `target` through our hub's relay, on a 2.1 session proving the identity its
    /// record publishes.
    async fn send_relayed(
        &self,
        target: &Target,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        let no_route = |reason: String| AgentError::NoRoute {
            agent: target.id.clone(),
            reason,
        };
        let Some(relay_url) = target.relay.as_deref() else {
            return Err(no_route("its record names no relay".into()));
        };
        if !self.inner.config.relay {
            return Err(no_route(
                "only the relay reaches it, and the relay is turned off (relay(false))".into(),
            ));
        }
        let Some(key) = target.expect else {
            return Err(no_route(format!(
                "{RELAY_NEEDS_21} (the hub vouches for no identity of it)"
            )));
        };
        let presence = &self.inner.presence;
        // Our own hub's relay when the record names it; another hub's (same database)
        // otherwise, attached on a WebSocket of its own.
        let ours = match presence.attached_relay() {
            Some(c) => Ok(c),
            None => presence.relay().await,
        };
        let client = match ours {
            Ok(c) if c.relay_url() == relay_url => Ok(c),
            _ => presence.foreign_relay(relay_url).await,
        }
        .map_err(|e| match e {
            AgentError::NoRoute { reason, .. } => no_route(reason),
            other => other,
        })?;
        let credentials = Credentials::Authenticated {
            expect: Some(key),
            require: true,
        };
        let dial = Dial::Relay {
            client,
            agent: target.id.clone(),
        };
        self.inner
            .pool
            .send_via(&dial, &credentials, message_type, payload, correlation_id)
            .await
    }

    /// How we connect to a peer whose identity the hub vouches for as `expect`.
    pub(super) fn credentials(&self, expect: Option<IdentityKey>) -> Credentials {
        if self.inner.local.authenticates() {
            Credentials::Authenticated {
                expect,
                require: self.inner.local.authenticated_only(),
            }
        } else {
            Credentials::plain(&self.id())
        }
    }
}

/// The identity key a hub record vouches for, checked against the id it is filed under: the
/// id is the hash of the key, so a record whose key does not hash to its id is a lie (a hub
/// trying to pass someone else's key off for this id) and nothing is sent.
fn checked_key(id: &str, address: &str, text: &str) -> Result<IdentityKey> {
    let refuse = |reason: String| AgentError::Authentication {
        address: address.to_owned(),
        reason,
    };
    let key = IdentityKey::from_b64(text)
        .map_err(|e| refuse(format!("the hub's identity for {id}: {e}")))?;
    key.check_id(id)
        .map_err(|_| refuse(format!("the hub's identity for {id} is not that id's key")))?;
    Ok(key)
}
