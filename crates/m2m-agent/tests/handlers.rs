//! The ergonomic layer: request handlers, typed payloads, the hub from the environment, and
//! agents that use the hub without registering (so a query never changes what it queries).

mod common;

use common::{agent, FakeHub, RealHub, TestHub};
use m2m_agent::{
    json, AgentError, BroadcastOptions, DiscoverOptions, HandlerError, Message, Stats, Value,
};
use serde::{Deserialize, Serialize};

/// What the hub holds: its counts and the agents it lists.
async fn registry(asker: &m2m_agent::Agent) -> (Value, Vec<String>) {
    let stats: Stats = asker.stats().await.unwrap();
    let stats = serde_json::to_value(stats).unwrap();
    let mut ids: Vec<String> = asker
        .discover(DiscoverOptions::new())
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    ids.sort();
    (
        json!({"agents": stats["agents"], "active": stats["hub"]["activeConnections"]}),
        ids,
    )
}

#[tokio::test]
async fn an_unregistered_agent_leaves_the_registry_as_it_was() {
    let hub = RealHub::start(0).await;
    let worker = agent(&hub)
        .capabilities(["compute"])
        .connect()
        .await
        .unwrap();
    worker.on_request("compute", |req| async move {
        let numbers: Vec<i64> = req.payload_as()?;
        Ok(json!({ "sum": numbers.iter().sum::<i64>() }))
    });
    let observer = agent(&hub).register(false).connect().await.unwrap();
    let before = registry(&observer).await;
    assert_eq!(before.1, [worker.id()], "{before:?}");

    let asker = agent(&hub).register(false).connect().await.unwrap();
    assert!(!asker.is_registered());
    assert_eq!(asker.local_port(), 0, "an unregistered agent opens no port");
    assert_eq!(asker.id(), asker.identity().agent_id());
    assert_eq!(
        asker.update_status("busy", Default::default()).await,
        Err(AgentError::NotRegistered)
    );
    assert_eq!(asker.find("compute").await.unwrap().len(), 1);
    assert_eq!(asker.lookup(&worker.id()).await.unwrap().id, worker.id());
    asker.stats().await.unwrap();
    // 2.1: the worker answers on the asker's own connection, so no return path is needed.
    let answer = asker
        .request(&worker.id(), "compute", json!([1, 2, 3]), None)
        .await
        .unwrap();
    assert_eq!(answer, json!({"sum": 6}));
    asker.send(&worker.id(), "note", json!("hi")).await.unwrap();
    let report = asker
        .broadcast("news", json!(1), BroadcastOptions::new())
        .await
        .unwrap();
    assert_eq!((report.total, report.delivered), (1, 1));
    // The worker knows who wrote: the asker's identity is proven in the handshake.
    let note = worker.next_message().await.unwrap();
    assert_eq!(
        (note.message_type.as_str(), note.authenticated),
        ("note", true)
    );
    assert_eq!(note.from, asker.id());
    asker.disconnect().await.unwrap();

    assert_eq!(registry(&observer).await, before);
    worker.disconnect().await.unwrap();
    observer.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn an_unregistered_agent_works_with_a_2_0_hub() {
    let hub = FakeHub::start_v20(0).await;
    let peer = agent(&hub).capabilities(["x"]).connect().await.unwrap();
    let observer = agent(&hub).register(false).connect().await.unwrap();
    let before = registry(&observer).await;
    let asker = agent(&hub).register(false).connect().await.unwrap();
    assert_eq!(asker.find("x").await.unwrap()[0].id, peer.id());
    assert_eq!(asker.lookup(&peer.id()).await.unwrap().id, peer.id());
    asker
        .send(&peer.id(), "hello", json!({"a": 1}))
        .await
        .unwrap();
    let got = peer.next_message().await.unwrap();
    assert_eq!(got.payload, json!({"a": 1}));
    asker.disconnect().await.unwrap();
    assert_eq!(registry(&observer).await, before);
    peer.disconnect().await.unwrap();
    observer.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[derive(Debug, Serialize)]
struct Numbers {
    numbers: Vec<i64>,
}

#[derive(Debug, Deserialize, PartialEq)]
struct Sum {
    sum: i64,
}

#[tokio::test]
async fn on_request_answers_errors_and_leaves_other_messages_alone() {
    let hub = RealHub::start(0).await;
    let worker = agent(&hub).connect().await.unwrap();
    worker.on_request("add", |req: Message| async move {
        #[derive(Deserialize)]
        struct Ask {
            numbers: Vec<i64>,
        }
        let ask: Ask = req.payload_as()?;
        if ask.numbers.is_empty() {
            return Err(HandlerError::new("nothing to add"));
        }
        Ok(json!({ "sum": ask.numbers.iter().sum::<i64>() }))
    });
    let asker = agent(&hub).connect().await.unwrap();

    let sum: Sum = asker
        .request_as(
            &worker.id(),
            "add",
            &Numbers {
                numbers: vec![2, 3],
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(sum, Sum { sum: 5 });
    let failed = asker
        .request(&worker.id(), "add", json!({"numbers": []}), None)
        .await
        .unwrap();
    assert_eq!(failed, json!({"error": "nothing to add"}));
    let unfit = asker
        .request(&worker.id(), "add", json!("not numbers"), None)
        .await
        .unwrap();
    assert!(
        unfit["error"]
            .as_str()
            .unwrap()
            .contains("add payload: invalid type"),
        "{unfit}"
    );
    // A response that does not fit the type asked for is an error, not a panic.
    let wrong: Result<Sum, _> = asker
        .request_as(&worker.id(), "add", &json!({"numbers": []}), None)
        .await;
    assert!(
        matches!(wrong, Err(AgentError::InvalidPayload(_))),
        "{wrong:?}"
    );

    // Other types still reach the application.
    asker
        .send_json(&worker.id(), "chat", &Numbers { numbers: vec![7] })
        .await
        .unwrap();
    let chat = worker.next_message().await.unwrap();
    assert_eq!(
        (chat.message_type.as_str(), chat.payload),
        ("chat", json!({"numbers": [7]}))
    );
    asker.disconnect().await.unwrap();
    worker.disconnect().await.unwrap();
    hub.shutdown().await;
}

#[test]
fn the_hub_comes_from_m2m_hub_or_defaults_to_m2m_dev() {
    // The only test of this binary that reads M2M_HUB.
    std::env::remove_var("M2M_HUB");
    assert_eq!(
        m2m_agent::Agent::builder().hub_from_env().config().hub,
        "m2m.dev"
    );
    std::env::set_var("M2M_HUB", "localhost:3000");
    assert_eq!(
        m2m_agent::Agent::builder().hub_from_env().config().hub,
        "localhost:3000"
    );
    // Given in code after the environment: the code wins.
    assert_eq!(
        m2m_agent::Agent::builder()
            .hub_from_env()
            .hub("ws://127.0.0.1:9/ws")
            .config()
            .hub,
        "ws://127.0.0.1:9/ws"
    );
    std::env::remove_var("M2M_HUB");
}
