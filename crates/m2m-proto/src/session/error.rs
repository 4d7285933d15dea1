//! Why an initiator's session failed, sorted by who caused it (as rustls sorts its errors):
//! the peer refused, the peer misbehaved, our policy refused the peer, or the caller used the
//! API wrongly. A responder reports only the caller's mistake this way; what its peer does
//! wrong it answers on the wire, with an error frame (see [`crate::frame::errors`]).

use crate::crypto::CryptoError;
use crate::identity::IdentityError;

/// Why an initiator's session failed.
///
/// Every variant but [`SessionError::NotEstablished`] comes from the wire (what the peer sent,
/// or did not prove); [`SessionError::NotEstablished`] is the caller's mistake, and
/// [`SessionError::is_api_misuse`] tells the two apart. The variants stay flat, rather than
/// nested under a `PeerMisbehaved`/`ApiMisuse` pair, because the agent and the tests match them
/// by name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer refused: it answered `{"error":…}`.
    #[error("peer refused: {0}")]
    PeerError(String),
    /// The peer misbehaved: it sent something the protocol does not allow here.
    #[error("protocol violation by peer: {0}")]
    Protocol(PeerMisbehaved),
    /// The peer misbehaved: its key was unusable.
    #[error("peer key: {0}")]
    Crypto(#[from] CryptoError),
    /// The peer's identity proof failed (bad signature, id not derived from its key, or not
    /// the identity the hub vouches for): a man in the middle or a misconfigured peer.
    #[error("peer authentication failed: {0}")]
    Authentication(#[from] IdentityError),
    /// Our policy refused the peer: it answered as 2.0 where 2.1 is required (the hub knows
    /// its identity, or the application demands authenticated peers).
    #[error("peer did not authenticate (downgrade refused)")]
    DowngradeRefused,
    /// The peer misbehaved: a 2.1 message arrived out of order or replayed.
    #[error("replayed or reordered frame")]
    Replay,
    /// The peer misbehaved: a message from it did not decrypt.
    #[error("message from peer failed to decrypt")]
    DecryptionFailed,
    /// API misuse: the caller sealed a message before the handshake completed (or, on a
    /// responder, on a 2.0 session, which carries messages one way only).
    #[error("session not established")]
    NotEstablished,
}

impl SessionError {
    /// Whether the caller, not the peer, caused this error: retrying on another connection
    /// will not help, fixing the calling code will.
    pub fn is_api_misuse(&self) -> bool {
        matches!(self, SessionError::NotEstablished)
    }
}

/// How a responder broke the protocol, as the initiator saw it. The texts are those of
/// [`SessionError::Protocol`]'s message (the agent shows them to its user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PeerMisbehaved {
    /// A line that is not a frame.
    #[error("line is not JSON")]
    NotAFrame,
    /// A `handshake_ack` on a session that already has one.
    #[error("second handshake_ack")]
    SecondHandshakeAck,
    /// An `ack` before the handshake completed.
    #[error("ack before handshake_ack")]
    AckBeforeHandshakeAck,
    /// A frame only an initiator sends (`handshake`, `auth`), or a `message` before the
    /// handshake or on a 2.0 session (which carries messages one way only).
    #[error("unexpected frame from responder")]
    UnexpectedFrame,
}
