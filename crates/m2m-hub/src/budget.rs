//! The hub-wide memory budget (`crate::defaults::MEMORY_BUDGET`): semaphores with one
//! permit per KiB. A [`Charge`] holds the permits for the bytes a connection makes the hub
//! keep (its buffers, an unfinished frame, queued replies) and gives them back when it
//! shrinks or is dropped, so nothing can forget to release.
//!
//! The budget is split in three ([`Memory`]): connections, unfinished frames and queued
//! replies each have their own share, so a client that spends one (many half-sent frames,
//! replies it never reads) cannot stop others from connecting and being answered.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::defaults;
use crate::defaults::BUDGET_UNIT as UNIT;

/// Permits for `bytes`, rounded up.
fn units(bytes: usize) -> usize {
    bytes.div_ceil(UNIT)
}

/// The shared budget.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    permits: Arc<Semaphore>,
    total: usize,
}

impl Budget {
    /// A budget of `bytes` (at least one unit; capped at what a semaphore can count).
    pub(crate) fn new(bytes: usize) -> Budget {
        let total = units(bytes).clamp(1, Semaphore::MAX_PERMITS);
        Budget {
            permits: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// A charge of `bytes`, or `None` when the budget cannot cover it now.
    pub(crate) fn charge(&self, bytes: usize) -> Option<Charge> {
        let mut charge = self.empty();
        charge.resize(bytes).then_some(charge)
    }

    /// A charge of nothing, to grow later.
    pub(crate) fn empty(&self) -> Charge {
        Charge {
            budget: self.permits.clone(),
            held: None,
            units: 0,
        }
    }

    /// Bytes charged now (for `/metrics`).
    pub(crate) fn used_bytes(&self) -> usize {
        (self.total - self.permits.available_permits()) * UNIT
    }

    /// The whole budget in bytes.
    pub(crate) fn total_bytes(&self) -> usize {
        self.total * UNIT
    }
}

/// The three shares of the memory budget.
#[derive(Debug, Clone)]
pub(crate) struct Memory {
    /// Connection buffers: HTTP heads, WebSocket read buffers and allowances.
    pub(crate) connections: Budget,
    /// Unfinished WebSocket messages beyond the allowance.
    pub(crate) frames: Budget,
    /// Replies waiting to be written beyond the allowance.
    pub(crate) replies: Budget,
}

impl Memory {
    /// Splits `bytes` by [`defaults::CONNECTION_SHARE`] (the rest halved between frames and
    /// replies).
    pub(crate) fn new(bytes: usize) -> Memory {
        let connections = bytes / defaults::CONNECTION_SHARE_DIVISOR * defaults::CONNECTION_SHARE;
        let rest = bytes.saturating_sub(connections);
        Memory {
            connections: Budget::new(connections),
            frames: Budget::new(rest / 2),
            replies: Budget::new(rest - rest / 2),
        }
    }

    /// Bytes charged now, all shares.
    pub(crate) fn used_bytes(&self) -> usize {
        self.connections.used_bytes() + self.frames.used_bytes() + self.replies.used_bytes()
    }

    /// The whole budget.
    pub(crate) fn total_bytes(&self) -> usize {
        self.connections.total_bytes() + self.frames.total_bytes() + self.replies.total_bytes()
    }
}

/// Bytes held against the budget; released on drop.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    units: usize,
}

impl Charge {
    /// Makes the charge cover `bytes` (growing or shrinking it). `false`, and nothing
    /// changed, when the budget cannot cover the growth.
    pub(crate) fn resize(&mut self, bytes: usize) -> bool {
        let want = units(bytes);
        if want == self.units {
            return true;
        }
        if want < self.units {
            if let Some(held) = &mut self.held {
                // `split` hands back a permit for the surplus, released as it drops.
                drop(held.split(self.units - want));
            }
            self.units = want;
            return true;
        }
        let extra = want - self.units;
        let Ok(more) = u32::try_from(extra) else {
            return false;
        };
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(more) else {
            return false;
        };
        match &mut self.held {
            Some(held) => held.merge(permit),
            None => self.held = Some(permit),
        }
        self.units = want;
        true
    }

    /// Bytes covered now (a multiple of the unit).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.units * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_grow_shrink_and_release_on_drop() {
        let budget = Budget::new(10 * UNIT);
        let mut a = budget.charge(3 * UNIT + 1).unwrap();
        assert_eq!(a.bytes(), 4 * UNIT);
        assert_eq!(budget.used_bytes(), 4 * UNIT);
        assert!(budget.charge(7 * UNIT).is_none(), "only 6 units are left");
        assert!(a.resize(10 * UNIT));
        assert!(!a.resize(11 * UNIT), "growth beyond the budget is refused");
        assert_eq!(a.bytes(), 10 * UNIT, "a refused growth changes nothing");
        assert!(a.resize(UNIT));
        assert_eq!(budget.used_bytes(), UNIT);
        let b = budget.charge(9 * UNIT).unwrap();
        drop(a);
        drop(b);
        assert_eq!(budget.used_bytes(), 0);
        let mut c = budget.empty();
        assert!(c.resize(0) && c.resize(UNIT) && c.resize(0));
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(budget.total_bytes(), 10 * UNIT);
    }

    #[test]
    fn the_shares_add_up_to_the_budget() {
        let memory = Memory::new(64 * 1024 * 1024);
        assert_eq!(memory.total_bytes(), 64 * 1024 * 1024);
        assert_eq!(memory.connections.total_bytes(), 48 * 1024 * 1024);
        assert_eq!(memory.frames.total_bytes(), 8 * 1024 * 1024);
        let _held = memory.frames.charge(8 * 1024 * 1024).unwrap();
        assert!(memory.frames.charge(UNIT).is_none());
        assert!(
            memory.connections.charge(UNIT).is_some() && memory.replies.charge(UNIT).is_some(),
            "a spent frame share leaves the others alone"
        );
    }
}
