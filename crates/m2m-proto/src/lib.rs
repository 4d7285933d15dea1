//! # m2m-proto
//!
//! The M2M ("Molt To Molt") wire protocol without IO: the hub's WebSocket and HTTP messages
//! ([`hub`]), the P2P frames ([`frame`]) and their line framing ([`codec`]), the 2.0 crypto
//! envelope ([`crypto`]), the P2P session state machines ([`session`]), and per-source rate
//! accounting ([`rate`]) that the hub and the agent both apply. The hub, the agent
//! SDK, the tests and the fuzzers all use this one implementation.
//!
//! Nothing here panics on peer-controlled input: every parser returns an error instead.

// Every public item is documented (CI denies warnings, so a new undocumented one fails).
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod codec;
pub mod crypto;
pub mod defaults;
pub mod frame;
pub mod hub;
pub mod identity;
pub mod rate;
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
