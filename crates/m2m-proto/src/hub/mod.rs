//! Hub messages: the WebSocket API of PROTOCOL.md A2 and the HTTP replies of A3.
//!
//! A request arrives as one JSON text message. [`HubRequest`] accepts exactly what original
//! clients send: every field optional, unknown fields ignored, `correlationId` kept as the
//! JSON value it was (so it is echoed as given). [`HubRequest::action`] then turns it into a
//! typed [`Action`] or a [`RequestError`] whose [`RequestError::code`] is the `error` string of
//! the reply.
//!
//! Replies are [`Reply<T>`]: `{"status":"ok", …fields of T…, "correlationId":…}`; errors are
//! [`ErrorReply`]. Field names and order follow `vectors/hub-transcript-v2.jsonl`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::defaults as limits;

/// Status strings the hub itself assigns. Agents may set any other string (`busy`, …).
pub mod status {
    /// Seen recently.
    pub const ONLINE: &str = "online";
    /// Not seen for 2 minutes.
    pub const IDLE: &str = "idle";
    /// Disconnected, closed, or not seen for 5 more minutes.
    pub const OFFLINE: &str = "offline";
}

/// `status` field of every reply.
pub const STATUS_OK: &str = "ok";
/// `status` field of an error reply.
pub const STATUS_ERROR: &str = "error";

/// One WebSocket request as a client sent it. Every field is optional so that nothing an
/// original client sends is refused at this layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubRequest {
    /// The action name (`register`, `discover`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Value>,
    /// Echoed as given in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Value>,
    /// The caller's id (discover, heartbeat, status, disconnect) or the target (lookup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// `host:port` (register).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Value>,
    /// Capabilities offered (register) or wanted, any of (discover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Value>,
    /// One capability (find).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<Value>,
    /// Agent metadata (register, status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// Status filter (discover) or new status (status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
    /// Page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Value>,
    /// Page start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Value>,
    /// 2.1: base64 Ed25519 public key of the registering agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Value>,
    /// 2.1: base64 Ed25519 signature over the registration (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Value>,
}

/// A typed, validated hub request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Register the agent on this connection.
    Register(Register),
    /// List agents.
    Discover(Discover),
    /// List online agents with one capability.
    Find(Find),
    /// One agent by id.
    Lookup {
        /// The agent looked up.
        id: String,
    },
    /// Liveness from the agent `id`.
    Heartbeat {
        /// Must be this connection's agent.
        id: String,
    },
    /// Change status and merge metadata.
    Status {
        /// Must be this connection's agent.
        id: String,
        /// New status, if given.
        status: Option<String>,
        /// Shallow-merged into the stored metadata.
        metadata: Map<String, Value>,
    },
    /// Mark the agent offline.
    Disconnect {
        /// Must be this connection's agent.
        id: String,
    },
    /// Hub statistics.
    Stats,
}

/// `register` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Register {
    /// As given; the hub keeps only the port (PROTOCOL.md A2, Address).
    pub address: Option<String>,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
    /// Free-form metadata object.
    pub metadata: Map<String, Value>,
    /// 2.1 identity key (base64), if the agent proves one.
    pub identity: Option<String>,
    /// 2.1 signature (base64) over the registration.
    pub signature: Option<String>,
}

/// `discover` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Discover {
    /// The caller, excluded from results.
    pub exclude_id: Option<String>,
    /// Match any of these; empty matches all.
    pub capabilities: Vec<String>,
    /// Only agents with this status.
    pub status: Option<String>,
    /// Page size (clamped to `1..=MAX_PAGE`).
    pub limit: u32,
    /// Page start.
    pub offset: u64,
}

/// `find` request fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Find {
    /// The one capability looked for.
    pub capability: String,
    /// Page size (clamped to `1..=MAX_PAGE`).
    pub limit: u32,
    /// Page start.
    pub offset: u64,
}

/// Why a request was refused. [`RequestError::code`] is the wire `error` string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The `action` is missing or unknown.
    #[error("unknown_action")]
    UnknownAction,
    /// A required field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has the wrong type or an invalid value.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl RequestError {
    /// The `error` string sent to the client. Unknown actions keep the original's code; other
    /// errors are a short sentence naming the field, which original clients show as is.
    pub fn code(&self) -> String {
        self.to_string()
    }
}

fn opt_string(v: &Option<Value>, field: &'static str) -> Result<Option<String>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        // Ids and statuses sent as numbers are accepted as their text, like JS would.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be a string",
        }),
    }
}

fn req_string(v: &Option<Value>, field: &'static str) -> Result<String, RequestError> {
    opt_string(v, field)?.ok_or(RequestError::MissingField(field))
}

fn string_list(v: &Option<Value>, field: &'static str) -> Result<Vec<String>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                _ => Err(RequestError::InvalidField {
                    field,
                    reason: "must be an array of strings",
                }),
            })
            .collect(),
        // A single string is taken as a list of one: forgiving of hand-written clients.
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be an array of strings",
        }),
    }
}

