//! The MCP server's inbox: messages received from other agents, kept until a tool (`inbox`,
//! `wait_for_message`) takes them.
//!
//! A model reads its messages whenever it gets round to it, maybe never, so the inbox is
//! bounded: when it is full the oldest message is dropped and counted (`dropped`), which a
//! tool result reports so the model knows it missed some. Dropping rather than pushing back
//! keeps senders from stalling on a model that is not listening.
//!
//! Messages that can be answered (anything but a `…:response`) are also remembered by their
//! `messageId`, in a second bounded table, so that `respond` still works after `inbox` took
//! the message out of the queue.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use m2m_agent::Message;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// One received message with the id the tools use to name it.
#[derive(Debug, Clone)]
pub struct Received {
    /// `messageId`: unique within this server's life.
    pub id: String,
    /// The message as the SDK delivered it.
    pub message: Message,
}

impl Received {
    /// Whether `respond` can answer it: responses are not answered again.
    pub fn answerable(&self) -> bool {
        !self.message.message_type.ends_with(":response")
    }

    fn matches(&self, message_type: Option<&str>) -> bool {
        message_type.is_none_or(|t| self.message.message_type == t)
    }
}

/// What `take` found: the messages and the state of the queue after it.
#[derive(Debug)]
pub struct Taken {
    /// The messages taken, oldest first.
    pub messages: Vec<Received>,
    /// Messages still queued (of any type).
    pub remaining: usize,
    /// Messages dropped since the server started because the inbox was full.
    pub dropped: u64,
}

/// The queued messages and what is needed to answer them; behind the inbox's lock.
#[derive(Debug, Default)]
struct InboxContents {
    queue: VecDeque<Received>,
    dropped: u64,
    next_id: u64,
    /// Answerable messages by id, and their ids in arrival order (to evict the oldest).
    answerable: HashMap<String, Message>,
    answerable_order: VecDeque<String>,
}

/// The bounded inbox; clones share it.
#[derive(Debug, Clone)]
pub struct Inbox {
    contents: Arc<Mutex<InboxContents>>,
    arrived: Arc<Notify>,
    capacity: usize,
}

