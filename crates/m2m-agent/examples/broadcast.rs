//! Broadcast: three `monitor` agents and one sender in this process; the sender alerts every
//! online monitor and prints the report `{total, delivered, failed, errors}`.
//!
//! ```sh
//! cargo run -p m2m-agent --example broadcast -- ws://127.0.0.1:3000/ws
//! ```

use m2m_agent::{json, Agent, AgentError, BroadcastOptions};

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let hub = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("M2M_HUB").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".into());

    let mut monitors = Vec::new();
    for n in 0..3 {
        let monitor = Agent::builder()
            .hub(&hub)
            .capabilities(["monitor"])
            .connect()
            .await?;
        monitor.on_message(move |msg| async move {
            println!("monitor {n} got {}: {}", msg.message_type, msg.payload);
        });
        monitors.push(monitor);
    }

    let sender = Agent::builder().hub(&hub).connect().await?;
    let report = sender
        .broadcast(
            "alert",
            json!({ "msg": "hello" }),
            BroadcastOptions::new().capabilities(["monitor"]),
        )
        .await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );

    sender.disconnect().await?;
    for m in monitors {
        m.disconnect().await?;
    }
    Ok(())
}
