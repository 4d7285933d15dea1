//! The P2P benchmark: two SDK agents in two processes on loopback.
//!
//! ```text
//!  driver process                              peer process (`p2p-peer`)
//!  ┌──────────────────────────┐               ┌──────────────────────────┐
//!  │ in-process hub (SQLite   │◄── register ──│ Agent: reads its inbox;  │
//!  │ in memory)               │               │ answers `bench.req` with │
//!  │ Agent ── send_direct ────┼── TCP ───────►│ respond (a task each);   │
//!  │       ── request ────────┼──────────────►│ everything else is only  │
//!  │       ◄─ response ───────┼───────────────│ acked                    │
//!  │ raw Initiator (fresh) ───┼──────────────►│                          │
//!  └──────────────────────────┘               └──────────────────────────┘
//! ```
//!
//! Scenarios, each a closed loop with a fixed number of operations in flight:
//! * `messages` — `send_direct` of small payloads over the pooled (reused) connection;
//!   one operation = one message acknowledged by the peer.
//! * `bulk` — the same with large payloads; reported as payload MB/s.
//! * `fresh` — connect, handshake, one message, its ack, close: the original
//!   implementation's pattern. The SDK always pools, so the initiator side here is the
//!   protocol core (`m2m_proto::Initiator`) over a bare `TcpStream`; the responder is the
//!   SDK's.
//! * `fresh-v21` — the same with the 2.1 authenticated handshake (the peer's key from the
//!   hub, our own identity proved): what a one-shot `m2m send` costs the two agents.
//! * `request` / `request-pipelined` — `Agent::request` and the peer's `respond`: one
//!   operation = request, its ack, the response on the peer's own connection back, its ack.
//!
//! Payloads are strings (the plaintext is then exactly `size` bytes); request payloads
//! are `{"data": <string>}` objects because `request` adds a `correlationId` field.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use m2m_agent::{Agent, Value};
use m2m_hub::Hub;
use m2m_proto::session::PeerExpectation;
use m2m_proto::{Identity, IdentityKey, Initiator, InitiatorEvent, LineDecoder};
use serde_json::{json, Map};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::stats::{rate, round1, summarize, Latency};
use crate::sys::{self, ChildProcess, CommandLine, ProcSample};

/// The message type the peer answers.
const REQUEST_TYPE: &str = "bench.req";
/// The message type the peer only acks.
const MESSAGE_TYPE: &str = "bench.msg";
/// The id the raw initiator declares (the peer does not check it).
const FRESH_FROM: &str = "00000000000000000000000000fe5400";
/// How long the peer has to start and register.
const PEER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest frame the raw initiator accepts (acks are tiny).
const FRESH_MAX_LINE: usize = 64 * 1024;

/// One P2P measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum P2pScenario {
    /// Small messages over one reused connection, many in flight.
    Messages,
    /// Large messages over one reused connection.
    Bulk,
    /// A new connection and handshake per message.
    Fresh,
    /// A new connection and 2.1 authenticated handshake per message.
    FreshV21,
    /// Request/response, one at a time.
    Request,
    /// Request/response, many in flight.
    RequestPipelined,
}

impl P2pScenario {
    /// All scenarios, in the order they run by default.
    pub const ALL: [P2pScenario; 6] = [
        P2pScenario::Messages,
        P2pScenario::Bulk,
        P2pScenario::Fresh,
        P2pScenario::FreshV21,
        P2pScenario::Request,
        P2pScenario::RequestPipelined,
    ];

    /// The scenario's name in options and results.
    pub fn name(self) -> &'static str {
        match self {
            P2pScenario::Messages => "messages",
            P2pScenario::Bulk => "bulk",
            P2pScenario::Fresh => "fresh",
            P2pScenario::FreshV21 => "fresh-v21",
            P2pScenario::Request => "request",
            P2pScenario::RequestPipelined => "request-pipelined",
        }
    }
}

impl FromStr for P2pScenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        P2pScenario::ALL
            .into_iter()
            .find(|x| x.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown scenario `{s}` (messages, bulk, fresh, fresh-v21, request, request-pipelined)"
                )
            })
    }
}

/// How to start the peer process; the driver appends `--hub <ws-url>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCommand(pub CommandLine);

impl PeerCommand {
    /// `<bench> p2p-peer`: the benches' own hidden peer command ([`run_peer`]); `bench` is
    /// how the program runs a bench subcommand (`m2m-bench`, or `m2m bench`).
    pub fn bench_peer(bench: CommandLine) -> Self {
        let mut line = bench;
        line.args.push("p2p-peer".to_owned());
        PeerCommand(line)
    }
}

