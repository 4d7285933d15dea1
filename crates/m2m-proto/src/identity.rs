//! M2M 2.1 identities (PROTOCOL.md B): long-term Ed25519 keys, the agent id derived from the
//! key, the hub registration proof, and the P2P transcript and key schedule.
//!
//! `AgentId = hex(SHA-256(public key)[0..16])`: 32 hex characters like a 2.0 id, but the same
//! on every reconnect and every hub, and provable. Signatures are always over a
//! domain-separated message (a label naming the purpose, then length-prefixed fields), so a
//! signature made for one purpose can never be replayed as another. See docs/SECURITY.md.

use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};

use crate::crypto::{PublicKey, B64};
use crate::defaults::MAX_IDENTITY_KEY_B64_LEN;

/// Why an identity key or signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not base64 of a 32-byte Ed25519 point, or a weak (small-order) point.
    #[error("identity is not a valid Ed25519 public key")]
    InvalidKey,
    /// Not base64 of 64 bytes, or does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The id presented is not the hash of the identity key.
    #[error("id does not match the identity key")]
    IdMismatch,
}

/// A long-term Ed25519 key pair. Its `Debug` shows only the derived id.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    public: IdentityKey,
    id: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", &self.id)
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_secret_bytes(&seed)
    }

    /// The identity of a 32-byte Ed25519 secret key (seed), e.g. read from a key file.
    pub fn from_secret_bytes(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let public = IdentityKey(signing.verifying_key().to_bytes());
        let id = public.agent_id();
        Identity {
            signing,
            public,
            id,
        }
    }

    /// The 32-byte secret, for storing in a key file (0600).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> IdentityKey {
        self.public
    }

    /// The agent id derived from the public key.
    pub fn agent_id(&self) -> &str {
        &self.id
    }

    /// Signs `message` (already domain-separated by the caller's label).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// Signs and base64-encodes.
    pub fn sign_b64(&self, message: &[u8]) -> String {
        B64.encode(self.sign(message))
    }
}

/// A validated Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey(pub [u8; 32]);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", &self.agent_id()[..8])
    }
}

impl IdentityKey {
    /// Parses base64 of the 32 raw key bytes; refuses invalid and weak points.
    pub fn from_b64(text: &str) -> Result<Self, IdentityError> {
        if text.len() > MAX_IDENTITY_KEY_B64_LEN {
            return Err(IdentityError::InvalidKey);
        }
        let raw: [u8; 32] = B64
            .decode(text.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(IdentityError::InvalidKey)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| IdentityError::InvalidKey)?;
        if key.is_weak() {
            return Err(IdentityError::InvalidKey);
        }
        Ok(IdentityKey(raw))
    }

    /// Base64 of the raw key.
    pub fn to_b64(&self) -> String {
        B64.encode(self.0)
    }

    /// `hex(SHA-256(key)[0..16])`.
    pub fn agent_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        hex::encode(&digest[..16])
    }

    /// Verifies a base64 signature over `message` (strict: no malleable or non-canonical
    /// signatures).
    pub fn verify(&self, message: &[u8], sig_b64: &str) -> Result<(), IdentityError> {
        let raw: [u8; 64] = B64
            .decode(sig_b64.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(IdentityError::BadSignature)?;
        self.verify_raw(message, &raw)
    }

    /// Verifies a raw 64-byte signature.
    pub fn verify_raw(&self, message: &[u8], sig: &[u8; 64]) -> Result<(), IdentityError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::InvalidKey)?;
        key.verify_strict(message, &Signature::from_bytes(sig))
            .map_err(|_| IdentityError::BadSignature)
    }

    /// Checks that `id` is this key's agent id.
    pub fn check_id(&self, id: &str) -> Result<(), IdentityError> {
        if self.agent_id() == id {
            Ok(())
        } else {
            Err(IdentityError::IdMismatch)
        }
    }
}

/// Builds `label || (len || field)*`: unambiguous whatever the fields contain.
pub(crate) fn domain_message(label: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut m =
        Vec::with_capacity(label.len() + 1 + fields.iter().map(|f| f.len() + 4).sum::<usize>());
    m.extend_from_slice(label.as_bytes());
    m.push(0);
    for f in fields {
        m.extend_from_slice(&(f.len() as u32).to_be_bytes());
        m.extend_from_slice(f);
    }
    m
}

/// Label of the relay attach proof ([`relay_attach_message`]).
pub const RELAY_ATTACH_LABEL: &str = "m2m/2.1 relay attach";

/// The message a client that did not register signs to attach to a hub's relay
/// (docs/RELAY.md): the connection's challenge nonce and the identity key, length-prefixed.
/// The nonce is fresh per WebSocket, so a captured proof attaches nothing elsewhere.
pub fn relay_attach_message(nonce: &str, identity: &IdentityKey) -> Vec<u8> {
    domain_message(RELAY_ATTACH_LABEL, &[nonce.as_bytes(), &identity.0])
}

/// Label of the hub registration signature.
pub const REGISTER_LABEL: &str = "m2m/2.1 register";

/// The message an agent signs to register on a 2.1 hub: the connection's challenge nonce
/// (fresh per WebSocket, so a captured signature is useless elsewhere), the identity key and
/// the claimed address and capabilities (so a relay cannot alter them). Metadata is not
/// signed: it is mutable later through `status`, which only this connection may send.
///
/// Every field is length-prefixed, and so is every capability inside the capabilities
/// field (after their count): a signature over `["a","b"]` cannot verify `["a\nb"]`, nor
/// `[]` verify `[""]`, whatever the strings contain. Pinned by
/// `tests/data/registration-v21.json`.
pub fn registration_message(
    nonce: &str,
    identity: &IdentityKey,
    address: &str,
    capabilities: &[String],
) -> Vec<u8> {
    domain_message(
        REGISTER_LABEL,
        &[
            nonce.as_bytes(),
            &identity.0,
            address.as_bytes(),
            &length_prefixed_list(capabilities),
        ],
    )
}

