//! M2M 2.1 registration (PROTOCOL.md B, docs/SECURITY.md "Hub registration (2.1)") against
//! an in-process hub on SQLite and on PostgreSQL: the challenge, the signed register and the
//! derived id, replay and tampering refused, re-registration taking over from the older
//! WebSocket (on one hub and across two hubs of one database), ownership, and 2.0 clients
//! seeing exactly 2.0. Each test names the protection it shows; each fails without it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{config, eventually, http, Backend, Client, TestDb};
use m2m_hub::store::{self, AgentRow, Write};
use m2m_hub::{Hub, RunningHub, StorageTuning};
use m2m_proto::hub::CLOSE_SUPERSEDED;
use m2m_proto::identity::{registration_message, Identity};
use serde_json::{json, Value};

fn err(code: &str, cid: &str) -> Value {
    json!({"status":"error","error":code,"correlationId":cid})
}

fn new_identity() -> Identity {
    Identity::generate(&mut rand::thread_rng())
}

/// Keys of a JSON object, in order.
fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

/// WebSockets the hub holds open right now (they are counted down only after a closing
/// WebSocket's agents were released, so this is "the close was handled").
async fn open_connections(hub: &RunningHub) -> u64 {
    let metrics = http(hub.local_addr(), "GET", "/metrics").await;
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("m2m_hub_connections_open "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn challenge_comes_first_and_the_action_repeats_it(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    // `Client::connect` asserts that the first message is exactly
    // {"event":"challenge","nonce":<64 lowercase hex>}.
    let mut a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    assert_ne!(a.nonce, b.nonce, "a fresh nonce per WebSocket");

    let reply = a
        .req(json!({"action":"challenge","correlationId":"c1"}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"ok","nonce":a.nonce,"correlationId":"c1"})
    );
    assert_eq!(keys(&reply), ["status", "nonce", "correlationId"]);
    // Asked again, and without a correlationId: the same nonce, no correlationId.
    let reply = a.req(json!({"action":"challenge"})).await;
    assert_eq!(reply, json!({"status":"ok","nonce":a.nonce}));
    let reply = b.req(json!({"action":"challenge","correlationId":7})).await;
    assert_eq!(
        reply,
        json!({"status":"ok","nonce":b.nonce,"correlationId":7})
    );

    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn signed_register_gets_the_derived_id_and_publishes_the_key(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let me = new_identity();
    let key = me.public().to_b64();
    let mut a = Client::connect(&hub.ws_url()).await;
    let reply = a
        .register_signed(&me, "10.0.0.1:4001", &["chat"], json!({"name":"alpha"}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"ok","id":me.agent_id(),"address":"127.0.0.1:4001","correlationId":"r21"})
    );
    assert_eq!(keys(&reply), ["status", "id", "address", "correlationId"]);
    let id = me.agent_id().to_owned();

    let mut w = Client::connect(&hub.ws_url()).await;
    let looked = w.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(
        looked["agent"],
        json!({"id":id,"address":"127.0.0.1:4001","capabilities":["chat"],
               "metadata":{"name":"alpha"},"status":"online","identity":key})
    );
    assert_eq!(
        keys(&looked["agent"]),
        [
            "id",
            "address",
            "capabilities",
            "metadata",
            "status",
            "identity"
        ]
    );
    let listed = w.req(json!({"action":"discover"})).await;
    assert_eq!(listed["agents"][0]["id"], json!(id));
    assert_eq!(listed["agents"][0]["identity"], json!(key));
    assert_eq!(
        keys(&listed["agents"][0]),
        [
            "id",
            "address",
            "capabilities",
            "metadata",
            "status",
            "lastSeen",
            "identity"
        ]
    );
    let found = w.req(json!({"action":"find","capability":"chat"})).await;
    assert_eq!(
        found["agents"][0],
        json!({"id":id,"address":"127.0.0.1:4001","capabilities":["chat"],
               "metadata":{"name":"alpha"},"identity":key})
    );
    let page = http(hub.local_addr(), "GET", "/agents").await.json();
    assert_eq!(page["agents"][0]["identity"], json!(key));

    // The proven agent acts on its id like any registered agent.
    let hb = a.req(json!({"action":"heartbeat","id":id})).await;
    assert_eq!(hb["status"], "ok", "{hb}");
    let st = a
        .req(json!({"action":"status","id":id,"status":"busy","correlationId":"s"}))
        .await;
    assert_eq!(st, json!({"status":"ok","correlationId":"s"}));

    a.close().await;
    w.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn re_register_keeps_the_id_and_closes_the_older_websocket(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let me = new_identity();
    let id = me.agent_id().to_owned();
    let mut w = Client::connect(&hub.ws_url()).await;

    let mut old = Client::connect(&hub.ws_url()).await;
    let reply = old
        .register_signed(&me, "10.0.0.1:4001", &["chat"], json!({"v":1}))
        .await;
    assert_eq!(reply["id"], json!(id));

    // The agent comes back on a new WebSocket (its old one still open, e.g. half-dead)
    // with a new address and capabilities.
    let mut new = Client::connect(&hub.ws_url()).await;
    let reply = new
        .register_signed(&me, "10.0.0.1:4002", &["code"], json!({"v":2}))
        .await;
    assert_eq!(reply["id"], json!(id), "the same id on every reconnect");
    assert_eq!(reply["address"], "127.0.0.1:4002");

    assert_eq!(
        old.closed_by_hub().await,
        Some(CLOSE_SUPERSEDED),
        "the older WebSocket is closed, with the code that says why"
    );
    // Wait until the hub handled that close (its agents released), then check that the
    // close did not take the newer registration offline.
    eventually("the old WebSocket's close is handled", || {
        let hub = &hub;
        async move { open_connections(hub).await == 2 }
    })
    .await;
    let looked = w.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(
        looked["agent"],
        json!({"id":id,"address":"127.0.0.1:4002","capabilities":["code"],
               "metadata":{"v":2},"status":"online","identity":me.public().to_b64()}),
        "the newer registration replaced the row whole and stays online"
    );
    let stored = hub.state().registry().get(&id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status.as_str(), stored.address.as_str()),
        ("online", "127.0.0.1:4002"),
        "in the registry too, not only in the hub's mirror"
    );
    let stats = w.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["total"], 1, "one row per identity");
    assert_eq!(stats["agents"]["online"], 1);
    assert_eq!(stats["hub"]["activeConnections"], 1);
    let listed = w.req(json!({"action":"discover"})).await;
    assert_eq!(listed["count"], 1, "{listed}");
    assert!(
        w.req(json!({"action":"find","capability":"chat"})).await["agents"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let hb = new.req(json!({"action":"heartbeat","id":id})).await;
    assert_eq!(hb["status"], "ok", "{hb}");

    // Registering again on the same WebSocket is allowed and does not close it.
    let reply = new
        .register_signed(&me, "10.0.0.1:4003", &["code"], json!({}))
        .await;
    assert_eq!(reply["id"], json!(id));
    let hb = new
        .req(json!({"action":"heartbeat","id":id,"correlationId":"h"}))
        .await;
    assert_eq!(hb["status"], "ok", "{hb}");
    assert_eq!(
        w.req(json!({"action":"lookup","id":id})).await["agent"]["address"],
        "127.0.0.1:4003"
    );

    // Its own close still takes it offline.
    new.close().await;
    eventually("the agent's own close takes it offline", || {
        let hub = &hub;
        let id = id.clone();
        async move {
            let mut c = Client::connect(&hub.ws_url()).await;
            c.req(json!({"action":"lookup","id":id})).await["agent"]["status"] == "offline"
        }
    })
    .await;
    w.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn a_signature_from_another_connection_is_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let me = new_identity();
    let caps = vec!["chat".to_owned()];
    let a = Client::connect(&hub.ws_url()).await;
    let mut b = Client::connect(&hub.ws_url()).await;
    // Signed for connection A's nonce, replayed on connection B.
    let message = registration_message(&a.nonce, &me.public(), "10.0.0.1:4001", &caps);
    let captured = json!({
        "action":"register","address":"10.0.0.1:4001","capabilities":caps,
        "identity":me.public().to_b64(),"signature":me.sign_b64(&message),"correlationId":"x",
    });
    assert_eq!(b.req(captured).await, err("invalid_signature", "x"));
    let looked = b
        .req(json!({"action":"lookup","id":me.agent_id(),"correlationId":"l"}))
        .await;
    assert_eq!(looked, err("agent_not_found", "l"), "nothing stored");
    let stats = b.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["total"], 0);
    assert_eq!(stats["hub"]["activeConnections"], 0);

    // No proof at all, a proof by another key, garbage: refused. A key that is not a key
    // is `invalid_identity`.
    let other = new_identity();
    let message = registration_message(&b.nonce, &me.public(), "10.0.0.1:4001", &caps);
    for (identity, signature, code) in [
        (
            json!(me.public().to_b64()),
            json!(null),
            "invalid_signature",
        ),
        (
            json!(me.public().to_b64()),
            json!(other.sign_b64(&message)),
            "invalid_signature",
        ),
        (
            json!(me.public().to_b64()),
            json!("AAAA"),
            "invalid_signature",
        ),
        (
            json!(me.public().to_b64()),
            json!("not base64!"),
            "invalid_signature",
        ),
        (
            json!("AAAA"),
            json!(me.sign_b64(&message)),
            "invalid_identity",
        ),
        (
            // The small-order point y = 1.
            json!("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            json!(me.sign_b64(&message)),
            "invalid_identity",
        ),
        (json!("x".repeat(5000)), json!("y"), "invalid_identity"),
    ] {
        let reply = b
            .req(
                json!({"action":"register","address":"10.0.0.1:4001","capabilities":caps,
                        "identity":identity,"signature":signature,"correlationId":"y"}),
            )
            .await;
        assert_eq!(reply, err(code, "y"), "{identity} {signature}");
    }
    let stats = b.req(json!({"action":"stats"})).await;
    assert_eq!(stats["agents"]["total"], 0, "nothing stored");
    // The same proof made for B's own nonce is accepted.
    let reply = b
        .register_signed(&me, "10.0.0.1:4001", &["chat"], json!({}))
        .await;
    assert_eq!(reply["id"], json!(me.agent_id()));

    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn tampered_address_or_capabilities_are_refused(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let me = new_identity();
    let mut a = Client::connect(&hub.ws_url()).await;
    let caps = vec!["chat".to_owned()];
    let message = registration_message(&a.nonce, &me.public(), "10.0.0.1:4001", &caps);
    let signed = json!({
        "action":"register","address":"10.0.0.1:4001","capabilities":caps,
        "identity":me.public().to_b64(),"signature":me.sign_b64(&message),"correlationId":"t",
    });
    let tampered = [
        ("address", json!("10.0.0.1:6666")),
        ("capabilities", json!(["chat", "admin"])),
        ("capabilities", json!([])),
        ("capabilities", json!(["chat\nadmin"])),
    ];
    for (field, value) in tampered {
        let mut request = signed.clone();
        request[field] = value.clone();
        assert_eq!(
            a.req(request).await,
            err("invalid_signature", "t"),
            "{field} = {value}"
        );
    }
    let looked = a
        .req(json!({"action":"lookup","id":me.agent_id(),"correlationId":"l"}))
        .await;
    assert_eq!(looked, err("agent_not_found", "l"));
    // Metadata is not signed (it changes later through `status`, which only this
    // WebSocket may send): the untampered proof passes with any metadata.
    let mut request = signed.clone();
    request["metadata"] = json!({"name":"mine"});
    let reply = a.req(request).await;
    assert_eq!(reply["id"], json!(me.agent_id()), "{reply}");

    a.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn other_connections_cannot_act_for_a_proven_id(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let me = new_identity();
    let id = me.agent_id().to_owned();
    let mut a = Client::connect(&hub.ws_url()).await;
    a.register_signed(&me, "10.0.0.1:4001", &[], json!({}))
        .await;
    let mut b = Client::connect(&hub.ws_url()).await;
    b.register(4002, &[]).await;
    for action in ["heartbeat", "status", "disconnect"] {
        let reply = b
            .req(json!({"action":action,"id":id,"status":"x","correlationId":"f"}))
            .await;
        assert_eq!(reply, err("forbidden", "f"), "{action}");
    }
    let looked = b.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(looked["agent"]["status"], "online", "nothing changed");
    // Its own WebSocket may.
    let reply = a
        .req(json!({"action":"disconnect","id":id,"correlationId":"d"}))
        .await;
    assert_eq!(reply, json!({"status":"ok","correlationId":"d"}));
    let looked = b.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(looked["agent"]["status"], "offline");
    a.close().await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn a_2_0_register_gets_2_0(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let mut a = Client::connect(&hub.ws_url()).await;
    let request = json!({"action":"register","address":"10.0.0.1:4001",
                         "capabilities":["chat"],"correlationId":"r"});
    let first = a.req(request.clone()).await;
    assert_eq!(keys(&first), ["status", "id", "address", "correlationId"]);
    let mut b = Client::connect(&hub.ws_url()).await;
    // A signature without an identity proves nothing: ignored, plain 2.0.
    let mut with_sig = request.clone();
    with_sig["signature"] = json!("AAAA");
    let second = b.req(with_sig).await;
    assert_eq!(second["status"], "ok", "{second}");
    assert_ne!(first["id"], second["id"], "2.0: a new id every register");

    let id = first["id"].as_str().unwrap();
    let looked = b.req(json!({"action":"lookup","id":id})).await;
    assert_eq!(
        keys(&looked["agent"]),
        ["id", "address", "capabilities", "metadata", "status"],
        "no identity field for 2.0 agents"
    );
    let listed = b.req(json!({"action":"discover"})).await;
    for peer in listed["agents"].as_array().unwrap() {
        assert_eq!(
            keys(peer),
            [
                "id",
                "address",
                "capabilities",
                "metadata",
                "status",
                "lastSeen"
            ]
        );
    }
    let found = b.req(json!({"action":"find","capability":"chat"})).await;
    for agent in found["agents"].as_array().unwrap() {
        assert_eq!(keys(agent), ["id", "address", "capabilities", "metadata"]);
    }
    // 2.0 agents keep 2.0 closing: the WebSocket closing takes its agent offline.
    a.close().await;
    eventually("closed 2.0 agent offline", || {
        let hub = &hub;
        let id = id.to_owned();
        async move {
            let mut c = Client::connect(&hub.ws_url()).await;
            c.req(json!({"action":"lookup","id":id})).await["agent"]["status"] == "offline"
        }
    })
    .await;
    b.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

/// The registry itself: a write on behalf of an older registration of the row changes
/// nothing (this is what protects a newer registration from the older WebSocket's close,
/// on this hub or on another).
async fn stale_registration_writes_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let registry = store::open(&db.url, &StorageTuning::default())
        .await
        .unwrap();
    let row = |token: &str, address: &str| AgentRow {
        id: "0123456789abcdef0123456789abcdef".into(),
        address: address.into(),
        capabilities: vec!["chat".into()],
        metadata: serde_json::Map::new(),
        identity: Some("key".into()),
        status: "online".into(),
        last_seen: 1000,
        created_at: 1000,
        hub: "h1".into(),
        token: token.into(),
        version: 0,
        relay: None,
        reachable: None,
        mailbox: None,
    };
    let v1 = registry
        .apply(&[Write::Insert(row("s1", "1.1.1.1:1"))])
        .await
        .unwrap();
    let mut newer = row("s2", "2.2.2.2:2");
    newer.created_at = 2000;
    let v2 = registry.apply(&[Write::Insert(newer)]).await.unwrap();
    assert!(v2[0].unwrap() > v1[0].unwrap());
    let stale = [
        Write::SetStatus {
            id: "0123456789abcdef0123456789abcdef".into(),
            token: "s1".into(),
            status: "offline".into(),
            last_seen: None,
        },
        Write::Update {
            id: "0123456789abcdef0123456789abcdef".into(),
            token: "s1".into(),
            status: "busy".into(),
            metadata: serde_json::Map::new(),
            last_seen: 1500,
        },
    ];
    assert_eq!(registry.apply(&stale).await.unwrap(), vec![None, None]);
    let stored = registry
        .get("0123456789abcdef0123456789abcdef")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, "online");
    assert_eq!(stored.address, "2.2.2.2:2");
    assert_eq!(stored.token, "s2");
    assert_eq!(
        stored.created_at, 1000,
        "created_at is the first registration's"
    );
    assert_eq!(stored.version, v2[0].unwrap());
    let current = Write::SetStatus {
        id: "0123456789abcdef0123456789abcdef".into(),
        token: "s2".into(),
        status: "offline".into(),
        last_seen: None,
    };
    assert!(registry.apply(&[current]).await.unwrap()[0].is_some());
    registry.close().await;
    db.drop_db().await;
}

on_both_backends! {
    challenge_first => super::challenge_comes_first_and_the_action_repeats_it;
    signed_register => super::signed_register_gets_the_derived_id_and_publishes_the_key;
    re_register => super::re_register_keeps_the_id_and_closes_the_older_websocket;
    replayed_signature => super::a_signature_from_another_connection_is_refused;
    tampered_fields => super::tampered_address_or_capabilities_are_refused;
    ownership_v21 => super::other_connections_cannot_act_for_a_proven_id;
    register_v20 => super::a_2_0_register_gets_2_0;
    stale_writes => super::stale_registration_writes_change_nothing;
}

/// Two hubs on one PostgreSQL database: the agent re-registers through hub two while its
/// old WebSocket on hub one is still open. Hub one closing that WebSocket — by itself, or
/// because the change feed told it — never takes the newer registration offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_two_hubs_the_newer_registration_wins() {
    let db = TestDb::new(Backend::Postgres).await;
    let (mut cfg, _clock) = config(&db);
    // Only the explicit `sync_now` calls below read the change feed.
    cfg.storage.sync_interval = std::time::Duration::from_secs(3600);
    let one = Hub::start(cfg.clone()).await.unwrap();
    let two = Hub::start(cfg).await.unwrap();

    // Agent x: its old WebSocket on hub one closes *before* hub one hears of the newer
    // registration (no feed read in between): the stale close must be a no-op.
    let x = new_identity();
    let mut old_x = Client::connect(&one.ws_url()).await;
    old_x
        .register_signed(&x, "10.0.0.1:4001", &["chat"], json!({}))
        .await;
    let mut new_x = Client::connect(&two.ws_url()).await;
    let reply = new_x
        .register_signed(&x, "10.0.0.1:4002", &["chat"], json!({}))
        .await;
    assert_eq!(reply["id"], json!(x.agent_id()));
    old_x.close().await;
    eventually("hub one handled the close", || {
        let one = &one;
        async move { open_connections(one).await == 0 }
    })
    .await;

    // Agent y: hub one learns of the newer registration through the feed and closes the
    // old WebSocket itself.
    let y = new_identity();
    let mut old_y = Client::connect(&one.ws_url()).await;
    old_y
        .register_signed(&y, "10.0.0.1:4003", &[], json!({}))
        .await;
    let mut new_y = Client::connect(&two.ws_url()).await;
    new_y
        .register_signed(&y, "10.0.0.1:4004", &[], json!({}))
        .await;
    one.sync_now().await.unwrap();
    assert_eq!(old_y.closed_by_hub().await, Some(CLOSE_SUPERSEDED));
    eventually("hub one handled the eviction", || {
        let one = &one;
        async move { open_connections(one).await == 0 }
    })
    .await;

    for hub in [&one, &two] {
        hub.sync_now().await.unwrap();
        let mut w = Client::connect(&hub.ws_url()).await;
        for (who, port) in [(&x, 4002), (&y, 4004)] {
            let stored = hub.state().registry().get(who.agent_id()).await.unwrap();
            assert_eq!(stored.unwrap().status, "online");
            let looked = w.req(json!({"action":"lookup","id":who.agent_id()})).await;
            assert_eq!(looked["agent"]["status"], "online", "{looked}");
            assert_eq!(
                looked["agent"]["address"],
                json!(format!("127.0.0.1:{port}"))
            );
        }
        let stats = w.req(json!({"action":"stats"})).await;
        assert_eq!(stats["agents"]["total"], 2);
        w.close().await;
    }
    // Hub one shutting down releases only what it holds: nothing of x or y any more.
    one.shutdown().await.unwrap();
    two.sync_now().await.unwrap();
    let mut w = Client::connect(&two.ws_url()).await;
    for who in [&x, &y] {
        let looked = w.req(json!({"action":"lookup","id":who.agent_id()})).await;
        assert_eq!(looked["agent"]["status"], "online", "{looked}");
    }
    for c in [w, new_x, new_y] {
        c.close().await;
    }
    two.shutdown().await.unwrap();
    db.drop_db().await;
}
