//! The relay (docs/RELAY.md): routes P2P byte streams between WebSockets attached under
//! verified agent ids, without reading them.
//!
//! ```text
//!  client A's task                          Relay (router)               client B's task
//!  binary frame ─► Attachment::on_frame ─► lookup B's Port (OPEN only)
//!                  checks credit, budget,
//!                  rate; queues Msg for B ── one push per read batch ─► B's Port inbox
//!                                                                       (Mutex<Vec>) + wake
//!                                           Attachment::on_inbox ◄── B's task drains it
//!                                           (one lock per batch) ─► Outbox (binary frames,
//!                                           batched with B's replies) ─► B's socket
//! ```
//!
//! Every stream has one end in each of the two client tasks ([`stream::Attachment`]). Each
//! end keeps the flow-control credit of the direction its own client sends, so no lock is
//! shared per stream: credit is consumed by the DATA the end's client sends and granted by
//! the CREDIT the other end forwards through the inbox. Ids are renumbered per WebSocket:
//! the opener's task takes the destination's next even id from its [`Port`] atomically.
//!
//! Bytes queued towards a destination are charged to one hub-wide budget and released once
//! the destination's task has written them; the window bounds what one stream may queue.

mod probe;
mod stream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use m2m_proto::rate::{KeyedBuckets, Rate};
use m2m_proto::relay::{CloseReason, RawAgentId, Reachable};
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use crate::config::RelayConfig;
use crate::defaults::RELAY_PROBE_IPS_TRACKED;

pub(crate) use probe::probe;
pub(crate) use stream::Attachment;

/// A message from one client task to another attached one (through its [`Port`]).
#[derive(Debug)]
pub(crate) enum Msg {
    /// `peer` (verified) opened a stream; the receiver's id for it is `stream`, the
    /// opener's end is `from_stream` on `from`.
    Open {
        stream: u32,
        peer: RawAgentId,
        from: Arc<Port>,
        from_stream: u32,
    },
    /// Stream bytes (the payload only), charged to the relay budget until written.
    Data { stream: u32, bytes: Bytes },
    /// The other end's client consumed `bytes`.
    Credit { stream: u32, bytes: u32 },
    /// The other end closed the stream (or the hub closed it for a reason).
    Close {
        stream: u32,
        reason: CloseReason,
        detail: Bytes,
    },
    /// The deferred reply to `relay` (after the probe): the attachment becomes routable.
    Attached {
        reply: String,
        reachable: Option<Reachable>,
    },
    /// A newer attachment of the same agent id replaced this one.
    Detach,
    /// Close the streams idle past `stream_idle`.
    Sweep,
}

#[derive(Debug, Default)]
struct Inbox {
    msgs: Vec<Msg>,
    closed: bool,
}

/// The receiving side of one attached WebSocket: what other tasks queue for it and the
/// wake-up of its task.
#[derive(Debug)]
pub(crate) struct Port {
    /// The verified agent id this WebSocket is attached as.
    pub(crate) id: RawAgentId,
    inbox: Mutex<Inbox>,
    wake: Notify,
    /// The next even stream id the hub gives a stream opened towards this WebSocket.
    next_stream: AtomicU32,
}

impl Port {
    fn new(id: RawAgentId) -> Port {
        Port {
            id,
            inbox: Mutex::new(Inbox::default()),
            wake: Notify::new(),
            next_stream: AtomicU32::new(2),
        }
    }

