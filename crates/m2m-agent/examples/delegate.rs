//! Task delegation with request/respond: a worker offering `compute`, and a client that finds
//! it through the hub and asks it to add numbers. Both run in this process.
//!
//! ```sh
//! cargo run -p m2m-agent --example delegate -- ws://127.0.0.1:3000/ws
//! ```

use std::time::Duration;

use m2m_agent::{json, Agent, AgentError, Value};

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let hub = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("M2M_HUB").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".into());

    // The worker: answers `compute` requests.
    let worker = Agent::builder()
        .hub(&hub)
        .capabilities(["compute"])
        .connect()
        .await?;
    worker.on_request("compute", |msg| async move {
        let sum: i64 = msg.payload["numbers"]
            .as_array()
            .map(|ns| ns.iter().filter_map(Value::as_i64).sum())
            .unwrap_or(0);
        Ok(json!({ "sum": sum }))
    });

    // The client: finds a worker and delegates.
    let client = Agent::builder().hub(&hub).connect().await?;
    let workers = client.find("compute").await?;
    let Some(w) = workers.first() else {
        eprintln!("no compute agent online");
        return Ok(());
    };
    let result = client
        .request(
            &w.id,
            "compute",
            json!({ "operation": "sum", "numbers": [1, 2, 3] }),
            Some(Duration::from_secs(30)),
        )
        .await?;
    println!("worker {} says: {result}", w.id);

    client.disconnect().await?;
    worker.disconnect().await
}
