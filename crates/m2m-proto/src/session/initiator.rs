//! The connecting side of a P2P connection.
//!
//! `ExpectHandshakeAck` → (handshake_ack) → `Established`; then `seal` messages and match the
//! acks that come back in order. A `handshake_ack` that fails to verify is an error that
//! leaves the initiator waiting, as it was.

use rand_core::CryptoRngCore;
use serde_json::Value;

use super::established::{Established, OpenFailure};
use super::keys::SessionKeys;
use super::{IncomingMessage, PeerMisbehaved, SessionError};
use crate::crypto::{encode_payload, KeyPair, PublicKey};
use crate::frame::{errors, Frame, ParsedFrame};
use crate::identity::{
    transcript_signature_message, Identity, IdentityError, IdentityKey, Transcript,
    INITIATOR_LABEL, RESPONDER_LABEL,
};

/// What an initiator learned from a line.
// Events are returned and consumed at once, never stored: boxing the message would only add
// an allocation per incoming message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum InitiatorEvent {
    /// The handshake completed: messages may be sealed. On a 2.1 session the IO layer must
    /// first send [`Initiator::take_auth_frame`].
    Established,
    /// The peer acked a message (acks come in the order messages were sent).
    Acked(Option<Value>),
    /// Answer to a ping.
    Pong,
    /// 2.1: the responder sent a message back on this session; hand it to the application,
    /// then send `ack`.
    Message {
        /// The opened message.
        message: IncomingMessage,
        /// The ack to write after delivery.
        ack: Frame,
    },
    /// Nothing relevant (unknown frame types).
    Ignored,
}

/// What a 2.1 initiator knows and demands of the peer before connecting.
#[derive(Debug, Clone, Default)]
pub struct PeerExpectation {
    /// The identity the hub vouches for: the peer must prove exactly this key (no downgrade).
    pub identity: Option<IdentityKey>,
    /// Refuse a 2.0 answer even when the hub vouches for nothing.
    pub require_authenticated: bool,
}

/// What the initiator waits for.
enum InitiatorState {
    ExpectHandshakeAck(Box<HandshakeSent>),
    Established(Box<Established>),
}

/// What the initiator keeps between its `handshake` and the responder's `handshake_ack`.
struct HandshakeSent {
    ours: KeyPair,
    my_id: String,
    identity: Option<Identity>,
    expect: PeerExpectation,
}

/// The fields of a `handshake_ack`.
struct HandshakeAck {
    key: String,
    identity: Option<String>,
    id: Option<String>,
    sig: Option<String>,
}

impl HandshakeSent {
    /// Checks the responder's answer: the established session and, for 2.1, the `auth` frame
    /// to send before any message. On `Err` the caller keeps waiting in this state.
    fn accept(&self, ack: HandshakeAck) -> Result<(Established, Option<Frame>), SessionError> {
        let peer = PublicKey::from_spki_b64(&ack.key)?;
        let secret = self.ours.shared_secret(&peer)?;
        let (Some(me), Some(identity), Some(id), Some(sig)) =
            (&self.identity, ack.identity, ack.id, ack.sig)
        else {
            if self.expect.identity.is_some() || self.expect.require_authenticated {
                return Err(SessionError::DowngradeRefused);
            }
            let established = Established::new(SessionKeys::v20(&secret), String::new());
            return Ok((established, None));
        };
        let peer_identity = IdentityKey::from_b64(&identity)?;
        peer_identity.check_id(&id)?;
        if let Some(expected) = &self.expect.identity {
            if *expected != peer_identity {
                return Err(SessionError::Authentication(IdentityError::IdMismatch));
            }
        }
        let our_public = self.ours.public();
        let transcript_hash = Transcript {
            initiator_ephemeral: &our_public,
            responder_ephemeral: &peer,
            initiator_id: &self.my_id,
            responder_id: &id,
            initiator_identity: &me.public(),
            responder_identity: &peer_identity,
        }
        .hash();
        peer_identity.verify(
            &transcript_signature_message(RESPONDER_LABEL, &transcript_hash),
            &sig,
        )?;
        let auth = Frame::Auth {
            sig: me.sign_b64(&transcript_signature_message(
                INITIATOR_LABEL,
                &transcript_hash,
            )),
        };
        let keys = SessionKeys::v21_initiator(&secret, &transcript_hash);
        Ok((Established::new(keys, id), Some(auth)))
    }
}

/// The connecting side of a P2P connection.
pub struct Initiator {
    state: InitiatorState,
    auth_to_send: Option<Frame>,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("established", &self.is_established())
            .field("authenticated", &self.is_authenticated())
            .finish()
    }
}

impl Initiator {
    /// Starts a 2.0 session as `my_id`; the returned handshake frame is the first thing to
    /// send.
    pub fn new(my_id: &str, rng: &mut dyn CryptoRngCore) -> (Self, Frame) {
        Self::start(my_id.to_owned(), None, PeerExpectation::default(), rng)
    }

    /// Starts a 2.1 session: the handshake carries our identity, whose derived id is our
    /// `from`. A 2.0 responder still answers (unauthenticated) unless `expect` forbids it.
    pub fn new_authenticated(
        identity: &Identity,
        expect: PeerExpectation,
        rng: &mut dyn CryptoRngCore,
    ) -> (Self, Frame) {
        Self::start(
            identity.agent_id().to_owned(),
            Some(identity.clone()),
            expect,
            rng,
        )
    }

