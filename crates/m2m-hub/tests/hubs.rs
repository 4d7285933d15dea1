//! Several hubs on one registry (issue 20, parts 1 and 2): the change doorbell brings a
//! change from one hub to another at once with the polls 60 s apart, a killed listener
//! connection catches up, a late commit is not missed, and hubs keep instance rows whose
//! liveness expiry releases a dead hub's agents.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{config, Backend, Client, TestDb};
use m2m_hub::{Hub, HubConfig, ManualClock, RunningHub};
use serde_json::json;
use sqlx::Connection;

/// Polls so far apart that only the doorbell can bring a change within a test.
const NO_POLL: Duration = Duration::from_secs(60);

/// How long a change may take to reach the other hub by the doorbell before the test fails:
/// milliseconds are typical (`m2m bench hubs`), the bound only keeps a loaded 2-core CI
/// machine from failing the test, and stays far below `NO_POLL` so a poll cannot pass it.
const DOORBELL_BOUND: Duration = Duration::from_secs(10);

/// A hub config on `db` whose feed is read only when the doorbell rings (or after the
/// listener (re)connects), and whose instance check runs only when the test asks.
fn doorbell_only(db: &TestDb) -> (HubConfig, ManualClock) {
    let (mut cfg, clock) = config(db);
    cfg.storage.sync_interval = NO_POLL;
    cfg.storage.listen = true;
    cfg.storage.alive_interval = Duration::from_secs(3600);
    (cfg, clock)
}

