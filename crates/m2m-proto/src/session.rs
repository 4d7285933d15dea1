//! The P2P session (PROTOCOL.md A4) as two state machines with no IO.
//!
//! The IO layer reads lines (see [`crate::codec`]), gives each to
//! [`Responder::handle_line`] or [`Initiator::handle_line`], writes the frames they return and
//! hands delivered messages to the application. Timeouts (handshake, idle) belong to the IO
//! layer; these types only decide what each frame means.
//!
//! Responder: `ExpectHandshake` → (handshake) → `Established`; a `ping` is answered in every
//! state; a later handshake re-keys the session as the original allows.
//! Initiator: `ExpectHandshakeAck` → (handshake_ack) → `Established`; then `seal` messages and
//! match the acks that come back in order.

use rand_core::CryptoRngCore;
use serde_json::Value;

use crate::crypto::{decode_payload, encode_payload, CryptoError, EnvelopeKey, KeyPair, PublicKey};
use crate::frame::{errors, Frame};

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

/// What the IO layer does after a responder took a line.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponderOutput {
    /// Write this frame.
    Send(Frame),
    /// Hand the message to the application; write `ack` once it is accepted.
    Deliver {
        /// The opened message.
        message: IncomingMessage,
        /// The ack to write after delivery.
        ack: Frame,
    },
    /// Write this frame, then close the connection.
    SendAndClose(Frame),
    /// Nothing to do (unknown frame types, stray acks).
    Nothing,
}

enum ResponderState {
    ExpectHandshake,
    Established { key: EnvelopeKey, peer: String },
}

/// The accepting side of a P2P connection.
pub struct Responder {
    state: ResponderState,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("established", &self.is_established())
            .field("peer", &self.peer_id())
            .finish()
    }
}

impl Default for Responder {
    fn default() -> Self {
        Self::new()
    }
}

impl Responder {
    /// A responder waiting for a handshake.
    pub fn new() -> Self {
        Responder {
            state: ResponderState::ExpectHandshake,
        }
    }

    /// Whether a handshake has completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, ResponderState::Established { .. })
    }

    /// The id the peer declared, once established.
    pub fn peer_id(&self) -> Option<&str> {
        match &self.state {
            ResponderState::Established { peer, .. } => Some(peer),
            ResponderState::ExpectHandshake => None,
        }
    }

    /// The answer to a line over the length limit: an error, then close.
    pub fn line_too_long(&self) -> ResponderOutput {
        ResponderOutput::SendAndClose(Frame::error(errors::FRAME_TOO_LARGE))
    }

    /// Takes one line from the peer.
    pub fn handle_line(&mut self, line: &[u8], rng: &mut dyn CryptoRngCore) -> ResponderOutput {
        let frame = match Frame::parse(line) {
            Ok(f) => f,
            Err(_) => return ResponderOutput::Send(Frame::error(errors::INVALID_MESSAGE)),
        };
        self.handle_frame(frame, rng)
    }

    /// Takes one parsed frame from the peer.
    pub fn handle_frame(&mut self, frame: Frame, rng: &mut dyn CryptoRngCore) -> ResponderOutput {
        match frame {
            Frame::Ping => ResponderOutput::Send(Frame::Pong),
            Frame::Handshake { key, from, .. } => {
                let Ok(peer_key) = PublicKey::from_spki_b64(&key) else {
                    return ResponderOutput::Send(Frame::error(errors::INVALID_MESSAGE));
                };
                let ours = KeyPair::generate(rng);
                let Ok(secret) = ours.shared_secret(&peer_key) else {
                    return ResponderOutput::Send(Frame::error(errors::INVALID_MESSAGE));
                };
                self.state = ResponderState::Established {
                    key: EnvelopeKey::new(&secret),
                    peer: from,
                };
                ResponderOutput::Send(Frame::HandshakeAck {
                    key: ours.public().to_spki_b64(),
                    identity: None,
                    id: None,
                    sig: None,
                })
            }
            Frame::Message {
                message_type,
                data,
                correlation_id,
            } => {
                let ResponderState::Established { key, peer } = &self.state else {
                    return ResponderOutput::Send(Frame::error(errors::HANDSHAKE_REQUIRED));
                };
                match key.open(&data) {
                    Ok((_, plaintext)) => ResponderOutput::Deliver {
                        message: IncomingMessage {
                            from: peer.clone(),
                            message_type,
                            payload: decode_payload(&plaintext),
                            correlation_id: correlation_id.clone(),
                            authenticated: false,
                        },
                        ack: Frame::Ack { correlation_id },
                    },
                    Err(_) => ResponderOutput::Send(Frame::error(errors::DECRYPTION_FAILED)),
                }
            }
            Frame::HandshakeAck { .. }
            | Frame::Auth { .. }
            | Frame::Ack { .. }
            | Frame::Pong
            | Frame::Error(_)
            | Frame::Unknown(_) => ResponderOutput::Nothing,
        }
    }
}

