//! The agent's presence at the hub, across reconnects ([`HubPresence`]): the current
//! WebSocket ([`HubClient`], one per connection) and the id we are known by on it
//! ([`Connected`]), the registration to restore after a reconnect, who the hub says we are
//! ([`Standing`]), and the supervisor task that sends heartbeats and reconnects.
//!
//! Every (re)registration first probes the hub with the `challenge` action (PROTOCOL.md B):
//! a 2.1 hub answers with the connection's nonce, and we register with our identity key and
//! a signature over the nonce and the registration fields, which gets us the id derived from
//! our key (the same on every reconnect); a 2.0 hub answers `unknown_action` at once, and we
//! register the 2.0 way and note that the hub vouches for nothing.
//!
//! Relay (docs/RELAY.md): on a 2.1 hub, every (re)registration is followed by the `relay`
//! action (unless the agent was built with `relay(false)`), so that the hub can open streams
//! towards us; a WebSocket that did not register attaches lazily, the first time a send
//! needs the relay ([`HubPresence::relay`]), proving our key with a signature over the
//! connection's nonce. A 2.0 hub never gets the action.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::hub::{errors as hub_errors, Empty, HeartbeatAck, HubRequest, Registered};
use m2m_proto::identity::registration_message;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use m2m_proto::identity::relay_attach_message;
use m2m_proto::relay::Reachable;

use crate::config::is_loopback_host;
use crate::defaults::{LOCAL_ADDRESS_PROBE_TIMEOUT, MIN_HEARTBEAT_INTERVAL};
use crate::error::{AgentError, Result, RELAY_NEEDS_21};
use crate::hub_client::HubClient;
use crate::identity::LocalIdentity;
use crate::message::AgentEvent;
use crate::peer::Pool;
use crate::relay::{OnOpen, RelayClient};

/// What `register` sends, kept up to date by `update_status` so a reconnect restores it.
#[derive(Debug, Clone)]
struct Registration {
    address: String,
    capabilities: Vec<String>,
    metadata: Map<String, Value>,
    /// A status the application chose, sent again after re-registering.
    status: Option<String>,
}

/// Who the hub says we are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Standing {
    pub id: String,
    pub address: String,
    /// The hub verified our identity (2.1): `id` is derived from our key.
    pub hub_verified: bool,
    /// The attach reply's reachability verdict (relay attached and probed).
    pub reachable: Option<Reachable>,
}

/// How the agent uses the hub's relay.
#[derive(Clone)]
pub(crate) struct RelaySettings {
    /// Attach and use the relay (`AgentBuilder::relay`).
    pub enabled: bool,
    /// No TCP listener: registration needs the relay.
    pub relay_only: bool,
    /// Where streams the hub opens towards us go.
    pub on_open: Option<OnOpen>,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("enabled", &self.enabled)
            .field("relay_only", &self.relay_only)
            .finish_non_exhaustive()
    }
}

/// The reply to the `challenge` probe of a 2.1 hub.
#[derive(Debug, serde::Deserialize)]
struct ChallengeReply {
    nonce: String,
}

/// The current WebSocket and the id we are known by on it.
#[derive(Debug, Clone)]
struct Connected {
    client: HubClient,
    id: String,
    /// False for a connection that only asks ([`HubPresence::attach`]): no id of ours to name
    /// in requests, nothing to say goodbye to.
    registered: bool,
}

/// The reason given when the hub closed us because our identity registered again.
pub(crate) const SUPERSEDED: &str =
    "superseded: another process registered at the hub with this agent's identity";

/// Timing of the supervisor.
#[derive(Debug, Clone)]
pub(crate) struct PresenceTiming {
    pub request_timeout: Duration,
    pub heartbeat_interval: Duration,
    pub auto_reconnect: bool,
    pub reconnect_delay: Duration,
    pub max_reconnect_delay: Duration,
}

/// Our presence at the hub: outlives each WebSocket, restores the registration on the next.
#[derive(Debug)]
pub(crate) struct HubPresence {
    url: String,
    timing: PresenceTiming,
    registration: Mutex<Registration>,
    connected: RwLock<Option<Connected>>,
    standing: RwLock<Standing>,
    local: Arc<LocalIdentity>,
    relay: RelaySettings,
    /// Set by [`HubPresence::disconnect`]: the coming close is ours, not a loss.
    leaving: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl HubPresence {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        url: String,
        timing: PresenceTiming,
        local: Arc<LocalIdentity>,
        address: String,
        capabilities: Vec<String>,
        metadata: Map<String, Value>,
        relay: RelaySettings,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        HubPresence {
            url,
            timing,
            registration: Mutex::new(Registration {
                address,
                capabilities,
                metadata,
                status: None,
            }),
            connected: RwLock::new(None),
            standing: RwLock::new(Standing::default()),
            local,
            relay,
            leaving: AtomicBool::new(false),
            cancel,
            tracker,
        }
    }

