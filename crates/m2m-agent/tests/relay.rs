//! The relay (docs/RELAY.md) against a fake relaying hub (`common::fake_hub`,
//! `FakeHub::start_relay`): relay-only agents on both sides, request/response on the same
//! session, broadcast over both routes, a receiver that reconnects, a destination that is
//! not attached, backpressure, the fallback from a direct dial that never answers, and a
//! tampering hub that can neither forge, replay, reorder nor misattribute session bytes.

mod common;

use std::time::Duration;

use common::fake_hub::Tamper;
use common::{wait_event, FakeHub};
use m2m_agent::{
    json, Agent, AgentBuilder, AgentError, AgentEvent, BroadcastOptions, CloseReason, Message,
    Reachable, Route,
};

const WINDOW: u32 = 256 * 1024;

/// An agent on `hub` with timings that never fire on their own in a paused-time test.
fn agent(hub: &FakeHub) -> AgentBuilder {
    Agent::builder()
        .hub(&hub.url())
        .heartbeat_interval(Duration::from_secs(3600))
        .reconnect_delay(Duration::from_millis(50))
        .send_timeout(Duration::from_secs(3600))
        .request_timeout(Duration::from_secs(3600))
        .hub_request_timeout(Duration::from_secs(3600))
        .configure(|c| {
            c.pool_idle_close = Duration::from_secs(3600);
            c.handshake_timeout = Duration::from_secs(3600);
            c.idle_timeout = Duration::from_secs(7200);
        })
}

async fn relay_only(hub: &FakeHub) -> Agent {
    agent(hub).relay_only(true).connect().await.unwrap()
}