    /// Queues `msgs` and wakes the port's task; hands them back when the port is closed.
    pub(crate) fn push(&self, msgs: Vec<Msg>) -> Result<(), Vec<Msg>> {
        {
            let mut inbox = self.inbox.lock();
            if inbox.closed {
                return Err(msgs);
            }
            if inbox.msgs.is_empty() {
                inbox.msgs = msgs;
            } else {
                inbox.msgs.extend(msgs);
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    /// Queues one message (rare paths).
    pub(crate) fn push_one(&self, msg: Msg) -> Result<(), Vec<Msg>> {
        self.push(vec![msg])
    }

    /// Resolves when something was queued (a permit is kept if nobody waits).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }

    /// Takes everything queued, swapping in `spare` (an empty vector keeping its capacity).
    fn take(&self, spare: &mut Vec<Msg>) {
        let mut inbox = self.inbox.lock();
        std::mem::swap(&mut inbox.msgs, spare);
    }

    /// Closes the port: nothing more is queued; returns what was.
    fn close(&self) -> Vec<Msg> {
        let mut inbox = self.inbox.lock();
        inbox.closed = true;
        std::mem::take(&mut inbox.msgs)
    }

    /// The next hub-side id of a stream towards this WebSocket (`None` once spent).
    fn next_stream(&self) -> Option<u32> {
        let id = self.next_stream.fetch_add(2, Ordering::Relaxed);
        (id != 0 && id < u32::MAX - 1).then_some(id)
    }
}

/// The hub's relay: who is attached, the memory budget, probes, counters.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) config: RelayConfig,
    table: Mutex<HashMap<RawAgentId, Arc<Port>>>,
    used: AtomicUsize,
    probes_per_ip: Mutex<KeyedBuckets>,
    probes_in_flight: Arc<Semaphore>,
    /// Bytes relayed (DATA payloads forwarded).
    pub(crate) bytes_total: AtomicU64,
    /// Streams opened through the relay.
    pub(crate) streams_total: AtomicU64,
    /// Streams open now (counted at their opening end).
    pub(crate) streams_open: AtomicU64,
}

impl Relay {
    /// The relay of `config`.
    pub(crate) fn new(config: &RelayConfig) -> Relay {
        Relay {
            config: config.clone(),
            table: Mutex::new(HashMap::new()),
            used: AtomicUsize::new(0),
            probes_per_ip: Mutex::new(KeyedBuckets::new(
                Rate::per_second(config.probes_per_ip, config.probe_burst),
                RELAY_PROBE_IPS_TRACKED,
            )),
            probes_in_flight: Arc::new(Semaphore::new(config.probes_in_flight)),
            bytes_total: AtomicU64::new(0),
            streams_total: AtomicU64::new(0),
            streams_open: AtomicU64::new(0),
        }
    }

    /// A new, not yet routable port for `id`.
    pub(crate) fn port(&self, id: RawAgentId) -> Arc<Port> {
        Arc::new(Port::new(id))
    }

    /// Makes `port` the route of its id; the port it replaces is told to detach.
    pub(crate) fn insert(&self, port: &Arc<Port>) {
        let older = self.table.lock().insert(port.id, port.clone());
        if let Some(older) = older.filter(|o| !Arc::ptr_eq(o, port)) {
            let _ = older.push_one(Msg::Detach);
        }
    }

    /// Removes `port`'s route, unless a newer port took it over.
    pub(crate) fn remove(&self, port: &Arc<Port>) {
        let mut table = self.table.lock();
        if table.get(&port.id).is_some_and(|p| Arc::ptr_eq(p, port)) {
            table.remove(&port.id);
        }
    }

    /// The port attached for `id`.
    pub(crate) fn lookup(&self, id: &RawAgentId) -> Option<Arc<Port>> {
        self.table.lock().get(id).cloned()
    }

    /// Asks every attached WebSocket to close its idle streams.
    pub(crate) fn sweep(&self) {
        let ports: Vec<Arc<Port>> = self.table.lock().values().cloned().collect();
        for port in ports {
            let _ = port.push_one(Msg::Sweep);
        }
    }

    /// Charges `n` queued bytes to the budget; `false` when it cannot hold them.
    pub(crate) fn charge(&self, n: usize) -> bool {
        let before = self.used.fetch_add(n, Ordering::Relaxed);
        if before + n > self.config.budget {
            self.used.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Releases `n` bytes charged by [`Relay::charge`].
    pub(crate) fn release(&self, n: usize) {
        if n > 0 {
            self.used.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Bytes charged now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A probe's permit: one of the source IP's probes and one of the slots in flight, or
    /// `None` when either is spent (the probe is not made).
    pub(crate) fn probe_permit(
        &self,
        ip: std::net::IpAddr,
        now: std::time::Instant,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let permit = self.probes_in_flight.clone().try_acquire_owned().ok()?;
        self.probes_per_ip
            .lock()
            .try_take(ip, now)
            .then_some(permit)
    }
}
