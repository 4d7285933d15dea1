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
//! very next request), and at most once per [`crate::defaults::REORDER_AFTER`] when only heartbeats moved
//! agents; results are filtered against the live state, never against the snapshot's.

mod entry;
mod json;
mod listing;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

use m2m_proto::hub::AgentCounts;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use crate::store::AgentRow;

pub use entry::{parse_id, AgentEntry, AgentKey, EntryState, Holder, Retired, Status};
pub(crate) use json::push_u64;
use json::record_tail;
pub use json::{AgentsPageView, JsonPage};
pub use listing::Filter;
use listing::Snapshot;
use m2m_proto::relay::Reachable;

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
            mailbox: row
                .mailbox
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            token: row.token.as_str().into(),
            tail: record_tail(row.identity.as_deref()),
            holder: OnceLock::new(),
            last_seen: AtomicI64::new(row.last_seen),
            seq: AtomicU64::new(self.next_seq()),
            dirty: AtomicBool::new(false),
            state: Mutex::new(
                EntryState::new(
                    Status::from_wire(&row.status),
                    Arc::new(row.metadata.clone()),
                    row.version,
                )
                .with_relay(row.relay.as_deref(), row.reachable.as_deref()),
            ),
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
        let reachable = row.reachable.as_deref().and_then(Reachable::parse);
        if st.relay.as_deref() != row.relay.as_deref() || st.reachable != reachable {
            st.relay = row.relay.as_deref().map(Arc::from);
            st.reachable = reachable;
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
            if new == Status::Offline {
                // As the registry does: an offline agent is attached nowhere.
                st.relay = None;
            }
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

    /// Applies a stored change of the relay fields (docs/RELAY.md "Records") if `version`
    /// is newer than what the entry holds.
    pub fn set_relay(
        &self,
        entry: &AgentEntry,
        version: i64,
        relay: Option<Arc<str>>,
        reachable: Option<Reachable>,
    ) {
        let mut st = entry.state.lock();
        if version <= st.version || st.retired.is_some() {
            return;
        }
        st.version = version;
        st.relay = relay;
        st.reachable = reachable;
        drop(st);
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
    pub fn purge_offline(&self, before: i64, anonymous_before: i64, mailbox_before: i64) -> usize {
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
                let cutoff = if e.mailbox.is_some() {
                    cutoff.min(mailbox_before)
                } else {
                    cutoff
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
}
