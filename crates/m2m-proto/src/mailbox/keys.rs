//! Mailbox keys (docs/MAILBOX.md section 1): derived from the identity and a rotation time,
//! published signed by the identity, verified by senders.

use base64::Engine;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{ms, KEY_LABEL, KEY_PERIOD, KEY_SKEW, MAX_TTL};
use crate::crypto::B64;
use crate::identity::{domain_message, Identity, IdentityKey};

type Kem = X25519HkdfSha256;

/// Why a published mailbox key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// `key` is not base64 of 32 bytes.
    #[error("mailbox key is not base64 of a 32-byte X25519 key")]
    InvalidKey,
    /// `sig` is not the identity's signature over the key.
    #[error("mailbox key signature does not verify")]
    BadSignature,
    /// The identity does not hash to the agent id.
    #[error("mailbox key's identity does not match the agent id")]
    IdMismatch,
    /// `issued` is further in the future than clocks drift.
    #[error("mailbox key is issued in the future")]
    FromTheFuture,
}

/// A mailbox key as registrations and records carry it:
/// `{"key":"<base64>","issued":<ms>,"sig":"<base64>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxKey {
    /// Base64 of the 32-byte X25519 public key.
    pub key: String,
    /// Start of the key's period, ms since the epoch (also names the key in sealed mail).
    pub issued: u64,
    /// Base64 Ed25519 signature of the agent's identity over [`key_message`].
    pub sig: String,
}

/// The message an identity signs to publish a mailbox key: the label, then the agent id,
/// `issued` (u64 big-endian) and the raw key, each length-prefixed.
pub fn key_message(agent_id: &str, issued: u64, key: &[u8; 32]) -> Vec<u8> {
    domain_message(
        KEY_LABEL,
        &[agent_id.as_bytes(), &issued.to_be_bytes(), key],
    )
}

/// The start of the key period holding `now_ms`.
pub fn period_start(now_ms: u64) -> u64 {
    now_ms - now_ms % ms(KEY_PERIOD)
}

impl MailboxKey {
    /// The raw public key, if `key` is base64 of 32 bytes.
    pub fn raw_key(&self) -> Result<[u8; 32], KeyError> {
        let bytes = B64.decode(&self.key).map_err(|_| KeyError::InvalidKey)?;
        bytes.try_into().map_err(|_| KeyError::InvalidKey)
    }

    /// Checks the key as a sender (or the hub at registration) must: `identity` hashes to
    /// `agent_id`, `sig` verifies over [`key_message`], and `issued` is not beyond
    /// `now_ms` + [`KEY_SKEW`]. Returns the raw key to seal to.
    pub fn verify(
        &self,
        identity: &IdentityKey,
        agent_id: &str,
        now_ms: u64,
    ) -> Result<[u8; 32], KeyError> {
        identity
            .check_id(agent_id)
            .map_err(|_| KeyError::IdMismatch)?;
        let raw = self.raw_key()?;
        identity
            .verify(&key_message(agent_id, self.issued, &raw), &self.sig)
            .map_err(|_| KeyError::BadSignature)?;
        if self.issued > now_ms.saturating_add(ms(KEY_SKEW)) {
            return Err(KeyError::FromTheFuture);
        }
        Ok(raw)
    }
}

/// One derived mailbox key pair. `Debug` shows only `issued`.
#[derive(Clone)]
pub struct MailboxSecret {
    issued: u64,
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for MailboxSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MailboxSecret(issued {})", self.issued)
    }
}

impl MailboxSecret {
    /// The key pair of `identity` for the period starting at `issued` (docs/MAILBOX.md
    /// section 1: HKDF-SHA256 over the identity secret, then RFC 9180 DeriveKeyPair).
    pub fn derive(identity: &Identity, issued: u64) -> Self {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(KEY_LABEL.as_bytes()), &identity.secret_bytes());
        let mut ikm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8,160-byte limit: cannot fail.
        let _ = hk.expand(&issued.to_be_bytes(), &mut ikm);
        let (secret, public) = Kem::derive_keypair(&ikm);
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&public.to_bytes());
        MailboxSecret {
            issued,
            secret,
            public: raw,
        }
    }

    /// Start of the key's period.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The raw public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The record form, signed by `identity` (the identity this key was derived from).
    pub fn publish(&self, identity: &Identity) -> MailboxKey {
        MailboxKey {
            key: B64.encode(self.public),
            issued: self.issued,
            sig: identity.sign_b64(&key_message(identity.agent_id(), self.issued, &self.public)),
        }
    }

    pub(super) fn hpke_secret(&self) -> &<Kem as hpke::Kem>::PrivateKey {
        &self.secret
    }
}

/// An agent's mailbox keys: the current one to publish, and the older ones its mail may
/// still be sealed to, each re-derived from the identity on demand.
#[derive(Debug, Clone)]
pub struct MailboxKeys {
    identity: Identity,
}

impl MailboxKeys {
    /// The keys of `identity`.
    pub fn new(identity: Identity) -> Self {
        MailboxKeys { identity }
    }

    /// The identity the keys derive from.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The key to publish at `now_ms`.
    pub fn current(&self, now_ms: u64) -> MailboxSecret {
        MailboxSecret::derive(&self.identity, period_start(now_ms))
    }

    /// The key a sealed message names by `issued`, if mail to it may still exist at
    /// `now_ms`: a period start, no more than [`KEY_SKEW`] ahead, no older than
    /// [`KEY_PERIOD`] + [`MAX_TTL`].
    pub fn secret_for(&self, issued: u64, now_ms: u64) -> Option<MailboxSecret> {
        let oldest = now_ms.saturating_sub(ms(KEY_PERIOD) + ms(MAX_TTL));
        let newest = now_ms.saturating_add(ms(KEY_SKEW));
        let aligned = issued % ms(KEY_PERIOD) == 0;
        (aligned && issued >= oldest && issued <= newest)
            .then(|| MailboxSecret::derive(&self.identity, issued))
    }
}

/// The HPKE public key of a raw key (any 32 bytes are an X25519 public key).
pub(super) fn hpke_public(raw: &[u8; 32]) -> Option<<Kem as hpke::Kem>::PublicKey> {
    <Kem as hpke::Kem>::PublicKey::from_bytes(raw).ok()
}
