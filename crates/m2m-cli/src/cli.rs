//! The command line: every command, flag and environment variable of `m2m`. Users, scripts
//! and AI agents rely on these names; change them only with care.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::{defaults, duration};

/// The M2M ("Molt To Molt") command-line tool: run a hub, chat from a terminal, and script
/// agents that find each other through a hub and talk peer to peer, end-to-end encrypted.
#[derive(Debug, Parser)]
#[command(name = "m2m", version, about, long_about = None)]
pub struct Cli {
    /// Hub the agent commands use: host[:port], or a ws://, wss://, http:// or https://
    /// URL. Default: m2m.dev. Several hubs on one database (comma-separated or repeated)
    /// for failover: the agent uses the first that answers and moves to the next when its
    /// hub goes away.
    #[arg(long, global = true, env = "M2M_HUB", value_delimiter = ',', action = clap::ArgAction::Append)]
    pub hub: Vec<String>,

    /// Print JSON on stdout even on a terminal (it is the default when stdout is not one).
    #[arg(long, global = true)]
    pub json: bool,

    /// Log format on stderr (the level comes from RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// 2.1 identity key file (64 hex characters, mode 0600; created if missing). `listen`
    /// and `agent` use $XDG_CONFIG_HOME/m2m/identity.key (or ~/.config/m2m/identity.key)
    /// without it, so their id stays the same on a 2.1 hub; the one-shot commands, which do
    /// not register, use a fresh identity unless given one (peers then see its id).
    #[arg(long, global = true, env = "M2M_IDENTITY", value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Append logs to this file instead of stderr. (`m2m agent` logs nowhere without it:
    /// its screen is the terminal.)
    #[arg(long, global = true, env = "M2M_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Format of the log lines written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a hub (HTTP + WebSocket phone book; SQLite by default, or PostgreSQL).
    Hub(HubArgs),
    /// Interactive terminal agent: peers, messages, send, answer requests.
    Agent(AgentArgs),
    /// Register and print every incoming message as one JSON line; optionally answer them.
    Listen(ListenArgs),
    /// List agents registered at the hub (without registering).
    Discover(DiscoverArgs),
    /// List online agents offering one capability (without registering).
    Find(FindArgs),
    /// Show one agent's hub record (without registering).
    Lookup(LookupArgs),
    /// Send one message to an agent, by id or by address with --address (without
    /// registering).
    Send(SendArgs),
    /// Send a request and print the response payload as JSON (registers only while waiting
    /// for a 2.0 agent, which answers on a new connection).
    Request(RequestArgs),
    /// Send one message to every online agent, optionally with given capabilities
    /// (without registering).
    Broadcast(BroadcastArgs),
    /// Serve an MCP (Model Context Protocol) server on stdio, so an LLM client (Claude,
    /// Cursor…) can find and message agents through tools. Uses its own identity key,
    /// mcp-identity.key, unless --identity is given.
    Mcp(McpArgs),
    /// Fetch, print and acknowledge the mail the hub keeps for this agent's identity while
    /// it was not running (without registering), then exit.
    Inbox(InboxArgs),
    /// Check that an agent answers on its P2P port.
    Ping(PingArgs),
    /// Show the hub's statistics (without registering).
    Stats(StatsArgs),
    /// Start a hub and two agents in this process and show them talking.
    Demo,
    /// Measure a hub, the P2P transport or this machine; prints JSON (docs/PERFORMANCE.md).
    #[cfg(feature = "bench")]
    Bench(m2m_bench::cli::BenchArgs),
    /// Print a shell completion script (e.g. `m2m completions bash > /etc/bash_completion.d/m2m`).
    Completions(CompletionsArgs),
    /// Print the manual page in roff (e.g. `m2m man | man -l -`).
    Man(ManArgs),
}

/// `m2m completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `m2m man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's own page (`m2m man send`) instead of the main one.
    pub command: Option<String>,
}