/// What [`run_p2p`] does.
#[derive(Debug, Clone)]
pub struct P2pBenchOptions {
    /// How to start the second process.
    pub peer: PeerCommand,
    /// Scenarios, in order.
    pub scenarios: Vec<P2pScenario>,
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured time before each scenario.
    pub warmup: Duration,
    /// Payload bytes of `messages`, `fresh` and the requests.
    pub message_size: usize,
    /// Payload bytes of `bulk`.
    pub bulk_size: usize,
    /// Messages in flight in `messages`.
    pub in_flight: usize,
    /// Messages in flight in `bulk`.
    pub bulk_in_flight: usize,
    /// Connections in flight in `fresh`.
    pub fresh_in_flight: usize,
    /// Requests in flight in `request-pipelined`.
    pub request_in_flight: usize,
    /// Runs of every scenario.
    pub repeat: usize,
}

impl P2pBenchOptions {
    /// Defaults of the issue's targets, with `peer` as the second process.
    pub fn new(peer: PeerCommand) -> Self {
        P2pBenchOptions {
            peer,
            scenarios: P2pScenario::ALL.to_vec(),
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            message_size: 200,
            bulk_size: 64 * 1024,
            in_flight: 256,
            bulk_in_flight: 16,
            fresh_in_flight: 16,
            request_in_flight: 64,
            repeat: 1,
        }
    }
}

/// The peer as the driver sees it.
struct PeerProcess {
    process: ChildProcess,
    id: String,
    addr: SocketAddr,
}

impl PeerProcess {
    async fn start(cmd: &PeerCommand, hub_url: &str) -> anyhow::Result<Self> {
        let mut line = cmd.0.clone();
        line.args.push("--hub".into());
        line.args.push(hub_url.to_owned());
        let mut process = ChildProcess::spawn("P2P peer", &line, true)?;
        let stdout = process
            .child_mut()
            .stdout
            .take()
            .context("peer stdout not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(PEER_READY_TIMEOUT, lines.next_line())
            .await
            .context("the peer did not start in time")??
            .context("the peer exited before it was ready")?;
        let hello: Value = serde_json::from_str(&first)
            .with_context(|| format!("unexpected first line from the peer: {first}"))?;
        let id = hello["id"].as_str().context("peer id")?.to_owned();
        let port = hello["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .context("peer port")?;
        Ok(PeerProcess {
            process,
            id,
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        })
    }
}

/// Runs the P2P benchmark; returns `{bench, options, runs, summary}`.
pub async fn run_p2p(opts: P2pBenchOptions) -> anyhow::Result<Value> {
    let hub = Hub::start(crate::hub::bench_hub_config(
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        "sqlite::memory:".into(),
    ))
    .await
    .context("starting the in-process hub")?;
    let outcome = async {
        let peer = PeerProcess::start(&opts.peer, &hub.ws_url()).await?;
        let result = drive(&opts, &hub.ws_url(), &peer).await;
        peer.process.stop(Duration::from_secs(10)).await;
        result
    }
    .await;
    if let Err(e) = hub.shutdown().await {
        tracing::warn!(error = %e, "hub shutdown");
    }
    let runs = outcome?;
    Ok(json!({
        "bench": "p2p",
        "options": {
            "peer": opts.peer.0.display(),
            "scenarios": opts.scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
            "duration_s": opts.duration.as_secs_f64(),
            "warmup_s": opts.warmup.as_secs_f64(),
            "message_size": opts.message_size,
            "bulk_size": opts.bulk_size,
            "in_flight": opts.in_flight,
            "bulk_in_flight": opts.bulk_in_flight,
            "fresh_in_flight": opts.fresh_in_flight,
            "request_in_flight": opts.request_in_flight,
        },
        "machine": sys::machine_load(),
        "summary": summarize(&runs),
        "runs": runs,
    }))
}

async fn drive(
    opts: &P2pBenchOptions,
    hub_url: &str,
    peer: &PeerProcess,
) -> anyhow::Result<Vec<Value>> {
    let agent = Agent::builder()
        .hub(hub_url)
        .port(0)
        .configure(|c| c.bind_ip = Ipv4Addr::LOCALHOST.into())
        .connect()
        .await
        .context("starting the driver agent")?;
    let mut runs = Vec::new();
    for _ in 0..opts.repeat.max(1) {
        let mut figures = Map::new();
        let mut run = Map::new();
        for scenario in &opts.scenarios {
            let (tally, elapsed, cores) = scenario_run(opts, *scenario, &agent, peer).await?;
            let name = scenario.name();
            let size = match scenario {
                P2pScenario::Bulk => opts.bulk_size,
                _ => opts.message_size,
            };
            let mut j = tally.json(elapsed);
            j["payload_bytes"] = json!(size);
            j["driver_cpu_cores"] = cores.0;
            j["peer_cpu_cores"] = cores.1;
            let key = name.replace('-', "_");
            figures.insert(format!("{key}_per_s"), json!(rate(tally.ok, elapsed)));
            if *scenario == P2pScenario::Bulk {
                let mb = tally.ok as f64 * size as f64 / 1e6 / elapsed.as_secs_f64();
                j["payload_mb_per_s"] = json!(round1(mb));
                figures.insert("bulk_mb_per_s".into(), json!(round1(mb)));
            }
            if tally.latency.count() > 0 {
                figures.insert(
                    format!("{key}_p50_us"),
                    json!(tally.latency.quantile_us(0.5)),
                );
                figures.insert(
                    format!("{key}_p99_us"),
                    json!(tally.latency.quantile_us(0.99)),
                );
            }
            let failed: u64 = tally.errors.values().sum();
            if failed > 0 {
                figures.insert(format!("{key}_errors"), json!(failed));
            }
            run.insert(name.to_owned(), j);
        }
        run.insert("figures".into(), Value::Object(figures));
        runs.push(Value::Object(run));
    }
    let _ = agent.disconnect().await;
    Ok(runs)
}

/// What the workers of one scenario measured.
#[derive(Default)]
struct Tally {
    latency: Latency,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn json(&self, elapsed: Duration) -> Value {
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "seconds": elapsed.as_secs_f64(),
            "ok_per_s": rate(self.ok, elapsed),
            "latency": self.latency.summary(),
        })
    }
}

