//! Messaging: sends by id and by address, broadcast, request/respond and ping. Every send
//! resolves its target ([`super::routing`]), takes a pooled connection ([`crate::peer`]) and
//! completes when the peer acked; each is bounded by the send timeout. Responses go back on
//! the requester's own authenticated session when there is one ([`crate::listener`]).

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use m2m_proto::hub::status;
use m2m_proto::{limits, IdentityKey};
use serde_json::Value;

use super::mail::queueable;
use super::routing::Target;
use super::Agent;
use crate::error::{AgentError, Result};
use crate::hub_client::correlation_id;
use crate::listener::NotSentBack;
use crate::message::{
    BroadcastFailure, BroadcastOptions, BroadcastReport, Delivery, DiscoverOptions, Message,
    RequestOptions, Route, SendOptions,
};
use crate::peer::{self, Credentials};

impl Agent {
    /// Sends one message to agent `id`; resolves once the peer acked it — or, when the
    /// peer is offline or no route reaches it and it publishes a mailbox key, once the hub
    /// stored it in its mailbox (`delivered: false`, `route: Route::Mailbox`, `queued`).
    /// [`Agent::send_with`] with `queue: false` never queues.
    pub async fn send(&self, id: &str, message_type: &str, payload: Value) -> Result<Delivery> {
        self.send_with(id, message_type, payload, SendOptions::default())
            .await
    }

