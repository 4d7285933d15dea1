//! `/health`: whether the registry can take a write now. The hub keeps answering reads
//! from memory while the database is away, so the process being up says nothing about
//! whether registrations succeed; a load balancer or monitor needs the latter.
//!
//! A probe is a real write that changes nothing (a status update of an id that cannot
//! exist), bounded by [`defaults::HEALTH_PROBE_TIMEOUT`] and run at most once per
//! [`defaults::HEALTH_PROBE_INTERVAL`] however many ask, so `/health` cannot load the
//! database.

use std::time::Instant;

use tokio::sync::Mutex;

use crate::defaults;
use crate::store::{Registry, Write};

/// The last probe and when it ran.
#[derive(Debug, Default)]
pub(crate) struct RegistryHealth {
    last: Mutex<Option<(Instant, bool)>>,
}

impl RegistryHealth {
    /// Whether the registry took the last probe, probing again when that is older than
    /// the probe interval. Concurrent callers wait for one probe.
    pub(crate) async fn writable(&self, registry: &dyn Registry) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < defaults::HEALTH_PROBE_INTERVAL {
                return ok;
            }
        }
        let ok = probe(registry).await;
        *last = Some((Instant::now(), ok));
        ok
    }
}

async fn probe(registry: &dyn Registry) -> bool {
    // Not a valid agent id (ids are 32 hex characters): matches no row, ever.
    let write = Write::SetStatus {
        id: "health-probe".to_owned(),
        token: String::new(),
        status: m2m_proto::hub::status::OFFLINE.to_owned(),
        last_seen: None,
    };
    let applied = tokio::time::timeout(
        defaults::HEALTH_PROBE_TIMEOUT,
        registry.apply(std::slice::from_ref(&write)),
    )
    .await;
    match applied {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health probe: the registry cannot write");
            false
        }
        Err(_) => {
            tracing::warn!("health probe: the registry did not answer in time");
            false
        }
    }
}
