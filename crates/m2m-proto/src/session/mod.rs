//! The P2P session (PROTOCOL.md A4) as two state machines with no IO.
//!
//! The IO layer reads lines (see [`crate::codec`]), gives each to
//! [`Responder::handle_line`] or [`Initiator::handle_line`], writes the frames they return and
//! hands delivered messages to the application. Timeouts (handshake, idle) belong to the IO
//! layer; these types only decide what each frame means.
//!
//! - [`responder`]: the accepting side, `ExpectHandshake` → [2.1: `ExpectAuth` →]
//!   `Established`; it answers what the peer sent with frames ([`ResponderOutput`]), never
//!   with an `Err`.
//! - [`initiator`]: the connecting side, `ExpectHandshakeAck` → `Established`; what goes
//!   wrong is a [`SessionError`].
//! - `established`: the transport state both reach: keys, peer id, the buffer envelopes are
//!   sealed and opened in. `keys`: which derived key seals and which opens, per side.
//! - [`error`]: [`SessionError`], sorted by who caused it (peer or caller).

pub mod error;
mod established;
pub mod initiator;
mod keys;
pub mod responder;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use error::{PeerMisbehaved, SessionError};
pub use initiator::{Initiator, InitiatorEvent, PeerExpectation};
pub use responder::{PeerPolicy, Responder, ResponderOutput};

/// A message received and opened on a session, ready for the application.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingMessage {
    /// The sender's id: declared in its handshake (2.0) or verified (2.1).
    pub from: String,
    /// Application message type.
    pub message_type: String,
    /// The decoded payload (JSON, or the raw string).
    pub payload: Value,
    /// The frame's correlationId.
    pub correlation_id: Option<Value>,
    /// Whether `from` is proven (2.1 session) or only declared (2.0).
    pub authenticated: bool,
}
