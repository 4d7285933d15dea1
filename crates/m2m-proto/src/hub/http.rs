//! Bodies of the hub's HTTP endpoints (PROTOCOL.md A3): `/agents`, `/health`, `/` and
//! `/info`, and the 404 body. `/stats` answers [`super::Stats`], the WebSocket `stats` body.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Peer;

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
