//! Every agent operation against an in-process hub with several agents.

mod common;

use std::time::Duration;

use common::{agent, wait_event, TestHub};
use futures_util::{SinkExt, StreamExt};
use m2m_agent::{
    json, Agent, AgentError, AgentEvent, BroadcastOptions, DiscoverOptions, Map, Message, Value,
};

on_both_hubs!(
    hub_operations,
    send_receive_send_direct_and_ping,
    send_to_unknown_or_offline_agents,
    request_and_respond,
    request_times_out_without_a_response,
    broadcast_reports_a_dead_peer,
    reconnects_after_the_hub_restarts,
    fails_over_to_the_next_hub,
    no_reconnect_when_disabled_and_bad_config_is_refused,
);

async fn next(agent: &Agent) -> Message {
    tokio::time::timeout(Duration::from_secs(10), agent.next_message())
        .await
        .expect("no message")
        .expect("stream ended")
}

async fn hub_operations<H: TestHub>() {
    let hub = H::start(0).await;
    let mut meta = Map::new();
    meta.insert("name".into(), json!("alpha"));
    let a = agent(&hub)
        .capabilities(["chat", "code"])
        .metadata(meta)
        .connect()
        .await
        .unwrap();
    let b = agent(&hub)
        .capabilities(["compute"])
        .connect()
        .await
        .unwrap();
    let c = agent(&hub).connect().await.unwrap();
    assert_eq!(a.id().len(), 32);
    assert_ne!(a.id(), b.id());
    assert_eq!(a.address(), format!("127.0.0.1:{}", a.local_port()));

    let all = a.discover(DiscoverOptions::new()).await.unwrap();
    let ids: Vec<_> = all.iter().map(|p| p.id.clone()).collect();
    assert_eq!(all.len(), 2);
    assert!(ids.contains(&b.id()) && ids.contains(&c.id()) && !ids.contains(&a.id()));

    let compute = c
        .discover(DiscoverOptions::new().capabilities(["compute", "nothing"]))
        .await
        .unwrap();
    assert_eq!(compute.len(), 1);
    assert_eq!(compute[0].id, b.id());
    assert_eq!(compute[0].status, "online");

    let page = c
        .discover(DiscoverOptions::new().status("online").limit(1).offset(1))
        .await
        .unwrap();
    assert_eq!(page.len(), 1);

    let chat = b.find("chat").await.unwrap();
    assert_eq!(chat.len(), 1);
    assert_eq!(chat[0].id, a.id());
    assert_eq!(chat[0].metadata["name"], json!("alpha"));

    let rec = b.lookup(&a.id()).await.unwrap();
    assert_eq!(rec.capabilities, vec!["chat", "code"]);
    assert_eq!(
        b.lookup("ffffffffffffffffffffffffffffffff").await,
        Err(AgentError::AgentNotFound(
            "ffffffffffffffffffffffffffffffff".into()
        ))
    );

    let mut extra = Map::new();
    extra.insert("task".into(), json!("processing"));
    a.update_status("busy", extra).await.unwrap();
    let rec = b.lookup(&a.id()).await.unwrap();
    assert_eq!(rec.status, "busy");
    assert_eq!(rec.metadata["task"], json!("processing"));
    assert_eq!(rec.metadata["name"], json!("alpha"));

    let stats = c.stats().await.unwrap();
    assert_eq!(stats.agents.total, 3);
    assert_eq!(stats.hub.version, "2.0.0");

    for x in [&a, &b, &c] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

async fn send_receive_send_direct_and_ping<H: TestHub>() {
    let hub = H::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let b = agent(&hub).connect().await.unwrap();

    let d = a
        .send(&b.id(), "hello", json!({"message":"Hi!"}))
        .await
        .unwrap();
    assert!(d.delivered);
    assert_eq!(d.correlation_id.len(), 16);
    let m = next(&b).await;
    assert_eq!(m.from, a.id());
    assert_eq!(m.message_type, "hello");
    assert_eq!(m.payload, json!({"message":"Hi!"}));
    assert_eq!(m.correlation_id.as_deref(), Some(d.correlation_id.as_str()));
    // Both hubs are 2.1: the sender proved the id it registered.
    assert!(a.hub_verified() && b.hub_verified());
    assert!(m.encrypted && m.authenticated && m.timestamp > 0);
    assert_eq!(a.id(), a.identity().agent_id());
    let shape = serde_json::to_value(&m).unwrap();
    let keys: Vec<_> = shape.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "from",
            "type",
            "payload",
            "correlationId",
            "timestamp",
            "encrypted",
            "authenticated"
        ]
    );

    // A string payload travels as itself.
    let addr = format!("127.0.0.1:{}", b.local_port());
    a.send_direct(&addr, "note", json!("plain")).await.unwrap();
    assert_eq!(next(&b).await.payload, json!("plain"));

    // Many messages in a row over the pooled connection arrive in order.
    for i in 0..100 {
        a.send(&b.id(), "seq", json!(i)).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(next(&b).await.payload, json!(i));
    }

    a.ping(&addr).await.unwrap();

    // The message stream form.
    let mut stream = Box::pin(b.messages());
    a.send(&b.id(), "via-stream", json!(1)).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.message_type, "via-stream");

    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

