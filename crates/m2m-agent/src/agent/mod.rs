//! [`Agent`]: the SDK's handle. This file starts an agent and stops it, and reads its
//! incoming side; the rest is split by concern: [`AgentBuilder`] (`builder.rs`), the hub's
//! queries (`hub.rs`), routing policy — id to address, vouched keys (`routing.rs`) — and
//! messaging — send, broadcast, request/respond (`messaging.rs`).
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
//!
//! Relay (docs/RELAY.md): the inbound slots and limits are made here and shared by the TCP
//! listener and the streams the hub's relay opens towards us (`relay_inbound`); a
//! relay-only agent has no listener and registers port 0.
//!
//! Mailbox (docs/MAILBOX.md): unless `mailbox(false)`, the agent derives its mailbox keys
//! from its identity, publishes the current one at each 2.1 registration and subscribes to
//! its mail; sends that cannot reach their target are queued (`mail.rs`).

mod builder;
mod hub;
mod mail;
mod messaging;
mod routing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::stream::{self, Stream};
use m2m_proto::Identity;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

pub use builder::AgentBuilder;
use routing::VouchedKeys;

use crate::cache::AddressCache;
use crate::config::{hub_urls, AgentConfig};
use crate::defaults::{EVENT_CAPACITY, SHUTDOWN_GRACE};
use crate::error::{AgentError, Result};
use crate::hub_presence::{self, HubPresence, PresenceTiming};
use crate::hub_presence::{MailboxSettings, RelaySettings};
use crate::identity::LocalIdentity;
use crate::inbox::Inbox;
use crate::listener::{self, InboundContext, InboundLimits, InboundSessions, SharedLimits};
use crate::mailbox::MailboxReceiver;
use crate::message::{AgentEvent, Message, Route};
use crate::peer::{OutboundSettings, Pool};
use crate::refusals::{RefusalCounter, Refusals};
use crate::relay::{OnOpen, RelayStream, RelayWriter};
use crate::slots::InboundSlots;
use m2m_proto::relay::{raw_id, CloseReason, Reachable, RELAY_ONLY_ADDRESS};

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
    presence: Arc<HubPresence>,
    local: Arc<LocalIdentity>,
    inbox: Arc<Inbox>,
    sessions: Arc<InboundSessions>,
    /// Authenticated sessions that came through the relay.
    relay_sessions: Arc<InboundSessions<RelayWriter>>,
    refusals: Arc<RefusalCounter>,
    pool: Arc<Pool>,
    cache: AddressCache,
    vouched: VouchedKeys,
    /// Mailbox: our keys, delivered ids and drop counters (`None`: `mailbox(false)`).
    mailbox: Option<Arc<MailboxReceiver>>,
    events: broadcast::Sender<AgentEvent>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    disconnected: AtomicBool,
    _stop_on_drop: DropGuard,
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
        let urls = hub_urls(&config.hub)?;
        let identity = config
            .identity
            .get_or_insert_with(|| Identity::generate(&mut rand::thread_rng()))
            .clone();
        let local = Arc::new(LocalIdentity::new(
            identity.clone(),
            config.authenticated_peers_only,
            !config.register,
        ));
        if config.relay_only && !config.relay {
            return Err(AgentError::Config(
                "relay_only(true) needs the relay: not with relay(false)".into(),
            ));
        }
        if config.relay_only && !config.register {
            return Err(AgentError::Config(
                "relay_only(true) needs a registration: not with register(false)".into(),
            ));
        }
        // An agent that does not register announces no address, so nobody could dial a
        // listener: it opens none (2.1 peers answer on its own connections). A relay-only
        // agent opens none either.
        let listener = if config.register && !config.relay_only {
            Some(
                TcpListener::bind(SocketAddr::new(config.bind_ip, config.port))
                    .await
                    .map_err(|e| AgentError::io(format!("binding P2P port {}", config.port), e))?,
            )
        } else {
            None
        };
        let local_port = match &listener {
            Some(l) => l
                .local_addr()
                .map_err(|e| AgentError::io("reading the P2P port", e))?
                .port(),
            None => 0,
        };
        let address = match (&config.address, &listener) {
            _ if config.relay_only => RELAY_ONLY_ADDRESS.to_owned(),
            (Some(a), _) => a.clone(),
            (None, Some(_)) => format!(
                "{}:{}",
                hub_presence::local_ipv4(&urls[0]).await,
                local_port
            ),
            (None, None) => String::new(),
        };

        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let inbox = Inbox::new(config.inbox_capacity, config.inbox_bytes);
        let sessions = Arc::new(InboundSessions::default());
        let relay_sessions = Arc::new(InboundSessions::<RelayWriter>::default());
        let refusals = Arc::new(RefusalCounter::default());
        let limits = InboundLimits {
            max_frame_len: config.max_frame_len,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.send_timeout,
            max_connections: config.max_inbound_connections,
            max_per_ip: config.max_inbound_per_ip,
            buffer_budget: config.inbound_buffer_budget,
            handshakes_per_second: config.handshakes_per_ip_per_second,
            handshake_burst: config.handshake_burst_per_ip,
        };
        let slots = InboundSlots::new(limits.max_connections, limits.max_per_ip, refusals.clone());
        let shared = SharedLimits::new(limits);
        if let Some(listener) = listener {
            tracker.spawn(listener::serve(
                listener,
                InboundContext {
                    inbox: inbox.clone(),
                    local: local.clone(),
                    sessions: sessions.clone(),
                    refusals: refusals.clone(),
                    route: Route::Direct,
                },
                slots.clone(),
                shared.clone(),
                cancel.clone(),
                tracker.clone(),
            ));
        }
        let on_open = relay_inbound(
            InboundContext {
                inbox: inbox.clone(),
                local: local.clone(),
                sessions: relay_sessions.clone(),
                refusals: refusals.clone(),
                route: Route::Relay,
            },
            slots,
            shared,
            cancel.clone(),
            tracker.clone(),
        );
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
        let mailbox = config.mailbox.then(|| {
            Arc::new(MailboxReceiver::new(
                m2m_proto::mailbox::MailboxKeys::new(local.identity().clone()),
                config.mail_seen_ids,
                config.mailbox_state.as_deref(),
            ))
        });
        let presence = Arc::new(HubPresence::new(
            urls,
            PresenceTiming {
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
            RelaySettings {
                enabled: config.relay,
                relay_only: config.relay_only,
                on_open: Some(on_open),
            },
            MailboxSettings {
                receiver: mailbox.clone(),
                inbox: inbox.clone(),
                events: events.clone(),
                ack_delay: config.mail_ack_delay,
                refused: AtomicBool::new(false),
            },
            cancel.clone(),
            tracker.clone(),
        ));
        let agent = Agent {
            inner: Arc::new(Inner {
                cache: AddressCache::new(config.address_cache_ttl),
                vouched: VouchedKeys::default(),
                mailbox,
                config,
                local_port,
                presence: presence.clone(),
                local,
                inbox,
                sessions,
                relay_sessions,
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
            let standing = presence.connect_first(false).await?;
            tracing::debug!(id = %standing.id, "attached to the hub without registering");
            return Ok(agent);
        }
        // On failure `agent` drops here, which stops the listener.
        let standing = presence.connect_first(true).await?;
        tracing::info!(
            id = %standing.id,
            hub = %presence.hub_url(),
            address = %standing.address,
            verified = standing.hub_verified,
            "registered at the hub"
        );
        let _ = events.send(AgentEvent::Connected {
            id: standing.id,
            address: standing.address,
            reachable: standing.reachable,
        });
        tracker.spawn(hub_presence::supervise(presence, pool, events, cancel));
        Ok(agent)
    }

    /// The WebSocket URL of the hub we are at now (with several hubs given, the one the
    /// agent moved to last).
    pub fn hub_url(&self) -> String {
        self.inner.presence.hub_url().to_owned()
    }

    /// Our id (32 hex chars). On a 2.1 hub it is our identity's derived id, the same on
    /// every reconnect; after a reconnect to a 2.0 hub it is the new random one.
    pub fn id(&self) -> String {
        self.inner.presence.standing().id
    }

    /// Our address as the hub stored it (empty when we did not register).
    pub fn address(&self) -> String {
        self.inner.presence.standing().address
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

    /// How others reach us, as the hub's relay said when it attached us: [`Reachable::Relay`]
    /// for a relay-only agent or one whose address did not answer the hub's probe,
    /// [`Reachable::Direct`] when it did; `None` when not attached (a 2.0 hub, `relay(false)`,
    /// no registration) or not probed.
    pub fn reachable(&self) -> Option<Reachable> {
        if !self.inner.config.register {
            return None;
        }
        self.inner.presence.attached_relay()?;
        self.inner.presence.standing().reachable
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
        self.inner.presence.disconnect().await;
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

/// What a stream the hub's relay opens towards us becomes: an inbound connection on the
/// path of TCP ones (slots, limits, the responder), keyed by the stamped agent id; with no
/// slot for it, it is closed `refused`.
fn relay_inbound(
    context: InboundContext<RelayWriter>,
    slots: Arc<InboundSlots>,
    shared: Arc<SharedLimits>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> OnOpen {
    Arc::new(move |stream: RelayStream| {
        let Some(raw) = raw_id(stream.peer()) else {
            return;
        };
        let source = listener::relay_source(&raw);
        let peer = stream.peer().to_owned();
        let (reader, writer) = stream.split();
        match slots.admit(source, tokio::time::Instant::now()) {
            Ok(slot) => {
                tracker.spawn(listener::handle_connection(
                    reader,
                    Arc::new(writer),
                    source,
                    Some(peer),
                    context.clone(),
                    shared.clone(),
                    cancel.clone(),
                    slot,
                ));
            }
            Err(_) => writer.close(CloseReason::Refused),
        }
    })
}