/// Waits until `$check` (an expression that may `.await`) holds, checking every few
/// milliseconds, for at most `$bound`; how long it took. Fails the test at the bound.
macro_rules! within {
    ($bound:expr, $what:expr, $check:expr) => {{
        let start = Instant::now();
        let bound: Duration = $bound;
        let waited = tokio::time::timeout(bound, async {
            while !$check {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        assert!(waited.is_ok(), "not within {:?}: {}", bound, $what);
        let took: Duration = start.elapsed();
        took
    }};
}

async fn find_count(c: &mut Client, capability: &str) -> u64 {
    let found = c
        .req(json!({"action":"find","capability":capability}))
        .await;
    found["count"].as_u64().unwrap()
}

async fn status_of(c: &mut Client, id: &str) -> String {
    let rec = c.req(json!({"action":"lookup","id":id})).await;
    rec["agent"]["status"].as_str().unwrap_or("").to_owned()
}

async fn metric(hub: &RunningHub, name: &str) -> u64 {
    let reply = common::http(hub.local_addr(), "GET", "/metrics").await;
    reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doorbell_brings_register_status_and_offline_to_the_other_hub_without_polling() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = doorbell_only(&db);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg.clone()).await.unwrap();
    // A third hub that does not listen: polls 60 s apart, so it cannot know yet.
    let mut deaf_cfg = cfg;
    deaf_cfg.storage.listen = false;
    let deaf = Hub::start(deaf_cfg).await.unwrap();

    let mut a = Client::connect(&one.ws_url()).await;
    let mut b = Client::connect(&two.ws_url()).await;
    let mut d = Client::connect(&deaf.ws_url()).await;
    let id = a.register(4001, &["door"]).await;
    let took = within!(
        DOORBELL_BOUND,
        "register seen through hub two",
        find_count(&mut b, "door").await == 1
    );
    eprintln!("register visible through the other hub after {took:?}");
    assert_eq!(
        find_count(&mut d, "door").await,
        0,
        "without the doorbell the change is not there yet (the wait above measured it)"
    );

    a.req(json!({"action":"status","id":id,"status":"busy"}))
        .await;
    within!(
        DOORBELL_BOUND,
        "status seen through hub two",
        status_of(&mut b, &id).await == "busy"
    );

    a.close().await;
    within!(
        DOORBELL_BOUND,
        "offline seen through hub two",
        status_of(&mut b, &id).await == "offline"
    );
    assert!(metric(&two, "m2m_hub_feed_doorbells_total").await >= 3);
    assert_eq!(metric(&deaf, "m2m_hub_feed_doorbells_total").await, 0);

    b.close().await;
    d.close().await;
    for hub in [one, two, deaf] {
        hub.shutdown().await.unwrap();
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_committing_after_a_newer_one_is_not_missed() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = doorbell_only(&db);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&one.ws_url()).await;
    let mut b = Client::connect(&two.ws_url()).await;
    let late = a.register(4001, &["late"]).await;
    within!(
        DOORBELL_BOUND,
        "first register",
        find_count(&mut b, "late").await == 1
    );

    // A transaction takes its version now and rings as every write does, but commits only
    // after a newer change was committed and read by hub two (its watermark then is past
    // the late version).
    let mut raw = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = raw.begin().await.unwrap();
    let version: i64 = sqlx::query_scalar(
        "UPDATE m2m_agents SET status = 'busy', version = nextval('m2m_agents_version_seq') \
         WHERE id = $1 RETURNING version",
    )
    .bind(&late)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("SELECT pg_notify('m2m_changes', $1)")
        .bind(version.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut c = Client::connect(&one.ws_url()).await;
    c.register(4002, &["late"]).await;
    within!(
        DOORBELL_BOUND,
        "the newer register",
        find_count(&mut b, "late").await == 2
    );
    assert_eq!(status_of(&mut b, &late).await, "online");
    tx.commit().await.unwrap();
    within!(
        DOORBELL_BOUND,
        "the late commit",
        status_of(&mut b, &late).await == "busy"
    );

    raw.close().await.unwrap();
    for client in [a, b, c] {
        client.close().await;
    }
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_connection_reconnects_and_catches_up() {
    let db = TestDb::new(Backend::Postgres).await;
    let (cfg, _clock) = doorbell_only(&db);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&one.ws_url()).await;
    let mut b = Client::connect(&two.ws_url()).await;
    a.register(4001, &["kill"]).await;
    within!(
        DOORBELL_BOUND,
        "before the kill",
        find_count(&mut b, "kill").await == 1
    );
    let listens = metric(&two, "m2m_hub_feed_listens_total").await;
    assert_eq!(listens, 1);

    // Every listener connection of this database is terminated by the server.
    db.admin_exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = 'm2m-hub-listener'",
        db.name()
    ))
    .await;
    // A change while hub two may not be listening: its doorbell can be lost; the read that
    // follows the reconnect brings it.
    let mut c = Client::connect(&one.ws_url()).await;
    c.register(4002, &["kill"]).await;
    within!(
        Duration::from_secs(5),
        "caught up after the kill",
        find_count(&mut b, "kill").await == 2
    );
    within!(
        Duration::from_secs(5),
        "listening again",
        metric(&two, "m2m_hub_feed_listens_total").await > listens
    );
    // And the doorbell works again.
    let mut e = Client::connect(&one.ws_url()).await;
    e.register(4003, &["kill"]).await;
    within!(
        DOORBELL_BOUND,
        "a doorbell after the reconnect",
        find_count(&mut b, "kill").await == 3
    );

    for client in [a, b, c, e] {
        client.close().await;
    }
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_whose_liveness_expires_has_its_agents_marked_offline_by_another() {
    let db = TestDb::new(Backend::Postgres).await;
    let (mut cfg, clock) = doorbell_only(&db);
    cfg.public_url = Some("wss://one.example/ws".into());
    let mut one = Hub::start(cfg.clone()).await.unwrap();
    cfg.public_url = None;
    let two = Hub::start(cfg).await.unwrap();
    let (one_id, two_id) = (
        one.state().hub_id().to_owned(),
        two.state().hub_id().to_owned(),
    );

    let rows = two.state().registry().instances().await.unwrap();
    let mut seen: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.id.as_str(), r.url.as_str()))
        .collect();
    seen.sort();
    let two_url = two.ws_url();
    let mut want = vec![
        (one_id.as_str(), "wss://one.example/ws"),
        (two_id.as_str(), two_url.as_str()),
    ];
    want.sort();
    assert_eq!(seen, want);
    assert!(rows
        .iter()
        .all(|r| r.started_at == common::T0 && r.alive_at == common::T0));
    let report = two.check_hubs_now().await.unwrap();
    assert_eq!((report.live, report.expired.len()), (2, 0), "{report:?}");
    assert_eq!(metric(&two, "m2m_hub_instances").await, 2);

    let mut a = Client::connect(&one.ws_url()).await;
    let mut b = Client::connect(&two.ws_url()).await;
    let id = a.register(4001, &["dies"]).await;
    within!(
        DOORBELL_BOUND,
        "the agent of hub one",
        status_of(&mut b, &id).await == "online"
    );

    // Hub one stops its background work (its row goes stale as a killed hub's does; its
    // WebSocket stays open, so nothing marks the agent offline but the expiry).
    one.stop_maintenance().await;
    clock.advance(Duration::from_secs(10));
    let report = two.check_hubs_now().await.unwrap();
    assert!(report.expired.is_empty(), "not yet: {report:?}");
    assert_eq!(status_of(&mut b, &id).await, "online");

    clock.advance(Duration::from_secs(6)); // 16 s without a refresh: past the 15 s expiry
    let report = two.check_hubs_now().await.unwrap();
    assert_eq!(report.expired, vec![one_id.clone()]);
    assert_eq!((report.offlined, report.live), (1, 1), "{report:?}");
    assert_eq!(status_of(&mut b, &id).await, "offline");
    let row = two.state().registry().get(&id).await.unwrap().unwrap();
    assert_eq!((row.status.as_str(), row.relay), ("offline", None));
    let rows = two.state().registry().instances().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, two_id);
    assert_eq!(
        rows[0].alive_at,
        common::T0 + 16_000,
        "hub two said it is alive"
    );
    assert_eq!(metric(&two, "m2m_hub_instances").await, 1);
    assert_eq!(metric(&two, "m2m_hub_hubs_expired_total").await, 1);
    // A second look finds nothing more to do.
    assert!(two.check_hubs_now().await.unwrap().expired.is_empty());

    // Hub one was only slow: its next check writes its row again, and the agent's next
    // heartbeat brings it back online.
    let report = one.check_hubs_now().await.unwrap();
    assert!(report.reannounced, "{report:?}");
    assert_eq!(two.state().registry().instances().await.unwrap().len(), 2);
    // (Its feed reader was stopped with the rest: read what it would have read.)
    one.sync_now().await.unwrap();
    a.req(json!({"action":"heartbeat","id":id})).await;
    within!(
        DOORBELL_BOUND,
        "back online through hub two",
        status_of(&mut b, &id).await == "online"
    );

    // A clean shutdown deletes the row at once: nobody waits for the expiry.
    a.close().await;
    one.shutdown().await.unwrap();
    let rows = two.state().registry().instances().await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(status_of(&mut b, &id).await, "offline");
    b.close().await;
    two.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_its_own_instance_row_and_drops_a_crashed_one() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hubs.db").display());
    let mut db = TestDb::new(Backend::Sqlite).await;
    db.url = url;
    let (cfg, clock) = config(&db);
    let first = Hub::start(cfg.clone()).await.unwrap();
    let first_id = first.state().hub_id().to_owned();
    let rows = first.state().registry().instances().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].id.as_str(), rows[0].url.as_str()),
        (first_id.as_str(), first.ws_url().as_str())
    );
    // A crash: no shutdown, the row stays in the file.
    drop(first);

    let second = Hub::start(cfg).await.unwrap();
    assert_eq!(
        second.state().registry().instances().await.unwrap().len(),
        2
    );
    let report = second.check_hubs_now().await.unwrap();
    assert!(report.expired.is_empty(), "not expired yet: {report:?}");
    clock.advance(Duration::from_secs(16));
    let report = second.check_hubs_now().await.unwrap();
    assert_eq!(report.expired, vec![first_id]);
    assert_eq!(report.live, 1);
    let rows = second.state().registry().instances().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].id, second.state().hub_id());
    second.shutdown().await.unwrap();
}
