//! Who holds the agent's inbound connection slots, and who gives one up when they run short.
//!
//! Every accepted connection asks [`InboundSlots::admit`] for a [`Slot`] before its task
//! starts and gives it back by dropping it. A source address (IPv4, or IPv6 /64) may hold at
//! most its share; beyond that its new connections are refused. When every slot is taken, the
//! newcomer evicts the connection that has done least for us lately: one still in its
//! handshake first, then the one whose last delivered message (or handshake) is oldest —
//! pings do not count, so a connection kept alive with a cheap handshake and a ping every
//! 20 s (issue 13 #5) goes before any sender that delivered something since. Authentication
//! only breaks ties: identities cost an attacker nothing. The evicted connection's task sees
//! [`Slot::evicted`] and closes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use m2m_proto::rate::SourceKey;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::refusals::{Limit, RefusalCounter};

/// How far a connection got, in eviction order (first evicted first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    Handshaking,
    Unauthenticated,
    Authenticated,
}

#[derive(Debug)]
struct Holder {
    source: SourceKey,
    stage: Stage,
    /// Last handshake or delivered message.
    last_useful: Instant,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct Table {
    next_key: u64,
    holders: HashMap<u64, Holder>,
    per_source: HashMap<SourceKey, usize>,
}

impl Table {
    fn release(&mut self, key: u64) {
        if let Some(h) = self.holders.remove(&key) {
            if let Some(n) = self.per_source.get_mut(&h.source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&h.source);
                }
            }
        }
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// Its source address holds its whole share already.
    SourceShare,
}

/// The agent's inbound slots.
#[derive(Debug)]
pub(crate) struct InboundSlots {
    max_total: usize,
    max_per_source: usize,
    table: Mutex<Table>,
    refusals: Arc<RefusalCounter>,
}

impl InboundSlots {
    /// Slots for `max_total` connections, `max_per_source` from one source; refusals and
    /// evictions are counted in `refusals`.
    pub(crate) fn new(
        max_total: usize,
        max_per_source: usize,
        refusals: Arc<RefusalCounter>,
    ) -> Arc<Self> {
        Arc::new(InboundSlots {
            max_total: max_total.max(1),
            max_per_source: max_per_source.max(1),
            table: Mutex::new(Table::default()),
            refusals,
        })
    }

    /// A slot for a connection from `ip`, evicting the least useful holder if none is free.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Slot, NoSlot> {
        let source = SourceKey::of(ip);
        let mut table = self.table.lock();
        if table.per_source.get(&source).copied().unwrap_or(0) >= self.max_per_source {
            drop(table);
            self.refusals.refused(Limit::SourceShare, &ip);
            return Err(NoSlot::SourceShare);
        }
        let full = table.holders.len() >= self.max_total;
        if full {
            // Handshaking holders first (`false` sorts first), then the oldest useful.
            let victim = table
                .holders
                .iter()
                .min_by_key(|(_, h)| (h.stage != Stage::Handshaking, h.last_useful, h.stage))
                .map(|(k, _)| *k);
            if let Some(key) = victim {
                if let Some(h) = table.holders.get(&key) {
                    h.evict.cancel();
                }
                // Counted free at once: the evicted task closes within a poll.
                table.release(key);
            }
        }
        let key = table.next_key;
        table.next_key += 1;
        let evicted = CancellationToken::new();
        table.holders.insert(
            key,
            Holder {
                source,
                stage: Stage::Handshaking,
                last_useful: now,
                evict: evicted.clone(),
            },
        );
        *table.per_source.entry(source).or_default() += 1;
        drop(table);
        if full {
            self.refusals.refused(Limit::Evicted, &ip);
        }
        Ok(Slot {
            slots: self.clone(),
            key,
            evicted,
        })
    }

    /// Connections holding a slot.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.table.lock().holders.len()
    }
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<InboundSlots>,
    key: u64,
    /// Cancelled when a newcomer took this slot: the connection must close.
    pub(crate) evicted: CancellationToken,
}

impl Slot {
    /// The connection got somewhere useful at `now` (a handshake, delivered messages).
    pub(crate) fn useful(&self, stage: Stage, now: Instant) {
        if let Some(h) = self.slots.table.lock().holders.get_mut(&self.key) {
            h.stage = stage;
            h.last_useful = now;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.table.lock().release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_only() {
        let slots = InboundSlots::new(8, 2, Arc::default());
        let now = Instant::now();
        let a1 = slots.admit(ip("127.0.0.2"), now).unwrap();
        let _a2 = slots.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(
            slots.admit(ip("127.0.0.2"), now).unwrap_err(),
            NoSlot::SourceShare
        );
        let _b = slots.admit(ip("127.0.0.1"), now).unwrap();
        drop(a1);
        let _a3 = slots.admit(ip("127.0.0.2"), now).unwrap();
        assert_eq!(slots.held(), 3);
        assert_eq!(slots.refusals.snapshot().source_share, 1);
    }

    #[test]
    fn the_least_useful_holder_is_evicted_when_full() {
        let refusals = Arc::new(RefusalCounter::default());
        let slots = InboundSlots::new(3, 3, refusals.clone());
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let idle = slots.admit(ip("10.0.0.1"), t0).unwrap();
        idle.useful(Stage::Authenticated, s(1));
        let busy = slots.admit(ip("10.0.0.2"), t0).unwrap();
        busy.useful(Stage::Unauthenticated, s(5));
        let handshaking = slots.admit(ip("10.0.0.3"), s(6)).unwrap();
        // Full: the one still in its handshake goes first, even though it is the newest.
        let n1 = slots.admit(ip("10.0.0.4"), s(7)).unwrap();
        assert!(handshaking.evicted.is_cancelled());
        n1.useful(Stage::Unauthenticated, s(8));
        // Then the one that did something useful longest ago, authenticated or not.
        let _n2 = slots.admit(ip("10.0.0.5"), s(9)).unwrap();
        assert!(idle.evicted.is_cancelled());
        assert!(!busy.evicted.is_cancelled() && !n1.evicted.is_cancelled());
        assert_eq!(slots.held(), 3);
        assert_eq!(refusals.snapshot().evicted, 2);
        // Dropping an evicted slot frees nothing twice.
        drop(idle);
        drop(handshaking);
        assert_eq!(slots.held(), 3);
    }
}
