//! The hub's resource bounds (docs/SECURITY.md "Hub limits"), one test per failure of
//! issue 13 that the hub side fixes: each holds against a hub configured with small limits
//! so that the attack stays small, and a legitimate client is still served meanwhile.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{config, eventually, http, Backend, Client, TestDb};
use futures_util::{SinkExt, StreamExt};
use m2m_hub::{Hub, HubConfig, RunningHub};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Bounds a test step: the failures this file covers showed as waits that never ended.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .unwrap_or_else(|_| panic!("not within 15 s: {what}"))
}

/// The value of `m2m_hub_refused_total{limit="…"}`.
async fn refused(hub: &RunningHub, limit: &str) -> u64 {
    let body = http(hub.local_addr(), "GET", "/metrics").await.body;
    let key = format!("m2m_hub_refused_total{{limit=\"{limit}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in /metrics"))
        .parse()
        .unwrap()
}

/// Everything the hub sends until it closes the connection.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    String::from_utf8_lossy(&raw).into_owned()
}

/// A legitimate client still registers and discovers.
async fn still_served(hub: &RunningHub) {
    let mut c = Client::connect(&hub.ws_url()).await;
    let id = c.register(4999, &["legit"]).await;
    let found = c
        .req(json!({"action":"discover","capabilities":["legit"],"correlationId":"d"}))
        .await;
    assert_eq!(found["status"], "ok", "{found}");
    assert!(found["agents"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["id"] == json!(id)));
    c.close().await;
}

async fn sqlite_hub(tune: impl FnOnce(&mut HubConfig)) -> (RunningHub, TestDb) {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.limits.registrations_per_hour = 0;
    tune(&mut cfg);
    (Hub::start(cfg).await.unwrap(), db)
}

/// Failure 1: a request head may not be large, slow or absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_heads_are_bounded_in_size_and_in_time() {
    let (hub, _db) = sqlite_hub(|cfg| {
        cfg.limits.header_timeout = Duration::from_millis(600);
        cfg.limits.first_byte_timeout = Duration::from_millis(200);
    })
    .await;
    let addr = hub.local_addr();

    // A head larger than max_header_bytes (16 KiB) is refused, not buffered to 400 KB.
    let mut big = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let reply = within("an oversized head is refused", read_until_closed(&mut big)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // Slowloris: a head that never completes is closed after header_timeout.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    within("a slow head is closed", read_until_closed(&mut slow)).await;

    // A connection that sends nothing is closed after first_byte_timeout.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    within(
        "a silent connection is closed",
        read_until_closed(&mut silent),
    )
    .await;

    // A kept-alive connection idling after its response is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let reply = within(
        "an idle kept-alive connection is closed",
        read_until_closed(&mut kept),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");

    assert!(refused(&hub, "header_too_large").await >= 1);
    assert!(refused(&hub, "header_timeout").await >= 1);
    assert!(refused(&hub, "first_byte_timeout").await >= 1);
    still_served(&hub).await;
    hub.shutdown().await.unwrap();
}

