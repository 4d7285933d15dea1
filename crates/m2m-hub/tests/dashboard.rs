//! The web dashboard's HTTP side against an in-process hub: the page and its policy, the
//! query API, the event stream (a change is announced, the stream cap holds, shutdown ends
//! open streams), `/metrics`, and `dashboard: false`. The browser side is
//! crates/m2m-cli/tests/dashboard_browser.rs.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{http, Client};
use m2m_hub::{Hub, HubConfig};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only keeps a broken build from hanging; nothing asserts on time.
const PATIENCE: Duration = Duration::from_secs(20);

/// An open `GET /dashboard/events`, read as raw bytes.
struct Stream {
    tcp: TcpStream,
    seen: String,
}

impl Stream {
    async fn open(addr: SocketAddr) -> Stream {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req =
            "GET /dashboard/events HTTP/1.1\r\nHost: hub.test\r\nAccept: text/event-stream\r\n\r\n";
        tcp.write_all(req.as_bytes()).await.unwrap();
        Stream {
            tcp,
            seen: String::new(),
        }
    }

    /// Reads until `what` has been received; returns everything so far.
    async fn until(&mut self, what: &str) -> &str {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(PATIENCE, async {
            while !self.seen.contains(what) {
                let n = self.tcp.read(&mut buf).await.unwrap();
                assert!(n > 0, "stream closed before {what:?}: {}", self.seen);
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("never received {what:?}: {}", self.seen));
        &self.seen
    }

    /// Reads until the server closes the connection.
    async fn until_closed(&mut self) {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(PATIENCE, async {
            while self.tcp.read(&mut buf).await.unwrap_or(0) > 0 {}
        })
        .await
        .expect("the stream was not ended");
    }
}

async fn get(addr: SocketAddr, path: &str) -> common::HttpReply {
    http(addr, "GET", path).await
}

/// Whether HTML text has an ` onsomething=` attribute.
fn has_handler_attribute(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_policy_and_answers_queries() {
    let hub = Hub::start(HubConfig::in_memory()).await.unwrap();
    let addr = hub.local_addr();

    let page = http(addr, "GET", "/dashboard").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    for part in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        page.header("access-control-allow-origin"),
        None,
        "the dashboard is same-origin only"
    );
    assert!(
        !page.body.contains("<script>") && !has_handler_attribute(&page.body),
        "no inline script or handlers in the page"
    );
    assert!(page
        .body
        .contains(r#"<script src="/dashboard/app.js" defer></script>"#));
    let js = http(addr, "GET", "/dashboard/app.js").await;
    assert_eq!(js.status, 200);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(
        !js.body.contains("innerHTML"),
        "the script never writes HTML"
    );
    assert_eq!(http(addr, "GET", "/dashboard/app.css").await.status, 200);

    let mut a = Client::connect(&hub.ws_url()).await;
    let alpha = a.register(4001, &["translate", "chat"]).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    let beta = b.register(4002, &["chat"]).await;
    let r = b
        .req(json!({"action":"status","id":beta,"status":"busy","metadata":{"name":"<b>beta</b>"}}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");

    let all = http(addr, "GET", "/dashboard/api/agents").await.json();
    assert_eq!(all["total"], 2);
    // Online first, then agent-chosen statuses.
    assert_eq!(all["agents"][0]["id"], alpha.as_str());
    assert_eq!(all["agents"][1]["status"], "busy");
    assert_eq!(all["agents"][1]["name"], "<b>beta</b>");
    assert_eq!(all["agents"][0]["reachability"], "loopback");
    assert_eq!(all["agents"][0]["verified"], false);
    let translate = get(addr, "/dashboard/api/agents?capability=translate")
        .await
        .json();
    assert_eq!(
        (
            translate["total"].clone(),
            translate["agents"][0]["id"].clone()
        ),
        (json!(1), json!(alpha))
    );
    assert_eq!(
        get(addr, "/dashboard/api/agents?q=%3Cb%3E").await.json()["total"],
        1
    );
    assert_eq!(
        get(addr, "/dashboard/api/agents?status=online")
            .await
            .json()["total"],
        1
    );
    assert_eq!(
        get(addr, "/dashboard/api/agents?offset=1&limit=1")
            .await
            .json()["agents"][0]["id"],
        beta.as_str()
    );
    assert_eq!(get(addr, "/dashboard/api/agents?limit=x").await.status, 400);
    let long = format!("/dashboard/api/agents?q={}", "x".repeat(300));
    assert_eq!(get(addr, &long).await.status, 400);

    let detail = get(addr, &format!("/dashboard/api/agents/{beta}"))
        .await
        .json();
    let looked_up = b.req(json!({"action":"lookup","id":beta})).await;
    assert_eq!(
        detail["record"], looked_up["agent"],
        "the record as lookup returns it"
    );
    assert_eq!(
        detail["fingerprint"],
        serde_json::Value::Null,
        "a 2.0 agent has none"
    );
    assert_eq!(get(addr, "/dashboard/api/agents/nope").await.status, 404);
    assert_eq!(
        get(addr, &format!("/dashboard/api/agents/{}", "0".repeat(32)))
            .await
            .status,
        404
    );

    let history = get(addr, "/dashboard/api/history").await.json();
    assert_eq!(history["intervalMs"], 1000);
    assert!(history["points"].is_array());
    let stats = get(addr, "/dashboard/api/stats").await.json();
    assert_eq!(
        (stats["online"].clone(), stats["other"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(stats["connections"], 2);
    // The relay is on by default: its figure is there (nothing relayed yet).
    assert_eq!(stats["relayBytesPerSec"], json!(0.0));

    let metrics = get(addr, "/metrics").await.body;
    assert_eq!(metric(&metrics, "m2m_hub_dashboard_streams_open"), 0);
    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_announces_changes_holds_its_cap_and_ends_at_shutdown() {
    let hub = Hub::start(HubConfig::in_memory()).await.unwrap();
    let addr = hub.local_addr();
    let mut first = Stream::open(addr).await;
    let head = first.until("event: stats\ndata: ").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head
        .to_ascii_lowercase()
        .contains("content-type: text/event-stream"));
    assert!(head.contains("retry: 1000"));

    // A registration is announced (the sampler looks for changes every 200 ms).
    let mut c = Client::connect(&hub.ws_url()).await;
    c.register(4001, &["chat"]).await;
    first.until("event: changed\ndata: {\"generation\":").await;
    first.until("\"online\":1").await;

    // Streams up to the cap are served; the next one gets 503.
    let mut open = vec![first];
    let refused = loop {
        assert!(open.len() < 1000, "no stream cap");
        let mut s = Stream::open(addr).await;
        let head = s.until("\r\n").await.to_owned();
        if head.starts_with("HTTP/1.1 503") {
            s.until("too_many_dashboards").await;
            break s;
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        s.until("event: stats").await;
        open.push(s);
    };
    assert!(refused.seen.to_ascii_lowercase().contains("retry-after: 5"));
    let metrics = http(addr, "GET", "/metrics").await.body;
    assert_eq!(
        metric(&metrics, "m2m_hub_dashboard_streams_open"),
        open.len() as u64
    );
    assert_eq!(
        metric(&metrics, "m2m_hub_dashboard_streams_refused_total"),
        1
    );
    assert!(metric(&metrics, "m2m_hub_dashboard_events_total") > 0);

    // A closed stream frees its slot.
    drop(open.pop());
    common::eventually("a closed stream's slot is free", || async {
        let m = http(addr, "GET", "/metrics").await.body;
        metric(&m, "m2m_hub_dashboard_streams_open") == open.len() as u64
    })
    .await;

    // Shutdown ends the streams that are still open (graceful shutdown waits for them).
    c.close().await;
    let shutdown = tokio::spawn(hub.shutdown());
    for s in &mut open {
        s.until_closed().await;
    }
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("shutdown finished")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switched_off_there_is_no_dashboard() {
    let hub = Hub::start(HubConfig {
        dashboard: false,
        ..HubConfig::in_memory()
    })
    .await
    .unwrap();
    let addr = hub.local_addr();
    for path in [
        "/dashboard",
        "/dashboard/app.js",
        "/dashboard/events",
        "/dashboard/api/agents",
    ] {
        let r = http(addr, "GET", path).await;
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.json()["error"],
            "Not found",
            "the hub's own JSON 404 for {path}"
        );
    }
    let metrics = http(addr, "GET", "/metrics").await.body;
    assert!(!metrics.contains("m2m_hub_dashboard_"));
    assert_eq!(http(addr, "GET", "/agents").await.json()["total"], 0);
    hub.shutdown().await.unwrap();
}
