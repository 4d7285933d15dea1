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
//! * [`machine`] — what this machine can do at all: AES-256-GCM, X25519, base64 per core;
//!   loopback TCP throughput, round trip and connection rate.
//!
//! Every runner repeats its measurement `repeat` times and reports each run plus a
//! `summary` (median, min, max) of the run's `figures`.
//!
//! The second processes (a hub, the P2P peer) are started from a command line the caller
//! chooses, so that both this crate's `m2m-bench` binary and the `m2m` tool can host them:
//! see [`hub::HubCommand`], [`p2p::PeerCommand`], [`hub::serve_hub`] and [`p2p::run_peer`].
//!
//! ## Embedding (e.g. `m2m bench hub|p2p`)
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use m2m_bench::sys::CommandLine;
//! use m2m_bench::{HubBenchOptions, HubCommand, HubTarget, P2pBenchOptions, PeerCommand};
//! let exe = std::env::current_exe()?;
//! // The hub under test: `<exe> hub --bind 127.0.0.1 --port {port} --database {database}`.
//! let hub = m2m_bench::run_hub(HubBenchOptions {
//!     target: HubTarget::Spawn(HubCommand::m2m_cli(exe.clone())),
//!     ..HubBenchOptions::default()
//! })
//! .await?;
//! // The peer: `<exe> bench p2p-peer --hub <url>`, a hidden subcommand calling
//! // `m2m_bench::run_peer(PeerOptions { hub })`.
//! let peer = PeerCommand(CommandLine { program: exe, args: vec!["bench".into(), "p2p-peer".into()] });
//! let p2p = m2m_bench::run_p2p(P2pBenchOptions::new(peer)).await?;
//! println!("{hub}\n{p2p}");
//! # Ok(())
//! # }
//! ```

pub mod hub;
pub mod machine;
pub mod p2p;
mod rawws;
pub mod stats;
pub mod sys;

pub use hub::{
    run_hub, serve_hub, HubAction, HubBenchOptions, HubCommand, HubTarget, ServeHubOptions,
};
pub use machine::{run_crypto, run_loopback, CryptoOptions, LoopbackOptions};
pub use p2p::{run_p2p, run_peer, P2pBenchOptions, P2pScenario, PeerCommand, PeerOptions};
pub use stats::parse_duration;
