//! The in-memory mirror of the registry, from which `lookup`, `discover`, `find`, `/agents`
//! and `stats` are answered without touching the database.
//!
//! Every stored agent has one [`AgentEntry`]. Its immutable part (id, address,
//! capabilities, identity, registration token) is fixed at register; the mutable part
//! (status, metadata, version) sits behind a small lock, and liveness (`last_seen`) is an
//! atomic so that a heartbeat is a store and nothing more. Changes are applied only when
//! their `version` is newer than the entry's, so an own write, a sweep and the PostgreSQL
//! change feed can arrive in any order.
//!
//! A 2.1 id registers again on every reconnect. A newer registration (another `session`
//! token, a newer version) does not edit the entry: it *replaces* it. The old entry is
//! retired — every later change to it is ignored, so the WebSocket that held it can no
//! longer act for the id — and the WebSocket holding it on this hub (its [`Holder`]) is told
//! to close. That happens the same way whether the newer registration came through this hub
//! or through the change feed of another.
//!
//! Listing order: the original hub orders `discover` by seconds since last seen rounded to
//! whole seconds (most recent first) and, within one second, by table order — which in practice is the order
//! the rows were last written, oldest first (`vectors/hub-transcript-v2.jsonl` shows it).
//! We keep that: a [`Snapshot`] holds the listable agents sorted by (last seen, touch
//! sequence); a discover walks it one second-bucket at a time, newest bucket first, each
//! bucket oldest first. `find` and `/agents` walk it newest first. The snapshot is rebuilt
//! when membership, status or metadata changed (so a register or status is visible to the
//! very next request), and at most once per [`REORDER_AFTER`] when only heartbeats moved
//! agents; results are filtered against the live state, never against the snapshot's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use m2m_proto::hub::{status, AgentCounts};
use parking_lot::{Mutex, RwLock};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};
use std::sync::OnceLock;
use tokio_util::sync::CancellationToken;

use crate::defaults::REORDER_AFTER;
use crate::store::AgentRow;

/// An agent id as a number: 16 bytes, printed as 32 lowercase hex characters.
pub type AgentKey = u128;

/// Parses an id as the hub makes them (32 lowercase hex). Anything else names no agent.
pub fn parse_id(s: &str) -> Option<AgentKey> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// An agent's status; the three the hub assigns are not allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `online`.
    Online,
    /// `idle`.
    Idle,
    /// `offline`.
    Offline,
    /// A status the agent chose (`busy`, …).
    Other(Box<str>),
}

impl Status {
    /// From the wire/database string.
    pub fn from_wire(s: &str) -> Status {
        match s {
            status::ONLINE => Status::Online,
            status::IDLE => Status::Idle,
            status::OFFLINE => Status::Offline,
            other => Status::Other(other.into()),
        }
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Online => status::ONLINE,
            Status::Idle => status::IDLE,
            Status::Offline => status::OFFLINE,
            Status::Other(s) => s,
        }
    }

    fn slot(&self) -> usize {
        match self {
            Status::Online => 0,
            Status::Idle => 1,
            Status::Offline => 2,
            Status::Other(_) => 3,
        }
    }
}

/// The mutable part of an agent.
#[derive(Debug, Clone)]
pub struct EntryState {
    /// Current status.
    pub status: Status,
    /// Current metadata (shared with replies being written).
    pub metadata: Arc<Map<String, Value>>,
    /// Version of the last applied change.
    pub version: i64,
    /// No longer mirrored (see [`Retired`]): changes are ignored.
    pub retired: Option<Retired>,
    /// The record's JSON text up to its metadata, `{"id":…,"address":…,"capabilities":[…],
    /// "metadata":{…}` (no closing brace): what replies share and what does not change
    /// with status or time. Built on first use, dropped when the metadata changes.
    base: Option<Arc<str>>,
}

impl EntryState {
    fn new(status: Status, metadata: Arc<Map<String, Value>>, version: i64) -> EntryState {
        EntryState {
            status,
            metadata,
            version,
            retired: None,
            base: None,
        }
    }

    /// Replaces the metadata (and forgets the text made from the old one).
    fn set_metadata(&mut self, metadata: Arc<Map<String, Value>>) {
        self.metadata = metadata;
        self.base = None;
    }
}

/// Why an entry left the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// A newer registration of the same id replaced it.
    Replaced,
    /// Purged from the registry.
    Removed,
}

/// The WebSocket on this hub that registered an entry.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Which WebSocket (unique within this hub).
    pub serial: u64,
    /// Cancelled when a newer registration of the id replaces the entry.
    pub evict: CancellationToken,
}

/// One agent in memory.
#[derive(Debug)]
pub struct AgentEntry {
    /// Numeric id.
    pub key: AgentKey,
    /// Hex id.
    pub id: Box<str>,
    /// `host:port`.
    pub address: Box<str>,
    /// Capabilities.
    pub capabilities: Box<[String]>,
    /// 2.1 identity key.
    pub identity: Option<Box<str>>,
    /// Token of the registration this entry mirrors.
    pub token: Box<str>,
    /// The record's JSON text after `status`/`lastSeen`: `,"identity":"…"}` or `}`.
    tail: Cow<'static, str>,
    /// The local WebSocket holding the registration, if it was made through this hub.
    holder: OnceLock<Holder>,
    last_seen: AtomicI64,
    seq: AtomicU64,
    dirty: AtomicBool,
    state: Mutex<EntryState>,
}

