//! 2.1 authenticated identities (PROTOCOL.md B, docs/SECURITY.md), end to end: each test
//! shows a protection doing its job, and would fail without it.

mod common;

use std::time::Duration;

use common::{agent, FakeHub, TestHub};
use m2m_agent::{json, Agent, AgentError, Identity, Message, Value};
use m2m_proto::{Initiator, InitiatorEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

on_both_hubs!(
    messages_carry_the_verified_id,
    a_given_identity_keeps_its_id,
    request_is_answered_on_the_requesting_connection,
    a_2_0_initiator_is_served_unauthenticated,
    authenticated_only_refuses_2_0_initiators,
);

/// Two processes with one identity: the newer registration wins, and the older agent stops
/// instead of taking it back (which would have them take turns for ever).
#[tokio::test]
async fn a_second_process_with_the_same_identity_supersedes_the_first() {
    let hub = common::RealHub::start(0).await;
    let identity = Identity::from_secret_bytes(&[9u8; 32]);
    let builder = agent(&hub).identity(identity.clone());
    let mut events = builder.events();
    let first = builder.connect().await.unwrap();
    let second = agent(&hub)
        .identity(identity.clone())
        .connect()
        .await
        .unwrap();
    let lost = common::wait_event(&mut events, |e| {
        matches!(e, m2m_agent::AgentEvent::Disconnected { .. })
    })
    .await;
    let m2m_agent::AgentEvent::Disconnected { reason } = lost else {
        unreachable!()
    };
    assert!(reason.starts_with("superseded"), "{reason}");
    // The hub's record is the second process's: messages to the id reach it.
    let other = agent(&hub).connect().await.unwrap();
    other
        .send(identity.agent_id(), "hi", json!({}))
        .await
        .unwrap();
    let m = next(&second).await;
    assert_eq!(m.message_type, "hi");
    for x in [&first, &second, &other] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

async fn next(agent: &Agent) -> Message {
    tokio::time::timeout(Duration::from_secs(10), agent.next_message())
        .await
        .expect("no message")
        .expect("stream ended")
}

fn local(agent: &Agent) -> String {
    format!("127.0.0.1:{}", agent.local_port())
}

/// A port nobody listens on.
async fn dead_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn messages_carry_the_verified_id<H: TestHub>() {
    let hub = H::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let b = agent(&hub).connect().await.unwrap();
    assert!(a.hub_verified() && b.hub_verified());
    assert_eq!(a.id(), a.identity().agent_id());

    a.send(&b.id(), "hello", json!(1)).await.unwrap();
    let m = next(&b).await;
    assert!(m.authenticated);
    assert_eq!(m.from, a.id());
    b.send(&a.id(), "back", json!(2)).await.unwrap();
    let m = next(&a).await;
    assert!(m.authenticated);
    assert_eq!(m.from, b.id());

    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

async fn a_given_identity_keeps_its_id<H: TestHub>() {
    let hub = H::start(0).await;
    let identity = Identity::from_secret_bytes(&[7u8; 32]);
    let first = agent(&hub)
        .identity(identity.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(first.id(), identity.agent_id());
    first.disconnect().await.unwrap();
    // A restart with the same key is the same agent.
    let again = agent(&hub)
        .identity(identity.clone())
        .connect()
        .await
        .unwrap();
    assert_eq!(again.id(), identity.agent_id());
    let other = agent(&hub).connect().await.unwrap();
    assert_ne!(other.id(), again.id());
    other.send(&again.id(), "hi", json!({})).await.unwrap();
    assert_eq!(next(&again).await.from, other.id());
    again.disconnect().await.unwrap();
    other.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// The requester advertises an address nobody listens on (think NAT): the 2.0 way of
/// answering — a new connection to that address — cannot work, the same connection does.
async fn request_is_answered_on_the_requesting_connection<H: TestHub>() {
    let hub = H::start(0).await;
    let unreachable = format!("127.0.0.1:{}", dead_port().await);
    let asker = agent(&hub).address(&unreachable).connect().await.unwrap();
    assert_eq!(asker.address(), unreachable);
    let worker = agent(&hub).connect().await.unwrap();

    let w = worker.clone();
    worker.on_message(move |msg| {
        let w = w.clone();
        async move {
            assert!(msg.authenticated);
            let n = msg.payload["n"].as_i64().unwrap_or(0);
            w.respond(&msg, json!({ "double": n * 2 })).await.unwrap();
        }
    });
    for n in 0..5 {
        let answer = asker
            .request(
                &worker.id(),
                "double",
                json!({ "n": n }),
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap();
        assert_eq!(answer, json!({ "double": n * 2 }));
    }

    // A response the worker sends back that no request waits for is dropped (issue 13 #8:
    // it would otherwise reach the asker's application as an authenticated message). The
    // worker answers in order on one connection, so once the next request is answered the
    // `late:response` has arrived before it — and is not in the asker's queue.
    asker
        .send(&worker.id(), "late", json!({ "n": 4 }))
        .await
        .unwrap();
    let answer = asker
        .request(&worker.id(), "double", json!({ "n": 6 }), None)
        .await
        .unwrap();
    assert_eq!(answer, json!({ "double": 12 }));
    let queued = futures_util::FutureExt::now_or_never(asker.next_message());
    assert!(queued.is_none(), "{queued:?}");
    asker.disconnect().await.unwrap();
    worker.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// A raw 2.0 client: handshake without identity, one message; returns the reply lines.
async fn raw_2_0_send(address: &str, from: &str) -> Vec<Value> {
    let stream = TcpStream::connect(address).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let (mut init, hello) = Initiator::new(from, &mut rand::thread_rng());
    w.write_all(&hello.encode()).await.unwrap();
    let mut replies = Vec::new();
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let ack: Value = serde_json::from_str(&line).unwrap();
    replies.push(ack.clone());
    if init.handle_line(line.trim_end().as_bytes()) != Ok(InitiatorEvent::Established) {
        return replies;
    }
    let msg = init
        .seal(
            "old",
            &json!({"v": "2.0"}),
            Some(json!("c1")),
            &mut rand::thread_rng(),
        )
        .unwrap();
    w.write_all(&msg.encode()).await.unwrap();
    line.clear();
    if r.read_line(&mut line).await.unwrap_or(0) > 0 {
        replies.push(serde_json::from_str(&line).unwrap());
    }
    replies
}

async fn a_2_0_initiator_is_served_unauthenticated<H: TestHub>() {
    let hub = H::start(0).await;
    let b = agent(&hub).connect().await.unwrap();
    let replies = raw_2_0_send(&local(&b), "an-old-agent").await;
    // A plain 2.0 answer: no identity, no signature.
    assert_eq!(replies[0]["type"], "handshake_ack");
    assert!(replies[0].get("identity").is_none());
    assert_eq!(replies[1], json!({"type":"ack","correlationId":"c1"}));
    let m = next(&b).await;
    assert_eq!(m.from, "an-old-agent");
    assert!(!m.authenticated);
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

async fn authenticated_only_refuses_2_0_initiators<H: TestHub>() {
    let hub = H::start(0).await;
    let strict = agent(&hub)
        .authenticated_peers_only(true)
        .connect()
        .await
        .unwrap();
    let replies = raw_2_0_send(&local(&strict), "an-old-agent").await;
    assert_eq!(replies, [json!({"error":"authentication_required"})]);
    // 2.1 peers still get through, and theirs is the first message the strict agent sees.
    let a = agent(&hub).connect().await.unwrap();
    a.send(&strict.id(), "marker", json!({})).await.unwrap();
    let m = next(&strict).await;
    assert_eq!((m.message_type.as_str(), m.authenticated), ("marker", true));
    strict.disconnect().await.unwrap();
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// The hub hands out a third agent's address under the real peer's id (and identity): the
/// send fails authentication instead of reaching the third agent, also when a session to
/// that address made under another expectation is already pooled.
#[tokio::test]
async fn a_lying_hub_cannot_redirect_a_send() {
    let hub = FakeHub::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let b = agent(&hub).connect().await.unwrap();
    let mallory = agent(&hub).connect().await.unwrap();

    // A live pooled session to mallory's address, expecting mallory.
    a.send(&mallory.id(), "first", json!(1)).await.unwrap();
    assert_eq!(next(&mallory).await.message_type, "first");

    hub.lie_about(&b.id(), &local(&mallory));
    let sent = a.send(&b.id(), "secret", json!("for b only")).await;
    assert!(
        matches!(sent, Err(AgentError::Authentication { .. })),
        "{sent:?}"
    );
    // Mallory got nothing: the next message it sees is the honest one after the attempt.
    a.send(&mallory.id(), "second", json!(2)).await.unwrap();
    assert_eq!(next(&mallory).await.message_type, "second");

    // Pointing at a 2.0 responder instead is a downgrade, refused as well.
    let old_hub = FakeHub::start_v20(0).await;
    let old = agent(&old_hub).connect().await.unwrap();
    assert!(!old.hub_verified());
    hub.lie_about(&b.id(), &local(&old));
    let sent = a.send(&b.id(), "secret", json!("for b only")).await;
    assert!(
        matches!(sent, Err(AgentError::Authentication { .. })),
        "{sent:?}"
    );
    old.send_direct(&local(&old), "marker", json!({}))
        .await
        .unwrap();
    assert_eq!(next(&old).await.message_type, "marker");

    for x in [&a, &b, &mallory, &old] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
    old_hub.shutdown().await;
}

/// The hub publishes mallory's key and address under b's id: mallory could prove that key,
/// but the id is the hash of the key, so the record is refused before anyone is dialled.
#[tokio::test]
async fn a_hub_cannot_file_another_key_under_an_id() {
    let hub = FakeHub::start(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let b = agent(&hub).connect().await.unwrap();
    let mallory = agent(&hub).connect().await.unwrap();
    hub.lie_about(&b.id(), &local(&mallory));
    hub.lie_about_identity(&b.id(), &mallory.identity().public().to_b64());
    let sent = a.send(&b.id(), "secret", json!("for b only")).await;
    assert!(
        matches!(sent, Err(AgentError::Authentication { .. })),
        "{sent:?}"
    );
    a.send(&mallory.id(), "marker", json!({})).await.unwrap();
    assert_eq!(next(&mallory).await.message_type, "marker");
    for x in [&a, &b, &mallory] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

/// On a 2.0 hub the agent registers the 2.0 way: random ids (new on every reconnect), plain
/// 2.0 sessions, `authenticated: false`; request/respond works the 2.0 way.
#[tokio::test]
async fn a_2_1_agent_on_a_2_0_hub_speaks_2_0() {
    let hub = FakeHub::start_v20(0).await;
    let a = agent(&hub).connect().await.unwrap();
    let b = agent(&hub).connect().await.unwrap();
    assert!(!a.hub_verified());
    assert_ne!(a.id(), a.identity().agent_id());

    a.send(&b.id(), "hello", json!(1)).await.unwrap();
    let m = next(&b).await;
    assert_eq!(m.from, a.id());
    assert!(!m.authenticated);

    let w = b.clone();
    b.on_message(move |msg| {
        let w = w.clone();
        async move {
            w.respond(&msg, json!("pong")).await.unwrap();
        }
    });
    let answer = a
        .request(&b.id(), "ping", json!({}), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(answer, json!("pong"));
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// A 2.1 agent and an agent stuck with 2.0 (registered at a 2.0 hub) talk, unauthenticated,
/// both ways; the 2.1 agent refuses that when it demands authenticated peers.
#[tokio::test]
async fn a_2_0_peer_works_unless_authentication_is_required() {
    let hub = FakeHub::start(0).await;
    let old_hub = FakeHub::start_v20(0).await;
    let new = agent(&hub).connect().await.unwrap();
    let old = agent(&old_hub).connect().await.unwrap();

    new.send_direct(&local(&old), "to-old", json!(1))
        .await
        .unwrap();
    let m = next(&old).await;
    assert_eq!(m.message_type, "to-old");
    assert!(!m.authenticated);
    old.send_direct(&local(&new), "to-new", json!(2))
        .await
        .unwrap();
    let m = next(&new).await;
    assert_eq!(
        (m.from.as_str(), m.authenticated),
        (old.id().as_str(), false)
    );

    let strict = agent(&hub)
        .authenticated_peers_only(true)
        .connect()
        .await
        .unwrap();
    let sent = strict.send_direct(&local(&old), "to-old", json!(3)).await;
    assert!(
        matches!(sent, Err(AgentError::Authentication { .. })),
        "{sent:?}"
    );
    let sent = old
        .send_direct(&local(&strict), "to-strict", json!(4))
        .await;
    assert!(
        matches!(&sent, Err(AgentError::Peer { error, .. }) if error == "authentication_required"),
        "{sent:?}"
    );
    // Neither got the refused message.
    new.send_direct(&local(&old), "marker", json!({}))
        .await
        .unwrap();
    assert_eq!(next(&old).await.message_type, "marker");

    for x in [&new, &old, &strict] {
        x.disconnect().await.unwrap();
    }
    hub.shutdown().await;
    old_hub.shutdown().await;
}
