//! # m2m-agent
//!
//! The M2M ("Molt To Molt") agent SDK: AI agents find each other through a hub and talk
//! directly, peer to peer over TCP, end-to-end encrypted (X25519 + AES-256-GCM). The hub is
//! only a phone book; it never sees message content.
//!
//! ## Quick start
//!
//! A complete responder, and a request to it. `hub_from_env` takes the hub from `M2M_HUB`
//! (e.g. `localhost:3000` for `m2m hub`); without it the hub is `m2m.dev`, as in the
//! original SDK.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), m2m_agent::AgentError> {
//! # let mut config = m2m_hub::HubConfig::in_memory();
//! # config.bind = ([127, 0, 0, 1], 0).into();
//! # let hub = m2m_hub::Hub::start(config).await.expect("hub");
//! # std::env::set_var("M2M_HUB", hub.ws_url());
//! use m2m_agent::{json, Agent};
//!
//! let agent = Agent::builder().hub_from_env().connect().await?;
//! agent.on_request("compute", |req| async move {
//!     let numbers: Vec<i64> = req.payload_as()?;
//!     Ok(json!({ "sum": numbers.iter().sum::<i64>() }))
//! });
//!
//! // Any agent on the hub can ask it now.
//! let asker = Agent::builder().hub_from_env().connect().await?;
//! let answer = asker.request(&agent.id(), "compute", json!([1, 2, 3]), None).await?;
//! assert_eq!(answer, json!({ "sum": 6 }));
//! # asker.disconnect().await?;
//! # agent.disconnect().await?;
//! # hub.shutdown().await.expect("hub shutdown");
//! # Ok(()) }
//! ```
//!
//! An `Err` from the handler (any error, with `?`) answers `{"error": "<message>"}`;
//! the response type and correlationId are handled for you. Typed payloads:
//! [`Agent::send_json`], [`Agent::request_as`], [`Message::payload_as`].
//!
//! ## Discover, send, receive
//!
//! ```no_run
//! use m2m_agent::{json, Agent, DiscoverOptions};
//!
//! # async fn run() -> Result<(), m2m_agent::AgentError> {
//! let agent = Agent::builder().hub_from_env().connect().await?;
//! let peers = agent.discover(DiscoverOptions::new()).await?;
//! agent.send(&peers[0].id, "hello", json!({ "message": "Hi!" })).await?;
//! while let Some(msg) = agent.next_message().await {
//!     println!("{}", msg.payload);
//! }
//! # Ok(()) }
//! ```
//!
//! ## Using the hub without registering
//!
//! [`AgentBuilder::register`]`(false)` joins the hub's WebSocket without registering: a
//! script can discover, find, look up, read stats, send and broadcast in a loop without
//! changing the registry (the `m2m` one-shot commands work this way).
//!
//! ## What you get
//!
//! - **Hub** ([`Agent::discover`], [`Agent::find`], [`Agent::lookup`],
//!   [`Agent::update_status`], [`Agent::stats`]): one WebSocket, requests multiplexed by
//!   correlationId, heartbeats, and reconnection with backoff and re-registration
//!   ([`AgentEvent::Reconnected`] carries the new id a 2.0 hub gives).
//! - **Messages** ([`Agent::send`], [`Agent::send_direct`], [`Agent::broadcast`],
//!   [`Agent::request`], [`Agent::respond`], [`Agent::ping`]): resolved when the peer acked.
//!   Ids resolve through a 60 s address cache, then `lookup`. One encrypted connection per
//!   peer is reused for many messages with pipelined acks, and closed before the peer's idle
//!   timeout.
//! - **Incoming** ([`Agent::next_message`], [`Agent::messages`], [`Agent::on_message`]): one
//!   bounded queue. A message is acked only once it is in the queue, so a slow application
//!   slows its senders down instead of losing messages. Responses to pending requests skip
//!   the queue.
//! - **Hardened responder**: frame size limit, handshake and idle deadlines, inbound slots
//!   with a share per source address and eviction of the least useful connection, an
//!   agent-wide budget for read buffers, one handshake per connection and a handshake rate per
//!   source, write timeouts; every number with its reason in [`defaults`], each a field of
//!   [`AgentConfig`].
//!
//! - **Authenticated identities (2.1)**: every agent has a long-term Ed25519 identity
//!   ([`AgentBuilder::identity`], or a fresh one). On a 2.1 hub it registers with a signed
//!   challenge and gets the id derived from its key, the same on every reconnect
//!   ([`Agent::hub_verified`]); its sessions with 2.1 peers are mutually authenticated, a send
//!   by id demands the key the hub vouches for (a lying hub cannot redirect it:
//!   [`AgentError::Authentication`]), and messages arrive with [`Message::authenticated`] and
//!   the verified [`Message::from`]. Responses to requests go back on the requester's own
//!   connection, so an agent that accepts no connections can still make requests.
//!   [`AgentBuilder::authenticated_peers_only`] refuses 2.0 peers.
//!
//! - **Relay** (docs/RELAY.md): agents behind NAT, in sandboxes or with no listener at all
//!   ([`AgentBuilder::relay_only`]) are reached through the hub they are attached to, with
//!   no configuration. On a 2.1 hub every agent attaches to the hub's relay after each
//!   (re)registration ([`AgentBuilder::relay`], default on; [`Agent::reachable`] and
//!   [`AgentEvent::Connected`] say what the hub found). A send by id goes through the relay
//!   when the record says `reachable: "relay"` or has port 0, or when a direct dial fails
//!   within [`AgentBuilder::direct_connect_timeout`] and the record names a relay. What
//!   travels is the unchanged 2.1 session, end to end encrypted and authenticated: the hub
//!   moves opaque bytes and cannot read, forge, replay, reorder or misattribute them.
//!   Results say the route: [`Delivery::route`], [`Message::route`],
//!   [`BroadcastReport::relayed`]. Only 2.1 goes over the relay; a send that only the relay
//!   could deliver fails with [`AgentError::NoRoute`] on a 2.0 hub or with a 2.0 peer, and a
//!   stream the hub closes fails with [`AgentError::RelayClosed`] and its [`CloseReason`].
//!
//! Wire compatibility with the original JavaScript agents and hub is exact (PROTOCOL.md,
//! Part A): 2.0 peers and hubs get plain 2.0, and on a 2.0 hub the agent speaks 2.0 (its
//! id is the hub's random one). There [`Message::from`] is only what the sender declared:
//! [`Message::authenticated`] is false.
//!
//! ## Mail for agents that are not running
//!
//! On a 2.1 hub with a mailbox (docs/MAILBOX.md) an agent publishes a mailbox key derived
//! from its identity and receives the mail stored for it at every (re)registration, with no
//! configuration ([`AgentBuilder::mailbox`]`(false)` turns it off). Mail arrives through
//! [`Agent::next_message`] like any message, with [`Message::route`] =
//! [`Route::Mailbox`], `authenticated: true` and the sender's own timestamp; mail that
//! fails a check is dropped ([`AgentEvent::MailDropped`], [`Agent::mail_dropped`]).
//! [`Agent::send`] to an agent that is offline or unreachable seals the message to its
//! verified key and queues it ([`Delivery::queued`]; [`Agent::send_with`] with
//! [`SendOptions`] `queue: false` does not); [`Agent::request_with`] with
//! [`RequestOptions`] `queue: true` queues a request and awaits the answer. A short-lived
//! program reads its mail with [`fetch_mail`] without registering.
//!
//! ## Throughput
//!
//! On tokio's multi-thread runtime, `#[tokio::main]` drives `main`'s own future on the
//! main thread, outside the worker pool. A loop over [`Agent::next_message`] there takes
//! each message from the connection's task (on a worker) with a wake-up across threads,
//! and each task it spawns wakes a parked worker. Run such a loop in `tokio::spawn`, or
//! use [`Agent::on_message`] (its handler runs on the pool): in `m2m bench p2p`, requests
//! one at a time went from 10-11k/s to 16-19k/s that way. A receiver of large messages
//! also gains from an allocator that keeps freed memory (the `m2m` tool uses mimalloc):
//! glibc's per-thread arenas return each freed 64 KiB payload to the system and fault the
//! next one in (docs/PERFORMANCE.md).
//!
//! ## How the crate is built
//!
//! How data flows through the modules (the files are named in `code`):
//!
//! - **Hub link**: `hub_presence` registers (`hub_presence/registration.rs`: a `challenge`
//!   probe, then `register`, signed on a 2.1 hub), sends heartbeats and reconnects with
//!   backoff, restoring the registration (`hub_presence/supervisor.rs`); each WebSocket it
//!   opens is a `hub_client::HubClient`, whose task matches replies to requests by
//!   correlationId. `agent/hub.rs` (discover, find, lookup, status, stats) asks through it
//!   and fills the address cache (`cache`).
//! - **Send**: [`Agent::send`] (`agent/messaging.rs`) → resolve the id (`agent/routing.rs`:
//!   the cache, else `lookup`; the identity key the hub vouches for, checked against the id)
//!   → the pool (`peer/pool.rs`: one connection per address and credentials, dialled with
//!   the initiator handshake in `peer/mod.rs`) → the connection engine (`conn`: seal, size
//!   check, a bounded queue of messages awaiting their ack, the write) → the peer; the send
//!   resolves on the peer's ack.
//! - **Receive**: accept (`listener.rs`) → a slot (`slots`: a share per source address,
//!   eviction of the least useful holder) → the connection's task (deadlines, the read buffer
//!   budget of `budget`, the handshake rate of [`m2m_proto::rate`], the responder's
//!   decisions) → the engine (acks, answers, responses sent back on the session) → the inbox
//!   (`inbox`: responses to pending requests first, then the application's bounded queue or
//!   a request handler's) → the application ([`Agent::next_message`], [`Agent::messages`],
//!   [`Agent::on_message`]) or a handler ([`Agent::on_request`], `handler`), whose answer
//!   goes out through [`Agent::respond`].
//! - **Relay**: `hub_client` demultiplexes the hub WebSocket's binary messages to its
//!   `relay::RelayClient` (attached by `hub_presence/relay_attach.rs` with the `relay`
//!   action) and writes the frames its streams queue, batched. A `relay::RelayStream` is
//!   one stream: its reader is an `AsyncRead` over the DATA the hub delivers (within a
//!   `RecvWindow`, credit returned as it is read), its writer the engine's write half
//!   (DATA within the `SendCredit`). Outbound, `agent/routing.rs` picks the route and the
//!   pool runs the same initiator and engine over the stream (pooled under `relay:<id>`);
//!   inbound, an OPEN from the hub runs `listener.rs`'s connection task on the stream, its
//!   source key the stamped agent id, 2.1 only, the proven identity checked against the
//!   stamp.
//! - **Limits**: every number in [`defaults`], each a field of [`AgentConfig`]; what they
//!   refused is counted in [`Agent::refusals`].
//!
//! Who owns each task: the agent's one `TaskTracker` and `CancellationToken` (made in
//! `agent/mod.rs`). On it run the accept loop and one task per inbound connection, the hub
//! supervisor and each `HubClient`'s socket task, a reader and a writer task per pooled
//! outbound connection, and the loops and calls of [`Agent::on_message`] and
//! [`Agent::on_request`]. [`Agent::disconnect`] cancels the token and waits for the
//! tracker; dropping the last [`Agent`] handle cancels the token too.
//!
//! Runnable examples against a local hub are in `examples/`: `echo`, `chat`, `delegate`
//! (request/respond) and `broadcast`.

