//! The accepting side of a P2P connection.
//!
//! `ExpectHandshake` → (handshake) → [2.1: `ExpectAuth` → (auth) →] `Established`; a `ping`
//! is answered in every state. **Ours:** one handshake per connection (the original re-keys
//! on every handshake, which let one connection force a key exchange per line). Each step
//! consumes the state and returns the next one, so a frame the state does not allow (a second
//! handshake, a stray `auth`) is an `unexpected_frame` error that leaves the session exactly
//! as it was. What the peer sent is answered with a [`ResponderOutput`], never an `Err`;
//! only sealing fails, when the caller seals on a session that cannot carry it
//! ([`SessionError::NotEstablished`]).

use rand_core::CryptoRngCore;
use serde_json::Value;

use super::established::{Established, OpenFailure};
use super::keys::SessionKeys;
use super::{IncomingMessage, SessionError};
use crate::crypto::{encode_payload, KeyPair, PublicKey};
use crate::frame::{errors, Frame, ParsedFrame};
use crate::identity::{
    transcript_signature_message, Identity, IdentityKey, Transcript, INITIATOR_LABEL,
    RESPONDER_LABEL,
};

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
    /// 2.1: the initiator acked a message we sent back on this session (see
    /// [`Responder::seal`]).
    Acked(Option<Value>),
    /// Nothing to do (unknown frame types, stray acks).
    Nothing,
}

/// What a 2.1 responder requires of initiators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerPolicy {
    /// Accept 2.0 initiators (unauthenticated) as well as 2.1 ones.
    #[default]
    AcceptAll,
    /// Refuse initiators that do not authenticate.
    AuthenticatedOnly,
}

/// What the responder waits for.
enum ResponderState {
    ExpectHandshake,
    /// 2.1: handshake_ack sent; the initiator's `auth` must come before any message.
    ExpectAuth(Box<PendingAuth>),
    Established(Box<Established>),
}

/// 2.1: what the responder keeps between its `handshake_ack` and the initiator's `auth`.
struct PendingAuth {
    keys: SessionKeys,
    peer: String,
    peer_identity: IdentityKey,
    transcript_hash: [u8; 32],
}

/// The accepting side of a P2P connection.
pub struct Responder {
    state: ResponderState,
    identity: Option<Identity>,
    policy: PeerPolicy,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("established", &self.is_established())
            .field("peer", &self.peer_id())
            .field("identity", &self.identity)
            .finish()
    }
}

impl Default for Responder {
    fn default() -> Self {
        Self::new()
    }
}

impl Responder {
    /// A 2.0 responder waiting for a handshake.
    pub fn new() -> Self {
        Responder {
            state: ResponderState::ExpectHandshake,
            identity: None,
            policy: PeerPolicy::AcceptAll,
        }
    }

    /// A 2.1 responder: authenticates initiators that present an identity, and serves 2.0
    /// initiators unless `policy` refuses them.
    pub fn with_identity(identity: Identity, policy: PeerPolicy) -> Self {
        Responder {
            state: ResponderState::ExpectHandshake,
            identity: Some(identity),
            policy,
        }
    }

    /// Whether no handshake has arrived yet: the next handshake line costs a key exchange
    /// (and for 2.1 a signature), which the IO layer may want to rate-limit first.
    pub fn awaits_handshake(&self) -> bool {
        matches!(self.state, ResponderState::ExpectHandshake)
    }

    /// Whether a handshake has completed (for 2.1: including the initiator's `auth`).
    pub fn is_established(&self) -> bool {
        matches!(self.state, ResponderState::Established(_))
    }

    /// Whether the peer is authenticated (a completed 2.1 session).
    pub fn is_authenticated(&self) -> bool {
        matches!(&self.state, ResponderState::Established(e) if e.authenticated())
    }

    /// The peer's id, once established: declared (2.0) or verified (2.1).
    pub fn peer_id(&self) -> Option<&str> {
        match &self.state {
            ResponderState::Established(e) => Some(&e.peer),
            _ => None,
        }
    }

