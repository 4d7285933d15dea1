//! Several hubs on one PostgreSQL database (issue 20), SDK agents in one process: a
//! relay-only agent held by one hub is reached from another hub through the first hub's
//! relay (the record's `relay` URL), both ways and for requests; an agent given several
//! hubs moves to the next when its hub goes away and stays reachable from the others under
//! the same id; mail stored through one hub reaches its recipient at another, at once.
//! Needs `M2M_TEST_POSTGRES` (scripts/test sets it); missing is a failure.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::wait_event;
use m2m_agent::{json, Agent, AgentBuilder, AgentEvent, Reachable, Route};

/// A fresh database name on the test server (the first hub creates it).
fn fresh_database() -> String {
    let admin = std::env::var("M2M_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "M2M_TEST_POSTGRES is not set: these tests need a PostgreSQL superuser URL such as \
             postgres://m2m:m2m@127.0.0.1:5432/postgres (scripts/test starts a local server)"
        )
    });
    let base = &admin[..admin.rfind('/').expect("a URL with a database")];
    format!("{base}/m2m_agent_test_{:016x}", rand::random::<u64>())
}

async fn hub_on(database: &str) -> m2m_hub::RunningHub {
    let mut config = m2m_hub::HubConfig::in_memory();
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database = database.to_owned();
    // No fallback poll for mail within a test: mail stored through another hub can only
    // come by the doorbell (or with a new subscription).
    config.mailbox.sync_interval = Duration::from_secs(3600);
    m2m_hub::Hub::start(config).await.unwrap()
}

fn agent(hub: &m2m_hub::RunningHub) -> AgentBuilder {
    common::agent_at(&hub.ws_url())
}

async fn next(agent: &Agent) -> m2m_agent::Message {
    tokio::time::timeout(Duration::from_secs(10), agent.next_message())
        .await
        .expect("no message")
        .expect("stream ended")
}

#[tokio::test]
async fn a_relay_only_agent_is_reached_through_the_relay_of_its_own_hub() {
    let db = fresh_database();
    let one = hub_on(&db).await;
    let two = hub_on(&db).await;
    let a = agent(&one).relay_only(true).connect().await.unwrap();
    let b = agent(&two).relay_only(true).connect().await.unwrap();

    // Hub two knows a from the shared registry, and its record names hub one's relay.
    let record = b.lookup(&a.id()).await.unwrap();
    assert_eq!(record.reachable, Some(Reachable::Relay), "{record:?}");
    assert_eq!(record.relay.as_deref(), Some(one.ws_url().as_str()));

    let sent = b.send(&a.id(), "chat", json!({"n": 1})).await.unwrap();
    assert_eq!(sent.route, Route::Relay);
    let got = next(&a).await;
    assert_eq!(got.from, b.id());
    assert!(
        got.authenticated,
        "the 2.1 session, end to end, across hubs"
    );
    assert_eq!(got.payload, json!({"n": 1}));

    a.on_request("sum", |req| async move {
        let v: Vec<i64> = req.payload_as()?;
        Ok(json!(v.iter().sum::<i64>()))
    });
    for i in 0..5i64 {
        let answer = b.request(&a.id(), "sum", json!([i, 2]), None).await;
        assert_eq!(answer.unwrap(), json!(i + 2));
    }
    // And the other way: a reaches b through hub two's relay.
    let back = a.send(&b.id(), "chat", json!("hi")).await.unwrap();
    assert_eq!(back.route, Route::Relay);
    assert_eq!(next(&b).await.from, a.id());

    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_agent_moves_to_the_next_hub_and_keeps_its_id() {
    let db = fresh_database();
    let one = hub_on(&db).await;
    let two = hub_on(&db).await;
    let three = hub_on(&db).await;
    let builder = agent(&one)
        .relay_only(true)
        .hubs([one.ws_url(), two.ws_url()]);
    let mut events = builder.events();
    let a = builder.connect().await.unwrap();
    let id = a.id();
    let c = agent(&three).relay_only(true).connect().await.unwrap();
    c.send(&id, "before", json!(1)).await.unwrap();
    assert_eq!(next(&a).await.message_type, "before");

    one.shutdown().await.unwrap();
    let AgentEvent::Reconnected { hub, id: again, .. } =
        wait_event(&mut events, |e| matches!(e, AgentEvent::Reconnected { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(
        (hub.as_str(), again.as_str()),
        (two.ws_url().as_str(), id.as_str())
    );

    // Hub three sees the new registration (relay now hub two's) and reaches it there.
    let mut record = c.lookup(&id).await.unwrap();
    for _ in 0..100 {
        if record.relay.as_deref() == Some(two.ws_url().as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        record = c.lookup(&id).await.unwrap();
    }
    assert_eq!(
        record.relay.as_deref(),
        Some(two.ws_url().as_str()),
        "{record:?}"
    );
    assert_eq!(record.status, "online");
    let sent = c.send(&id, "after", json!(2)).await.unwrap();
    assert_eq!(sent.route, Route::Relay);
    assert_eq!(next(&a).await.message_type, "after");

    a.disconnect().await.unwrap();
    c.disconnect().await.unwrap();
    two.shutdown().await.unwrap();
    three.shutdown().await.unwrap();
}

#[tokio::test]
async fn mail_stored_through_one_hub_reaches_the_recipient_at_another() {
    let db = fresh_database();
    let one = hub_on(&db).await;
    let two = hub_on(&db).await;
    let three = hub_on(&db).await;
    let key = m2m_agent::Identity::generate(&mut rand::thread_rng());

    // Not running: registered once through hub one (its mailbox key is in the shared
    // registry), then gone.
    let first = agent(&one).identity(key.clone()).connect().await.unwrap();
    let id = first.id();
    first.disconnect().await.unwrap();
    let sender = agent(&two).relay_only(true).connect().await.unwrap();
    let queued = sender
        .send(&id, "note", json!("stored via two"))
        .await
        .unwrap();
    assert_eq!(queued.route, Route::Mailbox, "{queued:?}");
    assert!(queued.queued.is_some());

    // It comes back through hub three: the mail is there, once.
    let back = agent(&three).identity(key.clone()).connect().await.unwrap();
    let got = next(&back).await;
    assert_eq!(
        (got.route, got.from.as_str(), got.authenticated),
        (Route::Mailbox, sender.id().as_str(), true)
    );
    assert_eq!(got.payload, json!("stored via two"));

    // Connected at hub three but reachable by no route (no relay, an address nobody
    // answers): mail stored through hub two is pushed to it at once, by the doorbell (the
    // fallback poll is an hour here).
    back.disconnect().await.unwrap();
    let unreachable = agent(&three)
        .identity(key)
        .relay(false)
        .address("127.0.0.1:9")
        .connect()
        .await
        .unwrap();
    let queued = sender.send(&id, "note", json!("pushed")).await.unwrap();
    assert_eq!(queued.route, Route::Mailbox, "{queued:?}");
    let got = next(&unreachable).await;
    assert_eq!((got.route, got.payload), (Route::Mailbox, json!("pushed")));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), unreachable.next_message())
            .await
            .is_err(),
        "delivered exactly once"
    );

    for a in [&sender, &unreachable] {
        a.disconnect().await.unwrap();
    }
    for h in [one, two, three] {
        h.shutdown().await.unwrap();
    }
}
