//! The hub under test: started as a process, reached at a URL, or run in this process;
//! waited for until it accepts WebSockets, and stopped at the end of a run.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use m2m_hub::{Hub, HubConfig, HubLimits, RelayConfig, RunningHub};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;

use super::client::open_ws;
use super::HubBenchOptions;
use crate::defaults;
use crate::sys::{self, ChildProcess, CommandLine, ProcSample};

/// How to start a hub process. `{port}` and `{database}` in the arguments are replaced
/// by a free port on 127.0.0.1 and the database URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCommand(pub CommandLine);

impl HubCommand {
    /// `<bench> hub-serve --port {port} --database {database}`: the benches' own hidden hub
    /// command ([`serve_hub`]); `bench` is how the program runs a bench subcommand
    /// (`m2m-bench`, or `m2m bench`).
    pub fn bench_serve(bench: CommandLine) -> Self {
        let mut line = bench;
        line.args.extend(
            ["hub-serve", "--port", "{port}", "--database", "{database}"].map(str::to_owned),
        );
        HubCommand(line)
    }

    /// `<exe> hub --bind 127.0.0.1 --port {port} --database {database}`: the `m2m` tool.
    pub fn m2m_cli(exe: PathBuf) -> Self {
        HubCommand(CommandLine {
            program: exe,
            args: [
                "hub",
                "--bind",
                "127.0.0.1",
                "--port",
                "{port}",
                "--database",
                "{database}",
                // Every bench client is 127.0.0.1: lift the per-IP shares.
                "--max-connections-per-ip",
                "0",
                "--registrations-per-hour",
                "0",
            ]
            .map(str::to_owned)
            .to_vec(),
        })
    }

    pub(super) fn resolve(&self, port: u16, database: &str) -> CommandLine {
        CommandLine {
            program: self.0.program.clone(),
            args: self
                .0
                .args
                .iter()
                .map(|a| {
                    a.replace("{port}", &port.to_string())
                        .replace("{database}", database)
                })
                .collect(),
        }
    }
}

/// Which hub to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubTarget {
    /// Start a hub process for every run (the default; its RSS is measured alone).
    Spawn(HubCommand),
    /// A hub that is already running (e.g. the original JavaScript hub). `pid`, if given,
    /// is read for RSS and CPU.
    External {
        /// `ws://host:port/ws`.
        ws_url: String,
        /// The hub's process id.
        pid: Option<u32>,
    },
    /// A hub inside this process (tests; RSS then includes the generator).
    InProcess,
}

/// A hub the generator talks to, and how to stop it.
pub(crate) struct HubUnderTest {
    pub(crate) ws_url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) pid: Option<u32>,
    process: Option<ChildProcess>,
    in_process: Option<RunningHub>,
    _dir: Option<tempfile::TempDir>,
}

impl HubUnderTest {
    pub(super) async fn start(opts: &HubBenchOptions) -> anyhow::Result<Self> {
        Self::launch(&opts.target, opts.database.as_deref()).await
    }

