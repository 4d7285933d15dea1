//! Who this agent is on P2P sessions (PROTOCOL.md B): its long-term identity, whether its
//! sessions authenticate, and what it demands of peers.
//!
//! Sessions authenticate (the 2.1 handshake) when our hub id is the identity's derived id —
//! a 2.1 hub verified us — or when the application demands authenticated peers. On a 2.0
//! hub our id is a random one the hub made up; a 2.1 handshake would present the derived id
//! instead, under which a 2.0 peer could not reach us back through the hub, so we speak
//! plain 2.0 there. The hub link updates the flag on every (re)registration; the listener
//! and the pool read it for each new connection.

use std::sync::atomic::{AtomicBool, Ordering};

use m2m_proto::{Identity, PeerPolicy};

/// The agent's identity and its P2P policy.
#[derive(Debug)]
pub(crate) struct LocalIdentity {
    identity: Identity,
    authenticated_only: bool,
    /// Not registered at any hub: no hub id differs from the derived one, so sessions
    /// always authenticate (a 2.0 peer ignores the extra fields).
    unregistered: bool,
    hub_verified: AtomicBool,
}

impl LocalIdentity {
    pub(crate) fn new(identity: Identity, authenticated_only: bool, unregistered: bool) -> Self {
        LocalIdentity {
            identity,
            authenticated_only,
            unregistered,
            hub_verified: AtomicBool::new(false),
        }
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Refuse peers that do not authenticate.
    pub(crate) fn authenticated_only(&self) -> bool {
        self.authenticated_only
    }

    /// Whether the hub we are registered at verified our identity (2.1 registration).
    pub(crate) fn hub_verified(&self) -> bool {
        self.hub_verified.load(Ordering::Acquire)
    }

    pub(crate) fn set_hub_verified(&self, verified: bool) {
        self.hub_verified.store(verified, Ordering::Release);
    }

    /// Whether new P2P sessions use the 2.1 handshake.
    pub(crate) fn authenticates(&self) -> bool {
        self.authenticated_only || self.unregistered || self.hub_verified()
    }

    /// What our responder demands of initiators.
    pub(crate) fn policy(&self) -> PeerPolicy {
        if self.authenticated_only {
            PeerPolicy::AuthenticatedOnly
        } else {
            PeerPolicy::AcceptAll
        }
    }
}
