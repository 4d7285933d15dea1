//! # m2m-hub
//!
//! The M2M hub: a phone book that agents register with over a WebSocket (`/ws`) and that
//! answers who is online, over the same WebSocket and a small HTTP API (PROTOCOL.md A2,
//! A3). Original JavaScript agents use it unchanged; the **Ours:** rules of the protocol
//! (ownership, address handling, status kept across heartbeats, retention, limits) apply.
//!
//! ## How data flows
//!
//! ```text
//!  TCP accept ─► admit ─► first byte / TLS ─► HTTP (hyper) ─► routes ─────────► reply
//!  server.rs     server.rs  server.rs, tls.rs   server.rs      http.rs, dashboard/
//!  (per_ip.rs, budget.rs)                                        │
//!                                                      /ws upgrade (ws.rs)
//!                                                                │
//!                         client task (ws.rs, client.rs): frames in ─► action ─► Outbox
//!                                                                 actions/*.rs  outbox.rs
//!                                     reads ◄────────────────────┘   │
//!                                       │                            └─► Writer ─► Registry
//!                   Directory (directory/, in-memory mirror) ◄── own writes, sweep, feed
//! ```
//!
//! 1. **Accept** (the `server` loop): each connection is admitted against the connection
//!    cap (descriptor reserve included), its source's share (`per_ip`) and the memory
//!    budget (`budget`), or closed at once. Its own task then waits for the first byte, or
//!    completes the TLS handshake (`tls`).
//! 2. **HTTP** (hyper, header size and time bounded): `http` routes `/agents`, `/stats`,
//!    `/health`, `/metrics`, `/info`, and the dashboard (`dashboard/`); response bodies are
//!    charged to the memory budget while they are written (`metered`).
//! 3. **`/ws`** (`ws`): the upgrade, then one client task per WebSocket holding its
//!    `Client` (`client`: nonce, owned agents, request budget). Each message goes to
//!    `actions` (one action a file), which answers from the directory or writes through the
//!    writer; replies are queued in the client's `Outbox` (`outbox`) and written in batches
//!    straight to the socket, with the reply writers of `reply`.
//! 4. **Storage**: `writer` group-commits to the `store` (SQLite or PostgreSQL);
//!    `directory/` mirrors it; `maintenance` flushes liveness, sweeps, keeps the instance
//!    row; `feed` reads other hubs' changes when the doorbell rings.
//! 5. **Relay** (`relay/`, docs/RELAY.md): a WebSocket that sent `relay`
//!    (`actions/relay.rs`) is attached under its verified agent id; its binary messages
//!    are relay frames, handled in its own task (`relay/stream.rs`) and queued for the
//!    destination's task through that one's port (`relay/mod.rs`, one lock per batch),
//!    which writes them with its replies (`relay/inbox.rs`, binary frames of the outbox).
//!
//! Every limit, timeout and buffer size is in [`defaults`], with its reason.
//!
//! ## Who owns which task
//!
//! * [`RunningHub`] owns the **server task** and the **maintenance task** (flush, sweep,
//!   instance row): [`RunningHub::shutdown`] stops them in order; dropping it aborts both
//!   and cancels the hub's shutdown token. With PostgreSQL the maintenance task owns the
//!   **feed reader** task, which owns the **doorbell listener** task (abort-on-drop).
//! * The server task's accept loop owns one **task per connection** (first byte or TLS
//!   handshake, then HTTP) in a `JoinSet`: aborted if the loop goes, drained for
//!   `HTTP_DRAIN` at shutdown and then aborted.
//! * Every **WebSocket task** (from the upgrade on) is spawned on the state's `websockets`
//!   tracker and ends on the shutdown token; shutdown waits `WEBSOCKET_DRAIN` for them.
//! * The **dashboard sampler** (history and change poller) is an abort-on-drop handle held
//!   by the serve future, so it ends with the server.
//! * The **writer task** ends when the state (its last handle) goes, or is aborted by
//!   shutdown after the last write.
//!
//! ## Storage and the mirror
//!
//! * **[`store::Registry`]** is the truth: SQLite (default, a file next to the hub) or
//!   PostgreSQL. Schema migrations run at start.
//! * **`Directory`** mirrors every stored row in memory. `lookup`, `discover`, `find`,
//!   `/agents` and `stats` are answered from it alone, which is what makes tens of
//!   thousands of them per second possible.
//! * **Writes** (`register`, `status`, `disconnect`, a closing WebSocket) go to the
//!   database first, through one writer task that commits whatever has queued in one
//!   transaction; the mirror is updated with the row's new `version` only after the commit,
//!   so the mirror never shows what is not stored. A failed write is `unavailable`.
//! * **Heartbeats** never wait for the database: they set `last_seen` in memory and mark
//!   the agent dirty; every `flush_interval` (2 s) one statement writes all dirty
//!   timestamps. A crash loses at most that much liveness, which the 2-minute idle rule
//!   does not notice. A heartbeat writes only when it brings an `idle` agent back.
//! * **Sweep** (every 30 s): flush liveness, then conditional `UPDATE`s in the database
//!   (`→ idle`, `→ offline`, delete offline rows past retention) whose results are applied
//!   to the mirror. The database decides, so a sweep is the same whichever hub runs it.
//!
//! ## 2.1 registration
//!
//! Every WebSocket first gets `{"event":"challenge","nonce":…}` (32 random bytes, hex); the
//! `challenge` action returns the same nonce. A `register` with `identity` and `signature`
//! is verified against it (`m2m_proto::identity::registration_message`) and stored under
//! the id derived from the key; without `identity` it is 2.0 (a new random id). A 2.1 id
//! registering again replaces its row (`ON CONFLICT` upsert) and takes a new registration
//! token (`session` column). Every write made on behalf of a WebSocket is conditional on the
//! token of the registration it made, so the WebSocket left behind can change nothing,
//! its close included; the directory retires the replaced entry and closes that WebSocket
//! (close code 4001, `m2m_proto::hub::CLOSE_SUPERSEDED`) — at once on the same hub, after
//! the next change-feed read on another hub of the same PostgreSQL database.
//!
//! ## Several hubs on one PostgreSQL database
//!
//! Each write takes a new `version` from a sequence, so the table is also a change feed:
//! a hub reads `version > watermark` and applies the rows to its mirror (newer versions
//! win; applying is idempotent). `lookup` of an id a hub does not know yet reads through to
//! the database at once. Liveness flushes take versions too, so `lastSeen` stays current
//! everywhere.
//!
//! **The doorbell** (`feed`, issue 20). Every transaction that changes agent rows (the
//! writer's batch, the liveness flush, the sweep, a release) also calls
//! `pg_notify('m2m_changes', <the smallest version it wrote>)`; PostgreSQL delivers it when
//! the transaction commits, and not at all if it rolls back. Each hub listens on a
//! connection of its own (outside the pool) and, when the doorbell rings, reads the feed —
//! the table stays the truth, the doorbell carries nothing but where to read from. A
//! burst coalesces: doorbells that ring while a read runs cause one more read. So an agent
//! registered, changed or closed through hub A is seen by hub B within milliseconds
//! (`m2m bench hubs`, docs/PERFORMANCE.md) instead of up to half a second.
//!
//! Sequence numbers are taken before commit, so a read can see version 12 committed while
//! 11 is still in flight. A doorbell read starts at `min(watermark, smallest rung - 1)`:
//! the late transaction rings at its own commit with its own smallest version, and the
//! read goes back for it. Doorbells are lost only while the listener is disconnected;
//! sqlx reconnects it and the hub then reads from the watermark it had
//! `FEED_LATE_COMMIT` (1.5 s) earlier, as every poll does. A slow fallback poll
//! (`sync_interval`, 5 s) covers anything else (a doorbell lost some other way, an older
//! hub on the database that does not ring). `storage.listen = false` turns the listener
//! off: the hub then polls every `sync_interval` only (set it to 500 ms for the former
//! behaviour). A change committed more than 1.5 s after taking its version while no
//! doorbell could be heard would be missed by other hubs' mirrors until the row changes
//! again (it is still correct in the database and for `lookup` of unknown ids); our
//! transactions take milliseconds.
//!
//! **Hub instances.** Each hub keeps a row in `m2m_hubs` (instance id — the `hub` column
//! of the agents it holds —, public WebSocket URL — `public_url`, or the address it listens
//! on —, started at, alive at): written at start, refreshed every `alive_interval` (5 s),
//! deleted at a clean shutdown (which first marks its agents offline). A hub whose row was
//! not refreshed for `hub_expiry` (15 s) — killed, its machine gone — is taken as dead by
//! the next hub that looks (under an advisory lock, one at a time): its live agents go
//! offline through the same statements as a release (so the feed and the doorbell carry
//! it, and the records' `relay` is cleared) and its row is deleted, in one transaction. A
//! hub taken as dead that was only slow writes its row again at its next refresh; its
//! agents come back `online` with their next heartbeat. [`store::Registry::instances`]
//! lists the rows; `/metrics` has `m2m_hub_instances` (live ones, this hub included).
//!
//! Sweeps run under a transaction-level advisory lock: when two hubs sweep at once, one
//! skips; since both would compute the same conditional updates, nothing is lost and they
//! never undo each other. Rows past retention are deleted by whichever hub sweeps; every
//! hub drops them from its mirror by the same rule.
//!
//! With SQLite the hub is the file's only user: at start, agents a crash left live are
//! marked offline (no WebSocket can hold them any more), and the feed is not read. Its
//! instance row exists too; the row a crashed hub left is deleted by the next one's
//! expiry check.
//!
//! ## Listing order
//!
//! `discover` orders by seconds since last seen, rounded to whole seconds, most recent
//! first, and within one second by when the agent was last written, oldest first: that is what the original
//! does (its `ORDER BY last_seen` sorts the seconds column, ties in table order) and what
//! the recorded transcript shows. `find` and `/agents` list newest first. Heartbeats alone
//! reorder the listing at most once a second.

