//! Routing policy: how an agent id becomes an address to dial and what the peer there must
//! prove. An id resolves through the address cache, else a hub `lookup`; an offline agent is
//! refused; the identity key the hub publishes for the id is checked against the id (the id
//! is the key's hash) and demanded in the handshake, so a lying hub gets the send refused,
//! not redirected. Keys that passed are remembered ([`VouchedKeys`]).

use std::collections::HashMap;

use m2m_proto::hub::status;
use m2m_proto::IdentityKey;
use parking_lot::Mutex;

use super::Agent;
use crate::defaults::VOUCHED_KEYS;
use crate::error::{AgentError, Result};
use crate::peer::Credentials;

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
    /// The address of agent `id` and the identity key the hub vouches for: from the cache,
    /// else from the hub.
    pub(super) async fn resolve(&self, id: &str) -> Result<(String, Option<IdentityKey>)> {
        let known = match self.inner.cache.get(id) {
            Some(k) => k,
            None => {
                let record = self.lookup(id).await?;
                crate::cache::Known {
                    address: record.address,
                    status: Some(record.status),
                    identity: record.identity,
                }
            }
        };
        if known.status.as_deref() == Some(status::OFFLINE) {
            return Err(AgentError::AgentOffline(id.to_owned()));
        }
        let expect = self
            .inner
            .vouched
            .check(id, &known.address, known.identity.as_deref())?;
        Ok((known.address, expect))
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