impl AgentEntry {
    /// Last seen, ms since the epoch.
    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Acquire)
    }

    /// A copy of the mutable part.
    pub fn state(&self) -> EntryState {
        self.state.lock().clone()
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.state.lock().status.clone()
    }

    /// Whether the entry left the directory (replaced or purged).
    pub fn is_retired(&self) -> bool {
        self.state.lock().retired.is_some()
    }

    /// Whether a newer registration of the id replaced this entry.
    pub fn is_replaced(&self) -> bool {
        self.state.lock().retired == Some(Retired::Replaced)
    }

    /// The cached [`EntryState::base`] text, built if missing.
    fn base<'s>(&self, st: &'s mut EntryState) -> &'s str {
        st.base.get_or_insert_with(|| {
            #[derive(serde::Serialize)]
            struct Base<'a> {
                id: &'a str,
                address: &'a str,
                capabilities: &'a [String],
                metadata: &'a Map<String, Value>,
            }
            let mut text = serde_json::to_string(&Base {
                id: &self.id,
                address: &self.address,
                capabilities: &self.capabilities,
                metadata: &st.metadata,
            })
            .unwrap_or_else(|_| String::from("{}"));
            // Serializing these types cannot fail; the object stays open for more fields.
            text.pop();
            Arc::from(text)
        })
    }

    /// Appends the entry as `discover` lists it ([`m2m_proto::hub::Peer`]) with `lastSeen` =
    /// `last_seen` (whole seconds), from a locked state.
    fn write_peer(&self, st: &mut EntryState, last_seen: u64, out: &mut String) {
        out.push_str(self.base(st));
        out.push_str(",\"status\":");
        push_json_str(out, st.status.as_str());
        out.push_str(",\"lastSeen\":");
        push_u64(out, last_seen);
        out.push_str(&self.tail);
    }

    /// Appends the entry as `lookup` returns it ([`m2m_proto::hub::AgentRecord`]).
    pub fn write_record(&self, out: &mut String) {
        let mut st = self.state.lock();
        out.push_str(self.base(&mut st));
        out.push_str(",\"status\":");
        push_json_str(out, st.status.as_str());
        out.push_str(&self.tail);
    }

    /// Appends the entry as `find` lists it ([`m2m_proto::hub::FoundAgent`]), from a locked state.
    fn write_found(&self, st: &mut EntryState, out: &mut String) {
        out.push_str(self.base(st));
        out.push_str(&self.tail);
    }

    /// The entry as `lookup` returns it, through serde (tests compare the text with it).
    #[cfg(test)]
    pub fn record(&self) -> m2m_proto::hub::AgentRecord {
        let st = self.state();
        m2m_proto::hub::AgentRecord {
            id: self.id.to_string(),
            address: self.address.to_string(),
            capabilities: self.capabilities.to_vec(),
            metadata: (*st.metadata).clone(),
            status: st.status.as_str().to_owned(),
            identity: self.identity.as_deref().map(str::to_owned),
        }
    }
}

/// Seconds from `last_seen` to `now`, rounded to the nearest whole second (never
/// negative): the original computes `EXTRACT(EPOCH FROM NOW() - last_seen)::int`, and a
/// cast to `int` rounds.
pub fn secs_since(now: i64, last_seen: i64) -> u64 {
    u64::try_from((now.saturating_sub(last_seen).max(0) + 500) / 1000).unwrap_or(0)
}

/// Appends `n` in decimal (as serde_json writes integers).
pub(crate) fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
fn push_json_str(out: &mut String, s: &str) {
    match s {
        status::ONLINE => out.push_str("\"online\""),
        status::IDLE => out.push_str("\"idle\""),
        status::OFFLINE => out.push_str("\"offline\""),
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

/// The `,"identity":"…"}` or `}` that ends an entry's record.
fn record_tail(identity: Option<&str>) -> Cow<'static, str> {
    match identity {
        None => Cow::Borrowed("}"),
        Some(key) => {
            let mut tail = String::from(",\"identity\":");
            push_json_str(&mut tail, key);
            tail.push('}');
            Cow::Owned(tail)
        }
    }
}

/// A page of records as a JSON array, written without serde from each entry's cached text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPage {
    /// Records in the page.
    pub count: usize,
    /// `[…]`.
    pub json: String,
}

impl JsonPage {
    fn new() -> JsonPage {
        JsonPage {
            count: 0,
            json: String::from("["),
        }
    }

    /// Starts the next record.
    fn next(&mut self) -> &mut String {
        if self.count > 0 {
            self.json.push(',');
        }
        self.count += 1;
        &mut self.json
    }

    fn finish(mut self) -> JsonPage {
        self.json.push(']');
        self
    }
}

/// A `/agents` item, serialized exactly like [`m2m_proto::hub::Peer`] without copying the entry (a
/// test pins the equivalence).
#[derive(Debug, Clone)]
pub struct PeerView {
    entry: Arc<AgentEntry>,
    status: Status,
    metadata: Arc<Map<String, Value>>,
    last_seen: u64,
}

impl Serialize for PeerView {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            id: &'a str,
            address: &'a str,
            capabilities: &'a [String],
            metadata: &'a Map<String, Value>,
            status: &'a str,
            last_seen: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a str>,
        }
        Out {
            id: &self.entry.id,
            address: &self.entry.address,
            capabilities: &self.entry.capabilities,
            metadata: &self.metadata,
            status: self.status.as_str(),
            last_seen: self.last_seen,
            identity: self.entry.identity.as_deref(),
        }
        .serialize(s)
    }
}