async fn scenario_run(
    opts: &P2pBenchOptions,
    scenario: P2pScenario,
    agent: &Agent,
    peer: &PeerProcess,
) -> anyhow::Result<(Tally, Duration, (Value, Value))> {
    let text = |n: usize| -> String {
        // Printable and not JSON, so the receiver's JSON attempt fails at the first byte.
        (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
    };
    let addr = peer.addr.to_string();
    let small = Value::String(text(opts.message_size));
    let window = Window {
        warm_end: Instant::now() + opts.warmup,
        deadline: Instant::now() + opts.warmup + opts.duration,
    };
    let tasks = match scenario {
        P2pScenario::Messages | P2pScenario::Bulk => {
            let (payload, workers) = if scenario == P2pScenario::Bulk {
                (Value::String(text(opts.bulk_size)), opts.bulk_in_flight)
            } else {
                (small, opts.in_flight)
            };
            spawn_workers(workers, window, {
                let agent = agent.clone();
                move || {
                    let (agent, addr, payload) = (agent.clone(), addr.clone(), payload.clone());
                    async move {
                        agent.send_direct(&addr, MESSAGE_TYPE, payload).await?;
                        Ok(())
                    }
                }
            })
        }
        P2pScenario::Fresh | P2pScenario::FreshV21 => {
            let plaintext: Arc<[u8]> = text(opts.message_size).into_bytes().into();
            let addr = peer.addr;
            let auth = if scenario == P2pScenario::FreshV21 {
                let record = agent
                    .lookup(&peer.id)
                    .await
                    .context("looking up the peer")?;
                let key = record
                    .identity
                    .context("the hub vouches for no identity of the peer")?;
                let key = IdentityKey::from_b64(&key).context("the peer's identity key")?;
                Some(Arc::new((Identity::generate(&mut rand::thread_rng()), key)))
            } else {
                None
            };
            spawn_workers(opts.fresh_in_flight, window, move || {
                let (plaintext, auth) = (plaintext.clone(), auth.clone());
                async move { fresh_message(addr, &plaintext, auth.as_deref()).await }
            })
        }
        P2pScenario::Request | P2pScenario::RequestPipelined => {
            let workers = if scenario == P2pScenario::Request {
                1
            } else {
                opts.request_in_flight
            };
            let payload = json!({ "data": small });
            let id = peer.id.clone();
            spawn_workers(workers, window, {
                let agent = agent.clone();
                move || {
                    let (agent, id, payload) = (agent.clone(), id.clone(), payload.clone());
                    async move {
                        let reply = agent.request(&id, REQUEST_TYPE, payload, None).await?;
                        if reply.get("data").is_none() {
                            bail!("response without data");
                        }
                        Ok(())
                    }
                }
            })
        }
    };
    let pid = peer.process.pid();
    tokio::time::sleep_until(window.warm_end).await;
    let before = (ProcSample::current(), pid.and_then(ProcSample::read));
    tokio::time::sleep_until(window.deadline).await;
    let after = (ProcSample::current(), pid.and_then(ProcSample::read));
    let mut tally = Tally::default();
    for t in tasks {
        let t = t.await?;
        tally.latency.merge(&t.latency);
        tally.ok += t.ok;
        for (k, v) in t.errors {
            *tally.errors.entry(k).or_default() += v;
        }
    }
    let cores = (
        sys::cores_used(Some(before.0), Some(after.0), opts.duration),
        sys::cores_used(before.1, after.1, opts.duration),
    );
    Ok((tally, opts.duration, cores))
}

#[derive(Clone, Copy)]
struct Window {
    warm_end: Instant,
    deadline: Instant,
}

/// `workers` closed loops of `op` until the window ends; operations that start during the
/// warm-up are not recorded.
fn spawn_workers<F, Fut>(
    workers: usize,
    window: Window,
    op: F,
) -> Vec<tokio::task::JoinHandle<Tally>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    (0..workers.max(1))
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let started = Instant::now();
                    if started >= window.deadline {
                        break;
                    }
                    let result = op().await;
                    if started < window.warm_end {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            tally.latency.record(started.elapsed());
                            tally.ok += 1;
                        }
                        Err(e) => {
                            let mut msg = e.to_string();
                            msg.truncate(120);
                            *tally.errors.entry(msg).or_default() += 1;
                        }
                    }
                }
                tally
            })
        })
        .collect()
}

