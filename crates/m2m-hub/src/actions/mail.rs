//! `mail` (docs/MAILBOX.md "Sending"): stores a sealed message for an agent that published
//! a mailbox key. The hub stamps the sender with the identity this WebSocket proved and
//! stores the bytes as they came; the quotas are checked in the storing transaction, and a
//! message id already stored for the recipient is answered with the stored expiry.

use std::sync::atomic::Ordering;

use base64::Engine as _;
use m2m_proto::hub::errors::{self, RequestError};
use m2m_proto::hub::Mail;
use m2m_proto::mailbox::MailQueued;

use super::ErrorCode;
use crate::client::Client;
use crate::defaults::mail::MAIL_FRAME_OVERHEAD;
use crate::directory::parse_id;
use crate::state::HubState;
use crate::store::mail::{NewMail, StoreOutcome};

impl HubState {
    pub(super) async fn mail(&self, client: &mut Client, m: Mail) -> Result<MailQueued, ErrorCode> {
        let result = self.mail_inner(client, m).await;
        if let Err(ErrorCode(code)) = &result {
            self.mailbox.counters.refused(code);
        }
        result
    }

    async fn mail_inner(&self, client: &mut Client, m: Mail) -> Result<MailQueued, ErrorCode> {
        let cfg = &self.config.mailbox;
        if !cfg.enabled {
            return Err(errors::MAILBOX_UNAVAILABLE.into());
        }
        let from = self.mail_identity(client, m.identity.as_deref(), m.signature.as_deref())?;
        let ttl_ms = match m.ttl {
            Some(t) if t <= 0 => return Err(errors::EXPIRED.into()),
            Some(t) => (t as u128 * 1000).min(cfg.max_ttl.as_millis()),
            None => cfg.max_ttl.as_millis(),
        };
        if m.sealed.len() > sealed_text_limit(cfg.max_sealed) {
            return Err(errors::MESSAGE_TOO_LARGE.into());
        }
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(m.sealed.as_bytes())
            .map_err(|_| {
                ErrorCode(
                    RequestError::InvalidField {
                        field: "sealed",
                        reason: "must be base64",
                    }
                    .code(),
                )
            })?;
        drop(m.sealed);
        if sealed.len() > cfg.max_sealed {
            return Err(errors::MESSAGE_TOO_LARGE.into());
        }
        let entry = parse_id(&m.to)
            .and_then(|key| self.directory.get(key))
            .filter(|e| !e.is_retired())
            .ok_or(ErrorCode::from(errors::AGENT_NOT_FOUND))?;
        if entry.mailbox.is_none() {
            return Err(errors::MAILBOX_UNAVAILABLE.into());
        }
        let now = self.now_ms();
        let expires_at = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let bytes = sealed.len() as u64;
        let mail = [NewMail {
            recipient: entry.id.to_string(),
            id: m.id.clone(),
            sender: from,
            sealed,
            stored_at: now,
            expires_at,
        }];
        let outcome = self
            .mailbox
            .store
            .store(&mail, &self.mail_quotas())
            .await
            .map_err(|_| {
                self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                ErrorCode::from(errors::UNAVAILABLE)
            })?;
        let c = &self.mailbox.counters;
        let expires_at = match outcome.first() {
            Some(StoreOutcome::Stored { expires_at }) => {
                c.stored.fetch_add(1, Ordering::Relaxed);
                c.stored_bytes.fetch_add(bytes, Ordering::Relaxed);
                self.mailbox.ring(&entry.id);
                *expires_at
            }
            Some(StoreOutcome::Duplicate { expires_at }) => {
                c.duplicates.fetch_add(1, Ordering::Relaxed);
                *expires_at
            }
            Some(StoreOutcome::Full) => return Err(errors::MAILBOX_FULL.into()),
            None => return Err(errors::UNAVAILABLE.into()),
        };
        Ok(MailQueued {
            queued: true,
            message_id: m.id,
            expires_at: expires_at.max(0) as u64,
        })
    }
}

/// The longest base64 text of a sealed message of `max` bytes (padded).
pub(crate) fn sealed_text_limit(max: usize) -> usize {
    max.div_ceil(3) * 4
}

/// The largest WebSocket text a `mail` of `max` sealed bytes can be: the base64 and the
/// other fields (to, id, identity, signature, correlationId).
pub(crate) fn mail_frame_limit(max: usize) -> usize {
    sealed_text_limit(max) + MAIL_FRAME_OVERHEAD
}
