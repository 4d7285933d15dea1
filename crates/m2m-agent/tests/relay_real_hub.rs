//! The relay end to end in one process: SDK agents through the real hub (`m2m-hub`, in
//! memory) — relay-only agents on both sides, request/response on the relayed session,
//! broadcast over both routes, a receiver that reconnects under the same identity, a
//! destination that left. `tests/relay.rs` covers the same against a fake hub
//! that can also tamper; the network-namespace test (m2m-cli `tests/relay_netns.rs`) covers
//! a real NAT.

mod common;

use common::{RealHub, TestHub};
use m2m_agent::{json, Agent, AgentBuilder, BroadcastOptions, Identity, Reachable, Route};

fn agent(hub: &RealHub) -> AgentBuilder {
    common::agent(hub)
}

async fn relay_only(hub: &RealHub) -> Agent {
    agent(hub).relay_only(true).connect().await.unwrap()
}

#[tokio::test]
async fn relay_only_agents_talk_through_the_real_hub() {
    let hub = RealHub::start(0).await;
    let a = relay_only(&hub).await;
    let b = relay_only(&hub).await;
    assert_eq!(a.reachable(), Some(Reachable::Relay));
    assert!(b.address().ends_with(":0"), "{}", b.address());

    // The hub's record says how b is reached, and through which hub.
    let record = a.lookup(&b.id()).await.unwrap();
    assert_eq!(record.reachable, Some(Reachable::Relay), "{record:?}");
    assert_eq!(
        record.relay.as_deref(),
        Some(hub.url().as_str()),
        "{record:?}"
    );

    let sent = a.send(&b.id(), "chat", json!({"n": 1})).await.unwrap();
    assert_eq!(sent.route, Route::Relay);
    let got = b.next_message().await.unwrap();
    assert_eq!(got.from, a.id());
    assert_eq!(got.route, Route::Relay);
    assert!(got.authenticated, "the relayed session is the 2.1 session");
    assert_eq!(got.payload, json!({"n": 1}));

    b.on_request("sum", |req| async move {
        let v: Vec<i64> = req.payload_as()?;
        Ok(json!(v.iter().sum::<i64>()))
    });
    for i in 0..20i64 {
        let answer = a.request(&b.id(), "sum", json!([i, 1]), None).await;
        assert_eq!(answer.unwrap(), json!(i + 1));
    }
    let back = b.send(&a.id(), "chat", json!("hi")).await.unwrap();
    assert_eq!(back.route, Route::Relay);
    assert_eq!(a.next_message().await.unwrap().payload, json!("hi"));
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn broadcast_mixes_direct_and_relayed_recipients() {
    let hub = RealHub::start(0).await;
    let relayed = relay_only(&hub).await;
    let direct = agent(&hub).connect().await.unwrap();
    assert_eq!(
        direct.reachable(),
        Some(Reachable::Direct),
        "the probe reached it"
    );
    let sender = relay_only(&hub).await;
    let report = sender
        .broadcast("news", json!("x"), BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(
        (report.total, report.delivered, report.relayed),
        (2, 2, 1),
        "{report:?}"
    );
    assert_eq!(relayed.next_message().await.unwrap().route, Route::Relay);
    assert_eq!(direct.next_message().await.unwrap().route, Route::Direct);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_receiver_that_reconnects_is_reached_on_a_new_stream() {
    let hub = RealHub::start(0).await;
    let sender = relay_only(&hub).await;
    let key = Identity::generate(&mut rand::thread_rng());
    let first = agent(&hub)
        .relay_only(true)
        .identity(key.clone())
        .connect()
        .await
        .unwrap();
    let id = first.id();
    sender.send(&id, "m", json!(1)).await.unwrap();
    assert_eq!(first.next_message().await.unwrap().payload, json!(1));

    // It goes away and comes back under the same identity while the sender still holds its
    // relayed session: the hub closed that stream (`gone`), and the next send reaches the
    // new attachment on a new stream.
    first.disconnect().await.unwrap();
    let again = agent(&hub)
        .relay_only(true)
        .identity(key)
        .connect()
        .await
        .unwrap();
    assert_eq!(again.id(), id);
    let delivered = sender.send(&id, "m", json!(3)).await.unwrap();
    assert_eq!(delivered.route, Route::Relay);
    assert_eq!(again.next_message().await.unwrap().payload, json!(3));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_destination_that_left_is_a_clear_error() {
    let hub = RealHub::start(0).await;
    let sender = relay_only(&hub).await;
    let receiver = relay_only(&hub).await;
    let id = receiver.id();
    receiver.disconnect().await.unwrap();
    let no_queue = m2m_agent::SendOptions {
        queue: false,
        ttl: None,
    };
    let err = sender
        .send_with(&id, "m", json!(1), no_queue)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("offline"), "{text}");
    // By default it goes to the destination's mailbox instead (docs/MAILBOX.md).
    let queued = sender.send(&id, "m", json!(2)).await.unwrap();
    assert_eq!(queued.route, Route::Mailbox, "{queued:?}");
    hub.shutdown().await;
}
