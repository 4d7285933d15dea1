//! The push side of the dashboard: Server-Sent Event streams fed by the sampler.
//!
//! ```text
//!  sampler ──broadcast(event)──► Push ──try_send──► per-client queue ──► SSE body ──► browser
//!                                  │ (bounded, byte budget)
//!                                  └─ queue full or budget spent: that client is dropped
//! ```
//!
//! Nothing here ever waits for a client. Each event is serialized once; every client gets
//! it through `try_send` on a queue of [`CLIENT_QUEUE_EVENTS`] that also holds a share of
//! the global byte budget ([`PUSH_BYTE_BUDGET`]) for as long as the event waits. A client
//! whose queue is full, or whose event does not fit in the budget, is not reading: its
//! sender is dropped, its stream ends after what it already has, and the browser's
//! `EventSource` may reconnect. So a dashboard that never reads costs at most its queue.
//! The number of streams is capped ([`MAX_PUSH_CLIENTS`]); the slot is held until the
//! stream is dropped, i.e. until its connection is gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::defaults::dashboard::{CLIENT_QUEUE_EVENTS, MAX_PUSH_CLIENTS, PUSH_BYTE_BUDGET};

/// One event as it goes on the wire (`event: …\ndata: …\n\n`), with its share of the byte
/// budget, released when the stream hands the bytes to the connection.
#[derive(Debug)]
pub struct Queued {
    /// The event's bytes.
    pub bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct PushCounters {
    /// Streams opened.
    pub opened: AtomicU64,
    /// Streams refused at [`MAX_PUSH_CLIENTS`].
    pub refused: AtomicU64,
    /// Streams dropped because their client did not keep up.
    pub dropped_slow: AtomicU64,
    /// Events queued to clients.
    pub events: AtomicU64,
    /// Bytes queued to clients.
    pub bytes: AtomicU64,
}

/// All push clients of one hub.
#[derive(Debug)]
pub struct Push {
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    clients: Mutex<Vec<(u64, mpsc::Sender<Queued>)>>,
    next_id: AtomicU64,
    /// Counters.
    pub counters: PushCounters,
}

/// The push stream limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many dashboard streams are open")]
pub struct Full;

impl Default for Push {
    fn default() -> Self {
        Push::new(MAX_PUSH_CLIENTS, PUSH_BYTE_BUDGET)
    }
}

impl Push {
    /// A push hub with `max_clients` slots and a byte budget of `budget` (tests use small
    /// ones).
    pub fn new(max_clients: usize, budget: usize) -> Push {
        Push {
            slots: Arc::new(Semaphore::new(max_clients)),
            budget: Arc::new(Semaphore::new(budget)),
            budget_bytes: budget,
            clients: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            counters: PushCounters::default(),
        }
    }