/// Failure 1: idle TCP connections cannot take every slot (or descriptor): the cap counts
/// every connection, not only WebSockets, and one IP has a share of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_overall_and_per_source_ip() {
    let (hub, _db) = sqlite_hub(|cfg| {
        cfg.limits.max_http_connections = 6;
        cfg.limits.max_connections_per_ip = 3;
        cfg.limits.first_byte_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = hub.local_addr();
    let from = |ip: [u8; 4]| async move {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((ip, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    };
    // 127.0.0.2 holds its share: the next connection from it is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(from([127, 0, 0, 2]).await);
    }
    let mut over = from([127, 0, 0, 2]).await;
    assert_eq!(
        within(
            "the 4th connection of one IP is closed",
            read_until_closed(&mut over)
        )
        .await,
        ""
    );
    // Another IP still gets in, up to the overall cap.
    for _ in 0..3 {
        held.push(from([127, 0, 0, 3]).await);
    }
    let mut full = from([127, 0, 0, 4]).await;
    assert_eq!(
        within(
            "a connection over the cap is closed",
            read_until_closed(&mut full)
        )
        .await,
        ""
    );
    // One idle connection goes: a legitimate client is served again.
    drop(held.pop());
    eventually("a slot is free again", || async {
        let mut s = from([127, 0, 0, 5]).await;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
            && read_until_closed(&mut s).await.starts_with("HTTP/1.1 200")
    })
    .await;
    drop(held);
    // The hub sees the closes asynchronously: wait until /metrics can be reached.
    eventually("the idle connections are gone", || async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
            && !read_until_closed(&mut s).await.is_empty()
    })
    .await;
    assert!(refused(&hub, "connections_per_ip").await >= 1);
    assert!(refused(&hub, "http_connections").await >= 1);
    hub.shutdown().await.unwrap();
}

/// A WebSocket opened with a socket whose receive buffer is small, so that replies it
/// does not read pile up in the hub rather than in the kernel.
async fn slow_reader(hub: &RunningHub) -> WebSocketStream<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(hub.ws_url(), stream)
        .await
        .unwrap();
    let challenge = ws.next().await.unwrap().unwrap();
    assert!(challenge.is_text());
    ws
}

/// Failure 2: unfinished WebSocket messages are charged to the frame share of the memory
/// budget; the connection that needs more than is left is closed with 1013, and everyone
/// else is still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_frames_are_bounded_by_the_memory_budget() {
    // 1 MiB: 128 KiB for unfinished frames.
    let (hub, _db) = sqlite_hub(|cfg| cfg.limits.memory_budget = 1024 * 1024).await;
    let mut holders = Vec::new();
    let mut closed_1013 = 0;
    for _ in 0..8 {
        let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url())
            .await
            .unwrap();
        let challenge = ws.next().await.unwrap().unwrap();
        assert!(challenge.is_text());
        // A masked text frame announcing 60,000 bytes, of which 40,000 are sent.
        let raw = match ws.get_mut() {
            tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
            _ => unreachable!("ws://"),
        };
        let mut frame = vec![0x81, 0x80 | 126];
        frame.extend_from_slice(&60_000u16.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend(std::iter::repeat_n(b'x', 40_000));
        raw.write_all(&frame).await.unwrap();
        holders.push(ws);
    }
    for ws in &mut holders {
        if let Ok(Some(Ok(Message::Close(Some(f))))) =
            tokio::time::timeout(Duration::from_millis(500), ws.next()).await
        {
            assert_eq!(u16::from(f.code), 1013, "try again later");
            closed_1013 += 1;
        }
    }
    assert!(
        (4..=6).contains(&closed_1013),
        "128 KiB holds 3 of 8 unfinished 40 KB frames; {closed_1013} were closed"
    );
    assert_eq!(refused(&hub, "memory_frame").await, closed_1013);
    still_served(&hub).await;
    drop(holders);
    hub.shutdown().await.unwrap();
}

/// 40 agents with 8 KB of metadata each, registered (a 500-agent page of them is ~330 KB).
async fn big_agents(hub: &RunningHub) -> Vec<Client> {
    let mut agents = Vec::new();
    for i in 0..40 {
        let mut c = Client::connect(&hub.ws_url()).await;
        let reply = c
            .req(json!({
                "action":"register",
                "address":format!("h:{}", 5000 + i),
                "capabilities":["big"],
                "metadata":{"pad":"m".repeat(8000)},
            }))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        agents.push(c);
    }
    agents
}