// Every public item is documented (CI denies warnings, so a new undocumented one fails).
#![warn(missing_docs)]

mod actions;
mod address;
mod budget;
mod client;
mod config;
mod dashboard;
pub mod defaults;
mod directory;
mod error;
mod feed;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod http;
mod mailbox;
mod maintenance;
mod metered;
mod metrics;
mod outbox;
mod per_ip;
mod relay;
mod reply;
mod server;
mod state;
pub mod store;
mod tls;
mod writer;
mod ws;

/// The former name of [`defaults`] (the `m2m` binary's flags refer to it).
pub use defaults as limits;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{
    Clock, HubConfig, HubLimits, MailboxConfig, ManualClock, RelayConfig, StorageTuning,
    SweepConfig, TlsConfig,
};
pub use error::{HubError, StoreError, TlsFileError};
pub use http::{router, ClientAddr};
pub use maintenance::{HubsReport, SweepReport};
pub use server::raise_descriptor_limit;
pub use state::HubState;

use feed::Feed;

/// Starts hubs.
#[derive(Debug, Clone, Copy)]
pub struct Hub;

impl Hub {
    /// Opens the registry (running migrations), binds `config.bind`, and starts the server
    /// and the background sweeper.
    pub async fn start(config: HubConfig) -> Result<RunningHub, HubError> {
        let addr = config.bind;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| HubError::Bind { addr, source })?;
        let local = listener.local_addr()?;
        let state = HubState::open(config).await?;
        let url = match &state.config.public_url {
            Some(url) => url.clone(),
            None => {
                let scheme = if state.config.tls.is_some() {
                    "wss"
                } else {
                    "ws"
                };
                format!("{scheme}://{}/ws", dial_addr(local))
            }
        };
        state.announce(url).await?;
        RunningHub::spawn(listener, state)
    }
}

