//! Handshakes per source address: a token bucket per [`SourceKey`], with the time given by
//! the caller (tests pass instants; the listener passes tokio's clock, paused in tests).
//!
//! A handshake costs us an X25519 exchange and, for 2.1, an Ed25519 signature and a
//! verification; one per connection (the state machine refuses a second), and this many per
//! second per source, so replaying handshakes cannot take the CPU (issue 13 #9).

use std::collections::HashMap;
use std::net::IpAddr;
#[cfg(test)]
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::slots::SourceKey;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Handshake rate limits per source address.
#[derive(Debug)]
pub(crate) struct HandshakeRate {
    per_second: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<SourceKey, Bucket>>,
}

impl HandshakeRate {
    /// `per_second` handshakes a second per source after a burst of `burst`; 0 is no limit.
    pub(crate) fn new(per_second: u32, burst: u32, max_tracked: usize) -> Self {
        HandshakeRate {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a handshake from `ip` may run at `now` (and counts it if so).
    pub(crate) fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_second == 0.0 {
            return true;
        }
        let key = SourceKey::of(ip);
        let mut buckets = self.buckets.lock();
        if buckets.len() >= self.max_tracked && !buckets.contains_key(&key) {
            self.forget_full(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Drops buckets that are full again (a new one starts full: nothing is lost); if every
    /// source is still limited, drops them all rather than grow without bound.
    fn forget_full(&self, buckets: &mut HashMap<SourceKey, Bucket>, now: Instant) {
        buckets.retain(|_, b| self.refilled(*b, now) < self.burst);
        if buckets.len() >= self.max_tracked {
            tracing::warn!(
                tracked = buckets.len(),
                "handshake rate table full; forgetting every source"
            );
            buckets.clear();
        }
    }

    /// The time until `ip` may handshake again (zero if it may now), for tests and logs.
    #[cfg(test)]
    fn wait(&self, ip: IpAddr, now: Instant) -> Duration {
        let buckets = self.buckets.lock();
        match buckets.get(&SourceKey::of(ip)) {
            Some(b) => {
                let missing = 1.0 - self.refilled(*b, now);
                if missing <= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(missing / self.per_second)
                }
            }
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let rate = HandshakeRate::new(10, 5, 16);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rate.allow(a, t0));
        }
        assert!(!rate.allow(a, t0));
        // Another source is not affected.
        assert!(rate.allow(b, t0));
        assert_eq!(rate.wait(a, t0), Duration::from_millis(100));
        assert!(!rate.allow(a, t0 + Duration::from_millis(99)));
        assert!(rate.allow(a, t0 + Duration::from_millis(200)));
        // A long pause refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(rate.allow(a, later));
        }
        assert!(!rate.allow(a, later));
    }

    #[test]
    fn the_table_stays_bounded() {
        let rate = HandshakeRate::new(1, 1, 4);
        let t0 = Instant::now();
        for i in 0..100u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(rate.allow(ip, t0));
            assert!(rate.buckets.lock().len() <= 4);
        }
        assert!(HandshakeRate::new(0, 0, 1).allow("::1".parse().unwrap(), t0));
    }
}