/// `GET /agents` body, field for field [`m2m_proto::hub::AgentsPage`].
#[derive(Debug, serde::Serialize)]
pub struct AgentsPageView {
    /// Agents in the page.
    pub count: usize,
    /// All non-offline agents.
    pub total: u64,
    /// Page size.
    pub limit: u32,
    /// Page start.
    pub offset: u64,
    /// The page.
    pub agents: Vec<PeerView>,
}

#[derive(Debug)]
struct Item {
    last_seen: i64,
    seq: u64,
    entry: Arc<AgentEntry>,
}

/// Listable agents in (last seen, touch sequence) order, with a capability index.
#[derive(Debug)]
struct Snapshot {
    generation: u64,
    touches: u64,
    built: Instant,
    items: Vec<Item>,
    by_capability: HashMap<String, Vec<u32>>,
}

/// What a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Leave this agent out.
    pub exclude: Option<&'a str>,
    /// Only agents with any of these (empty: all).
    pub capabilities: &'a [String],
    /// Only agents with this status.
    pub status: Option<&'a str>,
    /// Page size.
    pub limit: usize,
    /// Page start.
    pub offset: u64,
}

/// The mirror.
#[derive(Debug)]
pub struct Directory {
    agents: RwLock<HashMap<AgentKey, Arc<AgentEntry>>>,
    counts: [AtomicI64; 4],
    generation: AtomicU64,
    touches: AtomicU64,
    seq: AtomicU64,
    snapshot: RwLock<Arc<Snapshot>>,
    rebuild: Mutex<()>,
    dirty: Mutex<Vec<Arc<AgentEntry>>>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            agents: RwLock::default(),
            counts: Default::default(),
            generation: AtomicU64::new(1),
            touches: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            snapshot: RwLock::new(Arc::new(Snapshot {
                generation: 0,
                touches: 0,
                built: Instant::now(),
                items: Vec::new(),
                by_capability: HashMap::new(),
            })),
            rebuild: Mutex::new(()),
            dirty: Mutex::new(Vec::new()),
        }
    }
}

impl Directory {
    /// One agent.
    pub fn get(&self, key: AgentKey) -> Option<Arc<AgentEntry>> {
        self.agents.read().get(&key).cloned()
    }

    /// Every mirrored agent, offline ones included (the dashboard's query view).
    pub fn entries(&self) -> Vec<Arc<AgentEntry>> {
        self.agents.read().values().cloned().collect()
    }

    /// Moves whenever membership, a status or metadata changed (not on heartbeats): the
    /// dashboard polls it to know when to tell its pages.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn count(&self, st: &Status, delta: i64) {
        self.counts[st.slot()].fetch_add(delta, Ordering::Relaxed);
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Inserts a row, or applies it to the existing entry when it is newer; a newer
    /// registration of the id replaces the entry (see the module doc). Returns the entry
    /// that now mirrors the id — the caller can tell from its `session` whether that is
    /// this row's registration or a newer one. Rows with malformed ids (written by
    /// something else) are skipped.
    pub fn upsert(&self, row: &AgentRow) -> Option<Arc<AgentEntry>> {
        self.upsert_held(row, None)
    }

    /// [`Directory::upsert`] of a registration made through this hub: the entry remembers
    /// the WebSocket holding it, so that a newer registration can close that WebSocket.
    pub fn register(&self, row: &AgentRow, holder: Holder) -> Option<Arc<AgentEntry>> {
        self.upsert_held(row, Some(holder))
    }

    fn upsert_held(&self, row: &AgentRow, holder: Option<Holder>) -> Option<Arc<AgentEntry>> {
        let key = parse_id(&row.id)?;
        if let Some(existing) = self.get(key) {
            if *existing.token == *row.token {
                return Some(self.apply_held(existing, row, holder));
            }
        }
        let fresh = Arc::new(AgentEntry {
            key,
            id: row.id.as_str().into(),
            address: row.address.as_str().into(),
            capabilities: row.capabilities.clone().into_boxed_slice(),
            identity: row.identity.as_deref().map(Into::into),
            token: row.token.as_str().into(),
            tail: record_tail(row.identity.as_deref()),
            holder: OnceLock::new(),
            last_seen: AtomicI64::new(row.last_seen),
            seq: AtomicU64::new(self.next_seq()),
            dirty: AtomicBool::new(false),
            state: Mutex::new(EntryState::new(
                Status::from_wire(&row.status),
                Arc::new(row.metadata.clone()),
                row.version,
            )),
        });
        let mut agents = self.agents.write();
        let Some(existing) = agents.get(&key).cloned() else {
            if let Some(h) = holder {
                let _ = fresh.holder.set(h);
            }
            self.count(&Status::from_wire(&row.status), 1);
            agents.insert(key, fresh.clone());
            drop(agents);
            self.changed();
            return Some(fresh);
        };
        if *existing.token == *row.token {
            // Lost a race with another inserter of this registration: apply to theirs.
            drop(agents);
            return Some(self.apply_held(existing, row, holder));
        }
        let mut old = existing.state.lock();
        if row.version <= old.version {
            // An older registration than the one mirrored: the newer one stays.
            return Some(existing.clone());
        }
        old.retired = Some(Retired::Replaced);
        self.count(&old.status, -1);
        drop(old);
        let new_serial = holder.as_ref().map(|h| h.serial);
        if let Some(h) = holder {
            let _ = fresh.holder.set(h);
        }
        self.count(&Status::from_wire(&row.status), 1);
        agents.insert(key, fresh.clone());
        drop(agents);
        if let Some(h) = existing.holder.get() {
            // The same WebSocket registering its id again keeps its connection.
            if Some(h.serial) != new_serial {
                h.evict.cancel();
            }
        }
        self.changed();
        Some(fresh)
    }