/// The next message, or `None` if none comes within `wait`.
async fn next_within(agent: &Agent, wait: Duration) -> Option<Message> {
    tokio::time::timeout(wait, agent.next_message())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn relay_only_agents_send_and_request() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let a = relay_only(&hub).await;
    let b = relay_only(&hub).await;
    assert_eq!(a.local_port(), 0, "a relay-only agent listens on nothing");
    assert_eq!(b.reachable(), Some(Reachable::Relay));
    assert!(b.address().ends_with(":0"), "{}", b.address());

    let d = a.send(&b.id(), "chat", json!({"n": 1})).await.unwrap();
    assert_eq!(d.route, Route::Relay);
    let m = b.next_message().await.unwrap();
    assert_eq!((m.from.as_str(), m.route), (a.id().as_str(), Route::Relay));
    assert!(m.authenticated && m.encrypted);
    assert_eq!(m.payload, json!({"n": 1}));

    b.on_request("sum", |req| async move {
        let v: Vec<i64> = req.payload_as()?;
        Ok(json!(v.iter().sum::<i64>()))
    });
    let answer = a.request(&b.id(), "sum", json!([1, 2, 3]), None).await;
    assert_eq!(answer.unwrap(), json!(6));
    // And the other way, both through the relay.
    let back = b.send(&a.id(), "chat", json!("hi")).await.unwrap();
    assert_eq!(back.route, Route::Relay);
    assert_eq!(a.next_message().await.unwrap().payload, json!("hi"));
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn broadcast_reaches_direct_and_relayed_recipients() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let relayed = relay_only(&hub).await;
    let direct = agent(&hub).connect().await.unwrap();
    let sender = agent(&hub).connect().await.unwrap();
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
async fn a_receiver_that_reconnects_gets_the_next_send_on_a_new_stream() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let a = relay_only(&hub).await;
    let b = relay_only(&hub).await;
    let mut events = b.events();
    a.send(&b.id(), "one", json!(1)).await.unwrap();
    assert_eq!(b.next_message().await.unwrap().message_type, "one");
    hub.kick(&b.id());
    let e = wait_event(&mut events, |e| matches!(e, AgentEvent::Reconnected { .. })).await;
    assert!(matches!(
        e,
        AgentEvent::Reconnected {
            reachable: Some(Reachable::Relay),
            ..
        }
    ));
    let d = a.send(&b.id(), "two", json!(2)).await.unwrap();
    assert_eq!(d.route, Route::Relay);
    assert_eq!(b.next_message().await.unwrap().message_type, "two");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_destination_not_attached_is_a_clear_error() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let a = relay_only(&hub).await;
    let b = relay_only(&hub).await;
    hub.detach(&b.id());
    let e = a.send(&b.id(), "chat", json!(1)).await.unwrap_err();
    assert!(
        matches!(
            &e,
            AgentError::RelayClosed {
                reason: CloseReason::Unreachable,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("not attached to its hub"), "{e}");
}

#[tokio::test]
async fn only_the_relay_helps_on_a_20_hub_or_without_it() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let b = relay_only(&hub).await;
    let a = agent(&hub).relay(false).connect().await.unwrap();
    let e = a.send(&b.id(), "chat", json!(1)).await.unwrap_err();
    assert!(matches!(e, AgentError::NoRoute { .. }), "{e:?}");
    let old = FakeHub::start_v20(0).await;
    let e = agent(&old).relay_only(true).connect().await.unwrap_err();
    assert!(e.to_string().contains("2.1 hub"), "{e}");
}

/// A receiver that does not read stops its sender (no credit, no acks) without losing a
/// byte: everything arrives once it reads. (Real time: paused time jumps over the real
/// sockets of the hub while bytes are in flight.)
#[tokio::test]
async fn a_reader_that_does_not_read_stops_the_sender_without_loss() {
    let hub = FakeHub::start_relay(16 * 1024).await;
    let a = relay_only(&hub).await;
    let b = agent(&hub)
        .relay_only(true)
        .inbox_capacity(1)
        .connect()
        .await
        .unwrap();
    let n = 24;
    let big = "z".repeat(8 * 1024);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..n {
        let (a, id, payload) = (a.clone(), b.id(), json!({"i": i, "pad": big}));
        sends.spawn(async move { a.send(&id, "bulk", payload).await });
        // In order of i.
        tokio::task::yield_now().await;
    }
    // Not a wait for something to happen: the sends must not complete while nobody reads.
    let _ = tokio::time::timeout(Duration::from_millis(500), std::future::pending::<()>()).await;
    let mut done = 0;
    while let Some(r) = sends.try_join_next() {
        r.unwrap().unwrap();
        done += 1;
    }
    assert!(
        done < n / 2,
        "{done} of {n} sends completed with nobody reading"
    );
    let mut seen = Vec::new();
    while seen.len() < n {
        let m = b.next_message().await.unwrap();
        assert_eq!(m.payload["pad"], json!(big));
        seen.push(m.payload["i"].as_u64().unwrap() as usize);
    }
    while let Some(r) = sends.join_next().await {
        r.unwrap().unwrap();
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>());
    assert!(next_within(&b, Duration::from_millis(200)).await.is_none());
}

/// A record whose address never answers (a listener that never accepts: the connect
/// succeeds, the handshake never comes): after `direct_connect_timeout` the send goes
/// through the relay.
#[tokio::test]
async fn a_direct_dial_that_never_answers_falls_back_to_the_relay() {
    let hub = FakeHub::start_relay(WINDOW).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let b = agent(&hub)
        .address(&format!("127.0.0.1:{port}"))
        .connect()
        .await
        .unwrap();
    let a = agent(&hub)
        .direct_connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let d = a.send(&b.id(), "chat", json!(1)).await.unwrap();
    assert_eq!(d.route, Route::Relay);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let m = b.next_message().await.unwrap();
    assert_eq!(m.route, Route::Relay);
    drop(silent);
}

/// Runs `tamper` on a fresh pair and returns the sender's results of two sends (sent
/// together) and what reached the receiver's application.
async fn tampered(tamper: Tamper) -> (Vec<Result<(), AgentError>>, Vec<Message>) {
    let hub = FakeHub::start_relay(WINDOW).await;
    // A held-back line (reorder) may never be released: the send then times out.
    let a = agent(&hub)
        .relay_only(true)
        .send_timeout(Duration::from_secs(3))
        .connect()
        .await
        .unwrap();
    let b = relay_only(&hub).await;
    hub.tamper(tamper);
    let id = b.id();
    let (one, two) = tokio::join!(
        a.send(&id, "chat", json!("first")),
        a.send(&id, "chat", json!("second")),
    );
    let mut got = Vec::new();
    while let Some(m) = next_within(&b, Duration::from_secs(2)).await {
        got.push(m);
    }
    (vec![one.map(|_| ()), two.map(|_| ())], got)
}

fn genuine(got: &[Message]) -> Vec<String> {
    got.iter()
        .map(|m| {
            assert_ne!(m.correlation_id.as_deref(), Some("forged"));
            m.payload.as_str().unwrap_or("?").to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_flipped_bit_fails_decryption() {
    let (sent, got) = tampered(Tamper::FlipBit).await;
    assert!(sent[0].is_err(), "{sent:?}");
    let delivered = genuine(&got);
    assert!(!delivered.contains(&"first".to_owned()), "{delivered:?}");
}

#[tokio::test]
async fn an_injected_frame_reaches_nobody() {
    let (sent, got) = tampered(Tamper::Inject).await;
    // The receiver refused the forged line (the sender hears of it); only what the sender
    // sealed reached the application.
    assert!(sent.iter().any(Result::is_err), "{sent:?}");
    let delivered = genuine(&got);
    assert!(
        delivered.iter().all(|p| p == "first" || p == "second"),
        "{delivered:?}"
    );
}

#[tokio::test]
async fn a_replayed_frame_is_refused() {
    let (sent, got) = tampered(Tamper::Replay).await;
    let mut delivered = genuine(&got);
    let all = delivered.len();
    delivered.dedup();
    assert_eq!(
        all,
        delivered.len(),
        "the replay was delivered: {delivered:?}"
    );
    assert!(sent.iter().any(Result::is_err), "{sent:?}");
}

#[tokio::test]
async fn reordered_frames_are_refused() {
    let (sent, got) = tampered(Tamper::Reorder).await;
    let delivered = genuine(&got);
    assert!(
        delivered.is_empty() || delivered == ["first"],
        "{delivered:?}"
    );
    assert!(sent.iter().any(Result::is_err), "{sent:?}");
}

#[tokio::test]
async fn a_wrong_source_stamp_fails_authentication() {
    let (sent, got) = tampered(Tamper::WrongSource).await;
    assert!(sent.iter().all(Result::is_err), "{sent:?}");
    assert!(got.is_empty(), "{:?}", genuine(&got));
}
