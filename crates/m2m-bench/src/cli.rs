//! The benches' command line, shared by the `m2m-bench` binary and the `m2m bench` command
//! of the `m2m` tool: the same options, the same JSON, the same second processes.
//!
//! A bench that needs a second process (the hub under test, the P2P peer, the loopback
//! echo) starts the running executable again with a hidden subcommand; [`Invocation`]
//! says how (`m2m-bench p2p-peer …` or `m2m bench p2p-peer …`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::sys::CommandLine;
use crate::{
    parse_duration, CryptoOptions, HubAction, HubBenchOptions, HubCommand, HubTarget,
    LoopbackOptions, P2pBenchOptions, P2pScenario, PeerCommand, PeerOptions, ServeHubOptions,
};

/// How the running program starts one of its own bench subcommands.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The running executable.
    pub program: PathBuf,
    /// Arguments before a bench subcommand: none for `m2m-bench`, `bench` for `m2m`.
    pub prefix: Vec<String>,
    /// The `m2m` tool, for `hub --hub-cmd m2m`.
    pub m2m: PathBuf,
}

impl Invocation {
    /// The running executable, with `prefix` before bench subcommands. `m2m` is this
    /// executable when it is the `m2m` tool, else the `m2m` beside it.
    pub fn current(prefix: &[&str]) -> anyhow::Result<Self> {
        let program = std::env::current_exe().context("cannot locate the running executable")?;
        let m2m = if program.file_stem() == Some("m2m".as_ref()) {
            program.clone()
        } else {
            program.with_file_name("m2m")
        };
        Ok(Invocation {
            program,
            prefix: prefix.iter().map(|p| (*p).to_owned()).collect(),
            m2m,
        })
    }

    /// `<program> <prefix…> [--threads N]`, to which a bench subcommand is appended.
    pub(crate) fn bench(&self, threads: Option<usize>) -> CommandLine {
        let mut args = self.prefix.clone();
        if let Some(n) = threads {
            args.extend(["--threads".to_owned(), n.to_string()]);
        }
        CommandLine {
            program: self.program.clone(),
            args,
        }
    }
}

/// Load generators and machine-limit probes for the M2M hub and P2P transport (JSON results).
#[derive(Debug, Parser)]
#[command(name = "m2m-bench", version)]
pub struct BenchArgs {
    /// Runtime worker threads of this process (and of the P2P bench's second process):
    /// 1 runs everything on one thread (no cross-thread wake-ups). Default: one per core.
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// The bench to run.
    #[command(subcommand)]
    pub command: BenchCommand,
}

/// One bench.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Hub: N WebSocket agents register, then closed-loop discover, lookup, heartbeat.
    Hub(HubArgs),
    /// P2P: two agents in two processes; messages, bulk, fresh connections, requests.
    P2p(P2pArgs),
    /// Relay: two attached WebSocket clients; frames, bulk, one-at-a-time requests, many
    /// streams (the hub's RSS per stream).
    Relay(crate::relay::RelayArgs),
    /// Hubs: two hubs on one PostgreSQL database; a change through A timed until visible
    /// through B, with the change doorbell and with polling only, and the database load.
    Hubs(crate::hubs::HubsArgs),
    /// Mailbox: one sender stores sealed mail (pipelined), one recipient drains it (acks in
    /// batches), on SQLite and PostgreSQL; database bytes per stored message.
    Mailbox(crate::mailbox::MailboxArgs),
    /// Loopback TCP limits: throughput, round trips (in one process and across two),
    /// small records, connections per second.
    Loopback(LimitArgs),
    /// One core's speed at AES-256-GCM, X25519, base64, envelopes and frame parsing.
    Crypto(LimitArgs),
    /// (internal) The P2P bench's second process.
    #[command(hide = true)]
    P2pPeer {
        /// The hub to register with.
        #[arg(long)]
        hub: String,
    },
    /// (internal) A hub for the hub bench: the defaults without the per-connection rate
    /// limit, on 127.0.0.1.
    #[command(hide = true)]
    HubServe {
        /// Port on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// Registry URL.
        #[arg(long)]
        database: String,
    },
    /// (internal) The loopback bench's second process: echoes 200-byte records.
    #[command(hide = true)]
    LoopbackEcho {
        /// Where the bench listens.
        #[arg(long)]
        connect: SocketAddr,
    },
}

