//! The short commands: each does one thing, prints the result and leaves. None registers
//! at the hub — a query must not change what it queries — except `request` while it waits
//! for a 2.0 agent, which answers on a new connection to the requester's registered
//! address; it leaves the hub as soon as the answer is in. `ping` needs no hub at all.
//!
//! The original hub answers `discover`, `find`, `lookup` and `stats` on a WebSocket that
//! never registered (its handlers read no connection state), and so does ours; sends need
//! no hub at all once the address is known. So the same route works against both hubs.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use m2m_agent::{BroadcastOptions, BroadcastReport, Delivery, DiscoverOptions};
use m2m_proto::{Frame, LineDecoder};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{explain, oneshot_identity, with_agent, Join};
use crate::cli::{
    BroadcastArgs, DiscoverArgs, FindArgs, LookupArgs, OneShotArgs, PingArgs, RequestArgs,
    SendArgs, StatsArgs,
};
use crate::defaults::MAX_PING_REPLY;
use crate::exit::{self, Kind};
use crate::output::{self, Output};
use crate::payload;

/// How `request` registers when the peer needs a return path.
fn join(hub: &str, args: &OneShotArgs, identity: Option<&Path>) -> anyhow::Result<Join> {
    Ok(Join {
        hub: hub.to_owned(),
        port: args.port,
        address: args.public_address.clone(),
        identity: oneshot_identity(identity)?,
        register: true,
        ..Join::default()
    })
}

/// `m2m discover`.
pub async fn discover(
    hub: &str,
    identity: Option<&Path>,
    args: DiscoverArgs,
    out: Output,
) -> anyhow::Result<()> {
    let options = DiscoverOptions {
        capabilities: args.capabilities,
        status: args.status,
        limit: args.limit,
        offset: args.offset,
    };
    let peers = with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
        agent.discover(options).await.map_err(explain)
    })
    .await?;
    out.either(&peers, || output::peers_table(&peers))
}

/// `m2m find`.
pub async fn find(
    hub: &str,
    identity: Option<&Path>,
    args: FindArgs,
    out: Output,
) -> anyhow::Result<()> {
    let capability = args.capability;
    let agents = with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
        agent.find(&capability).await.map_err(explain)
    })
    .await?;
    out.either(&agents, || output::found_table(&agents))
}

/// `m2m lookup`.
pub async fn lookup(
    hub: &str,
    identity: Option<&Path>,
    args: LookupArgs,
    out: Output,
) -> anyhow::Result<()> {
    let id = args.agent_id;
    let record = with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
        agent.lookup(&id).await.map_err(explain)
    })
    .await?;
    out.either(&record, || output::record_text(&record))
}

/// `m2m send`.
pub async fn send(
    hub: &str,
    identity: Option<&Path>,
    args: SendArgs,
    out: Output,
) -> anyhow::Result<()> {
    let positionals = args.args();
    let (target, rest) = match &args.to_address {
        Some(address) => (Target::Address(address.clone()), &positionals[..]),
        None => match positionals.split_first() {
            Some((id, rest)) => (Target::Id(id.clone()), rest),
            None => return Err(exit::fail(Kind::Usage, "missing AGENT_ID and TYPE")),
        },
    };
    let (message_type, payload_arg) = match rest {
        [t] => (t.clone(), None),
        [t, p] => (t.clone(), Some(p.as_str())),
        [] => return Err(exit::fail(Kind::Usage, "missing the message TYPE")),
        _ => {
            return Err(exit::fail(
                Kind::Usage,
                format!(
                    "too many arguments: expected {}TYPE [PAYLOAD]",
                    if args.to_address.is_some() {
                        ""
                    } else {
                        "AGENT_ID "
                    }
                ),
            ))
        }
    };
    let payload = payload::from_arg(payload_arg)?;
    let target_text = target.to_string();
    // 2.1 peers learn who we are from the handshake; nobody needs to find us in the hub.
    let options = m2m_agent::SendOptions {
        queue: !args.no_queue,
        ttl: args.ttl,
    };
    let delivery: Delivery = with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
        match &target {
            Target::Id(id) => agent.send_with(id, &message_type, payload, options).await,
            Target::Address(a) => agent.send_direct(a, &message_type, payload).await,
        }
        .map_err(explain)
    })
    .await?;
    out.either(&delivery, || {
        if let Some(queued) = &delivery.queued {
            return format!(
                "Queued in the mailbox of {target_text} (messageId {}, kept until {}); it is \
                 delivered when the agent connects.",
                queued.message_id,
                output::time_text(queued.expires_at)
            );
        }
        let via = match delivery.route {
            m2m_agent::Route::Relay => " through the hub's relay",
            m2m_agent::Route::Direct => "",
            m2m_agent::Route::Mailbox => " queued in its mailbox",
        };
        format!(
            "Delivered to {target_text}{via} (correlationId {}).",
            delivery.correlation_id
        )
    })
}

enum Target {
    Id(String),
    Address(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Id(id) => write!(f, "agent {id}"),
            Target::Address(a) => write!(f, "{a}"),
        }
    }
}

