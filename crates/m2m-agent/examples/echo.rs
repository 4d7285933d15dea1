//! An echo agent: answers every message with its own payload (`<type>:response`), so it also
//! serves `request`s. Runs until Ctrl-C.
//!
//! ```sh
//! cargo run -p m2m-agent --example echo -- ws://127.0.0.1:3000/ws
//! ```
//! The hub comes from the first argument, else `M2M_HUB`, else `ws://127.0.0.1:3000/ws`.

use m2m_agent::{Agent, AgentError};

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let hub = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("M2M_HUB").ok())
        .unwrap_or_else(|| "ws://127.0.0.1:3000/ws".into());
    let agent = Agent::builder()
        .hub(&hub)
        .capabilities(["echo"])
        .connect()
        .await?;
    println!("echo agent {} listening at {}", agent.id(), agent.address());

    let responder = agent.clone();
    agent.on_message(move |msg| {
        let agent = responder.clone();
        async move {
            println!("{} from {}: {}", msg.message_type, msg.from, msg.payload);
            if let Err(e) = agent.respond(&msg, msg.payload.clone()).await {
                eprintln!("could not answer {}: {e}", msg.from);
            }
        }
    });

    let _ = tokio::signal::ctrl_c().await;
    agent.disconnect().await
}
