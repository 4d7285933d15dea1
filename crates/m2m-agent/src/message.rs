//! What the application sees: incoming [`Message`]s, [`AgentEvent`]s, and the results and
//! options of operations.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::AgentError;

/// A message received from a peer, in the original SDK's JSON shape
/// `{from, type, payload, correlationId, timestamp, encrypted}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's id. In 2.0 it is only what the sender declared in its handshake
    /// (see [`Message::authenticated`]).
    pub from: String,
    /// Application message type.
    #[serde(rename = "type")]
    pub message_type: String,
    /// The payload: JSON, or the raw text when the plaintext was not JSON.
    pub payload: Value,
    /// The sender's correlationId, echoed by [`Agent::respond`](crate::Agent::respond).
    #[serde(
        rename = "correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<String>,
    /// Receipt time, milliseconds since the epoch.
    pub timestamp: u64,
    /// Always true: every P2P message is end-to-end encrypted.
    pub encrypted: bool,
    /// Whether `from` is proven (2.1 sessions). Always false in 2.0.
    #[serde(default, skip_serializing_if = "is_false")]
    pub authenticated: bool,
    /// How it arrived: over a direct connection, through the hub's relay, or from the
    /// hub's mailbox (then `timestamp` is when the sender sent it). Serialized only when not
    /// direct, so a direct message keeps the original shape; see [`Message::via`].
    #[serde(default, skip_serializing_if = "Route::is_direct")]
    pub route: Route,
}

/// How a message travelled between two agents: a direct TCP connection, or the hub's relay
/// (docs/RELAY.md; the session inside is the same end-to-end encrypted 2.1 session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// A TCP connection between the two agents.
    #[default]
    Direct,
    /// Through the relay of the hub the agents are attached to.
    Relay,
    /// Sealed to the recipient's mailbox key and stored by the hub (docs/MAILBOX.md).
    Mailbox,
}

impl Route {
    /// Whether this is [`Route::Direct`].
    pub fn is_direct(&self) -> bool {
        *self == Route::Direct
    }

    /// `"direct"`, `"relay"` or `"mailbox"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Relay => "relay",
            Route::Mailbox => "mailbox",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Message {
    /// How it arrived, as text (`"direct"`, `"relay"`, `"mailbox"`): what `m2m listen`
    /// prints as `"via"`.
    pub fn via(&self) -> &'static str {
        self.route.as_str()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Something that happened to the agent, published on
/// [`Agent::events`](crate::Agent::events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Registered at the hub.
    Connected {
        /// The id the hub gave.
        id: String,
        /// The address the hub stored.
        address: String,
        /// How others reach us, as the hub's relay attach said (`None`: not attached, or
        /// not probed).
        reachable: Option<m2m_proto::relay::Reachable>,
    },
    /// The hub connection was lost (or closed by `disconnect`). No reconnect follows when
    /// the reason starts with `superseded`: another process registered with this agent's
    /// identity (2.1), and holds the registration now.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Registered again after a loss; a 2.0 hub gives a new id.
    Reconnected {
        /// The hub we are registered at now (its WebSocket URL): with several hubs given,
        /// the next one after the hub that went away.
        hub: String,
        /// The new id.
        id: String,
        /// The address the hub stored.
        address: String,
        /// How others reach us, as the hub's relay attach said (`None`: not attached, or
        /// not probed).
        reachable: Option<m2m_proto::relay::Reachable>,
    },
    /// A background failure (heartbeat, reconnect attempt).
    Error {
        /// What failed.
        error: AgentError,
    },
    /// Mailbox: a message from the hub's mailbox was dropped (and acked, so that the hub
    /// forgets it) instead of delivered. Also counted in [`Agent::mail_dropped`](crate::Agent::mail_dropped).
    MailDropped {
        /// The message id the hub gave.
        id: String,
        /// The sender the hub named (unverified).
        from: String,
        /// Why: [`m2m_proto::mailbox::OpenError::reason`] (`decryption_failed`,
        /// `forged_sender`, `expired`, …) or `duplicate`.
        reason: String,
    },
}

/// The result of a send: `{delivered, correlationId, route}` when the peer acked it, or,
/// queued in the recipient's mailbox, `{delivered: false, correlationId, route: "mailbox",
/// queued: true, messageId, expiresAt}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// True: the peer acked the message. False: it was queued (see `queued`).
    pub delivered: bool,
    /// The correlationId the message carried.
    #[serde(rename = "correlationId")]
    pub correlation_id: String,
    /// The route it took.
    #[serde(default)]
    pub route: Route,
    /// Mailbox: the hub stored it for the recipient (`{"queued":true,"messageId":…,
    /// "expiresAt":…}`, flattened into this object).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<m2m_proto::mailbox::MailQueued>,
}

impl Delivery {
    /// A send the peer acked.
    pub(crate) fn delivered(correlation_id: String, route: Route) -> Self {
        Delivery {
            delivered: true,
            correlation_id,
            route,
            queued: None,
        }
    }
}

