//! `error` strings this hub sends beyond those of `m2m_proto::hub::errors`. Each names the
//! rule that was broken, so a client can show it as is.

pub use m2m_proto::hub::errors::{
    AGENT_NOT_FOUND, FORBIDDEN, INVALID_JSON, MESSAGE_TOO_LARGE, RATE_LIMITED, UNAVAILABLE,
    UNKNOWN_ACTION,
};

/// `register` without an address.
pub const ADDRESS_REQUIRED: &str = "address_required";
/// An address without a usable port (or a bare IPv6 address).
pub const INVALID_ADDRESS: &str = "invalid_address";
/// Address longer than the limit.
pub const ADDRESS_TOO_LONG: &str = "address_too_long";
/// More capabilities than the limit.
pub const TOO_MANY_CAPABILITIES: &str = "too_many_capabilities";
/// A capability longer than the limit.
pub const CAPABILITY_TOO_LONG: &str = "capability_too_long";
/// Metadata (after merging) larger than the limit.
pub const METADATA_TOO_LARGE: &str = "metadata_too_large";
/// Status string longer than the limit.
pub const STATUS_TOO_LONG: &str = "status_too_long";
/// This WebSocket already registered the most agents it may.
pub const TOO_MANY_AGENTS: &str = "too_many_agents";
/// The hub holds the most WebSockets it may (HTTP 503 at upgrade).
pub const TOO_MANY_CONNECTIONS: &str = "too_many_connections";
/// `GET /ws` without a WebSocket upgrade.
pub const UPGRADE_REQUIRED: &str = "websocket_upgrade_required";
/// The hub is shutting down.
pub const SHUTTING_DOWN: &str = "shutting_down";
/// A query parameter of an HTTP endpoint is malformed.
pub const INVALID_QUERY: &str = "invalid_query";