/// A hub serving in the background. [`RunningHub::shutdown`] stops it gracefully; dropping
/// it stops it too, at once: the server and maintenance tasks are aborted (with them the
/// accept loop, its listener and every HTTP connection) and the WebSockets are told to
/// close (their agents go offline as at shutdown).
#[derive(Debug)]
pub struct RunningHub {
    state: Arc<HubState>,
    local_addr: SocketAddr,
    stop: CancellationToken,
    server_done: CancellationToken,
    server: JoinHandle<Result<(), HubError>>,
    /// `None` once stopped and awaited.
    maintenance: Option<JoinHandle<()>>,
    maintenance_stop: CancellationToken,
    feed: Arc<Feed>,
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        // No-ops after `shutdown`, which awaited both tasks.
        self.state.shutdown.cancel();
        self.server.abort();
        if let Some(task) = &self.maintenance {
            task.abort();
        }
    }
}

impl RunningHub {
    fn spawn(listener: TcpListener, state: Arc<HubState>) -> Result<RunningHub, HubError> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let server_done = CancellationToken::new();
        let server = {
            let (state, stop, done) = (state.clone(), stop.clone(), server_done.clone());
            let tls = match &state.config.tls {
                Some(cfg) => Some(tls::acceptor(cfg)?),
                None => None,
            };
            tokio::spawn(async move {
                let result = serve_with(listener, tls, state, stop.cancelled_owned()).await;
                if let Err(e) = &result {
                    tracing::error!(error = %e, "hub server stopped");
                }
                done.cancel();
                result
            })
        };
        let feed = Arc::new(Feed::default());
        let maintenance_stop = CancellationToken::new();
        let maintenance = tokio::spawn(maintenance::run(
            state.clone(),
            feed.clone(),
            maintenance_stop.clone(),
        ));
        tracing::info!(addr = %local_addr, tls = state.config.tls.is_some(), "hub listening");
        Ok(RunningHub {
            state,
            local_addr,
            stop,
            server_done,
            server,
            maintenance: Some(maintenance),
            maintenance_stop,
            feed,
        })
    }

    /// The bound address (the real port when `bind` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn dial_addr(&self) -> SocketAddr {
        dial_addr(self.local_addr)
    }

    /// `ws://IP:PORT/ws` (`wss://` with TLS), dialable from this machine.
    pub fn ws_url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}/ws", self.dial_addr())
    }

    /// `http://IP:PORT` (`https://` with TLS).
    pub fn http_url(&self) -> String {
        let scheme = if self.state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.dial_addr())
    }

    /// Wakes every mailbox subscription on this hub for a delivery turn (tests that move a
    /// manual clock past the ack timeout; a running hub wakes them by itself).
    pub fn mail_wake_now(&self) {
        self.state.mailbox.ring_all();
    }

    /// The shared state (tests, embedding).
    pub fn state(&self) -> &Arc<HubState> {
        &self.state
    }

    /// Runs one status sweep now (as the periodic sweeper does).
    pub async fn sweep_now(&self) -> Result<SweepReport, HubError> {
        Ok(maintenance::sweep_once(&self.state).await?)
    }

    /// Writes batched heartbeats now; returns how many.
    pub async fn flush_now(&self) -> Result<usize, HubError> {
        Ok(maintenance::flush_liveness(&self.state).await?)
    }

    /// Asks every WebSocket attached to the relay to close its streams idle past
    /// `relay.stream_idle` on the configured clock now (as the periodic relay sweep does);
    /// the closes go out as each WebSocket's task gets to them.
    pub fn relay_sweep_now(&self) {
        self.state.relay.sweep();
    }

    /// Reads the change feed of other hubs now, as a poll does (PostgreSQL; a no-op count
    /// of 0 otherwise); returns the rows applied.
    pub async fn sync_now(&self) -> Result<usize, HubError> {
        if !self.state.registry.shared() {
            return Ok(0);
        }
        Ok(feed::read(&self.state, &self.feed, feed::Read::CatchUp).await?)
    }

    /// Refreshes this hub's instance row and releases the agents of hubs whose liveness
    /// expired now (as the periodic check every `alive_interval` does).
    pub async fn check_hubs_now(&self) -> Result<HubsReport, HubError> {
        Ok(maintenance::check_hubs(&self.state).await?)
    }

    /// Stops the background work (flush, sweep, instance row, change feed) without the
    /// shutdown's release: the hub keeps serving, but its row goes stale as a killed hub's
    /// would (tests of the liveness expiry).
    #[doc(hidden)]
    pub async fn stop_maintenance(&mut self) {
        self.maintenance_stop.cancel();
        if let Some(task) = self.maintenance.take() {
            let _ = task.await;
        }
    }

    /// Resolves when the server stopped by itself (a fatal error). The CLI selects on this
    /// and on its signals.
    pub async fn stopped(&self) {
        self.server_done.cancelled().await
    }

    /// Serves until SIGINT/SIGTERM (or a fatal error), then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), HubError> {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("signal received; shutting down"),
            _ = self.stopped() => {}
        }
        self.shutdown().await
    }

    /// Graceful shutdown: stop accepting, close every WebSocket (its agents go offline),
    /// write pending liveness, mark offline whatever this hub still holds, close the
    /// database.
    pub async fn shutdown(mut self) -> Result<(), HubError> {
        self.stop.cancel();
        let served = match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(HubError::Io(std::io::Error::other(e))),
        };
        self.maintenance_stop.cancel();
        if let Some(task) = self.maintenance.take() {
            let _ = task.await;
        }
        self.state.stop_writer();
        self.state.registry.close().await;
        tracing::info!("hub stopped");
        served
    }
}

