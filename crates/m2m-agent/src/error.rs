//! The one error type of the SDK.
//!
//! Variants separate what the caller can act on: the target is unknown or offline (hub
//! answers), the peer could not be reached or timed out (network), the peer refused the
//! message (error frames), the peer broke the protocol, the hub refused a request (its error
//! string), or the caller misused the API (invalid payload, configuration, not registered).
//! [`AgentError::kind`] sorts them into those classes, as rustls separates a peer that
//! misbehaved from a caller that misused the API.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

/// The class of an [`AgentError`]: whose fault it is, and what can be done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The hub does not know the agent, or lists it offline.
    NotFound,
    /// The network: the peer or the hub could not be reached, or did not answer in time.
    Network,
    /// The peer answered with an error frame (it refused; nothing wrong with the protocol).
    PeerRefused,
    /// The peer broke the protocol: a malformed or oversized line, a frame its state does
    /// not allow, a message that does not decrypt.
    PeerMisbehaved,
    /// The peer did not prove the identity required of it.
    Authentication,
    /// The hub refused a request or answered something malformed.
    Hub,
    /// The caller misused the API: a payload too large, a bad configuration, an action that
    /// needs a registration the agent does not have.
    ApiMisuse,
    /// The agent is not connected to the hub now, or was disconnected.
    NotConnected,
    /// A local failure (binding the P2P port, …).
    Local,
}

/// An OS error kept as the source of an [`AgentError`]: shared, so the error stays
/// `Clone`; compared by kind and message.
#[derive(Debug, Clone)]
pub struct IoError(Arc<io::Error>);

impl IoError {
    /// The OS error.
    pub fn get(&self) -> &io::Error {
        &self.0
    }
}

