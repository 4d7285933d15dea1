//! Test support: an in-process hub on 127.0.0.1 and helpers.
#![allow(dead_code)]

pub mod fake_hub;
pub mod mail_hub;

use std::net::SocketAddr;
use std::time::Duration;

use m2m_agent::{Agent, AgentBuilder, AgentEvent};
use tokio::sync::broadcast;

pub use fake_hub::FakeHub;

/// What the tests need of a hub, so every test runs against the real `m2m-hub` and against
/// the minimal [`FakeHub`] (which also sends an unsolicited 2.1 challenge).
pub trait TestHub: Sized {
    /// Starts on 127.0.0.1:`port` (0 = any free port).
    async fn start(port: u16) -> Self;
    /// The WebSocket URL.
    fn url(&self) -> String;
    /// The bound port.
    fn port(&self) -> u16;
    /// Stops, closing every WebSocket.
    async fn shutdown(self);
}

/// The real hub, in memory.
pub struct RealHub(m2m_hub::RunningHub);

impl TestHub for RealHub {
    async fn start(port: u16) -> Self {
        let mut config = m2m_hub::HubConfig::in_memory();
        config.bind = SocketAddr::from(([127, 0, 0, 1], port));
        RealHub(m2m_hub::Hub::start(config).await.unwrap())
    }
    fn url(&self) -> String {
        self.0.ws_url()
    }
    fn port(&self) -> u16 {
        self.0.local_addr().port()
    }
    async fn shutdown(self) {
        self.0.shutdown().await.unwrap();
    }
}

impl TestHub for FakeHub {
    async fn start(port: u16) -> Self {
        FakeHub::start(port).await
    }
    fn url(&self) -> String {
        FakeHub::url(self)
    }
    fn port(&self) -> u16 {
        FakeHub::port(self)
    }
    async fn shutdown(self) {
        FakeHub::shutdown(self).await
    }
}

/// Runs `$test::<H>()` against both hubs.
#[macro_export]
macro_rules! on_both_hubs {
    ($($name:ident),* $(,)?) => {
        mod real_hub {
            $(#[tokio::test] async fn $name() { super::$name::<$crate::common::RealHub>().await })*
        }
        mod fake_hub {
            $(#[tokio::test] async fn $name() { super::$name::<$crate::common::FakeHub>().await })*
        }
    };
}

/// An agent builder with test-friendly timings, pointed at `hub`.
pub fn agent(hub: &impl TestHub) -> AgentBuilder {
    agent_at(&hub.url())
}

/// An agent builder with test-friendly timings, pointed at the hub at `url`.
pub fn agent_at(url: &str) -> AgentBuilder {
    Agent::builder()
        .hub(url)
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