/// Failure 3: replies waiting for a client that does not read are charged to the reply
/// share; over it, a reply is replaced by `overloaded` (with its correlationId), and the
/// hub keeps answering others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_queued_for_slow_readers_are_bounded_by_the_memory_budget() {
    // 2 MiB: 256 KiB for queued replies.
    let (hub, _db) = sqlite_hub(|cfg| cfg.limits.memory_budget = 2 * 1024 * 1024).await;
    let _agents = big_agents(&hub).await;
    // ~330 KB per discover: more than the whole reply share.
    let mut slow = slow_reader(&hub).await;
    for i in 0..8 {
        let request = json!({"action":"discover","limit":500,"correlationId":i}).to_string();
        slow.send(Message::Text(request.into())).await.unwrap();
    }
    eventually("a reply was refused", || async {
        refused(&hub, "memory_reply").await >= 1
    })
    .await;
    still_served(&hub).await;
    // The slow reader reads at last: every request got an answer, some of them
    // `overloaded` with their correlationIds.
    let mut overloaded = 0;
    for i in 0..8 {
        let reply: Value = loop {
            match within("the slow reader's replies", slow.next()).await {
                Some(Ok(Message::Text(t))) => break serde_json::from_str(t.as_str()).unwrap(),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(reply["correlationId"], json!(i), "in order, each answered");
        if reply["error"] == "overloaded" {
            overloaded += 1;
        } else {
            assert_eq!(reply["count"], 41, "a whole page or nothing");
        }
    }
    assert!(overloaded >= 1);
    hub.shutdown().await.unwrap();
}

/// Issue 13's leftover: HTTP responses are charged to the reply share as WebSocket replies
/// are. Clients that ask for big `/agents` pages and do not read hold the share; over it, a
/// page is refused with 503 `overloaded`, and small answers still come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_responses_to_slow_readers_are_bounded_by_the_memory_budget() {
    // 4 MiB: 512 KiB for replies, room for one ~330 KB page and not two.
    let (hub, _db) = sqlite_hub(|cfg| cfg.limits.memory_budget = 4 * 1024 * 1024).await;
    let agents = big_agents(&hub).await;
    // Each slow reader pipelines more pages than the kernel's socket buffers take (4 MiB on
    // Linux): once they are full, the page being written stays in the hub, charged.
    let pages_each = 24;
    let mut slow = Vec::new();
    for _ in 0..4 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(hub.local_addr()).await.unwrap();
        let mut requests =
            "GET /agents?limit=500 HTTP/1.1\r\nHost: hub\r\n\r\n".repeat(pages_each - 1);
        requests
            .push_str("GET /agents?limit=500 HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n");
        stream.write_all(requests.as_bytes()).await.unwrap();
        slow.push(stream);
    }
    eventually("a page was refused", || async {
        refused(&hub, "memory_reply").await >= 1
    })
    .await;
    let small = within("a small answer", http(hub.local_addr(), "GET", "/stats")).await;
    assert_eq!(small.status, 200);
    still_served(&hub).await;
    // The slow readers read at last: every request got its whole page or `overloaded`.
    let (mut pages, mut overloaded) = (0, 0);
    for stream in &mut slow {
        let raw = within("a slow reader's responses", read_until_closed(stream)).await;
        let ok = raw.matches("HTTP/1.1 200 OK\r\n").count();
        let refused = raw.matches("HTTP/1.1 503 Service Unavailable\r\n").count();
        assert_eq!(ok + refused, pages_each, "each request answered");
        assert_eq!(
            raw.matches(r#"{"status":"error","error":"overloaded"}"#)
                .count(),
            refused
        );
        assert_eq!(raw.matches(r#""count": 40,"#).count(), ok, "whole pages");
        pages += ok;
        overloaded += refused;
    }
    assert!(
        pages >= 1 && overloaded >= 1,
        "{pages} pages, {overloaded} refused"
    );
    drop(agents);
    hub.shutdown().await.unwrap();
}

/// Failure 4: a register → disconnect loop cannot grow the registry without bound: one IP
/// registers at most `registration_burst` at once (then `registrations_per_hour`), offline
/// 2.0 rows go after `anonymous_retention`, and a restart does not load what is past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_disconnect_loop_does_not_grow_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let (mut cfg, clock) = config(&TestDb::new(Backend::Sqlite).await);
    cfg.database = url;
    cfg.limits.registrations_per_hour = 3600;
    cfg.limits.registration_burst = 20;
    let hub = Hub::start(cfg.clone()).await.unwrap();
    // A 2.1 agent registers first: its row is kept for the 24 h retention.
    let identity = m2m_proto::identity::Identity::generate(&mut rand::thread_rng());
    let mut signed = Client::connect(&hub.ws_url()).await;
    let reply = signed
        .register_signed(&identity, "h:4000", &["keep"], json!({}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    signed.close().await;
    let mut refused_at = None;
    for i in 0..60 {
        let mut c = Client::connect(&hub.ws_url()).await;
        let reply = c
            .req(
                json!({"action":"register","address":"h:4001","metadata":{"pad":"x".repeat(4000)}}),
            )
            .await;
        c.close().await;
        if reply["status"] != "ok" {
            assert_eq!(reply["error"], "too_many_registrations", "{reply}");
            refused_at.get_or_insert(i);
        }
    }
    assert_eq!(
        refused_at,
        Some(19),
        "the burst of 20 includes the 2.1 registration"
    );
    let rows = hub.state().registry().load().await.unwrap().rows;
    assert_eq!(rows.len(), 20, "the loop made no more rows than the burst");
    assert!(refused(&hub, "registrations_per_ip").await >= 40);

    // 16 minutes later the offline 2.0 rows are gone, the 2.1 row is not.
    clock.advance(Duration::from_secs(16 * 60));
    let report = hub.sweep_now().await.unwrap();
    assert_eq!(report.purged, 19);
    let rows = hub.state().registry().load().await.unwrap().rows;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].identity.is_some());
    hub.shutdown().await.unwrap();

    // Rows past retention while the hub was down are deleted before loading.
    let hub = Hub::start(cfg.clone()).await.unwrap();
    for _ in 0..5 {
        let mut c = Client::connect(&hub.ws_url()).await;
        c.register(4002, &[]).await;
        c.close().await;
    }
    hub.shutdown().await.unwrap();
    clock.advance(Duration::from_secs(16 * 60));
    let hub = Hub::start(cfg).await.unwrap();
    assert_eq!(
        hub.state().stats().agents.total,
        1,
        "only the 2.1 row was loaded"
    );
    hub.shutdown().await.unwrap();
}

/// Failure 12: `Connection` must list the `upgrade` token, not contain the letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_upgrade_is_matched_as_a_token() {
    let (hub, _db) = sqlite_hub(|_| {}).await;
    let upgrade = |connection: &'static str| {
        let addr = hub.local_addr();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let req = format!(
                "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 512];
            let n = within("the upgrade answer", s.read(&mut buf))
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }
    };
    assert!(upgrade("notupgradeX").await.starts_with("HTTP/1.1 400"));
    assert!(upgrade("keep-alive, notupgrade")
        .await
        .starts_with("HTTP/1.1 400"));
    assert!(upgrade("keep-alive, Upgrade")
        .await
        .starts_with("HTTP/1.1 101"));
    assert!(upgrade("upgrade").await.starts_with("HTTP/1.1 101"));
    hub.shutdown().await.unwrap();
}