    fn apply_held(
        &self,
        entry: Arc<AgentEntry>,
        row: &AgentRow,
        holder: Option<Holder>,
    ) -> Arc<AgentEntry> {
        self.apply(&entry, row);
        if let Some(h) = holder {
            // The change feed brought our own registration before we mirrored it.
            let _ = entry.holder.set(h);
        }
        entry
    }

    /// Applies a stored row to an entry if it is newer.
    fn apply(&self, entry: &AgentEntry, row: &AgentRow) {
        entry.last_seen.fetch_max(row.last_seen, Ordering::AcqRel);
        let mut st = entry.state.lock();
        if row.version <= st.version || st.retired.is_some() {
            return;
        }
        st.version = row.version;
        let new_status = Status::from_wire(&row.status);
        let mut changed = false;
        if new_status != st.status {
            self.count(&st.status, -1);
            self.count(&new_status, 1);
            st.status = new_status;
            changed = true;
        }
        if *st.metadata != row.metadata {
            st.set_metadata(Arc::new(row.metadata.clone()));
            changed = true;
        }
        drop(st);
        if changed {
            entry.seq.store(self.next_seq(), Ordering::Relaxed);
            self.changed();
        }
    }

    /// Applies a change made through this hub (or by a sweep) if `version` is newer than
    /// what the entry holds. `touched`: the change counts as a sighting (moves the agent in
    /// the listing order, like the original's `last_seen = NOW()`).
    pub fn set(
        &self,
        entry: &AgentEntry,
        version: i64,
        status: Option<Status>,
        metadata: Option<Arc<Map<String, Value>>>,
        touched_at: Option<i64>,
    ) {
        if let Some(at) = touched_at {
            entry.last_seen.fetch_max(at, Ordering::AcqRel);
        }
        let mut st = entry.state.lock();
        if version <= st.version || st.retired.is_some() {
            return;
        }
        st.version = version;
        if let Some(new) = status {
            if new != st.status {
                self.count(&st.status, -1);
                self.count(&new, 1);
                st.status = new;
            }
        }
        if let Some(m) = metadata {
            st.set_metadata(m);
        }
        drop(st);
        if touched_at.is_some() {
            entry.seq.store(self.next_seq(), Ordering::Relaxed);
        }
        self.changed();
    }

    /// Sets a status without a registry version (the write is pending); the next stored
    /// change of the row supersedes it.
    pub fn force_status(&self, entry: &AgentEntry, status: Status) {
        let mut st = entry.state.lock();
        if st.status != status && st.retired.is_none() {
            self.count(&st.status, -1);
            self.count(&status, 1);
            st.status = status;
            drop(st);
            self.changed();
        }
    }

    /// Applies a status change by id (sweep, release, feed).
    pub fn set_status(&self, id: &str, status: &str, version: i64) {
        if let Some(entry) = parse_id(id).and_then(|k| self.get(k)) {
            self.set(&entry, version, Some(Status::from_wire(status)), None, None);
        }
    }

    /// A heartbeat: liveness only, in memory; the flusher writes it later.
    pub fn touch(&self, entry: &Arc<AgentEntry>, now: i64) {
        entry.last_seen.fetch_max(now, Ordering::SeqCst);
        entry.seq.store(self.next_seq(), Ordering::Relaxed);
        self.touches.fetch_add(1, Ordering::Relaxed);
        if !entry.dirty.swap(true, Ordering::SeqCst) {
            self.dirty.lock().push(entry.clone());
        }
    }

    /// Takes the liveness to write: `(id, last_seen)` of every agent touched since the last
    /// call. Give them back with [`Directory::requeue`] if the write fails.
    pub fn take_dirty(&self) -> Vec<(Arc<AgentEntry>, i64)> {
        let taken = std::mem::take(&mut *self.dirty.lock());
        taken
            .into_iter()
            .map(|e| {
                e.dirty.store(false, Ordering::SeqCst);
                let at = e.last_seen.load(Ordering::SeqCst);
                (e, at)
            })
            .collect()
    }

    /// Puts back liveness whose write failed.
    pub fn requeue(&self, entries: Vec<Arc<AgentEntry>>) {
        let mut dirty = self.dirty.lock();
        for e in entries {
            if !e.dirty.swap(true, Ordering::SeqCst) {
                dirty.push(e);
            }
        }
    }

    /// Forgets an agent (purged from the registry).
    pub fn remove(&self, key: AgentKey) {
        if let Some(entry) = self.agents.write().remove(&key) {
            let mut st = entry.state.lock();
            st.retired = Some(Retired::Removed);
            self.count(&st.status, -1);
            drop(st);
            self.changed();
        }
    }

    /// Forgets `offline` agents last seen before `before`, 2.0 ones (no identity) before
    /// `anonymous_before` already (every hub applies the same retention rule, so all
    /// mirrors drop what the registry's purge deleted).
    pub fn purge_offline(&self, before: i64, anonymous_before: i64) -> usize {
        let victims: Vec<AgentKey> = self
            .agents
            .read()
            .values()
            .filter(|e| {
                let cutoff = if e.identity.is_none() {
                    anonymous_before.max(before)
                } else {
                    before
                };
                e.last_seen() < cutoff && e.state.lock().status == Status::Offline
            })
            .map(|e| e.key)
            .collect();
        for key in &victims {
            self.remove(*key);
        }
        victims.len()
    }