    /// Our id and address as last registered (kept while reconnecting).
    pub(crate) fn standing(&self) -> Standing {
        self.standing.read().clone()
    }

    /// The nonce of a 2.1 hub, `None` for a 2.0 hub (which does not know the action).
    async fn probe_challenge(client: &HubClient) -> Result<Option<String>> {
        let req = HubRequest {
            action: Some("challenge".into()),
            ..HubRequest::default()
        };
        match client.request::<ChallengeReply>(req).await {
            Ok(reply) => Ok(Some(reply.nonce)),
            Err(AgentError::Hub(e)) if e == hub_errors::UNKNOWN_ACTION => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens a WebSocket and registers on it; it replaces the current one.
    pub(crate) async fn register(&self) -> Result<Standing> {
        let client = self.open().await?;
        let reg = self.registration.lock().clone();
        let registered = match self.register_on(&client, &reg).await {
            Ok(r) => r,
            Err(e) => {
                client.close();
                return Err(e);
            }
        };
        let (registered, hub_verified) = registered;
        if let Some(status) = reg.status {
            let req = HubRequest {
                action: Some("status".into()),
                id: Some(registered.id.clone().into()),
                status: Some(status.into()),
                ..HubRequest::default()
            };
            if let Err(e) = client.request::<Empty>(req).await {
                tracing::debug!(error = %e, "restoring status after register failed");
            }
        }
        let reachable = match self.attach_registered(&client, hub_verified).await {
            Ok(reachable) => reachable,
            Err(e) => {
                client.close();
                return Err(e);
            }
        };
        let standing = Standing {
            id: registered.id.clone(),
            address: registered.address,
            hub_verified,
            reachable,
        };
        self.install(
            Connected {
                client,
                id: registered.id,
                registered: true,
            },
            &standing,
        );
        self.local.set_hub_verified(hub_verified);
        Ok(standing)
    }

    /// After a registration: attaches to the relay on a 2.1 hub (unless turned off). Fails
    /// only for a relay-only agent, which is unreachable without it.
    async fn attach_registered(
        &self,
        client: &HubClient,
        hub_verified: bool,
    ) -> Result<Option<Reachable>> {
        let relay_only = self.relay.relay_only;
        if !self.relay.enabled || !hub_verified {
            if relay_only {
                return Err(AgentError::Config(format!(
                    "a relay-only agent needs a 2.1 hub with its relay on: {}",
                    if hub_verified {
                        "the relay is turned off (relay(false))"
                    } else {
                        "this hub is 2.0"
                    }
                )));
            }
            return Ok(None);
        }
        let req = HubRequest {
            action: Some(m2m_proto::relay::ACTION.into()),
            ..HubRequest::default()
        };
        match client.attach_relay(req, self.relay.on_open.clone()).await {
            Ok(relay) => Ok(relay.reachable()),
            Err(e) if relay_only => Err(AgentError::Config(format!(
                "a relay-only agent needs the hub's relay, which refused: {e}"
            ))),
            Err(e) => {
                tracing::debug!(error = %e, "the hub does not relay for us");
                Ok(None)
            }
        }
    }

    /// The relay of the current WebSocket, attaching it now if it is not yet (a WebSocket
    /// that did not register proves our key with the connection's nonce).
    pub(crate) async fn relay(&self) -> Result<Arc<RelayClient>> {
        let connected = self.connected()?;
        if let Some(relay) = connected.client.relay() {
            return Ok(relay);
        }
        if !self.relay.enabled {
            return Err(AgentError::NoRoute {
                agent: String::new(),
                reason: "the relay is turned off (relay(false))".into(),
            });
        }
        let mut req = HubRequest {
            action: Some(m2m_proto::relay::ACTION.into()),
            ..HubRequest::default()
        };
        if connected.registered {
            if !self.local.hub_verified() {
                return Err(AgentError::NoRoute {
                    agent: String::new(),
                    reason: format!("{RELAY_NEEDS_21} (this hub is 2.0)"),
                });
            }
        } else {
            let Some(nonce) = Self::probe_challenge(&connected.client).await? else {
                return Err(AgentError::NoRoute {
                    agent: String::new(),
                    reason: format!("{RELAY_NEEDS_21} (this hub is 2.0)"),
                });
            };
            let identity = self.local.identity();
            let public = identity.public();
            req.identity = Some(public.to_b64().into());
            req.signature = Some(
                identity
                    .sign_b64(&relay_attach_message(&nonce, &public))
                    .into(),
            );
        }
        let on_open = connected
            .registered
            .then(|| self.relay.on_open.clone())
            .flatten();
        connected.client.attach_relay(req, on_open).await
    }

    /// The relay of the current WebSocket if it is attached (no request).
    pub(crate) fn attached_relay(&self) -> Option<Arc<RelayClient>> {
        self.connected().ok()?.client.relay()
    }

    /// A new WebSocket to the hub.
    async fn open(&self) -> Result<HubClient> {
        HubClient::connect(
            &self.url,
            self.timing.request_timeout,
            &self.cancel,
            &self.tracker,
        )
        .await
    }

    /// Makes `connected` the current connection (closing the one it replaces).
    fn install(&self, connected: Connected, standing: &Standing) {
        let old = self.connected.write().replace(connected);
        if let Some(old) = old {
            old.client.close();
        }
        *self.standing.write() = standing.clone();
    }

    /// Opens the WebSocket without registering: the hub's queries (`discover`, `find`,
    /// `lookup`, `stats`) need no registration, on the original hub as on ours, so a client
    /// that only asks leaves the registry as it was. Our id is our identity's derived one
    /// (the id 2.1 peers see in our handshakes).
    pub(crate) async fn attach(&self) -> Result<Standing> {
        let client = self.open().await?;
        let standing = Standing {
            id: self.local.identity().agent_id().to_owned(),
            address: String::new(),
            hub_verified: false,
            reachable: None,
        };
        self.install(
            Connected {
                client,
                id: standing.id.clone(),
                registered: false,
            },
            &standing,
        );
        Ok(standing)
    }

    /// Probes for 2.1, then registers; returns the hub's answer and whether it verified us.
    async fn register_on(
        &self,
        client: &HubClient,
        reg: &Registration,
    ) -> Result<(Registered, bool)> {
        let nonce = Self::probe_challenge(client).await?;
        let mut req = HubRequest {
            action: Some("register".into()),
            address: Some(reg.address.clone().into()),
            capabilities: Some(reg.capabilities.clone().into()),
            metadata: Some(Value::Object(reg.metadata.clone())),
            ..HubRequest::default()
        };
        let identity = self.local.identity();
        if let Some(nonce) = &nonce {
            let public = identity.public();
            let signed = registration_message(nonce, &public, &reg.address, &reg.capabilities);
            req.identity = Some(public.to_b64().into());
            req.signature = Some(identity.sign_b64(&signed).into());
        }
        let registered: Registered = client.request(req).await?;
        if nonce.is_some() && registered.id != identity.agent_id() {
            // A 2.1 hub must register us under the id our key proves; anything else would
            // have peers address us under an id our handshakes contradict.
            return Err(AgentError::Hub(format!(
                "hub registered us as {} instead of our identity's id {}",
                registered.id,
                identity.agent_id()
            )));
        }
        Ok((registered, nonce.is_some()))
    }

    fn connected(&self) -> Result<Connected> {
        match self.connected.read().as_ref() {
            Some(s) if !s.client.is_closed() => Ok(s.clone()),
            _ => Err(AgentError::NotConnected),
        }
    }

    /// Sends a request on the current connection; `with_id` fills `id` with ours.
    pub(crate) async fn request<T: DeserializeOwned>(
        &self,
        mut req: HubRequest,
        with_id: bool,
    ) -> Result<T> {
        let connected = self.connected()?;
        if with_id && connected.registered {
            req.id = Some(Value::String(connected.id.clone()));
        }
        connected.client.request(req).await
    }

    /// `status`: remembered so that a reconnect restores it.
    pub(crate) async fn update_status(
        &self,
        status: &str,
        metadata: Map<String, Value>,
    ) -> Result<()> {
        {
            let mut reg = self.registration.lock();
            reg.status = Some(status.to_owned());
            for (k, v) in &metadata {
                reg.metadata.insert(k.clone(), v.clone());
            }
        }
        if !self.connected()?.registered {
            return Err(AgentError::NotRegistered);
        }
        let req = HubRequest {
            action: Some("status".into()),
            status: Some(status.into()),
            metadata: Some(Value::Object(metadata)),
            ..HubRequest::default()
        };
        self.request::<Empty>(req, true).await.map(|_| ())
    }

    /// Says goodbye (best effort) and closes the WebSocket.
    pub(crate) async fn disconnect(&self) {
        self.leaving.store(true, Ordering::Release);
        let Ok(connected) = self.connected() else {
            return;
        };
        if !connected.registered {
            connected.client.close();
            self.connected.write().take();
            return;
        }
        let req = HubRequest {
            action: Some("disconnect".into()),
            id: Some(connected.id.clone().into()),
            ..HubRequest::default()
        };
        if let Err(e) = connected.client.request::<Empty>(req).await {
            tracing::debug!(error = %e, "hub disconnect failed");
        }
        connected.client.close();
        self.connected.write().take();
    }
}

/// Heartbeats while connected; on loss, reconnects with backoff and re-registers. Runs until
/// `cancel`.
pub(crate) async fn supervise(
    presence: Arc<HubPresence>,
    pool: Arc<Pool>,
    events: broadcast::Sender<AgentEvent>,
    cancel: CancellationToken,
) {
    let timing = presence.timing.clone();
    loop {
        let Ok(connected) = presence.connected() else {
            return;
        };
        let reason = heartbeat_until_lost(&connected, &timing, &cancel).await;
        let Some(mut reason) = reason else { return };
        if presence.leaving.load(Ordering::Acquire) {
            return;
        }
        connected.client.close();
        // Another process registered with our identity: reconnecting would only take the
        // registration back from it, and it from us, in turn.
        let superseded = connected.client.is_superseded();
        if superseded {
            reason = SUPERSEDED.to_owned();
        }
        let _ = events.send(AgentEvent::Disconnected {
            reason: reason.clone(),
        });
        tracing::info!(%reason, "hub connection lost");
        if !timing.auto_reconnect || superseded {
            return;
        }
        let mut delay = timing.reconnect_delay;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = presence.register() => r,
            };
            match attempt {
                Ok(standing) => {
                    // Pooled connections declared the old id in their handshakes.
                    if standing.id != connected.id {
                        pool.clear();
                    }
                    tracing::info!(id = %standing.id, verified = standing.hub_verified, "re-registered at the hub");
                    let _ = events.send(AgentEvent::Reconnected {
                        id: standing.id,
                        address: standing.address,
                        reachable: standing.reachable,
                    });
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, ?delay, "reconnect failed");
                    let _ = events.send(AgentEvent::Error { error });
                    delay = (delay * 2).min(timing.max_reconnect_delay.max(timing.reconnect_delay));
                }
            }
        }
    }
}

