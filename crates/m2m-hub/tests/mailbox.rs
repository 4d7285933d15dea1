//! The hub side of the mailbox (docs/MAILBOX.md sections 1, 3, 5), over real WebSockets
//! with real 2.1 identities and real sealed mail (`m2m_proto::mailbox::seal` / `open`):
//! the hub stores and delivers bytes it cannot open, alter or re-attribute.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{config, Backend, Client, TestDb, T0};
use m2m_hub::{Hub, HubConfig, ManualClock, RunningHub};
use m2m_proto::identity::{registration_message, relay_attach_message, Identity, IdentityKey};
use m2m_proto::mailbox::{open, seal, MailBody, MailboxKey, MailboxKeys, OpenError};
use serde_json::{json, Value};
use sqlx::Connection;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn identity() -> Identity {
    Identity::generate(&mut rand::thread_rng())
}

/// The mailbox key `me` publishes at the tests' clock.
fn published(me: &Identity) -> MailboxKey {
    MailboxKeys::new(me.clone()).current(T0 as u64).publish(me)
}

/// A 2.1 `register` of `me` with `mailbox` as its key (any JSON); the raw reply.
async fn register_with(c: &mut Client, me: &Identity, mailbox: Value) -> Value {
    let caps = vec!["chat".to_owned()];
    let message = registration_message(&c.nonce, &me.public(), "10.0.0.1:4001", &caps);
    c.req(json!({
        "action": "register",
        "address": "10.0.0.1:4001",
        "capabilities": caps,
        "identity": me.public().to_b64(),
        "signature": me.sign_b64(&message),
        "mailbox": mailbox,
        "correlationId": "r",
    }))
    .await
}

/// A connected, registered agent publishing its mailbox key.
async fn agent(hub: &RunningHub, me: &Identity) -> Client {
    let mut c = Client::connect(&hub.ws_url()).await;
    let reply = register_with(&mut c, me, serde_json::to_value(published(me)).unwrap()).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["id"], me.agent_id());
    c
}

/// Seals `text` from `from` to `to` as a sender does: the key from `to`'s record,
/// verified against the record's identity first.
async fn sealed_to(c: &mut Client, from: &Identity, to: &str, id: &str, text: &str) -> String {
    let record = c.req(json!({"action":"lookup","id":to})).await;
    let key: MailboxKey = serde_json::from_value(record["agent"]["mailbox"].clone()).unwrap();
    let identity = IdentityKey::from_b64(record["agent"]["identity"].as_str().unwrap()).unwrap();
    let raw = key.verify(&identity, to, T0 as u64).unwrap();
    let body = MailBody {
        from: from.agent_id().to_owned(),
        to: to.to_owned(),
        id: id.to_owned(),
        message_type: "note".into(),
        payload: json!({ "text": text }),
        correlation_id: None,
        sent_at: T0 as u64,
        expires_at: T0 as u64 + 7 * 24 * 3600 * 1000,
    };
    B64.encode(seal(&mut rand::thread_rng(), from, &raw, key.issued, &body).unwrap())
}

/// Sends one `mail`; the raw reply.
async fn mail(c: &mut Client, to: &str, id: &str, sealed: &str, ttl: Option<i64>) -> Value {
    let mut req = json!({"action":"mail","correlationId":"m","to":to,"id":id,"sealed":sealed});
    if let Some(ttl) = ttl {
        req["ttl"] = json!(ttl);
    }
    c.req(req).await
}

/// Opens a pushed `mail` event as `me`; the text of its payload.
fn opened(me: &Identity, event: &Value) -> Result<String, OpenError> {
    assert_eq!(event["event"], "mail", "{event}");
    let sealed = B64.decode(event["sealed"].as_str().unwrap()).unwrap();
    let issued = m2m_proto::mailbox::sealed_issued(&sealed)?;
    let secret = MailboxKeys::new(me.clone())
        .secret_for(issued, T0 as u64)
        .ok_or(OpenError::UnknownKey)?;
    let o = open(
        &secret,
        me.agent_id(),
        event["from"].as_str().unwrap(),
        event["id"].as_str().unwrap(),
        &sealed,
        T0 as u64,
    )?;
    Ok(o.body.payload["text"].as_str().unwrap().to_owned())
}