/// `hub` options.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Agents to register.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Agents registered on each WebSocket (the hub allows up to 16): holds more agents
    /// than the file-descriptor limit allows connections.
    #[arg(long, default_value_t = 1)]
    agents_per_connection: usize,
    /// Requests in flight (closed loop).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Measured time per action.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each action.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Requests per connection written at once before reading replies.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Actions after register, comma-separated; `none` for none.
    #[arg(long, default_value = "discover,lookup,heartbeat")]
    actions: String,
    /// `limit` of each discover.
    #[arg(long, default_value_t = 100)]
    discover_limit: u32,
    /// 1: all agents share the capability discovered; G: G groups.
    #[arg(long, default_value_t = 1)]
    capability_groups: usize,
    /// Registry: postgres://… (default: a new SQLite file in a temporary directory).
    #[arg(long)]
    database: Option<String>,
    /// Hub command line, `{port}` and `{database}` substituted; `m2m` for the `m2m hub`
    /// command. Default: the bench's own hub-serve.
    #[arg(long, conflicts_with = "hub_url")]
    hub_cmd: Option<String>,
    /// Measure an already-running hub at this ws:// URL instead. (Not `--hub`: in the
    /// `m2m` tool that is the agent commands' hub, also set by M2M_HUB.)
    #[arg(long)]
    hub_url: Option<String>,
    /// Process id of the --hub-url hub, for its RSS and CPU.
    #[arg(long, requires = "hub_url")]
    hub_pid: Option<u32>,
    /// Run the hub inside this process (RSS then includes the generator).
    #[arg(long, conflicts_with_all = ["hub_url", "hub_cmd"])]
    in_process: bool,
    /// After the actions, keep every agent connected this long, heartbeating.
    #[arg(long, value_parser = parse_duration)]
    hold: Option<Duration>,
    /// Heartbeat interval of each agent during --hold.
    #[arg(long, default_value = "30s", value_parser = crate::stats::parse_interval)]
    hold_interval: Duration,
    /// Source addresses 127.0.0.1..=127.0.0.K (default: one per 25k agents).
    #[arg(long)]
    source_ips: Option<usize>,
    /// WebSocket connects in flight while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Runs (a fresh hub each).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also run every action with this many hub dashboards open (`<action>_with_dashboards`,
    /// and `<action>_dashboard_cost_pct` in the figures).
    #[arg(long, default_value_t = 0)]
    dashboards: usize,
}

/// `p2p` options.
#[derive(Debug, Args)]
pub struct P2pArgs {
    /// Scenarios, comma-separated: messages, bulk, fresh, fresh-v21, request, request-pipelined.
    #[arg(
        long,
        default_value = "messages,bulk,fresh,fresh-v21,request,request-pipelined"
    )]
    scenarios: String,
    /// Measured time per scenario.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time before each scenario.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Payload bytes (messages, fresh, requests).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Payload bytes of bulk.
    #[arg(long, default_value_t = 65_536)]
    bulk_size: usize,
    /// Messages in flight (messages).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Messages in flight (bulk).
    #[arg(long, default_value_t = 16)]
    bulk_in_flight: usize,
    /// Connections in flight (fresh).
    #[arg(long, default_value_t = 16)]
    fresh_in_flight: usize,
    /// Requests in flight (request-pipelined).
    #[arg(long, default_value_t = 64)]
    request_in_flight: usize,
    /// Runs of every scenario.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The second process, a whitespace-separated command line that takes `--hub URL`,
    /// prints `{"id","port"}` once registered, acks messages and answers `bench.req`
    /// requests: e.g. `node crates/m2m-bench/js/original-p2p.js peer …/agent.js` for the
    /// original JavaScript SDK. Default: this program's own peer on the Rust SDK.
    #[arg(long)]
    peer_cmd: Option<String>,
}

/// `loopback` and `crypto` options.
#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Time per test.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    duration: Duration,
}

impl BenchArgs {
    /// The runtime the bench runs on: `--threads 1` a current-thread one, otherwise a
    /// multi-thread one with `--threads` workers (default: one per core).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut builder = match self.threads {
            Some(1) => tokio::runtime::Builder::new_current_thread(),
            Some(n) => {
                let mut b = tokio::runtime::Builder::new_multi_thread();
                b.worker_threads(n.max(1));
                b
            }
            None => tokio::runtime::Builder::new_multi_thread(),
        };
        builder.enable_all().build()
    }

    /// Builds the runtime, runs the bench and prints its JSON document on stdout (the
    /// hidden second-process commands print their own handshake lines instead).
    pub fn run_and_print(self, me: &Invocation) -> anyhow::Result<()> {
        let runtime = self.runtime()?;
        // The bench runs in a spawned task, on a worker thread: a future driven by
        // `block_on` runs on the calling thread, outside the worker pool, so every wake-up
        // between it and the SDK's tasks would cross threads, and every task it spawns
        // would have to wake a parked worker (measured: P2P requests one at a time
        // 11k/s → 17k/s on the multi-thread runtime).
        let work = runtime.spawn(self.run(me.clone()));
        let outcome = runtime
            .block_on(work)
            .map_err(|e| anyhow::anyhow!("the bench task failed: {e}"))??;
        if let Some(v) = outcome {
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Ok(())
    }

    /// Runs the bench; `None` for the second-process commands, which print nothing.
    pub async fn run(self, me: Invocation) -> anyhow::Result<Option<Value>> {
        let threads = self.threads;
        match self.command {
            BenchCommand::Hub(a) => Ok(Some(crate::run_hub(a.options(&me)?).await?)),
            BenchCommand::P2p(a) => {
                let peer = match &a.peer_cmd {
                    Some(line) => PeerCommand(CommandLine::parse(line)?),
                    None => PeerCommand::bench_peer(me.bench(threads)),
                };
                Ok(Some(crate::run_p2p(a.options(peer)?).await?))
            }
            BenchCommand::Relay(a) => Ok(Some(crate::run_relay(a.options(&me)?).await?)),
            BenchCommand::Hubs(a) => Ok(Some(crate::run_hubs(a.options()?).await?)),
            BenchCommand::Mailbox(a) => Ok(Some(crate::run_mailbox(a.options()?).await?)),
            BenchCommand::Loopback(a) => Ok(Some(
                crate::run_loopback(LoopbackOptions {
                    duration: a.duration,
                    echo: Some({
                        let mut echo = me.bench(None);
                        echo.args.push("loopback-echo".to_owned());
                        echo
                    }),
                })
                .await?,
            )),
            BenchCommand::Crypto(a) => {
                let opts = CryptoOptions {
                    duration: a.duration,
                };
                Ok(Some(
                    tokio::task::spawn_blocking(move || crate::run_crypto(opts)).await?,
                ))
            }
            BenchCommand::P2pPeer { hub } => {
                crate::run_peer(PeerOptions { hub }).await?;
                Ok(None)
            }
            BenchCommand::HubServe { port, database } => {
                crate::serve_hub(ServeHubOptions { port, database }).await?;
                Ok(None)
            }
            BenchCommand::LoopbackEcho { connect } => {
                tokio::task::spawn_blocking(move || crate::machine::run_echo_peer(connect))
                    .await??;
                Ok(None)
            }
        }
    }
}

