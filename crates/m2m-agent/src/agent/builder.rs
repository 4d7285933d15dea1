//! [`AgentBuilder`]: the settings of an agent before it connects, one method each (the rest
//! through [`AgentBuilder::configure`]), with the defaults of [`crate::defaults`].

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::broadcast;

use m2m_proto::Identity;

use super::Agent;
use crate::config::AgentConfig;
use crate::defaults::EVENT_CAPACITY;
use crate::error::Result;
use crate::message::AgentEvent;

/// Builds an [`Agent`]; finish with [`AgentBuilder::connect`].
#[derive(Debug, Clone)]
pub struct AgentBuilder {
    config: AgentConfig,
    events: broadcast::Sender<AgentEvent>,
}

impl Default for AgentBuilder {
    fn default() -> Self {
        AgentBuilder {
            config: AgentConfig::default(),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }
}

impl AgentBuilder {
    /// Subscribes to the agent's events before it connects, so that
    /// [`AgentEvent::Connected`] is seen too.
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.events.subscribe()
    }

    /// P2P listening port; 0 (the default) picks any free port.
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = port;
        self
    }

    /// The hub: a `ws://`/`wss://`/`http(s)://` URL or a host (default `m2m.dev`).
    pub fn hub(mut self, hub: &str) -> Self {
        self.config.hub = hub.to_owned();
        self
    }

    /// Several hubs on one database, for failover: the agent registers at the first that
    /// answers and, when its hub goes away, moves to the next (round robin, with the
    /// reconnect backoff), keeping its 2.1 id. The same as [`hub`](Self::hub) with the
    /// hubs comma-separated.
    pub fn hubs<I, S>(mut self, hubs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config.hub = hubs
            .into_iter()
            .map(|h| h.as_ref().trim().to_owned())
            .collect::<Vec<_>>()
            .join(",");
        self
    }

    /// The public `host:port` to register (behind NAT).
    pub fn address(mut self, address: &str) -> Self {
        self.config.address = Some(address.to_owned());
        self
    }

    /// Capabilities offered.
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Metadata registered at the hub.
    pub fn metadata(mut self, metadata: Map<String, Value>) -> Self {
        self.config.metadata = metadata;
        self
    }

    /// Time between heartbeats (default 30 s).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = interval;
        self
    }

    /// Reconnect when the hub connection drops (default true).
    pub fn auto_reconnect(mut self, on: bool) -> Self {
        self.config.auto_reconnect = on;
        self
    }

    /// First reconnect delay (default 5 s; doubles per failed attempt up to 60 s).
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.config.reconnect_delay = delay;
        self
    }

    /// Default wait of [`Agent::request`] (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Time a P2P send may take until the ack (default 10 s).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.config.send_timeout = timeout;
        self
    }

    /// Time a hub request may take (default 10 s).
    pub fn hub_request_timeout(mut self, timeout: Duration) -> Self {
        self.config.hub_request_timeout = timeout;
        self
    }

    /// Simultaneous inbound P2P connections (default 1024); when all are taken, a new one
    /// evicts the one that delivered nothing for longest.
    pub fn max_inbound_connections(mut self, max: usize) -> Self {
        self.config.max_inbound_connections = max;
        self
    }

    /// Inbound connections one source address may hold (default 128).
    pub fn max_inbound_per_ip(mut self, max: usize) -> Self {
        self.config.max_inbound_per_ip = max;
        self
    }

    /// Bytes all inbound read buffers may hold beyond one read each (default 128 MiB).
    pub fn inbound_buffer_budget(mut self, bytes: usize) -> Self {
        self.config.inbound_buffer_budget = bytes;
        self
    }

    /// Handshakes one source address may start per second (default 500, burst 1000; 0 lifts
    /// the limit).
    pub fn handshakes_per_ip_per_second(mut self, rate: u32) -> Self {
        self.config.handshakes_per_ip_per_second = rate;
        self
    }

    /// Messages buffered for the application before peers are slowed down (default 1024).
    pub fn inbox_capacity(mut self, capacity: usize) -> Self {
        self.config.inbox_capacity = capacity;
        self
    }

    /// Bytes (as sent on the wire) of the messages buffered for the application and the
    /// request handlers before peers are slowed down (default 64 MiB).
    pub fn inbox_bytes(mut self, bytes: usize) -> Self {
        self.config.inbox_bytes = bytes;
        self
    }

    /// 2.1: our long-term identity. On a 2.1 hub our id is derived from it, the same on
    /// every reconnect and restart. Default: a fresh identity generated at connect.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.config.identity = Some(identity);
        self
    }

    /// 2.1: refuse peers that do not prove an identity, in both directions (default false:
    /// 2.0 peers are served unauthenticated, unless the hub vouches for their identity).
    pub fn authenticated_peers_only(mut self, on: bool) -> Self {
        self.config.authenticated_peers_only = on;
        self
    }

    /// Whether to register at the hub (default true). With `false` the agent uses the hub
    /// without appearing in it, so a script can query in a loop without changing the
    /// registry: [`Agent::discover`], [`Agent::find`], [`Agent::lookup`], [`Agent::stats`],
    /// sends and broadcasts work; [`Agent::request`] works with 2.1 peers the hub vouches
    /// for (they answer on our own connection), not with 2.0 peers, which answer on a new
    /// connection to an address they look up. No P2P port is opened
    /// ([`Agent::local_port`] is 0, [`Agent::address`] is empty), our id is our identity's
    /// derived id, no [`AgentEvent::Connected`] is sent, no heartbeats or reconnects run,
    /// and [`Agent::update_status`] fails with [`AgentError::NotRegistered`](crate::AgentError::NotRegistered).
    pub fn register(mut self, on: bool) -> Self {
        self.config.register = on;
        self
    }

    /// Relay (docs/RELAY.md): attach to a 2.1 hub's relay and use it (default true). With
    /// `false` nobody reaches us through the hub, and sends to agents that only the relay
    /// reaches fail with [`AgentError::NoRoute`](crate::AgentError::NoRoute).
    pub fn relay(mut self, on: bool) -> Self {
        self.config.relay = on;
        self
    }

    /// Relay: run with no TCP listener at all (default false): the agent registers port 0
    /// and is reached only through the hub's relay, which needs a 2.1 hub with its relay
    /// on (otherwise [`AgentBuilder::connect`] fails with a clear error).
    pub fn relay_only(mut self, on: bool) -> Self {
        self.config.relay_only = on;
        self
    }

    /// How long a direct dial of a send by id may take (connect and handshake) before the
    /// send falls back to the relay (default 2 s, [`crate::defaults::DIRECT_CONNECT_TIMEOUT`]).
    pub fn direct_connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.direct_connect_timeout = timeout;
        self
    }

    /// Mailbox (docs/MAILBOX.md): publish our mailbox key at each registration on a 2.1
    /// hub and receive the mail stored for us, and queue sends that cannot reach their
    /// target in its mailbox (default true). With `false` no key is published, nothing is
    /// subscribed, and sends fail as in 2.0 when no route reaches the target. An agent that
    /// does not register ([`AgentBuilder::register`]`(false)`) still queues sends, but
    /// receives no mail: it reads it with [`crate::fetch_mail`].
    pub fn mailbox(mut self, on: bool) -> Self {
        self.config.mailbox = on;
        self
    }

    /// Mailbox: keep the ids of delivered mail in `path`, so that a restarted agent also
    /// drops a message the hub pushes again after we acked it (default: in memory only).
    pub fn mailbox_state(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.mailbox_state = Some(path.into());
        self
    }

    /// The hub named by the `M2M_HUB` environment variable, if it is set and not empty;
    /// otherwise the hub stays as it was (default `m2m.dev`). Lets an example or a program
    /// run against a local hub without code changes.
    pub fn hub_from_env(self) -> Self {
        match std::env::var(crate::config::HUB_ENV) {
            Ok(hub) if !hub.trim().is_empty() => self.hub(&hub),
            _ => self,
        }
    }

    /// Changes any other setting.
    pub fn configure(mut self, f: impl FnOnce(&mut AgentConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Starts the listener, registers at the hub and returns the running agent.
    pub async fn connect(self) -> Result<Agent> {
        Agent::start(self.config, self.events).await
    }
}