fn object(v: &Option<Value>, field: &'static str) -> Result<Map<String, Value>, RequestError> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(RequestError::InvalidField {
            field,
            reason: "must be an object",
        }),
    }
}

/// Reads a page bound the way the original does (`Math.min(x || default, max)`), refusing
/// values that are not numbers rather than guessing.
fn number(
    v: &Option<Value>,
    field: &'static str,
    default: u64,
    max: u64,
) -> Result<u64, RequestError> {
    let n = match v {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        Some(Value::String(s)) => {
            s.trim()
                .parse::<f64>()
                .map_err(|_| RequestError::InvalidField {
                    field,
                    reason: "must be a number",
                })?
        }
        Some(_) => {
            return Err(RequestError::InvalidField {
                field,
                reason: "must be a number",
            })
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(RequestError::InvalidField {
            field,
            reason: "must be a non-negative number",
        });
    }
    let n = n.trunc() as u64;
    Ok(if n == 0 && default > 0 {
        default
    } else {
        n.min(max)
    })
}

/// Parses page bounds for discover and `/agents` (default 100) or find (default 10).
pub fn page(
    limit: &Option<Value>,
    offset: &Option<Value>,
    default_limit: u32,
) -> Result<(u32, u64), RequestError> {
    let limit = number(
        limit,
        "limit",
        default_limit.into(),
        limits::MAX_PAGE.into(),
    )?;
    let offset = number(offset, "offset", 0, u64::MAX)?;
    Ok((limit as u32, offset))
}

impl HubRequest {
    /// Parses one WebSocket text message. `Err` means it was not a JSON object: the reply is
    /// `invalid_json` without correlationId.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        // serde would also read a JSON array into the struct, field by field, so that
        // `["register"]` registered (found by fuzz/hub_request): a request is an object.
        if text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .as_bytes()
            .first()
            != Some(&b'{')
        {
            return Err(serde::de::Error::custom("a request is a JSON object"));
        }
        serde_json::from_str(text)
    }

    /// The action name, if it is a string.
    pub fn action_name(&self) -> Option<&str> {
        self.action.as_ref().and_then(Value::as_str)
    }

    /// Validates the fields of the named action.
    pub fn action(&self) -> Result<Action, RequestError> {
        match self.action_name() {
            Some("register") => Ok(Action::Register(Register {
                address: opt_string(&self.address, "address")?,
                capabilities: string_list(&self.capabilities, "capabilities")?,
                metadata: object(&self.metadata, "metadata")?,
                identity: opt_string(&self.identity, "identity")?,
                signature: opt_string(&self.signature, "signature")?,
            })),
            Some("discover") => {
                let (limit, offset) =
                    page(&self.limit, &self.offset, limits::DEFAULT_DISCOVER_LIMIT)?;
                Ok(Action::Discover(Discover {
                    exclude_id: opt_string(&self.id, "id")?,
                    capabilities: string_list(&self.capabilities, "capabilities")?,
                    status: opt_string(&self.status, "status")?,
                    limit,
                    offset,
                }))
            }
            Some("find") => {
                let (limit, offset) = page(&self.limit, &self.offset, limits::DEFAULT_FIND_LIMIT)?;
                Ok(Action::Find(Find {
                    capability: req_string(&self.capability, "capability")?,
                    limit,
                    offset,
                }))
            }
            Some("lookup") => Ok(Action::Lookup {
                id: req_string(&self.id, "id")?,
            }),
            Some("heartbeat") => Ok(Action::Heartbeat {
                id: req_string(&self.id, "id")?,
            }),
            Some("status") => Ok(Action::Status {
                id: req_string(&self.id, "id")?,
                status: opt_string(&self.status, "status")?,
                metadata: object(&self.metadata, "metadata")?,
            }),
            Some("disconnect") => Ok(Action::Disconnect {
                id: req_string(&self.id, "id")?,
            }),
            Some("stats") => Ok(Action::Stats),
            _ => Err(RequestError::UnknownAction),
        }
    }
}

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

