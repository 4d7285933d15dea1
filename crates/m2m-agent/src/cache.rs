//! The address cache of PROTOCOL.md A5: what `discover`, `find` and `lookup` said about an id,
//! trusted for a while so that `send(id, …)` does not ask the hub every time.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::defaults::ADDRESS_CACHE_ENTRIES as MAX_ENTRIES;

/// What the hub last said about an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub address: String,
    /// `None` when the answer had no status (`find` lists only online agents).
    pub status: Option<String>,
    /// 2.1: the identity key (base64) the hub verified for this id.
    pub identity: Option<String>,
    /// Relay: the public WebSocket URL of the hub relaying for it.
    pub relay: Option<String>,
    /// Relay: the hub's reachability verdict.
    pub reachable: Option<m2m_proto::relay::Reachable>,
    /// Mailbox: the signed mailbox key the record publishes (checked before use).
    pub mailbox: Option<m2m_proto::mailbox::MailboxKey>,
}

impl Known {
    /// What a hub record says (`status` absent from `find`'s records).
    pub(crate) fn of(
        address: &str,
        status: Option<&str>,
        identity: Option<&str>,
        relay: Option<&str>,
        reachable: Option<m2m_proto::relay::Reachable>,
    ) -> Self {
        Known {
            address: address.to_owned(),
            status: status.map(str::to_owned),
            identity: identity.map(str::to_owned),
            relay: relay.map(str::to_owned),
            reachable,
            mailbox: None,
        }
    }

    /// With the record's mailbox key.
    pub(crate) fn with_mailbox(mut self, key: Option<&m2m_proto::mailbox::MailboxKey>) -> Self {
        self.mailbox = key.cloned();
        self
    }
}

#[derive(Debug)]
pub(crate) struct AddressCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Known, Instant)>>,
}

impl AddressCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        AddressCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn insert(&self, id: &str, known: Known) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| now.duration_since(*at) < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(id.to_owned(), (known, now));
    }

    /// The entry for `id` if it is younger than the TTL.
    pub(crate) fn get(&self, id: &str) -> Option<Known> {
        let mut entries = self.entries.lock();
        match entries.get(id) {
            Some((known, at)) if at.elapsed() < self.ttl => Some(known.clone()),
            Some(_) => {
                entries.remove(id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.entries.lock().remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire() {
        let cache = AddressCache::new(Duration::from_secs(60));
        cache.insert(
            "a",
            Known::of("1.2.3.4:5", Some("online"), None, None, None),
        );
        assert_eq!(cache.get("a").unwrap().address, "1.2.3.4:5");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(cache.get("a"), None);
    }
}