    /// The answer to a line over the length limit: an error, then close.
    pub fn line_too_long(&self) -> ResponderOutput {
        ResponderOutput::SendAndClose(Frame::error(errors::FRAME_TOO_LARGE))
    }

    /// Takes one line from the peer.
    pub fn handle_line(&mut self, line: &[u8], rng: &mut dyn CryptoRngCore) -> ResponderOutput {
        match Frame::parse_borrowed(line) {
            // The envelope is opened where it lies in the line.
            Ok(ParsedFrame::Message {
                message_type,
                data,
                correlation_id,
            }) => self.message(message_type, &data, correlation_id),
            Ok(ParsedFrame::Other(frame)) => self.handle_frame(frame, rng),
            Err(_) => ResponderOutput::Send(Frame::error(errors::INVALID_MESSAGE)),
        }
    }

    fn message(
        &mut self,
        message_type: String,
        data: &str,
        correlation_id: Option<Value>,
    ) -> ResponderOutput {
        let established = match &mut self.state {
            ResponderState::Established(e) => e,
            ResponderState::ExpectAuth(_) => {
                return ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_REQUIRED))
            }
            ResponderState::ExpectHandshake => {
                return ResponderOutput::Send(Frame::error(errors::HANDSHAKE_REQUIRED))
            }
        };
        match established.deliver(message_type, data, correlation_id) {
            Ok((message, ack)) => ResponderOutput::Deliver { message, ack },
            // A counter out of order means frames were replayed or reordered: the
            // stream can no longer be trusted.
            Err(failure @ OpenFailure::Replay) => {
                ResponderOutput::SendAndClose(Frame::error(failure.code()))
            }
            Err(failure) => ResponderOutput::Send(Frame::error(failure.code())),
        }
    }

    /// Takes one parsed frame from the peer.
    pub fn handle_frame(&mut self, frame: Frame, rng: &mut dyn CryptoRngCore) -> ResponderOutput {
        match frame {
            Frame::Ping => ResponderOutput::Send(Frame::Pong),
            Frame::Handshake {
                key,
                from,
                identity,
            } => self.step(|me, state| me.handshake(state, &key, from, identity.as_deref(), rng)),
            Frame::Auth { sig } => self.step(|me, state| me.auth(state, &sig)),
            Frame::Message {
                message_type,
                data,
                correlation_id,
            } => self.message(message_type, &data, correlation_id),
            Frame::Ack { correlation_id } => match &self.state {
                ResponderState::Established(e) if e.authenticated() => {
                    ResponderOutput::Acked(correlation_id)
                }
                _ => ResponderOutput::Nothing,
            },
            Frame::HandshakeAck { .. } | Frame::Pong | Frame::Error(_) | Frame::Unknown(_) => {
                ResponderOutput::Nothing
            }
        }
    }

    /// Runs one state transition: `transition` consumes the current state and must hand
    /// back the next one on every path, so no early return can leave the session wiped.
    fn step(
        &mut self,
        transition: impl FnOnce(&Self, ResponderState) -> (ResponderState, ResponderOutput),
    ) -> ResponderOutput {
        let state = std::mem::replace(&mut self.state, ResponderState::ExpectHandshake);
        let (next, output) = transition(self, state);
        self.state = next;
        output
    }

    fn handshake(
        &self,
        state: ResponderState,
        key: &str,
        from: String,
        identity: Option<&str>,
        rng: &mut dyn CryptoRngCore,
    ) -> (ResponderState, ResponderOutput) {
        let unexpected = || ResponderOutput::Send(Frame::error(errors::UNEXPECTED_FRAME));
        if !matches!(state, ResponderState::ExpectHandshake) {
            // One handshake per connection, checked before any crypto is spent on it.
            return (state, unexpected());
        }
        let invalid = || ResponderOutput::Send(Frame::error(errors::INVALID_MESSAGE));
        let Ok(peer_key) = PublicKey::from_spki_b64(key) else {
            return (state, invalid());
        };
        let ours = KeyPair::generate(rng);
        let Ok(secret) = ours.shared_secret(&peer_key) else {
            return (state, invalid());
        };
        let (Some(me), Some(identity)) = (&self.identity, identity) else {
            if self.identity.is_some() && self.policy == PeerPolicy::AuthenticatedOnly {
                return (
                    state,
                    ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_REQUIRED)),
                );
            }
            let established = ResponderState::Established(Box::new(Established::new(
                SessionKeys::v20(&secret),
                from,
            )));
            return (
                established,
                ResponderOutput::Send(Frame::HandshakeAck {
                    key: ours.public().to_spki_b64(),
                    identity: None,
                    id: None,
                    sig: None,
                }),
            );
        };
        let peer_identity = match IdentityKey::from_b64(identity) {
            Ok(k) if k.check_id(&from).is_ok() => k,
            _ => {
                return (
                    state,
                    ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_FAILED)),
                )
            }
        };
        let our_public = ours.public();
        let transcript_hash = Transcript {
            initiator_ephemeral: &peer_key,
            responder_ephemeral: &our_public,
            initiator_id: &from,
            responder_id: me.agent_id(),
            initiator_identity: &peer_identity,
            responder_identity: &me.public(),
        }
        .hash();
        let sig = me.sign_b64(&transcript_signature_message(
            RESPONDER_LABEL,
            &transcript_hash,
        ));
        let ack = Frame::HandshakeAck {
            key: our_public.to_spki_b64(),
            identity: Some(me.public().to_b64()),
            id: Some(me.agent_id().to_owned()),
            sig: Some(sig),
        };
        let pending = ResponderState::ExpectAuth(Box::new(PendingAuth {
            keys: SessionKeys::v21_responder(&secret, &transcript_hash),
            peer: from,
            peer_identity,
            transcript_hash,
        }));
        (pending, ResponderOutput::Send(ack))
    }

    fn auth(&self, state: ResponderState, sig: &str) -> (ResponderState, ResponderOutput) {
        let pending = match state {
            ResponderState::ExpectAuth(pending) => pending,
            // No handshake asked for this signature: refuse it, keep the session.
            other => {
                return (
                    other,
                    ResponderOutput::Send(Frame::error(errors::UNEXPECTED_FRAME)),
                )
            }
        };
        let message = transcript_signature_message(INITIATOR_LABEL, &pending.transcript_hash);
        if pending.peer_identity.verify(&message, sig).is_err() {
            return (
                ResponderState::ExpectAuth(pending),
                ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_FAILED)),
            );
        }
        let PendingAuth { keys, peer, .. } = *pending;
        (
            ResponderState::Established(Box::new(Established::new(keys, peer))),
            ResponderOutput::Nothing,
        )
    }

    /// 2.1: seals a message to send back to the initiator on this session (responses
    /// above all). Only an authenticated session carries messages both ways; a 2.0
    /// initiator would not understand them.
    pub fn seal(
        &mut self,
        message_type: &str,
        payload: &Value,
        correlation_id: Option<Value>,
        rng: &mut dyn CryptoRngCore,
    ) -> Result<Frame, SessionError> {
        match &mut self.state {
            ResponderState::Established(e) if e.authenticated() => {
                Ok(e.seal_frame(rng, message_type, &encode_payload(payload), correlation_id))
            }
            _ => Err(SessionError::NotEstablished),
        }
    }

    /// 2.1: like [`Responder::seal`], appending the `message` frame line (with its `\n`) to
    /// `out` without building a [`Frame`]; `plaintext` as [`encode_payload`] makes it.
    pub fn seal_into(
        &mut self,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<&str>,
        rng: &mut dyn CryptoRngCore,
        out: &mut Vec<u8>,
    ) -> Result<(), SessionError> {
        match &mut self.state {
            ResponderState::Established(e) if e.authenticated() => {
                e.seal_into(rng, message_type, plaintext, correlation_id, out);
                Ok(())
            }
            _ => Err(SessionError::NotEstablished),
        }
    }
}
