//! The hub load generator.
//!
//! ```text
//!  start hub (child process | URL | in-process)
//!    → connect N WebSockets (from 127.0.0.x source addresses past ~25k)
//!    → register phase: C workers, each registering its share of the N connections
//!    → for each action (discover, lookup, heartbeat): closed loop, C requests in flight
//!      for `duration` after `warmup`; worker w rotates over its N/C connections, so every
//!      connection sends only total/N requests per second (the hub's per-connection rate
//!      limit is never the bound with enough agents)
//!    → optional hold: all N stay connected, each heartbeats once per interval, hub RSS
//!      sampled every second
//! ```
//!
//! The generator is a minimal WebSocket client of its own (`rawws.rs`) that checks
//! replies with a substring test (`"status":"ok"`) and parses JSON only for `register` (to learn the id), for
//! errors, and for one `discover` reply in a thousand (to report how many agents came
//! back): it must stay cheaper than the hub it measures, on the same two cores.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use m2m_hub::{Hub, HubConfig, HubLimits, RunningHub};
use serde_json::{json, Map, Value};
use tokio::net::TcpSocket;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::rawws::RawWs;

use crate::stats::{rate, round1, round3, summarize, Latency};
use crate::sys::{self, ChildProcess, CommandLine, ProcSample};

/// Connections one source address can open to one destination (the ephemeral port range
/// 32768–60999 holds 28k ports; keep a margin).
const CONNECTIONS_PER_SOURCE_IP: usize = 25_000;
/// How long a started hub has to accept WebSockets (migrations, loading the registry).
const HUB_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Client read buffer per connection (it grows for a larger reply): replies are small, and
/// 100k connections × 128 KiB (tungstenite's default) would be 12 GiB.
const CLIENT_READ_BUFFER: usize = 4 * 1024;
/// Parse one discover reply in this many to count the agents returned.
const DISCOVER_SAMPLE_EVERY: u64 = 1_000;
/// How long a stopping hub may take (it marks every agent offline first).
const HUB_STOP_GRACE: Duration = Duration::from_secs(60);

type Ws = RawWs;

/// A closed-loop phase after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HubAction {
    /// `discover` of one capability, `limit` results (100 by default).
    Discover,
    /// `lookup` of a random registered agent.
    Lookup,
    /// `heartbeat` of the connection's own agent.
    Heartbeat,
}

impl HubAction {
    /// All phases, in the order they run by default.
    pub const ALL: [HubAction; 3] = [HubAction::Discover, HubAction::Lookup, HubAction::Heartbeat];

    /// The action's wire name.
    pub fn name(self) -> &'static str {
        match self {
            HubAction::Discover => "discover",
            HubAction::Lookup => "lookup",
            HubAction::Heartbeat => "heartbeat",
        }
    }
}

