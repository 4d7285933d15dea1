//! The README's responder: answers `compute` requests with the sum of the numbers sent.
//! Run `M2M_HUB=localhost:3000 cargo run -p m2m-agent --example responder`, then
//! `m2m request <ID> compute '[1,2,3]'`.

use m2m_agent::{json, Agent, AgentError};

#[tokio::main]
async fn main() -> Result<(), AgentError> {
    let agent = Agent::builder().hub_from_env().connect().await?;
    agent.on_request("compute", |req| async move {
        let numbers: Vec<i64> = req.payload_as()?;
        Ok(json!({ "sum": numbers.iter().sum::<i64>() }))
    });
    println!("answering as {}", agent.id());
    tokio::signal::ctrl_c().await.ok();
    agent.disconnect().await
}
