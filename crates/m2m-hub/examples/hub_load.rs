//! Load generator for the hub's design targets (heartbeats, lookups, discover, register per
//! second). Runs a hub in-process (the clients share its cores, so the numbers are a
//! floor) and drives it over real WebSockets.
//!
//! ```text
//! cargo run --release -p m2m-hub --example hub_load -- [connections] [agents] [seconds] [database]
//! ```
//! Defaults: 200 connections, 10000 agents, 3 s per phase, `sqlite::memory:`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use m2m_hub::{Hub, HubConfig};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Requests in flight per connection.
const WINDOW: usize = 16;

#[derive(Clone, Copy, Debug)]
enum Phase {
    Register,
    Heartbeat,
    Lookup,
    Discover,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let conns: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let agents: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let secs: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let mut cfg = HubConfig::in_memory();
    if let Some(db) = args.get(4) {
        cfg.database = db.clone();
    }
    cfg.limits.requests_per_second = 0;
    cfg.limits.max_agents_per_connection = usize::MAX;
    let hub = Hub::start(cfg).await.unwrap();
    let url = hub.ws_url();

    let mut clients = Vec::new();
    for _ in 0..conns {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        // The 2.1 challenge comes first; this load uses 2.0 registers and ignores it.
        let _challenge = ws.next().await.unwrap().unwrap();
        clients.push(ws);
    }
    // Fill the registry: agents spread over the connections.
    let started = Instant::now();
    let per = agents.div_ceil(conns);
    let mut tasks = Vec::new();
    for mut ws in clients {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per {
                let req = json!({"action":"register","address":format!("h:{}", 1000 + i),
                    "capabilities":[format!("cap{}", i % 10)]});
                ws.send(Message::Text(req.to_string().into()))
                    .await
                    .unwrap();
                let reply: Value = match ws.next().await.unwrap().unwrap() {
                    Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
                    other => panic!("{other:?}"),
                };
                ids.push(reply["id"].as_str().unwrap().to_owned());
            }
            (ws, ids)
        }));
    }
    let mut clients = Vec::new();
    let mut all_ids = Vec::new();
    for t in tasks {
        let (ws, ids) = t.await.unwrap();
        all_ids.extend(ids.clone());
        clients.push((ws, ids));
    }
    let n = all_ids.len();
    println!(
        "registered {n} agents on {conns} connections in {:.2?} ({:.0}/s, unpipelined)",
        started.elapsed(),
        n as f64 / started.elapsed().as_secs_f64()
    );
    let all_ids = Arc::new(all_ids);

    for phase in [
        Phase::Heartbeat,
        Phase::Lookup,
        Phase::Discover,
        Phase::Register,
    ] {
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for (i, (mut ws, ids)) in clients.into_iter().enumerate() {
            let done = done.clone();
            let all = all_ids.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = i;
                let request = |k: usize| -> String {
                    match phase {
                        Phase::Heartbeat => json!({"action":"heartbeat","id":ids[k % ids.len()]}),
                        Phase::Lookup => {
                            json!({"action":"lookup","id":all[(k * 7919) % all.len()]})
                        }
                        Phase::Discover => json!({"action":"discover","id":ids[0],"limit":20}),
                        Phase::Register => {
                            json!({"action":"register","address":"h:9","capabilities":["x"]})
                        }
                    }
                    .to_string()
                };
                for _ in 0..WINDOW {
                    k += 1;
                    ws.send(Message::Text(request(k).into())).await.unwrap();
                }
                let mut outstanding = WINDOW;
                while outstanding > 0 {
                    match ws.next().await.unwrap().unwrap() {
                        Message::Text(t) => {
                            debug_assert!(t.as_str().contains("\"ok\""), "{}", t.as_str());
                            outstanding -= 1;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => continue,
                    }
                    if Instant::now() < deadline {
                        k += 1;
                        ws.send(Message::Text(request(k).into())).await.unwrap();
                        outstanding += 1;
                    }
                }
                (ws, ids)
            }));
        }
        let started = Instant::now();
        clients = Vec::new();
        for t in tasks {
            clients.push(t.await.unwrap());
        }
        let total = done.load(Ordering::Relaxed);
        println!(
            "{phase:?}: {total} in {:.2?} = {:.0}/s",
            started.elapsed(),
            total as f64 / started.elapsed().as_secs_f64()
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status
            .lines()
            .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        {
            println!("{line}");
        }
    }
    drop(clients);
    hub.shutdown().await.unwrap();
}