/// `count || (len || item)*`, each number a 4-byte big-endian integer.
fn length_prefixed_list(items: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + items.iter().map(|i| i.len() + 4).sum::<usize>());
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item.as_bytes());
    }
    out
}

/// Label of the responder's transcript signature.
pub const RESPONDER_LABEL: &str = "m2m/2.1 handshake responder";
/// Label of the initiator's transcript signature.
pub const INITIATOR_LABEL: &str = "m2m/2.1 handshake initiator";
/// HKDF info of the initiator→responder key.
pub const KEY_INFO_I2R: &[u8] = b"m2m/2.1 key initiator->responder";
/// HKDF info of the responder→initiator key.
pub const KEY_INFO_R2I: &[u8] = b"m2m/2.1 key responder->initiator";

/// Everything both sides of a 2.1 handshake agree on; its hash is what both sign.
#[derive(Debug, Clone)]
pub struct Transcript<'a> {
    /// Initiator's ephemeral X25519 key.
    pub initiator_ephemeral: &'a PublicKey,
    /// Responder's ephemeral X25519 key.
    pub responder_ephemeral: &'a PublicKey,
    /// Initiator's agent id.
    pub initiator_id: &'a str,
    /// Responder's agent id.
    pub responder_id: &'a str,
    /// Initiator's identity key.
    pub initiator_identity: &'a IdentityKey,
    /// Responder's identity key.
    pub responder_identity: &'a IdentityKey,
}

impl Transcript<'_> {
    /// SHA-256 over every field, length-prefixed, under a protocol label.
    pub fn hash(&self) -> [u8; 32] {
        let m = domain_message(
            "m2m/2.1 transcript",
            &[
                &self.initiator_ephemeral.0,
                &self.responder_ephemeral.0,
                self.initiator_id.as_bytes(),
                self.responder_id.as_bytes(),
                &self.initiator_identity.0,
                &self.responder_identity.0,
            ],
        );
        Sha256::digest(&m).into()
    }
}

/// The message a role signs: its label and the transcript hash.
pub fn transcript_signature_message(label: &str, transcript_hash: &[u8; 32]) -> Vec<u8> {
    domain_message(label, &[transcript_hash])
}

/// HKDF-SHA256 of the shared secret, salted with the transcript hash: the two directional
/// AES-256-GCM keys `(initiator→responder, responder→initiator)`.
pub fn session_keys(shared_secret: &[u8; 32], transcript_hash: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(transcript_hash), shared_secret);
    let mut i2r = [0u8; 32];
    let mut r2i = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
    let _ = hk.expand(KEY_INFO_I2R, &mut i2r);
    let _ = hk.expand(KEY_INFO_R2I, &mut r2i);
    (i2r, r2i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn agent_id_is_stable_and_32_hex() {
        let id = Identity::from_secret_bytes(&[1u8; 32]);
        assert_eq!(id.agent_id().len(), 32);
        assert!(id
            .agent_id()
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(
            Identity::from_secret_bytes(&[1u8; 32]).agent_id(),
            id.agent_id()
        );
        assert_eq!(
            IdentityKey::from_b64(&id.public().to_b64()).unwrap(),
            id.public()
        );
    }

    #[test]
    fn registration_signature_binds_nonce_and_fields() {
        let mut rng = StdRng::seed_from_u64(5);
        let id = Identity::generate(&mut rng);
        let caps = vec!["chat".to_owned()];
        let msg = registration_message("n1", &id.public(), "1.2.3.4:5", &caps);
        let sig = id.sign_b64(&msg);
        assert!(id.public().verify(&msg, &sig).is_ok());
        let other_nonce = registration_message("n2", &id.public(), "1.2.3.4:5", &caps);
        assert_eq!(
            id.public().verify(&other_nonce, &sig),
            Err(IdentityError::BadSignature)
        );
        let other_caps = registration_message("n1", &id.public(), "1.2.3.4:5", &[]);
        assert!(id.public().verify(&other_caps, &sig).is_err());
    }

    /// Failure 10 of issue 13: with capabilities joined by `\n`, `["a","b"]` and `["a\nb"]`
    /// (and `[]` and `[""]`) were the same signed message.
    #[test]
    fn registration_message_tells_capability_lists_apart() {
        let id = Identity::from_secret_bytes(&[7u8; 32]);
        let msg = |caps: &[&str]| {
            let caps: Vec<String> = caps.iter().map(|c| (*c).to_owned()).collect();
            registration_message("n", &id.public(), "h:1", &caps)
        };
        assert_ne!(msg(&["a", "b"]), msg(&["a\nb"]));
        assert_ne!(msg(&[]), msg(&[""]));
        assert_ne!(msg(&["", ""]), msg(&[""]));
        assert_ne!(msg(&["ab"]), msg(&["a", "b"]));
        let sig = id.sign_b64(&msg(&["a", "b"]));
        assert!(id.public().verify(&msg(&["a\nb"]), &sig).is_err());
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point (small order) encoded as y = 1.
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(
            IdentityKey::from_b64(&B64.encode(one)),
            Err(IdentityError::InvalidKey)
        );
        assert_eq!(
            IdentityKey::from_b64("AAAA"),
            Err(IdentityError::InvalidKey)
        );
    }

    #[test]
    fn directional_keys_differ() {
        let (a, b) = session_keys(&[1u8; 32], &[2u8; 32]);
        assert_ne!(a, b);
        assert_ne!(session_keys(&[1u8; 32], &[3u8; 32]).0, a);
    }
}
