//! One subscription's delivery (docs/MAILBOX.md "Receiving"): what it pushed and not had
//! acked, where it is in the recipient's mail, and the turn that pushes more.
//!
//! A turn runs in the subscribed WebSocket's own task (like a relay turn), so pushed mail
//! goes out in order with the replies. It reads at most [`MAIL_TURN`] rows (and at most
//! [`MAIL_TURN_BYTES`] of sealed bytes, the first row always), oldest first,
//! past the last `seq` pushed, never more than `in_flight` unacked in all, and never a row
//! past its `expiresAt` (the query filters them). It reads one row more: when that one is
//! not there, all stored mail has been pushed and `mail_drained` goes out once (again
//! after later mail).
//!
//! Redelivery: when the oldest unacked push is older than `ack_timeout`, the turn starts
//! again from the recipient's oldest stored row (everything unacked is pushed again; the
//! SDK de-duplicates by id). The deadline is on the hub's clock (tests move a manual
//! one and wake the subscriptions, [`crate::RunningHub::mail_wake_now`]). Memory: at most
//! `in_flight` ids per subscription, at most [`MAIL_TURN`] messages and [`MAIL_TURN_BYTES`]
//! per turn, and each pushed event is charged to the memory budget (a turn that cannot
//! charge stops and goes on after its pushes are written, or after `MAIL_RETRY` when it
//! pushed none).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine as _;
use m2m_proto::mailbox::{MailDrained, MailEvent, EVENT_MAIL};
use std::time::{Duration, Instant};

use super::Sub;
use crate::client::Client;
use crate::defaults::mail::{MAIL_RETRY, MAIL_TURN, MAIL_TURN_BYTES};
use crate::outbox::Outbox;
use crate::state::HubState;

/// The delivery state of one subscribed WebSocket.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The agent id whose mail this is.
    pub(crate) recipient: String,
    /// Its doorbell (shared with [`super::Mailbox`]).
    pub(crate) sub: Arc<Sub>,
    /// Pushed, not acked: message id → when pushed.
    in_flight: HashMap<String, Instant>,
    /// The largest `seq` pushed since the last restart from the oldest row.
    cursor: i64,
    /// Something was pushed (or the subscription is new) since the last `mail_drained`.
    drained_due: bool,
    /// The last turn stopped early (a full batch, or the memory budget): run again.
    more: bool,
    /// A turn failed (the database, or the memory budget could not hold a push): the next
    /// one is due then, not at once (no busy retry loop) and not never (no stall).
    retry_at: Option<Instant>,
}

impl Delivery {
    /// A new subscription's delivery: everything stored is to be pushed.
    pub(crate) fn new(recipient: String, sub: Arc<Sub>) -> Self {
        Delivery {
            recipient,
            sub,
            in_flight: HashMap::new(),
            cursor: 0,
            drained_due: true,
            more: true,
            retry_at: None,
        }
    }

    /// What the WebSocket task waits on: the doorbell, the redelivery deadline, or at
    /// once when the last turn stopped early. Deadlines are on the hub's clock (`now` is
    /// its monotonic side); the wait is that long on tokio's timer.
    pub(crate) fn waiter(&self, ack_timeout: Duration, now: Instant) -> Waiter {
        Waiter {
            sub: self.sub.clone(),
            after: self
                .in_flight
                .values()
                .min()
                .map(|t| *t + ack_timeout)
                .and_then(|deadline| self.retry_at.or(Some(deadline)))
                .or(self.retry_at)
                .map(|at| at.saturating_duration_since(now)),
            now: self.more,
        }
    }

    /// `ids` were acked: they leave the in-flight set (room for more).
    pub(crate) fn acked(&mut self, ids: &[String]) {
        for id in ids {
            self.in_flight.remove(id);
        }
        self.sub.wake.notify_one();
    }
}

/// A future's worth of [`Delivery`] state, cloned out so the task can borrow its client.
#[derive(Debug)]
pub(crate) struct Waiter {
    sub: Arc<Sub>,
    after: Option<Duration>,
    now: bool,
}

