//! P2P frames (PROTOCOL.md A4): one JSON object per line.
//!
//! [`Frame::parse`] reads any line a peer may send: unknown fields are ignored, an unknown
//! `type` becomes [`Frame::Unknown`] (ignored by the session, so later extensions pass
//! through), `{"error":…}` becomes [`Frame::Error`]. [`Frame::encode`] writes the exact field
//! order of the original so captures compare byte for byte.
//!
//! The frame types and the responder's wire error codes are here; [`Frame::parse`] and
//! [`Frame::parse_borrowed`] live in `parse.rs`, [`Frame::encode`] and
//! [`encode_message_with`] in `encode.rs`.

mod encode;
mod parse;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use serde_json::Value;

pub use encode::encode_message_with;

/// Wire error codes a responder sends.
pub mod errors {
    /// Not JSON, or a handshake whose key is not a valid X25519 SPKI (original).
    pub const INVALID_MESSAGE: &str = "invalid_message";
    /// The envelope did not open under the session key (original).
    pub const DECRYPTION_FAILED: &str = "decryption_failed";
    /// **Ours:** a message before any handshake.
    pub const HANDSHAKE_REQUIRED: &str = "handshake_required";
    /// **Ours:** a line over the maximum length; the connection is closed after it.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// **Ours (2.1):** the peer's signature or identity did not verify.
    pub const AUTHENTICATION_FAILED: &str = "authentication_failed";
    /// **Ours:** the responder accepts authenticated peers only.
    pub const AUTHENTICATION_REQUIRED: &str = "authentication_required";
    /// **Ours (2.1):** a counter nonce other than the next expected one.
    pub const REPLAY_DETECTED: &str = "replay_detected";
    /// **Ours:** a frame the session's state does not allow (a second handshake on a
    /// connection, an `auth` that no handshake asked for); the session stays as it was.
    pub const UNEXPECTED_FRAME: &str = "unexpected_frame";
    /// **Ours:** too many handshakes from the peer's address; the connection is closed.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// **Ours:** the agent's budget for inbound buffers is spent; the connection is closed.
    pub const OVERLOADED: &str = "overloaded";
}

/// One P2P frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Initiator's opening: ephemeral key and declared id (+ 2.1 identity key).
    Handshake {
        /// Base64 SPKI X25519 key.
        key: String,
        /// The initiator's agent id as it declares it.
        from: String,
        /// 2.1: base64 Ed25519 identity key.
        identity: Option<String>,
    },
    /// Responder's answer (+ 2.1 identity and transcript signature).
    HandshakeAck {
        /// Base64 SPKI X25519 key.
        key: String,
        /// 2.1: base64 Ed25519 identity key.
        identity: Option<String>,
        /// 2.1: the responder's id.
        id: Option<String>,
        /// 2.1: base64 signature over the transcript.
        sig: Option<String>,
    },
    /// 2.1: the initiator's transcript signature.
    Auth {
        /// Base64 signature.
        sig: String,
    },
    /// An encrypted application message.
    Message {
        /// Application message type.
        message_type: String,
        /// The envelope.
        data: String,
        /// Echoed in the ack (a string in practice; kept as sent).
        correlation_id: Option<Value>,
    },
    /// Receipt of a message.
    Ack {
        /// The message's correlationId, if it had one.
        correlation_id: Option<Value>,
    },
    /// Liveness probe.
    Ping,
    /// Answer to ping.
    Pong,
    /// `{"error":"…"}`.
    Error(String),
    /// A frame with a type this implementation does not know; ignored.
    Unknown(String),
}

/// Why a line is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON object.
    #[error("line is not a JSON object")]
    NotJson,
    /// A known type with a missing or mistyped field.
    #[error("`{kind}` frame without a valid `{field}`")]
    BadField {
        /// Frame type.
        kind: &'static str,
        /// Field name.
        field: &'static str,
    },
}

/// A parsed line whose `message` envelope is still borrowed from the line (see
/// [`Frame::parse_borrowed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedFrame<'a> {
    /// A `message` frame.
    Message {
        /// Application message type.
        message_type: String,
        /// The envelope, borrowed unless the line escaped characters in it.
        data: Cow<'a, str>,
        /// The frame's correlationId.
        correlation_id: Option<Value>,
    },
    /// Any other frame.
    Other(Frame),
}

impl ParsedFrame<'_> {
    /// The owned frame.
    pub fn into_owned(self) -> Frame {
        match self {
            ParsedFrame::Message {
                message_type,
                data,
                correlation_id,
            } => Frame::Message {
                message_type,
                data: data.into_owned(),
                correlation_id,
            },
            ParsedFrame::Other(f) => f,
        }
    }
}

impl Frame {
    /// An error frame with `code`.
    pub fn error(code: &str) -> Frame {
        Frame::Error(code.to_owned())
    }
}
