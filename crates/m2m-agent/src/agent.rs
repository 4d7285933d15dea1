//! [`Agent`]: the SDK's handle, and [`AgentBuilder`].
//!
//! `connect` binds the P2P listener first, then registers at the hub (PROTOCOL.md A5). The
//! agent then runs three kinds of tasks, all owned by one [`TaskTracker`] and stopped by one
//! [`CancellationToken`]: the responder (accept loop + one task per inbound connection), the
//! hub supervisor (heartbeats, reconnects) and the outbound connections of the pool. Tasks
//! hold only the parts they need, never the `Agent`, so dropping the last handle stops them
//! too; [`Agent::disconnect`] stops them and waits.
//!
//! 2.1 (PROTOCOL.md B): every agent has an identity (given, or generated at connect). Sends
//! by id carry the identity the hub published for the peer into the handshake, so a hub that
//! lies about an address gets the send refused, not redirected; responses to messages that
//! came on an authenticated inbound session go back on that session.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, Stream, StreamExt};
use m2m_proto::hub::{
    errors as hub_errors, status, AgentRecord, Discovered, Found, FoundAgent, HubRequest, LookedUp,
    Peer, Stats,
};
use m2m_proto::{limits, Identity, IdentityKey};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::cache::AddressCache;
use crate::config::{hub_url, AgentConfig};
use crate::defaults::{EVENT_CAPACITY, SHUTDOWN_GRACE, VOUCHED_KEYS};
use crate::error::{AgentError, Result};
use crate::hub_client::correlation_id;
use crate::hub_link::{self, HubLink, LinkTiming};
use crate::identity::LocalIdentity;
use crate::inbox::Inbox;
use crate::listener::{self, InboundContext, InboundLimits, InboundSessions, NotSentBack};
use crate::message::{
    AgentEvent, BroadcastFailure, BroadcastOptions, BroadcastReport, Delivery, DiscoverOptions,
    Message,
};
use crate::peer::{self, Credentials, OutboundSettings, Pool};
use crate::refusals::{RefusalCounter, Refusals};

