//! One mailbox subscription on one hub WebSocket: the `mail` events the hub pushes are
//! opened, de-duplicated and handed on (to the agent's inbox, or to `fetch_mail`'s
//! callback), and acked in batches of at most [`MAX_ACK_IDS`], sent after the ack delay
//! or on `mail_drained`. A delivered message is acked only once it is handed on and its id
//! is remembered (and written to the state file, when there is one), so a crash before the
//! ack means a redelivery that is dropped as a duplicate, not a loss.

use std::sync::Arc;
use std::time::Duration;

use m2m_proto::hub::HubRequest;
use m2m_proto::mailbox::{
    MailAcked, MailEvent, ACTION_ACK, EVENT_DRAINED, EVENT_MAIL, MAX_ACK_IDS,
};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{now_ms, MailboxReceiver};
use crate::error::Result;
use crate::hub_client::HubClient;
use crate::inbox::Inbox;
use crate::message::{AgentEvent, Message};

/// Where opened mail goes.
pub(crate) enum Sink<'a> {
    /// The agent's inbox (waits for room: backpressure on the hub's pushes).
    Inbox(Arc<Inbox>),
    /// A caller's function (`fetch_mail`).
    Callback(&'a mut (dyn FnMut(Message) + Send)),
}

/// What one event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A message, delivered.
    Delivered,
    /// A message, dropped with a reason.
    Dropped,
    /// `mail_drained`.
    Drained,
    /// Anything else (ignored).
    Other,
}

/// The state of one subscription: its WebSocket and the acks not sent yet.
pub(crate) struct Subscription {
    client: HubClient,
    receiver: Arc<MailboxReceiver>,
    acks: Vec<String>,
    flush_at: Option<Instant>,
    ack_delay: Duration,
    events: Option<broadcast::Sender<AgentEvent>>,
    /// (reason, id) of every drop, for `fetch_mail`'s report.
    pub(crate) drops: Vec<(String, String)>,
}

impl Subscription {
    pub(crate) fn new(
        client: HubClient,
        receiver: Arc<MailboxReceiver>,
        ack_delay: Duration,
        events: Option<broadcast::Sender<AgentEvent>>,
    ) -> Self {
        Subscription {
            client,
            receiver,
            acks: Vec::new(),
            flush_at: None,
            ack_delay,
            events,
            drops: Vec::new(),
        }
    }

    /// When the pending acks are due.
    pub(crate) fn flush_at(&self) -> Option<Instant> {
        self.flush_at
    }

    /// Whether acks are waiting to be sent.
    pub(crate) fn has_pending_acks(&self) -> bool {
        !self.acks.is_empty()
    }

    /// How many acks are waiting to be sent.
    pub(crate) fn pending_acks(&self) -> usize {
        self.acks.len()
    }

    /// Handles one event from the hub. `stop` aborts a delivery waiting for inbox room.
    pub(crate) async fn on_event(
        &mut self,
        event: Value,
        sink: &mut Sink<'_>,
        stop: &CancellationToken,
    ) -> Seen {
        match event.get("event").and_then(Value::as_str) {
            Some(EVENT_DRAINED) => return Seen::Drained,
            Some(EVENT_MAIL) => {}
            _ => return Seen::Other,
        }
        let Ok(mail) = serde_json::from_value::<MailEvent>(event) else {
            tracing::debug!("hub pushed a malformed mail event");
            return Seen::Other;
        };
        let seen = match self.receiver.open(&mail, now_ms()) {
            Ok((message, expires_at)) => {
                let from = message.from.clone();
                let handed = match sink {
                    Sink::Callback(f) => {
                        f(message);
                        true
                    }
                    Sink::Inbox(inbox) => tokio::select! {
                        biased;
                        _ = stop.cancelled() => false,
                        r = inbox.deliver(message, mail.sealed.len()) => r.is_ok(),
                    },
                };
                if !handed {
                    // Not delivered: not acked either; the hub pushes it again.
                    return Seen::Other;
                }
                self.receiver.delivered(&from, &mail.id, expires_at);
                Seen::Delivered
            }
            Err(reason) => {
                self.receiver.count_drop(reason);
                tracing::info!(id = %mail.id, from = %mail.from, reason, "dropped a mailbox message");
                if let Some(events) = &self.events {
                    let _ = events.send(AgentEvent::MailDropped {
                        id: mail.id.clone(),
                        from: mail.from.clone(),
                        reason: reason.to_owned(),
                    });
                }
                self.drops.push((reason.to_owned(), mail.id.clone()));
                Seen::Dropped
            }
        };
        self.acks.push(mail.id);
        if self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.ack_delay);
        }
        seen
    }

    /// Sends the pending acks (the delivered ids are written to the state file first).
    pub(crate) async fn flush(&mut self) -> Result<()> {
        self.flush_at = None;
        if self.acks.is_empty() {
            return Ok(());
        }
        self.receiver.persist();
        while !self.acks.is_empty() {
            let n = self.acks.len().min(MAX_ACK_IDS);
            let ids: Vec<Value> = self.acks[..n].iter().cloned().map(Value::String).collect();
            let req = HubRequest {
                action: Some(ACTION_ACK.into()),
                ids: Some(Value::Array(ids)),
                ..HubRequest::default()
            };
            self.client.request::<MailAcked>(req).await?;
            self.acks.drain(..n);
        }
        Ok(())
    }
}

/// The agent's subscription task: runs until the WebSocket closes or `stop`.
pub(crate) async fn run(
    mut sub: Subscription,
    mut events: mpsc::Receiver<Value>,
    inbox: Arc<Inbox>,
    stop: CancellationToken,
) {
    let mut sink = Sink::Inbox(inbox);
    let client = sub.client.clone();
    loop {
        let due = sub.flush_at();
        let flush = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = client.closed() => break,
            _ = flush => {
                if let Err(e) = sub.flush().await {
                    tracing::debug!(error = %e, "mail_ack failed; the hub redelivers");
                }
            }
            event = events.recv() => {
                let Some(event) = event else { break };
                let seen = sub.on_event(event, &mut sink, &stop).await;
                if seen == Seen::Drained || sub.pending_acks() >= MAX_ACK_IDS {
                    if let Err(e) = sub.flush().await {
                        tracing::debug!(error = %e, "mail_ack failed; the hub redelivers");
                    }
                }
            }
        }
    }
    // What was delivered is remembered even if the ack cannot go out any more.
    sub.receiver.persist();
}
