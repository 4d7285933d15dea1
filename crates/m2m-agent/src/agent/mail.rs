//! Mailbox sends (docs/MAILBOX.md section 4): a send whose target is offline, or that no
//! route reaches, is sealed to the target's mailbox key and stored by the hub — when the
//! target's record publishes a key that verifies under its identity. [`Agent::send_with`]
//! and [`Agent::request_with`] say whether to queue; a response whose requester cannot be
//! reached is queued too ([`Agent::respond`]).

use std::collections::BTreeMap;
use std::time::Duration;

use m2m_proto::mailbox::MailboxKey;
use serde_json::Value;

use super::Agent;
use crate::error::{AgentError, Result};
use crate::hub_client::correlation_id;
use crate::mailbox::send::{mail_request, queued, verified_key, Outgoing};
use crate::message::{Delivery, RequestOptions, Route, SendOptions};

/// Whether a failed send may be queued instead: the target is offline or nothing was
/// delivered to it (no dial or relay reached it). A send that timed out after it may have
/// been delivered is not queued: the application could see it twice.
pub(super) fn queueable(e: &AgentError) -> bool {
    matches!(
        e,
        AgentError::AgentOffline(_) | AgentError::Unreachable { .. } | AgentError::NoRoute { .. }
    )
}

impl Agent {
    /// Sends one message to agent `id` like [`Agent::send`]; with `options.queue` (the
    /// default) a target that is offline or that no route reaches gets it in its mailbox
    /// instead, when its record publishes a mailbox key that verifies: the result then has
    /// `delivered: false`, `route: Route::Mailbox` and `queued` (`messageId`, `expiresAt`).
    /// Without a usable mailbox (no key, or a hub that keeps no mail) the send's own error
    /// is returned; a key that does not verify is [`AgentError::InvalidMailboxKey`]; the
    /// hub's refusals are [`AgentError::MailboxFull`], [`AgentError::MessageTooLarge`], …
    /// With `queue: false` it never queues: the send of 2.0, and its errors
    /// ([`AgentError::AgentOffline`], …). [`Agent::send`] is `send_with` with the defaults.
    pub async fn send_with(
        &self,
        id: &str,
        message_type: &str,
        payload: Value,
        options: SendOptions,
    ) -> Result<Delivery> {
        let ttl = options.ttl.unwrap_or(self.inner.config.mail_ttl);
        self.send_or_queue(
            id,
            message_type,
            &payload,
            correlation_id(),
            options.queue.then_some(ttl),
        )
        .await
    }

    /// A send by id that falls back to the mailbox (with TTL `queue`) when it can.
    pub(super) async fn send_or_queue(
        &self,
        id: &str,
        message_type: &str,
        payload: &Value,
        cid: String,
        queue: Option<Duration>,
    ) -> Result<Delivery> {
        let sent = self
            .send_with_id(id, message_type, payload, cid.clone())
            .await;
        let (Some(ttl), Err(error)) = (queue, &sent) else {
            return sent;
        };
        if !queueable(error) || self.inner.mailbox.is_none() {
            return sent;
        }
        let (identity, key) = match self.mailbox_of(id).await {
            Ok(Some(found)) => found,
            Ok(None) => return sent,
            Err(e) => {
                // The send's own error says more than the failed look-up of the key.
                tracing::debug!(id, error = %e, "no mailbox key to fall back to");
                return sent;
            }
        };
        tracing::debug!(id, error = %error, "not reachable now; queuing in its mailbox");
        let identity = identity.as_deref();
        let queued = self
            .queue_mail(id, identity, &key, message_type, payload, cid, ttl)
            .await;
        match queued {
            // The hub keeps no mail (its operator turned it off, or it predates it): the
            // send's own error, as without a key.
            Err(AgentError::MailboxUnavailable { reason, .. }) => {
                tracing::debug!(id, reason, "the hub keeps no mail");
                sent
            }
            other => other,
        }
    }

    /// The identity and mailbox key the hub's record of `id` publishes (the cache's, else a
    /// fresh lookup); `None` when it publishes no key.
    async fn mailbox_of(&self, id: &str) -> Result<Option<(Option<String>, MailboxKey)>> {
        let known = match self.inner.cache.get(id) {
            Some(k) if k.mailbox.is_some() => (k.identity, k.mailbox),
            _ => match self.lookup(id).await {
                Ok(r) => (r.identity, r.mailbox),
                Err(AgentError::AgentNotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(known.1.map(|key| (known.0, key)))
    }

    /// Seals the message to `key` (checked under `identity`, the record's) and stores it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn queue_mail(
        &self,
        id: &str,
        identity: Option<&str>,
        key: &MailboxKey,
        message_type: &str,
        payload: &Value,
        cid: String,
        ttl: Duration,
    ) -> Result<Delivery> {
        let invalid = |reason: &str| AgentError::InvalidMailboxKey {
            agent: id.to_owned(),
            reason: reason.to_owned(),
        };
        let identity = self
            .inner
            .vouched
            .check(id, "", identity)
            .map_err(|e| invalid(&e.to_string()))?
            .ok_or_else(|| invalid("its record has no identity to verify the key with"))?;
        let raw = verified_key(id, &identity, key)?;
        let req = mail_request(
            self.identity(),
            &raw,
            key.issued,
            &Outgoing {
                to: id,
                message_type,
                payload,
                correlation_id: &cid,
                ttl,
            },
        )?;
        let stored = queued(id, self.inner.presence.mail(req, id).await)?;
        Ok(Delivery {
            delivered: false,
            correlation_id: cid,
            route: Route::Mailbox,
            queued: Some(stored),
        })
    }

    /// Like [`Agent::request`]; with `options.queue` a target that is offline or that no
    /// route reaches gets the request in its mailbox (expiring with the timeout), and the
    /// response is awaited for the timeout — it may come on a session or by mail. Without
    /// `queue` (the default) such a target fails fast, as [`Agent::request`] does.
    pub async fn request_with(
        &self,
        id: &str,
        message_type: &str,
        payload: Value,
        options: RequestOptions,
    ) -> Result<Value> {
        let timeout = options.timeout.unwrap_or(self.inner.config.request_timeout);
        let cid = correlation_id();
        let payload = match payload {
            Value::Object(mut fields) => {
                fields.insert("correlationId".into(), Value::String(cid.clone()));
                Value::Object(fields)
            }
            other => other,
        };
        let mut waiter = self
            .inner
            .inbox
            .expect_response(&cid, format!("{message_type}:response"));
        let queue = options.queue.then_some(timeout);
        let exchange = async {
            self.send_or_queue(id, message_type, &payload, cid.clone(), queue)
                .await?;
            tokio::select! {
                biased;
                _ = self.inner.cancel.cancelled() => Err(AgentError::Disconnected),
                r = waiter.recv() => r.ok_or(AgentError::Disconnected),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(AgentError::timeout("request", timeout)))
    }

    /// Mailbox messages dropped since the agent started, by reason
    /// ([`m2m_proto::mailbox::OpenError::reason`]: `decryption_failed`, `forged_sender`,
    /// `wrong_recipient`, `expired`, …, or `duplicate`). Each drop is also an
    /// [`AgentEvent::MailDropped`](crate::AgentEvent::MailDropped) and an `info` log line.
    pub fn mail_dropped(&self) -> BTreeMap<String, u64> {
        self.inner
            .mailbox
            .as_ref()
            .map(|m| m.dropped())
            .unwrap_or_default()
    }
}
