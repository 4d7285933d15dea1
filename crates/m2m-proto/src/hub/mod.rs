//! Hub messages: the WebSocket API of PROTOCOL.md A2 and the HTTP replies of A3.
//!
//! A request arrives as one JSON text message: [`request`] parses it into a typed [`Action`]
//! or a [`RequestError`] whose [`RequestError::code`] is the `error` string of the reply. The
//! hub answers with a [`Reply<T>`] (`{"status":"ok", …fields of T…, "correlationId":…}`,
//! bodies in [`reply`]) or an [`ErrorReply`] carrying one of the codes of [`errors`]. The
//! HTTP endpoints' bodies are in [`http`].

pub mod errors;
pub mod http;
pub mod reply;
pub mod request;

pub use errors::RequestError;
pub use http::{AgentsPage, Health, HubInfo, Info, InfoAgents, NotFound, ProtocolInfo};
pub use reply::{
    AgentCounts, AgentRecord, Challenge, Discovered, Empty, ErrorReply, Found, FoundAgent,
    HeartbeatAck, HubCounters, LookedUp, Nonce, Peer, Registered, Reply, Stats,
};
pub use request::{page, Action, Discover, Find, HubRequest, Mail, Register};

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
