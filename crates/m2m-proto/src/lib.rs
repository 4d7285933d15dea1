//! # m2m-proto
//!
//! The M2M ("Molt To Molt") wire protocol without IO: the hub's WebSocket and HTTP messages
//! ([`hub`]), the P2P frames ([`frame`]) and their line framing ([`codec`]), the 2.0 crypto
//! envelope ([`crypto`]) and 2.1 identities ([`identity`]), the P2P session state machines
//! ([`session`]), per-source rate accounting ([`rate`]) that the hub and the agent both
//! apply, the relay's frames and flow control ([`relay`], docs/RELAY.md), and every bound
//! and timeout ([`defaults`]). The hub, the agent SDK, the tests and
//! the fuzzers all use this one implementation.
//!
//! ## How data flows through it
//!
//! ```text
//! P2P, received:  bytes ─▶ codec::LineDecoder ─▶ line ─▶ frame::Frame::parse_borrowed
//!                 ─▶ session::{Responder, Initiator}::handle_line (state machine; the
//!                    handshake uses crypto + identity) ─▶ envelope opened (crypto)
//!                 ─▶ session::IncomingMessage + the ack frame to write
//! P2P, sent:      payload ─▶ crypto::encode_payload ─▶ Initiator/Responder::seal_into
//!                 (envelope sealed, frame::encode_message_with) ─▶ line bytes to write
//! Hub, received:  text ─▶ hub::HubRequest::parse ─▶ HubRequest::action ─▶ hub::Action
//!                 (or hub::RequestError, whose code is the reply's `error`)
//! Hub, sent:      hub::Reply<body> / hub::ErrorReply (WebSocket), hub::http bodies (HTTP)
//! ```
//!
//! Rate limits: before it spends work on a peer, the IO layer asks [`rate::KeyedBuckets`]
//! for a token for the peer's address (counted per [`rate::SourceKey`]), passing the current
//! time as an argument.
//!
//! The IO crates own sockets, tasks and time; this crate only turns bytes into decisions
//! and decisions into bytes. Nothing here panics on peer-controlled input: every parser
//! returns an error instead.

// Every public item is documented (CI denies warnings, so a new undocumented one fails).
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod crypto;
pub mod defaults;
pub mod frame;
pub mod hub;
pub mod identity;
pub mod mailbox;
pub mod rate;
pub mod relay;
pub mod session;

/// The old name of [`defaults`], kept for the crates that import `m2m_proto::limits`.
pub use defaults as limits;

pub use codec::{LineDecoder, LineTooLong};
pub use crypto::{CryptoError, EnvelopeKey, KeyPair, PublicKey};
pub use frame::Frame;
pub use identity::{Identity, IdentityKey};
pub use session::{
    IncomingMessage, Initiator, InitiatorEvent, PeerExpectation, PeerPolicy, Responder,
    ResponderOutput, SessionError,
};
