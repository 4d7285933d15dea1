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

/// A `mail` that passed every check and waits for its batch's store.
#[derive(Debug)]
pub(crate) struct CheckedMail {
    /// What to store.
    pub(crate) mail: NewMail,
    /// The message id, for the reply.
    message_id: String,
}

impl HubState {
    pub(super) async fn mail(&self, client: &mut Client, m: Mail) -> Result<MailQueued, ErrorCode> {
        let checked = match self.mail_check(client, m) {
            Ok(c) => c,
            Err(e) => return Err(self.mail_refused(e)),
        };
        let mut out = self.mail_store(vec![checked]).await;
        out.pop().unwrap_or(Err(errors::UNAVAILABLE.into()))
    }

    /// Counts a refused `mail` by its code.
    pub(super) fn mail_refused(&self, e: ErrorCode) -> ErrorCode {
        self.mailbox.counters.refused(&e.0);
        e
    }

    /// Every check of a `mail` before the store: the message to store, or the refusal.
    pub(super) fn mail_check(
        &self,
        client: &mut Client,
        m: Mail,
    ) -> Result<CheckedMail, ErrorCode> {
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
        Ok(CheckedMail {
            mail: NewMail {
                recipient: entry.id.to_string(),
                id: m.id.clone(),
                sender: from,
                sealed,
                stored_at: now,
                expires_at,
            },
            message_id: m.id,
        })
    }

    /// Stores checked mail in one transaction; one answer each, in order (refusals
    /// counted). The recipients that got mail are rung here.
    pub(super) async fn mail_store(
        &self,
        batch: Vec<CheckedMail>,
    ) -> Vec<Result<MailQueued, ErrorCode>> {
        let (mails, ids): (Vec<NewMail>, Vec<String>) =
            batch.into_iter().map(|c| (c.mail, c.message_id)).unzip();
        let outcomes = match self.mailbox.store.store(&mails, &self.mail_quotas()).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, n = mails.len(), "mail not stored");
                self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        };
        let c = &self.mailbox.counters;
        let mut rung = std::collections::HashSet::new();
        let mut outcomes = outcomes.into_iter();
        mails
            .iter()
            .zip(ids)
            .map(|(m, message_id)| {
                let expires_at = match outcomes.next() {
                    Some(StoreOutcome::Stored { expires_at }) => {
                        c.stored.fetch_add(1, Ordering::Relaxed);
                        c.stored_bytes
                            .fetch_add(m.sealed.len() as u64, Ordering::Relaxed);
                        if rung.insert(m.recipient.as_str()) {
                            self.mailbox.ring(&m.recipient);
                        }
                        expires_at
                    }
                    Some(StoreOutcome::Duplicate { expires_at }) => {
                        c.duplicates.fetch_add(1, Ordering::Relaxed);
                        expires_at
                    }
                    Some(StoreOutcome::Full) => {
                        return Err(self.mail_refused(errors::MAILBOX_FULL.into()))
                    }
                    None => return Err(self.mail_refused(errors::UNAVAILABLE.into())),
                };
                Ok(MailQueued {
                    queued: true,
                    message_id,
                    expires_at: expires_at.max(0) as u64,
                })
            })
            .collect()
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