    /// Starts (or reaches) `target` with `database` (default: a new SQLite file in a
    /// temporary directory) and waits until it accepts WebSockets.
    pub(crate) async fn launch(target: &HubTarget, database: Option<&str>) -> anyhow::Result<Self> {
        let (database, dir) = match database {
            // A fresh PostgreSQL database per run: the hub creates a missing one.
            Some(d) => (
                d.replace("{unique}", &format!("{:08x}", rand::random::<u32>())),
                None,
            ),
            None => {
                let dir = tempfile::tempdir().context("creating a temporary directory")?;
                let db = format!("sqlite://{}", dir.path().join("hub.db").display());
                (db, Some(dir))
            }
        };
        match target {
            HubTarget::Spawn(cmd) => {
                let port = sys::free_port()?;
                let line = cmd.resolve(port, &database);
                let mut process = ChildProcess::spawn("hub", &line, false)?;
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let ws_url = format!("ws://{addr}/ws");
                wait_ready(&ws_url, addr, Some(&mut process)).await?;
                Ok(HubUnderTest {
                    ws_url,
                    addr,
                    pid: process.pid(),
                    process: Some(process),
                    in_process: None,
                    _dir: dir,
                })
            }
            HubTarget::External { ws_url, pid } => {
                let addr = resolve_ws(ws_url).await?;
                wait_ready(ws_url, addr, None).await?;
                Ok(HubUnderTest {
                    ws_url: ws_url.clone(),
                    addr,
                    pid: *pid,
                    process: None,
                    in_process: None,
                    _dir: dir,
                })
            }
            HubTarget::InProcess => {
                let config = bench_hub_config(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), database);
                let hub = Hub::start(config).await.context("starting the hub")?;
                Ok(HubUnderTest {
                    ws_url: hub.ws_url(),
                    addr: hub.local_addr(),
                    pid: Some(std::process::id()),
                    process: None,
                    in_process: Some(hub),
                    _dir: dir,
                })
            }
        }
    }

    pub(crate) fn sample(&self) -> Option<ProcSample> {
        self.pid.and_then(ProcSample::read)
    }

    pub(crate) async fn stop(self) {
        if let Some(p) = self.process {
            p.stop(defaults::HUB_STOP_GRACE).await;
        }
        if let Some(h) = self.in_process {
            if let Err(e) = h.shutdown().await {
                tracing::warn!(error = %e, "in-process hub shutdown");
            }
        }
    }
}

/// The hub configuration of `hub-serve` and the in-process hub: the defaults, except that
/// the per-connection request rate limit is lifted (the bench measures capacity, and a few
/// connections may carry the whole load when `--agents` is small), and so are the
/// per-source-IP shares (every bench client is 127.0.0.1), and the relay's bytes/s per
/// WebSocket (the relay bench measures the hub's relay capacity, two clients carry it all).
pub(crate) fn bench_hub_config(bind: SocketAddr, database: String) -> HubConfig {
    HubConfig {
        bind,
        database,
        limits: HubLimits {
            requests_per_second: 0,
            max_connections_per_ip: 0,
            registrations_per_hour: 0,
            ..HubLimits::default()
        },
        relay: RelayConfig {
            rate: 0,
            ..RelayConfig::default()
        },
        ..HubConfig::default()
    }
}

async fn resolve_ws(ws_url: &str) -> anyhow::Result<SocketAddr> {
    let uri: Uri = ws_url
        .parse()
        .with_context(|| format!("bad hub URL {ws_url}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("only ws:// hubs can be measured (got {ws_url})");
    }
    let host = uri.host().context("hub URL without host")?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let found = tokio::net::lookup_host((host.as_str(), port)).await?.next();
    found.ok_or_else(|| anyhow!("{host} does not resolve"))
}

async fn wait_ready(
    ws_url: &str,
    addr: SocketAddr,
    mut process: Option<&mut ChildProcess>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + defaults::HUB_READY_TIMEOUT;
    loop {
        if let Some(p) = process.as_deref_mut() {
            p.check_running()?;
        }
        match open_ws(ws_url, addr, None).await {
            Ok(mut ws) => {
                ws.close().await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => {
                bail!("the hub at {ws_url} did not accept a WebSocket in time: {e}")
            }
            Err(_) => tokio::time::sleep(defaults::HUB_READY_RETRY).await,
        }
    }
}

/// What `hub-serve` runs.
#[derive(Debug, Clone)]
pub struct ServeHubOptions {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Registry URL.
    pub database: String,
}

/// Runs a hub on 127.0.0.1 with the bench configuration (the defaults without the
/// per-connection rate limit) until SIGTERM/SIGINT. Prints the WebSocket URL on stdout once listening.
pub async fn serve_hub(opts: ServeHubOptions) -> anyhow::Result<()> {
    let config = bench_hub_config(
        SocketAddr::from((Ipv4Addr::LOCALHOST, opts.port)),
        opts.database,
    );
    let hub = Hub::start(config).await.context("starting the hub")?;
    println!("{}", hub.ws_url());
    tokio::select! {
        _ = m2m_hub::shutdown_signal() => {}
        _ = hub.stopped() => {}
    }
    hub.shutdown().await.context("stopping the hub")?;
    Ok(())
}
