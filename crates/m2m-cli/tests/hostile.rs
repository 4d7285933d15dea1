//! Hostile peers against the real binary, `m2m listen --echo` (issue 13, failures 5 and 6):
//! the attacks that broke it, sized for a 2-core machine but past the bound the agent broke
//! before, with the agent's memory read from `/proc/PID/status` and a legitimate
//! `m2m request` made during the attack. Attackers connect from 127.0.0.2 and up (all of
//! 127/8 is loopback); the legitimate requester from 127.0.0.1.

mod common;

use std::net::SocketAddr;

use common::Hub;
use m2m_proto::Initiator;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// Raises this process's descriptor limit (children inherit it) to `want`: the attack holds
/// more sockets than a default `ulimit -n` of 1024 allows. `prlimit` (util-linux) does it,
/// since the workspace forbids `unsafe` (and so a direct `setrlimit`).
fn raise_fd_limit(want: u64) {
    let soft = || -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_owned();
        let soft = line.split_whitespace().nth(3).unwrap();
        if soft == "unlimited" {
            u64::MAX
        } else {
            soft.parse().unwrap()
        }
    };
    if soft() >= want {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(
        status.success() && soft() >= want,
        "could not raise the descriptor limit to {want} (the hard limit is lower?)"
    );
}

/// A field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// The P2P address `m2m listen` printed.
fn p2p_address(connected: &Value) -> SocketAddr {
    let port: u16 = s(&connected["address"])
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A connection from `source` that sent a 2.0 handshake and read the agent's answer:
/// `Some` if it was answered (it holds a slot), `None` if the agent closed it.
async fn handshaken(source: [u8; 4], to: SocketAddr) -> Option<BufReader<TcpStream>> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let mut stream = BufReader::new(socket.connect(to).await.ok()?);
    let (_, hello) = Initiator::new("attacker", &mut rand::thread_rng());
    stream.get_mut().write_all(&hello.encode()).await.ok()?;
    let mut line = String::new();
    match stream.read_line(&mut line).await {
        Ok(n) if n > 0 && line.contains("handshake_ack") => Some(stream),
        _ => None,
    }
}

/// Failure 5: 1,100 connections, each a cheap 2.0 handshake and a ping, from nine
/// addresses — more than the 1,024 slots. Before, they held every slot and the request
/// below was refused; now the newcomer evicts the least useful holder.
#[test]
fn a_connection_flood_does_not_lock_out_a_request() {
    raise_fd_limit(4096);
    let hub = Hub::start();
    let (listener, connected) = hub.listen(&["--echo"]);
    let target = p2p_address(&connected);
    let rt = runtime();
    let held = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..1100u32 {
            let source = [127, 0, 0, 2 + (i % 9) as u8];
            tasks.spawn(async move {
                let mut conn = handshaken(source, target).await?;
                conn.get_mut()
                    .write_all(b"{\"type\":\"ping\"}\n")
                    .await
                    .ok()?;
                let mut line = String::new();
                conn.read_line(&mut line).await.ok()?;
                line.contains("pong").then_some(conn)
            });
        }
        let mut held = Vec::new();
        while let Some(done) = tasks.join_next().await {
            if let Some(conn) = done.unwrap() {
                held.push(conn);
            }
        }
        held
    });
    // The agent is full (the last comers evicted ones still in their handshake).
    assert!(held.len() >= 1000, "{} connections handshook", held.len());
    let response = hub
        .run(&[
            "request",
            s(&connected["id"]),
            "ask",
            r#"{"q": "still there?"}"#,
        ])
        .ok_json();
    assert_eq!(response["q"], "still there?");
    drop(held);
    drop(listener);
}

/// Failure 6: 512 connections from eight addresses, each holding a 1.04 MB line it never
/// finishes. Before, each cost the agent 1-2 MiB (0.5-1 GiB here); now the lines share the
/// 128 MiB budget, the connections over it are closed with `overloaded`, and the agent's
/// peak memory stays far below what the lines would take.
#[test]
fn unfinished_lines_do_not_take_the_agent_s_memory() {
    raise_fd_limit(4096);
    let hub = Hub::start();
    let (listener, connected) = hub.listen(&["--echo"]);
    let pid = listener.child.id();
    let target = p2p_address(&connected);
    let before = status_kib(pid, "VmRSS");
    let rt = runtime();
    static LINE: [u8; 1_040_000] = [b'x'; 1_040_000];
    let mut conns = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..512u32 {
            let source = [127, 0, 0, 2 + (i % 8) as u8];
            tasks.spawn(async move {
                let mut conn = handshaken(source, target).await?;
                // Refused connections are closed mid-write: that is their answer.
                let _ = conn.get_mut().write_all(&LINE).await;
                Some(conn)
            });
        }
        let mut conns = Vec::new();
        while let Some(done) = tasks.join_next().await {
            conns.extend(done.unwrap());
        }
        conns
    });
    // While the lines are held, a request is answered (it needs no budget).
    let response = hub
        .run(&["request", s(&connected["id"]), "ask", r#"{"q": "memory?"}"#])
        .ok_json();
    assert_eq!(response["q"], "memory?");
    // The holders end their lines (each gets `invalid_message`: proof that the agent read
    // it all), the refused read `overloaded`.
    let (held, overloaded) = rt.block_on(async {
        let (mut held, mut overloaded) = (0, 0);
        for conn in &mut conns {
            let _ = conn.get_mut().write_all(b"\n").await;
            let mut line = String::new();
            let _ = conn.read_line(&mut line).await;
            match serde_json::from_str::<Value>(&line) {
                Ok(v) if v == json!({"error": "invalid_message"}) => held += 1,
                Ok(v) if v == json!({"error": "overloaded"}) => overloaded += 1,
                _ => {}
            }
        }
        (held, overloaded)
    });
    let peak = status_kib(pid, "VmHWM");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "agent RSS {before} KiB before, peak {peak} KiB: {held} lines held, {overloaded} refused"
    );
    assert!(
        overloaded > 0 && held > 0,
        "{held} held, {overloaded} refused"
    );
    // The budget (128 MiB) plus a 64 KiB read buffer per connection (32 MiB), with room
    // for the allocator; the lines themselves are 508 MiB.
    assert!(
        grown_mib < 300,
        "agent grew by {grown_mib} MiB ({held} lines held, {overloaded} refused)"
    );
    drop(conns);
    drop(listener);
}
