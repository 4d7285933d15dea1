//! The agent-wide memory budget of inbound read buffers.
//!
//! Each connection's read buffer is free up to a baseline (one socket read); beyond it, the
//! connection holds a [`BufferCharge`] against the one [`BufferBudget`], in KiB permits of a
//! semaphore, before its buffer may grow. A charge that cannot grow means the budget is
//! spent: the connection is closed with `overloaded` instead of allocating. The charge
//! shrinks as the buffer is given back (see `LineDecoder`), and is returned on drop.

use std::sync::Arc;

use tokio::sync::Semaphore;

const KIB: usize = 1024;

/// Bytes all inbound read buffers may hold beyond their free baseline.
#[derive(Debug, Clone)]
pub(crate) struct BufferBudget {
    permits: Arc<Semaphore>,
    free_per_connection: usize,
}

/// The budget is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spent;

impl BufferBudget {
    pub(crate) fn new(total_bytes: usize, free_per_connection: usize) -> Self {
        let kib = (total_bytes / KIB).min(Semaphore::MAX_PERMITS);
        BufferBudget {
            permits: Arc::new(Semaphore::new(kib)),
            free_per_connection,
        }
    }

    /// A connection's charge, holding nothing yet.
    pub(crate) fn charge(&self) -> BufferCharge {
        BufferCharge {
            budget: self.clone(),
            held_kib: 0,
        }
    }

    /// Bytes not charged to any connection.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits() * KIB
    }
}

/// What one connection's buffer holds of the budget.
#[derive(Debug)]
pub(crate) struct BufferCharge {
    budget: BufferBudget,
    held_kib: u32,
}

impl BufferCharge {
    /// Makes the charge cover a buffer of `bytes`: takes more of the budget (or fails
    /// without taking any), or gives back what is no longer needed.
    pub(crate) fn cover(&mut self, bytes: usize) -> Result<(), Spent> {
        let charged = bytes.saturating_sub(self.budget.free_per_connection);
        let want = u32::try_from(charged.div_ceil(KIB)).map_err(|_| Spent)?;
        if want > self.held_kib {
            let more = want - self.held_kib;
            let permit = self
                .budget
                .permits
                .try_acquire_many(more)
                .map_err(|_| Spent)?;
            // Returned by hand (`add_permits`) when the buffer shrinks or the charge drops.
            permit.forget();
        } else if want < self.held_kib {
            self.budget
                .permits
                .add_permits((self.held_kib - want) as usize);
        }
        self.held_kib = want;
        Ok(())
    }
}

impl Drop for BufferCharge {
    fn drop(&mut self) {
        self.budget.permits.add_permits(self.held_kib as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_beyond_the_baseline_and_gives_back() {
        let budget = BufferBudget::new(100 * KIB, 64 * KIB);
        let mut a = budget.charge();
        let mut b = budget.charge();
        a.cover(64 * KIB).unwrap();
        assert_eq!(budget.available(), 100 * KIB);
        a.cover(64 * KIB + 1).unwrap();
        assert_eq!(budget.available(), 99 * KIB);
        a.cover(64 * KIB + 60 * KIB).unwrap();
        // 40 KiB left: b cannot take 41 and takes nothing trying.
        assert_eq!(b.cover(64 * KIB + 41 * KIB), Err(Spent));
        assert_eq!(budget.available(), 40 * KIB);
        b.cover(64 * KIB + 40 * KIB).unwrap();
        assert_eq!(budget.available(), 0);
        a.cover(0).unwrap();
        assert_eq!(budget.available(), 60 * KIB);
        drop(b);
        assert_eq!(budget.available(), 100 * KIB);
    }
}
