//! Per-source-IP shares: how many connections one IP holds ([`IpConnections`]) and how
//! fast it may register ([`IpRegistrations`]). An IPv6 address counts by its /64, the
//! smallest block a host is normally given; IPv4-mapped IPv6 counts as the IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// Above this many tracked IPs the registration table drops the entries that have
/// refilled completely (they carry no information), so it cannot grow without bound.
const PRUNE_ABOVE: usize = 65_536;

/// The unit one share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IpKey {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl IpKey {
    /// The key of `ip`.
    pub(crate) fn of(ip: IpAddr) -> IpKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpKey::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                IpKey::V6(prefix)
            }
        }
    }
}

/// Open connections per IP; a [`IpSlot`] is one of them, released on drop.
#[derive(Debug, Default)]
pub(crate) struct IpConnections {
    open: Mutex<HashMap<IpKey, usize>>,
}

impl IpConnections {
    /// One more connection from `ip`, or `None` when it holds `max` already (0: no limit).
    pub(crate) fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let key = IpKey::of(ip);
        let mut open = self.open.lock();
        let n = open.entry(key).or_insert(0);
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Connections `ip` holds now.
    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&IpKey::of(ip)).copied().unwrap_or(0)
    }
}

/// One connection counted against its IP.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<IpConnections>,
    key: IpKey,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock();
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A token bucket per IP for registrations.
#[derive(Debug, Default)]
pub(crate) struct IpRegistrations {
    buckets: Mutex<HashMap<IpKey, (f64, Instant)>>,
}

impl IpRegistrations {
    /// Takes one registration for `ip` at `now`: `per_hour` sustained, `burst` at once.
    /// Always granted when `per_hour` is 0 (no limit).
    pub(crate) fn try_take(&self, ip: IpAddr, per_hour: u32, burst: u32, now: Instant) -> bool {
        if per_hour == 0 {
            return true;
        }
        let rate = f64::from(per_hour) / 3600.0;
        let cap = f64::from(burst.max(1));
        let mut buckets = self.buckets.lock();
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < cap
            });
        }
        let (tokens, at) = buckets.entry(IpKey::of(ip)).or_insert((cap, now));
        let elapsed = now.saturating_duration_since(*at).as_secs_f64();
        *tokens = (*tokens + elapsed * rate).min(cap);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ipv6_counts_by_its_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(IpKey::of(a), IpKey::of(b));
        assert_ne!(IpKey::of(a), IpKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(IpKey::of(mapped), IpKey::of("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn connections_per_ip_are_capped_and_released() {
        let table = Arc::new(IpConnections::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let first = table.try_open(ip, 2).unwrap();
        let _second = table.try_open(ip, 2).unwrap();
        assert!(table.try_open(ip, 2).is_none());
        assert!(
            table.try_open(other, 2).is_some(),
            "another IP has its own share"
        );
        drop(first);
        assert_eq!(table.count(ip), 1);
        assert!(table.try_open(ip, 2).is_some());
        assert!(
            (0..10).all(|_| table.try_open(ip, 0).is_some()),
            "0: no limit"
        );
    }

    #[test]
    fn registrations_refill_at_the_hourly_rate() {
        let table = IpRegistrations::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| table.try_take(ip, 3600, 3, t0)));
        assert!(!table.try_take(ip, 3600, 3, t0), "the burst is spent");
        assert!(
            !table.try_take(
                "192.0.2.1".parse().unwrap(),
                3600,
                3,
                t0 + Duration::from_millis(500)
            ),
            "half a token is not a registration"
        );
        assert!(table.try_take(ip, 3600, 3, t0 + Duration::from_secs(1)));
        assert!(table.try_take("192.0.2.9".parse().unwrap(), 3600, 3, t0));
        assert!(
            (0..1000).all(|_| table.try_take(ip, 0, 0, t0)),
            "0: no limit"
        );
    }
}
