//! `stats`: agent counts from the mirror and the hub's own counters.

use std::sync::atomic::Ordering;

use m2m_proto::hub::{HubCounters, Stats};
use m2m_proto::limits::PROTOCOL_VERSION;

use crate::state::HubState;

impl HubState {
    /// The `stats` body.
    pub fn stats(&self) -> Stats {
        Stats {
            agents: self.directory.counts(),
            hub: HubCounters {
                version: PROTOCOL_VERSION.to_owned(),
                uptime: self.uptime(),
                connections: self.accepted.load(Ordering::Relaxed),
                active_connections: self.registered.load(Ordering::Relaxed),
            },
        }
    }
}
