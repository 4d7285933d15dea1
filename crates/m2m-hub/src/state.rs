//! The hub's shared state and the actions of PROTOCOL.md A2, independent of transport: a
//! WebSocket session calls [`HubState::handle_text`] with each message and sends back the
//! string it returns.
//!
//! 2.1 (PROTOCOL.md B, docs/SECURITY.md "Hub registration"): every [`Session`] has a fresh
//! challenge nonce; a `register` carrying `identity` must sign it (with the address as sent
//! and the capabilities) and gets the id derived from the key. Such a registration replaces
//! any earlier one of the same id: the earlier WebSocket is closed (its [`Session::evicted`]
//! token is cancelled by the directory) and, because every write made on behalf of a
//! WebSocket is conditional on its registration token (`session` column), nothing that
//! WebSocket still does — its close included, on this hub or another — can touch the newer
//! registration.

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use m2m_proto::hub::{
    Action, Discover, ErrorReply, Find, HeartbeatAck, HubCounters, HubRequest, Nonce, Register,
    Registered, Reply, Stats, CHALLENGE_ACTION,
};
use m2m_proto::identity::{registration_message, IdentityKey};
use m2m_proto::limits::PROTOCOL_VERSION;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::address;
use crate::codes;
use crate::config::HubConfig;
use crate::directory::{
    parse_id, push_u64, AgentEntry, Directory, Filter, Holder, JsonPage, Status,
};
use crate::error::HubError;
use crate::health::RegistryHealth;
use crate::metrics::{action_index, Gauges, Metrics, Refusal};
use crate::per_ip::IpRegistrations;
use crate::server::Admission;
use crate::store::{self, AgentRow, Registry, Write};
use crate::writer::{Unavailable, Writer};

/// Shared state of one running hub. Built by [`HubState::open`]; handed to
/// [`crate::serve`] and [`crate::router`].
#[derive(Debug)]
pub struct HubState {
    pub(crate) config: HubConfig,
    pub(crate) hub_id: String,
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
    pub(crate) sessions: TaskTracker,
    /// Offline marks whose write failed (database down); retried by the maintenance task.
    pub(crate) pending_offline: Mutex<Vec<Arc<AgentEntry>>>,
    /// PostgreSQL: the change feed has been applied up to here.
    pub(crate) feed_watermark: AtomicI64,
    /// Connection admission and the memory budget.
    pub(crate) admission: Admission,
    /// Registrations per source IP.
    pub(crate) registrations: IpRegistrations,
    /// The registry's health as `/health` reports it.
    pub(crate) health: RegistryHealth,
    /// The web dashboard's history, streams and query view.
    pub(crate) dashboard: crate::dashboard::Dashboard,
}

/// Serial numbers of sessions (unique within this process).
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// One WebSocket's view: who it is and what it registered.
#[derive(Debug)]
pub struct Session {
    ip: IpAddr,
    owned: Vec<Arc<AgentEntry>>,
    tokens: f64,
    refilled: Instant,
    /// 2.1 challenge: 32 random bytes as hex, signed by a 2.1 `register` on this WebSocket.
    nonce: String,
    serial: u64,
    evict: CancellationToken,
}

impl Session {
    /// A new session for a client at `ip`, with a full request budget and a fresh nonce.
    pub fn new(ip: IpAddr, burst: u32) -> Self {
        Session {
            ip,
            owned: Vec::new(),
            tokens: f64::from(burst),
            refilled: Instant::now(),
            // thread_rng is a CSPRNG (ChaCha, reseeded from the OS).
            nonce: hex::encode(rand::random::<[u8; 32]>()),
            serial: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            evict: CancellationToken::new(),
        }
    }

    /// This WebSocket's 2.1 challenge nonce (64 hex characters).
    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Cancelled when a newer registration (here or through another hub) took over an id
    /// this WebSocket registered: the WebSocket is then closed.
    pub fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// Whether this session registered an agent (and still holds it).
    pub fn is_registered(&self) -> bool {
        !self.owned.is_empty()
    }

    fn owned(&self, id: &str) -> Option<Arc<AgentEntry>> {
        self.owned.iter().find(|e| &*e.id == id).cloned()
    }