    /// Opens a stream, or refuses at the cap.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, Full> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Full);
        };
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE_EVENTS);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.clients.lock().push((id, tx));
        self.counters.opened.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            rx,
            id,
            push: self.clone(),
            _slot: slot,
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.clients.lock().len()
    }

    /// Bytes of the budget queued now.
    pub fn queued_bytes(&self) -> usize {
        self.budget_bytes
            .saturating_sub(self.budget.available_permits())
    }

    /// Queues `event` to every client (`event: name`, `data: data`); drops the clients that
    /// cannot take it. Never waits.
    pub fn broadcast(&self, name: &str, data: &str) {
        let bytes = Bytes::from(sse_event(name, data));
        let mut clients = self.clients.lock();
        clients.retain(|(_, tx)| self.offer(tx, &bytes));
    }

    /// `try_send` within the budget; false: this client is to be dropped.
    fn offer(&self, tx: &mpsc::Sender<Queued>, bytes: &Bytes) -> bool {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        let Ok(permit) = self.budget.clone().try_acquire_many_owned(len) else {
            self.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let queued = Queued {
            bytes: bytes.clone(),
            _budget: permit,
        };
        match tx.try_send(queued) {
            Ok(()) => {
                self.counters.events.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
                false
            }
            // The stream is gone already (its drop removes it too).
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// `event: name\ndata: data\n\n`. `data` is one line of JSON (serde_json never writes a raw
/// newline), so it cannot break out of the event.
pub(crate) fn sse_event(name: &str, data: &str) -> String {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    // Belt and braces: a newline would end the field; JSON text has none outside strings,
    // and escapes them inside.
    out.extend(data.chars().filter(|c| *c != '\n' && *c != '\r'));
    out.push_str("\n\n");
    out
}

/// One open stream: its queue and its slot.
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Queued>,
    id: u64,
    push: Arc<Push>,
    _slot: OwnedSemaphorePermit,
}

impl Subscription {
    /// The next event; `None` once the client was dropped and its queue is empty.
    pub async fn next(&mut self) -> Option<Bytes> {
        // The budget share is released here, as the bytes go to the connection.
        self.rx.recv().await.map(|q| q.bytes)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let id = self.id;
        self.push.clients.lock().retain(|(c, _)| *c != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_does_not_read_is_dropped_and_its_memory_is_bounded() {
        let push = Arc::new(Push::new(4, 64 * 1024));
        let mut reader = push.subscribe().unwrap();
        let stuck = push.subscribe().unwrap();
        assert_eq!(push.open(), 2);
        let data = "x".repeat(100);
        for _ in 0..(CLIENT_QUEUE_EVENTS * 4) {
            push.broadcast("stats", &data);
            // The reading client takes each event as it comes.
            assert!(reader.next().await.is_some());
        }
        assert_eq!(push.open(), 1, "the stuck client is gone");
        assert_eq!(push.counters.dropped_slow.load(Ordering::Relaxed), 1);
        // What the stuck client holds is its full queue and no more.
        let per_event = sse_event("stats", &data).len();
        assert_eq!(push.queued_bytes(), CLIENT_QUEUE_EVENTS * per_event);
        drop(stuck);
        assert_eq!(
            push.queued_bytes(),
            0,
            "the budget comes back with the queue"
        );
        assert_eq!(push.open(), 1);
    }

    #[tokio::test]
    async fn the_byte_budget_drops_clients_before_it_overflows() {
        let event = sse_event("stats", "{}").len();
        // Room for three events in all.
        let push = Arc::new(Push::new(8, 3 * event));
        let a = push.subscribe().unwrap();
        let b = push.subscribe().unwrap();
        push.broadcast("stats", "{}");
        assert_eq!(push.queued_bytes(), 2 * event);
        push.broadcast("stats", "{}");
        assert_eq!(push.open(), 1, "the one that did not fit is dropped");
        assert!(push.queued_bytes() <= 3 * event);
        drop((a, b));
        assert_eq!(push.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn the_stream_cap_refuses_and_a_closed_stream_frees_its_slot() {
        let push = Arc::new(Push::new(2, 1024));
        let a = push.subscribe().unwrap();
        let _b = push.subscribe().unwrap();
        assert_eq!(push.subscribe().unwrap_err(), Full);
        assert_eq!(push.counters.refused.load(Ordering::Relaxed), 1);
        drop(a);
        assert!(push.subscribe().is_ok());
    }

    #[tokio::test]
    async fn a_dropped_client_gets_what_it_had_then_the_end() {
        let push = Arc::new(Push::new(2, 1 << 20));
        let mut sub = push.subscribe().unwrap();
        for _ in 0..=CLIENT_QUEUE_EVENTS {
            push.broadcast("changed", "{\"generation\":1}");
        }
        assert_eq!(push.open(), 0);
        let mut got = 0;
        while let Some(bytes) = sub.next().await {
            assert_eq!(&bytes[..], b"event: changed\ndata: {\"generation\":1}\n\n");
            got += 1;
        }
        assert_eq!(got, CLIENT_QUEUE_EVENTS);
    }

    #[test]
    fn an_event_cannot_be_split_by_its_data() {
        assert_eq!(sse_event("x", "a\nb\r\nc"), "event: x\ndata: abc\n\n");
    }
}
