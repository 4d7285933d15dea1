//! The transport state both sides reach after the handshake: keys, the peer's id, and the
//! buffer every envelope is sealed and opened in.

use std::ops::Range;

use rand_core::CryptoRngCore;
use serde_json::Value;

use super::keys::SessionKeys;
use super::IncomingMessage;
use crate::crypto::{decode_payload, CounterError, NONCE_LEN};
use crate::defaults::KEPT_SCRATCH_BUFFER;
use crate::frame::{encode_message_with, errors, Frame};

/// Why an envelope from the peer did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OpenFailure {
    /// 2.1: not the next counter (replayed or reordered).
    Replay,
    /// Not sealed under this session's key.
    DecryptionFailed,
}

impl OpenFailure {
    /// The wire error code a responder answers it with.
    pub(super) fn code(self) -> &'static str {
        match self {
            OpenFailure::Replay => errors::REPLAY_DETECTED,
            OpenFailure::DecryptionFailed => errors::DECRYPTION_FAILED,
        }
    }
}

/// An established session, on either side.
pub(super) struct Established {
    keys: SessionKeys,
    /// Declared in the handshake (2.0 responder), verified (2.1), empty on a 2.0 initiator
    /// (the responder declares none).
    pub(super) peer: String,
    /// Reused for every envelope sealed or opened on the session, so that a message costs
    /// no buffer of its size.
    buf: Vec<u8>,
}

impl Established {
    pub(super) fn new(keys: SessionKeys, peer: String) -> Self {
        Established {
            keys,
            peer,
            buf: Vec::new(),
        }
    }

    pub(super) fn authenticated(&self) -> bool {
        self.keys.authenticated()
    }

    /// Gives back the scratch buffer after a large message, so an idle session does not keep
    /// the size of the largest message it ever carried.
    fn release_large_buffer(&mut self) {
        if self.buf.capacity() > KEPT_SCRATCH_BUFFER {
            self.buf = Vec::new();
        }
    }

    /// Opens `envelope` into `self.buf`; the plaintext is `self.buf[range]`.
    fn open(&mut self, envelope: &str) -> Result<Range<usize>, OpenFailure> {
        match &mut self.keys {
            SessionKeys::V20(key) => key
                .open_in(envelope, &mut self.buf)
                .map(|(_, range)| range)
                .map_err(|_| OpenFailure::DecryptionFailed),
            SessionKeys::V21 { recv, .. } => {
                recv.open_in(envelope, &mut self.buf).map_err(|e| match e {
                    CounterError::Replay => OpenFailure::Replay,
                    CounterError::DecryptionFailed => OpenFailure::DecryptionFailed,
                })
            }
        }
    }

    /// Opens a message's envelope into the message for the application and its ack.
    pub(super) fn deliver(
        &mut self,
        message_type: String,
        data: &str,
        correlation_id: Option<Value>,
    ) -> Result<(IncomingMessage, Frame), OpenFailure> {
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
    pub(super) fn seal_into(
        &mut self,
        rng: &mut dyn CryptoRngCore,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        let Established { keys, buf, .. } = self;
        encode_message_with(out, message_type, correlation_id, |out| match keys {
            SessionKeys::V20(key) => {
                let mut nonce = [0u8; NONCE_LEN];
                rng.fill_bytes(&mut nonce);
                key.seal_append(nonce, plaintext, buf, out);
            }
            SessionKeys::V21 { send, .. } => send.seal_append(plaintext, buf, out),
        });
        self.release_large_buffer();
    }

    /// Seals `plaintext` into a `message` frame.
    pub(super) fn seal_frame(
        &mut self,
        rng: &mut dyn CryptoRngCore,
        message_type: &str,
        plaintext: &[u8],
        correlation_id: Option<Value>,
    ) -> Frame {
        let data = match &mut self.keys {
            SessionKeys::V20(key) => key.seal_random(rng, plaintext),
            SessionKeys::V21 { send, .. } => send.seal(plaintext),
        };
        Frame::Message {
            message_type: message_type.to_owned(),
            data,
            correlation_id,
        }
    }
}
