//! The hub side of the mailbox (docs/MAILBOX.md section 3): this hub's subscriptions, the
//! doorbells that wake them, and the fallback poll for mail stored through other hubs.
//!
//! ```text
//!  mail (this hub) ──► store (one transaction: row, quotas, NOTIFY m2m_mail) ──► ring(to)
//!  NOTIFY from another hub ──► the change listener (feed.rs) ──────────────────► ring(to)
//!  fallback poll (sync_interval): MAX(seq) grew ─────────────────────────────► ring_all()
//!                                                                                 │
//!  ring ─► the subscription's Notify ─► its WebSocket task runs a delivery turn
//!          (delivery.rs: read the oldest unpushed rows, push, mail_drained)
//! ```
//!
//! A subscription is one WebSocket's; the newest one of an agent id wins: here, the map
//! holds one per id and a new one ends the older; across hubs, the lease row
//! (`m2m_mail_leases`) names the newest, and a delivery turn that finds another token
//! there ends itself.

mod delivery;

pub(crate) use delivery::{turn_due, Delivery};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::defaults::MIN_TIMER_PERIOD;
use crate::state::HubState;
use crate::store::mail::{MailQuotas, MailStore};

/// One subscription's doorbell.
#[derive(Debug, Default)]
pub(crate) struct Sub {
    /// The lease token of this subscription (`m2m_mail_leases.token`).
    pub(crate) token: String,
    /// Rung when mail may be there to push; holds one wake-up.
    pub(crate) wake: Notify,
    /// A newer subscription of the same id took over.
    pub(crate) ended: AtomicBool,
}

/// Counters of `/metrics` (`m2m_hub_mail_*`).
#[derive(Debug, Default)]
pub(crate) struct MailCounters {
    pub(crate) stored: AtomicU64,
    pub(crate) stored_bytes: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) purged: AtomicU64,
    /// Refusals of `mail`, by reason: see [`REFUSALS`].
    pub(crate) refused: [AtomicU64; REFUSALS.len()],
}

/// Reasons a `mail` is refused, as `/metrics` labels (the error codes).
pub(crate) const REFUSALS: [&str; 6] = [
    m2m_proto::hub::errors::IDENTITY_REQUIRED,
    m2m_proto::hub::errors::AGENT_NOT_FOUND,
    m2m_proto::hub::errors::MAILBOX_UNAVAILABLE,
    m2m_proto::hub::errors::MESSAGE_TOO_LARGE,
    m2m_proto::hub::errors::MAILBOX_FULL,
    m2m_proto::hub::errors::EXPIRED,
];

