//! Sealing and opening mail (docs/MAILBOX.md section 2): HPKE base mode,
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, over a body signed by the sender.

use ed25519_dalek::Signature;
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::hpke_public;
use super::{KeyError, MailboxSecret, MAIL_LABEL, MAX_ID_LEN, SEALED_HEADER, SEALED_VERSION};
use crate::identity::{Identity, IdentityKey};

type Kem = X25519HkdfSha256;

/// The signed content of one message: the application message of a P2P `message` frame,
/// who sent it to whom, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailBody {
    /// Sender's agent id.
    pub from: String,
    /// Recipient's agent id.
    pub to: String,
    /// Message id (see [`valid_message_id`]).
    pub id: String,
    /// Application message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// Application payload.
    pub payload: Value,
    /// The request/response correlation, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When the sender sealed it, ms since the epoch.
    pub sent_at: u64,
    /// After this (ms since the epoch) the recipient drops it.
    pub expires_at: u64,
}

/// An opened, verified message.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// The body, every check of [`open`] passed.
    pub body: MailBody,
    /// The sender's identity key (its hash is `body.from`).
    pub sender: IdentityKey,
}

/// Why a sealed message was dropped; [`OpenError::reason`] is the word docs/MAILBOX.md uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not the sealed format.
    #[error("malformed sealed message")]
    Malformed,
    /// Sealed to a key this agent does not (or no longer) derive.
    #[error("sealed to an unknown mailbox key")]
    UnknownKey,
    /// HPKE did not open: tampered, or sealed for another recipient or message id.
    #[error("sealed message did not decrypt")]
    DecryptionFailed,
    /// The sender's signature does not verify, or the body is not a mail body.
    #[error("sender signature does not verify")]
    BadSignature,
    /// Addressed to another agent.
    #[error("message is addressed to another agent")]
    WrongRecipient,
    /// The body's sender is not the signing identity, or not the hub's `from`.
    #[error("sender does not match the signing identity")]
    ForgedSender,
    /// The body's id is not the hub's id.
    #[error("message id does not match")]
    WrongId,
    /// Past its `expiresAt`.
    #[error("message expired")]
    Expired,
}

impl OpenError {
    /// The reason word (docs/MAILBOX.md section 2).
    pub fn reason(self) -> &'static str {
        match self {
            OpenError::Malformed => "malformed",
            OpenError::UnknownKey => "unknown_key",
            OpenError::DecryptionFailed => "decryption_failed",
            OpenError::BadSignature => "bad_signature",
            OpenError::WrongRecipient => "wrong_recipient",
            OpenError::ForgedSender => "forged_sender",
            OpenError::WrongId => "wrong_id",
            OpenError::Expired => "expired",
        }
    }
}

/// Whether `id` may name a message: 1 to [`MAX_ID_LEN`] of `[A-Za-z0-9._:-]`.
pub fn valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn info(to: &str, issued: u64) -> Vec<u8> {
    let mut info = Vec::with_capacity(MAIL_LABEL.len() + 2 + to.len() + 8);
    info.extend_from_slice(MAIL_LABEL.as_bytes());
    info.push(0);
    info.extend_from_slice(to.as_bytes());
    info.push(0);
    info.extend_from_slice(&issued.to_be_bytes());
    info
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(MAIL_LABEL.len() + 1 + body.len());
    m.extend_from_slice(MAIL_LABEL.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

/// Seals `body` from `sender` to the recipient's verified mailbox key (`key`, the period
/// `issued`; see [`super::MailboxKey::verify`]). `body.from` should be the sender's id and
/// `body.id` a [`valid_message_id`]. Returns the `sealed` bytes (base64 them for the wire);
/// [`KeyError::InvalidKey`] for a low-order key.
pub fn seal(
    mut rng: &mut dyn CryptoRngCore,
    sender: &Identity,
    key: &[u8; 32],
    issued: u64,
    body: &MailBody,
) -> Result<Vec<u8>, KeyError> {
    let body_bytes = serde_json::to_vec(body).unwrap_or_default();
    let sig = sender.sign(&signed_message(&body_bytes));
    let mut plaintext = Vec::with_capacity(64 + 32 + body_bytes.len());
    plaintext.extend_from_slice(&sig);
    plaintext.extend_from_slice(&sender.public().0);
    plaintext.extend_from_slice(&body_bytes);
    let mut out = Vec::with_capacity(SEALED_HEADER + plaintext.len() + 16);
    out.push(SEALED_VERSION);
    out.extend_from_slice(&issued.to_be_bytes());
    let public = hpke_public(key).ok_or(KeyError::InvalidKey)?;
    // Fails only for a low-order key (an all-zero shared secret): no valid record has one.
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &public,
        &info(&body.to, issued),
        &plaintext,
        body.id.as_bytes(),
        &mut rng,
    )
    .map_err(|_| KeyError::InvalidKey)?;
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    Ok(out)
}

/// The key period a sealed message names (to pick the secret for [`open`]).
pub fn sealed_issued(sealed: &[u8]) -> Result<u64, OpenError> {
    if sealed.len() < SEALED_HEADER + 16 + 64 + 32 || sealed[0] != SEALED_VERSION {
        return Err(OpenError::Malformed);
    }
    let mut issued = [0u8; 8];
    issued.copy_from_slice(&sealed[1..9]);
    Ok(u64::from_be_bytes(issued))
}

/// Opens `sealed` for the agent `me` with `secret` (the key [`sealed_issued`] names), and
/// checks it against what the hub said (`hub_from`, `hub_id`) and the time `now_ms`, in
/// the order of docs/MAILBOX.md section 2. De-duplication is the caller's.
pub fn open(
    secret: &MailboxSecret,
    me: &str,
    hub_from: &str,
    hub_id: &str,
    sealed: &[u8],
    now_ms: u64,
) -> Result<Opened, OpenError> {
    let issued = sealed_issued(sealed)?;
    if issued != secret.issued() {
        return Err(OpenError::UnknownKey);
    }
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed[9..SEALED_HEADER])
        .map_err(|_| OpenError::Malformed)?;
    let plaintext = hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        secret.hpke_secret(),
        &enc,
        &info(me, issued),
        &sealed[SEALED_HEADER..],
        hub_id.as_bytes(),
    )
    .map_err(|_| OpenError::DecryptionFailed)?;
    if plaintext.len() < 96 {
        return Err(OpenError::BadSignature);
    }
    let (sig, rest) = plaintext.split_at(64);
    let (key, body_bytes) = rest.split_at(32);
    let mut raw = [0u8; 32];
    raw.copy_from_slice(key);
    let sender = IdentityKey(raw);
    let sig = Signature::from_slice(sig).map_err(|_| OpenError::BadSignature)?;
    sender
        .verify_raw(&signed_message(body_bytes), &sig.to_bytes())
        .map_err(|_| OpenError::BadSignature)?;
    let body: MailBody = serde_json::from_slice(body_bytes).map_err(|_| OpenError::BadSignature)?;
    if body.to != me {
        return Err(OpenError::WrongRecipient);
    }
    if sender.check_id(&body.from).is_err() || body.from != hub_from {
        return Err(OpenError::ForgedSender);
    }
    if body.id != hub_id {
        return Err(OpenError::WrongId);
    }
    if body.expires_at <= now_ms {
        return Err(OpenError::Expired);
    }
    Ok(Opened { body, sender })
}
