//! Per-source accounting shared by the hub and the agent: which address a share belongs to
//! ([`SourceKey`]) and how fast it may do something ([`TokenBucket`], [`KeyedBuckets`]).
//!
//! Time is a parameter, never read here: the caller passes `now` (tokio's clock converted
//! with `Instant::into_std`, which tests pause and advance), so the arithmetic is pure and
//! the tests are exact.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// The unit one per-source share belongs to: an IPv4 address, or the /64 of an IPv6 address
/// (the smallest block a host is normally given, so one host cannot take many shares by
/// walking its own prefix). An IPv4-mapped IPv6 address counts as the IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKey {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl SourceKey {
    /// The key `ip` counts against.
    pub fn of(ip: IpAddr) -> SourceKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => SourceKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                SourceKey::V6(prefix)
            }
        }
    }
}

/// A sustained rate and the burst allowed at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `n` a second after a burst of `burst` (at least 1). `n == 0` is no limit.
    pub fn per_second(n: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(n),
            burst: f64::from(burst.max(1)),
        }
    }

    /// `n` an hour after a burst of `burst` (at least 1). `n == 0` is no limit.
    pub fn per_hour(n: u32, burst: u32) -> Rate {
        Rate {
            per_second: f64::from(n) / 3600.0,
            burst: f64::from(burst.max(1)),
        }
    }

    /// Whether this rate limits nothing.
    pub fn is_unlimited(&self) -> bool {
        self.per_second == 0.0
    }
}

/// One token bucket: starts full, refills continuously at the rate, holds at most the burst.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` at `now`.
    pub fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: rate.burst,
            at: now,
        }
    }

    /// Takes one token at `now` if there is one; an unlimited rate always grants.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        self.tokens = self.level(rate, now);
        self.at = self.at.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled to its burst by `now` (forgetting it loses nothing:
    /// a new bucket starts full).
    pub fn is_full(&self, rate: Rate, now: Instant) -> bool {
        rate.is_unlimited() || self.level(rate, now) >= rate.burst
    }

    fn level(&self, rate: Rate, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * rate.per_second).min(rate.burst)
    }
}

/// A token bucket per [`SourceKey`], tracking at most `max_tracked` sources: when the table
/// is full it forgets the sources whose buckets are full again, and if every source is still
/// limited it forgets them all rather than grow (an attacker spraying addresses gets fresh
/// buckets, never unbounded memory). Not synchronised: callers hold it behind their lock.
#[derive(Debug)]
pub struct KeyedBuckets {
    rate: Rate,
    max_tracked: usize,
    buckets: HashMap<SourceKey, TokenBucket>,
}

impl KeyedBuckets {
    /// An empty table for `rate`, tracking at most `max_tracked` sources (at least 1).
    pub fn new(rate: Rate, max_tracked: usize) -> KeyedBuckets {
        KeyedBuckets {
            rate,
            max_tracked: max_tracked.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `ip` at `now`; `false` when its source has none left.
    pub fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.rate.is_unlimited() {
            return true;
        }
        let key = SourceKey::of(ip);
        if self.buckets.len() >= self.max_tracked && !self.buckets.contains_key(&key) {
            let rate = self.rate;
            self.buckets.retain(|_, b| !b.is_full(rate, now));
            if self.buckets.len() >= self.max_tracked {
                self.buckets.clear();
            }
        }
        let rate = self.rate;
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(rate, now))
            .try_take(rate, now)
    }

    /// Sources tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
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
    fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            SourceKey::of(ip("2001:db8:1:2::1")),
            SourceKey::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            SourceKey::of(ip("::ffff:10.0.0.1")),
            SourceKey::of(ip("10.0.0.1"))
        );
        assert_ne!(SourceKey::of(ip("10.0.0.1")), SourceKey::of(ip("10.0.0.2")));
    }

    #[test]
    fn a_bucket_grants_its_burst_then_refills_at_the_rate() {
        let rate = Rate::per_second(2, 3);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!((0..3).all(|_| b.try_take(rate, t0)));
        assert!(!b.try_take(rate, t0));
        // Half a second refills one token at 2/s, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.try_take(rate, t1));
        assert!(!b.try_take(rate, t1));
        // Long idle refills to the burst, never beyond it.
        let t2 = t1 + Duration::from_secs(3600);
        assert!(b.is_full(rate, t2));
        assert_eq!((0..10).filter(|_| b.try_take(rate, t2)).count(), 3);
    }

    #[test]
    fn an_earlier_now_does_not_mint_tokens() {
        let rate = Rate::per_second(1, 1);
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0));
        assert!(!b.try_take(rate, t0 - Duration::from_secs(5)));
        assert!(!b.try_take(rate, t0));
    }

    #[test]
    fn per_hour_rates_and_unlimited() {
        let rate = Rate::per_hour(3600, 1);
        let t0 = Instant::now();
        let mut b = TokenBucket::full(rate, t0);
        assert!(b.try_take(rate, t0));
        assert!(!b.try_take(rate, t0 + Duration::from_millis(900)));
        assert!(b.try_take(rate, t0 + Duration::from_millis(1000)));
        let none = Rate::per_hour(0, 0);
        assert!((0..1000).all(|_| b.try_take(none, t0)));
    }

    #[test]
    fn keyed_buckets_limit_each_source_and_stay_bounded() {
        let t0 = Instant::now();
        let mut table = KeyedBuckets::new(Rate::per_second(1, 2), 4);
        assert!(table.try_take(ip("192.0.2.1"), t0));
        assert!(table.try_take(ip("192.0.2.1"), t0));
        assert!(!table.try_take(ip("192.0.2.1"), t0));
        assert!(
            table.try_take(ip("192.0.2.2"), t0),
            "another source has its own"
        );
        // Spraying sources never grows the table past its bound.
        for i in 0..1000u32 {
            table.try_take(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0);
            assert!(table.tracked() <= 4);
        }
        // Forgetting only forgets full buckets while some are: 192.0.2.1 refilled after 2 s.
        let t1 = t0 + Duration::from_secs(2);
        let mut table = KeyedBuckets::new(Rate::per_second(1, 2), 2);
        assert!(table.try_take(ip("192.0.2.1"), t0));
        assert!(table.try_take(ip("192.0.2.2"), t1));
        assert!(table.try_take(ip("192.0.2.2"), t1));
        assert!(table.try_take(ip("192.0.2.3"), t1));
        assert_eq!(table.tracked(), 2, "192.0.2.1 was full again and forgotten");
        assert!(
            !table.try_take(ip("192.0.2.2"), t1),
            "the limited source was kept"
        );
    }
}
