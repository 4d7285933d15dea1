//! The bytes/s limit of one attached WebSocket (`relay.rate`, `relay.burst`).

use std::time::Duration;

/// Relayed bytes per second of one WebSocket: a token bucket that may go into debt, so a
/// frame is never refused; the reader waits until the debt is paid (backpressure).
#[derive(Debug)]
pub(super) struct ByteBucket {
    rate: u64,
    burst: u64,
    tokens: i64,
    at: Option<tokio::time::Instant>,
}

impl ByteBucket {
    pub(super) fn new(rate: u64, burst: u64) -> ByteBucket {
        let burst = burst.max(1);
        ByteBucket {
            rate,
            burst,
            tokens: i64::try_from(burst).unwrap_or(i64::MAX),
            at: None,
        }
    }

    /// Takes `n` bytes at `now`; how long to wait before reading more, when in debt.
    pub(super) fn take(&mut self, n: u64, now: tokio::time::Instant) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let burst = i64::try_from(self.burst).unwrap_or(i64::MAX);
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_nanos();
            let refill = elapsed.saturating_mul(u128::from(self.rate)) / 1_000_000_000;
            let refill = i64::try_from(refill).unwrap_or(i64::MAX);
            self.tokens = self.tokens.saturating_add(refill).min(burst);
        }
        self.at = Some(now);
        self.tokens = self
            .tokens
            .saturating_sub(i64::try_from(n).unwrap_or(i64::MAX));
        if self.tokens >= 0 {
            return None;
        }
        let debt = self.tokens.unsigned_abs();
        let nanos = u128::from(debt) * 1_000_000_000 / u128::from(self.rate);
        Some(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_bucket_lends_and_makes_the_reader_wait_for_the_debt() {
        let t0 = tokio::time::Instant::now();
        let mut b = ByteBucket::new(1000, 500);
        assert_eq!(b.take(500, t0), None, "the burst is free");
        assert_eq!(b.take(250, t0), Some(Duration::from_millis(250)));
        // 250 ms later the debt is paid; one more byte is owed.
        let t1 = t0 + Duration::from_millis(250);
        assert_eq!(b.take(1, t1), Some(Duration::from_millis(1)));
        let mut unlimited = ByteBucket::new(0, 0);
        assert_eq!(unlimited.take(u64::MAX, t0), None);
    }
}
