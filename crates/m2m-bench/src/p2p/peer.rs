//! The second process: how it is started ([`PeerCommand`]), what it runs ([`run_peer`]: an
//! agent that answers `bench.req` and acks everything else), and how the driver waits
//! for it to be ready.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context;
use m2m_agent::{Agent, Value};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::REQUEST_TYPE;
use crate::defaults::PEER_READY_TIMEOUT;
use crate::sys::{ChildProcess, CommandLine};

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

/// The peer as the driver sees it.
pub(super) struct PeerProcess {
    pub(super) process: ChildProcess,
    pub(super) id: String,
    pub(super) addr: SocketAddr,
}

impl PeerProcess {
    pub(super) async fn start(cmd: &PeerCommand, hub_url: &str) -> anyhow::Result<Self> {
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
async fn stdin_closed() {
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