/// Subscribes `c`; the `pending` of the reply.
async fn subscribe(c: &mut Client) -> u64 {
    let reply = c.req(json!({"action":"mailbox","correlationId":"s"})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["pending"].as_u64().unwrap()
}

async fn ack(c: &mut Client, ids: &[&str]) -> u64 {
    let reply = c
        .req(json!({"action":"mail_ack","correlationId":"a","ids":ids}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    reply["acked"].as_u64().unwrap()
}

async fn next(c: &mut Client) -> Value {
    c.recv().await.expect("hub closed the connection")
}

/// Nothing arrives for a moment (the hub pushed everything it was going to).
async fn quiet(c: &mut Client) {
    use futures_util::StreamExt;
    if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(300), c.ws.next()).await {
        panic!("unexpected message {m:?}");
    }
}

async fn start(backend: Backend) -> (TestDb, HubConfig, ManualClock, RunningHub) {
    let db = TestDb::new(backend).await;
    let (cfg, clock) = config(&db);
    let hub = Hub::start(cfg.clone()).await.unwrap();
    (db, cfg, clock, hub)
}

async fn metric(hub: &RunningHub, name: &str) -> u64 {
    let body = common::http(hub.local_addr(), "GET", "/metrics").await.body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

async fn store_subscribe_push_ack_gone(backend: Backend) {
    let (db, _cfg, _clock, hub) = start(backend).await;
    let (alice, bob) = (identity(), identity());
    let mut b = agent(&hub, &bob).await;
    let bob_id = bob.agent_id().to_owned();
    b.req(json!({"action":"disconnect","id":bob_id})).await;
    b.close().await;
    let mut a = agent(&hub, &alice).await;
    let sealed = sealed_to(&mut a, &alice, &bob_id, "m-1", "hello bob").await;
    let reply = mail(&mut a, &bob_id, "m-1", &sealed, Some(60)).await;
    assert_eq!(
        reply,
        json!({"status":"ok","correlationId":"m","queued":true,"messageId":"m-1","expiresAt":T0 + 60_000})
    );
    let second = sealed_to(&mut a, &alice, &bob_id, "m-2", "and again").await;
    assert_eq!(
        mail(&mut a, &bob_id, "m-2", &second, None).await["status"],
        "ok"
    );

    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 2);
    let first = next(&mut b).await;
    assert_eq!(first["id"], "m-1");
    assert_eq!(
        first["from"],
        alice.agent_id(),
        "the hub stamps the proven sender"
    );
    assert_eq!(first["storedAt"], T0);
    assert_eq!(first["expiresAt"], T0 + 60_000);
    assert_eq!(first["sealed"], sealed, "stored and pushed byte for byte");
    assert_eq!(opened(&bob, &first).unwrap(), "hello bob");
    let second = next(&mut b).await;
    assert_eq!(opened(&bob, &second).unwrap(), "and again");
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    assert_eq!(ack(&mut b, &["m-1", "m-2", "never-sent"]).await, 2);
    quiet(&mut b).await;
    // New mail to a subscribed agent is pushed as it is stored, then drained again.
    let third = sealed_to(&mut a, &alice, &bob_id, "m-3", "live").await;
    assert_eq!(
        mail(&mut a, &bob_id, "m-3", &third, None).await["status"],
        "ok"
    );
    assert_eq!(opened(&bob, &next(&mut b).await).unwrap(), "live");
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    assert_eq!(ack(&mut b, &["m-3"]).await, 1);
    b.close().await;
    // Gone: a new subscription has nothing.
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 0);
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    assert_eq!(metric(&hub, "m2m_hub_mail_stored_total").await, 3);
    assert_eq!(metric(&hub, "m2m_hub_mail_acked_total").await, 3);
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

on_both_backends! {
    store_then_subscribe_push_ack_and_gone => super::store_subscribe_push_ack_gone;
}

#[tokio::test]
async fn records_carry_the_key_and_registration_checks_it() {
    let (_db, _cfg, _clock, hub) = start(Backend::Sqlite).await;
    let me = identity();
    let key = published(&me);
    // A key signed by someone else, and one from the future, are refused.
    let mut c = Client::connect(&hub.ws_url()).await;
    let other = identity();
    let mut forged = MailboxKeys::new(other.clone())
        .current(T0 as u64)
        .publish(&other);
    forged.key = key.key.clone();
    let reply = register_with(&mut c, &me, serde_json::to_value(&forged).unwrap()).await;
    assert_eq!(reply["error"], "invalid_mailbox_key", "{reply}");
    let future = MailboxKeys::new(me.clone())
        .current(T0 as u64 + 8 * 24 * 3600 * 1000)
        .publish(&me);
    let reply = register_with(&mut c, &me, serde_json::to_value(&future).unwrap()).await;
    assert_eq!(reply["error"], "invalid_mailbox_key", "{reply}");
    // 2.0 with a key: refused.
    let reply = c
        .req(json!({"action":"register","address":"10.0.0.1:1","capabilities":[],"mailbox":key}))
        .await;
    assert_eq!(reply["error"], "identity_required", "{reply}");
    // Published: the record carries it exactly as registered, last.
    let reply = register_with(&mut c, &me, serde_json::to_value(&key).unwrap()).await;
    assert_eq!(reply["status"], "ok");
    let id = me.agent_id();
    let mut other_c = Client::connect(&hub.ws_url()).await;
    let old = other_c.register(4002, &["chat"]).await;
    other_c
        .send_text(json!({"action":"lookup","id":id}).to_string())
        .await;
    use futures_util::StreamExt;
    let text = loop {
        match other_c.ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => break t.to_string(),
            _ => continue,
        }
    };
    let key_json = serde_json::to_string(&key).unwrap();
    assert!(
        text.ends_with(&format!(",\"mailbox\":{key_json}}}}}")),
        "{text}"
    );
    let found = other_c
        .req(json!({"action":"find","capability":"chat"}))
        .await;
    let agents = found["agents"].as_array().unwrap();
    let mine = agents.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(mine["mailbox"], serde_json::to_value(&key).unwrap());
    // A 2.0 record is unchanged: no mailbox field at all.
    let theirs = agents.iter().find(|a| a["id"] == old.as_str()).unwrap();
    assert!(theirs.get("mailbox").is_none(), "{theirs}");
    // Mail to an agent without a key, from a WebSocket without identity.
    let reply = mail(&mut other_c, id, "x", "AAAA", None).await;
    assert_eq!(reply["error"], "identity_required", "{reply}");
    let reply = mail(&mut c, &old, "x", "AAAA", None).await;
    assert_eq!(reply["error"], "mailbox_unavailable", "{reply}");
    let reply = mail(&mut c, &"0".repeat(32), "x", "AAAA", None).await;
    assert_eq!(reply["error"], "agent_not_found", "{reply}");
    let reply = mail(&mut c, id, "x", "not base64!", None).await;
    assert!(
        reply["error"].as_str().unwrap().contains("sealed"),
        "{reply}"
    );
    let reply = mail(&mut c, id, "bad id with spaces", "AAAA", None).await;
    assert!(reply["error"].as_str().unwrap().contains("id"), "{reply}");
    // An inline proof signed over another WebSocket's nonce does not verify.
    let mut fresh = Client::connect(&hub.ws_url()).await;
    let stale = me.sign_b64(&relay_attach_message(&c.nonce, &me.public()));
    let proof = json!({"identity": me.public().to_b64(), "signature": stale});
    let mut req = json!({"action":"mail","to":id,"id":"p","sealed":"AAAA"});
    req.as_object_mut()
        .unwrap()
        .extend(proof.as_object().unwrap().clone());
    assert_eq!(fresh.req(req).await["error"], "invalid_signature");
    let mut req = json!({"action":"mailbox"});
    req.as_object_mut()
        .unwrap()
        .extend(proof.as_object().unwrap().clone());
    assert_eq!(fresh.req(req).await["error"], "invalid_signature");
    assert_eq!(
        fresh.req(json!({"action":"mailbox"})).await["error"],
        "identity_required"
    );
    let reply = fresh.req(json!({"action":"mail_ack","ids":["p"]})).await;
    assert_eq!(
        reply["error"], "identity_required",
        "no subscription: {reply}"
    );
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn mail_survives_a_restart_on_a_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.database = format!("sqlite://{}", dir.path().join("mail.db").display());
    restart_keeps_mail(cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_survives_a_restart_on_postgres() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = config(&db);
    restart_keeps_mail(cfg).await;
    db.drop_db().await;
}

async fn restart_keeps_mail(cfg: HubConfig) {
    let hub = Hub::start(cfg.clone()).await.unwrap();
    let (alice, bob) = (identity(), identity());
    let b = agent(&hub, &bob).await;
    b.close().await;
    let mut a = agent(&hub, &alice).await;
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "kept", "across restarts").await;
    assert_eq!(
        mail(&mut a, bob.agent_id(), "kept", &sealed, None).await["status"],
        "ok"
    );
    a.close().await;
    hub.shutdown().await.unwrap();
    let hub = Hub::start(cfg).await.unwrap();
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 1);
    let event = next(&mut b).await;
    assert_eq!(event["sealed"], sealed);
    assert_eq!(opened(&bob, &event).unwrap(), "across restarts");
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_sent_through_one_hub_reaches_a_subscriber_on_another_at_once() {
    let db = TestDb::new(Backend::Postgres).await;
    let (mut cfg, _clock) = config(&db);
    // No fallback poll within the test: only the doorbell can bring it.
    cfg.mailbox.sync_interval = Duration::from_secs(3600);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();
    let (alice, bob) = (identity(), identity());
    let mut b = agent(&two, &bob).await;
    assert_eq!(subscribe(&mut b).await, 0);
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    let mut a = agent(&one, &alice).await;
    // Hub one learns bob's record (and key) through the change feed.
    common::eventually("bob's record on hub one", || {
        let hub = one.state().clone();
        let id = bob.agent_id().to_owned();
        async move { hub.mirrored_status(&id).is_some() }
    })
    .await;
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "x-hub", "via one").await;
    assert_eq!(
        mail(&mut a, bob.agent_id(), "x-hub", &sealed, None).await["status"],
        "ok"
    );
    let event = next(&mut b).await;
    assert_eq!(opened(&bob, &event).unwrap(), "via one");
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    assert_eq!(ack(&mut b, &["x-hub"]).await, 1);
    // A newer subscription of the same id on hub one takes the delivery over.
    let mut b2 = agent(&one, &bob).await;
    assert_eq!(subscribe(&mut b2).await, 0);
    assert_eq!(next(&mut b2).await, json!({"event":"mail_drained"}));
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "later", "to the newer").await;
    assert_eq!(
        mail(&mut a, bob.agent_id(), "later", &sealed, None).await["status"],
        "ok"
    );
    assert_eq!(opened(&bob, &next(&mut b2).await).unwrap(), "to the newer");
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test]
async fn unacked_mail_is_pushed_again_after_the_ack_timeout_and_at_reconnect() {
    let (_db, _cfg, clock, hub) = start(Backend::Sqlite).await;
    let (alice, bob) = (identity(), identity());
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 0);
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    // Alice proves her identity inline, without registering.
    let mut a = Client::connect(&hub.ws_url()).await;
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "again", "twice").await;
    let proof = alice.sign_b64(&relay_attach_message(&a.nonce, &alice.public()));
    let reply = a
        .req(
            json!({"action":"mail","to":bob.agent_id(),"id":"again","sealed":sealed,
                    "identity":alice.public().to_b64(),"signature":proof}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let first = next(&mut b).await;
    assert_eq!(first["from"], alice.agent_id());
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    // Not acked: before the timeout nothing, after it the same message again.
    clock.advance(Duration::from_secs(29));
    hub.mail_wake_now();
    quiet(&mut b).await;
    clock.advance(Duration::from_secs(2));
    hub.mail_wake_now();
    let again = next(&mut b).await;
    assert_eq!(again, first);
    assert_eq!(metric(&hub, "m2m_hub_mail_redelivered_total").await, 1);
    // A newer subscription (an `m2m inbox` proving the key, no registration) takes the
    // delivery over while the older WebSocket stays open: in flight to the older one, now
    // pushed to the newer.
    let mut inbox = Client::connect(&hub.ws_url()).await;
    let proof = bob.sign_b64(&relay_attach_message(&inbox.nonce, &bob.public()));
    let reply = inbox
        .req(json!({"action":"mailbox","identity":bob.public().to_b64(),"signature":proof}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"ok","agentId":bob.agent_id(),"pending":1})
    );
    assert_eq!(next(&mut inbox).await, first);
    assert_eq!(next(&mut inbox).await, json!({"event":"mail_drained"}));
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "newer", "only to the inbox").await;
    let reply = mail(&mut a, bob.agent_id(), "newer", &sealed, None).await;
    assert_eq!(
        reply["status"], "ok",
        "the proof given before is remembered: {reply}"
    );
    assert_eq!(
        opened(&bob, &next(&mut inbox).await).unwrap(),
        "only to the inbox"
    );
    assert_eq!(next(&mut inbox).await, json!({"event":"mail_drained"}));
    assert_eq!(ack(&mut inbox, &["newer"]).await, 1);
    // The older subscription got the drained of its redelivery, then nothing more.
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    quiet(&mut b).await;
    inbox.close().await;
    // In flight when the WebSocket closes: pushed at the next subscription.
    b.close().await;
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 1);
    assert_eq!(next(&mut b).await["id"], "again");
    hub.shutdown().await.unwrap();
}