impl HubArgs {
    fn options(self, me: &Invocation) -> anyhow::Result<HubBenchOptions> {
        let target = if let Some(url) = self.hub_url {
            HubTarget::External {
                ws_url: url,
                pid: self.hub_pid,
            }
        } else if self.in_process {
            HubTarget::InProcess
        } else {
            match self.hub_cmd.as_deref() {
                None => HubTarget::Spawn(HubCommand::bench_serve(me.bench(None))),
                Some("m2m") => HubTarget::Spawn(HubCommand::m2m_cli(me.m2m.clone())),
                Some(line) => HubTarget::Spawn(HubCommand(CommandLine::parse(line)?)),
            }
        };
        Ok(HubBenchOptions {
            target,
            database: self.database,
            agents: self.agents,
            agents_per_connection: self.agents_per_connection,
            concurrency: self.concurrency,
            connect_concurrency: self.connect_concurrency,
            duration: self.duration,
            warmup: self.warmup,
            pipeline: self.pipeline,
            actions: list::<HubAction>(&self.actions)?,
            discover_limit: self.discover_limit,
            capability_groups: self.capability_groups,
            hold: self.hold,
            hold_heartbeat_interval: self.hold_interval,
            source_ips: self.source_ips,
            repeat: self.repeat,
            dashboards: self.dashboards,
        })
    }
}

impl P2pArgs {
    fn options(self, peer: PeerCommand) -> anyhow::Result<P2pBenchOptions> {
        let mut opts = P2pBenchOptions::new(peer);
        opts.scenarios = list::<P2pScenario>(&self.scenarios)?;
        opts.duration = self.duration;
        opts.warmup = self.warmup;
        opts.message_size = self.size;
        opts.bulk_size = self.bulk_size;
        opts.in_flight = self.in_flight;
        opts.bulk_in_flight = self.bulk_in_flight;
        opts.fresh_in_flight = self.fresh_in_flight;
        opts.request_in_flight = self.request_in_flight;
        opts.repeat = self.repeat;
        Ok(opts)
    }
}

fn list<T: std::str::FromStr<Err = String>>(text: &str) -> anyhow::Result<Vec<T>> {
    if text.trim() == "none" {
        return Ok(Vec::new());
    }
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.parse::<T>().map_err(anyhow::Error::msg))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Invocation {
        Invocation {
            program: "/bin/m2m".into(),
            prefix: vec!["bench".into()],
            m2m: "/bin/m2m".into(),
        }
    }

    #[test]
    fn second_processes_are_this_program_again() {
        let PeerCommand(line) = PeerCommand::bench_peer(me().bench(Some(1)));
        assert_eq!(line.display(), "/bin/m2m bench --threads 1 p2p-peer");
        let args = BenchArgs::parse_from(["m2m-bench", "hub", "--agents", "5"]);
        let BenchCommand::Hub(hub) = args.command else {
            panic!("not the hub bench");
        };
        let opts = hub.options(&me()).unwrap();
        let HubTarget::Spawn(HubCommand(serve)) = opts.target else {
            panic!("the hub is not spawned");
        };
        assert_eq!(
            serve.display(),
            "/bin/m2m bench hub-serve --port {port} --database {database}"
        );
        assert_eq!(opts.agents, 5);
    }

    #[test]
    fn threads_may_follow_the_subcommand() {
        let args = BenchArgs::parse_from(["m2m-bench", "p2p", "--threads", "1"]);
        assert_eq!(args.threads, Some(1));
        assert!(list::<P2pScenario>("request,bogus").is_err());
        assert!(list::<HubAction>("none").unwrap().is_empty());
    }
}