impl MailCounters {
    /// Counts a refusal with error `code` (others are not mailbox refusals).
    pub(crate) fn refused(&self, code: &str) {
        if let Some(i) = REFUSALS.iter().position(|r| *r == code) {
            self.refused[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The mailbox of one hub.
#[derive(Debug)]
pub(crate) struct Mailbox {
    /// The mail tables, on the registry's database.
    pub(crate) store: Arc<dyn MailStore>,
    /// The newest local subscription of each agent id.
    subs: Mutex<HashMap<String, Arc<Sub>>>,
    pub(crate) counters: MailCounters,
}

impl Mailbox {
    /// The mailbox on `store`.
    pub(crate) fn new(store: Arc<dyn MailStore>) -> Self {
        Mailbox {
            store,
            subs: Mutex::new(HashMap::new()),
            counters: MailCounters::default(),
        }
    }

    /// A new subscription of `recipient` under `token`, ending this hub's older one;
    /// `None` when `max` subscriptions are held already.
    pub(crate) fn subscribe(&self, recipient: &str, token: String, max: usize) -> Option<Arc<Sub>> {
        let mut subs = self.subs.lock();
        if subs.len() >= max && !subs.contains_key(recipient) {
            return None;
        }
        let sub = Arc::new(Sub {
            token,
            ..Sub::default()
        });
        if let Some(old) = subs.insert(recipient.to_owned(), sub.clone()) {
            old.ended.store(true, Ordering::Release);
            old.wake.notify_one();
        }
        Some(sub)
    }

    /// Forgets `sub` (its WebSocket closed), unless a newer one replaced it already.
    pub(crate) fn unsubscribe(&self, recipient: &str, sub: &Arc<Sub>) {
        let mut subs = self.subs.lock();
        if subs.get(recipient).is_some_and(|s| Arc::ptr_eq(s, sub)) {
            subs.remove(recipient);
        }
    }

    /// Mail for `recipient` may be there: wakes its subscription here, if any.
    pub(crate) fn ring(&self, recipient: &str) {
        if let Some(sub) = self.subs.lock().get(recipient) {
            sub.wake.notify_one();
        }
    }

    /// A doorbell naming the raw 128-bit id (the NOTIFY payload, parsed).
    pub(crate) fn ring_raw(&self, id: u128) {
        self.ring(&format!("{id:032x}"));
    }

    /// Wakes every subscription (the fallback poll saw new mail somewhere).
    pub(crate) fn ring_all(&self) {
        for sub in self.subs.lock().values() {
            sub.wake.notify_one();
        }
    }

    /// Subscriptions held now.
    pub(crate) fn subscriptions(&self) -> usize {
        self.subs.lock().len()
    }
}

impl HubState {
    /// The quotas of this hub's configuration.
    pub(crate) fn mail_quotas(&self) -> MailQuotas {
        let c = &self.config.mailbox;
        MailQuotas {
            recipient_messages: c.recipient_messages,
            recipient_bytes: c.recipient_bytes,
            sender_messages: c.sender_messages,
            sender_bytes: c.sender_bytes,
            budget_bytes: c.budget,
        }
    }
}

/// The fallback poll (shared PostgreSQL only): every `sync_interval`, when the largest
/// `seq` grew, every subscription here is woken (each reads only past what it pushed).
/// The doorbell makes this a safety net for lost notifications.
pub(crate) async fn poll(state: Arc<HubState>, stop: CancellationToken) {
    let period = state.config.mailbox.sync_interval.max(MIN_TIMER_PERIOD);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = i64::MAX;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if state.mailbox.subscriptions() == 0 {
            continue;
        }
        match state.mailbox.store.last_seq().await {
            Ok(last) => {
                if last > seen {
                    state.mailbox.ring_all();
                }
                seen = last;
            }
            Err(e) => tracing::warn!(error = %e, "mail poll failed; will retry"),
        }
    }
}

impl MailCounters {
    /// Appends the `m2m_hub_mail_*` series to a `/metrics` body; `subscriptions` is the
    /// gauge of subscriptions held now.
    pub(crate) fn render(&self, out: &mut String, subscriptions: usize) {
        use std::fmt::Write as _;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "m2m_hub_mail_stored_total",
                "Mail messages stored through this hub.",
                load(&self.stored),
            ),
            (
                "m2m_hub_mail_stored_bytes_total",
                "Sealed bytes stored through this hub.",
                load(&self.stored_bytes),
            ),
            (
                "m2m_hub_mail_duplicates_total",
                "Mail sent again with a stored id (stored once).",
                load(&self.duplicates),
            ),
            (
                "m2m_hub_mail_delivered_total",
                "Mail messages pushed to subscriptions on this hub.",
                load(&self.delivered),
            ),
            (
                "m2m_hub_mail_redelivered_total",
                "Mail messages pushed again after the ack timeout.",
                load(&self.redelivered),
            ),
            (
                "m2m_hub_mail_acked_total",
                "Mail messages acked (deleted) through this hub.",
                load(&self.acked),
            ),
            (
                "m2m_hub_mail_purged_total",
                "Mail messages purged by this hub's sweep (expired, or of purged agents).",
                load(&self.purged),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_mail_refused_total Mail refused, by error."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_mail_refused_total counter");
        for (i, why) in REFUSALS.iter().enumerate() {
            let _ = writeln!(
                out,
                "m2m_hub_mail_refused_total{{reason=\"{why}\"}} {}",
                load(&self.refused[i])
            );
        }
        let _ = writeln!(
            out,
            "# HELP m2m_hub_mail_subscriptions Mailbox subscriptions held now."
        );
        let _ = writeln!(out, "# TYPE m2m_hub_mail_subscriptions gauge");
        let _ = writeln!(out, "m2m_hub_mail_subscriptions {subscriptions}");
    }
}