#[tokio::test]
async fn quotas_size_ttl_and_duplicates() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, clock) = config(&db);
    cfg.mailbox.recipient_messages = 2;
    cfg.mailbox.sender_messages = 3;
    let hub = Hub::start(cfg.clone()).await.unwrap();
    let (alice, bob, carol) = (identity(), identity(), identity());
    for who in [&bob, &carol] {
        agent(&hub, who).await.close().await;
    }
    let mut a = agent(&hub, &alice).await;
    let bid = bob.agent_id();
    let s1 = sealed_to(&mut a, &alice, bid, "q1", "1").await;
    assert_eq!(
        mail(&mut a, bid, "q1", &s1, Some(1_000_000_000)).await["expiresAt"],
        T0 + 7 * 24 * 3600 * 1000,
        "clamped to MAX_TTL"
    );
    // The same id again: ok, the stored expiry, nothing stored.
    let again = mail(&mut a, bid, "q1", &s1, Some(5)).await;
    assert_eq!(again["expiresAt"], T0 + 7 * 24 * 3600 * 1000, "{again}");
    let s2 = sealed_to(&mut a, &alice, bid, "q2", "2").await;
    assert_eq!(mail(&mut a, bid, "q2", &s2, Some(60)).await["status"], "ok");
    let s3 = sealed_to(&mut a, &alice, bid, "q3", "3").await;
    assert_eq!(
        mail(&mut a, bid, "q3", &s3, None).await["error"],
        "mailbox_full",
        "per recipient"
    );
    let cid = carol.agent_id();
    let c1 = sealed_to(&mut a, &alice, cid, "c1", "c").await;
    assert_eq!(mail(&mut a, cid, "c1", &c1, None).await["status"], "ok");
    let c2 = sealed_to(&mut a, &alice, cid, "c2", "c").await;
    assert_eq!(
        mail(&mut a, cid, "c2", &c2, None).await["error"],
        "mailbox_full",
        "per sender"
    );
    assert_eq!(
        mail(&mut a, cid, "c0", &c1, Some(0)).await["error"],
        "expired"
    );
    assert_eq!(
        mail(&mut a, cid, "c0", &c1, Some(-5)).await["error"],
        "expired"
    );
    assert_eq!(
        metric(&hub, "m2m_hub_mail_refused_total{reason=\"mailbox_full\"}").await,
        2
    );
    // A sealed message at the limit is taken (well over the usual 64 KiB frame), one byte
    // more is message_too_large.
    hub.shutdown().await.unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.mailbox.sender_messages = 100;
    cfg2.mailbox.recipient_messages = 100;
    // Room for one full-size message and one small one in all.
    cfg2.mailbox.budget = m2m_proto::mailbox::MAX_SEALED as i64 + 500;
    let db2 = TestDb::new(Backend::Sqlite).await;
    cfg2.database = db2.url.clone();
    let hub = Hub::start(cfg2).await.unwrap();
    agent(&hub, &bob).await.close().await;
    let mut a = agent(&hub, &alice).await;
    let max = m2m_proto::mailbox::MAX_SEALED;
    let big = B64.encode(vec![7u8; max]);
    assert_eq!(mail(&mut a, bid, "big", &big, None).await["status"], "ok");
    let bigger = B64.encode(vec![7u8; max + 1]);
    assert_eq!(
        mail(&mut a, bid, "bigger", &bigger, None).await["error"],
        "message_too_large"
    );
    // Expired mail is never pushed, and the sweep purges it.
    let short = sealed_to(&mut a, &alice, bid, "short", "soon gone").await;
    assert_eq!(
        mail(&mut a, bid, "short", &short, Some(60)).await["status"],
        "ok"
    );
    let extra = sealed_to(&mut a, &alice, bid, "extra", "over budget").await;
    let reply = mail(&mut a, bid, "extra", &extra, None).await;
    assert_eq!(
        reply["error"], "mailbox_full",
        "the hub-wide budget: {reply}"
    );
    clock.advance(Duration::from_secs(61));
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 1, "only the big one");
    assert_eq!(next(&mut b).await["id"], "big");
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    let report = hub.sweep_now().await.unwrap();
    assert_eq!(report.mail_purged, 1);
    // The purge gave its bytes back to the budget.
    assert_eq!(
        mail(&mut a, bid, "extra", &extra, None).await["status"],
        "ok"
    );
    assert_eq!(opened(&bob, &next(&mut b).await).unwrap(), "over budget");
    hub.shutdown().await.unwrap();
}

