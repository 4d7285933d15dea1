//! `error` strings this hub sends. They live in `m2m_proto::hub::errors` (so SDK users can
//! match on them); this module re-exports them where the hub always found them. Each names
//! the rule that was broken, so a client can show it as is.

pub use m2m_proto::hub::errors::{
    ADDRESS_REQUIRED, ADDRESS_TOO_LONG, AGENT_NOT_FOUND, CAPABILITY_TOO_LONG, FORBIDDEN,
    INVALID_ADDRESS, INVALID_IDENTITY, INVALID_JSON, INVALID_QUERY, INVALID_SIGNATURE,
    MESSAGE_TOO_LARGE, METADATA_TOO_LARGE, RATE_LIMITED, SHUTTING_DOWN, STATUS_TOO_LONG,
    TOO_MANY_AGENTS, TOO_MANY_CAPABILITIES, TOO_MANY_CONNECTIONS, UNAVAILABLE, UNKNOWN_ACTION,
    UPGRADE_REQUIRED,
};

/// The hub's memory budget cannot hold this reply now; try again later (or ask for less).
pub const OVERLOADED: &str = "overloaded";
/// This source IP registered `registrations_per_hour` times already; wait.
pub const TOO_MANY_REGISTRATIONS: &str = "too_many_registrations";