/// `m2m hub`.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address to listen on: an IP (with --port), or IP:PORT.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: String,

    /// Registry: sqlite://PATH, sqlite::memory: or postgres://USER:PASS@HOST/DB.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://m2m-hub.db")]
    pub database: String,

    /// Take client IPs from X-Forwarded-For (only behind a reverse proxy you control).
    #[arg(long, env = "M2M_TRUST_PROXY")]
    pub trust_proxy: bool,

    /// PEM certificate chain: serve https/wss directly (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Public WebSocket URL announced by /info (e.g. wss://hub.example.org/ws).
    #[arg(long, env = "M2M_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Requests per second one WebSocket may sustain (bursts of twice that); more get
    /// `rate_limited`. 0: no limit, like the original hub.
    #[arg(long, env = "M2M_RATE_LIMIT", default_value_t = m2m_hub::HubLimits::default().requests_per_second)]
    pub rate_limit: u32,

    /// Several hubs on one PostgreSQL database: how often this hub says it is alive.
    #[arg(long, value_parser = duration::parse, value_name = "DURATION",
          default_value = "5s")]
    pub alive_interval: Duration,

    /// Several hubs on one PostgreSQL database: a hub silent this long is taken as dead and
    /// its agents are marked offline (at least twice --alive-interval).
    #[arg(long, value_parser = duration::parse, value_name = "DURATION",
          default_value = "15s")]
    pub hub_expiry: Duration,

    /// Resource bounds (docs/SECURITY.md "Hub limits").
    #[command(flatten)]
    pub limits: crate::hub_limits::HubLimitArgs,
    /// The web dashboard at /dashboard (its event stream and query API): on or off.
    #[arg(long, env = "M2M_DASHBOARD", value_name = "on|off", default_value = "on",
          action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new())]
    pub dashboard: bool,
}

/// How an agent of this tool joins a hub.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Capabilities this agent offers, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub capabilities: Vec<String>,

    /// Metadata to register: a JSON object.
    #[arg(long, value_parser = parse_metadata)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,

    /// Open no TCP listener: others reach this agent only through the hub's relay (needs a
    /// hub of this project; docs/RELAY.md).
    #[arg(long, conflicts_with = "no_relay")]
    pub relay_only: bool,

    /// Do not attach to the hub's relay: peers that cannot dial this agent cannot reach it.
    #[arg(long)]
    pub no_relay: bool,

    /// How long a send waits for a direct TCP connection before it tries the relay.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub direct_timeout: Option<Duration>,
}

/// Options of `m2m request` for when it registers (with no capabilities) while it waits for
/// a 2.0 agent's answer. (`--address` is not one of them: `m2m send --address` names the
/// peer.)
#[derive(Debug, Clone, Args)]
pub struct OneShotArgs {
    /// P2P port to receive a 2.0 agent's answer on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// Public HOST:PORT to register while waiting for a 2.0 agent's answer (behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    pub public_address: Option<String>,
}

/// `m2m agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// P2P port to listen on (0: any free port).
    #[arg(long, default_value_t = defaults::AGENT_PORT)]
    pub port: u16,

    /// Public HOST:PORT to register (when behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,

    /// Talk only to peers that prove their identity (2.1); refuse 2.0 agents both ways.
    #[arg(long)]
    pub authenticated_only: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// The P2P side of a long-running agent that registers (`m2m listen`, `m2m mcp`).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// P2P port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,

    /// Public HOST:PORT to register (when behind NAT).
    #[arg(long, value_name = "HOST:PORT")]
    pub address: Option<String>,

    /// Accept messages only from peers that prove their identity (2.1); refuse 2.0 agents
    /// both ways.
    #[arg(long)]
    pub authenticated_only: bool,

    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// `m2m listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Answer every message (except responses) with its own payload.
    #[arg(long, conflicts_with = "exec")]
    pub echo: bool,

    /// Answer every message (except responses) with the JSON this shell command prints; it
    /// gets the message as JSON on stdin.
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,

    /// Time the --exec command may take before it is killed and an error is answered.
    #[arg(long, value_parser = duration::parse, default_value = defaults::EXEC_TIMEOUT)]
    pub exec_timeout: Duration,

    /// --exec commands running at once; further messages wait.
    #[arg(long, default_value_t = defaults::EXEC_PARALLELISM)]
    pub exec_parallelism: usize,

    #[command(flatten)]
    pub limits: ListenLimitArgs,
}

