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
//! in one bounded queue; when it is full, delivery waits, the responder stops reading, and
//! the sending peer stops getting acks: backpressure instead of loss.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
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

struct Waiter {
    response_type: String,
    tx: oneshot::Sender<Value>,
}

/// The incoming side of an agent.
pub(crate) struct Inbox {
    tx: mpsc::Sender<Message>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Message>>,
    waiters: Mutex<HashMap<String, Waiter>>,
    /// Message types taken by a request handler ([`Agent::on_request`](crate::Agent::on_request)):
    /// each has its own bounded queue, so a handler never sees other messages and the
    /// application queue never sees its requests.
    routes: RwLock<HashMap<String, mpsc::Sender<Message>>>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
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
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        Arc::new(Inbox {
            tx,
            rx: tokio::sync::Mutex::new(rx),
            waiters: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
        })
    }

    /// Sends every later message of `message_type` to the returned queue instead of the
    /// application's (replacing an earlier route for that type). Its capacity bounds it as
    /// the application queue is bounded: when full, delivery waits.
    pub(crate) fn route(&self, message_type: &str, capacity: usize) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.routes.write().insert(message_type.to_owned(), tx);
        rx
    }

    /// The queue for `message_type` when a handler took that type.
    fn routed(&self, message_type: &str) -> Option<mpsc::Sender<Message>> {
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

    /// Gives `msg` to a waiting request, or to the application queue if it has room.
    pub(crate) fn try_deliver(&self, msg: Message) -> Result<(), NotTaken> {
        let Some(msg) = self.route_response(msg) else {
            return Ok(());
        };
        let routed = self.routed(&msg.message_type);
        routed
            .as_ref()
            .unwrap_or(&self.tx)
            .try_send(msg)
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(m) => NotTaken::Full(Box::new(m)),
                mpsc::error::TrySendError::Closed(_) => NotTaken::Closed,
            })
    }

    /// Like [`Inbox::try_deliver`], waiting for room in the application queue.
    pub(crate) async fn deliver(&self, msg: Message) -> Result<(), NotTaken> {
        let Some(msg) = self.route_response(msg) else {
            return Ok(());
        };
        let routed = self.routed(&msg.message_type);
        routed
            .as_ref()
            .unwrap_or(&self.tx)
            .send(msg)
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
        tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = stop.cancelled() => rx.try_recv().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(kind: &str, cid: Option<&str>) -> Message {
        Message {
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
        let inbox = Inbox::new(1);
        let mut waiter = inbox.expect_response("c1", "task:response".into());
        inbox.try_deliver(msg("other", None)).unwrap();
        // Queue full now, but the matching response still gets through; responses nobody
        // waits for are dropped, not queued.
        inbox.try_deliver(msg("task:response", Some("c2"))).unwrap();
        inbox
            .try_deliver(msg("wrong:response", Some("c1")))
            .unwrap();
        inbox.try_deliver(msg("task:response", None)).unwrap();
        assert!(matches!(
            inbox.try_deliver(msg("task", Some("c1"))),
            Err(NotTaken::Full(_))
        ));
        inbox.try_deliver(msg("task:response", Some("c1"))).unwrap();
        assert_eq!(waiter.recv().await, Some(json!({"k":"task:response"})));
        let stop = CancellationToken::new();
        assert_eq!(inbox.next(&stop).await.unwrap().message_type, "other");
        stop.cancel();
        assert_eq!(inbox.next(&stop).await, None);
    }

    #[tokio::test]
    async fn routed_types_skip_the_application_queue() {
        let inbox = Inbox::new(4);
        let mut compute = inbox.route("compute", 1);
        inbox.try_deliver(msg("compute", Some("c1"))).unwrap();
        inbox.try_deliver(msg("chat", None)).unwrap();
        // The route is full now; the application queue is not involved.
        assert!(matches!(
            inbox.try_deliver(msg("compute", Some("c2"))),
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
            inbox.try_deliver(msg("compute", None)),
            Err(NotTaken::Closed)
        ));
    }

    #[test]
    fn dropped_waiter_withdraws() {
        let inbox = Inbox::new(4);
        drop(inbox.expect_response("c1", "t:response".into()));
        assert!(inbox.waiters.lock().is_empty());
        // The response no request waits for any more is not queued for the application.
        inbox.try_deliver(msg("t:response", Some("c1"))).unwrap();
        assert_eq!(inbox.tx.capacity(), 4);
    }
}