/// Sends one message from alice to bob (offline) on `hub`; returns bob's identity.
async fn one_stored(hub: &RunningHub, alice: &Identity, bob: &Identity) {
    agent(hub, bob).await.close().await;
    let mut a = agent(hub, alice).await;
    let sealed = sealed_to(&mut a, alice, bob.agent_id(), "t", "untouched").await;
    assert_eq!(
        mail(&mut a, bob.agent_id(), "t", &sealed, None).await["status"],
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_cannot_alter_or_re_attribute_stored_mail() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let mut sql = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (alice, bob, mallory) = (identity(), identity(), identity());
    one_stored(&hub, &alice, &bob).await;
    // One byte of the ciphertext changed in the database.
    sqlx::query("UPDATE m2m_mail SET sealed = set_byte(sealed, 80, get_byte(sealed, 80) # 1)")
        .execute(&mut sql)
        .await
        .unwrap();
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 1);
    assert_eq!(
        opened(&bob, &next(&mut b).await),
        Err(OpenError::DecryptionFailed)
    );
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    assert_eq!(ack(&mut b, &["t"]).await, 1);
    b.close().await;
    // The stored sender changed: the recipient sees the forgery.
    one_stored(&hub, &alice, &bob).await;
    sqlx::query("UPDATE m2m_mail SET sender = $1")
        .bind(mallory.agent_id())
        .execute(&mut sql)
        .await
        .unwrap();
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 1);
    let event = next(&mut b).await;
    assert_eq!(event["from"], mallory.agent_id());
    assert_eq!(opened(&bob, &event), Err(OpenError::ForgedSender));
    hub.shutdown().await.unwrap();
    sql.close().await.unwrap();
    db.drop_db().await;
}