impl FromStr for HubAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "discover" => Ok(HubAction::Discover),
            "lookup" => Ok(HubAction::Lookup),
            "heartbeat" => Ok(HubAction::Heartbeat),
            other => Err(format!(
                "unknown hub action `{other}` (discover, lookup, heartbeat)"
            )),
        }
    }
}

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

    fn resolve(&self, port: u16, database: &str) -> CommandLine {
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

/// What [`run_hub`] does.
#[derive(Debug, Clone)]
pub struct HubBenchOptions {
    /// The hub under test.
    pub target: HubTarget,
    /// Registry URL (`postgres://…`; `{unique}` in it becomes a new random name per run,
    /// e.g. a fresh database); `None`: a new SQLite file in a temporary directory.
    pub database: Option<String>,
    /// Agents registered.
    pub agents: usize,
    /// Agents registered on each WebSocket (1: one connection per agent, as agents
    /// usually run; K: ⌈agents / K⌉ connections, to hold more agents than this machine's
    /// file-descriptor limit allows connections — the hub's cap is 16).
    pub agents_per_connection: usize,
    /// Requests in flight (closed loop: one per worker).
    pub concurrency: usize,
    /// WebSocket connects in flight while connecting the agents.
    pub connect_concurrency: usize,
    /// Measured time per action phase.
    pub duration: Duration,
    /// Unmeasured time before each action phase.
    pub warmup: Duration,
    /// Requests each worker sends on its connection before reading the replies (1: one
    /// request at a time per connection; K: a batch of K written at once, as a client
    /// with several requests outstanding does). In flight in total: concurrency × K.
    pub pipeline: usize,
    /// Action phases, in order.
    pub actions: Vec<HubAction>,
    /// `limit` of each discover.
    pub discover_limit: u32,
    /// 1: every agent has the capability `bench` and discover asks for it (every agent
    /// matches; the hub pages 100 out of N). G > 1: agent i also has `g{i % G}` and
    /// discover asks for one such group.
    pub capability_groups: usize,
    /// Keep all agents connected this long, heartbeating, sampling the hub's RSS.
    pub hold: Option<Duration>,
    /// Time between two heartbeats of one agent during the hold.
    pub hold_heartbeat_interval: Duration,
    /// Source addresses 127.0.0.1..=127.0.0.K; `None`: one per 25k connections.
    pub source_ips: Option<usize>,
    /// Runs (each with a fresh hub when spawned).
    pub repeat: usize,
    /// D > 0: every action phase runs twice, without and then with D dashboards open on
    /// the hub (`<action>_with_dashboards`), to measure what they cost.
    pub dashboards: usize,
}

impl Default for HubBenchOptions {
    fn default() -> Self {
        HubBenchOptions {
            target: HubTarget::InProcess,
            database: None,
            agents: 10_000,
            agents_per_connection: 1,
            concurrency: 64,
            connect_concurrency: 128,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            pipeline: 1,
            actions: HubAction::ALL.to_vec(),
            discover_limit: 100,
            capability_groups: 1,
            hold: None,
            hold_heartbeat_interval: Duration::from_secs(30),
            source_ips: None,
            repeat: 1,
            dashboards: 0,
        }
    }
}

impl HubBenchOptions {
    /// WebSockets opened.
    pub fn connections(&self) -> usize {
        self.agents.div_ceil(self.agents_per_connection.max(1))
    }
}

/// Runs the hub benchmark `opts.repeat` times; returns `{bench, options, runs, summary}`.
pub async fn run_hub(opts: HubBenchOptions) -> anyhow::Result<Value> {
    if opts.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if opts.agents_per_connection == 0 {
        bail!("--agents-per-connection must be at least 1");
    }
    let connections = opts.connections();
    // Each agent is a descriptor here and one in the hub; a spawned hub inherits this
    // limit, an in-process one shares it.
    let per_agent = if opts.target == HubTarget::InProcess {
        2
    } else {
        1
    };
    let want = (connections as u64) * per_agent + 2_048;
    let fd = sys::raise_fd_limit(want)?;
    if fd.soft < want {
        bail!(
            "{connections} connections need ~{want} file descriptors per process, but the hard \
             limit is {} and this process may not raise it (no CAP_SYS_RESOURCE); use fewer \
             agents or more --agents-per-connection",
            fd.hard
        );
    }
    let mut runs = Vec::new();
    for run in 0..opts.repeat.max(1) {
        tracing::info!(run, "hub bench run");
        runs.push(run_once(&opts).await?);
    }
    Ok(json!({
        "bench": "hub",
        "options": options_json(&opts),
        "fd_limit": {"soft": fd.soft, "hard": fd.hard},
        "machine": sys::machine_load(),
        "summary": summarize(&runs),
        "runs": runs,
    }))
}

fn options_json(o: &HubBenchOptions) -> Value {
    json!({
        "target": match &o.target {
            HubTarget::Spawn(c) => json!({"spawn": c.0.display()}),
            HubTarget::External { ws_url, pid } => json!({"url": ws_url, "pid": pid}),
            HubTarget::InProcess => json!("in-process"),
        },
        "database": o.database.as_deref().map(redact).unwrap_or_else(|| "sqlite (temporary file)".into()),
        "agents": o.agents,
        "agents_per_connection": o.agents_per_connection,
        "connections": o.connections(),
        "concurrency": o.concurrency,
        "duration_s": o.duration.as_secs_f64(),
        "warmup_s": o.warmup.as_secs_f64(),
        "pipeline": o.pipeline,
        "actions": o.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
        "discover_limit": o.discover_limit,
        "capability_groups": o.capability_groups,
        "hold_s": o.hold.map(|h| h.as_secs_f64()),
        "hold_heartbeat_interval_s": o.hold_heartbeat_interval.as_secs_f64(),
        "dashboards": o.dashboards,
    })
}

/// `postgres://user:secret@host/db` → `postgres://user:…@host/db`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:…{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// A hub the generator talks to, and how to stop it.
struct HubUnderTest {
    ws_url: String,
    addr: SocketAddr,
    pid: Option<u32>,
    process: Option<ChildProcess>,
    in_process: Option<RunningHub>,
    _dir: Option<tempfile::TempDir>,
}

impl HubUnderTest {
    async fn start(opts: &HubBenchOptions) -> anyhow::Result<Self> {
        let (database, dir) = match &opts.database {
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
        match &opts.target {
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

    fn sample(&self) -> Option<ProcSample> {
        self.pid.and_then(ProcSample::read)
    }

    async fn stop(self) {
        if let Some(p) = self.process {
            p.stop(HUB_STOP_GRACE).await;
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
/// per-source-IP shares (every bench client is 127.0.0.1).
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
    let deadline = Instant::now() + HUB_READY_TIMEOUT;
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
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn open_ws(url: &str, hub: SocketAddr, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let uri: Uri = url.parse().with_context(|| format!("bad hub URL {url}"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| hub.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let socket = if hub.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding a client socket to {ip}"))?;
    }
    let stream = socket
        .connect(hub)
        .await
        .with_context(|| format!("connecting to {hub}"))?;
    stream.set_nodelay(true)?;
    RawWs::handshake(stream, &host, path, CLIENT_READ_BUFFER).await
}

/// Sends one request and returns the reply.
async fn call(ws: &mut Ws, text: String) -> anyhow::Result<String> {
    ws.send(&text).await?;
    recv(ws).await.map(str::to_owned)
}

/// The next reply, skipping unsolicited events such as a 2.1 hub's challenge.
async fn recv(ws: &mut Ws) -> anyhow::Result<&str> {
    while ws.recv().await?.starts_with(r#"{"event""#) {}
    ws.last()
}

/// `Ok` for an ok reply, else the error code.
fn outcome(reply: &str) -> Result<(), String> {
    if reply.contains(r#""status":"ok""#) {
        return Ok(());
    }
    let v: Value = serde_json::from_str(reply).map_err(|_| "unparsable_reply".to_owned())?;
    if v.get("status").and_then(Value::as_str) == Some("ok") {
        return Ok(());
    }
    Err(v
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_owned())
}

/// One registered client.
struct Conn {
    ws: Ws,
    index: usize,
    /// The agents registered on it (empty string: a failed registration).
    ids: Vec<String>,
}

impl Conn {
    /// The first agent: the one that heartbeats and discovers in the action phases.
    fn id(&self) -> &str {
        self.ids.first().map_or("", String::as_str)
    }
}

/// What a worker measured in one phase.
#[derive(Default)]
struct Tally {
    latency: Latency,
    ok: u64,
    errors: BTreeMap<String, u64>,
    discover_returned: Option<u64>,
    discover_reply_bytes: Option<u64>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.latency.merge(&other.latency);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        if other.discover_returned.is_some() {
            self.discover_returned = other.discover_returned;
            self.discover_reply_bytes = other.discover_reply_bytes;
        }
    }

    fn error(&mut self, code: String) {
        *self.errors.entry(code).or_default() += 1;
    }

    fn json(&self, elapsed: Duration) -> Value {
        let failed: u64 = self.errors.values().sum();
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "seconds": round3(elapsed.as_secs_f64()),
            "ops_per_s": rate(self.ok + failed, elapsed),
            "ok_per_s": rate(self.ok, elapsed),
            "latency": self.latency.summary(),
        })
    }
}

/// A tiny xorshift: lookup targets need to be spread, not unpredictable.
struct Spread(u64);

impl Spread {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn mib(kib: u64) -> f64 {
    round1(kib as f64 / 1024.0)
}

fn source_addresses(opts: &HubBenchOptions, hub: SocketAddr) -> Vec<Option<IpAddr>> {
    let wanted = opts
        .source_ips
        .unwrap_or_else(|| opts.connections().div_ceil(CONNECTIONS_PER_SOURCE_IP));
    if !hub.ip().is_loopback() || !hub.is_ipv4() || wanted <= 1 {
        return vec![None];
    }
    (1..=wanted.min(250))
        .map(|k| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))))
        .collect()
}

async fn run_once(opts: &HubBenchOptions) -> anyhow::Result<Value> {
    let hub = HubUnderTest::start(opts).await?;
    let result = measure(opts, &hub).await;
    hub.stop().await;
    result
}

async fn measure(opts: &HubBenchOptions, hub: &HubUnderTest) -> anyhow::Result<Value> {
    let mut figures = Map::new();
    let mut report = Map::new();
    let at_start = hub.sample();

    // ---- connect ----
    let sources = source_addresses(opts, hub.addr);
    let started = Instant::now();
    let url: Arc<str> = hub.ws_url.clone().into();
    let connections = opts.connections();
    let mut opened: Vec<(usize, Ws)> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let url = url.clone();
            let source = sources[i % sources.len()];
            let addr = hub.addr;
            async move {
                open_ws(&url, addr, source)
                    .await
                    .map(|ws| (i, ws))
                    .with_context(|| format!("connection {i}"))
            }
        })
        .buffer_unordered(opts.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let connect_time = started.elapsed();
    opened.sort_by_key(|(i, _)| *i);
    figures.insert(
        "connect_per_s".into(),
        json!(rate(connections as u64, connect_time)),
    );
    report.insert(
        "connect".into(),
        json!({
            "connections": connections,
            "source_ips": sources.len(),
            "seconds": round3(connect_time.as_secs_f64()),
            "per_s": rate(connections as u64, connect_time),
        }),
    );

    // ---- register ----
    let workers = opts.concurrency.clamp(1, connections);
    let mut chunks: Vec<Vec<(usize, Ws)>> = (0..workers).map(|_| Vec::new()).collect();
    for (n, c) in opened.into_iter().enumerate() {
        chunks[n % workers].push(c);
    }
    let groups = opts.capability_groups.max(1);
    let before = (hub.sample(), ProcSample::current());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        tasks.push(tokio::spawn(register_worker(
            chunk,
            groups,
            opts.agents,
            opts.agents_per_connection,
        )));
    }
    let mut chunks: Vec<Vec<Conn>> = Vec::new();
    let mut tally = Tally::default();
    for t in tasks {
        let (conns, t) = t.await??;
        chunks.push(conns);
        tally.add(t);
    }
    let register_time = started.elapsed();
    let after = (hub.sample(), ProcSample::current());
    let registered = tally.ok;
    let mut reg = tally.json(register_time);
    reg["hub_cpu_cores"] = sys::cores_used(before.0, after.0, register_time);
    reg["generator_cpu_cores"] = sys::cores_used(Some(before.1), Some(after.1), register_time);
    phase_figures(&mut figures, "register", &tally, register_time);
    report.insert("register".into(), reg);
    if let Some(s) = after.0 {
        figures.insert("hub_rss_mib_registered".into(), json!(mib(s.rss_kib)));
    }
    if registered == 0 {
        bail!("no agent registered: {:?}", tally.errors);
    }
    let ids: Arc<Vec<String>> = Arc::new(
        chunks
            .iter()
            .flatten()
            .flat_map(|c| c.ids.iter())
            .filter(|id| !id.is_empty())
            .cloned()
            .collect(),
    );

    // ---- closed-loop phases ----
    let mut phases = Map::new();
    let variants: &[bool] = if opts.dashboards > 0 {
        &[false, true]
    } else {
        &[false]
    };
    let phase_list: Vec<(HubAction, bool)> = opts
        .actions
        .iter()
        .flat_map(|a| variants.iter().map(move |d| (*a, *d)))
        .collect();
    for (p, (action, with_dashboards)) in phase_list.into_iter().enumerate() {
        let action = &action;
        let name = if with_dashboards {
            format!("{}_with_dashboards", action.name())
        } else {
            action.name().to_owned()
        };
        let dashboards = if with_dashboards {
            Some(crate::dashboard::open(hub.addr, opts.dashboards).await?)
        } else {
            None
        };
        let warm_end = Instant::now() + opts.warmup;
        let deadline = warm_end + opts.duration;
        let mut tasks = Vec::new();
        for (w, chunk) in chunks.into_iter().enumerate() {
            let ids = ids.clone();
            let job = PhaseJob {
                action: *action,
                warm_end,
                deadline,
                discover_limit: opts.discover_limit,
                groups,
                pipeline: opts.pipeline.max(1),
                seed: 0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) << 20) ^ p as u64,
            };
            tasks.push(tokio::spawn(phase_worker(chunk, ids, job)));
        }
        tokio::time::sleep_until(warm_end).await;
        let before = (hub.sample(), ProcSample::current());
        tokio::time::sleep_until(deadline).await;
        let after = (hub.sample(), ProcSample::current());
        let mut back = Vec::new();
        let mut tally = Tally::default();
        for t in tasks {
            let (conns, t) = t.await??;
            back.push(conns);
            tally.add(t);
        }
        chunks = back;
        let mut j = tally.json(opts.duration);
        j["hub_cpu_cores"] = sys::cores_used(before.0, after.0, opts.duration);
        j["generator_cpu_cores"] = sys::cores_used(Some(before.1), Some(after.1), opts.duration);
        if let Some(s) = after.0 {
            j["hub_rss_mib"] = json!(mib(s.rss_kib));
        }
        if *action == HubAction::Discover {
            j["agents_per_reply"] = json!(tally.discover_returned);
            j["reply_bytes"] = json!(tally.discover_reply_bytes);
        }
        if let Some(d) = dashboards {
            j["dashboards"] = json!({
                "open": opts.dashboards,
                "events_read": d.events.load(std::sync::atomic::Ordering::Relaxed),
                "page_queries": d.queries.load(std::sync::atomic::Ordering::Relaxed),
            });
            let without = figures
                .get(&format!("{}_ops_per_s", action.name()))
                .and_then(Value::as_f64);
            let with = rate(tally.ok, opts.duration);
            if let Some(without) = without.filter(|w| *w > 0.0) {
                figures.insert(
                    format!("{}_dashboard_cost_pct", action.name()),
                    json!(round1((1.0 - with / without) * 100.0)),
                );
            }
        }
        phase_figures(&mut figures, &name, &tally, opts.duration);
        phases.insert(name, j);
    }
    report.insert("actions".into(), Value::Object(phases));

    // ---- hold ----
    if let Some(hold) = opts.hold {
        let (back, j) = hold_phase(chunks, hub, hold, opts.hold_heartbeat_interval).await?;
        chunks = back;
        if let Some(x) = j.get("hub_rss_mib_max").and_then(Value::as_f64) {
            figures.insert("hold_hub_rss_mib_max".into(), json!(x));
        }
        if let Some(x) = j
            .pointer("/heartbeats/latency/p99_us")
            .and_then(Value::as_f64)
        {
            figures.insert("hold_heartbeat_p99_us".into(), json!(x));
        }
        report.insert("hold".into(), j);
    }

    // ---- the hub's own view, then the end state ----
    if let Some(conn) = chunks.iter_mut().flatten().next() {
        let text = r#"{"action":"stats","correlationId":"s"}"#.to_owned();
        if let Ok(reply) = call(&mut conn.ws, text).await {
            if let Ok(v) = serde_json::from_str::<Value>(&reply) {
                report.insert("hub_stats".into(), v);
            }
        }
    }
    let end = hub.sample();
    if let Some(s) = end {
        figures.insert("hub_rss_mib_end".into(), json!(mib(s.rss_kib)));
        figures.insert("hub_hwm_mib".into(), json!(mib(s.hwm_kib)));
    }
    let me = ProcSample::current();
    report.insert(
        "hub_process".into(),
        json!({
            "pid": hub.pid,
            "rss_mib_start": at_start.map(|s| mib(s.rss_kib)),
            "rss_mib_end": end.map(|s| mib(s.rss_kib)),
            "hwm_mib": end.map(|s| mib(s.hwm_kib)),
        }),
    );
    report.insert(
        "generator_process".into(),
        json!({"rss_mib": mib(me.rss_kib), "hwm_mib": mib(me.hwm_kib)}),
    );
    report.insert("registered".into(), json!(registered));
    report.insert("figures".into(), Value::Object(figures));
    drop(chunks);
    Ok(Value::Object(report))
}