/// The original's pattern: connect, handshake, one message, wait for its ack, close. With
/// `auth` (our identity, the peer's key), the 2.1 handshake instead of 2.0.
async fn fresh_message(
    addr: SocketAddr,
    plaintext: &[u8],
    auth: Option<&(Identity, IdentityKey)>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut session, hello) = match auth {
        None => Initiator::new(FRESH_FROM, &mut rand::thread_rng()),
        Some((me, peer)) => Initiator::new_authenticated(
            me,
            PeerExpectation {
                identity: Some(*peer),
                require_authenticated: true,
            },
            &mut rand::thread_rng(),
        ),
    };
    stream.write_all(&hello.encode()).await?;
    let mut decoder = LineDecoder::new(FRESH_MAX_LINE);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the peer closed the connection before the ack");
        }
        decoder.push(&buf[..n]);
        let mut outgoing = Vec::new();
        while let Some(line) = decoder.next_line()? {
            match session.handle_line(line)? {
                InitiatorEvent::Established => {
                    if let Some(proof) = session.take_auth_frame() {
                        proof.encode_into(&mut outgoing);
                    }
                    let frame = session.seal_plaintext(
                        MESSAGE_TYPE,
                        plaintext,
                        Some(Value::String("fresh".into())),
                        &mut rand::thread_rng(),
                    )?;
                    frame.encode_into(&mut outgoing);
                }
                InitiatorEvent::Acked(_) => return Ok(()),
                _ => {}
            }
        }
        if !outgoing.is_empty() {
            stream.write_all(&outgoing).await?;
        }
    }
}

/// What `p2p-peer` runs.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The hub to register with (the driver's in-process hub).
    pub hub: String,
}

/// The second process of the P2P bench: an agent on 127.0.0.1 that acks everything and
/// answers `bench.req` requests with `{"data": <the request's data>}`. Prints
/// `{"id","port"}` on stdout once registered; leaves when stdin closes or on a signal.
pub async fn run_peer(opts: PeerOptions) -> anyhow::Result<()> {
    let agent = Agent::builder()
        .hub(&opts.hub)
        .port(0)
        .inbox_capacity(4096)
        // `fresh` makes thousands of handshakes a second from one address on purpose.
        .handshakes_per_ip_per_second(0)
        .configure(|c| c.bind_ip = Ipv4Addr::LOCALHOST.into())
        .connect()
        .await
        .context("starting the peer agent")?;
    println!(
        "{}",
        json!({ "id": agent.id(), "port": agent.local_port(), "pid": std::process::id() })
    );
    // One stop future for the whole run: recreating it per message would start a new
    // blocking stdin read and a new signal registration for every message received.
    let stop = async {
        tokio::select! {
            _ = stdin_closed() => {}
            _ = m2m_hub::shutdown_signal() => {}
        }
    };
    tokio::pin!(stop);
    loop {
        let message = tokio::select! {
            m = agent.next_message() => m,
            _ = &mut stop => None,
        };
        let Some(message) = message else { break };
        if message.message_type == REQUEST_TYPE {
            let agent = agent.clone();
            tokio::spawn(async move {
                let data = message.payload.get("data").cloned().unwrap_or(Value::Null);
                if let Err(e) = agent.respond(&message, json!({ "data": data })).await {
                    tracing::warn!(error = %e, "respond failed");
                }
            });
        }
    }
    let _ = agent.disconnect().await;
    Ok(())
}

/// Resolves when standard input reaches its end (the parent closed the pipe or exited).
pub(crate) async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