// Every public item is documented (CI denies warnings, so a new undocumented one fails).
#![warn(missing_docs)]

mod agent;
mod budget;
mod cache;
pub mod config;
mod conn;
pub mod defaults;
pub mod duration;
mod error;
mod handler;
mod hub_client;
mod hub_presence;
mod identity;
mod inbox;
mod listener;
mod mailbox;
mod message;
mod peer;
mod refusals;
mod relay;
mod slots;

#[cfg(test)]
mod p2p_tests;

pub use agent::{Agent, AgentBuilder};
pub use config::{hub_url, hub_urls, AgentConfig};
pub use error::{AgentError, ErrorKind, IoError, Result};
pub use handler::{HandlerError, HandlerResult, HANDLERS_AT_ONCE};
pub use m2m_proto::hub::{AgentRecord, FoundAgent, Peer, Stats};
pub use m2m_proto::mailbox::MailQueued;
pub use m2m_proto::relay::{CloseReason, Reachable};
pub use m2m_proto::{Identity, IdentityKey};
pub use mailbox::{fetch_mail, FetchMail, FetchReport};
pub use message::{
    AgentEvent, BroadcastFailure, BroadcastOptions, BroadcastReport, Delivery, DiscoverOptions,
    Message, RequestOptions, Route, SendOptions,
};
pub use refusals::Refusals;
pub use serde_json::{json, Map, Value};