/// An offline agent with a mailbox key keeps its record (the key senders seal to) for
/// `MAX_TTL`, not the usual day; when it is purged at last, its mail goes with it.
async fn records_with_a_key_outlive_retention(backend: Backend) {
    let (db, cfg, clock, hub) = start(backend).await;
    let (alice, bob) = (identity(), identity());
    let mut b = agent(&hub, &bob).await;
    b.req(json!({"action":"disconnect","id":bob.agent_id()}))
        .await;
    b.close().await;
    let mut w = Client::connect(&hub.ws_url()).await;
    let plain = w.register(4003, &["x"]).await;
    w.req(json!({"action":"disconnect","id":plain})).await;
    // Two days later: past retention, within MAX_TTL.
    clock.advance(cfg.sweep.retention * 2);
    hub.sweep_now().await.unwrap();
    let mut a = agent(&hub, &alice).await;
    let found = a.req(json!({"action":"lookup","id":bob.agent_id()})).await;
    assert_eq!(found["agent"]["status"], "offline", "{found}");
    let gone = a.req(json!({"action":"lookup","id":plain})).await;
    assert_eq!(gone["error"], "agent_not_found", "{gone}");
    // Stored now, this mail would outlive the record (it expires two days after the
    // record's purge): the purge of the record takes it.
    let sealed = sealed_to(&mut a, &alice, bob.agent_id(), "late", "x").await;
    assert_eq!(
        mail(&mut a, bob.agent_id(), "late", &sealed, None).await["status"],
        "ok"
    );
    a.close().await;
    clock
        .advance(m2m_proto::mailbox::MAX_TTL - cfg.sweep.retention * 2 + Duration::from_secs(3600));
    let report = hub.sweep_now().await.unwrap();
    assert_eq!(report.mail_purged, 1, "{report:?}");
    let mut w = Client::connect(&hub.ws_url()).await;
    let gone = w.req(json!({"action":"lookup","id":bob.agent_id()})).await;
    assert_eq!(gone["error"], "agent_not_found", "{gone}");
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

on_both_backends! {
    keyed_records_outlive_retention => super::records_with_a_key_outlive_retention;
}

/// A hub that hears no doorbell (not listening) still delivers mail stored through another
/// hub: its fallback poll sees the new `seq`. The sender here proved its key with the relay
/// attach proof only (no registration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_poll_delivers_without_the_doorbell() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = config(&db);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let mut deaf_cfg = cfg;
    deaf_cfg.storage.listen = false;
    deaf_cfg.mailbox.sync_interval = Duration::from_millis(50);
    let deaf = Hub::start(deaf_cfg).await.unwrap();
    let (alice, bob) = (identity(), identity());
    let mut b = agent(&deaf, &bob).await;
    assert_eq!(subscribe(&mut b).await, 0);
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    common::eventually("bob's record on hub one", || {
        let hub = one.state().clone();
        let id = bob.agent_id().to_owned();
        async move { hub.mirrored_status(&id).is_some() }
    })
    .await;
    let mut a = Client::connect(&one.ws_url()).await;
    let proof = alice.sign_b64(&relay_attach_message(&a.nonce, &alice.public()));
    let attached = a
        .req(json!({"action":"relay","identity":alice.public().to_b64(),"signature":proof}))
        .await;
    assert_eq!(attached["status"], "ok", "{attached}");
    let sealed = sealed_to(
        &mut a,
        &alice,
        bob.agent_id(),
        "polled",
        "found by the poll",
    )
    .await;
    let reply = mail(&mut a, bob.agent_id(), "polled", &sealed, None).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let event = next(&mut b).await;
    assert_eq!(event["from"], alice.agent_id());
    assert_eq!(opened(&bob, &event).unwrap(), "found by the poll");
    one.shutdown().await.unwrap();
    deaf.shutdown().await.unwrap();
    db.drop_db().await;
}

