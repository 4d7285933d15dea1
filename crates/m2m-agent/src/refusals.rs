//! What the agent refused its peers, per limit: counted for
//! [`Agent::refusals`](crate::Agent::refusals) and logged at `warn` once per episode (the
//! first refusal after [`REFUSAL_EPISODE_QUIET`] without one), so an operator sees an attack
//! without its flood.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::defaults::REFUSAL_EPISODE_QUIET;

/// How many times each limit of the agent refused a peer since it connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Refusals {
    /// Inbound connections closed at once: their source address (IPv4, IPv6 /64) held its
    /// whole share ([`AgentConfig::max_inbound_per_ip`](crate::AgentConfig::max_inbound_per_ip)).
    pub source_share: u64,
    /// Inbound connections evicted because every slot was taken
    /// ([`AgentConfig::max_inbound_connections`](crate::AgentConfig::max_inbound_connections)).
    pub evicted: u64,
    /// Inbound connections closed with `overloaded`: the agent-wide read buffer budget was
    /// spent ([`AgentConfig::inbound_buffer_budget`](crate::AgentConfig::inbound_buffer_budget)).
    pub buffer_budget: u64,
    /// Handshakes refused with `rate_limited`
    /// ([`AgentConfig::handshakes_per_ip_per_second`](crate::AgentConfig::handshakes_per_ip_per_second)).
    pub handshake_rate: u64,
}

/// A limit that refuses peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    SourceShare,
    Evicted,
    BufferBudget,
    HandshakeRate,
}

impl Limit {
    const ALL: [Limit; 4] = [
        Limit::SourceShare,
        Limit::Evicted,
        Limit::BufferBudget,
        Limit::HandshakeRate,
    ];

    fn what(self) -> &'static str {
        match self {
            Limit::SourceShare => "inbound connections refused: their source holds its share",
            Limit::Evicted => "inbound connections evicted: every slot is taken",
            Limit::BufferBudget => "inbound connections closed: the read buffer budget is spent",
            Limit::HandshakeRate => "handshakes refused: over the rate of their source",
        }
    }
}

/// The agent's refusal counters.
#[derive(Debug, Default)]
pub(crate) struct RefusalCounter {
    counts: [AtomicU64; 4],
    /// When each limit last refused.
    last: Mutex<[Option<Instant>; 4]>,
}

impl RefusalCounter {
    /// `limit` refused a peer (`peer` for the log).
    pub(crate) fn refused(&self, limit: Limit, peer: &dyn std::fmt::Display) {
        let i = limit as usize;
        let count = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let new_episode = {
            let mut last = self.last.lock();
            let quiet = last[i].is_none_or(|at| now.duration_since(at) >= REFUSAL_EPISODE_QUIET);
            last[i] = Some(now);
            quiet
        };
        if new_episode {
            tracing::warn!(%peer, total = count, "{}", limit.what());
        } else {
            tracing::debug!(%peer, total = count, "{}", limit.what());
        }
    }

    /// The counts so far.
    pub(crate) fn snapshot(&self) -> Refusals {
        let [source_share, evicted, buffer_budget, handshake_rate] =
            Limit::ALL.map(|l| self.counts[l as usize].load(Ordering::Relaxed));
        Refusals {
            source_share,
            evicted,
            buffer_budget,
            handshake_rate,
        }
    }
}