/// Returns why the connection was lost, or `None` when cancelled.
async fn heartbeat_until_lost(
    connected: &Connected,
    timing: &PresenceTiming,
    cancel: &CancellationToken,
) -> Option<String> {
    let mut ticks = tokio::time::interval(timing.heartbeat_interval.max(MIN_HEARTBEAT_INTERVAL));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            _ = connected.client.closed() => return Some("hub connection closed".into()),
            _ = ticks.tick() => {}
        }
        let req = HubRequest {
            action: Some("heartbeat".into()),
            id: Some(connected.id.clone().into()),
            ..HubRequest::default()
        };
        let beat = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            r = connected.client.request::<HeartbeatAck>(req) => r,
        };
        match beat {
            Ok(_) => {}
            Err(AgentError::Hub(error)) => {
                // The hub answers but refuses: our registration is gone; register again.
                return Some(format!("heartbeat refused: {error}"));
            }
            Err(e) => return Some(format!("heartbeat failed: {e}")),
        }
    }
}

/// The IPv4 address other agents would reach us at, as far as we can tell without asking:
/// loopback for a loopback hub, else the source address of a route to the hub.
pub(crate) async fn local_ipv4(hub_url: &str) -> IpAddr {
    let fallback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Ok(url) = url::Url::parse(hub_url) else {
        return fallback;
    };
    let Some(host) = url.host_str() else {
        return fallback;
    };
    if is_loopback_host(host) {
        return fallback;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let probe = async {
        // Connecting a UDP socket sends nothing; it only picks the route and source address.
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .await
            .ok()?;
        socket.connect((host, port)).await.ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    match tokio::time::timeout(LOCAL_ADDRESS_PROBE_TIMEOUT, probe).await {
        Ok(Some(ip)) if ip.is_ipv4() && !ip.is_unspecified() => ip,
        _ => fallback,
    }
}