    /// Counts for `stats`.
    pub fn counts(&self) -> AgentCounts {
        let get = |i: usize| u64::try_from(self.counts[i].load(Ordering::Relaxed)).unwrap_or(0);
        let (online, idle, offline, other) = (get(0), get(1), get(2), get(3));
        AgentCounts {
            total: online + idle + offline + other,
            online,
            idle,
            offline,
        }
    }

    /// Agents that are not `offline`.
    pub fn listable(&self) -> u64 {
        let c = self.counts();
        c.total - c.offline
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let current = self.snapshot.read().clone();
        let generation = self.generation.load(Ordering::Acquire);
        let touches = self.touches.load(Ordering::Relaxed);
        if current.generation == generation
            && (current.touches == touches || current.built.elapsed() < REORDER_AFTER)
        {
            return current;
        }
        let _guard = if current.generation == generation {
            // Only the order is stale: one rebuild at a time, the others use the old one.
            match self.rebuild.try_lock() {
                Some(g) => g,
                None => return current,
            }
        } else {
            self.rebuild.lock()
        };
        let latest = self.snapshot.read().clone();
        if latest.generation == self.generation.load(Ordering::Acquire)
            && latest.built.elapsed() < REORDER_AFTER
        {
            return latest;
        }
        let fresh = Arc::new(self.build_snapshot());
        *self.snapshot.write() = fresh.clone();
        fresh
    }

    fn build_snapshot(&self) -> Snapshot {
        // Read the counters first: a change after this makes the next reader rebuild.
        let generation = self.generation.load(Ordering::Acquire);
        let touches = self.touches.load(Ordering::Relaxed);
        let mut items: Vec<Item> = self
            .agents
            .read()
            .values()
            .filter(|e| e.state.lock().status != Status::Offline)
            .map(|e| Item {
                last_seen: e.last_seen(),
                seq: e.seq.load(Ordering::Relaxed),
                entry: e.clone(),
            })
            .collect();
        items.sort_unstable_by_key(|i| (i.last_seen, i.seq));
        let mut by_capability: HashMap<String, Vec<u32>> = HashMap::new();
        for (pos, item) in items.iter().enumerate() {
            let pos = u32::try_from(pos).unwrap_or(u32::MAX);
            for cap in item.entry.capabilities.iter() {
                let list = by_capability.entry(cap.clone()).or_default();
                // An agent listing a capability twice is indexed once.
                if list.last() != Some(&pos) {
                    list.push(pos);
                }
            }
        }
        Snapshot {
            generation,
            touches,
            built: Instant::now(),
            items,
            by_capability,
        }
    }

    /// `discover`: most recently seen (whole seconds) first, as the original. Calls `take`
    /// with each agent of the page (locked), in order.
    fn discover_with(
        &self,
        now: i64,
        f: &Filter<'_>,
        mut take: impl FnMut(&Arc<AgentEntry>, &mut EntryState),
    ) {
        if f.limit == 0 {
            return;
        }
        let snap = self.snapshot();
        let positions = capability_positions(&snap, f.capabilities);
        let exclude = Exclude::new(f.exclude);
        let (mut skip, mut taken) = (f.offset, 0);
        let mut visit = |item: &Item| -> bool {
            if let Some(mut st) = admit(item, f, exclude) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    take(&item.entry, &mut st);
                    taken += 1;
                }
            }
            taken < f.limit
        };
        match positions {
            Some(p) => walk_buckets(p.len(), |j| &snap.items[p[j] as usize], now, &mut visit),
            None => walk_buckets(snap.items.len(), |j| &snap.items[j], now, &mut visit),
        }
    }

    /// `discover` as the reply's `agents` array ([`m2m_proto::hub::Peer`] items).
    pub fn discover(&self, now: i64, f: &Filter<'_>) -> JsonPage {
        let mut page = JsonPage::new();
        self.discover_with(now, f, |entry, st| {
            let secs = secs_since(now, entry.last_seen());
            entry.write_peer(st, secs, page.next());
        });
        page.finish()
    }

    /// `discover` as views (tests compare them with the text).
    #[cfg(test)]
    fn discover_views(&self, now: i64, f: &Filter<'_>) -> Vec<PeerView> {
        let mut out = Vec::new();
        self.discover_with(now, f, |entry, st| out.push(PeerView::new(now, entry, st)));
        out
    }

    /// `/agents`: newest first; filters as [`Filter`].
    pub fn list(&self, now: i64, f: &Filter<'_>) -> Vec<PeerView> {
        let snap = self.snapshot();
        let positions = capability_positions(&snap, f.capabilities);
        let exclude = Exclude::new(f.exclude);
        let mut out = Vec::new();
        let mut skip = f.offset;
        let mut visit = |item: &Item| -> bool {
            if out.len() >= f.limit {
                return false;
            }
            if let Some(st) = admit(item, f, exclude) {
                if skip > 0 {
                    skip -= 1;
                } else {
                    out.push(PeerView::new(now, &item.entry, &st));
                }
            }
            out.len() < f.limit
        };
        match positions {
            Some(p) => {
                for &pos in p.iter().rev() {
                    if !visit(&snap.items[pos as usize]) {
                        break;
                    }
                }
            }
            None => {
                for item in snap.items.iter().rev() {
                    if !visit(item) {
                        break;
                    }
                }
            }
        }
        out
    }

    /// `find`: online agents with `capability`, newest first. Calls `take` with each agent
    /// of the page (locked), in order.
    fn find_with(
        &self,
        capability: &str,
        limit: usize,
        offset: u64,
        mut take: impl FnMut(&Arc<AgentEntry>, &mut EntryState),
    ) {
        let snap = self.snapshot();
        let Some(list) = snap.by_capability.get(capability) else {
            return;
        };
        let (mut skip, mut taken) = (offset, 0);
        for &pos in list.iter().rev() {
            if taken >= limit {
                break;
            }
            let entry = &snap.items[pos as usize].entry;
            let mut st = entry.state.lock();
            if st.status != Status::Online {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            take(entry, &mut st);
            taken += 1;
        }
    }

    /// `find` as the reply's `agents` array ([`m2m_proto::hub::FoundAgent`] items).
    pub fn find(&self, capability: &str, limit: usize, offset: u64) -> JsonPage {
        let mut page = JsonPage::new();
        self.find_with(capability, limit, offset, |entry, st| {
            entry.write_found(st, page.next());
        });
        page.finish()
    }

    /// `find` as the ids found (tests).
    #[cfg(test)]
    fn find_keys(&self, capability: &str, limit: usize, offset: u64) -> Vec<AgentKey> {
        let mut out = Vec::new();
        self.find_with(capability, limit, offset, |entry, _| out.push(entry.key));
        out
    }
}

