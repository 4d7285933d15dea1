//! The P2P session (PROTOCOL.md A4) as two state machines with no IO.
//!
//! The IO layer reads lines (see [`crate::codec`]), gives each to
//! [`Responder::handle_line`] or [`Initiator::handle_line`], writes the frames they return and
//! hands delivered messages to the application. Timeouts (handshake, idle) belong to the IO
//! layer; these types only decide what each frame means.
//!
//! Responder: `ExpectHandshake` → (handshake) → [2.1: `ExpectAuth` → (auth) →] `Established`;
//! a `ping` is answered in every state. **Ours:** one handshake per connection (the original
//! re-keys on every handshake, which let one connection force a key exchange per line). Each
//! step consumes the state and returns the next one, so a frame the state does not allow
//! (a second handshake, a stray `auth`) is an `unexpected_frame` error that leaves the
//! session exactly as it was.
//! Initiator: `ExpectHandshakeAck` → (handshake_ack) → `Established`; then `seal` messages and
//! match the acks that come back in order.

use rand_core::CryptoRngCore;
use serde_json::Value;

use std::ops::Range;

use crate::crypto::{
    decode_payload, encode_payload, CounterError, CounterKey, CryptoError, EnvelopeKey, KeyPair,
    PublicKey, NONCE_LEN,
};
use crate::frame::{encode_message_with, errors, Frame, ParsedFrame};
use crate::identity::{
    session_keys, transcript_signature_message, Identity, IdentityError, IdentityKey, Transcript,
    INITIATOR_LABEL, RESPONDER_LABEL,
};

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

enum ResponderState {
    ExpectHandshake,
    /// 2.1: handshake_ack sent; the initiator's `auth` must come before any message.
    ExpectAuth(Box<PendingAuth>),
    Established(Box<Established>),
}

struct PendingAuth {
    keys: Keys,
    peer: String,
    peer_identity: IdentityKey,
    transcript_hash: [u8; 32],
}

/// Session keys: one random-nonce key for 2.0, two counter keys for 2.1.
enum Keys {
    V20(EnvelopeKey),
    V21 {
        /// What we seal with.
        send: CounterKey,
        /// What we open with.
        recv: CounterKey,
    },
}

/// Scratch kept by a session between messages: a 64 KiB bulk message (88 KiB of base64)
/// reuses it; anything larger is allocated for the message and freed after it.
const KEPT_SCRATCH: usize = 128 * 1024;

struct Established {
    keys: Keys,
    peer: String,
    /// Reused for every envelope sealed or opened on the session, so that a message costs
    /// no buffer of its size.
    buf: Vec<u8>,
}

impl Established {
    fn authenticated(&self) -> bool {
        matches!(self.keys, Keys::V21 { .. })
    }

    fn new(keys: Keys, peer: String) -> Self {
        Established {
            keys,
            peer,
            buf: Vec::new(),
        }
    }

    /// Gives back the scratch buffer after a large message, so an idle session does not keep
    /// the size of the largest message it ever carried.
    fn release_large_buffer(&mut self) {
        if self.buf.capacity() > KEPT_SCRATCH {
            self.buf = Vec::new();
        }
    }

    /// Opens `envelope` into `self.buf`; the plaintext is `self.buf[range]`.
    fn open(&mut self, envelope: &str) -> Result<Range<usize>, &'static str> {
        match &mut self.keys {
            Keys::V20(key) => key
                .open_in(envelope, &mut self.buf)
                .map(|(_, range)| range)
                .map_err(|_| errors::DECRYPTION_FAILED),
            Keys::V21 { recv, .. } => recv.open_in(envelope, &mut self.buf).map_err(|e| match e {
                CounterError::Replay => errors::REPLAY_DETECTED,
                CounterError::DecryptionFailed => errors::DECRYPTION_FAILED,
            }),
        }
    }

    /// Opens a message's envelope into the message for the application and its ack.
    fn deliver(
        &mut self,
        message_type: String,
        data: &str,
        correlation_id: Option<Value>,
    ) -> Result<(IncomingMessage, Frame), &'static str> {
        let range = self.open(data)?;
        let message = IncomingMessage {
            from: self.peer.clone(),
            message_type,
            payload: decode_payload(&self.buf[range]),
            correlation_id: correlation_id.clone(),
            authenticated: self.authenticated(),
        };
        self.release_large_buffer();
        Ok((message, Frame::Ack { correlation_id }))
    }

    /// Appends a sealed `message` frame to `out`.
    fn seal_into(
        &mut self,
        rng: &mut dyn CryptoRngCore,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        let Established { keys, buf, .. } = self;
        encode_message_with(out, message_type, correlation_id, |out| match keys {
            Keys::V20(key) => {
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut nonce);
                key.seal_append(nonce, plaintext, buf, out);
            }
            Keys::V21 { send, .. } => send.seal_append(plaintext, buf, out),
        });
        self.release_large_buffer();
    }

    fn seal(&mut self, rng: &mut dyn CryptoRngCore, plaintext: &[u8]) -> String {
        match &mut self.keys {
            Keys::V20(key) => key.seal_random(rng, plaintext),
            Keys::V21 { send, .. } => send.seal(plaintext),
        }
    }
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
            Err(code @ errors::REPLAY_DETECTED) => {
                ResponderOutput::SendAndClose(Frame::error(code))
            }
            Err(code) => ResponderOutput::Send(Frame::error(code)),
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
                Keys::V20(EnvelopeKey::new(&secret)),
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
        let (i2r, r2i) = session_keys(&secret, &transcript_hash);
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
            keys: Keys::V21 {
                send: CounterKey::new(&r2i),
                recv: CounterKey::new(&i2r),
            },
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
            ResponderState::Established(e) if e.authenticated() => Ok(Frame::Message {
                message_type: message_type.to_owned(),
                data: e.seal(rng, &encode_payload(payload)),
                correlation_id,
            }),
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
    /// The peer's identity proof failed (bad signature, id not derived from its key, or not
    /// the identity the hub vouches for): a man in the middle or a misconfigured peer.
    #[error("peer authentication failed: {0}")]
    Authentication(#[from] IdentityError),
    /// The peer answered as 2.0 where 2.1 is required (the hub knows its identity, or the
    /// application demands authenticated peers).
    #[error("peer did not authenticate (downgrade refused)")]
    DowngradeRefused,
    /// A 2.1 message arrived out of order or replayed.
    #[error("replayed or reordered frame")]
    Replay,
    /// A message from the peer did not decrypt.
    #[error("message from peer failed to decrypt")]
    DecryptionFailed,
    /// The caller sealed a message before the handshake completed.
    #[error("session not established")]
    NotEstablished,
}

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

