//! Every WebSocket action and its error paths, hostile input, the status lifecycle and the
//! HTTP API, against an in-process hub on SQLite and on PostgreSQL.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, eventually, http, Backend, Client, TestDb};
use futures_util::SinkExt;
use m2m_hub::Hub;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

fn err(code: &str, cid: &str) -> Value {
    json!({"status":"error","error":code,"correlationId":cid})
}

async fn ownership_and_errors(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;
    let b_id = b.register(4002, &[]).await;

    // Ours: heartbeat, status and disconnect act only on this connection's own agent.
    for action in ["heartbeat", "status", "disconnect"] {
        let reply = b
            .req(json!({"action":action,"id":a_id,"status":"x","correlationId":"f"}))
            .await;
        assert_eq!(reply, err("forbidden", "f"), "{action}");
    }
    let reply = b
        .req(json!({"action":"heartbeat","id":"nope","correlationId":"f"}))
        .await;
    assert_eq!(reply, err("forbidden", "f"));
    let looked = a.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(
        looked["agent"]["status"], "online",
        "a forbidden request changed nothing"
    );

    // Missing and mistyped fields name the field.
    let reply = a.req(json!({"action":"heartbeat","correlationId":7})).await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"missing field `id`","correlationId":7})
    );
    let reply = a.req(json!({"action":"lookup","correlationId":"m"})).await;
    assert_eq!(reply, err("missing field `id`", "m"));
    let reply = a.req(json!({"action":"find","correlationId":"m"})).await;
    assert_eq!(reply, err("missing field `capability`", "m"));
    let reply = a
        .req(json!({"action":"register","address":"h:1","capabilities":5,"correlationId":"t"}))
        .await;
    assert_eq!(
        reply,
        err(
            "invalid field `capabilities`: must be an array of strings",
            "t"
        )
    );
    let reply = a
        .req(json!({"action":"register","address":"h:1","metadata":[1],"correlationId":"t"}))
        .await;
    assert_eq!(
        reply,
        err("invalid field `metadata`: must be an object", "t")
    );
    let reply = a
        .req(json!({"action":"register","address":{"x":1},"correlationId":"t"}))
        .await;
    assert_eq!(reply, err("invalid field `address`: must be a string", "t"));
    let reply = a
        .req(json!({"action":"discover","limit":"lots","correlationId":"t"}))
        .await;
    assert_eq!(reply, err("invalid field `limit`: must be a number", "t"));
    let reply = a
        .req(json!({"action":"lookup","id":"ffffffffffffffffffffffffffffffff","correlationId":"n"}))
        .await;
    assert_eq!(reply, err("agent_not_found", "n"));
    let reply = a
        .req(json!({"action":"lookup","id":"../etc","correlationId":"n"}))
        .await;
    assert_eq!(reply, err("agent_not_found", "n"));
    let reply = a.req(json!({"action":"fly","correlationId":"u"})).await;
    assert_eq!(reply, err("unknown_action", "u"));
    let reply = a.req(json!({"correlationId":"u"})).await;
    assert_eq!(reply, err("unknown_action", "u"));
    let reply = a.req(json!({"action":42,"correlationId":"u"})).await;
    assert_eq!(reply, err("unknown_action", "u"));

    // Address rules (Ours).
    for (address, code) in [
        (json!(null), "address_required"),
        (json!("1.2.3.4"), "invalid_address"),
        (json!("fe80::1:4000"), "invalid_address"),
        (json!(format!("{}:80", "h".repeat(300))), "address_too_long"),
    ] {
        let reply = a
            .req(json!({"action":"register","address":address,"correlationId":"ad"}))
            .await;
        assert_eq!(reply, err(code, "ad"), "{address}");
    }
    let reply = a
        .req(json!({"action":"register","address":"[2001:db8::1]:4010"}))
        .await;
    assert_eq!(reply["address"], "127.0.0.1:4010");

    // Status: a long one is refused; metadata merges shallowly; an empty status keeps.
    let reply = a
        .req(json!({"action":"status","id":a_id,"status":"s".repeat(65),"correlationId":"s"}))
        .await;
    assert_eq!(reply, err("status_too_long", "s"));
    let reply = a
        .req(json!({"action":"status","id":a_id,"status":"busy","metadata":{"k":1},"correlationId":"s"}))
        .await;
    assert_eq!(reply, json!({"status":"ok","correlationId":"s"}));
    a.req(json!({"action":"status","id":a_id,"status":"","metadata":{"j":2}}))
        .await;
    let rec = b.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["status"], "busy");
    assert_eq!(rec["agent"]["metadata"], json!({"k":1,"j":2}));

    // Ours: a heartbeat keeps the status the agent chose.
    let hb = a
        .req(json!({"action":"heartbeat","id":a_id,"correlationId":"h"}))
        .await;
    assert_eq!(hb["status"], "ok");
    assert!(hb["timestamp"].is_u64());
    let rec = b.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["status"], "busy");

    // find lists only online agents; discover all but offline; the caller excluded.
    let found = b.req(json!({"action":"find","capability":"chat"})).await;
    assert_eq!(found, json!({"status":"ok","count":0,"agents":[]}));
    let found = b
        .req(json!({"action":"discover","id":b_id,"status":"busy"}))
        .await;
    assert_eq!(found["count"], 1);
    assert_eq!(found["agents"][0]["id"], json!(a_id));

    // Disconnect: offline, no longer owned, no longer listed.
    let reply = a
        .req(json!({"action":"disconnect","id":a_id,"correlationId":"d"}))
        .await;
    assert_eq!(reply, json!({"status":"ok","correlationId":"d"}));
    let reply = a
        .req(json!({"action":"heartbeat","id":a_id,"correlationId":"d"}))
        .await;
    assert_eq!(reply, err("forbidden", "d"));
    let listed = b.req(json!({"action":"discover"})).await;
    assert!(listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != json!(a_id)));

    // stats counts the connections that hold an agent.
    let stats = b.req(json!({"action":"stats","correlationId":"st"})).await;
    assert_eq!(stats["status"], "ok");
    assert_eq!(stats["correlationId"], "st");
    assert_eq!(stats["hub"]["activeConnections"], 2, "{stats}");
    assert_eq!(stats["hub"]["connections"], 2);

    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn hostile_input(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut cfg, clock) = config(&db);
    cfg.limits.requests_per_second = 20;
    cfg.limits.request_burst = 40;
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;

    // Not JSON, and JSON that is not an object.
    a.send_text("this is not json").await;
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"invalid_json"})
    );
    a.send_text("null").await;
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"invalid_json"})
    );
    a.send_text("{\"action\":\"lookup\",").await;
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"invalid_json"})
    );
    a.ws.send(Message::Binary(vec![0xff, 0xfe].into()))
        .await
        .unwrap();
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"invalid_json"})
    );

    // Limits of register.
    let caps: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let reply = a
        .req(json!({"action":"register","address":"h:1","capabilities":caps,"correlationId":"c"}))
        .await;
    assert_eq!(reply, err("too_many_capabilities", "c"));
    let reply = a
        .req(json!({"action":"register","address":"h:1","capabilities":["x".repeat(129)],"correlationId":"c"}))
        .await;
    assert_eq!(reply, err("capability_too_long", "c"));
    let reply = a
        .req(json!({"action":"register","address":"h:1","metadata":{"blob":"x".repeat(17 * 1024)},"correlationId":"c"}))
        .await;
    assert_eq!(reply, err("metadata_too_large", "c"));
    let reply = a
        .req(json!({"action":"status","id":a_id,"metadata":{"blob":"x".repeat(17 * 1024)},"correlationId":"c"}))
        .await;
    assert_eq!(reply, err("metadata_too_large", "c"));

    // Oversized message: an error reply, and the connection keeps serving.
    let big = json!({"action":"lookup","id":a_id,"pad":"x".repeat(100 * 1024)}).to_string();
    a.send_text(big).await;
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"message_too_large"})
    );
    let rec = a.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["capabilities"], json!(["chat"]));

    // A flood: answered, some refused with rate_limited (correlationId kept), none lost.
    // The budget refills on the hub's clock: two seconds at 20/s fill the burst of 40.
    clock.advance(Duration::from_secs(2));
    let n = 300;
    for i in 0..n {
        a.send_text(json!({"action":"lookup","id":a_id,"correlationId":i}).to_string())
            .await;
    }
    let (mut ok, mut limited) = (0, 0);
    for i in 0..n {
        let reply = a.recv().await.unwrap();
        assert_eq!(reply["correlationId"], json!(i), "replies come in order");
        match reply["status"].as_str().unwrap() {
            "ok" => ok += 1,
            _ => {
                assert_eq!(reply["error"], "rate_limited");
                limited += 1;
            }
        }
    }
    assert!(ok >= 40, "the burst is served ({ok})");
    assert!(limited > 0, "a flood is limited");

    // A message past the hard cap closes that connection; the hub serves on.
    let mut c = Client::connect(&hub.ws_url()).await;
    let huge = "x".repeat(600 * 1024);
    let _ = c.ws.send(Message::Text(huge.into())).await;
    match c.recv().await {
        None => {}
        Some(v) => assert_eq!(v, json!({"status":"error","error":"message_too_large"})),
    }
    let mut d = Client::connect(&hub.ws_url()).await;
    let rec = d.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(
        rec["agent"]["id"],
        json!(a_id),
        "stored data intact after the abuse"
    );
    assert_eq!(rec["agent"]["metadata"], json!({}));

    d.close().await;
    a.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn lifecycle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    let mut watcher = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;
    let b_id = b.register(4002, &["chat"]).await;
    b.req(json!({"action":"status","id":b_id,"status":"busy"}))
        .await;
    let status = |v: &Value| v["agent"]["status"].as_str().unwrap().to_owned();

    // 3 minutes unseen: idle (a busy agent too).
    clock.advance(Duration::from_secs(180));
    let r = hub.sweep_now().await.unwrap();
    assert_eq!((r.idled, r.offlined), (2, 0));
    assert_eq!(
        status(&watcher.req(json!({"action":"lookup","id":a_id})).await),
        "idle"
    );
    assert_eq!(
        status(&watcher.req(json!({"action":"lookup","id":b_id})).await),
        "idle"
    );
    let stats = watcher.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["idle"], 2);
    let found = watcher
        .req(json!({"action":"find","capability":"chat"}))
        .await;
    assert_eq!(found["count"], 0, "find lists online agents only");
    let listed = watcher
        .req(json!({"action":"discover","status":"idle"}))
        .await;
    assert_eq!(listed["count"], 2, "idle agents are still listed");

    // A heartbeat brings an idle agent back online; a later sweep does not touch it.
    a.req(json!({"action":"heartbeat","id":a_id})).await;
    assert_eq!(
        status(&watcher.req(json!({"action":"lookup","id":a_id})).await),
        "online"
    );

    // 3 more minutes: b (unseen 6 min) goes offline; a (seen 3 min ago) idle again.
    clock.advance(Duration::from_secs(180));
    let r = hub.sweep_now().await.unwrap();
    assert_eq!((r.idled, r.offlined), (1, 1), "{r:?}");
    assert_eq!(
        status(&watcher.req(json!({"action":"lookup","id":b_id})).await),
        "offline"
    );
    let listed = watcher.req(json!({"action":"discover"})).await;
    assert_eq!(listed["count"], 1);

    // Offline rows are purged after the retention period.
    clock.advance(Duration::from_secs(25 * 3600));
    let r = hub.sweep_now().await.unwrap();
    assert_eq!((r.offlined, r.purged), (1, 2), "{r:?}");
    for id in [&a_id, &b_id] {
        let gone = watcher
            .req(json!({"action":"lookup","id":id,"correlationId":"g"}))
            .await;
        assert_eq!(gone, err("agent_not_found", "g"));
    }
    let stats = watcher.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["total"], 0);
    // Its WebSocket is still open: the purged agent is gone for it too.
    let hb = a
        .req(json!({"action":"heartbeat","id":a_id,"correlationId":"g"}))
        .await;
    assert_eq!(hb, err("agent_not_found", "g"));

    // A closed WebSocket is offline at once.
    let mut c = Client::connect(&hub.ws_url()).await;
    let c_id = c.register(4003, &[]).await;
    c.close().await;
    common::eventually("closed agent is offline", || {
        let hub = &hub;
        let c_id = c_id.clone();
        async move {
            let mut w = Client::connect(&hub.ws_url()).await;
            let v = w.req(json!({"action":"lookup","id":c_id})).await;
            v["agent"]["status"] == "offline"
        }
    })
    .await;

    a.close().await;
    b.close().await;
    watcher.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn http_api(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let addr = hub.local_addr();
    let mut a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat", "code"]).await;
    let b_id = b.register(4002, &["compute"]).await;
    b.req(json!({"action":"status","id":b_id,"status":"busy"}))
        .await;

    let page = http(addr, "GET", "/agents").await.json();
    assert_eq!(
        (page["count"].clone(), page["total"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(page["agents"][0]["id"], json!(b_id), "newest first");
    let page = http(addr, "GET", "/agents?capability=chat").await.json();
    assert_eq!(page["agents"].as_array().unwrap().len(), 1);
    assert_eq!(page["agents"][0]["id"], json!(a_id));
    let page = http(addr, "GET", "/agents?status=busy&limit=1000")
        .await
        .json();
    assert_eq!(page["limit"], 500, "limit is capped");
    assert_eq!(page["agents"][0]["id"], json!(b_id));
    let page = http(addr, "GET", "/agents?offset=1&limit=1").await.json();
    assert_eq!(page["agents"][0]["id"], json!(a_id));
    let bad = http(addr, "GET", "/agents?limit=-3").await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["status"], "error");
    assert_eq!(bad.header("access-control-allow-origin"), Some("*"));

    let stats_reply = http(addr, "GET", "/stats").await;
    // The original sends these bodies as JSON.stringify(data, null, 2): the same bytes.
    let stats = stats_reply.json();
    assert_eq!(
        stats_reply.body,
        serde_json::to_string_pretty(&stats).unwrap()
    );
    assert!(stats_reply
        .body
        .starts_with("{\n  \"status\": \"ok\",\n  \"agents\": {\n    \"total\": 2,"));
    for path in ["/", "/info", "/agents"] {
        let reply = http(addr, "GET", path).await;
        assert_eq!(
            reply.body,
            serde_json::to_string_pretty(&reply.json()).unwrap(),
            "{path}"
        );
    }
    // /health and the 404 are compact in the original.
    let health = http(addr, "GET", "/health").await;
    assert!(!health.body.contains('\n'));
    assert_eq!(stats["agents"]["total"], 2);
    assert_eq!(stats["hub"]["activeConnections"], 2);

    let ws = http(addr, "GET", "/ws").await;
    assert_eq!(ws.status, 400);
    assert_eq!(
        ws.json(),
        json!({"status":"error","error":"websocket_upgrade_required"})
    );
    let post = http(addr, "POST", "/stats").await;
    assert_eq!(post.status, 405);
    assert_eq!(post.json()["status"], "error");
    let missing = http(addr, "DELETE", "/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "Not found");

    let metrics = http(addr, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    for needle in [
        "m2m_hub_connections_open 2",
        "m2m_hub_agents{status=\"online\"} 1",
        "m2m_hub_agents{status=\"other\"} 1",
        "m2m_hub_requests_total{action=\"register\",result=\"ok\"} 2",
        "m2m_hub_request_duration_seconds_count{action=\"status\"} 1",
    ] {
        assert!(
            metrics.body.contains(needle),
            "missing {needle} in\n{}",
            metrics.body
        );
    }

    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

on_both_backends! {
    ownership_and_error_replies => super::ownership_and_errors;
    hostile_input_gets_errors_and_the_hub_serves_on => super::hostile_input;
    status_lifecycle => super::lifecycle;
    http_endpoints => super::http_api;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_with_json_503() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.limits.max_connections = 2;
    let hub = Hub::start(cfg).await.unwrap();
    let a = Client::connect(&hub.ws_url()).await;
    let b = Client::connect(&hub.ws_url()).await;
    match tokio_tungstenite::connect_async(hub.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 503);
            let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
            assert_eq!(
                body,
                json!({"status":"error","error":"too_many_connections"})
            );
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    a.close().await;
    // A freed slot is usable again.
    common::eventually("slot freed", || async {
        tokio_tungstenite::connect_async(hub.ws_url()).await.is_ok()
    })
    .await;
    b.close().await;
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_used_only_with_trust_proxy() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    for trust in [false, true] {
        let db = TestDb::new(Backend::Sqlite).await;
        let (mut cfg, _clock) = config(&db);
        cfg.trust_proxy = trust;
        let hub = Hub::start(cfg).await.unwrap();
        let mut req = hub.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", "203.0.113.7, 10.0.0.1".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let mut c = Client::greeted(ws).await;
        let reply = c.req(json!({"action":"register","address":"x:5000"})).await;
        let want = if trust {
            "203.0.113.7:5000"
        } else {
            "127.0.0.1:5000"
        };
        assert_eq!(reply["address"], want);
        c.close().await;
        hub.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_anonymous_connection_is_closed_but_a_registered_one_is_kept() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.limits.idle_timeout = Duration::from_millis(200);
    let hub = Hub::start(cfg).await.unwrap();
    let mut agent = Client::connect(&hub.ws_url()).await;
    let id = agent.register(4000, &[]).await;
    let mut silent = Client::connect(&hub.ws_url()).await;
    assert!(
        silent.recv().await.is_none(),
        "the hub closed the silent connection"
    );
    // A second silent connection, opened once the first was closed, closes a full idle
    // timeout later: by then the agent has been quiet for two, and its timer has fired.
    let mut later = Client::connect(&hub.ws_url()).await;
    assert!(later.recv().await.is_none(), "the second silent one too");
    let reply = agent.req(json!({"action":"heartbeat","id":id})).await;
    assert_eq!(reply["status"], "ok", "a registered agent may stay quiet");
    agent.close().await;
    hub.shutdown().await.unwrap();
}

/// Requests larger than a connection's read buffer are read whole, up to the configured
/// maximum, several of them written at once too; the replies come back in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_the_read_buffer_are_served_up_to_the_limit() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (cfg, _clock) = config(&db);
    let max = cfg.limits.max_message_bytes;
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let id = a.register(4000, &["chat"]).await;
    let sized = |n: usize, cid: usize| {
        let bare = json!({"action":"lookup","id":id,"correlationId":cid,"pad":""}).to_string();
        let text =
            json!({"action":"lookup","id":id,"correlationId":cid,"pad":"x".repeat(n - bare.len())})
                .to_string();
        assert_eq!(text.len(), n);
        text
    };
    let sizes = [100, 1023, 1025, 4095, 4097, 20_000, max - 1, max];
    for (cid, &n) in sizes.iter().enumerate() {
        a.send_text(sized(n, cid)).await;
    }
    for (cid, _) in sizes.iter().enumerate() {
        let reply = a.recv().await.unwrap();
        assert_eq!(reply["correlationId"], json!(cid));
        assert_eq!(reply["agent"]["id"], json!(id), "{reply}");
    }
    a.send_text(sized(max + 1, 99)).await;
    assert_eq!(
        a.recv().await.unwrap(),
        json!({"status":"error","error":"message_too_large"})
    );
    let reply = a.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(reply["agent"]["id"], json!(id));
    a.close().await;
    hub.shutdown().await.unwrap();
}

/// Dropping a `RunningHub` stops the hub: its WebSockets are closed (their agents go
/// offline) and the listener goes with the server task, so its port refuses connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_running_hub_stops_it() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let addr = hub.local_addr();
    let state = hub.state().clone();
    let mut agent = Client::connect(&hub.ws_url()).await;
    agent.register(4000, &[]).await;
    drop(hub);
    assert!(agent.recv().await.is_none(), "the hub closed the WebSocket");
    eventually("the dropped hub's port refuses connections", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    eventually("the closed WebSocket's agent is offline", || async {
        let rows = state.registry().load().await.unwrap().rows;
        rows.iter().all(|r| r.status == "offline")
    })
    .await;
}