/// Options of [`Agent::send_with`](crate::Agent::send_with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendOptions {
    /// Queue the message in the recipient's mailbox when it is offline or no route reaches
    /// it (default true; `m2m send --no-queue` turns it off).
    pub queue: bool,
    /// How long the hub keeps queued mail (default [`AgentConfig::mail_ttl`](crate::AgentConfig::mail_ttl); the hub clamps
    /// it to its maximum).
    pub ttl: Option<std::time::Duration>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            queue: true,
            ttl: None,
        }
    }
}

/// Options of [`Agent::request_with`](crate::Agent::request_with).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Queue the request in the mailbox of an offline or unreachable target and wait for
    /// its response (default false: such a target fails fast).
    pub queue: bool,
    /// How long to wait for the response (default the configured request timeout); queued
    /// mail expires then too.
    pub timeout: Option<std::time::Duration>,
}

/// Filters and page of [`Agent::discover`](crate::Agent::discover).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// Agents having any of these capabilities; empty means all.
    pub capabilities: Vec<String>,
    /// Only agents with this status.
    pub status: Option<String>,
    /// Page size (hub default 100, max 500).
    pub limit: Option<u32>,
    /// Page start.
    pub offset: Option<u64>,
}

impl DiscoverOptions {
    /// All agents (the hub's default page).
    pub fn new() -> Self {
        Self::default()
    }

    /// Agents with any of `capabilities`.
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Agents with this status.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Page size.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Page start.
    pub fn offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }
}

/// Targets and parallelism of [`Agent::broadcast`](crate::Agent::broadcast).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastOptions {
    /// Online agents having any of these capabilities; empty means all online agents.
    pub capabilities: Vec<String>,
    /// Sends in flight at once.
    pub parallelism: usize,
    /// Mailbox: queue the message for a recipient that no route reaches, when its record
    /// publishes a mailbox key (default true).
    pub queue: bool,
}

impl Default for BroadcastOptions {
    fn default() -> Self {
        BroadcastOptions {
            capabilities: Vec::new(),
            parallelism: crate::config::DEFAULT_BROADCAST_PARALLELISM,
            queue: true,
        }
    }
}

impl BroadcastOptions {
    /// All online agents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Online agents with any of `capabilities`.
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Sends in flight at once (at least 1).
    pub fn parallelism(mut self, parallelism: usize) -> Self {
        self.parallelism = parallelism.max(1);
        self
    }

    /// Mailbox: whether to queue for recipients no route reaches (default true).
    pub fn queue(mut self, on: bool) -> Self {
        self.queue = on;
        self
    }
}

/// The outcome of a broadcast: `{total, delivered, failed, errors:[{agent, error}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BroadcastReport {
    /// Agents the message was sent to.
    pub total: usize,
    /// Agents that acked it.
    pub delivered: usize,
    /// Agents that did not.
    pub failed: usize,
    /// How many of the delivered went through the relay.
    pub relayed: usize,
    /// Mailbox: recipients no route reached whose mailbox the message was queued in
    /// (counted neither delivered nor failed). Serialized only when not zero.
    #[serde(skip_serializing_if = "is_zero")]
    pub queued: usize,
    /// Why each failed.
    pub errors: Vec<BroadcastFailure>,
}

/// One failed recipient of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BroadcastFailure {
    /// The agent's id.
    pub agent: String,
    /// What went wrong (serialized as its message).
    #[serde(serialize_with = "display")]
    pub error: AgentError,
}

fn display<S: Serializer>(e: &AgentError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_has_the_original_shape() {
        let m = Message {
            from: "a".into(),
            message_type: "chat".into(),
            payload: json!({"x": 1}),
            correlation_id: Some("c1".into()),
            timestamp: 5,
            encrypted: true,
            authenticated: false,
            route: Route::Relay,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"from":"a","type":"chat","payload":{"x":1},"correlationId":"c1","timestamp":5,"encrypted":true,"route":"relay"})
        );
        let back: Message = serde_json::from_value(serde_json::to_value(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_delivery_shows_queued_only_when_queued() {
        let d = Delivery::delivered("c".into(), Route::Direct);
        let shown = serde_json::to_value(&d).unwrap();
        assert_eq!(
            shown,
            json!({"delivered":true,"correlationId":"c","route":"direct"})
        );
        assert_eq!(serde_json::from_value::<Delivery>(shown).unwrap(), d);
        let q = Delivery {
            delivered: false,
            correlation_id: "c".into(),
            route: Route::Mailbox,
            queued: Some(m2m_proto::mailbox::MailQueued {
                queued: true,
                message_id: "m".into(),
                expires_at: 9,
            }),
        };
        let shown = serde_json::to_value(&q).unwrap();
        assert_eq!(
            shown,
            json!({"delivered":false,"correlationId":"c","route":"mailbox","queued":true,"messageId":"m","expiresAt":9})
        );
        assert_eq!(serde_json::from_value::<Delivery>(shown).unwrap(), q);
    }

    #[test]
    fn report_serializes_errors_as_text() {
        let r = BroadcastReport {
            total: 1,
            delivered: 0,
            failed: 1,
            relayed: 0,
            queued: 0,
            errors: vec![BroadcastFailure {
                agent: "b".into(),
                error: AgentError::AgentOffline("b".into()),
            }],
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"total":1,"delivered":0,"failed":1,"relayed":0,"errors":[{"agent":"b","error":"Agent is offline: b"}]})
        );
    }
}
