//! Test support: an in-process hub on 127.0.0.1 and helpers.
#![allow(dead_code)]

pub mod fake_hub;

use std::time::Duration;

use m2m_agent::{Agent, AgentBuilder, AgentEvent};
use tokio::sync::broadcast;

pub use fake_hub::TestHub;

/// An agent builder with test-friendly timings, pointed at `hub`.
pub fn agent(hub: &TestHub) -> AgentBuilder {
    Agent::builder()
        .hub(&hub.url())
        .heartbeat_interval(Duration::from_millis(200))
        .reconnect_delay(Duration::from_millis(50))
        .send_timeout(Duration::from_secs(5))
        .hub_request_timeout(Duration::from_secs(5))
}

/// Waits (bounded, generously) for an event matching `pred`.
pub async fn wait_event(
    events: &mut broadcast::Receiver<AgentEvent>,
    mut pred: impl FnMut(&AgentEvent) -> bool,
) -> AgentEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.recv().await {
                Ok(e) if pred(&e) => return e,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await
    .expect("event did not arrive")
}
