//! Storage across processes and failures: restart persistence (SQLite file), two hubs on
//! one PostgreSQL database, graceful shutdown, and a database outage.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, eventually, Backend, Client, TestDb};
use m2m_hub::{Clock, Hub, HubConfig};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m2m-hub.db").display());
    let mut cfg = HubConfig::in_memory();
    cfg.database = url.clone();

    let hub = Hub::start(cfg.clone()).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;
    let b_id = b.register(4002, &["code"]).await;
    b.req(json!({"action":"status","id":b_id,"status":"busy","metadata":{"n":1}}))
        .await;
    a.req(json!({"action":"heartbeat","id":a_id})).await;
    // The hub goes away while the agents are still connected.
    hub.shutdown().await.unwrap();
    drop((a, b));

    let hub = Hub::start(cfg).await.unwrap();
    let mut c = Client::connect(&hub.ws_url()).await;
    let rec = c.req(json!({"action":"lookup","id":b_id})).await;
    assert_eq!(
        rec["agent"],
        json!({"id":b_id,"address":"127.0.0.1:4002","capabilities":["code"],
               "metadata":{"n":1},"status":"offline"}),
        "stored fields survive; a hub going down takes its agents offline"
    );
    let rec = c.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["status"], "offline");
    let stats = c.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["total"], 2);
    assert_eq!(stats["agents"]["offline"], 2);
    // New registrations go on in the same file.
    c.register(4003, &[]).await;
    c.close().await;
    hub.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_config_is_a_sqlite_file_in_the_working_directory() {
    let cfg = HubConfig::default();
    assert_eq!(cfg.database, "sqlite://m2m-hub.db");
    assert_eq!(cfg.bind.to_string(), "0.0.0.0:3000");
    assert!(!cfg.trust_proxy);
    assert_eq!(cfg.sweep.interval, Duration::from_secs(30));
    assert_eq!(cfg.sweep.idle_after, Duration::from_secs(120));
    assert_eq!(cfg.sweep.offline_after, Duration::from_secs(300));
    assert_eq!(cfg.sweep.retention, Duration::from_secs(24 * 3600));
    let err = Hub::start(HubConfig {
        database: "mysql://nope".into(),
        ..HubConfig::in_memory()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("unsupported database URL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres_database_serve_one_registry() {
    let db = TestDb::new(Backend::Postgres).await;
    let (clock, time) = Clock::manual(common::T0);
    let (mut cfg, _) = config(&db);
    cfg.clock = clock;
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();

    let mut a = Client::connect(&one.ws_url()).await;
    let mut b = Client::connect(&two.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;
    let b_id = b.register(4002, &["chat"]).await;

    // Lookup through the other hub: at once (read-through for an id it does not know).
    let rec = b.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["status"], "online");
    assert_eq!(rec["agent"]["address"], "127.0.0.1:4001");

    // Discover and find through the other hub (after a feed read).
    for (hub, client, other) in [(&one, &mut a, &b_id), (&two, &mut b, &a_id)] {
        hub.sync_now().await.unwrap();
        let found = client
            .req(json!({"action":"discover","capabilities":["chat"]}))
            .await;
        let ids: Vec<&str> = found["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&other.as_str()), "{found}");
        let found = client
            .req(json!({"action":"find","capability":"chat"}))
            .await;
        assert_eq!(found["count"], 2, "{found}");
        let stats = client.req(json!({"action":"stats"})).await;
        assert_eq!(stats["agents"]["total"], 2);
    }

    // A status change through hub one is seen by hub two.
    a.req(json!({"action":"status","id":a_id,"status":"busy","metadata":{"task":"x"}}))
        .await;
    two.sync_now().await.unwrap();
    let rec = b.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(rec["agent"]["status"], "busy");
    assert_eq!(rec["agent"]["metadata"], json!({"task":"x"}));

    // Heartbeats reach the other hub's lastSeen through the batched flush.
    time.advance(Duration::from_secs(50));
    b.req(json!({"action":"heartbeat","id":b_id})).await;
    assert_eq!(two.flush_now().await.unwrap(), 1);
    one.sync_now().await.unwrap();
    let listed = a.req(json!({"action":"discover","id":a_id})).await;
    assert_eq!(listed["agents"][0]["id"], json!(b_id));
    assert_eq!(listed["agents"][0]["lastSeen"], 0);

    // Both hubs sweep at the same moment: they agree and never undo each other.
    time.advance(Duration::from_secs(100)); // a unseen 150 s, b unseen 100 s
    let (r1, r2) = tokio::join!(one.sweep_now(), two.sweep_now());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.idled + r2.idled, 1, "{r1:?} {r2:?}");
    for hub in [&one, &two] {
        hub.sync_now().await.unwrap();
    }
    for client in [&mut a, &mut b] {
        let rec = client.req(json!({"action":"lookup","id":a_id})).await;
        assert_eq!(rec["agent"]["status"], "idle");
        let rec = client.req(json!({"action":"lookup","id":b_id})).await;
        assert_eq!(rec["agent"]["status"], "online");
    }
    let (r1, r2) = tokio::join!(one.sweep_now(), two.sweep_now());
    assert_eq!(
        r1.unwrap().idled + r2.unwrap().idled,
        0,
        "a second sweep changes nothing"
    );

    // A WebSocket closing on hub one: offline, seen through hub two.
    a.close().await;
    eventually("closed agent offline through the other hub", || {
        let two = &two;
        let a_id = a_id.clone();
        async move {
            two.sync_now().await.unwrap();
            let mut w = Client::connect(&two.ws_url()).await;
            w.req(json!({"action":"lookup","id":a_id})).await["agent"]["status"] == "offline"
        }
    })
    .await;
    let listed = b.req(json!({"action":"discover","id":b_id})).await;
    assert_eq!(listed["count"], 0, "{listed}");

    // Hub two shuts down: its agents go offline, and hub one sees it.
    two.shutdown().await.unwrap();
    drop(b);
    one.sync_now().await.unwrap();
    let mut w = Client::connect(&one.ws_url()).await;
    let rec = w.req(json!({"action":"lookup","id":b_id})).await;
    assert_eq!(rec["agent"]["status"], "offline");
    w.close().await;
    one.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_unavailable_and_the_hub_recovers() {
    let db = TestDb::new(Backend::Postgres).await;
    let (mut cfg, _clock) = config(&db);
    cfg.storage.acquire_timeout = Duration::from_secs(1);
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let a_id = a.register(4001, &["chat"]).await;

    // The database goes away: no new connections, existing ones killed.
    db.cut_off().await;

    let reply = a
        .req(json!({"action":"register","address":"h:4002","correlationId":"r"}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"unavailable","correlationId":"r"})
    );
    let reply = a
        .req(json!({"action":"status","id":a_id,"status":"busy","correlationId":"s"}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"unavailable","correlationId":"s"})
    );
    // Reads and heartbeats are served from memory meanwhile.
    let reply = a.req(json!({"action":"heartbeat","id":a_id})).await;
    assert_eq!(reply["status"], "ok");
    let rec = a.req(json!({"action":"lookup","id":a_id})).await;
    assert_eq!(
        rec["agent"]["status"], "online",
        "a failed write changed nothing"
    );
    assert!(
        hub.flush_now().await.is_err(),
        "the flush fails and keeps its data"
    );
    assert!(hub.sweep_now().await.is_err());

    // The database returns: the hub recovers without a restart.
    db.reconnect().await;
    eventually("writes succeed again", || {
        let hub = &hub;
        async move {
            let mut c = Client::connect(&hub.ws_url()).await;
            let reply = c.req(json!({"action":"register","address":"h:4003"})).await;
            reply["status"] == "ok"
        }
    })
    .await;
    assert_eq!(
        hub.flush_now().await.unwrap(),
        1,
        "the kept heartbeat is written"
    );
    let reply = a
        .req(json!({"action":"status","id":a_id,"status":"busy"}))
        .await;
    assert_eq!(reply["status"], "ok");
    a.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_postgres_database_is_created() {
    let admin = common::postgres_admin_url();
    let name = format!("m2m_hub_test_new_{:016x}", rand::random::<u64>());
    let url = format!("{}/{name}", &admin[..admin.rfind('/').unwrap()]);
    let cfg = HubConfig {
        database: url,
        ..HubConfig::in_memory()
    };
    let hub = Hub::start(cfg).await.unwrap();
    let mut c = Client::connect(&hub.ws_url()).await;
    c.register(4000, &[]).await;
    c.close().await;
    hub.shutdown().await.unwrap();
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// A batch of offline marks (the writer, at mass disconnect) and a liveness flush over the
/// same rows, each listing them in the opposite order, run against each other many times:
/// both lock rows in id order, so neither fails with `deadlock detected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_batches_and_liveness_flushes_do_not_deadlock() {
    use m2m_hub::store::{self, AgentRow, Write};
    use m2m_hub::StorageTuning;
    use std::sync::Arc;

    let db = TestDb::new(Backend::Postgres).await;
    let registry: Arc<dyn store::Registry> = Arc::from(
        store::open(&db.url, &StorageTuning::default())
            .await
            .unwrap(),
    );
    let rows: Vec<AgentRow> = (0..200u32)
        .map(|i| AgentRow {
            id: format!("{:032x}", u128::from(i) * 0x9e37_79b9_7f4a_7c15),
            address: "127.0.0.1:1".into(),
            capabilities: vec![],
            metadata: serde_json::Map::new(),
            identity: None,
            status: "online".into(),
            last_seen: 1_000,
            created_at: 1_000,
            hub: "h".into(),
            token: format!("s{i}"),
            version: 0,
            relay: None,
            reachable: None,
            mailbox: None,
        })
        .collect();
    let inserts: Vec<Write> = rows.iter().cloned().map(Write::Insert).collect();
    registry.apply(&inserts).await.unwrap();
    for round in 0..30i64 {
        let marks: Vec<Write> = rows
            .iter()
            .rev()
            .map(|r| Write::SetStatus {
                id: r.id.clone(),
                token: r.token.clone(),
                status: if round % 2 == 0 { "offline" } else { "online" }.into(),
                last_seen: None,
            })
            .collect();
        let seen: Vec<(String, i64)> = rows.iter().map(|r| (r.id.clone(), 2_000 + round)).collect();
        let (a, b) = (registry.clone(), registry.clone());
        let writer = tokio::spawn(async move { a.apply(&marks).await });
        let flusher = tokio::spawn(async move { b.touch(&seen).await });
        let versions = writer.await.unwrap().unwrap();
        assert!(versions.iter().all(Option::is_some));
        flusher.await.unwrap().unwrap();
    }
    registry.close().await;
    db.drop_db().await;
}