/// The limits of `m2m listen` against hostile peers (docs/SECURITY.md, "Agent limits").
#[derive(Debug, Clone, Args)]
pub struct ListenLimitArgs {
    /// Inbound P2P connections at once; when all are taken, a new one evicts the one that
    /// delivered nothing for longest.
    #[arg(long, value_name = "N", default_value_t = m2m_agent::defaults::MAX_INBOUND_CONNECTIONS)]
    pub max_inbound: usize,

    /// Inbound connections one source address (IPv4, IPv6 /64) may hold.
    #[arg(long, value_name = "N", default_value_t = m2m_agent::defaults::MAX_INBOUND_PER_IP)]
    pub max_inbound_per_ip: usize,

    /// MiB all inbound read buffers may hold beyond 64 KiB each.
    #[arg(long, value_name = "MIB", default_value_t = m2m_agent::defaults::INBOUND_BUFFER_BUDGET >> 20)]
    pub inbound_buffer_budget: usize,

    /// Handshakes one source address may start per second (0: no limit).
    #[arg(long, value_name = "N", default_value_t = m2m_agent::defaults::HANDSHAKES_PER_SECOND_PER_IP)]
    pub handshakes_per_ip: u32,

    /// Answers to one sender running at once (--echo/--exec); its further messages wait
    /// their turn without taking an answer slot.
    #[arg(long, value_name = "N", default_value_t = m2m_agent::defaults::MAX_ANSWERS_PER_PEER)]
    pub max_answers_per_peer: usize,

    /// Time an answer to an unauthenticated (2.0) sender may take to be delivered.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = defaults::UNVERIFIED_RESPOND_TIMEOUT)]
    pub unverified_respond_timeout: Duration,
}

/// `m2m mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Received messages kept until a tool takes them; when full, the oldest is dropped
    /// (and counted in the `dropped` field of `inbox` results).
    #[arg(long, default_value_t = defaults::MCP_INBOX_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..=defaults::MAX_MCP_INBOX_CAPACITY as i64))]
    pub inbox_capacity: u32,
}

/// `m2m discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// Only agents with this capability (repeat for any of several).
    #[arg(long = "capability", value_name = "C")]
    pub capabilities: Vec<String>,

    /// Only agents with this status (online, idle, busy…).
    #[arg(long)]
    pub status: Option<String>,

    /// Page size (hub default 100, max 500).
    #[arg(long)]
    pub limit: Option<u32>,

    /// Page start.
    #[arg(long)]
    pub offset: Option<u64>,
}

/// `m2m find`.
#[derive(Debug, Args)]
pub struct FindArgs {
    /// The capability looked for.
    pub capability: String,
}

/// `m2m lookup`.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// The agent's id.
    pub agent_id: String,
}

/// `m2m send`.
#[derive(Debug, Args)]
#[command(
    override_usage = "m2m send [OPTIONS] AGENT_ID TYPE [--] [PAYLOAD]\n       m2m send [OPTIONS] --address HOST:PORT TYPE [--] [PAYLOAD]"
)]
pub struct SendArgs {
    /// Send straight to this P2P address instead of to an agent id.
    #[arg(long = "address", value_name = "HOST:PORT")]
    pub to_address: Option<String>,

    /// AGENT_ID TYPE [PAYLOAD] (without --address) or TYPE [PAYLOAD] (with it). PAYLOAD is
    /// JSON; other text is sent as a string; `-` reads stdin. Options may come anywhere;
    /// put `--` before a payload that starts with `-` (negative numbers need none).
    // Three single positionals rather than one list: a list would swallow options given
    // after it (`m2m send ID chat hi --hub …`).
    #[arg(value_name = "ARGS", required = true, allow_negative_numbers = true)]
    pub first: String,
    #[arg(hide = true, allow_negative_numbers = true)]
    pub second: Option<String>,
    #[arg(hide = true, allow_negative_numbers = true)]
    pub third: Option<String>,

    /// Never queue in the recipient's mailbox: fail as before when it is offline or no
    /// route reaches it.
    #[arg(long)]
    pub no_queue: bool,

    /// How long the hub keeps the message when it is queued (the hub clamps it to its
    /// maximum, 7 days by default).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, conflicts_with = "no_queue")]
    pub ttl: Option<Duration>,
}

impl SendArgs {
    /// The positionals as given.
    pub fn args(&self) -> Vec<String> {
        std::iter::once(self.first.clone())
            .chain(self.second.clone())
            .chain(self.third.clone())
            .collect()
    }
}

