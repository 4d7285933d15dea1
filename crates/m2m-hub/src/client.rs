//! One WebSocket's view of the hub: who it is (source IP, 2.1 challenge nonce), what it
//! registered, and its request budget. The WebSocket task ([`crate::ws`]) owns its
//! [`Client`] and hands it to every action; nothing else holds it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use m2m_proto::rate::{Rate, TokenBucket};
use tokio_util::sync::CancellationToken;

use crate::directory::AgentEntry;

/// Serial numbers of clients (unique within this process).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// One WebSocket's view: who it is and what it registered.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) ip: IpAddr,
    /// The entries this WebSocket registered and still holds.
    pub(crate) owned: Vec<Arc<AgentEntry>>,
    /// Requests this WebSocket may still send now (`requests_per_second`, `request_burst`).
    requests: TokenBucket,
    /// 2.1 challenge: 32 random bytes as hex, signed by a 2.1 `register` on this WebSocket.
    pub(crate) nonce: String,
    pub(crate) serial: u64,
    pub(crate) evict: CancellationToken,
    /// The relay attachment of this WebSocket (docs/RELAY.md), once it sent `relay`.
    pub(crate) relay: Option<Box<crate::relay::Attachment>>,
    /// This hub's WebSocket URL as this client reached it (the relay's URL when no
    /// `public_url` is configured).
    pub(crate) hub_url: Option<std::sync::Arc<str>>,
    /// The mailbox subscription of this WebSocket (docs/MAILBOX.md), once it sent
    /// `mailbox`.
    pub(crate) mailbox: Option<Box<crate::mailbox::Delivery>>,
    /// The agent id this WebSocket proved with an attach proof (`relay`, `mailbox` or
    /// `mail` with `identity`+`signature`), for later `mail`s.
    pub(crate) proven: Option<Box<str>>,
}

impl Client {
    /// A new client at `ip`, with a full request budget for `rate` at `now` and a fresh
    /// nonce.
    pub(crate) fn new(ip: IpAddr, rate: Rate, now: Instant) -> Self {
        Client {
            ip,
            owned: Vec::new(),
            requests: TokenBucket::full(rate, now),
            // thread_rng is a CSPRNG (ChaCha, reseeded from the OS).
            nonce: hex::encode(rand::random::<[u8; 32]>()),
            serial: NEXT_CLIENT.fetch_add(1, Ordering::Relaxed),
            evict: CancellationToken::new(),
            relay: None,
            hub_url: None,
            mailbox: None,
            proven: None,
        }
    }

    /// This WebSocket's 2.1 challenge nonce (64 hex characters).
    pub(crate) fn nonce(&self) -> &str {
        &self.nonce
    }

    /// Cancelled when a newer registration (here or through another hub) took over an id
    /// this WebSocket registered: the WebSocket is then closed.
    pub(crate) fn evicted(&self) -> CancellationToken {
        self.evict.clone()
    }

    /// The attachment when it is routable (its `relay` reply went out).
    pub(crate) fn attached(&mut self) -> Option<&mut crate::relay::Attachment> {
        self.relay.as_deref_mut().filter(|a| a.active)
    }

    /// Whether this client registered an agent (and still holds it).
    pub(crate) fn is_registered(&self) -> bool {
        !self.owned.is_empty()
    }

    /// The entry `id` this client registered, if it holds one.
    pub(crate) fn owned(&self, id: &str) -> Option<Arc<AgentEntry>> {
        self.owned.iter().find(|e| &*e.id == id).cloned()
    }

    /// One request's token from the bucket at `now`; always granted when `rate` is
    /// unlimited.
    pub(crate) fn take_request(&mut self, rate: Rate, now: Instant) -> bool {
        self.requests.try_take(rate, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_request_budget_refills_and_zero_means_no_limit() {
        let ip = IpAddr::from([127, 0, 0, 1]);
        let t0 = Instant::now();
        let rate = Rate::per_second(1, 3);
        let mut limited = Client::new(ip, rate, t0);
        assert!((0..3).all(|_| limited.take_request(rate, t0)));
        assert!(!limited.take_request(rate, t0), "the burst is spent");
        // Two seconds later at 1/s: two tokens back.
        let t1 = t0 + Duration::from_secs(2);
        assert!(limited.take_request(rate, t1) && limited.take_request(rate, t1));
        assert!(!limited.take_request(rate, t1));
        let none = Rate::per_second(0, 0);
        let mut unlimited = Client::new(ip, none, t0);
        assert!((0..100_000).all(|_| unlimited.take_request(none, t0)));
    }
}