impl Waiter {
    /// Resolves when a delivery turn is due.
    pub(crate) async fn due(self) {
        if self.now {
            return;
        }
        let deadline = async {
            match self.after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.sub.wake.notified() => {}
            _ = deadline => {}
        }
    }
}

/// Resolves when `client`'s next delivery turn is due; never without a subscription.
pub(crate) fn turn_due(client: &Client, state: &HubState) -> impl std::future::Future<Output = ()> {
    let waiter = client
        .mailbox
        .as_ref()
        .map(|d| d.waiter(state.config.mailbox.ack_timeout, state.instant()));
    async move {
        match waiter {
            Some(w) => w.due().await,
            None => std::future::pending().await,
        }
    }
}

impl HubState {
    /// One delivery turn for `client`'s subscription: pushes into `out`. Ends the
    /// subscription when a newer one (here or on another hub) took over.
    pub(crate) async fn mail_turn(&self, client: &mut Client, out: &mut Outbox) {
        let Some(d) = client.mailbox.as_deref_mut() else {
            return;
        };
        d.more = false;
        d.retry_at = None;
        let store = &self.mailbox.store;
        let superseded = d.sub.ended.load(Ordering::Acquire)
            || match store.lease(&d.recipient).await {
                Ok(token) => token.as_deref() != Some(d.sub.token.as_str()),
                // The database is away: try again at the next doorbell, or after a pause.
                Err(_) => {
                    d.retry_at = Some(self.instant() + MAIL_RETRY);
                    return;
                }
            };
        if superseded {
            tracing::debug!(id = %&d.recipient[..8.min(d.recipient.len())], "mail subscription taken over");
            if let Some(d) = client.mailbox.take() {
                self.mailbox.unsubscribe(&d.recipient, &d.sub);
            }
            return;
        }
        let cfg = &self.config.mailbox;
        let now = self.instant();
        if d.in_flight.values().any(|t| now >= *t + cfg.ack_timeout) {
            let n = d.in_flight.len() as u64;
            self.mailbox
                .counters
                .redelivered
                .fetch_add(n, Ordering::Relaxed);
            d.in_flight.clear();
            d.cursor = 0;
        }
        let room = cfg.in_flight.saturating_sub(d.in_flight.len());
        if room == 0 {
            return;
        }
        let limit = MAIL_TURN.min(room as i64);
        // `full`: something is left after this turn (then no `mail_drained` yet).
        let (rows, full) = match store
            .pending(
                &d.recipient,
                d.cursor,
                self.now_ms(),
                limit,
                MAIL_TURN_BYTES,
            )
            .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "mail not read; will retry");
                d.retry_at = Some(now + MAIL_RETRY);
                return;
            }
        };
        let mut pushed = 0;
        for row in rows {
            if d.in_flight.contains_key(&row.id) {
                d.cursor = row.seq;
                continue;
            }
            let event = MailEvent {
                event: EVENT_MAIL.to_owned(),
                id: row.id.clone(),
                from: row.sender,
                stored_at: row.stored_at.max(0) as u64,
                expires_at: row.expires_at.max(0) as u64,
                sealed: base64::engine::general_purpose::STANDARD.encode(&row.sealed),
            };
            let text = serde_json::to_string(&event).unwrap_or_default();
            if !out.try_push(text) {
                // The memory budget cannot hold it: after this turn's pushes are written
                // (they give their share back), or a little later when there were none.
                if pushed == 0 {
                    d.retry_at = Some(now + MAIL_RETRY);
                } else {
                    d.more = true;
                }
                return;
            }
            pushed += 1;
            d.cursor = row.seq;
            d.in_flight.insert(row.id, now);
            d.drained_due = true;
            self.mailbox
                .counters
                .delivered
                .fetch_add(1, Ordering::Relaxed);
        }
        if full {
            d.more = true;
        } else if d.drained_due {
            d.drained_due = false;
            out.push(serde_json::to_string(&MailDrained::default()).unwrap_or_default());
        }
    }
}
