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
//!
//! Failover (issue 20): the agent may be given several hubs (on one database). It connects
//! to the first that answers, and when its hub goes away the supervisor moves to the next
//! one in the list (round robin) at each reconnect attempt, with the same backoff; a 2.1 id
//! is the same on every hub, so peers and records follow.
//!
//! Mailbox (docs/MAILBOX.md): a 2.1 registration carries our current mailbox key, and is
//! followed by the `mailbox` action (unless `mailbox(false)`), after which the hub pushes
//! our mail on this WebSocket.
//!
//! The files: this one holds the state and the plain requests on the current connection;
//! `registration` the `challenge` probe and `register`; `relay_attach` the `relay` action;
//! `mailbox_attach` the `mailbox` and `mail` actions; `supervisor` the heartbeat and
//! reconnect task; `local_address` the address we advertise; `foreign_relays` the
//! WebSockets attached to other hubs' relays.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::hub::{Empty, HubRequest};
use m2m_proto::relay::Reachable;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{AgentError, Result};
use crate::hub_client::HubClient;
use crate::identity::LocalIdentity;
use crate::relay::OnOpen;

mod foreign_relays;
mod local_address;
mod mailbox_attach;
mod registration;
mod relay_attach;
mod supervisor;

pub(crate) use local_address::local_ipv4;
pub(crate) use mailbox_attach::MailboxSettings;
pub(crate) use supervisor::supervise;

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
    /// The hubs, in the order given (at least one).
    urls: Vec<String>,
    /// Index in `urls` of the hub we use (or try next).
    current: AtomicUsize,
    timing: PresenceTiming,
    registration: Mutex<Registration>,
    connected: RwLock<Option<Connected>>,
    standing: RwLock<Standing>,
    local: Arc<LocalIdentity>,
    relay: RelaySettings,
    /// WebSockets attached to other hubs' relays (`foreign_relays`).
    foreign: foreign_relays::ForeignRelays,
    mailbox: MailboxSettings,
    /// Set by [`HubPresence::disconnect`]: the coming close is ours, not a loss.
    leaving: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl HubPresence {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        urls: Vec<String>,
        timing: PresenceTiming,
        local: Arc<LocalIdentity>,
        address: String,
        capabilities: Vec<String>,
        metadata: Map<String, Value>,
        relay: RelaySettings,
        mailbox: MailboxSettings,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        assert!(!urls.is_empty(), "a presence needs a hub");
        HubPresence {
            urls,
            current: AtomicUsize::new(0),
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
            foreign: foreign_relays::ForeignRelays::default(),
            mailbox,
            leaving: AtomicBool::new(false),
            cancel,
            tracker,
        }
    }

    /// Our id and address as last registered (kept while reconnecting).
    pub(crate) fn standing(&self) -> Standing {
        self.standing.read().clone()
    }

    /// The URL of the hub we use (or try next).
    pub(crate) fn hub_url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Acquire) % self.urls.len()]
    }

    /// Moves on to the next hub of the list (no-op with one hub); returns its URL.
    pub(crate) fn next_hub(&self) -> &str {
        let n = self.urls.len();
        let i = (self.current.fetch_add(1, Ordering::AcqRel) + 1) % n;
        &self.urls[i]
    }

    /// How many hubs the agent was given.
    pub(crate) fn hub_count(&self) -> usize {
        self.urls.len()
    }

    /// A new WebSocket to the hub.
    async fn open(&self) -> Result<HubClient> {
        HubClient::connect(
            self.hub_url(),
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

    /// The first contact: registers (or, with `register` false, attaches) at the first hub
    /// of the list that lets us; with several hubs, a failure moves on to the next, and the
    /// last one's error is returned when none does.
    pub(crate) async fn connect_first(&self, register: bool) -> Result<Standing> {
        let mut tries = self.urls.len();
        loop {
            let attempt = if register {
                self.register().await
            } else {
                self.attach().await
            };
            tries -= 1;
            match attempt {
                Ok(standing) => return Ok(standing),
                Err(e) if tries > 0 && !matches!(e, AgentError::Config(_)) => {
                    let failed = self.hub_url().to_owned();
                    let next = self.next_hub();
                    tracing::info!(hub = %failed, error = %e, next = %next, "hub failed; trying the next");
                }
                Err(e) => return Err(e),
            }
        }
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
        self.foreign.close_all();
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
