//! A terminal chat: every line you type goes to a peer, every message received is printed.
//!
//! ```sh
//! cargo run -p m2m-agent --example chat                      # talks to the first chat agent
//! cargo run -p m2m-agent --example chat -- <peer-id>         # talks to this agent
//! ```
//! The hub comes from `M2M_HUB`, else `ws://127.0.0.1:3000/ws`. Start two of them.

use m2m_agent::{json, Agent, AgentError};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let hub = std::env::var("M2M_HUB").unwrap_or_else(|_| "ws://127.0.0.1:3000/ws".into());
    let mut peer = std::env::args().nth(1);
    let agent = Agent::builder()
        .hub(&hub)
        .capabilities(["chat"])
        .connect()
        .await?;
    println!("you are {} — type a line and press enter", agent.id());

    agent.on_message(|msg| async move {
        let text = msg
            .payload
            .get("text")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| msg.payload.to_string());
        let who: String = msg.from.chars().take(8).collect();
        println!("[{who}] {text}");
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                if peer.is_none() {
                    peer = agent.find("chat").await?.into_iter().map(|a| a.id).find(|id| *id != agent.id());
                }
                match &peer {
                    Some(to) => {
                        if let Err(e) = agent.send(to, "chat", json!({ "text": line })).await {
                            eprintln!("not delivered: {e}");
                        }
                    }
                    None => eprintln!("no other chat agent online yet"),
                }
            }
        }
    }
    agent.disconnect().await
}