impl From<io::Error> for IoError {
    fn from(e: io::Error) -> Self {
        IoError(Arc::new(e))
    }
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for IoError {
    fn eq(&self, other: &Self) -> bool {
        self.0.kind() == other.0.kind() && self.0.to_string() == other.0.to_string()
    }
}

impl Eq for IoError {}

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
        /// The OS error, when one said it.
        #[source]
        source: Option<IoError>,
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
    /// The peer answered with another error frame.
    #[error("peer {address} refused: {error}")]
    Peer {
        /// The peer's address.
        address: String,
        /// The peer's `error` string.
        error: String,
    },
    /// The peer broke the protocol: a malformed or oversized line, a frame its state does
    /// not allow, a message that does not decrypt.
    #[error("peer {address} broke the protocol: {reason}")]
    PeerMisbehaved {
        /// The peer's address.
        address: String,
        /// What it did.
        reason: String,
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
    /// Relay: the hub closed the relayed stream to `agent` (docs/RELAY.md, CLOSE reasons).
    #[error("relay to {agent} closed ({reason}): {}", relay_explanation(*.reason, .detail))]
    RelayClosed {
        /// The agent at the other end.
        agent: String,
        /// The CLOSE frame's reason.
        reason: m2m_proto::relay::CloseReason,
        /// The hub's detail text (may be empty).
        detail: String,
    },
    /// Relay: no route reaches `agent` (only a relay would, and it cannot be used).
    #[error("no route to {agent}: {reason}")]
    NoRoute {
        /// The agent.
        agent: String,
        /// Why no route works.
        reason: String,
    },
    /// Mailbox: the recipient's mailbox (or the hub's, or our sender quota) is full
    /// (`mailbox_full`).
    #[error("the mailbox of {0} is full (hub quota reached); try again later")]
    MailboxFull(String),
    /// Mailbox: the sealed message is larger than the hub stores (`message_too_large`).
    #[error("the message to {0} is too large for the hub's mailbox")]
    MessageTooLarge(String),
    /// Mailbox: no mailbox can be used for `agent`: it published no key, the hub keeps no
    /// mail, or the hub is 2.0.
    #[error("no mailbox for {agent}: {reason}")]
    MailboxUnavailable {
        /// The recipient.
        agent: String,
        /// Why.
        reason: String,
    },
    /// Mailbox: the hub refused the TTL as already expired (`expired`).
    #[error("the message to {0} expired before it was stored")]
    Expired(String),
    /// Mailbox: the mailbox key the hub publishes for `agent` does not verify under the
    /// agent's identity (a hub substituting a key of its own is caught here); nothing was
    /// sealed to it.
    #[error("the mailbox key of {agent} does not verify: {reason}")]
    InvalidMailboxKey {
        /// The recipient.
        agent: String,
        /// What did not check out.
        reason: String,
    },
    /// A local IO failure (binding the P2P port, …).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: IoError,
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
            source: None,
        }
    }

    /// [`AgentError::Unreachable`] because of an OS error, kept as the source.
    pub(crate) fn unreachable_io(address: &str, err: io::Error) -> Self {
        AgentError::Unreachable {
            address: address.to_owned(),
            reason: err.to_string(),
            source: Some(err.into()),
        }
    }

    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Self {
        AgentError::Io {
            context: context.into(),
            source: err.into(),
        }
    }

    pub(crate) fn misbehaved(address: &str, reason: impl fmt::Display) -> Self {
        AgentError::PeerMisbehaved {
            address: address.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Whose fault this error is: the peer's, the caller's, the network's, …
    pub fn kind(&self) -> ErrorKind {
        match self {
            AgentError::AgentNotFound(_) | AgentError::AgentOffline(_) => ErrorKind::NotFound,
            AgentError::Unreachable { .. }
            | AgentError::Timeout { .. }
            | AgentError::RelayClosed { .. }
            | AgentError::NoRoute { .. } => ErrorKind::Network,
            AgentError::DecryptionFailed { .. } | AgentError::Peer { .. } => ErrorKind::PeerRefused,
            AgentError::PeerMisbehaved { .. } => ErrorKind::PeerMisbehaved,
            AgentError::Authentication { .. } => ErrorKind::Authentication,
            AgentError::Hub(_)
            | AgentError::MailboxFull(_)
            | AgentError::MailboxUnavailable { .. }
            | AgentError::Expired(_) => ErrorKind::Hub,
            AgentError::MessageTooLarge(_) => ErrorKind::ApiMisuse,
            AgentError::InvalidMailboxKey { .. } => ErrorKind::Authentication,
            AgentError::InvalidPayload(_) | AgentError::NotRegistered | AgentError::Config(_) => {
                ErrorKind::ApiMisuse
            }
            AgentError::NotConnected | AgentError::Disconnected => ErrorKind::NotConnected,
            AgentError::Io { .. } => ErrorKind::Local,
        }
    }
}

/// What a CLOSE reason means for the sender, in one clause.
fn relay_explanation(reason: m2m_proto::relay::CloseReason, detail: &str) -> String {
    use m2m_proto::relay::CloseReason as R;
    let text = match reason {
        R::Normal => "the other end closed the stream",
        R::Unreachable => "the agent is not attached to its hub",
        R::Refused => "the agent refused the stream (no free inbound slot)",
        R::Gone => "the other end's hub connection closed or was replaced",
        R::Budget => "the hub's relay memory budget is spent",
        R::Limit => "too many relayed streams on this hub connection",
        R::Idle => "the stream was idle too long",
        R::Protocol => "a relay frame broke the rules",
    };
    if detail.is_empty() {
        text.to_owned()
    } else {
        format!("{text} ({detail})")
    }
}

/// The message of a relay that only the relay would help and that needs 2.1 on both ends.
pub(crate) const RELAY_NEEDS_21: &str =
    "reachable only through a relay, which needs 2.1 on both ends";

/// Shorthand for results of this crate.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_errors_keep_their_source_and_compare_by_kind() {
        let e = AgentError::io("binding P2P port 1", io::ErrorKind::AddrInUse.into());
        assert_eq!(e.kind(), ErrorKind::Local);
        let source = e.source().expect("the OS error is the source");
        assert_eq!(
            source.to_string(),
            io::Error::from(io::ErrorKind::AddrInUse).to_string()
        );
        assert_eq!(e.to_string(), format!("binding P2P port 1: {source}"));
        assert_eq!(
            e,
            AgentError::io("binding P2P port 1", io::ErrorKind::AddrInUse.into())
        );
        assert_ne!(
            e,
            AgentError::io("binding P2P port 1", io::ErrorKind::PermissionDenied.into())
        );
    }

    #[test]
    fn an_unreachable_peer_keeps_the_os_error() {
        let e = AgentError::unreachable_io("p:1", io::ErrorKind::ConnectionRefused.into());
        let source = e.source().expect("the OS error is the source");
        assert_eq!(e.to_string(), format!("peer p:1 unreachable: {source}"));
        assert!(AgentError::unreachable("p:1", "closed").source().is_none());
    }

    #[test]
    fn the_peer_misbehaving_is_not_the_caller_misusing() {
        assert_eq!(
            AgentError::misbehaved("p", "line too long").kind(),
            ErrorKind::PeerMisbehaved
        );
        assert_eq!(
            AgentError::InvalidPayload("too large".into()).kind(),
            ErrorKind::ApiMisuse
        );
        assert_eq!(AgentError::NotRegistered.kind(), ErrorKind::ApiMisuse);
        assert_eq!(
            AgentError::Peer {
                address: "p".into(),
                error: "busy".into()
            }
            .kind(),
            ErrorKind::PeerRefused
        );
    }
}