/// Failure 12: a text frame that is not UTF-8 is closed with 1007 (RFC 6455 7.4.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let (hub, _db) = sqlite_hub(|_| {}).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.ws_url())
        .await
        .unwrap();
    let _challenge = ws.next().await.unwrap().unwrap();
    let raw = match ws.get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s,
        _ => unreachable!("ws://"),
    };
    // A masked text frame whose payload is 0xff 0xfe (mask of zeros: bytes as they are).
    raw.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .unwrap();
    let mut client = Client {
        ws,
        nonce: String::new(),
    };
    assert_eq!(
        within("the close", client.closed_by_hub()).await,
        Some(1007)
    );
    assert_eq!(refused(&hub, "invalid_utf8").await, 1);
    hub.shutdown().await.unwrap();
}

/// Failure 12: `/info` does not show a `Host` the client made up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_does_not_reflect_the_host_header() {
    let (hub, _db) = sqlite_hub(|_| {}).await;
    let mut s = TcpStream::connect(hub.local_addr()).await.unwrap();
    s.write_all(b"GET /info HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = read_until_closed(&mut s).await;
    assert!(!reply.contains("evil.example"), "{reply}");
    let body: Value = serde_json::from_str(reply.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(
        body["protocol"]["websocket"],
        json!(format!("ws://{}/ws", hub.local_addr()))
    );
    hub.shutdown().await.unwrap();
}

/// Failure 13: `/health` is 503 `degraded` while the registry cannot write, and `healthy`
/// again once it can; reads are served from memory meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_the_registry_cannot_write() {
    let db = TestDb::new(Backend::Postgres).await;
    let (mut cfg, _clock) = config(&db);
    cfg.storage.acquire_timeout = Duration::from_secs(1);
    let hub = Hub::start(cfg).await.unwrap();
    let addr = hub.local_addr();
    let health = http(addr, "GET", "/health").await;
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("healthy"))
    );

    db.cut_off().await;
    eventually("/health says degraded", || async {
        let h = http(addr, "GET", "/health").await;
        h.status == 503 && h.json()["status"] == "degraded"
    })
    .await;
    let stats = http(addr, "GET", "/stats").await;
    assert_eq!(stats.status, 200, "reads are still served");

    db.reconnect().await;
    eventually("/health says healthy again", || async {
        let h = http(addr, "GET", "/health").await;
        h.status == 200 && h.json()["status"] == "healthy"
    })
    .await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

