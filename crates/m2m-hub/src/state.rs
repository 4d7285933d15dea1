//! The hub's shared state: configuration, the registry and its in-memory mirror, the
//! writer, counters, admission and per-IP shares. One [`HubState`] per running hub, behind
//! an `Arc` that every task holds; the actions that read and change it are in
//! [`crate::actions`], one a file.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use m2m_proto::rate::Rate;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::directory::{AgentEntry, Directory};
use crate::error::HubError;
use crate::health::RegistryHealth;
use crate::metrics::{Gauges, Metrics};
use crate::per_ip::IpRegistrations;
use crate::server::Admission;
use crate::store::{self, HubRow, Registry};
use crate::writer::Writer;

/// Shared state of one running hub. Built by [`HubState::open`]; handed to
/// [`crate::serve`] and [`crate::router`].
#[derive(Debug)]
pub struct HubState {
    pub(crate) config: HubConfig,
    pub(crate) hub_id: String,
    /// This hub's instance row as written at start (`url`, `started_at`).
    instance: OnceLock<HubRow>,
    pub(crate) registry: Arc<dyn Registry>,
    pub(crate) directory: Directory,
    pub(crate) writer: Writer,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) metrics: Arc<Metrics>,
    started: Instant,
    pub(crate) accepted: AtomicU64,
    pub(crate) open: AtomicU64,
    pub(crate) registered: AtomicU64,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) websockets: TaskTracker,
    /// Offline marks whose write failed (database down); retried by the maintenance task.
    pub(crate) pending_offline: Mutex<Vec<Arc<AgentEntry>>>,
    /// PostgreSQL: the change feed has been applied up to here.
    pub(crate) feed_watermark: AtomicI64,
    /// Connection admission and the memory budget.
    pub(crate) admission: Admission,
    /// Registrations per source IP.
    pub(crate) registrations: IpRegistrations,
    /// Each WebSocket's request budget (`requests_per_second`, `request_burst`).
    pub(crate) request_rate: Rate,
    /// The registry's health as `/health` reports it.
    pub(crate) health: RegistryHealth,
    /// The web dashboard's history, streams and query view.
    pub(crate) dashboard: crate::dashboard::Dashboard,
    /// The relay (docs/RELAY.md): attached WebSockets, budget, probes, counters.
    pub(crate) relay: crate::relay::Relay,
    /// The mailbox (docs/MAILBOX.md): subscriptions, doorbells, counters.
    pub(crate) mailbox: crate::mailbox::Mailbox,
}

impl HubState {
    /// Opens the registry (running migrations), loads it into memory and starts the writer.
    /// With SQLite the hub is the registry's only user, so agents left live by a crash are
    /// marked offline here: no WebSocket can hold them any more.
    pub async fn open(config: HubConfig) -> Result<Arc<HubState>, HubError> {
        let registry: Arc<dyn Registry> =
            Arc::from(store::open(&config.database, &config.storage).await?);
        if !registry.shared() {
            registry.release(None).await?;
        }
        // Rows past retention are deleted before loading, not after: a registry grown
        // while this hub was down is not read into memory only to be dropped.
        let cut = crate::maintenance::cutoffs(&config.sweep, config.clock.now_ms());
        registry.sweep(cut).await?;
        let loaded = registry.load().await?;
        let directory = Directory::default();
        for row in &loaded.rows {
            directory.upsert(row);
        }
        let metrics = Arc::new(Metrics::default());
        let (writer, writer_task) =
            Writer::spawn(registry.clone(), metrics.clone(), config.storage.max_batch);
        let hub_id = format!("{:016x}", rand::random::<u64>());
        tracing::info!(
            hub = %hub_id,
            registry = registry.kind(),
            agents = loaded.rows.len(),
            "registry ready"
        );
        let slots = Arc::new(Semaphore::new(config.limits.max_connections));
        let admission = Admission::new(&config.limits, config.trust_proxy);
        let limits = &config.limits;
        let registrations = IpRegistrations::new(Rate::per_hour(
            limits.registrations_per_hour,
            limits.registration_burst,
        ));
        let request_rate = Rate::per_second(limits.requests_per_second, limits.request_burst);
        let mail = registry.mail();
        Ok(Arc::new(HubState {
            hub_id,
            instance: OnceLock::new(),
            registry,
            directory,
            writer,
            writer_task: Mutex::new(Some(writer_task)),
            metrics,
            started: Instant::now(),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            registered: AtomicU64::new(0),
            slots,
            shutdown: CancellationToken::new(),
            websockets: TaskTracker::new(),
            pending_offline: Mutex::new(Vec::new()),
            feed_watermark: AtomicI64::new(loaded.watermark),
            admission,
            registrations,
            request_rate,
            health: RegistryHealth::default(),
            dashboard: crate::dashboard::Dashboard::default(),
            relay: crate::relay::Relay::new(&config.relay),
            mailbox: crate::mailbox::Mailbox::new(mail),
            config,
        }))
    }

