//! Why the hub refuses a request: the `error` string of every error reply.
//!
//! [`RequestError`] is what request parsing finds wrong (a client that sent a malformed
//! request); the constants are the codes the hub's actions answer with, the original's and
//! ours.

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
/// **Ours (relay):** `relay` on a WebSocket with neither a 2.1 registration nor an
/// `identity` proof.
pub const IDENTITY_REQUIRED: &str = "identity_required";
/// **Ours (relay):** this hub does not relay (its operator turned the relay off).
pub const RELAY_UNAVAILABLE: &str = "relay_unavailable";
/// **Ours (mailbox):** a registration's `mailbox` key does not verify under its identity.
pub const INVALID_MAILBOX_KEY: &str = "invalid_mailbox_key";
/// **Ours (mailbox):** the recipient published no mailbox key, or this hub keeps no mail.
pub const MAILBOX_UNAVAILABLE: &str = "mailbox_unavailable";
/// **Ours (mailbox):** a recipient, sender or hub-wide mail quota is reached.
pub const MAILBOX_FULL: &str = "mailbox_full";
/// **Ours (mailbox):** `mail` with a `ttl` of zero or less.
pub const EXPIRED: &str = "expired";
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
/// **Ours:** the hub's memory budget cannot hold this reply now; try again later (or ask
/// for less).
pub const OVERLOADED: &str = "overloaded";
/// **Ours:** this source IP registered `registrations_per_hour` times already; wait.
pub const TOO_MANY_REGISTRATIONS: &str = "too_many_registrations";
/// **Ours:** a query parameter of an HTTP endpoint is malformed (HTTP 400).
pub const INVALID_QUERY: &str = "invalid_query";