/// The agent a listing leaves out, as a number: an id the hub cannot have made names no
/// agent, so it excludes none.
#[derive(Debug, Clone, Copy)]
struct Exclude(Option<AgentKey>);

impl Exclude {
    fn new(id: Option<&str>) -> Exclude {
        Exclude(id.and_then(parse_id))
    }
}

/// Positions in the snapshot of agents with any of `caps` (sorted), or `None` for all.
fn capability_positions<'s>(snap: &'s Snapshot, caps: &[String]) -> Option<Cow<'s, [u32]>> {
    match caps {
        [] => None,
        [one] => Some(Cow::Borrowed(
            snap.by_capability.get(one).map_or(&[][..], Vec::as_slice),
        )),
        many => {
            let mut all: Vec<u32> = many
                .iter()
                .filter_map(|c| snap.by_capability.get(c))
                .flatten()
                .copied()
                .collect();
            all.sort_unstable();
            all.dedup();
            Some(Cow::Owned(all))
        }
    }
}

/// The item's live state, locked, if it passes the filter.
fn admit<'i>(
    item: &'i Item,
    f: &Filter<'_>,
    exclude: Exclude,
) -> Option<parking_lot::MutexGuard<'i, EntryState>> {
    let entry = &item.entry;
    if exclude.0 == Some(entry.key) {
        return None;
    }
    let st = entry.state.lock();
    if st.status == Status::Offline {
        return None;
    }
    if let Some(want) = f.status {
        if st.status.as_str() != want {
            return None;
        }
    }
    Some(st)
}

impl PeerView {
    fn new(now: i64, entry: &Arc<AgentEntry>, st: &EntryState) -> PeerView {
        PeerView {
            entry: entry.clone(),
            status: st.status.clone(),
            metadata: st.metadata.clone(),
            last_seen: secs_since(now, entry.last_seen()),
        }
    }
}

