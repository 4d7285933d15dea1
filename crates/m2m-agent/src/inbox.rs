//! Where incoming messages go: responses to our pending requests first, then the
//! application's bounded queue.
//!
//! The responder hands every opened message to [`Inbox::try_deliver`] / [`Inbox::deliver`]
//! and acks it only once one of them accepted it. A response whose correlationId matches a
//! pending [`Agent::request`](crate::Agent::request) goes straight to that request, so
//! requests complete even if the application never reads its messages. **Ours:** a response
//! that no pending request claims is dropped (after its ack), never handed to the application
//! as an ordinary message: otherwise anyone able to make a third agent answer us (a 2.0
//! message with our id as its `from`, issue 13 #8) could put words in that agent's mouth,
//! authenticated as that agent. Everything else waits
//! in one bounded queue (or a request handler's, [`Inbox::route`]); when it is full, delivery
//! waits, the responder stops reading, and the sending peer stops getting acks: backpressure
//! instead of loss. "Full" is either bound: the count of messages, or the bytes they took on
//! the wire, summed over every queue of the inbox
//! ([`crate::defaults::INBOX_BYTES`], in KiB permits of a semaphore held by each queued
//! message until the application takes it).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::message::Message;

/// Why the inbox did not take a message.
#[derive(Debug)]
pub(crate) enum NotTaken {
    /// The queue is full; the message is given back.
    Full(Box<Message>),
    /// The agent is shutting down.
    Closed,
}

const KIB: usize = 1024;

/// A queued message, holding its bytes of the inbox's budget until it is taken.
#[derive(Debug)]
pub(crate) struct Queued {
    message: Message,
    _bytes: OwnedSemaphorePermit,
}

/// A request handler's queue ([`Inbox::route`]).
#[derive(Debug)]
pub(crate) struct RouteReceiver(mpsc::Receiver<Queued>);

impl RouteReceiver {
    /// The next message of the route's type; `None` once the inbox is gone.
    pub(crate) async fn recv(&mut self) -> Option<Message> {
        self.0.recv().await.map(|q| q.message)
    }
}

struct Waiter {
    response_type: String,
    tx: oneshot::Sender<Value>,
}

/// The incoming side of an agent.
pub(crate) struct Inbox {
    tx: mpsc::Sender<Queued>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Queued>>,
    /// KiB the queued messages may take, all queues together.
    bytes: Arc<Semaphore>,
    max_kib: usize,
    waiters: Mutex<HashMap<String, Waiter>>,
    /// Message types taken by a request handler ([`Agent::on_request`](crate::Agent::on_request)):
    /// each has its own bounded queue, so a handler never sees other messages and the
    /// application queue never sees its requests.
    routes: RwLock<HashMap<String, mpsc::Sender<Queued>>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .field(
                "queued_kib",
                &(self.max_kib - self.bytes.available_permits()),
            )
            .field("waiting_requests", &self.waiters.lock().len())
            .finish()
    }
}

/// A pending request's claim on its response; dropping it withdraws the claim.
pub(crate) struct ResponseWaiter {
    inbox: Arc<Inbox>,
    correlation_id: String,
    rx: oneshot::Receiver<Value>,
}

impl ResponseWaiter {
    /// The response payload; `None` if the claim was dropped from the inbox.
    pub(crate) async fn recv(&mut self) -> Option<Value> {
        (&mut self.rx).await.ok()
    }
}

impl Drop for ResponseWaiter {
    fn drop(&mut self) {
        self.inbox.waiters.lock().remove(&self.correlation_id);
    }
}