    fn start(
        my_id: String,
        identity: Option<Identity>,
        expect: PeerExpectation,
        rng: &mut dyn CryptoRngCore,
    ) -> (Self, Frame) {
        let ours = KeyPair::generate(rng);
        let hello = Frame::Handshake {
            key: ours.public().to_spki_b64(),
            from: my_id.clone(),
            identity: identity.as_ref().map(|i| i.public().to_b64()),
        };
        (
            Initiator {
                state: InitiatorState::ExpectHandshakeAck(Box::new(HandshakeSent {
                    ours,
                    my_id,
                    identity,
                    expect,
                })),
                auth_to_send: None,
            },
            hello,
        )
    }

    /// Whether the handshake has completed.
    pub fn is_established(&self) -> bool {
        matches!(self.state, InitiatorState::Established(_))
    }

    /// Whether the peer proved its identity (2.1).
    pub fn is_authenticated(&self) -> bool {
        matches!(&self.state, InitiatorState::Established(e) if e.authenticated())
    }

    /// The peer's id: verified on a 2.1 session, `None` on 2.0 (the responder declares none).
    pub fn peer_id(&self) -> Option<&str> {
        match &self.state {
            InitiatorState::Established(e) if e.authenticated() => Some(&e.peer),
            _ => None,
        }
    }

    /// 2.1: the `auth` frame to send right after [`InitiatorEvent::Established`], before
    /// any message. `None` on a 2.0 session.
    pub fn take_auth_frame(&mut self) -> Option<Frame> {
        self.auth_to_send.take()
    }

    /// Takes one line from the peer.
    pub fn handle_line(&mut self, line: &[u8]) -> Result<InitiatorEvent, SessionError> {
        match Frame::parse_borrowed(line) {
            // The envelope is opened where it lies in the line.
            Ok(ParsedFrame::Message {
                message_type,
                data,
                correlation_id,
            }) => self.message(message_type, &data, correlation_id),
            Ok(ParsedFrame::Other(frame)) => self.handle_frame(frame),
            Err(_) => Err(SessionError::Protocol(PeerMisbehaved::NotAFrame)),
        }
    }

    fn message(
        &mut self,
        message_type: String,
        data: &str,
        correlation_id: Option<Value>,
    ) -> Result<InitiatorEvent, SessionError> {
        match &mut self.state {
            InitiatorState::Established(e) if e.authenticated() => {
                match e.deliver(message_type, data, correlation_id) {
                    Ok((message, ack)) => Ok(InitiatorEvent::Message { message, ack }),
                    Err(OpenFailure::Replay) => Err(SessionError::Replay),
                    Err(OpenFailure::DecryptionFailed) => Err(SessionError::DecryptionFailed),
                }
            }
            _ => Err(SessionError::Protocol(PeerMisbehaved::UnexpectedFrame)),
        }
    }

    /// Takes one parsed frame from the peer.
    pub fn handle_frame(&mut self, frame: Frame) -> Result<InitiatorEvent, SessionError> {
        match (frame, &mut self.state) {
            (Frame::Error(e), _) => Err(match e.as_str() {
                errors::REPLAY_DETECTED => SessionError::Replay,
                _ => SessionError::PeerError(e),
            }),
            (Frame::Pong, _) => Ok(InitiatorEvent::Pong),
            (
                Frame::HandshakeAck {
                    key,
                    identity,
                    id,
                    sig,
                },
                InitiatorState::ExpectHandshakeAck(sent),
            ) => {
                let ack = HandshakeAck {
                    key,
                    identity,
                    id,
                    sig,
                };
                let (established, auth) = sent.accept(ack)?;
                self.auth_to_send = auth;
                self.state = InitiatorState::Established(Box::new(established));
                Ok(InitiatorEvent::Established)
            }
            (Frame::Ack { correlation_id }, InitiatorState::Established(_)) => {
                Ok(InitiatorEvent::Acked(correlation_id))
            }
            (
                Frame::Message {
                    message_type,
                    data,
                    correlation_id,
                },
                InitiatorState::Established(_),
            ) => self.message(message_type, &data, correlation_id),
            (Frame::HandshakeAck { .. }, InitiatorState::Established(_)) => {
                Err(SessionError::Protocol(PeerMisbehaved::SecondHandshakeAck))
            }
            (Frame::Ack { .. }, InitiatorState::ExpectHandshakeAck(_)) => Err(
                SessionError::Protocol(PeerMisbehaved::AckBeforeHandshakeAck),
            ),
            (Frame::Handshake { .. } | Frame::Message { .. } | Frame::Auth { .. }, _) => {
                Err(SessionError::Protocol(PeerMisbehaved::UnexpectedFrame))
            }
            (Frame::Ping | Frame::Unknown(_), _) => Ok(InitiatorEvent::Ignored),
        }
    }

    /// Seals a payload into a `message` frame.
    pub fn seal(
        &mut self,
        message_type: &str,
        payload: &Value,
        correlation_id: Option<Value>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Frame, SessionError> {
        self.seal_plaintext(message_type, &encode_payload(payload), correlation_id, rng)
    }

    /// Seals an already-encoded plaintext (see [`encode_payload`]).
    pub fn seal_plaintext(
        &mut self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<Value>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Frame, SessionError> {
        let InitiatorState::Established(e) = &mut self.state else {
            return Err(SessionError::NotEstablished);
        };
        Ok(e.seal_frame(rng, message_type, plaintext, correlation_id))
    }

    /// Like [`Initiator::seal_plaintext`], appending the `message` frame line (with its `\n`)
    /// to `out` without building a [`Frame`]: the envelope is encoded straight into `out`.
    pub fn seal_into(
        &mut self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<&str>,
        rng: &mut dyn CryptoRngCore,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        let InitiatorState::Established(e) = &mut self.state else {
            return Err(SessionError::NotEstablished);
        };
        e.seal_into(rng, message_type, plaintext, correlation_id, out);
        Ok(())
    }
}