/// An M2M agent: registered at a hub, listening for peers, able to send to them.
///
/// Cheap to clone; every clone is the same agent. See the [crate docs](crate) for a tour.
#[derive(Clone, Debug)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    config: AgentConfig,
    local_port: u16,
    link: Arc<HubLink>,
    local: Arc<LocalIdentity>,
    inbox: Arc<Inbox>,
    sessions: Arc<InboundSessions>,
    refusals: Arc<RefusalCounter>,
    pool: Arc<Pool>,
    cache: AddressCache,
    /// Identity keys from hub records already checked against their ids: decoding an
    /// Ed25519 point and hashing it cost ~10 µs, on every send by id otherwise.
    vouched: Mutex<HashMap<String, (String, IdentityKey)>>,
    events: broadcast::Sender<AgentEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    disconnected: AtomicBool,
    _stop_on_drop: DropGuard,
}

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
    /// and [`Agent::update_status`] fails with [`AgentError::NotRegistered`].
    pub fn register(mut self, on: bool) -> Self {
        self.config.register = on;
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

impl Agent {
    /// A builder with the protocol's defaults.
    pub fn builder() -> AgentBuilder {
        AgentBuilder::default()
    }

    /// Starts an agent from a full configuration.
    pub async fn connect_with(config: AgentConfig) -> Result<Agent> {
        Agent::start(config, broadcast::channel(EVENT_CAPACITY).0).await
    }

    async fn start(
        mut config: AgentConfig,
        events: broadcast::Sender<AgentEvent>,
    ) -> Result<Agent> {
        let url = hub_url(&config.hub)?;
        let identity = config
            .identity
            .get_or_insert_with(|| Identity::generate(&mut rand::thread_rng()))
            .clone();
        let local = Arc::new(LocalIdentity::new(
            identity.clone(),
            config.authenticated_peers_only,
            !config.register,
        ));
        // An agent that does not register announces no address, so nobody could dial a
        // listener: it opens none (2.1 peers answer on its own connections).
        let listener = if config.register {
            Some(
                TcpListener::bind(SocketAddr::new(config.bind_ip, config.port))
                    .await
                    .map_err(|e| AgentError::io(format!("binding P2P port {}", config.port), &e))?,
            )
        } else {
            None
        };
        let local_port = match &listener {
            Some(l) => l
                .local_addr()
                .map_err(|e| AgentError::io("reading the P2P port", &e))?
                .port(),
            None => 0,
        };
        let address = match (&config.address, &listener) {
            (Some(a), _) => a.clone(),
            (None, Some(_)) => format!("{}:{}", hub_link::local_ipv4(&url).await, local_port),
            (None, None) => String::new(),
        };

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let inbox = Inbox::new(config.inbox_capacity, config.inbox_bytes);
        let sessions = Arc::new(InboundSessions::default());
        let refusals = Arc::new(RefusalCounter::default());
        if let Some(listener) = listener {
            tracker.spawn(listener::serve(
                listener,
                InboundContext {
                    inbox: inbox.clone(),
                    local: local.clone(),
                    sessions: sessions.clone(),
                    refusals: refusals.clone(),
                },
                InboundLimits {
                    max_frame_len: config.max_frame_len,
                    handshake_timeout: config.handshake_timeout,
                    idle_timeout: config.idle_timeout,
                    write_timeout: config.send_timeout,
                    max_connections: config.max_inbound_connections,
                    max_per_ip: config.max_inbound_per_ip,
                    buffer_budget: config.inbound_buffer_budget,
                    handshakes_per_second: config.handshakes_per_ip_per_second,
                    handshake_burst: config.handshake_burst_per_ip,
                },
                cancel.clone(),
                tracker.clone(),
            ));
        }
        let pool = Arc::new(Pool::new(
            OutboundSettings {
                max_frame_len: config.max_frame_len,
                write_timeout: config.send_timeout,
                pool_idle_close: config.pool_idle_close,
            },
            identity,
            inbox.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        let link = Arc::new(HubLink::new(
            url,
            LinkTiming {
                request_timeout: config.hub_request_timeout,
                heartbeat_interval: config.heartbeat_interval,
                auto_reconnect: config.auto_reconnect,
                reconnect_delay: config.reconnect_delay,
                max_reconnect_delay: config.max_reconnect_delay,
            },
            local.clone(),
            address,
            config.capabilities.clone(),
            config.metadata.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        let agent = Agent {
            inner: Arc::new(Inner {
                cache: AddressCache::new(config.address_cache_ttl),
                vouched: Mutex::new(HashMap::new()),
                config,
                local_port,
                link: link.clone(),
                local,
                inbox,
                sessions,
                refusals,
                pool: pool.clone(),
                events: events.clone(),
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                disconnected: AtomicBool::new(false),
                _stop_on_drop: cancel.clone().drop_guard(),
            }),
        };
        if !agent.inner.config.register {
            // Nothing registered, so nothing to heartbeat or to restore after a reconnect.
            let standing = link.attach().await?;
            tracing::debug!(id = %standing.id, "attached to the hub without registering");
            return Ok(agent);
        }
        // On failure `agent` drops here, which stops the listener.
        let standing = link.register().await?;
        tracing::info!(
            id = %standing.id,
            address = %standing.address,
            verified = standing.hub_verified,
            "registered at the hub"
        );
        let _ = events.send(AgentEvent::Connected {
            id: standing.id,
            address: standing.address,
        });
        tracker.spawn(hub_link::supervise(link, pool, events, cancel));
        Ok(agent)
    }

    /// Our id (32 hex chars). On a 2.1 hub it is our identity's derived id, the same on
    /// every reconnect; after a reconnect to a 2.0 hub it is the new random one.
    pub fn id(&self) -> String {
        self.inner.link.standing().id
    }

    /// Our address as the hub stored it (empty when we did not register).
    pub fn address(&self) -> String {
        self.inner.link.standing().address
    }

    /// 2.1: whether the hub verified our identity at the last registration (a 2.1 hub).
    /// False on a 2.0 hub: it vouches for no one, and our P2P sessions are plain 2.0 there
    /// (unless [`AgentBuilder::authenticated_peers_only`]).
    pub fn hub_verified(&self) -> bool {
        self.inner.local.hub_verified()
    }

    /// 2.1: our long-term identity (its secret signs our handshakes; keep it private).
    pub fn identity(&self) -> &Identity {
        self.inner.local.identity()
    }

    /// The P2P port we listen on (0 for an agent that did not register: it listens on none).
    pub fn local_port(&self) -> u16 {
        self.inner.local_port
    }

    /// The configuration the agent runs with.
    pub fn config(&self) -> &AgentConfig {
        &self.inner.config
    }

    /// Whether the agent registered at the hub (see [`AgentBuilder::register`]).
    pub fn is_registered(&self) -> bool {
        self.inner.config.register
    }

    /// How many times each limit of the agent refused a peer since it connected (issue 13:
    /// the refusals were only debug logs). The first refusal of an episode is also logged at
    /// `warn`.
    pub fn refusals(&self) -> Refusals {
        self.inner.refusals.snapshot()
    }

    /// Whether [`Agent::disconnect`] was called.
    pub fn is_disconnected(&self) -> bool {
        self.inner.disconnected.load(Ordering::Acquire)
    }

    pub(crate) fn inbox(&self) -> &Arc<Inbox> {
        &self.inner.inbox
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    /// A handle that does not keep the agent alive (for its own background tasks).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn upgrade(weak: &std::sync::Weak<Inner>) -> Option<Agent> {
        weak.upgrade().map(|inner| Agent { inner })
    }

    // ---- hub operations -------------------------------------------------------------------

    /// Agents known to the hub (ourselves excluded), most recently seen first.
    pub async fn discover(&self, options: DiscoverOptions) -> Result<Vec<Peer>> {
        let req = HubRequest {
            action: Some("discover".into()),
            capabilities: (!options.capabilities.is_empty()).then(|| options.capabilities.into()),
            status: options.status.map(Into::into),
            limit: options.limit.map(Into::into),
            offset: options.offset.map(Into::into),
            ..HubRequest::default()
        };
        let found: Discovered = self.inner.link.request(req, true).await?;
        for p in &found.agents {
            self.inner
                .cache
                .insert(&p.id, &p.address, Some(&p.status), p.identity.as_deref());
        }
        Ok(found.agents)
    }

    /// Online agents offering `capability`.
    pub async fn find(&self, capability: &str) -> Result<Vec<FoundAgent>> {
        let req = HubRequest {
            action: Some("find".into()),
            capability: Some(capability.into()),
            ..HubRequest::default()
        };
        let found: Found = self.inner.link.request(req, false).await?;
        for a in &found.agents {
            self.inner
                .cache
                .insert(&a.id, &a.address, None, a.identity.as_deref());
        }
        Ok(found.agents)
    }

    /// One agent by id; [`AgentError::AgentNotFound`] if the hub does not know it.
    pub async fn lookup(&self, id: &str) -> Result<AgentRecord> {
        let req = HubRequest {
            action: Some("lookup".into()),
            id: Some(id.into()),
            ..HubRequest::default()
        };
        let found: LookedUp = match self.inner.link.request(req, false).await {
            Err(AgentError::Hub(e)) if e == hub_errors::AGENT_NOT_FOUND => {
                return Err(AgentError::AgentNotFound(id.to_owned()))
            }
            other => other?,
        };
        let a = &found.agent;
        self.inner
            .cache
            .insert(&a.id, &a.address, Some(&a.status), a.identity.as_deref());
        Ok(found.agent)
    }

    /// Sets our status (`busy`, …) and merges `metadata` into the hub's record. Restored
    /// after a reconnect.
    pub async fn update_status(&self, status: &str, metadata: Map<String, Value>) -> Result<()> {
        self.inner.link.update_status(status, metadata).await
    }

    /// The hub's statistics.
    pub async fn stats(&self) -> Result<Stats> {
        let req = HubRequest {
            action: Some("stats".into()),
            ..HubRequest::default()
        };
        self.inner.link.request(req, false).await
    }

    // ---- messaging --------------------------------------------------------------------------

    /// The address of agent `id` and the identity key the hub vouches for: from the cache,
    /// else from the hub.
    async fn resolve(&self, id: &str) -> Result<(String, Option<IdentityKey>)> {
        let known = match self.inner.cache.get(id) {
            Some(k) => k,
            None => {
                let record = self.lookup(id).await?;
                crate::cache::Known {
                    address: record.address,
                    status: Some(record.status),
                    identity: record.identity,
                }
            }
        };
        if known.status.as_deref() == Some(status::OFFLINE) {
            return Err(AgentError::AgentOffline(id.to_owned()));
        }
        let expect = self.vouched_identity(id, &known.address, known.identity.as_deref())?;
        Ok((known.address, expect))
    }

    /// [`vouched_identity`], remembering the keys that passed.
    fn vouched_identity(
        &self,
        id: &str,
        address: &str,
        identity: Option<&str>,
    ) -> Result<Option<IdentityKey>> {
        let Some(text) = identity else {
            return Ok(None);
        };
        if let Some((checked_id, key)) = self.inner.vouched.lock().get(text) {
            if checked_id == id {
                return Ok(Some(*key));
            }
        }
        let key = vouched_identity(id, address, identity)?;
        if let Some(key) = key {
            let mut vouched = self.inner.vouched.lock();
            if vouched.len() >= VOUCHED_KEYS {
                vouched.clear();
            }
            vouched.insert(text.to_owned(), (id.to_owned(), key));
        }
        Ok(key)
    }

    /// How we connect to a peer whose identity the hub vouches for as `expect`.
    fn credentials(&self, expect: Option<IdentityKey>) -> Credentials {
        if self.inner.local.authenticates() {
            Credentials::Authenticated {
                expect,
                require: self.inner.local.authenticated_only(),
            }
        } else {
            Credentials::plain(&self.id())
        }
    }

    /// Sends one message to agent `id`; resolves once the peer acked it.
    pub async fn send(&self, id: &str, message_type: &str, payload: Value) -> Result<Delivery> {
        self.send_with_id(id, message_type, &payload, correlation_id())
            .await
    }

    async fn send_with_id(
        &self,
        id: &str,
        message_type: &str,
        payload: &Value,
        correlation_id: String,
    ) -> Result<Delivery> {
        let timeout = self.inner.config.send_timeout;
        let sent = tokio::time::timeout(timeout, async {
            let (address, expect) = self.resolve(id).await?;
            self.deliver(&address, expect, message_type, payload, &correlation_id)
                .await
        })
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)));
        if let Err(
            AgentError::Unreachable { .. }
            | AgentError::Timeout { .. }
            | AgentError::Authentication { .. },
        ) = &sent
        {
            // The peer may have moved (or the hub's answer was wrong): look it up again next
            // time.
            self.inner.cache.remove(id);
        }
        sent.map(|()| Delivery {
            delivered: true,
            correlation_id,
        })
    }

    /// Sends one message to `address` (`host:port`) without asking the hub. Nobody vouches
    /// for the identity there: a 2.1 peer authenticates, but as whoever it is (and a 2.0
    /// peer is refused with [`AgentBuilder::authenticated_peers_only`]).
    pub async fn send_direct(
        &self,
        address: &str,
        message_type: &str,
        payload: Value,
    ) -> Result<Delivery> {
        let correlation_id = correlation_id();
        let timeout = self.inner.config.send_timeout;
        tokio::time::timeout(
            timeout,
            self.deliver(address, None, message_type, &payload, &correlation_id),
        )
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)))?;
        Ok(Delivery {
            delivered: true,
            correlation_id,
        })
    }

    async fn deliver(
        &self,
        address: &str,
        expect: Option<IdentityKey>,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        if self.inner.cancel.is_cancelled() {
            return Err(AgentError::Disconnected);
        }
        let credentials = self.credentials(expect);
        self.inner
            .pool
            .send(address, &credentials, message_type, payload, correlation_id)
            .await
    }

    /// Sends to every online agent (with any of `options.capabilities`), at most
    /// `options.parallelism` at a time.
    pub async fn broadcast(
        &self,
        message_type: &str,
        payload: Value,
        options: BroadcastOptions,
    ) -> Result<BroadcastReport> {
        let peers = self
            .discover(DiscoverOptions {
                capabilities: options.capabilities,
                status: Some(status::ONLINE.to_owned()),
                limit: Some(limits::MAX_PAGE),
                offset: None,
            })
            .await?;
        let payload = &payload;
        let results: Vec<(String, Result<()>)> = stream::iter(peers)
            .map(|peer| async move {
                let timeout = self.inner.config.send_timeout;
                let cid = correlation_id();
                let sent = tokio::time::timeout(timeout, async {
                    let expect =
                        self.vouched_identity(&peer.id, &peer.address, peer.identity.as_deref())?;
                    self.deliver(&peer.address, expect, message_type, payload, &cid)
                        .await
                })
                .await
                .unwrap_or_else(|_| Err(AgentError::timeout("send", timeout)));
                (peer.id, sent)
            })
            .buffer_unordered(options.parallelism.max(1))
            .collect()
            .await;
        let mut report = BroadcastReport {
            total: results.len(),
            ..BroadcastReport::default()
        };
        for (agent, result) in results {
            match result {
                Ok(()) => report.delivered += 1,
                Err(error) => report.errors.push(BroadcastFailure { agent, error }),
            }
        }
        report.failed = report.errors.len();
        Ok(report)
    }

    /// Sends `message_type` to `id` and waits for its `<message_type>:response` carrying the
    /// same correlationId; returns the response's payload. An object payload gets the
    /// `correlationId` field added, as the original does. `timeout` defaults to the configured
    /// request timeout.
    pub async fn request(
        &self,
        id: &str,
        message_type: &str,
        payload: Value,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        let timeout = timeout.unwrap_or(self.inner.config.request_timeout);
        let cid = correlation_id();
        let payload = match payload {
            Value::Object(mut fields) => {
                fields.insert("correlationId".into(), Value::String(cid.clone()));
                Value::Object(fields)
            }
            other => other,
        };
        let mut waiter = self
            .inner
            .inbox
            .expect_response(&cid, format!("{message_type}:response"));
        let exchange = async {
            self.send_with_id(id, message_type, &payload, cid.clone())
                .await?;
            tokio::select! {
                biased;
                _ = self.inner.cancel.cancelled() => Err(AgentError::Disconnected),
                r = waiter.recv() => r.ok_or(AgentError::Disconnected),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(AgentError::timeout("request", timeout)))
    }

    /// Answers `message`: sends `<type>:response` with its correlationId to its sender.
    /// A message that came on an authenticated (2.1) inbound session is answered on that
    /// same connection while it lives — the requester need not be reachable; otherwise,
    /// as in 2.0, on a connection to the sender's address from the hub.
    ///
    /// **Ours (issue 13 #7, #8):** the `from` of an unauthenticated message is only declared,
    /// so its answer never travels on an authenticated route: it goes as plain 2.0 (which
    /// a real 2.0 sender expects), within [`AgentConfig::unverified_respond_timeout`], and not
    /// at all ([`AgentError::Authentication`]) when the hub vouches for an identity under
    /// that id — whoever holds that key would have authenticated, so the claim is false and
    /// answering would launder the sender's words into an authenticated message from us.
    pub async fn respond(&self, message: &Message, payload: Value) -> Result<Delivery> {
        let cid = message
            .correlation_id
            .clone()
            .unwrap_or_else(correlation_id);
        let response_type = format!("{}:response", message.message_type);
        if !message.authenticated {
            let config = &self.inner.config;
            let timeout = config.unverified_respond_timeout.min(config.send_timeout);
            let sent = tokio::time::timeout(
                timeout,
                self.respond_unverified(&message.from, &response_type, &payload, &cid),
            )
            .await
            .unwrap_or_else(|_| Err(AgentError::timeout("respond", timeout)));
            if let Err(AgentError::Unreachable { .. } | AgentError::Timeout { .. }) = &sent {
                self.inner.cache.remove(&message.from);
            }
            return sent.map(|()| Delivery {
                delivered: true,
                correlation_id: cid,
            });
        }
        let timeout = self.inner.config.send_timeout;
        let back = self
            .inner
            .sessions
            .send_back(&message.from, &response_type, &payload, &cid);
        match tokio::time::timeout(timeout, back).await {
            Ok(Ok(())) => {
                return Ok(Delivery {
                    delivered: true,
                    correlation_id: cid,
                })
            }
            Ok(Err(NotSentBack::Failed(e))) => return Err(e),
            Ok(Err(NotSentBack::NoSession)) => {}
            Err(_) => return Err(AgentError::timeout("respond", timeout)),
        }
        self.send_with_id(&message.from, &response_type, &payload, cid)
            .await
    }

    /// The answer to an unauthenticated message: plain 2.0 to the address the hub has for
    /// `from`, refused if the hub vouches for an identity under that id.
    async fn respond_unverified(
        &self,
        from: &str,
        response_type: &str,
        payload: &Value,
        cid: &str,
    ) -> Result<()> {
        let (address, vouched) = self.resolve(from).await?;
        if vouched.is_some() {
            return Err(AgentError::Authentication {
                address,
                reason: format!(
                    "an unauthenticated message claimed to come from {from}, whose identity                      the hub vouches for; not answered"
                ),
            });
        }
        if self.inner.cancel.is_cancelled() {
            return Err(AgentError::Disconnected);
        }
        self.inner
            .pool
            .send(
                &address,
                &Credentials::plain(&self.id()),
                response_type,
                payload,
                cid,
            )
            .await
    }

    /// Round-trip time of a P2P `ping` to `address`.
    pub async fn ping(&self, address: &str) -> Result<Duration> {
        let timeout = self.inner.config.send_timeout;
        tokio::time::timeout(
            timeout,
            peer::ping(address, self.inner.config.max_frame_len),
        )
        .await
        .unwrap_or_else(|_| Err(AgentError::timeout("ping", timeout)))
    }

    // ---- incoming ---------------------------------------------------------------------------

    /// The next incoming message; `None` once the agent is disconnected and the queue is
    /// drained. Responses to pending [`Agent::request`]s never show up here.
    ///
    /// On a multi-thread runtime, call it from a spawned task (or use
    /// [`Agent::on_message`]), not from the future `#[tokio::main]` drives: that one runs
    /// on the main thread, outside the worker pool, so each message reaches it with a
    /// wake-up across threads (see the crate docs, *Throughput*).
    pub async fn next_message(&self) -> Option<Message> {
        self.inner.inbox.next(&self.inner.cancel).await
    }

    /// Incoming messages as a stream (ends on disconnect). Several streams share one queue:
    /// each message goes to one of them.
    pub fn messages(&self) -> impl Stream<Item = Message> + Send + 'static {
        let inbox = self.inner.inbox.clone();
        let stop = self.inner.cancel.clone();
        stream::unfold((inbox, stop), |(inbox, stop)| async move {
            let next = inbox.next(&stop).await;
            next.map(|m| (m, (inbox, stop)))
        })
    }

    /// Runs `handler` for every incoming message, one at a time (a slow handler slows the
    /// senders down), until the agent is disconnected.
    pub fn on_message<F, Fut>(&self, mut handler: F)
    where
        F: FnMut(Message) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let inbox = self.inner.inbox.clone();
        let stop = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            while let Some(m) = inbox.next(&stop).await {
                handler(m).await;
            }
        });
    }

    /// Connection events: connected, disconnected, reconnected (with the new id), errors.
    pub fn events(&self) -> broadcast::Receiver<AgentEvent> {
        self.inner.events.subscribe()
    }

    /// Leaves the hub (`disconnect` action), closes every connection and the listener, and
    /// waits for the agent's tasks to stop. No reconnect follows. Idempotent.
    pub async fn disconnect(&self) -> Result<()> {
        if self.inner.disconnected.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.link.disconnect().await;
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("agent tasks did not stop in time");
        }
        let _ = self.inner.events.send(AgentEvent::Disconnected {
            reason: "disconnect requested".into(),
        });
        Ok(())
    }
}

/// The identity key a hub record vouches for, checked against the id it is filed under: the
/// id is the hash of the key, so a record whose key does not hash to its id is a lie (a hub
/// trying to pass someone else's key off for this id) and nothing is sent.
fn vouched_identity(
    id: &str,
    address: &str,
    identity: Option<&str>,
) -> Result<Option<IdentityKey>> {
    let Some(text) = identity else {
        return Ok(None);
    };
    let refuse = |reason: String| AgentError::Authentication {
        address: address.to_owned(),
        reason,
    };
    let key = IdentityKey::from_b64(text)
        .map_err(|e| refuse(format!("the hub's identity for {id}: {e}")))?;
    key.check_id(id)
        .map_err(|_| refuse(format!("the hub's identity for {id} is not that id's key")))?;
    Ok(Some(key))
}
