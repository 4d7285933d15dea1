//! `register` (PROTOCOL.md A2, 2.1 in B): checks the address, capabilities and metadata,
//! verifies a 2.1 identity against this WebSocket's challenge, spends one of the source
//! IP's registrations, writes the row and mirrors it. A 2.1 id registering again replaces
//! its earlier registration (the directory closes the WebSocket that held it).

use m2m_proto::hub::errors;
use m2m_proto::hub::{Register, Registered};
use m2m_proto::identity::{registration_message, IdentityKey};

use super::ErrorCode;
use crate::address;
use crate::client::Client;
use crate::directory::Holder;
use crate::metrics::Refusal;
use crate::state::HubState;
use crate::store::{AgentRow, Write};
use std::sync::atomic::Ordering;

impl HubState {
    /// The 2.1 proof of a `register` with `identity`: the key, verified against this
    /// WebSocket's nonce over the address exactly as sent (empty when absent) and the
    /// capabilities. Returns the derived id and the key (canonical base64).
    fn verify_identity(
        &self,
        client: &Client,
        r: &Register,
        claimed: &str,
    ) -> Result<(String, String), ErrorCode> {
        let key = IdentityKey::from_b64(claimed).map_err(|_| errors::INVALID_IDENTITY)?;
        let signature = r.signature.as_deref().ok_or(errors::INVALID_SIGNATURE)?;
        let message = registration_message(
            &client.nonce,
            &key,
            r.address.as_deref().unwrap_or(""),
            &r.capabilities,
        );
        key.verify(&message, signature)
            .map_err(|_| errors::INVALID_SIGNATURE)?;
        Ok((key.agent_id(), key.to_b64()))
    }

    /// The registration's `mailbox` key, when present, verifies under its identity
    /// (docs/MAILBOX.md "In the registration"): `invalid_mailbox_key` otherwise.
    fn verify_mailbox_key(&self, r: &Register, claimed: &str, id: &str) -> Result<(), ErrorCode> {
        let Some(key) = &r.mailbox else {
            return Ok(());
        };
        let identity = IdentityKey::from_b64(claimed).map_err(|_| errors::INVALID_IDENTITY)?;
        let now = self.now_ms().max(0) as u64;
        key.verify(&identity, id, now)
            .map_err(|_| ErrorCode::from(errors::INVALID_MAILBOX_KEY))?;
        Ok(())
    }

    pub(super) async fn register(
        &self,
        client: &mut Client,
        r: Register,
    ) -> Result<Registered, ErrorCode> {
        let limits = &self.config.limits;
        if client.owned.len() >= limits.max_agents_per_connection && r.identity.is_none() {
            return Err(errors::TOO_MANY_AGENTS.into());
        }
        // Port 0 says "relay-only" (docs/RELAY.md): only a 2.1 agent can be relayed to.
        let relay_only = r.identity.is_some() && self.config.relay.enabled;
        let address = address::dial_address(
            client.ip,
            r.address.as_deref(),
            limits.max_address_len,
            relay_only,
        )?;
        self.check_capabilities(&r.capabilities)?;
        self.check_metadata(&r.metadata)?;
        // A mailbox key needs an identity to be signed by (docs/MAILBOX.md section 1).
        if r.mailbox.is_some() && r.identity.is_none() {
            return Err(errors::IDENTITY_REQUIRED.into());
        }
        // Without `identity`: 2.0, a new random id every time (a `signature` alone proves
        // nothing and is ignored).
        let (id, identity) = match r.identity.as_deref() {
            None => (format!("{:032x}", rand::random::<u128>()), None),
            Some(claimed) => {
                let (id, key) = self.verify_identity(client, &r, claimed)?;
                self.verify_mailbox_key(&r, claimed, &id)?;
                // Registering its own id again does not take another slot.
                if client.owned.len() >= limits.max_agents_per_connection
                    && client.owned(&id).is_none()
                {
                    return Err(errors::TOO_MANY_AGENTS.into());
                }
                (id, Some(key))
            }
        };
        // Counted last: a refused or invalid register does not spend the IP's share.
        if !self.registrations.try_take(client.ip, self.instant()) {
            self.metrics.refused(Refusal::RegistrationsPerIp);
            return Err(errors::TOO_MANY_REGISTRATIONS.into());
        }
        let now = self.now_ms();
        let mut row = AgentRow {
            id,
            address: address.clone(),
            capabilities: r.capabilities,
            metadata: r.metadata,
            identity,
            status: m2m_proto::hub::status::ONLINE.to_owned(),
            last_seen: now,
            created_at: now,
            hub: self.hub_id.clone(),
            token: format!("{:032x}", rand::random::<u128>()),
            version: 0,
            // Attached nowhere yet (a new registration attaches again); a relay-only
            // agent can only be reached through a relay.
            relay: None,
            reachable: m2m_proto::relay::is_relay_only_address(&address)
                .then(|| m2m_proto::relay::Reachable::Relay.as_str().to_owned()),
            // Stored as registered: records carry it byte for byte as the agent signed it.
            mailbox: r
                .mailbox
                .as_ref()
                .and_then(|k| serde_json::to_string(k).ok()),
        };
        row.version = self
            .writer
            .write(Write::Insert(row.clone()))
            .await?
            .ok_or(ErrorCode::from(errors::UNAVAILABLE))?;
        let holder = Holder {
            serial: client.serial,
            evict: client.evict.clone(),
        };
        let entry = self
            .directory
            .register(&row, holder)
            .ok_or(ErrorCode::from(errors::UNAVAILABLE))?;
        if *entry.token != *row.token {
            // A newer registration of this id (through another hub) was mirrored before
            // ours: ours is already superseded, so this WebSocket closes as it would had
            // the newer one come a moment later.
            client.evict.cancel();
        } else {
            let was_empty = client.owned.is_empty();
            // This WebSocket registering its id again: the new entry replaced the old.
            client.owned.retain(|e| e.key != entry.key);
            if was_empty {
                self.registered.fetch_add(1, Ordering::Relaxed);
            }
            client.owned.push(entry);
        }
        tracing::debug!(
            id = %&row.id[..8],
            address = %row.address,
            identity = row.identity.is_some(),
            "agent registered"
        );
        Ok(Registered {
            id: row.id,
            address: row.address,
        })
    }
}
