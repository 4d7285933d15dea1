//! # m2m-bench
//!
//! Load generators for the M2M hub and the P2P transport, and probes of the machine's own
//! limits, each printing one JSON document (see `docs/PERFORMANCE.md` for the results and
//! the commands).
//!
//! * [`hub`] — N raw WebSocket clients (not the SDK, so the generator stays cheap) connect
//!   to a hub running in another process, `register`, then run closed-loop phases of
//!   `discover`, `lookup` and `heartbeat`; optionally all N stay connected and heartbeat
//!   on a schedule while the hub's RSS is sampled.
//! * [`p2p`] — two SDK agents in two processes on loopback: pipelined acknowledged
//!   messages, bulk transfer, request/response, and a fresh connection + handshake per
//!   message (the original implementation's pattern).
//! * [`relay`] — the hub's relay (docs/RELAY.md): two raw WebSocket clients attached to a
//!   hub process push DATA frames within their credit, echo records one at a time, and
//!   hold many streams open while the hub's RSS is read; `--level sdk`: relay-only SDK
//!   agents against direct SDK agents in the same run (what an application sees).
//! * [`hubs`] — two hubs in this process on one PostgreSQL database: how fast a register,
//!   status or offline through hub A is visible through hub B, with the change doorbell
//!   (LISTEN/NOTIFY) and with polling only, and the database work each adds.
//! * [`mailbox`] — the hub's mailbox (docs/MAILBOX.md): one sender stores sealed mail
//!   pipelined, one recipient drains it acking in batches, on SQLite and PostgreSQL, and
//!   the database bytes per stored message.
//! * [`machine`] — what this machine can do at all: AES-256-GCM, X25519, base64 per core;
//!   loopback TCP throughput, round trip and connection rate.
//!
//! Every runner repeats its measurement `repeat` times and reports each run plus a
//! `summary` (median, min, max) of the run's `figures`.
//!
//! ## How data flows
//!
//! ```text
//!  cli (clap: BenchArgs) ─► options struct ─► run_hub / run_p2p / run_crypto / run_loopback
//!    hub/    target (start the hub) ─► client (raw WebSockets, rawws) ─► measure:
//!            load (register, action phases) ─► hold ─► report (tally ─► figures)
//!    p2p/    peer (second process) ─► scenario (workers, tally; fresh: raw initiator)
//!    machine/ crypto (one core) | loopback (TCP, echo process)
//!  each run's JSON ─► stats::summarize ─► one JSON document on stdout
//! ```
//!
//! `sys` starts and samples processes (RSS, CPU, descriptor limits); `dashboard` holds
//! dashboards open during a hub bench; `defaults` names every limit and timeout.
//!
//! The second processes (a hub, the P2P peer, the loopback echo) are started from a
//! command line the caller chooses, so that both this crate's `m2m-bench` binary and the
//! `m2m` tool (`m2m bench …`) can host them: see [`hub::HubCommand`], [`p2p::PeerCommand`],
//! [`hub::serve_hub`] and [`p2p::run_peer`].
//!
//! ## Embedding (how `m2m bench` is built)
//!
//! [`cli::BenchArgs`] is the whole command line (clap); a program makes it one of its
//! subcommands and says how it is started again for the second processes:
//!
//! ```no_run
//! use m2m_bench::cli::{BenchArgs, Invocation};
//! # fn demo(args: BenchArgs) -> anyhow::Result<()> {
//! // Second processes run as `<this exe> bench p2p-peer …`, `… bench hub-serve …`.
//! let me = Invocation::current(&["bench"])?;
//! args.run_and_print(&me)?; // builds the runtime (`--threads`), prints the JSON
//! # Ok(())
//! # }
//! ```
//!
//! The runners ([`run_hub`], [`run_p2p`], …) take their options as plain structs for
//! programs that drive them without a command line.

// Every public item is documented (CI denies warnings, so a new undocumented one fails).
#![warn(missing_docs)]

pub mod cli;
pub mod dashboard;
mod defaults;
pub mod hub;
pub mod hubs;
pub mod machine;
pub mod mailbox;
pub mod p2p;
mod rawws;
pub mod relay;
pub mod stats;
pub mod sys;

pub use hub::{
    run_hub, serve_hub, HubAction, HubBenchOptions, HubCommand, HubTarget, ServeHubOptions,
};
pub use hubs::{run_hubs, HubsBenchOptions, HubsMode};
pub use machine::{run_crypto, run_loopback, CryptoOptions, LoopbackOptions};
pub use mailbox::{run_mailbox, MailboxBenchOptions};
pub use p2p::{run_p2p, run_peer, P2pBenchOptions, P2pScenario, PeerCommand, PeerOptions};
pub use relay::{run_relay, RelayBenchOptions, RelayLevel, RelayScenario};
pub use stats::parse_duration;