/// Failure 12: a correlationId too big for 64 bits comes back as written, not as a float.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_integer_correlation_ids_are_echoed_exactly() {
    let (hub, _db) = sqlite_hub(|_| {}).await;
    let mut c = Client::connect(&hub.ws_url()).await;
    for (request, cid) in [
        (
            r#"{"action":"stats","correlationId":123456789012345678901234567890}"#,
            "123456789012345678901234567890",
        ),
        (
            r#"{"action":"lookup","id":"00","correlationId":-1.50}"#,
            "-1.50",
        ),
        (
            r#"{"action":"nope","correlationId":18446744073709551616}"#,
            "18446744073709551616",
        ),
    ] {
        c.send_text(request).await;
        let reply = match within("the reply", c.ws.next()).await {
            Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
            other => panic!("{other:?}"),
        };
        assert!(
            reply.ends_with(&format!(r#","correlationId":{cid}}}"#)),
            "{reply}"
        );
    }
    c.close().await;
    hub.shutdown().await.unwrap();
}

/// Behind a trusted proxy every connection comes from the proxy: the per-IP share is the
/// forwarded client's, taken at the WebSocket upgrade.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_address_has_the_share() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (hub, _db) = sqlite_hub(|cfg| {
        cfg.trust_proxy = true;
        cfg.limits.max_connections_per_ip = 2;
    })
    .await;
    let open = |forwarded: &'static str| {
        let url = hub.ws_url();
        async move {
            let mut request = url.into_client_request().unwrap();
            request
                .headers_mut()
                .insert("x-forwarded-for", forwarded.parse().unwrap());
            tokio_tungstenite::connect_async(request).await
        }
    };
    let _a = open("203.0.113.9").await.unwrap();
    let _b = open("203.0.113.9").await.unwrap();
    match open("203.0.113.9").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("a third WebSocket of one forwarded address: {other:?}"),
    }
    let _c = open("203.0.113.10").await.unwrap();
    assert_eq!(refused(&hub, "connections_per_ip").await, 1);
    hub.shutdown().await.unwrap();
}
