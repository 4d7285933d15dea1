//! The SDK side of the mailbox (docs/MAILBOX.md) against a fake mailbox hub
//! (`common::mail_hub`): the key published and the subscription sent at every
//! registration (and neither with `mailbox(false)`); mail opened, checked, delivered once
//! with `route: Mailbox` and the original timestamp, and acked; duplicates, replays,
//! tampered, misaddressed, forged and expired mail dropped with the reason; sends and
//! requests to offline agents queued (sealed so that only the recipient opens them), or
//! not with `queue: false`; a response that comes by mail; a substituted key refused; and
//! the short-lived `fetch_mail`. Timeouts (and the ack delay) are set far beyond the tests'
//! bounded waits, so none fires on its own.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::mail_hub::MailHub;
use common::wait_event;
use m2m_agent::{
    fetch_mail, json, Agent, AgentBuilder, AgentError, AgentEvent, FetchMail, Identity, Message,
    RequestOptions, Route, SendOptions, Value,
};
use m2m_proto::mailbox::{open, seal, sealed_issued, MailBody, MailboxKey, MailboxKeys};

const LONG: Duration = Duration::from_secs(3600);

fn agent(hub: &MailHub) -> AgentBuilder {
    Agent::builder()
        .hub(&hub.url())
        .heartbeat_interval(LONG)
        .reconnect_delay(Duration::from_millis(50))
        .send_timeout(Duration::from_secs(60))
        .request_timeout(LONG)
        .hub_request_timeout(Duration::from_secs(60))
        // Acks go out on the hub's `mail_drained` (this hub sends one after every push),
        // never because a timer ran out.
        .configure(|c| c.mail_ack_delay = LONG)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn next(agent: &Agent) -> Message {
    tokio::time::timeout(Duration::from_secs(20), agent.next_message())
        .await
        .expect("no message came")
        .expect("agent stopped")
}

/// A body from `from` to `to`, sent a minute ago, expiring in an hour.
fn body(from: &Identity, to: &str, id: &str, payload: Value) -> MailBody {
    let now = now_ms();
    MailBody {
        from: from.agent_id().to_owned(),
        to: to.to_owned(),
        id: id.to_owned(),
        message_type: "note".into(),
        payload,
        correlation_id: Some(format!("cid-{id}")),
        sent_at: now - 60_000,
        expires_at: now + 3_600_000,
    }
}

/// The `mail` event the hub pushes for `body`, sealed by `sender` to `key`.
fn event(sender: &Identity, key: &MailboxKey, body: &MailBody) -> Value {
    let raw: [u8; 32] = B64.decode(&key.key).unwrap().try_into().unwrap();
    let sealed = seal(&mut rand::thread_rng(), sender, &raw, key.issued, body).unwrap();
    json!({"event":"mail","id":body.id,"from":body.from,"storedAt":now_ms(),
        "expiresAt":body.expires_at,"sealed":B64.encode(sealed)})
}

fn published(hub: &MailHub, id: &str) -> MailboxKey {
    serde_json::from_value(hub.mailbox_of(id).expect("no mailbox key published")).unwrap()
}

/// Opens a sealed `mail` request as its recipient `identity` would.
fn open_as(identity: &Identity, from: &str, req: &Value) -> MailBody {
    let sealed = B64.decode(req["sealed"].as_str().unwrap()).unwrap();
    let issued = sealed_issued(&sealed).unwrap();
    let secret = MailboxKeys::new(identity.clone())
        .secret_for(issued, now_ms())
        .unwrap();
    let id = req["id"].as_str().unwrap();
    open(&secret, identity.agent_id(), from, id, &sealed, now_ms())
        .unwrap()
        .body
}

/// An agent that registered once (its record and mailbox key are at the hub) and left:
/// its identity and id.
async fn registered_then_gone(hub: &MailHub) -> (Identity, String) {
    let identity = Identity::generate(&mut rand::thread_rng());
    let gone = agent(hub)
        .identity(identity.clone())
        .connect()
        .await
        .unwrap();
    let id = gone.id();
    gone.disconnect().await.unwrap();
    (identity, id)
}

#[tokio::test]
async fn key_published_and_subscribed_at_every_registration() {
    let hub = MailHub::start().await;
    let a = agent(&hub).connect().await.unwrap();
    hub.wait_until("a subscription", |h| h.requests("mailbox").len() == 1)
        .await;
    let key = published(&hub, &a.id());
    let identity = a.identity().public();
    key.verify(&identity, &a.id(), now_ms())
        .expect("the published key verifies under the agent's identity");
    // Reconnect: registered again, with the key, and subscribed again.
    let mut events = a.events();
    hub.kick(&a.id());
    wait_event(&mut events, |e| matches!(e, AgentEvent::Reconnected { .. })).await;
    hub.wait_until("a second subscription", |h| {
        h.requests("mailbox").len() == 2
    })
    .await;
    let registers = hub.requests("register");
    assert_eq!(registers.len(), 2);
    assert!(registers
        .iter()
        .all(|r| r["mailbox"]["key"] == key.key.as_str()));
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn mailbox_off_publishes_nothing_and_does_not_queue() {
    let hub = MailHub::start().await;
    let b = agent(&hub).connect().await.unwrap();
    let b_id = b.id();
    b.disconnect().await.unwrap();
    let a = agent(&hub).mailbox(false).connect().await.unwrap();
    assert!(hub.requests("register")[1].get("mailbox").is_none());
    let sent = a.send(&b_id, "note", json!(1)).await;
    assert_eq!(sent.unwrap_err(), AgentError::AgentOffline(b_id.clone()));
    // Only b subscribed; a never did, and queued nothing.
    assert_eq!(hub.requests("mailbox").len(), 1);
    assert!(hub.requests("mail").is_empty());
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn mail_is_delivered_once_with_its_sender_and_time_and_acked() {
    let hub = MailHub::start().await;
    let b = agent(&hub).connect().await.unwrap();
    hub.wait_until("a subscription", |h| !h.requests("mailbox").is_empty())
        .await;
    let key = published(&hub, &b.id());
    let sender = Identity::generate(&mut rand::thread_rng());
    let first = body(&sender, &b.id(), "m-1", json!({"hello": 1}));
    hub.store(&b.id(), event(&sender, &key, &first));
    let m = next(&b).await;
    assert_eq!(m.from, sender.agent_id());
    assert!(m.authenticated && m.encrypted);
    assert_eq!(m.route, Route::Mailbox);
    assert_eq!(m.via(), "mailbox");
    assert_eq!(
        m.timestamp, first.sent_at,
        "the sender's time, not the hub's"
    );
    assert_eq!(
        (m.message_type.as_str(), &m.payload),
        ("note", &json!({"hello": 1}))
    );
    assert_eq!(m.correlation_id.as_deref(), Some("cid-m-1"));
    hub.wait_until("the ack", |h| h.acked() == ["m-1"]).await;
    assert!(hub.stored(&b.id()).is_empty());

    // The hub pushes it again (a redelivery, or a replay after the ack): acked, not
    // delivered — the next message the application sees is the new one.
    hub.push(&b.id(), event(&sender, &key, &first));
    let second = body(&sender, &b.id(), "m-2", json!(2));
    hub.push(&b.id(), event(&sender, &key, &second));
    assert_eq!(next(&b).await.payload, json!(2));
    hub.wait_until("both acks", |h| h.acked().len() == 3).await;
    assert_eq!(hub.acked().iter().filter(|id| *id == "m-1").count(), 2);
    assert_eq!(b.mail_dropped().get("duplicate"), Some(&1));
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_mail_is_dropped_with_its_reason() {
    let hub = MailHub::start().await;
    let b = agent(&hub).connect().await.unwrap();
    let mut events = b.events();
    hub.wait_until("a subscription", |h| !h.requests("mailbox").is_empty())
        .await;
    let key = published(&hub, &b.id());
    let sender = Identity::generate(&mut rand::thread_rng());
    let me = b.id();

    // Tampered: one byte of the ciphertext flipped.
    let mut tampered = event(&sender, &key, &body(&sender, &me, "t-1", json!(1)));
    let mut bytes = B64.decode(tampered["sealed"].as_str().unwrap()).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    tampered["sealed"] = json!(B64.encode(bytes));
    // Sealed for another agent (the recipient is bound into the seal).
    let other = Identity::generate(&mut rand::thread_rng());
    let misaddressed = event(
        &sender,
        &key,
        &body(&sender, other.agent_id(), "t-2", json!(2)),
    );
    // Forged sender: the hub names someone else than the signer.
    let mut forged = event(&sender, &key, &body(&sender, &me, "t-3", json!(3)));
    forged["from"] = json!(other.agent_id());
    // Expired.
    let mut old = body(&sender, &me, "t-4", json!(4));
    old.expires_at = now_ms() - 1;
    let expired = event(&sender, &key, &old);
    let cases = [
        (tampered, "decryption_failed"),
        (misaddressed, "decryption_failed"),
        (forged, "forged_sender"),
        (expired, "expired"),
    ];
    for (event, reason) in cases {
        let id = event["id"].as_str().unwrap().to_owned();
        hub.push(&me, event);
        let dropped =
            wait_event(&mut events, |e| matches!(e, AgentEvent::MailDropped { .. })).await;
        let AgentEvent::MailDropped {
            id: got,
            reason: why,
            ..
        } = dropped
        else {
            unreachable!()
        };
        assert_eq!((got.as_str(), why.as_str()), (id.as_str(), reason));
    }
    // Then a good one: the first message the application sees.
    hub.push(
        &me,
        event(&sender, &key, &body(&sender, &me, "ok-1", json!("ok"))),
    );
    assert_eq!(next(&b).await.payload, json!("ok"));
    // Dropped mail is acked too (it can never become valid), and counted.
    hub.wait_until("all acks", |h| h.acked().len() == 5).await;
    let dropped = b.mail_dropped();
    assert_eq!(dropped.get("decryption_failed"), Some(&2));
    assert_eq!(dropped.get("forged_sender"), Some(&1));
    assert_eq!(dropped.get("expired"), Some(&1));
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn send_to_an_offline_agent_queues_sealed_mail_it_receives_later() {
    let hub = MailHub::start().await;
    let (b_identity, b_id) = registered_then_gone(&hub).await;
    let a = agent(&hub).connect().await.unwrap();

    let no_queue = SendOptions {
        queue: false,
        ..SendOptions::default()
    };
    let refused = a.send_with(&b_id, "note", json!(0), no_queue).await;
    assert_eq!(refused.unwrap_err(), AgentError::AgentOffline(b_id.clone()));
    assert!(hub.requests("mail").is_empty());

    let d = a.send(&b_id, "note", json!({"n": 1})).await.unwrap();
    assert!(!d.delivered);
    assert_eq!(d.route, Route::Mailbox);
    let queued = d.queued.clone().expect("queued");
    assert!(queued.queued);
    let shown = serde_json::to_value(&d).unwrap();
    assert_eq!(shown["queued"], json!(true));
    assert_eq!(shown["messageId"], json!(queued.message_id));
    let mail = hub.requests("mail");
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0]["to"], json!(b_id));
    assert_eq!(mail[0]["id"], json!(queued.message_id));
    // Only b opens it: the body is what a sent, signed by a, to b.
    let opened = open_as(&b_identity, &a.id(), &mail[0]);
    assert_eq!(
        (opened.from.as_str(), opened.to.as_str()),
        (a.id().as_str(), b_id.as_str())
    );
    assert_eq!(
        (opened.message_type.as_str(), &opened.payload),
        ("note", &json!({"n": 1}))
    );
    assert_eq!(
        opened.correlation_id.as_deref(),
        Some(d.correlation_id.as_str())
    );

    // b comes back with the same identity and gets it.
    let b = agent(&hub).identity(b_identity).connect().await.unwrap();
    let m = next(&b).await;
    assert_eq!(
        (m.from.as_str(), m.route),
        (a.id().as_str(), Route::Mailbox)
    );
    assert_eq!(m.payload, json!({"n": 1}));
    hub.wait_until("the ack", |h| h.acked() == [queued.message_id.clone()])
        .await;
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn a_substituted_mailbox_key_is_refused() {
    let hub = MailHub::start().await;
    let b = agent(&hub).connect().await.unwrap();
    let b_id = b.id();
    b.disconnect().await.unwrap();
    // The hub publishes a key of its own under b (signed by another identity).
    let mallory = Identity::generate(&mut rand::thread_rng());
    let forged = MailboxKeys::new(mallory.clone())
        .current(now_ms())
        .publish(&mallory);
    hub.substitute_mailbox(&b_id, serde_json::to_value(forged).unwrap());
    let a = agent(&hub).connect().await.unwrap();
    let sent = a.send(&b_id, "note", json!(1)).await;
    assert!(
        matches!(sent, Err(AgentError::InvalidMailboxKey { ref agent, .. }) if *agent == b_id),
        "{sent:?}"
    );
    assert!(
        hub.requests("mail").is_empty(),
        "nothing sealed to a forged key"
    );
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn a_queued_request_is_answered_by_mail() {
    let hub = MailHub::start().await;
    let (b_identity, b_id) = registered_then_gone(&hub).await;
    // a's address answers nobody, so b can only answer through a's mailbox.
    let a = agent(&hub).address("127.0.0.1:1").connect().await.unwrap();
    hub.wait_until("a's subscription", |h| h.requests("mailbox").len() == 2)
        .await;

    let fast = a.request(&b_id, "sum", json!([1, 2]), None).await;
    assert_eq!(fast.unwrap_err(), AgentError::AgentOffline(b_id.clone()));
    let options = RequestOptions {
        queue: true,
        timeout: Some(LONG),
    };
    let pending = {
        let a = a.clone();
        let b_id = b_id.clone();
        tokio::spawn(async move { a.request_with(&b_id, "sum", json!([1, 2]), options).await })
    };
    hub.wait_until("the queued request", |h| h.stored(&b_id).len() == 1)
        .await;

    let b = agent(&hub).identity(b_identity).connect().await.unwrap();
    let request = next(&b).await;
    assert_eq!(
        (request.route, request.payload.clone()),
        (Route::Mailbox, json!([1, 2]))
    );
    let back = b.respond(&request, json!(3)).await.unwrap();
    assert_eq!(
        back.route,
        Route::Mailbox,
        "a is unreachable: answered by mail"
    );
    let answer = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("no response came")
        .unwrap();
    assert_eq!(answer.unwrap(), json!(3));
    // The response went through a's mailbox, sealed by b.
    let mail = hub.requests("mail");
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[1]["to"], json!(a.id()));
    assert_eq!(
        open_as(a.identity(), &b_id, &mail[1]).message_type,
        "sum:response"
    );
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn fetch_mail_returns_the_mail_and_acks_it_without_registering() {
    let hub = MailHub::start().await;
    let me = Identity::generate(&mut rand::thread_rng());
    let key = MailboxKeys::new(me.clone()).current(now_ms()).publish(&me);
    let sender = Identity::generate(&mut rand::thread_rng());
    for (id, n) in [("f-1", 1), ("f-2", 2)] {
        hub.store(
            me.agent_id(),
            event(&sender, &key, &body(&sender, me.agent_id(), id, json!(n))),
        );
    }
    let mut got = Vec::new();
    let report = fetch_mail(FetchMail::new(&hub.url(), me.clone()), |m| got.push(m))
        .await
        .unwrap();
    assert_eq!(report.delivered, 2);
    assert!(report.dropped.is_empty());
    let payloads: Vec<&Value> = got.iter().map(|m| &m.payload).collect();
    assert_eq!(payloads, [&json!(1), &json!(2)]);
    assert!(got
        .iter()
        .all(|m| m.route == Route::Mailbox && m.authenticated));
    assert_eq!(hub.acked(), ["f-1", "f-2"]);
    assert!(hub.stored(me.agent_id()).is_empty());
    assert!(
        hub.requests("register").is_empty(),
        "an inbox fetch does not register"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn fetch_mail_waits_for_mail_when_none_is_pending() {
    let hub = MailHub::start().await;
    let me = Identity::generate(&mut rand::thread_rng());
    let key = MailboxKeys::new(me.clone()).current(now_ms()).publish(&me);
    let sender = Identity::generate(&mut rand::thread_rng());
    let mut options = FetchMail::new(&hub.url(), me.clone());
    // Far longer than the test's bounded wait: it returns because mail came, not because
    // the wait ran out.
    options.wait = LONG;
    let fetching = tokio::spawn(async move {
        let mut got = Vec::new();
        let report = fetch_mail(options, |m| got.push(m)).await;
        (report, got)
    });
    hub.wait_until("the subscription", |h| h.requests("mailbox").len() == 1)
        .await;
    let late = body(&sender, me.agent_id(), "late-1", json!("late"));
    hub.store(me.agent_id(), event(&sender, &key, &late));
    let (report, got) = tokio::time::timeout(Duration::from_secs(20), fetching)
        .await
        .expect("fetch did not return once the mail was drained")
        .unwrap();
    assert_eq!(report.unwrap().delivered, 1);
    assert_eq!(got[0].payload, json!("late"));
    assert_eq!(hub.acked(), ["late-1"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_restarted_agent_with_a_state_file_drops_a_replay() {
    let hub = MailHub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("mailbox-seen.json");
    let me = Identity::generate(&mut rand::thread_rng());
    let sender = Identity::generate(&mut rand::thread_rng());
    let b = agent(&hub)
        .identity(me.clone())
        .mailbox_state(&state)
        .connect()
        .await
        .unwrap();
    hub.wait_until("a subscription", |h| h.requests("mailbox").len() == 1)
        .await;
    let key = published(&hub, &b.id());
    let once = body(&sender, &b.id(), "r-1", json!("once"));
    hub.store(&b.id(), event(&sender, &key, &once));
    assert_eq!(next(&b).await.payload, json!("once"));
    hub.wait_until("the ack", |h| h.acked() == ["r-1"]).await;
    b.disconnect().await.unwrap();

    // The same agent, restarted: the hub (or someone) pushes the acked message again.
    let b = agent(&hub)
        .identity(me)
        .mailbox_state(&state)
        .connect()
        .await
        .unwrap();
    hub.wait_until("a second subscription", |h| {
        h.requests("mailbox").len() == 2
    })
    .await;
    hub.push(&b.id(), event(&sender, &key, &once));
    let fresh = body(&sender, &b.id(), "r-2", json!("fresh"));
    hub.push(&b.id(), event(&sender, &key, &fresh));
    assert_eq!(next(&b).await.payload, json!("fresh"));
    assert_eq!(b.mail_dropped().get("duplicate"), Some(&1));
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn broadcast_queues_for_a_recipient_no_route_reaches() {
    let hub = MailHub::start().await;
    let reached = agent(&hub).connect().await.unwrap();
    // Online, but its address answers nobody (and this hub relays nothing).
    let b_identity = Identity::generate(&mut rand::thread_rng());
    let unreachable = agent(&hub)
        .identity(b_identity.clone())
        .address("127.0.0.1:1")
        .connect()
        .await
        .unwrap();
    let a = agent(&hub).connect().await.unwrap();
    let report = a
        .broadcast("news", json!("hi"), m2m_agent::BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!(
        (report.total, report.delivered, report.queued, report.failed),
        (2, 1, 1, 0)
    );
    assert_eq!(serde_json::to_value(&report).unwrap()["queued"], json!(1));
    assert_eq!(next(&reached).await.payload, json!("hi"));
    let m = next(&unreachable).await;
    assert_eq!((m.route, &m.payload), (Route::Mailbox, &json!("hi")));
    let mail = hub.requests("mail");
    assert_eq!(open_as(&b_identity, &a.id(), &mail[0]).message_type, "news");

    // Without queueing, it is a failure as before.
    let report = a
        .broadcast(
            "news",
            json!(2),
            m2m_agent::BroadcastOptions::new().queue(false),
        )
        .await
        .unwrap();
    assert_eq!((report.delivered, report.queued, report.failed), (1, 0, 1));
    assert!(serde_json::to_value(&report)
        .unwrap()
        .get("queued")
        .is_none());
    for agent in [a, reached, unreachable] {
        agent.disconnect().await.unwrap();
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_hub_that_keeps_no_mail_leaves_the_send_error_as_it_was() {
    let hub = MailHub::start().await;
    let b = agent(&hub).connect().await.unwrap();
    let b_id = b.id();
    b.disconnect().await.unwrap();
    hub.turn_mail_off();
    let a = agent(&hub).connect().await.unwrap();
    let sent = a.send(&b_id, "note", json!(1)).await;
    assert_eq!(sent.unwrap_err(), AgentError::AgentOffline(b_id.clone()));
    assert_eq!(
        hub.requests("mail").len(),
        1,
        "it tried, and the hub said no"
    );
    a.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// Paused time: the ack delay is the only timer that can fire (every other is an hour).
#[tokio::test(start_paused = true)]
async fn acks_are_batched_over_the_ack_delay() {
    const DELAY: Duration = Duration::from_secs(5);
    let hub = MailHub::start().await;
    let b = agent(&hub)
        .configure(|c| c.mail_ack_delay = DELAY)
        .connect()
        .await
        .unwrap();
    hub.wait_until("a subscription", |h| h.requests("mailbox").len() == 1)
        .await;
    hub.stop_draining();
    let key = published(&hub, &b.id());
    let sender = Identity::generate(&mut rand::thread_rng());
    let start = tokio::time::Instant::now();
    for id in ["b-1", "b-2", "b-3"] {
        hub.push(
            &b.id(),
            event(&sender, &key, &body(&sender, &b.id(), id, json!(id))),
        );
    }
    for id in ["b-1", "b-2", "b-3"] {
        // No timeout of the test's own here: with paused time it would be the first timer.
        assert_eq!(b.next_message().await.unwrap().payload, json!(id));
    }
    hub.wait_until("an ack", |h| !h.acked().is_empty()).await;
    // Not one ack per message as it came: the first waited for the delay.
    let waited = start.elapsed();
    assert!(waited >= DELAY, "acked before the delay: {waited:?}");
    hub.wait_until("all acks", |h| h.acked() == ["b-1", "b-2", "b-3"])
        .await;
    b.disconnect().await.unwrap();
    hub.shutdown().await;
}