/// `addr` with an unspecified IP replaced by loopback: dialable from this machine.
fn dial_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// Serves HTTP and WebSockets on an already-bound `listener` until `shutdown` resolves,
/// then closes every WebSocket and marks this hub's agents offline. Background sweeping is
/// not included (see [`Hub::start`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<HubState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    serve_with(listener, None, state, shutdown).await
}

/// As [`serve`], over TLS.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<HubState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    serve_with(listener, Some(acceptor), state, shutdown).await
}

async fn serve_with(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<HubState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), HubError> {
    let stop = CancellationToken::new();
    // Records the dashboard's history and feeds its streams while the server runs.
    let _sampler = dashboard::spawn_sampler(state.clone());
    tokio::join!(
        server::serve(listener, tls, state.clone(), stop.clone()),
        stop_on(shutdown, &state, &stop)
    );
    finish(&state).await;
    Ok(())
}

/// When `shutdown` resolves: WebSockets are told to close and the accept loop stops.
async fn stop_on(shutdown: impl Future<Output = ()>, state: &HubState, stop: &CancellationToken) {
    shutdown.await;
    state.shutdown.cancel();
    stop.cancel();
}

/// After the server stopped: let WebSockets close (they mark their agents offline), write
/// liveness, then release anything this hub still holds.
async fn finish(state: &HubState) {
    state.shutdown.cancel();
    state.websockets.close();
    if tokio::time::timeout(defaults::WEBSOCKET_DRAIN, state.websockets.wait())
        .await
        .is_err()
    {
        tracing::warn!("WebSockets did not close in time; releasing their agents anyway");
    }
    if let Err(e) = maintenance::flush_liveness(state).await {
        tracing::warn!(error = %e, "final liveness flush failed");
    }
    state.retry_pending_offline().await;
    match state.registry.release(Some(&state.hub_id)).await {
        Ok(changes) => {
            for c in changes {
                state.directory.set_status(&c.id, &c.status, c.version);
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not mark this hub's agents offline"),
    }
    // Gone, not dead: no other hub has to wait for the liveness expiry.
    if let Err(e) = state.registry.retire(&state.hub_id).await {
        tracing::warn!(error = %e, "could not delete this hub's instance row");
    }
}