enum InitiatorState {
    ExpectHandshakeAck(Box<Hello>),
    Established(Box<Established>),
}

struct Hello {
    ours: KeyPair,
    my_id: String,
    identity: Option<Identity>,
    expect: PeerExpectation,
}

/// The connecting side of a P2P connection.
pub struct Initiator {
    state: InitiatorState,
    pending_auth: Option<Frame>,
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
                state: InitiatorState::ExpectHandshakeAck(Box::new(Hello {
                    ours,
                    my_id,
                    identity,
                    expect,
                })),
                pending_auth: None,
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
        self.pending_auth.take()
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
            Err(_) => Err(SessionError::Protocol("line is not JSON")),
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
                    Err(errors::REPLAY_DETECTED) => Err(SessionError::Replay),
                    Err(_) => Err(SessionError::DecryptionFailed),
                }
            }
            _ => Err(SessionError::Protocol("unexpected frame from responder")),
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
                InitiatorState::ExpectHandshakeAck(hello),
            ) => {
                let peer = PublicKey::from_spki_b64(&key)?;
                let secret = hello.ours.shared_secret(&peer)?;
                let established = match (&hello.identity, identity, id, sig) {
                    (Some(me), Some(identity), Some(id), Some(sig)) => {
                        let peer_identity = IdentityKey::from_b64(&identity)?;
                        peer_identity.check_id(&id)?;
                        if let Some(expected) = &hello.expect.identity {
                            if *expected != peer_identity {
                                return Err(SessionError::Authentication(
                                    IdentityError::IdMismatch,
                                ));
                            }
                        }
                        let our_public = hello.ours.public();
                        let transcript_hash = Transcript {
                            initiator_ephemeral: &our_public,
                            responder_ephemeral: &peer,
                            initiator_id: &hello.my_id,
                            responder_id: &id,
                            initiator_identity: &me.public(),
                            responder_identity: &peer_identity,
                        }
                        .hash();
                        peer_identity.verify(
                            &transcript_signature_message(RESPONDER_LABEL, &transcript_hash),
                            &sig,
                        )?;
                        let (i2r, r2i) = session_keys(&secret, &transcript_hash);
                        self.pending_auth = Some(Frame::Auth {
                            sig: me.sign_b64(&transcript_signature_message(
                                INITIATOR_LABEL,
                                &transcript_hash,
                            )),
                        });
                        Established::new(
                            Keys::V21 {
                                send: CounterKey::new(&i2r),
                                recv: CounterKey::new(&r2i),
                            },
                            id,
                        )
                    }
                    _ => {
                        if hello.expect.identity.is_some() || hello.expect.require_authenticated {
                            return Err(SessionError::DowngradeRefused);
                        }
                        Established::new(Keys::V20(EnvelopeKey::new(&secret)), String::new())
                    }
                };
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
        Ok(Frame::Message {
            message_type: message_type.to_owned(),
            data: e.seal(rng, plaintext),
            correlation_id,
        })
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

    /// `seal_into` writes the frame `seal` builds (2.0: same nonce from the same rng state;
    /// 2.1 both ways: the same counter), and what it writes opens on the other side.
    #[test]
    fn seal_into_writes_what_seal_builds() {
        let mut rng = StdRng::seed_from_u64(3);
        let (mut init, hello) = Initiator::new("alice", &mut rng);
        let mut resp = Responder::new();
        let ResponderOutput::Send(ack) = resp.handle_line(&line(&hello), &mut rng) else {
            panic!("no handshake_ack")
        };
        init.handle_line(&line(&ack)).unwrap();
        let payload = json!({"n": "x".repeat(1000)});
        let plaintext = encode_payload(&payload);
        let cid = json!("c1");
        let framed = init
            .seal_plaintext(
                "t",
                &plaintext,
                Some(cid.clone()),
                &mut StdRng::seed_from_u64(9),
            )
            .unwrap();
        let mut out = Vec::new();
        init.seal_into(
            "t",
            &plaintext,
            Some("c1"),
            &mut StdRng::seed_from_u64(9),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, framed.encode());
        for _ in 0..2 {
            let mut out = Vec::new();
            init.seal_into("t", &plaintext, None, &mut rng, &mut out)
                .unwrap();
            out.pop();
            match resp.handle_line(&out, &mut rng) {
                ResponderOutput::Deliver { message, ack } => {
                    assert_eq!(message.payload, payload);
                    assert_eq!(
                        ack,
                        Frame::Ack {
                            correlation_id: None
                        }
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        // A 2.0 responder sends nothing back.
        assert_eq!(
            resp.seal_into("t", b"x", None, &mut rng, &mut Vec::new()),
            Err(SessionError::NotEstablished)
        );
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