/// Error codes of the original hub, and ours.
pub mod errors {
    /// Not a JSON object.
    pub const INVALID_JSON: &str = "invalid_json";
    /// Unknown or missing action.
    pub const UNKNOWN_ACTION: &str = "unknown_action";
    /// Lookup of an unknown id.
    pub const AGENT_NOT_FOUND: &str = "agent_not_found";
    /// **Ours:** heartbeat/status/disconnect of an id this connection did not register.
    pub const FORBIDDEN: &str = "forbidden";
    /// **Ours:** too many requests on one connection.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// **Ours:** message larger than the hub accepts.
    pub const MESSAGE_TOO_LARGE: &str = "message_too_large";
    /// **Ours:** the registry's database failed; retry later.
    pub const UNAVAILABLE: &str = "unavailable";
    /// **Ours (2.1):** identity proof did not verify (also: `identity` without `signature`).
    pub const INVALID_SIGNATURE: &str = "invalid_signature";
    /// **Ours (2.1):** `identity` is not base64 of a valid, non-weak Ed25519 public key.
    pub const INVALID_IDENTITY: &str = "invalid_identity";
    /// **Ours:** `register` without an address.
    pub const ADDRESS_REQUIRED: &str = "address_required";
    /// **Ours:** an address without a usable port (or a bare IPv6 address).
    pub const INVALID_ADDRESS: &str = "invalid_address";
    /// **Ours:** address longer than the hub accepts.
    pub const ADDRESS_TOO_LONG: &str = "address_too_long";
    /// **Ours:** more capabilities than the hub accepts.
    pub const TOO_MANY_CAPABILITIES: &str = "too_many_capabilities";
    /// **Ours:** a capability longer than the hub accepts.
    pub const CAPABILITY_TOO_LONG: &str = "capability_too_long";
    /// **Ours:** metadata (after merging) larger than the hub accepts.
    pub const METADATA_TOO_LARGE: &str = "metadata_too_large";
    /// **Ours:** status string longer than the hub accepts.
    pub const STATUS_TOO_LONG: &str = "status_too_long";
    /// **Ours:** this WebSocket already registered the most agents it may.
    pub const TOO_MANY_AGENTS: &str = "too_many_agents";
    /// **Ours:** the hub holds the most WebSockets it may (HTTP 503 at upgrade).
    pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
    /// **Ours:** `GET /ws` without a WebSocket upgrade (HTTP 400).
    pub const UPGRADE_REQUIRED: &str = "websocket_upgrade_required";
    /// **Ours:** the hub is shutting down (HTTP 503 at upgrade).
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// **Ours:** a query parameter of an HTTP endpoint is malformed (HTTP 400).
    pub const INVALID_QUERY: &str = "invalid_query";
}

/// 2.1: the action that asks for this WebSocket's challenge nonce,
/// `{"action":"challenge","correlationId":C}` → `{"status":"ok","nonce":N,"correlationId":C}`.
/// A 2.0 hub answers `unknown_action` at once, so an agent learns the hub's version without
/// waiting for a challenge that may never come.
pub const CHALLENGE_ACTION: &str = "challenge";

/// 2.1: the `event` of the hub's unsolicited first message, [`Challenge`].
pub const CHALLENGE_EVENT: &str = "challenge";

/// 2.1: close code of a WebSocket whose agent registered again on a newer WebSocket (here or
/// on another hub of the same registry). An agent seeing it should not reconnect: another
/// process holds its identity now.
pub const CLOSE_SUPERSEDED: u16 = 4001;

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

/// `GET /agents` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentsPage {
    /// Agents in this page.
    pub count: usize,
    /// All non-offline agents.
    pub total: u64,
    /// Page size used.
    pub limit: u32,
    /// Page start used.
    pub offset: u64,
    /// The page.
    pub agents: Vec<Peer>,
}

/// `GET /health` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `"healthy"`.
    pub status: String,
    /// ISO-8601 time.
    pub timestamp: String,
    /// Protocol version.
    pub version: String,
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

/// `GET /` and `GET /info` reply. The quickstart, api and example sections are free-form
/// text about this implementation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// What protocol this hub speaks.
    pub protocol: ProtocolInfo,
    /// Hub state.
    pub hub: HubInfo,
    /// Agent counts.
    pub agents: InfoAgents,
    /// How to start.
    pub quickstart: Map<String, Value>,
    /// API summary.
    pub api: Map<String, Value>,
    /// Code examples.
    pub example: Map<String, Value>,
}

/// `protocol` section of [`Info`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProtocolInfo {
    /// `"M2M - Molt To Molt"`.
    pub name: String,
    /// Protocol version.
    pub version: String,
    /// One sentence.
    pub description: String,
    /// `"X25519 + AES-256-GCM"`.
    pub encryption: String,
    /// This hub's WebSocket URL.
    pub websocket: String,
    /// Project link.
    pub github: String,
    /// Project link.
    pub twitter: String,
}

/// `hub` section of [`Info`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubInfo {
    /// `"running"`.
    pub status: String,
    /// Whole seconds since start.
    pub uptime: u64,
    /// WebSockets holding a registered agent.
    pub active_connections: u64,
}

/// `agents` section of [`Info`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InfoAgents {
    /// Online agents.
    pub online: u64,
    /// Idle agents.
    pub idle: u64,
    /// All rows.
    pub total: u64,
}

/// 404 reply body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotFound {
    /// `"Not found"`.
    pub error: String,
    /// The HTTP endpoints that exist.
    pub endpoints: Vec<String>,
    /// This hub's WebSocket URL.
    pub websocket: String,
}
