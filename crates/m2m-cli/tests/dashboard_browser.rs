//! The hub's web dashboard in a real browser: Debian's headless Chromium driven by
//! `tests/browser/dashboard.mjs` (playwright-core), against a real hub with real agents.
//! The script asks for each change (an agent joins, changes status, leaves), this test
//! makes it with the agent SDK, and the script waits for the page to show it. It ends with
//! a JSON line; a browser that does not launch fails the test, never skips it.
//!
//! Timeouts here only keep a broken build from hanging the suite; the figures the script
//! prints (time to interactive, time for a change to show) are printed, not asserted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use m2m_agent::Agent;
use m2m_hub::{Hub, HubConfig, RunningHub};
use serde_json::{json, Map, Value};
use tokio_tungstenite::tungstenite::Message;

/// The script's folder (package.json, lockfile, node_modules from `npm ci`).
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/browser")
}

fn meta(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect()
}

async fn agent(hub: &RunningHub, caps: &[&str], metadata: Map<String, Value>) -> Agent {
    Agent::builder()
        .hub(&hub.ws_url())
        .capabilities(caps.iter().copied())
        .metadata(metadata)
        .connect()
        .await
        .expect("agent connects")
}

/// `n` agents over raw WebSockets, 16 to a connection (the hub's per-connection cap): many
/// agents without a P2P listener each. The sockets are returned to keep them registered.
async fn bulk_agents(
    hub: &RunningHub,
    n: usize,
) -> Vec<tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>>
{
    let mut sockets = Vec::new();
    let mut left = n;
    while left > 0 {
        let batch = left.min(16);
        let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url())
            .await
            .unwrap();
        for i in 0..batch {
            let reg = json!({
                "action": "register",
                "address": "127.0.0.1:9",
                "capabilities": ["bulk", format!("g{}", i % 8)],
                "metadata": {"name": format!("bulk-{}-{i}", sockets.len())},
            });
            ws.send(Message::text(reg.to_string())).await.unwrap();
        }
        let mut ok = 0;
        while ok < batch {
            let Some(Ok(Message::Text(t))) = ws.next().await else {
                panic!("bulk registration closed");
            };
            if t.contains("\"id\"") {
                ok += 1;
            }
        }
        sockets.push(ws);
        left -= batch;
    }
    sockets
}

/// Runs the browser script against a hub holding `bulk` extra agents; returns its result.
async fn run_browser(bulk: usize) -> Value {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (.ci/run does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: apt-get install chromium (.ci/run does)"
    );
    // Every agent of this test comes from 127.0.0.1: the per-source-IP shares would refuse
    // the 10k bulk registrations (they are tested in m2m-hub's tests/hardening.rs).
    let mut config = HubConfig::in_memory();
    config.limits.max_connections_per_ip = 0;
    config.limits.registrations_per_hour = 0;
    let hub = Hub::start(config).await.unwrap();
    let _alpha = agent(
        &hub,
        &["translate", "chat"],
        meta(&[("name", "Alpha Translator")]),
    )
    .await;
    let _beta = agent(&hub, &["chat"], meta(&[("name", "beta")])).await;
    let _gamma = agent(&hub, &["translate"], meta(&[("name", "gamma")])).await;
    let xss = agent(
        &hub,
        &[
            "<img src=x onerror=\"window.__pwned=true;alert(1)\">",
            "<script>alert(2)</script>",
        ],
        meta(&[
            ("name", "<script>window.__pwned=true</script>"),
            ("homepage", "javascript:window.__pwned=true;alert(3)"),
            (
                "bio",
                "<a href=\"javascript:alert(4)\">click</a><img src=/x onerror=alert(5)>",
            ),
        ]),
    )
    .await;
    let _bulk = bulk_agents(&hub, bulk).await;
    let total = 4 + bulk;

    let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{bulk}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let expect = json!({
        "total": total,
        "xssId": xss.id(),
        "capability": "translate",
        "capabilityCount": 2,
        "name": "alpha translator",
    });
    let mut child = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .current_dir(&dir)
        .env("HUB", hub.http_url())
        .env("OUT_DIR", &out_dir)
        .env("EXPECT", expect.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (apt-get install nodejs)");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut joiner: Option<Agent> = None;
    let result = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("the browser script went quiet")
            .expect("the browser script ended without a result");
        println!("browser: {line}");
        let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let reply = match msg["need"].as_str() {
            Some("join") => {
                let a = agent(&hub, &["joiner"], meta(&[("name", "joiner")])).await;
                let id = a.id();
                joiner = Some(a);
                json!({"done": "join", "id": id})
            }
            Some("status") => {
                let a = joiner.as_ref().expect("joined first");
                a.update_status("busy", meta(&[("name", "joiner")]))
                    .await
                    .unwrap();
                json!({"done": "status"})
            }
            Some("leave") => {
                let a = joiner.take().expect("joined first");
                a.disconnect().await.unwrap();
                json!({"done": "leave"})
            }
            _ if msg.get("result").is_some() => break msg,
            _ => continue,
        };
        writeln!(stdin, "{reply}").unwrap();
        stdin.flush().unwrap();
    };
    let status = child.wait().unwrap();
    assert_eq!(result["result"], "ok", "browser script: {result}");
    assert!(status.success(), "node exited {status}");
    let shot = PathBuf::from(result["screenshot"].as_str().unwrap());
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "a PNG screenshot at {shot:?}"
    );
    hub.shutdown().await.unwrap();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_follows_searches_and_escapes_in_chromium() {
    let r = run_browser(0).await;
    println!(
        "dashboard with 4 agents: interactive {} ms (reloaded {} ms); join shown {} ms, status {} ms, leave {} ms",
        r["interactiveMs"], r["reloadInteractiveMs"], r["joinSeenMs"], r["statusSeenMs"], r["leaveSeenMs"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_with_ten_thousand_agents_in_chromium() {
    let r = run_browser(10_000).await;
    // docs/PERFORMANCE.md quotes these lines.
    println!(
        "dashboard with 10004 agents: interactive {} ms (first table {} ms; reloaded {} ms); join shown {} ms, status {} ms, leave {} ms",
        r["interactiveMs"], r["firstRenderMs"], r["reloadInteractiveMs"], r["joinSeenMs"], r["statusSeenMs"], r["leaveSeenMs"]
    );
}

/// `GET path` on a hub started by `m2m hub`, over a plain socket: the status code.
fn status_of(address: &str, path: &str) -> u16 {
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    reply.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn m2m_hub_serves_the_dashboard_unless_switched_off() {
    let hub = common::Hub::start();
    assert_eq!(status_of(&hub.address, "/dashboard"), 200);
    let off = common::Hub::start_with(&["--dashboard", "off"]);
    assert_eq!(status_of(&off.address, "/dashboard"), 404);
    assert_eq!(status_of(&off.address, "/dashboard/events"), 404);
    assert_eq!(status_of(&off.address, "/agents"), 200);
}