impl Inbox {
    /// An inbox holding at most `capacity` messages of at most `bytes` on the wire in all.
    pub(crate) fn new(capacity: usize, bytes: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let max_kib = (bytes / KIB).clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Inbox {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            bytes: Arc::new(Semaphore::new(max_kib)),
            max_kib,
            waiters: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// Sends every later message of `message_type` to the returned queue instead of the
    /// application's (replacing an earlier route for that type). Its capacity bounds it as
    /// the application queue is bounded: when full, delivery waits.
    pub(crate) fn route(&self, message_type: &str, capacity: usize) -> RouteReceiver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.routes.write().insert(message_type.to_owned(), tx);
        RouteReceiver(rx)
    }

    /// The queue for `message_type` when a handler took that type.
    fn routed(&self, message_type: &str) -> Option<mpsc::Sender<Queued>> {
        let routes = self.routes.read();
        // Most agents route nothing: no clone, no lookup.
        if routes.is_empty() {
            return None;
        }
        routes.get(message_type).cloned()
    }

    /// Claims the first `response_type` message carrying `correlation_id`.
    pub(crate) fn expect_response(
        self: &Arc<Self>,
        correlation_id: &str,
        response_type: String,
    ) -> ResponseWaiter {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .insert(correlation_id.to_owned(), Waiter { response_type, tx });
        ResponseWaiter {
            inbox: self.clone(),
            correlation_id: correlation_id.to_owned(),
            rx,
        }
    }

    /// KiB permits a message of `wire_len` bytes holds: a message larger than the whole
    /// budget takes all of it, so it still gets in once the queues are empty.
    fn permits(&self, wire_len: usize) -> u32 {
        u32::try_from(wire_len.div_ceil(KIB).clamp(1, self.max_kib)).unwrap_or(u32::MAX)
    }

    /// Gives `msg` (`wire_len` bytes on the wire) to a waiting request, or to its queue if
    /// that has room for it, in count and in bytes.
    pub(crate) fn try_deliver(&self, msg: Message, wire_len: usize) -> Result<(), NotTaken> {
        let Some(msg) = self.route_response(msg) else {
            return Ok(());
        };
        let Ok(bytes) = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.permits(wire_len))
        else {
            return Err(NotTaken::Full(Box::new(msg)));
        };
        let routed = self.routed(&msg.message_type);
        let queued = Queued {
            message: msg,
            _bytes: bytes,
        };
        routed
            .as_ref()
            .unwrap_or(&self.tx)
            .try_send(queued)
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(q) => NotTaken::Full(Box::new(q.message)),
                mpsc::error::TrySendError::Closed(_) => NotTaken::Closed,
            })
    }

    /// Like [`Inbox::try_deliver`], waiting for room in its queue.
    pub(crate) async fn deliver(&self, msg: Message, wire_len: usize) -> Result<(), NotTaken> {
        let Some(msg) = self.route_response(msg) else {
            return Ok(());
        };
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(self.permits(wire_len))
            .await
            .map_err(|_| NotTaken::Closed)?;
        let routed = self.routed(&msg.message_type);
        let queued = Queued {
            message: msg,
            _bytes: bytes,
        };
        routed
            .as_ref()
            .unwrap_or(&self.tx)
            .send(queued)
            .await
            .map_err(|_| NotTaken::Closed)
    }

    /// Returns the message unless it is a response: a pending request takes it, or nobody.
    fn route_response(&self, msg: Message) -> Option<Message> {
        if !msg.message_type.ends_with(":response") {
            return Some(msg);
        }
        let Some(cid) = msg.correlation_id.as_deref() else {
            tracing::debug!(from = %msg.from, "dropping a response without correlationId");
            return None;
        };
        let mut waiters = self.waiters.lock();
        match waiters.get(cid) {
            Some(w) if w.response_type == msg.message_type => {
                if let Some(w) = waiters.remove(cid) {
                    // The request may have just timed out; then the response is dropped,
                    // as the original does with late responses.
                    let _ = w.tx.send(msg.payload);
                }
                None
            }
            _ => {
                // Late (the request timed out) or never asked for: not the application's.
                tracing::debug!(
                    from = %msg.from,
                    message_type = %msg.message_type,
                    "dropping a response no request waits for"
                );
                None
            }
        }
    }

    /// The next message for the application; `None` once `stop` is cancelled and the queue
    /// is drained.
    pub(crate) async fn next(&self, stop: &CancellationToken) -> Option<Message> {
        let mut rx = self.rx.lock().await;
        let queued = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        queued.map(|q| q.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl Inbox {
        fn try_deliver_small(&self, msg: Message) -> Result<(), NotTaken> {
            self.try_deliver(msg, 100)
        }
    }

    /// Issue 13 leftover: the count alone let 1024 messages of 1 MiB in. The bytes are bounded
    /// over every queue, freed as the application takes messages, and a message larger than
    /// the whole bound still gets into empty queues.
    #[tokio::test]
    async fn the_queues_hold_a_bounded_number_of_bytes() {
        let inbox = Inbox::new(16, 10 * KIB);
        let mut route = inbox.route("routed", 16);
        inbox.try_deliver(msg("a", None), 6 * KIB).unwrap();
        inbox.try_deliver(msg("routed", None), 3 * KIB).unwrap();
        assert!(matches!(
            inbox.try_deliver(msg("b", None), 2 * KIB),
            Err(NotTaken::Full(_))
        ));
        // Taking a message frees its bytes.
        let stop = CancellationToken::new();
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "a");
        inbox.try_deliver(msg("b", None), 2 * KIB).unwrap();
        // A waiting delivery goes in once there is room.
        let big = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.deliver(msg("big", None), 50 * KIB).await })
        };
        tokio::task::yield_now().await;
        assert!(!big.is_finished(), "50 KiB got past 5 KiB queued");
        assert_eq!(route.recv().await.unwrap().message_type, "routed");
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "b");
        big.await.unwrap().unwrap();
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "big");
    }

    fn msg(kind: &str, cid: Option<&str>) -> Message {
        Message {
            route: crate::message::Route::Direct,
            from: "p".into(),
            message_type: kind.into(),
            payload: json!({"k": kind}),
            correlation_id: cid.map(str::to_owned),
            timestamp: 0,
            encrypted: true,
            authenticated: false,
        }
    }

    #[tokio::test]
    async fn responses_bypass_the_queue() {
        let inbox = Inbox::new(1, 1 << 20);
        let mut waiter = inbox.expect_response("c1", "task:response".into());
        inbox.try_deliver_small(msg("other", None)).unwrap();
        // Queue full now, but the matching response still gets through; responses nobody
        // waits for are dropped, not queued.
        inbox
            .try_deliver_small(msg("task:response", Some("c2")))
            .unwrap();
        inbox
            .try_deliver_small(msg("wrong:response", Some("c1")))
            .unwrap();
        inbox.try_deliver_small(msg("task:response", None)).unwrap();
        assert!(matches!(
            inbox.try_deliver_small(msg("task", Some("c1"))),
            Err(NotTaken::Full(_))
        ));
        inbox
            .try_deliver_small(msg("task:response", Some("c1")))
            .unwrap();
        assert_eq!(waiter.recv().await, Some(json!({"k":"task:response"})));
        let stop = CancellationToken::new();
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "other");
        stop.cancel();
        assert_eq!(inbox.next(&stop).await, None);
    }

    #[tokio::test]
    async fn routed_types_skip_the_application_queue() {
        let inbox = Inbox::new(4, 1 << 20);
        let mut compute = inbox.route("compute", 1);
        inbox.try_deliver_small(msg("compute", Some("c1"))).unwrap();
        inbox.try_deliver_small(msg("chat", None)).unwrap();
        // The route is full now; the application queue is not involved.
        assert!(matches!(
            inbox.try_deliver_small(msg("compute", Some("c2"))),
            Err(NotTaken::Full(_))
        ));
        assert_eq!(
            compute.recv().await.unwrap().correlation_id.as_deref(),
            Some("c1")
        );
        let stop = CancellationToken::new();
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "chat");
        // A handler that went away refuses its messages rather than losing them silently.
        drop(compute);
        assert!(matches!(
            inbox.try_deliver_small(msg("compute", None)),
            Err(NotTaken::Closed)
        ));
    }

    #[test]
    fn dropped_waiter_withdraws() {
        let inbox = Inbox::new(4, 1 << 20);
        drop(inbox.expect_response("c1", "t:response".into()));
        assert!(inbox.waiters.lock().is_empty());
        // The response no request waits for any more is not queued for the application.
        inbox
            .try_deliver_small(msg("t:response", Some("c1")))
            .unwrap();
        assert_eq!(inbox.tx.capacity(), 4);
    }
}
