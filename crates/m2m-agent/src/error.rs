//! The one error type of the SDK.
//!
//! Variants separate what the caller can act on: the target is unknown or offline (hub
//! answers), the peer could not be reached or timed out (network), the peer refused the
//! message (error frames), the hub refused a request (its error string), or the caller misused
//! the API (invalid payload, not connected).

use std::time::Duration;

/// Why an agent operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The hub does not know this agent id.
    #[error("Agent not found: {0}")]
    AgentNotFound(String),
    /// The hub lists this agent as offline.
    #[error("Agent is offline: {0}")]
    AgentOffline(String),
    /// The peer's address could not be reached, or the connection broke before the ack.
    #[error("peer {address} unreachable: {reason}")]
    Unreachable {
        /// The address dialled.
        address: String,
        /// What went wrong (connect refused, reset, closed…).
        reason: String,
    },
    /// An operation did not complete in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out (`send`, `request`, a hub action…).
        operation: String,
        /// The time allowed.
        after: Duration,
    },
    /// The peer could not open our envelope (it answered `{"error":"decryption_failed"}`).
    #[error("peer {address} failed to decrypt the message")]
    DecryptionFailed {
        /// The peer's address.
        address: String,
    },
    /// The peer answered with another error frame, or broke the protocol.
    #[error("peer {address} refused: {error}")]
    Peer {
        /// The peer's address.
        address: String,
        /// The peer's `error` string, or the protocol violation.
        error: String,
    },
    /// 2.1: the peer did not prove the identity required of it: the key the hub vouches for
    /// (a lying hub or a man in the middle answered instead), or any identity where
    /// authenticated peers are required (a 2.0 peer, or a downgrade).
    #[error("peer {address} failed authentication: {reason}")]
    Authentication {
        /// The address dialled.
        address: String,
        /// What did not check out.
        reason: String,
    },
    /// The hub answered `{"status":"error"}` (its error string), or its reply was malformed.
    #[error("hub error: {0}")]
    Hub(String),
    /// The payload cannot be sent (too large for one frame, …).
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// No hub connection right now (before connect, while reconnecting, after disconnect).
    #[error("not connected to the hub")]
    NotConnected,
    /// The agent was disconnected; the operation was cancelled.
    #[error("agent is disconnected")]
    Disconnected,
    /// The operation needs a registration and the agent was built with
    /// [`AgentBuilder::register(false)`](crate::AgentBuilder::register).
    #[error("the agent is not registered at the hub")]
    NotRegistered,
    /// The configuration is unusable (bad hub URL, …).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A local IO failure (binding the P2P port, …).
    #[error("{context}: {reason}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        reason: String,
    },
}

impl AgentError {
    pub(crate) fn timeout(operation: impl Into<String>, after: Duration) -> Self {
        AgentError::Timeout {
            operation: operation.into(),
            after,
        }
    }

    pub(crate) fn unreachable(address: &str, reason: impl std::fmt::Display) -> Self {
        AgentError::Unreachable {
            address: address.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, err: &std::io::Error) -> Self {
        AgentError::Io {
            context: context.into(),
            reason: err.to_string(),
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
