//! The keys a handshake ends with.
//!
//! In 2.1 the initiator and the responder hash the same transcript
//! ([`crate::identity::Transcript`]) and derive the same two directional keys from it; what
//! differs is which key seals and which opens. Making that choice here, once, means the two
//! state machines cannot swap it by mistake.

use crate::crypto::{CounterKey, EnvelopeKey};
use crate::identity::session_keys;

/// Session keys: one random-nonce key for 2.0, two counter keys for 2.1.
pub(super) enum SessionKeys {
    V20(EnvelopeKey),
    V21 {
        /// What we seal with.
        send: CounterKey,
        /// What we open with.
        recv: CounterKey,
    },
}

impl SessionKeys {
    /// 2.0: one key for both directions, straight from the X25519 secret.
    pub(super) fn v20(shared_secret: &[u8; 32]) -> Self {
        SessionKeys::V20(EnvelopeKey::new(shared_secret))
    }

    /// 2.1, initiator's side: seals initiator → responder, opens responder → initiator.
    pub(super) fn v21_initiator(shared_secret: &[u8; 32], transcript_hash: &[u8; 32]) -> Self {
        let (i2r, r2i) = session_keys(shared_secret, transcript_hash);
        SessionKeys::V21 {
            send: CounterKey::new(&i2r),
            recv: CounterKey::new(&r2i),
        }
    }

    /// 2.1, responder's side: the initiator's keys the other way round.
    pub(super) fn v21_responder(shared_secret: &[u8; 32], transcript_hash: &[u8; 32]) -> Self {
        let (i2r, r2i) = session_keys(shared_secret, transcript_hash);
        SessionKeys::V21 {
            send: CounterKey::new(&r2i),
            recv: CounterKey::new(&i2r),
        }
    }

    /// Whether these keys come from an authenticated (2.1) handshake.
    pub(super) fn authenticated(&self) -> bool {
        matches!(self, SessionKeys::V21 { .. })
    }
}