/// `m2m request`.
#[derive(Debug, Args)]
pub struct RequestArgs {
    #[command(flatten)]
    pub agent: OneShotArgs,

    /// The agent asked.
    pub agent_id: String,

    /// Request type; the response comes back as `TYPE:response`.
    #[arg(value_name = "TYPE")]
    pub message_type: String,

    /// JSON payload (other text is sent as a string; `-` reads stdin; put `--` before one
    /// that starts with `-`).
    #[arg(allow_negative_numbers = true)]
    pub payload: Option<String>,

    /// How long to wait for the response.
    #[arg(long, value_parser = duration::parse, default_value = defaults::REQUEST_TIMEOUT)]
    pub timeout: Duration,

    /// When the agent is offline or unreachable, queue the request in its mailbox and wait
    /// (up to --timeout) for the response, instead of failing at once. Registers while it
    /// waits, so the response can reach it.
    #[arg(long)]
    pub queue: bool,
}

/// `m2m inbox`.
#[derive(Debug, Args)]
pub struct InboxArgs {
    /// When no mail is waiting, wait this long for some to arrive (default: return at once).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse)]
    pub wait: Option<Duration>,
}

/// `m2m broadcast`.
#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// Message type.
    #[arg(value_name = "TYPE")]
    pub message_type: String,

    /// JSON payload (other text is sent as a string; `-` reads stdin; put `--` before one
    /// that starts with `-`).
    #[arg(allow_negative_numbers = true)]
    pub payload: Option<String>,

    /// Only agents with this capability (repeat for any of several).
    #[arg(long = "capability", value_name = "C")]
    pub capabilities: Vec<String>,
}

/// `m2m ping`.
#[derive(Debug, Args)]
pub struct PingArgs {
    /// The agent's P2P address.
    #[arg(value_name = "HOST:PORT")]
    pub address: String,

    /// How long to wait for the pong.
    #[arg(long, value_parser = duration::parse, default_value = defaults::PING_TIMEOUT)]
    pub timeout: Duration,
}

/// `m2m stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {}

fn parse_metadata(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match crate::payload::parse(text, "--metadata") {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("--metadata must be a JSON object, like {\"name\":\"bot\"}".to_owned()),
        Err(e) => Err(e.message),
    }
}