fn phase_figures(figures: &mut Map<String, Value>, name: &str, t: &Tally, elapsed: Duration) {
    let failed: u64 = t.errors.values().sum();
    figures.insert(format!("{name}_ops_per_s"), json!(rate(t.ok, elapsed)));
    if failed > 0 {
        figures.insert(format!("{name}_errors"), json!(failed));
    }
    if t.latency.count() > 0 {
        figures.insert(format!("{name}_p50_us"), json!(t.latency.quantile_us(0.5)));
        figures.insert(format!("{name}_p99_us"), json!(t.latency.quantile_us(0.99)));
    }
}

async fn register_worker(
    conns: Vec<(usize, Ws)>,
    groups: usize,
    agents: usize,
    per_connection: usize,
) -> anyhow::Result<(Vec<Conn>, Tally)> {
    let mut tally = Tally::default();
    let mut out = Vec::with_capacity(conns.len());
    for (index, mut ws) in conns {
        let first = index * per_connection;
        let mut ids = Vec::with_capacity(per_connection);
        for agent in first..(first + per_connection).min(agents) {
            let caps = if groups > 1 {
                format!(r#"["bench","g{}"]"#, agent % groups)
            } else {
                r#"["bench"]"#.to_owned()
            };
            let text = format!(
                r#"{{"action":"register","address":"127.0.0.1:{}","capabilities":{caps},"metadata":{{"bench":true,"n":{agent}}},"correlationId":"r{agent}"}}"#,
                10_000 + agent % 50_000
            );
            let t = Instant::now();
            let reply = call(&mut ws, text)
                .await
                .with_context(|| format!("register of agent {agent} on connection {index}"))?;
            tally.latency.record(t.elapsed());
            match outcome(&reply) {
                Ok(()) => {
                    let v: Value = serde_json::from_str(&reply).context("register reply")?;
                    tally.ok += 1;
                    ids.push(v.get("id").and_then(Value::as_str).unwrap_or("").to_owned());
                }
                Err(code) => {
                    tally.error(code);
                    ids.push(String::new());
                }
            }
        }
        out.push(Conn { ws, index, ids });
    }
    Ok((out, tally))
}

#[derive(Clone, Copy)]
struct PhaseJob {
    action: HubAction,
    warm_end: Instant,
    deadline: Instant,
    discover_limit: u32,
    groups: usize,
    pipeline: usize,
    seed: u64,
}

fn request_text(
    job: &PhaseJob,
    conn: &Conn,
    ids: &[String],
    spread: &mut Spread,
    n: u64,
) -> String {
    match job.action {
        HubAction::Lookup => format!(
            r#"{{"action":"lookup","id":"{}","correlationId":"l{n}"}}"#,
            ids[spread.next(ids.len())]
        ),
        HubAction::Heartbeat => format!(
            r#"{{"action":"heartbeat","id":"{}","correlationId":"h{n}"}}"#,
            conn.id()
        ),
        HubAction::Discover => {
            let cap = if job.groups > 1 {
                format!("g{}", spread.next(job.groups))
            } else {
                "bench".to_owned()
            };
            format!(
                r#"{{"action":"discover","id":"{}","capabilities":["{cap}"],"limit":{},"correlationId":"d{n}"}}"#,
                conn.id(),
                job.discover_limit
            )
        }
    }
}

async fn phase_worker(
    mut conns: Vec<Conn>,
    ids: Arc<Vec<String>>,
    job: PhaseJob,
) -> anyhow::Result<(Vec<Conn>, Tally)> {
    let mut tally = Tally::default();
    let mut spread = Spread(job.seed | 1);
    let mut n: u64 = 0;
    // Measured replies, for sampling discover results from the first one on.
    let mut sampled: u64 = 0;
    let len = conns.len();
    if len == 0 {
        return Ok((conns, tally));
    }
    loop {
        let started = Instant::now();
        if started >= job.deadline {
            break;
        }
        let conn = &mut conns[(n as usize) % len];
        for _ in 0..job.pipeline {
            n += 1;
            let text = request_text(&job, conn, &ids, &mut spread, n);
            conn.ws.feed(&text);
        }
        conn.ws.flush().await?;
        for _ in 0..job.pipeline {
            let reply = recv(&mut conn.ws)
                .await
                .with_context(|| format!("{} on connection {}", job.action.name(), conn.index))?;
            if started < job.warm_end {
                continue;
            }
            tally.latency.record(started.elapsed());
            match outcome(reply) {
                Ok(()) => tally.ok += 1,
                Err(code) => tally.error(code),
            }
            sampled += 1;
            if job.action == HubAction::Discover && sampled % DISCOVER_SAMPLE_EVERY == 1 {
                tally.discover_reply_bytes = Some(reply.len() as u64);
                if let Ok(v) = serde_json::from_str::<Value>(reply) {
                    tally.discover_returned = v
                        .get("agents")
                        .and_then(Value::as_array)
                        .map(|a| a.len() as u64);
                }
            }
        }
    }
    Ok((conns, tally))
}

/// All agents stay connected; each heartbeats once per `interval` (spread evenly), while
/// the hub's RSS is sampled every second.
async fn hold_phase(
    chunks: Vec<Vec<Conn>>,
    hub: &HubUnderTest,
    hold: Duration,
    interval: Duration,
) -> anyhow::Result<(Vec<Vec<Conn>>, Value)> {
    let started = Instant::now();
    let deadline = started + hold;
    let workers = chunks.len().max(1);
    let max_rss = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = {
        let pid = hub.pid;
        let max_rss = max_rss.clone();
        tokio::spawn(async move {
            loop {
                if let Some(s) = pid.and_then(ProcSample::read) {
                    let mut m = max_rss.lock().await;
                    m.0 = m.0.max(s.rss_kib);
                    m.1 = s.rss_kib;
                }
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                tokio::time::sleep((deadline - now).min(Duration::from_secs(1))).await;
            }
        })
    };
    let before = (hub.sample(), ProcSample::current());
    let mut tasks = Vec::new();
    for (w, chunk) in chunks.into_iter().enumerate() {
        // Stagger workers so the whole population's heartbeats are evenly spread.
        let offset = interval.mul_f64(w as f64 / workers as f64 / chunk.len().max(1) as f64);
        tasks.push(tokio::spawn(hold_worker(
            chunk,
            started + offset,
            interval,
            deadline,
        )));
    }
    let mut back = Vec::new();
    let mut tally = Tally::default();
    let mut lost = 0;
    let mut beaten = 0;
    for t in tasks {
        let (conns, t, l, b) = t.await?;
        back.push(conns);
        tally.add(t);
        lost += l;
        beaten += b;
    }
    let _ = sampler.await;
    let elapsed = started.elapsed();
    let after = (hub.sample(), ProcSample::current());
    let (max_kib, last_kib) = *max_rss.lock().await;
    let connections: usize = back.iter().map(Vec::len).sum();
    let connected: usize = back.iter().flatten().map(|c| c.ids.len()).sum();
    Ok((
        back,
        json!({
            "seconds": round1(elapsed.as_secs_f64()),
            "agents_connected": connected,
            "agents_heartbeated": beaten,
            "connections_open": connections,
            "connections_lost": lost,
            "heartbeat_interval_s": interval.as_secs_f64(),
            "heartbeats": tally.json(elapsed),
            "hub_rss_mib_max": mib(max_kib),
            "hub_rss_mib_last": mib(last_kib),
            "hub_hwm_mib": after.0.map(|s| mib(s.hwm_kib)),
            "hub_cpu_cores": sys::cores_used(before.0, after.0, elapsed),
            "generator_cpu_cores": sys::cores_used(Some(before.1), Some(after.1), elapsed),
            "generator_rss_mib": mib(after.1.rss_kib),
        }),
    ))
}

async fn hold_worker(
    mut conns: Vec<Conn>,
    first: Instant,
    interval: Duration,
    deadline: Instant,
) -> (Vec<Conn>, Tally, u64, usize) {
    let mut tally = Tally::default();
    let mut lost = 0;
    let mut beaten = std::collections::HashSet::new();
    // Every agent heartbeats once per interval: connection by connection, each
    // connection's agents in turn.
    let agents: usize = conns.iter().map(|c| c.ids.len().max(1)).sum();
    if agents == 0 {
        return (conns, tally, 0, 0);
    }
    let step = interval / u32::try_from(agents).unwrap_or(u32::MAX);
    let mut next = first;
    let (mut k, mut j, mut i) = (0usize, 0usize, 0usize);
    while next < deadline && !conns.is_empty() {
        tokio::time::sleep_until(next).await;
        next += step;
        k %= conns.len();
        let at = k;
        i += 1;
        let slot = (conns[at].index, j);
        let text = format!(
            r#"{{"action":"heartbeat","id":"{}","correlationId":"h{i}"}}"#,
            conns[at].ids.get(j).map_or("", String::as_str)
        );
        j += 1;
        if j >= conns[at].ids.len() {
            (j, k) = (0, at + 1);
        }
        let t = Instant::now();
        match call(&mut conns[at].ws, text).await {
            Ok(reply) => {
                tally.latency.record(t.elapsed());
                match outcome(&reply) {
                    Ok(()) => {
                        tally.ok += 1;
                        beaten.insert(slot);
                    }
                    Err(code) => tally.error(code),
                }
            }
            Err(_) => {
                // Its agents are gone with it; the connection swapped into its place
                // starts from its first agent.
                lost += 1;
                conns.swap_remove(at);
                (j, k) = (0, at);
            }
        }
    }
    let beaten = beaten.len();
    (conns, tally, lost, beaten)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome(r#"{"status":"ok","id":"x"}"#), Ok(()));
        assert_eq!(
            outcome(r#"{"status":"error","error":"rate_limited","correlationId":"1"}"#),
            Err("rate_limited".into())
        );
        assert_eq!(outcome("nope"), Err("unparsable_reply".into()));
    }

    #[test]
    fn placeholders_and_redaction() {
        let c = HubCommand::m2m_cli(PathBuf::from("/x/m2m")).resolve(7, "sqlite://a.db");
        assert_eq!(
            c.display(),
            "/x/m2m hub --bind 127.0.0.1 --port 7 --database sqlite://a.db \
             --max-connections-per-ip 0 --registrations-per-hour 0"
        );
        assert_eq!(
            redact("postgres://m2m:secret@127.0.0.1:5432/db"),
            "postgres://m2m:…@127.0.0.1:5432/db"
        );
    }

    #[test]
    fn many_agents_use_several_source_addresses() {
        let hub = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
        let opts = HubBenchOptions {
            agents: 100_000,
            ..HubBenchOptions::default()
        };
        assert_eq!(source_addresses(&opts, hub).len(), 4);
        let small = HubBenchOptions::default();
        assert_eq!(source_addresses(&small, hub), vec![None]);
    }
}
