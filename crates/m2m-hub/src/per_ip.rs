//! Per-source-IP shares: how many connections one IP holds ([`IpConnections`]) and how
//! fast it may register ([`IpRegistrations`]). A share belongs to an
//! [`m2m_proto::rate::SourceKey`]: an IPv6 address counts by its /64, the smallest block a
//! host is normally given; IPv4-mapped IPv6 counts as the IPv4 address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use m2m_proto::rate::{KeyedBuckets, Rate, SourceKey};
use parking_lot::Mutex;

use crate::defaults::MAX_TRACKED_REGISTRATION_SOURCES;

/// Open connections per IP; a [`IpSlot`] is one of them, released on drop.
#[derive(Debug, Default)]
pub(crate) struct IpConnections {
    open: Mutex<HashMap<SourceKey, usize>>,
}

impl IpConnections {
    /// One more connection from `ip`, or `None` when it holds `max` already (0: no limit).
    pub(crate) fn try_open(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let key = SourceKey::of(ip);
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
        self.open
            .lock()
            .get(&SourceKey::of(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// One connection counted against its IP.
#[derive(Debug)]
pub(crate) struct IpSlot {
    table: Arc<IpConnections>,
    key: SourceKey,
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

/// A token bucket per source for registrations (at most
/// [`MAX_TRACKED_REGISTRATION_SOURCES`] tracked).
#[derive(Debug)]
pub(crate) struct IpRegistrations {
    buckets: Mutex<KeyedBuckets>,
}

impl IpRegistrations {
    /// Registrations at `rate` per source (an unlimited rate never refuses).
    pub(crate) fn new(rate: Rate) -> IpRegistrations {
        IpRegistrations {
            buckets: Mutex::new(KeyedBuckets::new(rate, MAX_TRACKED_REGISTRATION_SOURCES)),
        }
    }

    /// Takes one registration for `ip` at `now`; `false` when its source has none left.
    pub(crate) fn try_take(&self, ip: IpAddr, now: Instant) -> bool {
        self.buckets.lock().try_take(ip, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let table = IpRegistrations::new(Rate::per_hour(3600, 3));
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| table.try_take(ip, t0)));
        assert!(!table.try_take(ip, t0), "the burst is spent");
        assert!(
            !table.try_take(ip, t0 + Duration::from_millis(500)),
            "half a token is not a registration"
        );
        assert!(table.try_take(ip, t0 + Duration::from_secs(1)));
        assert!(table.try_take("192.0.2.9".parse().unwrap(), t0));
        let unlimited = IpRegistrations::new(Rate::per_hour(0, 0));
        assert!((0..1000).all(|_| unlimited.try_take(ip, t0)), "0: no limit");
    }
}
