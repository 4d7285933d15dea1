//! Sealing and queuing a message for an agent that is offline or unreachable: the record's
//! mailbox key is verified against the record's identity and id (a key that does not
//! verify is never used), the message is sealed to it (a UUID v4 message id, `sentAt` now,
//! `expiresAt` now + TTL) and stored with the `mail` action.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use m2m_proto::hub::{errors as hub_errors, HubRequest};
use m2m_proto::mailbox::{seal, MailBody, MailQueued, MailboxKey, ACTION_MAIL, MAX_TTL};
use m2m_proto::{Identity, IdentityKey};
use serde_json::Value;

use super::now_ms;
use crate::error::{AgentError, Result};

/// A fresh message id: a UUID v4 (random, RFC 9562 version and variant bits).
pub(crate) fn message_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The application message to seal.
pub(crate) struct Outgoing<'a> {
    pub to: &'a str,
    pub message_type: &'a str,
    pub payload: &'a Value,
    pub correlation_id: &'a str,
    pub ttl: Duration,
}

/// The raw key to seal to, if `key` verifies under `identity` (the record's, checked
/// against `agent`).
pub(crate) fn verified_key(
    agent: &str,
    identity: &IdentityKey,
    key: &MailboxKey,
) -> Result<[u8; 32]> {
    key.verify(identity, agent, now_ms())
        .map_err(|e| AgentError::InvalidMailboxKey {
            agent: agent.to_owned(),
            reason: e.to_string(),
        })
}

/// The `mail` request for `message`, sealed from `sender` to the verified `key` of
/// period `issued`.
pub(crate) fn mail_request(
    sender: &Identity,
    key: &[u8; 32],
    issued: u64,
    message: &Outgoing<'_>,
) -> Result<HubRequest> {
    let ttl = message.ttl.clamp(Duration::from_secs(1), MAX_TTL);
    let sent_at = now_ms();
    let id = message_id();
    let body = MailBody {
        from: sender.agent_id().to_owned(),
        to: message.to.to_owned(),
        id: id.clone(),
        message_type: message.message_type.to_owned(),
        payload: message.payload.clone(),
        correlation_id: Some(message.correlation_id.to_owned()),
        sent_at,
        expires_at: sent_at + ttl.as_millis() as u64,
    };
    let sealed = seal(&mut rand::thread_rng(), sender, key, issued, &body).map_err(|e| {
        AgentError::InvalidMailboxKey {
            agent: message.to.to_owned(),
            reason: e.to_string(),
        }
    })?;
    Ok(HubRequest {
        action: Some(ACTION_MAIL.into()),
        to: Some(message.to.into()),
        id: Some(id.into()),
        ttl: Some(ttl.as_secs().max(1).into()),
        sealed: Some(B64.encode(sealed).into()),
        ..HubRequest::default()
    })
}

/// The hub's answer to `mail`, its errors as typed ones.
pub(crate) fn queued(agent: &str, reply: Result<MailQueued>) -> Result<MailQueued> {
    reply.map_err(|e| match e {
        AgentError::Hub(code) => match code.as_str() {
            hub_errors::MAILBOX_FULL => AgentError::MailboxFull(agent.to_owned()),
            hub_errors::MESSAGE_TOO_LARGE => AgentError::MessageTooLarge(agent.to_owned()),
            hub_errors::EXPIRED => AgentError::Expired(agent.to_owned()),
            hub_errors::MAILBOX_UNAVAILABLE | hub_errors::UNKNOWN_ACTION => {
                AgentError::MailboxUnavailable {
                    agent: agent.to_owned(),
                    reason: "it published no mailbox key, or the hub keeps no mail".into(),
                }
            }
            hub_errors::AGENT_NOT_FOUND => AgentError::AgentNotFound(agent.to_owned()),
            _ => AgentError::Hub(code),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_uuid_v4() {
        let id = message_id();
        assert_eq!(id.len(), 36);
        assert!(m2m_proto::mailbox::valid_message_id(&id));
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(id, message_id());
    }

    #[test]
    fn hub_errors_are_typed() {
        let q = |e: &str| queued("b", Err(AgentError::Hub(e.into()))).unwrap_err();
        assert_eq!(q("mailbox_full"), AgentError::MailboxFull("b".into()));
        assert_eq!(
            q("message_too_large"),
            AgentError::MessageTooLarge("b".into())
        );
        assert_eq!(q("expired"), AgentError::Expired("b".into()));
        assert!(matches!(
            q("mailbox_unavailable"),
            AgentError::MailboxUnavailable { .. }
        ));
        assert_eq!(q("rate_limited"), AgentError::Hub("rate_limited".into()));
    }
}