impl HubArgs {
    /// The socket address to listen on, from --bind and --port.
    pub fn bind_addr(&self) -> Result<std::net::SocketAddr, String> {
        let bind = self.bind.trim();
        if let Ok(addr) = bind.parse::<std::net::SocketAddr>() {
            return Ok(addr);
        }
        let ip = bind
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .map_err(|_| format!("--bind `{bind}` is neither an IP address nor IP:PORT"))?;
        Ok(std::net::SocketAddr::new(ip, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn hub(args: &[&str]) -> HubArgs {
        let mut all = vec!["m2m", "hub"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Hub(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hub_liveness_defaults_are_the_hubs() {
        let h = hub(&[]);
        let tuning = m2m_hub::StorageTuning::default();
        assert_eq!(h.alive_interval, tuning.alive_interval);
        assert_eq!(h.hub_expiry, tuning.hub_expiry);
        let h = hub(&["--alive-interval", "1s", "--hub-expiry", "3s"]);
        assert_eq!(
            (h.alive_interval, h.hub_expiry),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
    }

    #[test]
    fn hub_dashboard_switch() {
        assert!(hub(&[]).dashboard, "on by default");
        assert!(!hub(&["--dashboard", "off"]).dashboard);
        assert!(hub(&["--dashboard", "on"]).dashboard);
        assert!(Cli::try_parse_from(["m2m", "hub", "--dashboard", "maybe"]).is_err());
    }

    #[test]
    fn hub_bind_address() {
        assert_eq!(
            hub(&["--port", "0"]).bind_addr().unwrap().to_string(),
            "0.0.0.0:0"
        );
        assert_eq!(
            hub(&["--bind", "127.0.0.1", "--port", "5"])
                .bind_addr()
                .unwrap()
                .to_string(),
            "127.0.0.1:5"
        );
        assert_eq!(
            hub(&["--bind", "[::1]:7"]).bind_addr().unwrap().to_string(),
            "[::1]:7"
        );
        assert_eq!(
            hub(&["--bind", "::1", "--port", "8"])
                .bind_addr()
                .unwrap()
                .to_string(),
            "[::1]:8"
        );
        assert!(hub(&["--bind", "nope"]).bind_addr().is_err());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        assert!(Cli::try_parse_from(["m2m", "hub", "--tls-cert", "c.pem"]).is_err());
    }

    #[test]
    fn capabilities_split_on_commas_and_hub_is_global() {
        let cli = Cli::try_parse_from([
            "m2m",
            "listen",
            "--capabilities",
            "a,b",
            "--hub",
            "localhost:1",
        ])
        .unwrap();
        assert_eq!(cli.hub, ["localhost:1"]);
        match cli.command {
            Command::Listen(l) => {
                assert_eq!(l.serve.connect.capabilities, ["a", "b"]);
                assert_eq!(l.serve.port, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_hubs_comma_separated_or_repeated() {
        let cli =
            Cli::try_parse_from(["m2m", "listen", "--hub", "a:1,b:2", "--hub", "c:3"]).unwrap();
        assert_eq!(cli.hub, ["a:1", "b:2", "c:3"]);
        assert_eq!(crate::cmd::hub_or_default(&cli.hub), "a:1,b:2,c:3");
        let cli = Cli::try_parse_from(["m2m", "listen"]).unwrap();
        assert_eq!(
            crate::cmd::hub_or_default(&cli.hub),
            m2m_agent::config::DEFAULT_HUB
        );
    }

    #[test]
    fn send_takes_stdin_and_negative_payloads() {
        let cli = Cli::try_parse_from(["m2m", "send", "id1", "chat", "-"]).unwrap();
        match cli.command {
            Command::Send(s) => assert_eq!(s.args(), ["id1", "chat", "-"]),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["m2m", "send", "id1", "num", "-5"]).unwrap();
        match cli.command {
            Command::Send(s) => assert_eq!(s.args(), ["id1", "num", "-5"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_may_follow_the_positionals() {
        let cli = Cli::try_parse_from([
            "m2m",
            "send",
            "id1",
            "chat",
            "hello",
            "--hub",
            "localhost:3000",
        ])
        .unwrap();
        assert_eq!(cli.hub, ["localhost:3000"]);
        match cli.command {
            Command::Send(s) => assert_eq!(s.args(), ["id1", "chat", "hello"]),
            other => panic!("{other:?}"),
        }
        // An option between the positionals, and `--` before a payload that looks like one.
        let cli = Cli::try_parse_from([
            "m2m",
            "send",
            "id1",
            "--json",
            "chat",
            "--",
            "--not-an-option",
        ])
        .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Send(s) => assert_eq!(s.args(), ["id1", "chat", "--not-an-option"]),
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from([
            "m2m",
            "request",
            "id1",
            "ask",
            "{}",
            "--timeout",
            "2s",
            "--hub",
            "h",
        ])
        .unwrap();
        match cli.command {
            Command::Request(r) => {
                assert_eq!(r.timeout, Duration::from_secs(2));
                assert_eq!(r.payload.as_deref(), Some("{}"));
            }
            other => panic!("{other:?}"),
        }
        // Without a payload the option is still an option, not the payload.
        let cli = Cli::try_parse_from(["m2m", "request", "id1", "ask", "--timeout", "2s"]).unwrap();
        match cli.command {
            Command::Request(r) => assert_eq!(r.payload, None),
            other => panic!("{other:?}"),
        }
        let cli =
            Cli::try_parse_from(["m2m", "broadcast", "news", "-1", "--capability", "c"]).unwrap();
        match cli.command {
            Command::Broadcast(b) => {
                assert_eq!(b.payload.as_deref(), Some("-1"));
                assert_eq!(b.capabilities, ["c"]);
            }
            other => panic!("{other:?}"),
        }
        // A payload starting with `-` without `--` is refused (a usage error), not
        // misread.
        assert!(Cli::try_parse_from(["m2m", "send", "id1", "chat", "-x"]).is_err());
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(Cli::try_parse_from(["m2m", "listen", "--metadata", "[1]"]).is_err());
        assert!(Cli::try_parse_from(["m2m", "listen", "--metadata", "{\"a\":1}"]).is_ok());
    }
}