/// Why an initiator's session failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The peer answered `{"error":…}`.
    #[error("peer refused: {0}")]
    PeerError(String),
    /// The peer sent something the protocol does not allow here.
    #[error("protocol violation by peer: {0}")]
    Protocol(&'static str),
    /// The peer's key was unusable.
    #[error("peer key: {0}")]
    Crypto(#[from] CryptoError),
    /// The caller sealed a message before the handshake completed.
    #[error("session not established")]
    NotEstablished,
}

/// What an initiator learned from a line.
#[derive(Debug, Clone, PartialEq)]
pub enum InitiatorEvent {
    /// The handshake completed: messages may be sealed.
    Established,
    /// The peer acked a message (acks come in the order messages were sent).
    Acked(Option<Value>),
    /// Answer to a ping.
    Pong,
    /// Nothing relevant (unknown frame types).
    Ignored,
}

enum InitiatorState {
    ExpectHandshakeAck(KeyPair),
    Established(EnvelopeKey),
}

/// The connecting side of a P2P connection.
pub struct Initiator {
    state: InitiatorState,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("established", &self.is_established())
            .finish()
    }
}

impl Initiator {
    /// Starts a session as `my_id`; the returned handshake frame is the first thing to send.
    pub fn new(my_id: &str, rng: &mut dyn CryptoRngCore) -> (Self, Frame) {
        let ours = KeyPair::generate(rng);
        let hello = Frame::Handshake {
            key: ours.public().to_spki_b64(),
            from: my_id.to_owned(),
            identity: None,
        };
        (
            Initiator {
                state: InitiatorState::ExpectHandshakeAck(ours),
            },
            hello,
        )
    }

    /// Whether the handshake has completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, InitiatorState::Established(_))
    }

    /// Takes one line from the peer.
    pub fn handle_line(&mut self, line: &[u8]) -> Result<InitiatorEvent, SessionError> {
        let frame = Frame::parse(line).map_err(|_| SessionError::Protocol("line is not JSON"))?;
        self.handle_frame(frame)
    }

    /// Takes one parsed frame from the peer.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<InitiatorEvent, SessionError> {
        match (frame, &self.state) {
            (Frame::Error(e), _) => Err(SessionError::PeerError(e)),
            (Frame::Pong, _) => Ok(InitiatorEvent::Pong),
            (Frame::HandshakeAck { key, .. }, InitiatorState::ExpectHandshakeAck(ours)) => {
                let peer = PublicKey::from_spki_b64(&key)?;
                let secret = ours.shared_secret(&peer)?;
                self.state = InitiatorState::Established(EnvelopeKey::new(&secret));
                Ok(InitiatorEvent::Established)
            }
            (Frame::Ack { correlation_id }, InitiatorState::Established(_)) => {
                Ok(InitiatorEvent::Acked(correlation_id))
            }
            (Frame::HandshakeAck { .. }, InitiatorState::Established(_)) => {
                Err(SessionError::Protocol("second handshake_ack"))
            }
            (Frame::Ack { .. }, InitiatorState::ExpectHandshakeAck(_)) => {
                Err(SessionError::Protocol("ack before handshake_ack"))
            }
            (Frame::Handshake { .. } | Frame::Message { .. } | Frame::Auth { .. }, _) => {
                Err(SessionError::Protocol("unexpected frame from responder"))
            }
            (Frame::Ping | Frame::Unknown(_), _) => Ok(InitiatorEvent::Ignored),
        }
    }

    /// Seals a payload into a `message` frame.
    pub fn seal(
        &self,
        message_type: &str,
        payload: &Value,
        correlation_id: Option<Value>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Frame, SessionError> {
        self.seal_plaintext(message_type, &encode_payload(payload), correlation_id, rng)
    }

    /// Seals an already-encoded plaintext (see [`encode_payload`]).
    pub fn seal_plaintext(
        &self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<Value>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Frame, SessionError> {
        let InitiatorState::Established(key) = &self.state else {
            return Err(SessionError::NotEstablished);
        };
        Ok(Frame::Message {
            message_type: message_type.to_owned(),
            data: key.seal_random(rng, plaintext),
            correlation_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    fn line(f: &Frame) -> Vec<u8> {
        let mut l = f.encode();
        l.pop();
        l
    }

    #[test]
    fn in_memory_pair_exchanges_messages() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mut init, hello) = Initiator::new("alice", &mut rng);
        let mut resp = Responder::new();
        let ResponderOutput::Send(ack) = resp.handle_line(&line(&hello), &mut rng) else {
            panic!("no handshake_ack")
        };
        assert_eq!(
            init.handle_line(&line(&ack)).unwrap(),
            InitiatorEvent::Established
        );
        for i in 0..3 {
            let payload = json!({"n": i});
            let msg = init
                .seal("chat", &payload, Some(json!(format!("c{i}"))), &mut rng)
                .unwrap();
            match resp.handle_line(&line(&msg), &mut rng) {
                ResponderOutput::Deliver { message, ack } => {
                    assert_eq!(message.from, "alice");
                    assert_eq!(message.payload, payload);
                    assert!(!message.authenticated);
                    assert_eq!(
                        init.handle_line(&line(&ack)).unwrap(),
                        InitiatorEvent::Acked(Some(json!(format!("c{i}"))))
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn initiator_surfaces_peer_errors() {
        let mut rng = StdRng::seed_from_u64(2);
        let (mut init, _) = Initiator::new("a", &mut rng);
        assert_eq!(
            init.handle_line(br#"{"error":"invalid_message"}"#),
            Err(SessionError::PeerError("invalid_message".into()))
        );
        assert!(init.seal("x", &json!(1), None, &mut rng).is_err());
        assert!(matches!(
            init.handle_line(br#"{"type":"handshake_ack","key":"AAAA"}"#),
            Err(SessionError::Crypto(_))
        ));
    }
}
