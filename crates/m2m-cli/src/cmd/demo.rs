//! `m2m demo`: everything at once, in one process, for a newcomer — an in-memory hub on a
//! free port, two agents (alice and bob), discovery, one message and one request/response,
//! then a clean shutdown. Narrated for people; JSON lines for scripts.

use anyhow::{anyhow, Context as _};
use m2m_agent::{Agent, DiscoverOptions, Message};
use m2m_hub::{Hub, HubConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::explain;
use crate::defaults::DEMO_STEP_TIMEOUT as STEP_TIMEOUT;
use crate::output::Output;

/// Prints a step: `value` as a JSON line in JSON mode, `text` otherwise.
fn step(out: Output, value: Value, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    out.either(&value, text)
}

/// `m2m demo`.
pub async fn run(out: Output) -> anyhow::Result<()> {
    let hub = Hub::start(HubConfig::in_memory())
        .await
        .context("could not start the demo hub")?;
    let ws = hub.ws_url();
    step(out, json!({"event": "hub", "ws": ws}), || {
        format!("1. A hub is running in this process at {ws} (registry in memory).")
    })?;
    let result = tokio::time::timeout(STEP_TIMEOUT * 3, conversation(&ws, out))
        .await
        .unwrap_or_else(|_| Err(anyhow!("the demo took too long")));
    hub.shutdown().await.context("stopping the demo hub")?;
    result?;
    step(out, json!({"event": "done"}), || {
        "Done: both agents disconnected and the hub stopped.\n\n\
         Try it across two terminals:\n  \
         terminal 1:  m2m hub --port 3000\n  \
         terminal 2:  m2m listen --hub localhost:3000 --capabilities echo --echo\n  \
         terminal 3:  m2m --hub localhost:3000 find echo\n               \
         m2m --hub localhost:3000 request <ID> hello '{\"text\":\"hi\"}'\n  \
         or the interactive agent:  m2m agent --hub localhost:3000"
            .to_owned()
    })
}

async fn join(ws: &str, name: &str, capabilities: &[&str]) -> anyhow::Result<Agent> {
    let mut metadata = serde_json::Map::new();
    metadata.insert("name".into(), json!(name));
    Agent::builder()
        .hub(ws)
        .port(0)
        .capabilities(capabilities.iter().copied())
        .metadata(metadata)
        .auto_reconnect(false)
        .connect()
        .await
        .map_err(|e| anyhow!("{name} could not join the demo hub: {e}"))
}

async fn conversation(ws: &str, out: Output) -> anyhow::Result<()> {
    let alice = join(ws, "alice", &["chat"]).await?;
    let bob = match join(ws, "bob", &["chat", "math"]).await {
        Ok(b) => b,
        Err(e) => {
            let _ = alice.disconnect().await;
            return Err(e);
        }
    };
    let result = talk(&alice, &bob, out).await;
    let _ = alice.disconnect().await;
    let _ = bob.disconnect().await;
    result
}

async fn talk(alice: &Agent, bob: &Agent, out: Output) -> anyhow::Result<()> {
    for (name, agent, caps) in [("alice", alice, "chat"), ("bob", bob, "chat, math")] {
        step(
            out,
            json!({"event": "joined", "name": name, "id": agent.id(), "address": agent.address()}),
            || {
                format!(
                    "2. {name} registered: id {} at {} (offers {caps}).",
                    agent.id(),
                    agent.address()
                )
            },
        )?;
    }

    // Bob: tell the narrator what arrives; answer `sum` requests.
    let (seen_tx, mut seen_rx) = mpsc::channel::<Message>(8);
    let bob_task = {
        let bob = bob.clone();
        tokio::spawn(async move {
            while let Some(message) = bob.next_message().await {
                if message.message_type == "sum" {
                    let numbers = message
                        .payload
                        .get("numbers")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let answer = json!({ "sum": sum(&numbers) });
                    if let Err(e) = bob.respond(&message, answer).await {
                        tracing::warn!("bob could not answer: {e}");
                    }
                }
                if seen_tx.send(message).await.is_err() {
                    break;
                }
            }
        })
    };

    let peers = alice
        .discover(DiscoverOptions::new().capabilities(["math"]))
        .await
        .map_err(explain)?;
    step(
        out,
        json!({"event": "discovered", "by": "alice", "capability": "math", "agents": peers}),
        || {
            let mut text = format!(
                "3. alice asks the hub who offers \"math\": {} agent(s).",
                peers.len()
            );
            for p in &peers {
                text.push_str(&format!("\n     {} {} {}", p.id, p.status, p.address));
            }
            text
        },
    )?;
    let bob_id = bob.id();
    if !peers.iter().any(|p| p.id == bob_id) {
        bob_task.abort();
        return Err(anyhow!("the hub did not list bob"));
    }

    let hello = json!({"text": "Hello Bob!"});
    let delivery = alice
        .send(&bob_id, "chat", hello.clone())
        .await
        .map_err(explain)?;
    let received = tokio::time::timeout(STEP_TIMEOUT, seen_rx.recv())
        .await
        .ok()
        .flatten()
        .ok_or_else(|| anyhow!("bob did not receive the message"))?;
    step(
        out,
        json!({"event": "message", "from": received.from, "to": bob_id, "type": received.message_type,
               "payload": received.payload, "delivered": delivery.delivered, "encrypted": received.encrypted}),
        || {
            format!(
                "4. alice sends bob a \"chat\" message straight over TCP, end-to-end encrypted;\n   \
                 bob receives {} from {}.",
                received.payload, received.from
            )
        },
    )?;

    let question = json!({"numbers": [1, 2, 3]});
    let answer = alice
        .request(&bob_id, "sum", question.clone(), Some(STEP_TIMEOUT))
        .await
        .map_err(explain)?;
    step(
        out,
        json!({"event": "response", "request": question, "response": answer}),
        || {
            format!(
                "5. alice requests \"sum\" of {question}; bob answers with sum:response and alice gets {answer}."
            )
        },
    )?;

    let stats = alice.stats().await.map_err(explain)?;
    step(out, json!({"event": "stats", "stats": stats}), || {
        format!(
            "6. The hub knows {} agents ({} online) and never saw a message's content.",
            stats.agents.total, stats.agents.online
        )
    })?;
    bob_task.abort();
    Ok(())
}

/// Bob's service: the sum of the numbers, whole when they all are.
fn sum(numbers: &[Value]) -> Value {
    let whole: Option<i64> = numbers
        .iter()
        .try_fold(0i64, |acc, n| n.as_i64().and_then(|n| acc.checked_add(n)));
    match whole {
        Some(total) => json!(total),
        None => json!(numbers.iter().filter_map(Value::as_f64).sum::<f64>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bob_adds() {
        assert_eq!(sum(&[json!(1), json!(2), json!(3)]), json!(6));
        assert_eq!(sum(&[json!(1), json!(0.5)]), json!(1.5));
        assert_eq!(sum(&[]), json!(0));
    }
}