impl Inbox {
    /// An inbox holding at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Inbox {
        Inbox {
            contents: Arc::default(),
            arrived: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Queues `message`, dropping the oldest if the inbox is full; wakes waiters.
    pub fn push(&self, message: Message) -> Received {
        let received = {
            let mut state = self.contents.lock();
            state.next_id += 1;
            let received = Received {
                id: format!("m{}", state.next_id),
                message,
            };
            if state.queue.len() >= self.capacity {
                state.queue.pop_front();
                state.dropped += 1;
            }
            state.queue.push_back(received.clone());
            if received.answerable() {
                if state.answerable_order.len() >= self.capacity {
                    if let Some(old) = state.answerable_order.pop_front() {
                        state.answerable.remove(&old);
                    }
                }
                state.answerable_order.push_back(received.id.clone());
                state
                    .answerable
                    .insert(received.id.clone(), received.message.clone());
            }
            received
        };
        self.arrived.notify_waiters();
        received
    }

    /// Removes and returns up to `limit` queued messages (of `message_type`, if given).
    pub fn take(&self, message_type: Option<&str>, limit: usize) -> Taken {
        let mut state = self.contents.lock();
        let mut messages = Vec::new();
        let mut kept = VecDeque::with_capacity(state.queue.len());
        while let Some(r) = state.queue.pop_front() {
            if messages.len() < limit && r.matches(message_type) {
                messages.push(r);
            } else {
                kept.push_back(r);
            }
        }
        state.queue = kept;
        Taken {
            messages,
            remaining: state.queue.len(),
            dropped: state.dropped,
        }
    }

    /// The first queued message (of `message_type`, if given), taken out of the queue;
    /// waits up to `timeout` for one to arrive. `None`: nothing came in time.
    pub async fn wait(&self, message_type: Option<&str>, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register for the wake-up before looking, so a push between the look and the
            // wait is not missed.
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(r) = self.take(message_type, 1).messages.pop() {
                return Some(r);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// The answerable message `id`, if it is still remembered.
    pub fn answerable(&self, id: &str) -> Option<Message> {
        self.contents.lock().answerable.get(id).cloned()
    }

    /// Forgets `id` once it was answered, so it is not answered twice by mistake.
    pub fn answered(&self, id: &str) {
        let mut state = self.contents.lock();
        if state.answerable.remove(id).is_some() {
            state.answerable_order.retain(|i| i != id);
        }
    }

    /// Queued messages and the dropped count, without taking anything.
    pub fn peek(&self) -> (Vec<Received>, u64) {
        let state = self.contents.lock();
        (state.queue.iter().cloned().collect(), state.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(t: &str, n: u64) -> Message {
        Message {
            from: "peer".into(),
            message_type: t.into(),
            payload: json!({ "n": n }),
            correlation_id: Some(format!("c{n}")),
            timestamp: n,
            encrypted: true,
            authenticated: true,
            route: Default::default(),
        }
    }

    #[test]
    fn full_inbox_drops_the_oldest_and_counts_it() {
        let inbox = Inbox::new(2);
        for n in 1..=3 {
            inbox.push(message("chat", n));
        }
        let taken = inbox.take(None, 10);
        let ns: Vec<_> = taken
            .messages
            .iter()
            .map(|r| r.message.payload["n"].clone())
            .collect();
        assert_eq!(ns, [json!(2), json!(3)]);
        assert_eq!((taken.remaining, taken.dropped), (0, 1));
        assert_eq!(taken.messages[0].id, "m2");
    }

    #[test]
    fn take_filters_by_type_and_keeps_the_rest_in_order() {
        let inbox = Inbox::new(10);
        inbox.push(message("a", 1));
        inbox.push(message("b", 2));
        inbox.push(message("a", 3));
        inbox.push(message("b", 4));
        let taken = inbox.take(Some("b"), 1);
        assert_eq!(taken.messages.len(), 1);
        assert_eq!(taken.messages[0].message.timestamp, 2);
        assert_eq!(taken.remaining, 3);
        let rest: Vec<_> = inbox
            .take(None, 10)
            .messages
            .iter()
            .map(|r| r.message.timestamp)
            .collect();
        assert_eq!(rest, [1, 3, 4]);
    }

    #[test]
    fn answerable_messages_outlive_the_queue_until_answered() {
        let inbox = Inbox::new(10);
        let request = inbox.push(message("ask", 1));
        let response = inbox.push(message("ask:response", 2));
        inbox.take(None, 10);
        assert!(inbox.answerable(&request.id).is_some());
        assert!(inbox.answerable(&response.id).is_none());
        inbox.answered(&request.id);
        assert!(inbox.answerable(&request.id).is_none());
    }

    #[test]
    fn the_answerable_table_is_bounded_too() {
        let inbox = Inbox::new(2);
        let first = inbox.push(message("ask", 1));
        inbox.push(message("ask", 2));
        let last = inbox.push(message("ask", 3));
        assert!(inbox.answerable(&first.id).is_none());
        assert!(inbox.answerable(&last.id).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_a_message_that_arrives_later() {
        let inbox = Inbox::new(10);
        let pusher = inbox.clone();
        let waiter =
            tokio::spawn(async move { inbox.wait(Some("b"), Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        pusher.push(message("a", 1));
        tokio::time::sleep(Duration::from_secs(1)).await;
        pusher.push(message("b", 2));
        let got = waiter.await.unwrap().expect("a message");
        assert_eq!(got.message.timestamp, 2);
        // The other type stayed queued.
        assert_eq!(pusher.take(None, 10).messages.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_at_the_timeout() {
        let inbox = Inbox::new(10);
        let started = tokio::time::Instant::now();
        assert!(inbox.wait(None, Duration::from_secs(5)).await.is_none());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