    pub(super) async fn send_with_id(
        &self,
        id: &str,
        message_type: &str,
        payload: &Value,
        correlation_id: String,
    ) -> Result<Delivery> {
        let timeout = self.inner.config.send_timeout;
        let sent = tokio::time::timeout(timeout, async {
            let target = self.resolve(id).await?;
            self.deliver_to(&target, message_type, payload, &correlation_id)
                .await
        })
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)));
        if let Err(
            AgentError::Unreachable { .. }
            | AgentError::Timeout { .. }
            | AgentError::RelayClosed { .. }
            | AgentError::Authentication { .. },
        ) = &sent
        {
            // The peer may have moved (or the hub's answer was wrong): look it up again next
            // time.
            self.inner.cache.remove(id);
        }
        sent.map(|route| Delivery::delivered(correlation_id, route))
    }

    /// Sends one message to `address` (`host:port`) without asking the hub. Nobody vouches
    /// for the identity there: a 2.1 peer authenticates, but as whoever it is (and a 2.0
    /// peer is refused with [`AgentBuilder::authenticated_peers_only`](crate::AgentBuilder::authenticated_peers_only)).
    /// Always direct: an address names no relay.
    pub async fn send_direct(
        &self,
        address: &str,
        message_type: &str,
        payload: Value,
    ) -> Result<Delivery> {
        let correlation_id = correlation_id();
        let timeout = self.inner.config.send_timeout;
        tokio::time::timeout(
            timeout,
            self.deliver(address, None, message_type, &payload, &correlation_id),
        )
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)))?;
        Ok(Delivery::delivered(correlation_id, Route::Direct))
    }

    /// A direct send to `address`, demanding `expect` of the peer.
    async fn deliver(
        &self,
        address: &str,
        expect: Option<IdentityKey>,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            return Err(AgentError::Disconnected);
        }
        let credentials = self.credentials(expect);
        self.inner
            .pool
            .send(address, &credentials, message_type, payload, correlation_id)
            .await
    }

    /// Sends to every online agent (with any of `options.capabilities`), at most
    /// `options.parallelism` at a time. Mailbox: a recipient that no route reaches, and
    /// whose record publishes a mailbox key, gets it in its mailbox (counted in `queued`,
    /// unless `options.queue` is false). Offline agents are not broadcast to: the
    /// recipients are the online ones, as in 2.0.
    pub async fn broadcast(
        &self,
        message_type: &str,
        payload: Value,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport> {
        let peers = self
            .discover(DiscoverOptions {
                capabilities: options.capabilities,
                status: Some(status::ONLINE.to_owned()),
                limit: Some(limits::MAX_PAGE),
                offset: None,
            })
            .await?;
        let payload = &payload;
        let queue = options.queue;
        let results: Vec<(String, Result<Route>)> = stream::iter(peers)
            .map(|peer| async move {
                let timeout = self.inner.config.send_timeout;
                let cid = correlation_id();
                let sent = tokio::time::timeout(timeout, async {
                    let expect = self.inner.vouched.check(
                        &peer.id,
                        &peer.address,
                        peer.identity.as_deref(),
                    )?;
                    let target = Target {
                        id: peer.id.clone(),
                        address: peer.address.clone(),
                        expect,
                        relay: peer.relay.clone(),
                        reachable: peer.reachable,
                    };
                    self.deliver_to(&target, message_type, payload, &cid).await
                })
                .await
                .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)));
                let sent = match (sent, &peer.mailbox) {
                    (Err(e), Some(key))
                        if queue && self.inner.mailbox.is_some() && queueable(&e) =>
                    {
                        let ttl = self.inner.config.mail_ttl;
                        let identity = peer.identity.as_deref();
                        self.queue_mail(&peer.id, identity, key, message_type, payload, cid, ttl)
                            .await
                            .map(|d| d.route)
                    }
                    (sent, _) => sent,
                };
                (peer.id, sent)
            })
            .buffer_unordered(options.parallelism.max(1))
            .collect()
            .await;
        let mut report = BroadcastReport {
            total: results.len(),
            ..BroadcastReport::default()
        };
        for (agent, result) in results {
            match result {
                Ok(Route::Mailbox) => report.queued += 1,
                Ok(route) => {
                    report.delivered += 1;
                    if route == Route::Relay {
                        report.relayed += 1;
                    }
                }
                Err(error) => report.errors.push(BroadcastFailure { agent, error }),
            }
        }
        report.failed = report.errors.len();
        Ok(report)
    }

    /// Sends `message_type` to `id` and waits for its `<message_type>:response` carrying the
    /// same correlationId; returns the response's payload. An object payload gets the
    /// `correlationId` field added, as the original does. `timeout` defaults to the configured
    /// request timeout.
    pub async fn request(
        &self,
        id: &str,
        message_type: &str,
        payload: Value,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let options = RequestOptions {
            queue: false,
            timeout,
        };
        self.request_with(id, message_type, payload, options).await
    }

    /// Answers `message`: sends `<type>:response` with its correlationId to its sender.
    /// A message that came on an authenticated (2.1) inbound session is answered on that
    /// same connection while it lives — the requester need not be reachable; otherwise,
    /// as in 2.0, on a connection to the sender's address from the hub.
    ///
    /// **Ours (issue 13 #7, #8):** the `from` of an unauthenticated message is only declared,
    /// so its answer never travels on an authenticated route: it goes as plain 2.0 (which
    /// a real 2.0 sender expects), within [`AgentConfig::unverified_respond_timeout`](crate::AgentConfig::unverified_respond_timeout), and not
    /// at all ([`AgentError::Authentication`]) when the hub vouches for an identity under
    /// that id — whoever holds that key would have authenticated, so the claim is false and
    /// answering would launder the sender's words into an authenticated message from us.
    pub async fn respond(&self, message: &Message, payload: Value) -> Result<Delivery> {
        let cid = message
            .correlation_id
            .clone()
            .unwrap_or_else(correlation_id);
        let response_type = format!("{}:response", message.message_type);
        if !message.authenticated {
            let config = &self.inner.config;
            let timeout = config.unverified_respond_timeout.min(config.send_timeout);
            let sent = tokio::time::timeout(
                timeout,
                self.respond_unverified(&message.from, &response_type, &payload, &cid),
            )
            .await
            .unwrap_or_else(|_| Err(AgentError::timeout("respond", timeout)));
            if let Err(AgentError::Unreachable { .. } | AgentError::Timeout { .. }) = &sent {
                self.inner.cache.remove(&message.from);
            }
            return sent.map(|()| Delivery::delivered(cid, Route::Direct));
        }
        let timeout = self.inner.config.send_timeout;
        // The session it came on first: relayed or direct.
        let mut routes = [Route::Direct, Route::Relay];
        if message.route == Route::Relay {
            routes.reverse();
        }
        let back = async {
            for route in routes {
                let sent = match route {
                    Route::Direct | Route::Mailbox => {
                        self.inner
                            .sessions
                            .send_back(&message.from, &response_type, &payload, &cid)
                            .await
                    }
                    Route::Relay => {
                        self.inner
                            .relay_sessions
                            .send_back(&message.from, &response_type, &payload, &cid)
                            .await
                    }
                };
                match sent {
                    Ok(()) => return Ok(Some(route)),
                    Err(NotSentBack::Failed(e)) => return Err(e),
                    Err(NotSentBack::NoSession) => {}
                }
            }
            Ok(None)
        };
        match tokio::time::timeout(timeout, back).await {
            Ok(Ok(Some(route))) => return Ok(Delivery::delivered(cid, route)),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => {}
            Err(_) => return Err(AgentError::timeout("respond", timeout)),
        }
        // No session: a new one, or the requester's mailbox when it cannot be reached.
        let queue = Some(self.inner.config.mail_ttl);
        self.send_or_queue(&message.from, &response_type, &payload, cid, queue)
            .await
    }

    /// The answer to an unauthenticated message: plain 2.0 to the address the hub has for
    /// `from`, refused if the hub vouches for an identity under that id.
    async fn respond_unverified(
        &self,
        from: &str,
        response_type: &str,
        payload: &Value,
        cid: &str,
    ) -> Result<()> {
        let target = self.resolve(from).await?;
        let address = target.address;
        if target.expect.is_some() {
            return Err(AgentError::Authentication {
                address,
                reason: format!(
                    "an unauthenticated message claimed to come from {from}, whose identity                      the hub vouches for; not answered"
                ),
            });
        }
        if self.inner.cancel.is_cancelled() {
            return Err(AgentError::Disconnected);
        }
        self.inner
            .pool
            .send(
                &address,
                &Credentials::plain(&self.id()),
                response_type,
                payload,
                cid,
            )
            .await
    }

    /// Round-trip time of a P2P `ping` to `address`.
    pub async fn ping(&self, address: &str) -> Result<Duration> {
        let timeout = self.inner.config.send_timeout;
        tokio::time::timeout(
            timeout,
            peer::ping(address, self.inner.config.max_frame_len),
        )
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("ping", timeout)))
    }
}