    /// One request's token from the bucket; always granted when `rate` is 0 (no limit).
    fn take_token(&mut self, rate: u32, burst: u32) -> bool {
        if rate == 0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A refused request: the `error` string.
struct Refused(String);

impl From<&str> for Refused {
    fn from(code: &str) -> Self {
        Refused(code.to_owned())
    }
}

impl From<Unavailable> for Refused {
    fn from(_: Unavailable) -> Self {
        Refused(codes::UNAVAILABLE.to_owned())
    }
}

fn ok<T: Serialize>(body: T, cid: Option<Value>) -> String {
    serde_json::to_string(&Reply::ok(body, cid))
        .unwrap_or_else(|_| error_text(codes::UNAVAILABLE, None))
}

/// An ok reply written by hand, byte for byte what [`ok`] makes of a body whose fields
/// `fields` writes (`"name":value,…`): `{"status":"ok",<fields>,"correlationId":…}`.
fn ok_text(capacity: usize, cid: Option<Value>, fields: impl FnOnce(&mut String)) -> String {
    let mut out = String::with_capacity(capacity + 64);
    out.push_str(r#"{"status":"ok","#);
    fields(&mut out);
    if let Some(cid) = cid {
        out.push_str(r#","correlationId":"#);
        match serde_json::to_string(&cid) {
            Ok(text) => out.push_str(&text),
            Err(_) => return error_text(codes::UNAVAILABLE, None),
        }
    }
    out.push('}');
    out
}

/// `"count":N,…,"agents":[…]` of a page.
fn push_page(out: &mut String, page: &JsonPage, head: impl FnOnce(&mut String)) {
    out.push_str(r#""count":"#);
    push_u64(out, page.count as u64);
    head(out);
    out.push_str(r#","agents":"#);
    out.push_str(&page.json);
}

const CID_KEY: &str = r#","correlationId":"#;

/// Whether `reply` ends with a correlationId that is a non-integer or huge number (what
/// serde_json holds as `f64`).
fn ends_with_float_cid(reply: &str) -> bool {
    reply
        .strip_suffix('}')
        .and_then(|r| r.rfind(CID_KEY).map(|at| &r[at + CID_KEY.len()..]))
        .is_some_and(|n| {
            n.bytes()
                .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                && n.bytes().any(|b| b".eE".contains(&b))
        })
}

/// `reply` with its correlationId replaced by the number exactly as the request wrote it.
/// serde_json (without `arbitrary_precision`, which would slow every number the hub parses)
/// holds a number that does not fit `u64`/`i64` as `f64`: `12345678901234567890123` would
/// come back as `1.2345678901234568e22`. Only replies to such requests come here; every
/// reply ends with its correlationId.
fn exact_correlation_id(request: &str, reply: String) -> String {
    #[derive(serde::Deserialize)]
    struct Cid<'a> {
        #[serde(rename = "correlationId", borrow, default)]
        correlation_id: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(Cid {
        correlation_id: Some(raw),
    }) = serde_json::from_str::<Cid<'_>>(request)
    else {
        return reply;
    };
    let Some(at) = reply.rfind(CID_KEY) else {
        return reply;
    };
    let mut out = String::with_capacity(reply.len() + raw.get().len());
    out.push_str(&reply[..at + CID_KEY.len()]);
    out.push_str(raw.get().trim());
    out.push('}');
    out
}

/// `{"status":"error","error":code,"correlationId":…}` as text.
pub(crate) fn error_text(code: &str, cid: Option<Value>) -> String {
    serde_json::to_string(&ErrorReply::new(code, cid))
        .unwrap_or_else(|_| format!(r#"{{"status":"error","error":"{code}"}}"#))
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
        Ok(Arc::new(HubState {
            hub_id,
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
            sessions: TaskTracker::new(),
            pending_offline: Mutex::new(Vec::new()),
            config,
            feed_watermark: AtomicI64::new(loaded.watermark),
            admission,
            registrations: IpRegistrations::default(),
            health: RegistryHealth::default(),
            dashboard: crate::dashboard::Dashboard::default(),
        }))
    }

    /// Milliseconds since the epoch, from the configured clock.
    pub fn now_ms(&self) -> i64 {
        self.config.clock.now_ms()
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

    /// The `stats` body.
    pub fn stats(&self) -> Stats {
        Stats {
            agents: self.directory.counts(),
            hub: HubCounters {
                version: PROTOCOL_VERSION.to_owned(),
                uptime: self.uptime(),
                connections: self.accepted.load(Ordering::Relaxed),
                active_connections: self.registered.load(Ordering::Relaxed),
            },
        }
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
        }
    }

    /// Answers one WebSocket message. Never fails: every problem is an error reply.
    pub async fn handle_text(&self, session: &mut Session, text: &str) -> String {
        // The parsed request (~0.9 KB) is dropped before anything is awaited: every
        // WebSocket's task holds room for what its futures keep across an await.
        let (started, action, cid, act) = match self.prepare(session, text) {
            Ok(prepared) => prepared,
            // Early replies are short: looking at their end costs nothing.
            Err(reply) if reply.len() < 512 && ends_with_float_cid(&reply) => {
                return exact_correlation_id(text, reply)
            }
            Err(reply) => return reply,
        };
        let float_cid = matches!(&cid, Some(Value::Number(n)) if n.is_f64());
        let result = self.dispatch(session, act, cid.clone()).await;
        self.metrics
            .request(action, result.is_ok(), started.elapsed());
        let reply = result.unwrap_or_else(|Refused(code)| error_text(&code, cid));
        if float_cid {
            exact_correlation_id(text, reply)
        } else {
            reply
        }
    }

    /// Parses and admits a message: the action to run (with the metrics index and the
    /// correlationId), or the reply when there is nothing to run.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        session: &mut Session,
        text: &str,
    ) -> Result<(Instant, usize, Option<Value>, Action), String> {
        let started = Instant::now();
        let limits = &self.config.limits;
        if text.len() > limits.max_message_bytes {
            self.metrics.oversized.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .request(action_index(None), false, started.elapsed());
            return Err(error_text(codes::MESSAGE_TOO_LARGE, None));
        }
        let request = match HubRequest::parse(text) {
            Ok(r) => r,
            Err(_) => {
                self.metrics
                    .request(action_index(None), false, started.elapsed());
                return Err(error_text(codes::INVALID_JSON, None));
            }
        };
        let action = action_index(request.action_name());
        let cid = request.correlation_id.clone();
        if !session.take_token(limits.requests_per_second, limits.request_burst) {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.metrics.request(action, false, started.elapsed());
            return Err(error_text(codes::RATE_LIMITED, cid));
        }
        // `challenge` is a hub-level probe, not an `Action`: it names no agent.
        let result = if request.action_name() == Some(CHALLENGE_ACTION) {
            let nonce = Nonce {
                nonce: session.nonce.clone(),
            };
            Ok(ok(nonce, cid.clone()))
        } else {
            match request.action() {
                Ok(a) => return Ok((started, action, cid, a)),
                Err(e) => Err(Refused(e.code())),
            }
        };
        self.metrics
            .request(action, result.is_ok(), started.elapsed());
        Err(result.unwrap_or_else(|Refused(code)| error_text(&code, cid)))
    }

    async fn dispatch(
        &self,
        session: &mut Session,
        action: Action,
        cid: Option<Value>,
    ) -> Result<String, Refused> {
        // The actions that wait for the database are boxed: every WebSocket's task holds
        // room for the largest future it may await, and these are kilobytes that an idle
        // connection would otherwise carry all its life.
        match action {
            Action::Register(r) => Box::pin(self.register(session, r))
                .await
                .map(|b| ok(b, cid)),
            Action::Discover(d) => Ok(self.discover(&d, cid)),
            Action::Find(f) => Ok(self.find(&f, cid)),
            Action::Lookup { id } => self.lookup(&id, cid).await,
            Action::Heartbeat { id } => self.heartbeat(session, &id).await.map(|b| ok(b, cid)),
            Action::Status {
                id,
                status,
                metadata,
            } => Box::pin(self.set_status(session, &id, status, metadata))
                .await
                .map(|b| ok(b, cid)),
            Action::Disconnect { id } => Box::pin(self.disconnect(session, &id))
                .await
                .map(|b| ok(b, cid)),
            Action::Stats => Ok(ok(self.stats(), cid)),
        }
    }

    fn check_capabilities(&self, caps: &[String]) -> Result<(), Refused> {
        let limits = &self.config.limits;
        if caps.len() > limits.max_capabilities {
            return Err(codes::TOO_MANY_CAPABILITIES.into());
        }
        if caps.iter().any(|c| c.len() > limits.max_capability_len) {
            return Err(codes::CAPABILITY_TOO_LONG.into());
        }
        Ok(())
    }

    fn check_metadata(&self, metadata: &Map<String, Value>) -> Result<(), Refused> {
        let size = serde_json::to_vec(metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.config.limits.max_metadata_bytes {
            return Err(codes::METADATA_TOO_LARGE.into());
        }
        Ok(())
    }

    /// The 2.1 proof of a `register` with `identity`: the key, verified against this
    /// WebSocket's nonce over the address exactly as sent (empty when absent) and the
    /// capabilities. Returns the derived id and the key (canonical base64).
    fn verify_identity(
        &self,
        session: &Session,
        r: &Register,
        claimed: &str,
    ) -> Result<(String, String), Refused> {
        let key = IdentityKey::from_b64(claimed).map_err(|_| codes::INVALID_IDENTITY)?;
        let signature = r.signature.as_deref().ok_or(codes::INVALID_SIGNATURE)?;
        let message = registration_message(
            &session.nonce,
            &key,
            r.address.as_deref().unwrap_or(""),
            &r.capabilities,
        );
        key.verify(&message, signature)
            .map_err(|_| codes::INVALID_SIGNATURE)?;
        Ok((key.agent_id(), key.to_b64()))
    }

    async fn register(&self, session: &mut Session, r: Register) -> Result<Registered, Refused> {
        let limits = &self.config.limits;
        if session.owned.len() >= limits.max_agents_per_connection && r.identity.is_none() {
            return Err(codes::TOO_MANY_AGENTS.into());
        }
        let address =
            address::dial_address(session.ip, r.address.as_deref(), limits.max_address_len)?;
        self.check_capabilities(&r.capabilities)?;
        self.check_metadata(&r.metadata)?;
        // Without `identity`: 2.0, a new random id every time (a `signature` alone proves
        // nothing and is ignored).
        let (id, identity) = match r.identity.as_deref() {
            None => (format!("{:032x}", rand::random::<u128>()), None),
            Some(claimed) => {
                let (id, key) = self.verify_identity(session, &r, claimed)?;
                // Registering its own id again does not take another slot.
                if session.owned.len() >= limits.max_agents_per_connection
                    && session.owned(&id).is_none()
                {
                    return Err(codes::TOO_MANY_AGENTS.into());
                }
                (id, Some(key))
            }
        };
        // Counted last: a refused or invalid register does not spend the IP's share.
        if !self.registrations.try_take(
            session.ip,
            limits.registrations_per_hour,
            limits.registration_burst,
            tokio::time::Instant::now().into_std(),
        ) {
            self.metrics.refused(Refusal::RegistrationsPerIp);
            return Err(codes::TOO_MANY_REGISTRATIONS.into());
        }
        let now = self.now_ms();
        let mut row = AgentRow {
            id,
            address,
            capabilities: r.capabilities,
            metadata: r.metadata,
            identity,
            status: m2m_proto::hub::status::ONLINE.to_owned(),
            last_seen: now,
            created_at: now,
            hub: self.hub_id.clone(),
            session: format!("{:032x}", rand::random::<u128>()),
            version: 0,
        };
        row.version = self
            .writer
            .write(Write::Insert(row.clone()))
            .await?
            .ok_or(Refused::from(codes::UNAVAILABLE))?;
        let holder = Holder {
            serial: session.serial,
            evict: session.evict.clone(),
        };
        let entry = self
            .directory
            .register(&row, holder)
            .ok_or(Refused::from(codes::UNAVAILABLE))?;
        if *entry.session != *row.session {
            // A newer registration of this id (through another hub) was mirrored before
            // ours: ours is already superseded, so this WebSocket closes as it would had
            // the newer one come a moment later.
            session.evict.cancel();
        } else {
            let was_empty = session.owned.is_empty();
            // This WebSocket registering its id again: the new entry replaced the old.
            session.owned.retain(|e| e.key != entry.key);
            if was_empty {
                self.registered.fetch_add(1, Ordering::Relaxed);
            }
            session.owned.push(entry);
        }
        tracing::debug!(
            id = %&row.id[..8],
            address = %row.address,
            identity = row.identity.is_some(),
            "agent registered"
        );
        Ok(Registered {
            id: row.id,
            address: row.address,
        })
    }

    /// The `discover` reply (`proto::Discovered`), written from the entries' cached text.
    fn discover(&self, d: &Discover, cid: Option<Value>) -> String {
        let filter = Filter {
            exclude: d.exclude_id.as_deref(),
            capabilities: &d.capabilities,
            status: d.status.as_deref().filter(|s| !s.is_empty()),
            limit: d.limit as usize,
            offset: d.offset,
        };
        let page = self.directory.discover(self.now_ms(), &filter);
        ok_text(page.json.len(), cid, |out| {
            push_page(out, &page, |out| {
                out.push_str(r#","limit":"#);
                push_u64(out, u64::from(d.limit));
                out.push_str(r#","offset":"#);
                push_u64(out, d.offset);
            })
        })
    }

    /// The `find` reply (`proto::Found`).
    fn find(&self, f: &Find, cid: Option<Value>) -> String {
        let page = self
            .directory
            .find(&f.capability, f.limit as usize, f.offset);
        ok_text(page.json.len(), cid, |out| push_page(out, &page, |_| {}))
    }

    /// Looks an agent up: the mirror first; with a shared registry an id the mirror does
    /// not know yet (registered through another hub a moment ago) is read from the database.
    /// The reply is `proto::LookedUp`.
    async fn lookup(&self, id: &str, cid: Option<Value>) -> Result<String, Refused> {
        let reply = |entry: &AgentEntry| {
            ok_text(256, cid, |out| {
                out.push_str(r#""agent":"#);
                entry.write_record(out);
            })
        };
        let key = parse_id(id).ok_or(Refused::from(codes::AGENT_NOT_FOUND))?;
        if let Some(entry) = self.directory.get(key) {
            return Ok(reply(&entry));
        }
        if !self.registry.shared() {
            return Err(codes::AGENT_NOT_FOUND.into());
        }
        match self.registry.get(id).await {
            Ok(Some(row)) => {
                let entry = self
                    .directory
                    .upsert(&row)
                    .ok_or(Refused::from(codes::AGENT_NOT_FOUND))?;
                Ok(reply(&entry))
            }
            Ok(None) => Err(codes::AGENT_NOT_FOUND.into()),
            Err(e) => {
                self.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "lookup read-through failed");
                Err(codes::UNAVAILABLE.into())
            }
        }
    }

    /// The entry `id` of this WebSocket, unless a newer registration took the id over.
    fn owned_entry(&self, session: &Session, id: &str) -> Result<Arc<AgentEntry>, Refused> {
        session
            .owned(id)
            .filter(|e| !e.is_replaced())
            .ok_or(Refused::from(codes::FORBIDDEN))
    }

    /// Liveness in memory only; an agent the sweep made `idle` (or `offline` while its
    /// WebSocket stayed open) is `online` again, a status the agent chose is kept.
    async fn heartbeat(&self, session: &mut Session, id: &str) -> Result<HeartbeatAck, Refused> {
        let entry = self.owned_entry(session, id)?;
        let now = self.now_ms();
        self.directory.touch(&entry, now);
        if matches!(entry.status(), Status::Idle | Status::Offline) {
            // Rare: boxed (see `dispatch`).
            let version = Box::pin(self.writer.write(Write::SetStatus {
                id: id.to_owned(),
                session: entry.session.to_string(),
                status: m2m_proto::hub::status::ONLINE.to_owned(),
                last_seen: Some(now),
            }))
            .await?
            .ok_or(Refused::from(codes::AGENT_NOT_FOUND))?;
            self.directory
                .set(&entry, version, Some(Status::Online), None, Some(now));
        }
        Ok(HeartbeatAck {
            timestamp: u64::try_from(now).unwrap_or(0),
        })
    }

    async fn set_status(
        &self,
        session: &mut Session,
        id: &str,
        status: Option<String>,
        metadata: Map<String, Value>,
    ) -> Result<m2m_proto::hub::Empty, Refused> {
        let entry = self.owned_entry(session, id)?;
        let status = status.filter(|s| !s.is_empty());
        if status
            .as_ref()
            .is_some_and(|s| s.len() > self.config.limits.max_status_len)
        {
            return Err(codes::STATUS_TOO_LONG.into());
        }
        let current = entry.state();
        let mut merged = (*current.metadata).clone();
        merged.extend(metadata);
        self.check_metadata(&merged)?;
        let new_status = status
            .as_deref()
            .map(Status::from_wire)
            .unwrap_or(current.status);
        let now = self.now_ms();
        let version = self
            .writer
            .write(Write::Update {
                id: id.to_owned(),
                session: entry.session.to_string(),
                status: new_status.as_str().to_owned(),
                metadata: merged.clone(),
                last_seen: now,
            })
            .await?
            .ok_or(Refused::from(codes::AGENT_NOT_FOUND))?;
        self.directory.set(
            &entry,
            version,
            Some(new_status),
            Some(Arc::new(merged)),
            Some(now),
        );
        Ok(m2m_proto::hub::Empty {})
    }

    async fn disconnect(
        &self,
        session: &mut Session,
        id: &str,
    ) -> Result<m2m_proto::hub::Empty, Refused> {
        let entry = self.owned_entry(session, id)?;
        let version = self.write_offline(&entry).await?;
        if let Some(v) = version {
            self.directory
                .set(&entry, v, Some(Status::Offline), None, None);
        }
        session.owned.retain(|e| !Arc::ptr_eq(e, &entry));
        if session.owned.is_empty() {
            self.registered.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(m2m_proto::hub::Empty {})
    }

    async fn write_offline(&self, entry: &AgentEntry) -> Result<Option<i64>, Unavailable> {
        self.writer
            .write(Write::SetStatus {
                id: entry.id.to_string(),
                session: entry.session.to_string(),
                status: m2m_proto::hub::status::OFFLINE.to_owned(),
                last_seen: None,
            })
            .await
    }

    /// The WebSocket closed: its agents are offline at once. If the database cannot take
    /// it now, the mirror says offline anyway and the write is retried until it succeeds.
    pub async fn close_session(&self, session: &mut Session) {
        let owned = std::mem::take(&mut session.owned);
        if owned.is_empty() {
            return;
        }
        self.registered.fetch_sub(1, Ordering::Relaxed);
        for entry in owned {
            if entry.is_retired() {
                // Registered again elsewhere: that registration is not ours to end.
                continue;
            }
            match self.write_offline(&entry).await {
                Ok(Some(v)) => self
                    .directory
                    .set(&entry, v, Some(Status::Offline), None, None),
                Ok(None) => {}
                Err(Unavailable) => {
                    self.directory.force_status(&entry, Status::Offline);
                    self.pending_offline.lock().push(entry);
                }
            }
        }
    }

    /// Retries offline marks that failed while the database was away.
    pub(crate) async fn retry_pending_offline(&self) {
        let pending = std::mem::take(&mut *self.pending_offline.lock());
        for entry in pending {
            // Its WebSocket is closed: offline it stays, whatever an older stored row says
            // meanwhile. A newer registration of the id (2.1) retired this entry, which
            // then ignores this, and the write is conditional on the old registration.
            self.directory.force_status(&entry, Status::Offline);
            match self.write_offline(&entry).await {
                Ok(Some(v)) => self
                    .directory
                    .set(&entry, v, Some(Status::Offline), None, None),
                Ok(None) => {}
                Err(Unavailable) => self.pending_offline.lock().push(entry),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_proto::hub::{AgentRecord, Discovered, Found, FoundAgent, LookedUp, Peer};
    use serde_json::json;

    fn cids() -> Vec<Option<Value>> {
        vec![
            None,
            Some(json!("d1")),
            Some(json!(17)),
            Some(json!(-2.5)),
            Some(Value::Null),
            Some(json!({"z": [1, "é \" \\ 🚀"], "a": null})),
        ]
    }

    fn peer(i: u64) -> Peer {
        let mut metadata = Map::new();
        metadata.insert("n".into(), json!(i));
        metadata.insert("名前".into(), json!("エージェント\u{2028}"));
        Peer {
            id: format!("{i:032x}"),
            address: "127.0.0.1:1".into(),
            capabilities: vec!["chat".into()],
            metadata,
            status: "busy".into(),
            last_seen: i * 1000,
            identity: (i % 2 == 0).then(|| "a2V5".to_owned()),
        }
    }

    #[test]
    fn the_request_budget_refills_and_zero_means_no_limit() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let mut limited = Session::new(ip, 3);
        assert!((0..3).all(|_| limited.take_token(1, 3)));
        // The last refill set ahead: no time passes for the bucket, however slow the test.
        limited.refilled = Instant::now() + Duration::from_secs(3600);
        assert!(!limited.take_token(1, 3), "the burst is spent");
        // Two seconds later at 1/s: two tokens back.
        limited.refilled = Instant::now() - Duration::from_secs(2);
        assert!(limited.take_token(1, 3) && limited.take_token(1, 3));
        let mut unlimited = Session::new(ip, 0);
        assert!((0..100_000).all(|_| unlimited.take_token(0, 0)));
    }

    #[test]
    fn big_and_fractional_correlation_ids_are_echoed_as_written() {
        for cid in [
            "123456789012345678901234567890",
            "-98765432109876543210987",
            "1.50",
            "2E+3",
            "0.1000000000000000055511151231257827",
        ] {
            let request = format!(r#"{{"action":"nope","correlationId": {cid} }}"#);
            let parsed = HubRequest::parse(&request).unwrap().correlation_id;
            let reply = error_text(codes::UNKNOWN_ACTION, parsed);
            assert!(ends_with_float_cid(&reply), "{reply}");
            let exact = exact_correlation_id(&request, reply);
            assert!(
                exact.ends_with(&format!(r#","correlationId":{cid}}}"#)),
                "{exact}"
            );
            let _: Value = serde_json::from_str(&exact).unwrap();
        }
        for reply in [
            error_text("x", Some(json!(17))),
            error_text("x", Some(json!("1.5"))),
            error_text("x", None),
        ] {
            assert!(!ends_with_float_cid(&reply), "{reply}");
        }
    }

    #[test]
    fn hand_written_replies_equal_serde_replies() {
        for n in [0, 1, 3] {
            let peers: Vec<Peer> = (0..n).map(peer).collect();
            let page = JsonPage {
                count: peers.len(),
                json: serde_json::to_string(&peers).unwrap(),
            };
            let found: Vec<FoundAgent> = peers
                .iter()
                .map(|p| FoundAgent {
                    id: p.id.clone(),
                    address: p.address.clone(),
                    capabilities: p.capabilities.clone(),
                    metadata: p.metadata.clone(),
                    identity: p.identity.clone(),
                })
                .collect();
            let found_page = JsonPage {
                count: found.len(),
                json: serde_json::to_string(&found).unwrap(),
            };
            for cid in cids() {
                let (limit, offset) = (100, u64::MAX);
                let mine = ok_text(0, cid.clone(), |out| {
                    push_page(out, &page, |out| {
                        out.push_str(r#","limit":"#);
                        push_u64(out, limit);
                        out.push_str(r#","offset":"#);
                        push_u64(out, offset);
                    })
                });
                let body = Discovered {
                    count: peers.len(),
                    limit: limit as u32,
                    offset,
                    agents: peers.clone(),
                };
                assert_eq!(mine, ok(body, cid.clone()));

                let mine = ok_text(0, cid.clone(), |out| push_page(out, &found_page, |_| {}));
                let body = Found {
                    count: found.len(),
                    agents: found.clone(),
                };
                assert_eq!(mine, ok(body, cid.clone()));
            }
        }
        let p = peer(2);
        let record = AgentRecord {
            id: p.id,
            address: p.address,
            capabilities: p.capabilities,
            metadata: p.metadata,
            status: p.status,
            identity: p.identity,
        };
        for cid in cids() {
            let mine = ok_text(0, cid.clone(), |out| {
                out.push_str(r#""agent":"#);
                out.push_str(&serde_json::to_string(&record).unwrap());
            });
            let body = LookedUp {
                agent: record.clone(),
            };
            assert_eq!(mine, ok(body, cid));
        }
    }
}