async fn send_to_unknown_or_offline_agents<H: TestHub>() {
    let hub = H::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let gone = agent(&hub).connect().await.unwrap();
    let gone_id = gone.id();
    gone.disconnect().await.unwrap();
    assert_eq!(a.lookup(&gone_id).await.unwrap().status, "offline");
    // lookup filled the cache with "offline": a send that may not queue in the mailbox
    // refuses without dialling (the default send queues for it: tests/mailbox.rs).
    let no_queue = m2m_agent::SendOptions {
        queue: false,
        ttl: None,
    };
    assert_eq!(
        a.send_with(&gone_id, "x", json!({}), no_queue).await,
        Err(AgentError::AgentOffline(gone_id.clone()))
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        a.send(unknown, "x", json!({})).await,
        Err(AgentError::AgentNotFound(unknown.into()))
    );
    // After disconnect, the agent's own operations fail cleanly.
    assert_eq!(
        gone.discover(DiscoverOptions::new()).await,
        Err(AgentError::NotConnected)
    );
    assert!(gone.next_message().await.is_none());
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

async fn request_and_respond<H: TestHub>() {
    let hub = H::start(0).await;
    let asker = agent(&hub).inbox_capacity(1).connect().await.unwrap();
    let worker = agent(&hub)
        .capabilities(["compute"])
        .connect()
        .await
        .unwrap();
    let noisy = agent(&hub).connect().await.unwrap();

    let w = worker.clone();
    worker.on_message(move |msg| {
        let w = w.clone();
        async move {
            if msg.message_type == "compute" {
                let sum: i64 = msg.payload["numbers"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_i64).sum())
                    .unwrap_or(0);
                // The request's correlationId is merged into the payload.
                assert_eq!(
                    msg.payload["correlationId"].as_str(),
                    msg.correlation_id.as_deref()
                );
                w.respond(&msg, json!({ "sum": sum })).await.unwrap();
            }
        }
    });

    // Fill the asker's application queue: the response must still reach the request.
    noisy.send(&asker.id(), "noise", json!(1)).await.unwrap();

    let workers = asker.find("compute").await.unwrap();
    let result = asker
        .request(
            &workers[0].id,
            "compute",
            json!({"operation":"sum","numbers":[1,2,3]}),
            Some(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(result, json!({"sum": 6}));
    // The response did not go to the application queue.
    assert_eq!(next(&asker).await.message_type, "noise");

    for x in [&asker, &worker, &noisy] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

async fn request_times_out_without_a_response<H: TestHub>() {
    let hub = H::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let silent = agent(&hub).connect().await.unwrap();
    let r = a
        .request(
            &silent.id(),
            "question",
            json!({}),
            Some(Duration::from_millis(200)),
        )
        .await;
    assert!(matches!(r, Err(AgentError::Timeout { .. })), "{r:?}");
    // The request itself was delivered.
    assert_eq!(next(&silent).await.message_type, "question");
    a.disconnect().await.unwrap();
    silent.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// Registers a hub entry whose address nobody listens on; keeps its WebSocket open.
async fn register_ghost(hub: &impl TestHub) -> (String, impl Drop) {
    let (mut ws, _) = tokio_tungstenite::connect_async(hub.url()).await.unwrap();
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let req = json!({"action":"register","address":format!("127.0.0.1:{port}"),"capabilities":["monitor"],"correlationId":"1"});
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        req.to_string(),
    ))
    .await
    .unwrap();
    loop {
        let msg = ws.next().await.unwrap().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["correlationId"] == "1" {
            let id = v["id"].as_str().unwrap().to_owned();
            return (id, GhostGuard(Some(ws)));
        }
    }
}

struct GhostGuard<T>(Option<T>);
impl<T> Drop for GhostGuard<T> {
    fn drop(&mut self) {
        self.0.take();
    }
}

async fn broadcast_reports_a_dead_peer<H: TestHub>() {
    let hub = H::start(0).await;
    let sender = agent(&hub).connect().await.unwrap();
    let b = agent(&hub)
        .capabilities(["monitor"])
        .connect()
        .await
        .unwrap();
    let c = agent(&hub)
        .capabilities(["monitor"])
        .connect()
        .await
        .unwrap();
    let other = agent(&hub).capabilities(["chat"]).connect().await.unwrap();
    let (ghost, _guard) = register_ghost(&hub).await;

    let report = sender
        .broadcast(
            "alert",
            json!({"msg":"hello"}),
            BroadcastOptions::new()
                .capabilities(["monitor"])
                .parallelism(2),
        )
        .await
        .unwrap();
    assert_eq!(report.total, 3);
    assert_eq!(report.delivered, 2);
    assert_eq!(report.failed, 1);
    assert_eq!(report.errors[0].agent, ghost);
    assert!(matches!(
        report.errors[0].error,
        AgentError::Unreachable { .. }
    ));
    assert_eq!(next(&b).await.message_type, "alert");
    assert_eq!(next(&c).await.message_type, "alert");

    // Without capabilities: every online agent.
    let report = sender
        .broadcast("all", json!(1), BroadcastOptions::default())
        .await
        .unwrap();
    assert_eq!((report.total, report.delivered), (4, 3));
    assert_eq!(next(&other).await.message_type, "all");

    for x in [&sender, &b, &c, &other] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

/// Several hubs (issue 20): the first that answers is used; when it goes away the agent
/// moves to the next, keeping its id, and says so in `Reconnected`.
async fn fails_over_to_the_next_hub<H: TestHub>() {
    // A port nobody listens on: the first contact skips it.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("ws://127.0.0.1:{}/ws", l.local_addr().unwrap().port())
    };
    let one = H::start(0).await;
    let two = H::start(0).await;
    let builder = agent(&one).hubs([dead.as_str(), &one.url(), &two.url()]);
    let mut events = builder.events();
    let a = builder.connect().await.unwrap();
    assert_eq!(a.hub_url(), one.url(), "the first hub that answers");
    let id = a.id();

    one.shutdown().await;
    let AgentEvent::Reconnected { hub, id: again, .. } =
        wait_event(&mut events, |e| matches!(e, AgentEvent::Reconnected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(hub, two.url(), "the next hub after the one that went away");
    assert_eq!(a.hub_url(), two.url());
    assert_eq!(again, id, "a 2.1 id is the same on every hub");

    let b = agent(&two).connect().await.unwrap();
    b.send(&id, "after-failover", json!({})).await.unwrap();
    assert_eq!(next(&a).await.message_type, "after-failover");
    a.send(&b.id(), "back", json!({})).await.unwrap();
    assert_eq!(next(&b).await.from, id);

    // No hub answers: the error of the last one tried.
    let none = Agent::builder()
        .hubs([dead.as_str(), dead.replace("/ws", "/other").as_str()])
        .connect()
        .await;
    assert!(
        matches!(none, Err(AgentError::Unreachable { .. })),
        "{none:?}"
    );
    for x in [&a, &b] {
        x.disconnect().await.unwrap();
    }
    two.shutdown().await;
}

async fn reconnects_after_the_hub_restarts<H: TestHub>() {
    let hub = H::start(0).await;
    let port = hub.port();
    let url = hub.url();
    let builder = agent(&hub);
    let mut events = builder.events();
    let a = builder.connect().await.unwrap();
    let AgentEvent::Connected { id: old_id, .. } =
        wait_event(&mut events, |e| matches!(e, AgentEvent::Connected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(old_id, a.id());
    hub.shutdown().await;
    wait_event(&mut events, |e| {
        matches!(e, AgentEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(
        a.discover(DiscoverOptions::new()).await,
        Err(AgentError::NotConnected)
    );

    let hub = H::start(port).await;
    assert_eq!(hub.url(), url);
    let AgentEvent::Reconnected { id, .. } =
        wait_event(&mut events, |e| matches!(e, AgentEvent::Reconnected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(id, old_id, "a 2.1 hub registers us under our identity's id");
    assert_eq!(a.id(), id);

    // The re-registered agent is reachable under its new id.
    let b = agent(&hub).connect().await.unwrap();
    b.send(&a.id(), "after-restart", json!({})).await.unwrap();
    let m = next(&a).await;
    assert_eq!(m.from, b.id());
    a.send(&b.id(), "back", json!({})).await.unwrap();
    assert_eq!(next(&b).await.from, a.id());

    // Our own disconnect is reported once, as requested, and no reconnect follows.
    a.disconnect().await.unwrap();
    let AgentEvent::Disconnected { reason } = wait_event(&mut events, |e| {
        matches!(e, AgentEvent::Disconnected { .. })
    })
    .await
    else {
        unreachable!()
    };
    assert_eq!(reason, "disconnect requested");
    assert!(a.is_disconnected());
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

async fn no_reconnect_when_disabled_and_bad_config_is_refused<H: TestHub>() {
    let hub = H::start(0).await;
    let a = agent(&hub).auto_reconnect(false).connect().await.unwrap();
    let mut events = a.events();
    hub.shutdown().await;
    wait_event(&mut events, |e| {
        matches!(e, AgentEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(a.stats().await, Err(AgentError::NotConnected));
    a.disconnect().await.unwrap();

    assert!(matches!(
        Agent::builder().hub("ftp://nowhere").connect().await,
        Err(AgentError::Config(_))
    ));
    // Nothing listens there: connect fails instead of hanging.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(matches!(
        Agent::builder()
            .hub(&format!("127.0.0.1:{port}"))
            .connect()
            .await,
        Err(AgentError::Unreachable { .. })
    ));
}
