//! What this machine can do at all, to say how far each benchmark figure stands from it.
//!
//! * [`run_crypto`] — one core: AES-256-GCM (ring), X25519 (one side of a handshake: a
//!   key pair and an agreement), base64, the 2.0 envelope and frame parsing.
//! * [`run_loopback`] — TCP over 127.0.0.1 between two tasks of one process (on the
//!   process's runtime): bulk throughput, a 200-byte ping-pong, pipelined 200-byte records
//!   with small acks, and connect + 1-byte exchange + close per connection; and a 200-byte
//!   ping-pong with a second process, both blocking on their sockets: the floor of a
//!   request/response between two processes, which on a virtual machine is mostly the
//!   time an idle core takes to wake up.

//!
//! Each test is a function that runs for the given duration and returns its rate; the two
//! runners gather them into one JSON document: `crypto` (no IO) and `loopback`.

mod crypto;
mod loopback;

pub use crypto::{run_crypto, CryptoOptions};
pub use loopback::{run_echo_peer, run_loopback, LoopbackOptions};