/// Visits items (sorted by last seen, ascending) newest second-bucket first, each bucket
/// in ascending order, until `visit` returns false.
fn walk_buckets<'s>(
    len: usize,
    at: impl Fn(usize) -> &'s Item,
    now: i64,
    visit: &mut impl FnMut(&Item) -> bool,
) {
    let mut hi = len;
    while hi > 0 {
        let secs = secs_since(now, at(hi - 1).last_seen);
        let secs = i64::try_from(secs).unwrap_or(i64::MAX / 2000);
        // Items seen after `floor` round to the same whole second.
        let floor = now.saturating_sub(secs.saturating_mul(1000).saturating_add(500));
        let (mut lo, mut top) = (0, hi);
        while lo < top {
            let mid = lo + (top - lo) / 2;
            if at(mid).last_seen <= floor {
                lo = mid + 1;
            } else {
                top = mid;
            }
        }
        for j in lo..hi {
            if !visit(at(j)) {
                return;
            }
        }
        hi = lo;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_proto::hub as proto;

    fn row(id: u128, last_seen: i64, caps: &[&str], status: &str) -> AgentRow {
        AgentRow {
            id: format!("{id:032x}"),
            address: "127.0.0.1:1".into(),
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            metadata: Map::new(),
            identity: None,
            status: status.into(),
            last_seen,
            created_at: last_seen,
            hub: String::new(),
            token: String::new(),
            version: 1,
        }
    }

    fn ids(views: &[PeerView]) -> Vec<u128> {
        views.iter().map(|v| v.entry.key).collect()
    }

    #[test]
    fn discover_orders_by_whole_seconds_then_oldest_touch_first() {
        let d = Directory::default();
        let now = 100_000;
        d.upsert(&row(1, now - 500, &[], "online"));
        d.upsert(&row(2, now - 300, &[], "online"));
        d.upsert(&row(3, now - 2500, &[], "online"));
        d.upsert(&row(4, now - 1200, &[], "busy"));
        d.upsert(&row(5, now - 100, &[], "offline"));
        let all = Filter {
            limit: 100,
            ..Filter::default()
        };
        // Rounded seconds: 2 → 0 s; 4 (1.2 s) and 1 (0.5 s) → 1 s, older first; 3 → 3 s.
        assert_eq!(ids(&d.discover_views(now, &all)), vec![2, 4, 1, 3]);
        assert_eq!(ids(&d.list(now, &all)), vec![2, 1, 4, 3]);
        let page = Filter {
            limit: 2,
            offset: 1,
            ..Filter::default()
        };
        assert_eq!(ids(&d.discover_views(now, &page)), vec![4, 1]);
        let busy = Filter {
            status: Some("busy"),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(ids(&d.discover_views(now, &busy)), vec![4]);
    }

    #[test]
    fn capability_filters_match_any() {
        let d = Directory::default();
        d.upsert(&row(1, 1000, &["a", "b"], "online"));
        d.upsert(&row(2, 2000, &["b"], "online"));
        d.upsert(&row(3, 3000, &["c"], "idle"));
        let caps = vec!["a".to_string(), "c".to_string()];
        let f = Filter {
            capabilities: &caps,
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(ids(&d.discover_views(3000, &f)), vec![3, 1]);
        assert_eq!(d.find_keys("b", 10, 0), vec![2, 1]);
        assert!(
            d.find_keys("c", 10, 0).is_empty(),
            "find lists online agents only"
        );
        // One capability, listed twice by an agent, and `/agents` order.
        d.upsert(&row(4, 2500, &["b", "b"], "online"));
        let b = vec!["b".to_string()];
        let f = Filter {
            capabilities: &b,
            limit: 10,
            ..Filter::default()
        };
        // 2 and 4 round to 1 s (older first), 1 to 2 s.
        assert_eq!(ids(&d.discover_views(3000, &f)), vec![2, 4, 1]);
        assert_eq!(ids(&d.list(3000, &f)), vec![4, 2, 1]);
        assert_eq!(d.find_keys("b", 10, 0), vec![4, 2, 1]);
        let f = Filter {
            capabilities: &caps,
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(ids(&d.list(3000, &f)), vec![3, 1]);
    }

    #[test]
    fn newer_versions_win_and_counts_follow() {
        let d = Directory::default();
        let e = d.upsert(&row(7, 10, &[], "online")).unwrap();
        d.set(&e, 5, Some(Status::Idle), None, None);
        d.set(&e, 3, Some(Status::Online), None, None);
        assert_eq!(e.status(), Status::Idle);
        let c = d.counts();
        assert_eq!((c.total, c.online, c.idle), (1, 0, 1));
        d.set_status(&e.id, "offline", 6);
        assert_eq!(d.purge_offline(11, 11), 1);
        assert_eq!(d.counts().total, 0);
    }

    #[test]
    fn a_newer_registration_replaces_the_entry_and_evicts_its_holder() {
        let d = Directory::default();
        let holder = |serial| Holder {
            serial,
            evict: CancellationToken::new(),
        };
        let mut first = row(3, 10, &["a"], "online");
        first.token = "s1".into();
        let (h1, h2) = (holder(1), holder(2));
        let old = d.register(&first, h1.clone()).unwrap();

        // An older registration arriving late (feed) changes nothing.
        let mut stale = row(3, 10, &["z"], "online");
        stale.token = "s0".into();
        stale.version = 0;
        assert!(Arc::ptr_eq(&d.upsert(&stale).unwrap(), &old));

        let mut second = row(3, 20, &["b"], "busy");
        second.token = "s2".into();
        second.version = 2;
        let new = d.register(&second, h2.clone()).unwrap();
        assert!(!Arc::ptr_eq(&old, &new));
        assert!(old.is_replaced() && !new.is_retired());
        assert!(
            h1.evict.is_cancelled(),
            "the older WebSocket is told to close"
        );
        assert!(!h2.evict.is_cancelled());
        assert_eq!(&*new.capabilities, ["b".to_string()]);
        // The old WebSocket's offline mark reaches nothing.
        d.set(&old, 9, Some(Status::Offline), None, None);
        d.force_status(&old, Status::Offline);
        assert_eq!(new.status(), Status::Other("busy".into()));
        let c = d.counts();
        assert_eq!((c.total, c.online, c.offline), (1, 0, 0));

        // The same WebSocket registering again is not evicted.
        let mut third = row(3, 30, &["b"], "online");
        third.token = "s3".into();
        third.version = 3;
        let again = d.register(&third, holder(2)).unwrap();
        assert!(new.is_replaced() && !again.is_retired());
        assert!(!h2.evict.is_cancelled());
        assert_eq!(d.counts().online, 1);
    }

    /// What serde makes of the proto types for the page `discover_views` selects: the
    /// reference the cached text must equal byte for byte.
    fn serde_discover(d: &Directory, now: i64, f: &Filter<'_>) -> (usize, String) {
        let peers: Vec<proto::Peer> = d
            .discover_views(now, f)
            .iter()
            .map(|v| {
                let r = v.entry.record();
                proto::Peer {
                    id: r.id,
                    address: r.address,
                    capabilities: r.capabilities,
                    metadata: r.metadata,
                    status: r.status,
                    last_seen: secs_since(now, v.entry.last_seen()),
                    identity: r.identity,
                }
            })
            .collect();
        (peers.len(), serde_json::to_string(&peers).unwrap())
    }

    fn serde_find(d: &Directory, capability: &str) -> (usize, String) {
        let found: Vec<proto::FoundAgent> = d
            .find_keys(capability, 100, 0)
            .into_iter()
            .map(|k| {
                let r = d.get(k).unwrap().record();
                proto::FoundAgent {
                    id: r.id,
                    address: r.address,
                    capabilities: r.capabilities,
                    metadata: r.metadata,
                    identity: r.identity,
                }
            })
            .collect();
        (found.len(), serde_json::to_string(&found).unwrap())
    }

    fn written_record(e: &AgentEntry) -> String {
        let mut out = String::new();
        e.write_record(&mut out);
        out
    }

    /// Every listing written from cached text equals serde's output of the proto types.
    fn assert_text_matches_serde(d: &Directory, now: i64) {
        let f = Filter {
            limit: 100,
            ..Filter::default()
        };
        let page = d.discover(now, &f);
        assert_eq!((page.count, page.json), serde_discover(d, now, &f));
        for cap in ["chat", "other"] {
            let page = d.find(cap, 100, 0);
            assert_eq!((page.count, page.json), serde_find(d, cap));
        }
        for view in d.discover_views(now, &f) {
            assert_eq!(
                written_record(&view.entry),
                serde_json::to_string(&view.entry.record()).unwrap()
            );
            // `/agents` items too.
            let text = serde_json::to_string(&view).unwrap();
            let peer: proto::Peer = serde_json::from_str(&text).unwrap();
            assert_eq!(serde_json::to_string(&peer).unwrap(), text);
        }
    }

    #[test]
    fn views_serialize_exactly_like_the_proto_types() {
        let d = Directory::default();
        let mut r = row(9, 1000, &["chat"], "online");
        r.metadata.insert("name".into(), Value::from("alpha"));
        d.upsert(&r);
        let mut r = row(
            10,
            900,
            &["chat", "other", "with \"quotes\" \\ and \u{1}"],
            "online",
        );
        r.identity = Some("aWRlbnRpdHkga2V5IGJhc2U2NA+/=".into());
        r.address = "[::1]:9000".into();
        d.upsert(&r);
        assert_text_matches_serde(&d, 1000);
        assert_text_matches_serde(&d, 1_000_000_000_000);
    }

    #[test]
    fn cached_text_follows_status_metadata_and_last_seen() {
        let d = Directory::default();
        let mut r = row(1, 1000, &["chat"], "online");
        r.metadata.insert("n".into(), Value::from(1));
        let plain = d.upsert(&r).unwrap();
        let mut r = row(2, 1000, &["chat", "other"], "online");
        r.identity = Some("a2V5".into());
        let keyed = d.upsert(&r).unwrap();
        let now = 5000;
        // First use builds the cache; a second use reads it.
        assert_text_matches_serde(&d, now);
        assert_text_matches_serde(&d, now);

        // Status: hub-assigned and agent-chosen, escaped and unicode.
        d.set(&plain, 2, Some(Status::Other("busy".into())), None, None);
        assert_text_matches_serde(&d, now);
        d.set(&keyed, 2, Some(Status::Idle), None, None);
        d.set(
            &plain,
            3,
            Some(Status::Other("\"weird\"\n\u{7f}ステータス 🚀".into())),
            None,
            None,
        );
        assert_text_matches_serde(&d, now);
        d.force_status(&keyed, Status::Online);
        assert_text_matches_serde(&d, now);

        // Metadata through an own write, with unicode, escapes and nesting.
        let mut m = Map::new();
        m.insert(
            "名前".into(),
            Value::from("エージェント \u{2028} \u{0} \\ \" é 🚀"),
        );
        m.insert(
            "nested".into(),
            serde_json::json!({"a": [1, 2.5, -3, null, true], "b": {"c": "d"}}),
        );
        m.insert("big".into(), Value::from(u64::MAX));
        d.set(&plain, 4, None, Some(Arc::new(m)), Some(now + 2000));
        assert_text_matches_serde(&d, now + 2600);

        // Metadata and status through a stored row (change feed, sweep).
        let mut r = row(2, 1000, &["chat", "other"], "busy");
        r.identity = Some("a2V5".into());
        r.version = 7;
        r.metadata.insert("fresh".into(), Value::from("yes"));
        d.upsert(&r);
        assert_text_matches_serde(&d, now + 2600);
        assert!(written_record(&keyed).contains(r#""metadata":{"fresh":"yes"}"#));

        // lastSeen moves with heartbeats; the text does not need rebuilding for it.
        d.touch(&keyed, now + 9000);
        assert_text_matches_serde(&d, now + 9400);
        assert_text_matches_serde(&d, now + 100_000);

        // Offline agents leave discover, and come back with the right text.
        d.set(&plain, 5, Some(Status::Offline), None, None);
        assert_text_matches_serde(&d, now + 100_000);
        d.set(&plain, 6, Some(Status::Online), None, None);
        assert_text_matches_serde(&d, now + 100_000);
    }

    #[test]
    fn numbers_are_written_like_serde_json() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = String::new();
            push_u64(&mut out, n);
            assert_eq!(out, serde_json::to_string(&n).unwrap());
        }
    }

    #[test]
    fn exclude_and_offset_apply_to_the_text() {
        let d = Directory::default();
        for i in 1..=5 {
            d.upsert(&row(i, 1000 + i as i64 * 10, &["chat"], "online"));
        }
        let me = format!("{:032x}", 3);
        let caps = vec!["chat".to_string()];
        for (exclude, offset, limit) in [
            (Some(me.as_str()), 0, 10),
            (Some(me.as_str()), 1, 2),
            (Some("not-an-id"), 0, 10),
            (None, 4, 10),
            (None, 0, 0),
        ] {
            let f = Filter {
                exclude,
                capabilities: &caps,
                limit,
                offset,
                ..Filter::default()
            };
            let page = d.discover(2000, &f);
            assert_eq!((page.count, page.json), serde_discover(&d, 2000, &f));
        }
        let f = Filter {
            exclude: Some(&me),
            limit: 10,
            ..Filter::default()
        };
        assert_eq!(ids(&d.discover_views(2000, &f)), vec![1, 2, 4, 5]);
    }
}