    /// Writes this hub's instance row (`m2m_hubs`) naming `url` as its public WebSocket URL;
    /// from then on the maintenance task keeps it alive. Once per hub.
    pub(crate) async fn announce(&self, url: String) -> Result<(), HubError> {
        let now = self.now_ms();
        let row = HubRow {
            id: self.hub_id.clone(),
            url,
            started_at: now,
            alive_at: now,
        };
        self.registry.announce(&row).await?;
        let _ = self.instance.set(row);
        Ok(())
    }

    /// This hub's instance row, alive at `now`; `None` before [`HubState::announce`].
    pub(crate) fn instance_row(&self, now: i64) -> Option<HubRow> {
        self.instance.get().map(|row| HubRow {
            alive_at: now,
            ..row.clone()
        })
    }

    /// This hub's instance id (the `hub` of the agents it holds, its `m2m_hubs` row).
    pub fn hub_id(&self) -> &str {
        &self.hub_id
    }

    /// The status of agent `id` in this hub's in-memory mirror (what `lookup`, `discover`
    /// and `find` answer from), never reading through to the registry; `None` when the
    /// mirror does not hold it. Benches and tests watch it to see another hub's change
    /// arrive.
    pub fn mirrored_status(&self, id: &str) -> Option<String> {
        let entry = self.directory.get(crate::directory::parse_id(id)?)?;
        (!entry.is_retired()).then(|| entry.status().as_str().to_owned())
    }

    /// Milliseconds since the epoch, from the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
    }

    /// Now on the configured clock's monotonic side: what request budgets, registration
    /// shares and deadlines are measured with (tests move it by hand).
    pub(crate) fn instant(&self) -> Instant {
        self.config.clock.instant()
    }

    /// Whole seconds since start.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The configuration the hub runs with.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The registry (the truth the in-memory mirror reflects): tests, embedding.
    pub fn registry(&self) -> &Arc<dyn Registry> {
        &self.registry
    }

    /// Gauges for `/metrics`.
    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            open_connections: self.open.load(Ordering::Relaxed),
            registered_connections: self.registered.load(Ordering::Relaxed),
            accepted_connections: self.accepted.load(Ordering::Relaxed),
            agents: self.directory.counts(),
            uptime: self.uptime(),
            http_connections: self.admission.open() as u64,
            memory_used: self.admission.memory.used_bytes() as u64,
            memory_budget: self.admission.memory.total_bytes() as u64,
            relay_bytes: self.relay.bytes_total.load(Ordering::Relaxed),
            relay_streams_total: self.relay.streams_total.load(Ordering::Relaxed),
            relay_streams: self.relay.streams_open.load(Ordering::Relaxed),
            relay_used: self.relay.used() as u64,
        }
    }

    /// Stops the writer task (after the last write).
    pub(crate) fn stop_writer(&self) {
        if let Some(task) = self.writer_task.lock().take() {
            task.abort();
        }
    }

    /// How long a write may take before a session gives up on a slow client.
    pub(crate) fn write_timeout(&self) -> Duration {
        self.config.limits.write_timeout
    }
}