/// `m2m request`.
pub async fn request(
    hub: &str,
    identity: Option<&Path>,
    args: RequestArgs,
    out: Output,
) -> anyhow::Result<()> {
    let payload = payload::from_arg(args.payload.as_deref())?;
    let (id, message_type, timeout) = (args.agent_id, args.message_type, args.timeout);
    // Ask the hub first, unregistered: a 2.1 peer the hub vouches for answers on our own
    // connection, so we need no address of our own; anyone else (a 2.0 agent, or any
    // agent on a 2.0 hub, which vouches for nobody) answers by looking us up, so then we
    // register until the answer is in.
    if args.queue {
        // Registered while it waits: the responder answers on the session or, when it cannot
        // reach us, through our mailbox, and both need our record.
        let response = with_agent(&join(hub, &args.agent, identity)?, |agent| async move {
            let options = m2m_agent::RequestOptions {
                queue: true,
                timeout: Some(timeout),
            };
            agent
                .request_with(&id, &message_type, payload, options)
                .await
                .map_err(|e| timed_out(e, &message_type, &id))
        })
        .await?;
        return out.json_value(&response);
    }
    let unregistered = {
        let (id, message_type, payload) = (id.clone(), message_type.clone(), payload.clone());
        with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
            let record = agent.lookup(&id).await.map_err(explain)?;
            if record.status == m2m_proto::hub::status::OFFLINE {
                return Err(explain(m2m_agent::AgentError::AgentOffline(id)));
            }
            if record.identity.is_none() {
                return Ok(None);
            }
            ask(&agent, &id, &message_type, payload, timeout)
                .await
                .map(Some)
        })
        .await?
    };
    let response = match unregistered {
        Some(response) => response,
        None => {
            with_agent(&join(hub, &args.agent, identity)?, |agent| async move {
                ask(&agent, &id, &message_type, payload, timeout).await
            })
            .await?
        }
    };
    out.json_value(&response)
}

/// One request, its timeout said the way the user gave it.
async fn ask(
    agent: &m2m_agent::Agent,
    id: &str,
    message_type: &str,
    payload: serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    agent
        .request(id, message_type, payload, Some(timeout))
        .await
        .map_err(|e| timed_out(e, message_type, id))
}

/// A request's error, its timeout said the way the user gave it.
fn timed_out(e: m2m_agent::AgentError, message_type: &str, id: &str) -> anyhow::Error {
    match e {
        m2m_agent::AgentError::Timeout { operation, after } if operation == "request" => {
            exit::fail(
                Kind::Timeout,
                format!(
                    "no {message_type}:response from agent {id} within {}",
                    humanize(after)
                ),
            )
        }
        other => explain(other),
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `m2m broadcast`.
pub async fn broadcast(
    hub: &str,
    identity: Option<&Path>,
    args: BroadcastArgs,
    out: Output,
) -> anyhow::Result<()> {
    let payload = payload::from_arg(args.payload.as_deref())?;
    let options = BroadcastOptions::new().capabilities(args.capabilities);
    let message_type = args.message_type;
    let report: BroadcastReport =
        with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
            agent
                .broadcast(&message_type, payload, options)
                .await
                .map_err(explain)
        })
        .await?;
    out.either(&report, || {
        let mut text = format!(
            "Delivered to {} of {} agent(s){}.\n",
            report.delivered,
            report.total,
            match report.relayed {
                0 => String::new(),
                n => format!(", {n} through the hub's relay"),
            }
        );
        for failure in &report.errors {
            text.push_str(&format!("  {}: {}\n", failure.agent, failure.error));
        }
        text
    })
}

/// `m2m stats`.
pub async fn stats(
    hub: &str,
    identity: Option<&Path>,
    _args: StatsArgs,
    out: Output,
) -> anyhow::Result<()> {
    let stats = with_agent(&Join::unregistered(hub, identity)?, |agent| async move {
        agent.stats().await.map_err(explain)
    })
    .await?;
    out.either(&stats, || output::stats_text(&stats))
}

/// `m2m ping`: a P2P `{"type":"ping"}` straight to the address; needs no hub.
pub async fn ping(args: PingArgs, out: Output) -> anyhow::Result<()> {
    let address = args.address;
    let rtt = tokio::time::timeout(args.timeout, ping_once(&address))
        .await
        .map_err(|_| {
            exit::fail(
                Kind::Timeout,
                format!("no pong from {address} within {}", humanize(args.timeout)),
            )
        })??;
    let rtt_ms = rtt.as_secs_f64() * 1000.0;
    out.either(
        &json!({"address": address, "pong": true, "rttMs": (rtt_ms * 1000.0).round() / 1000.0}),
        || format!("pong from {address} in {rtt_ms:.2} ms"),
    )
}

async fn ping_once(address: &str) -> anyhow::Result<Duration> {
    let mut stream = TcpStream::connect(address).await.map_err(|e| {
        exit::fail(
            Kind::Unreachable,
            format!("could not reach the agent at {address}: {e}"),
        )
    })?;
    let started = Instant::now();
    stream
        .write_all(&Frame::Ping.encode())
        .await
        .with_context(|| format!("could not send a ping to {address}"))?;
    let mut decoder = LineDecoder::new(MAX_PING_REPLY);
    let mut buf = [0u8; 1024];
    loop {
        match decoder.next_line() {
            Ok(Some(line)) => {
                return match Frame::parse(line) {
                    Ok(Frame::Pong) => Ok(started.elapsed()),
                    Ok(Frame::Error(e)) => {
                        Err(anyhow!("{address} answered the ping with an error: {e}"))
                    }
                    Ok(_) | Err(_) => Err(anyhow!(
                        "{address} did not answer like an M2M agent: {}",
                        String::from_utf8_lossy(line)
                            .chars()
                            .take(120)
                            .collect::<String>()
                    )),
                };
            }
            Ok(None) => {}
            Err(_) => bail!("{address} answered the ping with an over-long line"),
        }
        let n = stream
            .read(&mut buf)
            .await
            .with_context(|| format!("reading the pong from {address}"))?;
        if n == 0 {
            bail!("{address} closed the connection without answering the ping");
        }
        decoder.push(&buf[..n]);
    }
}
