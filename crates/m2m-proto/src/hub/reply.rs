//! Replies on the WebSocket: the `ok`/`error` wrappers and each action's body, plus the
//! hub's unsolicited 2.1 challenge. Field names and order follow
//! `vectors/hub-transcript-v2.jsonl`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CHALLENGE_EVENT, STATUS_ERROR, STATUS_OK};

/// A successful reply: `{"status":"ok", …body…, "correlationId":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T> {
    /// Always `"ok"` for this type.
    pub status: String,
    /// The action's reply fields.
    #[serde(flatten)]
    pub body: T,
    /// Echo of the request's correlationId.
    #[serde(
        rename = "correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<Value>,
}

impl<T> Reply<T> {
    /// An ok reply carrying `body`.
    pub fn ok(body: T, correlation_id: Option<Value>) -> Self {
        Reply {
            status: STATUS_OK.to_owned(),
            body,
            correlation_id,
        }
    }
}

/// `{"status":"error","error":…,"correlationId":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Always `"error"`.
    pub status: String,
    /// Machine-readable code (`agent_not_found`, `forbidden`, …) or a short sentence.
    pub error: String,
    /// Echo of the request's correlationId.
    #[serde(
        rename = "correlationId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub correlation_id: Option<Value>,
}

impl ErrorReply {
    /// An error reply.
    pub fn new(error: impl Into<String>, correlation_id: Option<Value>) -> Self {
        ErrorReply {
            status: STATUS_ERROR.to_owned(),
            error: error.into(),
            correlation_id,
        }
    }
}

/// 2.1: `challenge` action reply body: this WebSocket's nonce (the one the
/// [`Challenge`] event carried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonce {
    /// 64 hex characters (32 random bytes), fresh per WebSocket.
    pub nonce: String,
}

/// `register` reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// The agent's id.
    pub id: String,
    /// The address the hub stored (remote IP + given port).
    pub address: String,
}

/// An agent as `discover` and `/agents` list it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Agent id.
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Metadata object.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// `online`, `idle`, `offline` or an agent-chosen status.
    #[serde(default)]
    pub status: String,
    /// Whole seconds since last seen.
    #[serde(default)]
    pub last_seen: u64,
    /// 2.1: base64 Ed25519 identity key the hub verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Relay: the public WebSocket URL of the hub relaying for the agent (docs/RELAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Relay: how the agent can be reached, when the hub knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<crate::relay::Reachable>,
    /// Mailbox: the agent's signed mailbox key (docs/MAILBOX.md), when it published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<crate::mailbox::MailboxKey>,
}

/// An agent as `find` lists it (no status, no lastSeen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoundAgent {
    /// Agent id.
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Metadata object.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// 2.1: verified identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Relay: the public WebSocket URL of the hub relaying for the agent (docs/RELAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Relay: how the agent can be reached, when the hub knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<crate::relay::Reachable>,
    /// Mailbox: the agent's signed mailbox key (docs/MAILBOX.md), when it published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<crate::mailbox::MailboxKey>,
}

/// An agent as `lookup` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id.
    pub id: String,
    /// `host:port` to dial.
    pub address: String,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Metadata object.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Current status.
    #[serde(default)]
    pub status: String,
    /// 2.1: verified identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Relay: the public WebSocket URL of the hub relaying for the agent (docs/RELAY.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// Relay: how the agent can be reached, when the hub knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<crate::relay::Reachable>,
    /// Mailbox: the agent's signed mailbox key (docs/MAILBOX.md), when it published one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailbox: Option<crate::mailbox::MailboxKey>,
}

/// `relay` reply body (docs/RELAY.md section 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayAttached {
    /// This hub's public WebSocket URL, as records name it.
    pub relay: String,
    /// The agent id the hub routes to this WebSocket.
    pub agent_id: String,
    /// The reachability probe's result, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<crate::relay::Reachable>,
    /// Initial flow-control window of every stream, each direction, in bytes.
    pub window: u32,
    /// Streams this WebSocket may have open at once.
    pub max_streams: u32,
}

/// `discover` reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Discovered {
    /// Number of agents in this page.
    pub count: usize,
    /// Page size used.
    pub limit: u32,
    /// Page start used.
    pub offset: u64,
    /// The page.
    pub agents: Vec<Peer>,
}

/// `find` reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Found {
    /// Number of agents in this page.
    pub count: usize,
    /// The page.
    pub agents: Vec<FoundAgent>,
}

/// `lookup` reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookedUp {
    /// The agent.
    pub agent: AgentRecord,
}

/// `heartbeat` reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatAck {
    /// Milliseconds since the epoch.
    pub timestamp: u64,
}

/// Reply body with no fields (`status`, `disconnect`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Agent counts of `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentCounts {
    /// All rows, offline included.
    pub total: u64,
    /// Online.
    pub online: u64,
    /// Idle.
    pub idle: u64,
    /// Offline.
    pub offline: u64,
}

/// Hub part of `stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubCounters {
    /// Hub version string.
    pub version: String,
    /// Whole seconds since start.
    pub uptime: u64,
    /// WebSockets accepted since start.
    pub connections: u64,
    /// WebSockets currently holding a registered agent.
    pub active_connections: u64,
}

/// `stats` reply body (and `/stats` with `status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Agent counts.
    pub agents: AgentCounts,
    /// Hub counters.
    pub hub: HubCounters,
}

/// 2.1: the hub's first message on a WebSocket, `{"event":"challenge","nonce":…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Always `"challenge"`.
    pub event: String,
    /// Hex nonce to sign at registration.
    pub nonce: String,
}

impl Challenge {
    /// The challenge event carrying `nonce`.
    pub fn new(nonce: impl Into<String>) -> Self {
        Challenge {
            event: CHALLENGE_EVENT.to_owned(),
            nonce: nonce.into(),
        }
    }
}
