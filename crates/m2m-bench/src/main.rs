//! `m2m-bench`: load generators for the M2M hub and P2P transport, and probes of the
//! machine's limits. Every command prints one JSON document on stdout; logs go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use m2m_bench::sys::{sibling_exe, CommandLine};
use m2m_bench::{
    parse_duration, CryptoOptions, HubAction, HubBenchOptions, HubCommand, HubTarget,
    LoopbackOptions, P2pBenchOptions, P2pScenario, PeerCommand, PeerOptions, ServeHubOptions,
};

#[derive(Debug, Parser)]
#[command(name = "m2m-bench", version, about)]
struct Cli {
    /// Runtime worker threads of this process (and of the P2P bench's second process):
    /// 1 runs everything on one thread (no cross-thread wake-ups). Default: one per core.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Hub: N WebSocket agents register, then closed-loop discover, lookup, heartbeat.
    Hub(HubArgs),
    /// P2P: two agents in two processes; messages, bulk, fresh connections, requests.
    P2p(P2pArgs),
    /// Loopback TCP limits: throughput, round trip, small records, connections per second.
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
}

#[derive(Debug, Args)]
struct HubArgs {
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
    /// Hub command line, `{port}` and `{database}` substituted; `m2m` for the m2m tool
    /// next to this binary. Default: this binary's hub-serve.
    #[arg(long, conflicts_with = "hub")]
    hub_cmd: Option<String>,
    /// Measure an already-running hub at this ws:// URL instead.
    #[arg(long)]
    hub: Option<String>,
    /// Process id of the --hub, for its RSS and CPU.
    #[arg(long, requires = "hub")]
    hub_pid: Option<u32>,
    /// Run the hub inside this process (RSS then includes the generator).
    #[arg(long, conflicts_with_all = ["hub", "hub_cmd"])]
    in_process: bool,
    /// After the actions, keep every agent connected this long, heartbeating.
    #[arg(long, value_parser = parse_duration)]
    hold: Option<Duration>,
    /// Heartbeat interval of each agent during --hold.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
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
}

#[derive(Debug, Args)]
struct P2pArgs {
    /// Scenarios, comma-separated: messages, bulk, fresh, request, request-pipelined.
    #[arg(long, default_value = "messages,bulk,fresh,request,request-pipelined")]
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
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Time per test.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    duration: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut builder = match cli.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("m2m-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cli.threads)) {
        Ok(Some(v)) => {
            match serde_json::to_string_pretty(&v) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("m2m-bench: {e}"),
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("m2m-bench: {e:#}");
            ExitCode::FAILURE
        }
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

fn me() -> anyhow::Result<PathBuf> {
    Ok(std::env::current_exe()?)
}

async fn run(
    command: Command,
    threads: Option<usize>,
) -> anyhow::Result<Option<serde_json::Value>> {
    match command {
        Command::Hub(a) => {
            let target = if let Some(url) = a.hub {
                HubTarget::External {
                    ws_url: url,
                    pid: a.hub_pid,
                }
            } else if a.in_process {
                HubTarget::InProcess
            } else {
                match a.hub_cmd.as_deref() {
                    None => HubTarget::Spawn(HubCommand::bench_serve(me()?)),
                    Some("m2m") => HubTarget::Spawn(HubCommand::m2m_cli(sibling_exe("m2m")?)),
                    Some(line) => HubTarget::Spawn(HubCommand(CommandLine::parse(line)?)),
                }
            };
            let opts = HubBenchOptions {
                target,
                database: a.database,
                agents: a.agents,
                agents_per_connection: a.agents_per_connection,
                concurrency: a.concurrency,
                connect_concurrency: a.connect_concurrency,
                duration: a.duration,
                warmup: a.warmup,
                pipeline: a.pipeline,
                actions: list::<HubAction>(&a.actions)?,
                discover_limit: a.discover_limit,
                capability_groups: a.capability_groups,
                hold: a.hold,
                hold_heartbeat_interval: a.hold_interval,
                source_ips: a.source_ips,
                repeat: a.repeat,
            };
            Ok(Some(m2m_bench::run_hub(opts).await?))
        }
        Command::P2p(a) => {
            let mut peer = PeerCommand::bench_peer(me()?);
            if let Some(n) = threads {
                peer.0
                    .args
                    .splice(0..0, ["--threads".to_owned(), n.to_string()]);
            }
            let mut opts = P2pBenchOptions::new(peer);
            opts.scenarios = list::<P2pScenario>(&a.scenarios)?;
            opts.duration = a.duration;
            opts.warmup = a.warmup;
            opts.message_size = a.size;
            opts.bulk_size = a.bulk_size;
            opts.in_flight = a.in_flight;
            opts.bulk_in_flight = a.bulk_in_flight;
            opts.fresh_in_flight = a.fresh_in_flight;
            opts.request_in_flight = a.request_in_flight;
            opts.repeat = a.repeat;
            Ok(Some(m2m_bench::run_p2p(opts).await?))
        }
        Command::Loopback(a) => Ok(Some(
            m2m_bench::run_loopback(LoopbackOptions {
                duration: a.duration,
            })
            .await?,
        )),
        Command::Crypto(a) => {
            let opts = CryptoOptions {
                duration: a.duration,
            };
            Ok(Some(
                tokio::task::spawn_blocking(move || m2m_bench::run_crypto(opts)).await?,
            ))
        }
        Command::P2pPeer { hub } => {
            m2m_bench::run_peer(PeerOptions { hub }).await?;
            Ok(None)
        }
        Command::HubServe { port, database } => {
            m2m_bench::serve_hub(ServeHubOptions { port, database }).await?;
            Ok(None)
        }
    }
}
