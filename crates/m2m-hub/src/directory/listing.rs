//! The listing: a [`Snapshot`] of the listable agents sorted by (last seen, touch
//! sequence) with a capability index, rebuilt when membership, status or metadata changed
//! and at most once per [`REORDER_AFTER`] when only heartbeats moved agents; `discover`
//! walks it one second-bucket at a time, `find` and `/agents` newest first. Results are
//! filtered against the live state, never against the snapshot's.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::defaults::REORDER_AFTER;

use super::entry::{parse_id, secs_since, AgentEntry, AgentKey, EntryState, Status};
use super::json::{JsonPage, PeerView};
use super::Directory;

#[derive(Debug)]
pub(super) struct Item {
    pub(super) last_seen: i64,
    pub(super) seq: u64,
    pub(super) entry: Arc<AgentEntry>,
}

/// Listable agents in (last seen, touch sequence) order, with a capability index.
#[derive(Debug)]
pub(super) struct Snapshot {
    pub(super) generation: u64,
    pub(super) touches: u64,
    pub(super) built: Instant,
    pub(super) items: Vec<Item>,
    pub(super) by_capability: HashMap<String, Vec<u32>>,
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

impl Directory {
    pub(super) fn snapshot(&self) -> Arc<Snapshot> {
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

    pub(super) fn build_snapshot(&self) -> Snapshot {
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
    pub(super) fn discover_with(
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
    pub(super) fn discover_views(&self, now: i64, f: &Filter<'_>) -> Vec<PeerView> {
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
    pub(super) fn find_with(
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
    pub(super) fn find_keys(&self, capability: &str, limit: usize, offset: u64) -> Vec<AgentKey> {
        let mut out = Vec::new();
        self.find_with(capability, limit, offset, |entry, _| out.push(entry.key));
        out
    }
}

/// The agent a listing leaves out, as a number: an id the hub cannot have made names no
/// agent, so it excludes none.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exclude(Option<AgentKey>);

impl Exclude {
    pub(super) fn new(id: Option<&str>) -> Exclude {
        Exclude(id.and_then(parse_id))
    }
}

/// Positions in the snapshot of agents with any of `caps` (sorted), or `None` for all.
pub(super) fn capability_positions<'s>(
    snap: &'s Snapshot,
    caps: &[String],
) -> Option<Cow<'s, [u32]>> {
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
pub(super) fn admit<'i>(
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

/// Visits items (sorted by last seen, ascending) newest second-bucket first, each bucket
/// in ascending order, until `visit` returns false.
pub(super) fn walk_buckets<'s>(
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