/// The quotas are exact across hubs: two hubs storing at once for one recipient on one
/// PostgreSQL store exactly the quota, and the shared counters say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_hold_exactly_when_two_hubs_store_at_once() {
    use m2m_hub::store::mail::{MailQuotas, NewMail, StoreOutcome};
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = config(&db);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();
    let quotas = MailQuotas {
        recipient_messages: 5,
        recipient_bytes: i64::MAX,
        sender_messages: i64::MAX,
        sender_bytes: i64::MAX,
        budget_bytes: i64::MAX,
    };
    let mut tasks = Vec::new();
    for n in 0..20 {
        let store = if n % 2 == 0 { &one } else { &two }
            .state()
            .registry()
            .mail();
        tasks.push(tokio::spawn(async move {
            let mail = [NewMail {
                recipient: "r".repeat(32),
                id: format!("m{n}"),
                sender: format!("{n:032x}"),
                sealed: vec![n as u8; 100],
                stored_at: T0,
                expires_at: T0 + 60_000,
            }];
            store.store(&mail, &quotas).await.unwrap()[0]
        }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            StoreOutcome::Stored { .. } => stored += 1,
            StoreOutcome::Full => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(stored, 5);
    let usage = one.state().registry().mail().usage().await.unwrap();
    assert_eq!((usage.messages, usage.bytes), (5, 500));
    let acked = two
        .state()
        .registry()
        .mail()
        .ack(
            &"r".repeat(32),
            &(0..20).map(|n| format!("m{n}")).collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    assert_eq!(acked, 5);
    let usage = one.state().registry().mail().usage().await.unwrap();
    assert_eq!((usage.messages, usage.bytes), (0, 0));
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    db.drop_db().await;
}

/// At most `in_flight` unacked pushes per subscription; an ack makes room for the next.
/// With the mailbox turned off, `mail` and `mailbox` say so.
#[tokio::test]
async fn in_flight_is_bounded_and_the_mailbox_can_be_turned_off() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.mailbox.in_flight = 2;
    cfg.mailbox.max_subscriptions = 1;
    let hub = Hub::start(cfg.clone()).await.unwrap();
    let (alice, bob) = (identity(), identity());
    agent(&hub, &bob).await.close().await;
    let mut a = agent(&hub, &alice).await;
    for id in ["f1", "f2", "f3"] {
        let sealed = sealed_to(&mut a, &alice, bob.agent_id(), id, id).await;
        assert_eq!(
            mail(&mut a, bob.agent_id(), id, &sealed, None).await["status"],
            "ok"
        );
    }
    let mut b = agent(&hub, &bob).await;
    assert_eq!(subscribe(&mut b).await, 3);
    assert_eq!(opened(&bob, &next(&mut b).await).unwrap(), "f1");
    assert_eq!(opened(&bob, &next(&mut b).await).unwrap(), "f2");
    quiet(&mut b).await;
    assert_eq!(ack(&mut b, &["f1"]).await, 1);
    assert_eq!(opened(&bob, &next(&mut b).await).unwrap(), "f3");
    assert_eq!(next(&mut b).await, json!({"event":"mail_drained"}));
    // The hub holds `max_subscriptions` (1 here): another agent's is refused.
    let reply = a.req(json!({"action":"mailbox"})).await;
    assert_eq!(reply["error"], "overloaded", "{reply}");
    hub.shutdown().await.unwrap();

    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, _clock) = config(&db);
    cfg.mailbox.enabled = false;
    let hub = Hub::start(cfg).await.unwrap();
    let mut b = agent(&hub, &bob).await;
    let reply = b.req(json!({"action":"mailbox"})).await;
    assert_eq!(reply["error"], "mailbox_unavailable", "{reply}");
    let reply = mail(&mut b, bob.agent_id(), "off", "AAAA", None).await;
    assert_eq!(reply["error"], "mailbox_unavailable", "{reply}");
    hub.shutdown().await.unwrap();
}

/// One storing batch that mixes every outcome decides each message as one at a time
/// would: an id already stored and one twice in the batch are duplicates (the stored
/// expiry, no quota), a message over the recipient quota is full (and stays so when sent
/// again in the batch), and the counters and rows are exactly the stored ones'. An ack
/// of a batch of ids (one twice, one unknown) frees exactly what it deletes.
async fn mixed_batch_store(backend: Backend) {
    use m2m_hub::store::mail::{MailQuotas, NewMail, StoreOutcome};
    let (db, _cfg, _clock, hub) = start(backend).await;
    let store = hub.state().registry().mail();
    let quotas = MailQuotas {
        recipient_messages: 3,
        recipient_bytes: i64::MAX,
        sender_messages: i64::MAX,
        sender_bytes: i64::MAX,
        budget_bytes: i64::MAX,
    };
    let (r, other, s) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
    let m = |to: &str, id: &str, n: usize, expires_at: i64| NewMail {
        recipient: to.to_owned(),
        id: id.to_owned(),
        sender: s.clone(),
        sealed: vec![n as u8; n],
        stored_at: T0,
        expires_at,
    };
    let first = store
        .store(&[m(&r, "m0", 10, T0 + 1)], &quotas)
        .await
        .unwrap();
    assert_eq!(first, vec![StoreOutcome::Stored { expires_at: T0 + 1 }]);
    let batch = [
        m(&r, "m0", 99, T0 + 9),
        m(&r, "m1", 20, T0 + 2),
        m(&r, "m1", 98, T0 + 8),
        m(&r, "m2", 30, T0 + 3),
        m(&r, "m3", 40, T0 + 4),
        m(&other, "m3", 50, T0 + 5),
        m(&r, "m3", 1, T0 + 6),
    ];
    let out = store.store(&batch, &quotas).await.unwrap();
    assert_eq!(
        out,
        vec![
            StoreOutcome::Duplicate { expires_at: T0 + 1 },
            StoreOutcome::Stored { expires_at: T0 + 2 },
            StoreOutcome::Duplicate { expires_at: T0 + 2 },
            StoreOutcome::Stored { expires_at: T0 + 3 },
            StoreOutcome::Full,
            StoreOutcome::Stored { expires_at: T0 + 5 },
            StoreOutcome::Full,
        ]
    );
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.messages, usage.bytes), (4, 10 + 20 + 30 + 50));
    let (rows, more) = store.pending(&r, 0, T0, 100, i64::MAX).await.unwrap();
    assert!(!more);
    let got: Vec<(&str, usize)> = rows
        .iter()
        .map(|m| (m.id.as_str(), m.sealed.len()))
        .collect();
    assert_eq!(got, vec![("m0", 10), ("m1", 20), ("m2", 30)]);
    assert!(
        rows.windows(2).all(|w| w[0].seq < w[1].seq),
        "stored in order"
    );
    assert_eq!(
        store
            .pending(&other, 0, T0, 100, i64::MAX)
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    // A turn's bytes are bounded (the first row always comes), and what is left says so.
    let (rows, more) = store.pending(&r, 0, T0, 100, 25).await.unwrap();
    assert_eq!((rows.len(), more), (1, true));
    let (rows, more) = store.pending(&r, 0, T0, 100, 30).await.unwrap();
    assert_eq!((rows.len(), more), (2, true));
    let (rows, more) = store.pending(&r, rows[1].seq, T0, 100, 1).await.unwrap();
    assert_eq!((rows.len(), more), (1, false));
    let (rows, more) = store.pending(&r, 0, T0, 2, i64::MAX).await.unwrap();
    assert_eq!((rows.len(), more), (2, true));
    let ids: Vec<String> = ["m1", "m2", "m1", "nope"].map(String::from).to_vec();
    assert_eq!(store.ack(&r, &ids).await.unwrap(), 2);
    let usage = store.usage().await.unwrap();
    assert_eq!((usage.messages, usage.bytes), (2, 10 + 50));
    // The recipient's quota has room again: the refused id stores now.
    let again = store
        .store(&[m(&r, "m3", 40, T0 + 4)], &quotas)
        .await
        .unwrap();
    assert_eq!(again, vec![StoreOutcome::Stored { expires_at: T0 + 4 }]);
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

/// `mail`s pipelined on one WebSocket (stored together) are answered in order, each with
/// its own outcome, and a request between them runs after the mail before it is stored.
async fn pipelined_mail_answers_in_order(backend: Backend) {
    let (db, mut cfg, _clock, hub) = start(backend).await;
    hub.shutdown().await.unwrap();
    cfg.mailbox.recipient_messages = 2;
    let hub = Hub::start(cfg).await.unwrap();
    let (alice, bob) = (identity(), identity());
    agent(&hub, &bob).await.close().await;
    let mut a = agent(&hub, &alice).await;
    let bid = bob.agent_id();
    let s = sealed_to(&mut a, &alice, bid, "p", "x").await;
    let send = |id: &str, cid: &str| {
        json!({"action":"mail","correlationId":cid,"to":bid,"id":id,"sealed":s}).to_string()
    };
    let frames = [
        send("p1", "1"),
        send("p1", "2"),
        send("p2", "3"),
        json!({"action":"stats","correlationId":"4"}).to_string(),
        send("p3", "5"),
        send("p3", "6"),
        json!({"action":"mail","correlationId":"7","to":bid,"id":"p4","sealed":"!"}).to_string(),
        send("p2", "8"),
    ];
    for f in frames {
        a.send_text(f).await;
    }
    let mut replies = Vec::new();
    for _ in 0..8 {
        replies.push(next(&mut a).await);
    }
    let cids: Vec<&str> = replies
        .iter()
        .map(|r| r["correlationId"].as_str().unwrap())
        .collect();
    assert_eq!(
        cids,
        ["1", "2", "3", "4", "5", "6", "7", "8"],
        "{replies:?}"
    );
    for i in [0, 1, 2, 7] {
        assert_eq!(replies[i]["status"], "ok", "{}", replies[i]);
        assert_eq!(replies[i]["queued"], true, "{}", replies[i]);
    }
    assert_eq!(replies[0]["messageId"], "p1");
    assert_eq!(replies[7]["messageId"], "p2");
    assert_eq!(replies[3]["status"], "ok", "{}", replies[3]);
    assert_eq!(replies[4]["error"], "mailbox_full", "{}", replies[4]);
    assert_eq!(replies[5]["error"], "mailbox_full", "{}", replies[5]);
    assert_eq!(
        replies[6]["error"],
        "invalid field `sealed`: must be base64"
    );
    assert_eq!(metric(&hub, "m2m_hub_mail_stored_total").await, 2);
    assert_eq!(metric(&hub, "m2m_hub_mail_duplicates_total").await, 2);
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

on_both_backends! {
    a_mixed_batch_stores_as_one_at_a_time => super::mixed_batch_store;
    pipelined_mail_is_answered_in_order => super::pipelined_mail_answers_in_order;
}
