//! `mail` in batches (docs/PERFORMANCE.md "Mailbox"): a WebSocket's read batch stages
//! each message ([`HubState::stage`]); consecutive `mail`s that pass their checks wait in a
//! [`MailBatch`] and are stored together in one transaction when anything else comes, the
//! batch is full, or nothing more is readable. Each is still answered in order with its
//! own outcome, and any other request runs only after the mail before it is stored, so
//! what a client sees is what one-at-a-time handling gives, at one commit per batch.

use std::time::Instant;

use m2m_proto::hub::Action;
use serde_json::Value;
use tungstenite::Utf8Bytes;

use super::mail::CheckedMail;
use super::ErrorCode;
use crate::budget::Charge;
use crate::client::Client;
use crate::defaults::mail::{MAIL_STORE_BATCH, MAIL_STORE_BATCH_BYTES};
use crate::outbox::Outbox;
use crate::reply::{ends_with_float_cid, error_text, exact_correlation_id, ok};
use crate::state::HubState;

/// What staging a WebSocket message gave.
pub(crate) enum Staged {
    /// Its reply (empty when deferred).
    Reply(String),
    /// A checked `mail`: add it to the batch.
    Mail(PendingMail),
    /// Another request: store the batch first, then [`HubState::run_staged`] it.
    Run(Prepared),
}

/// A request admitted and parsed, not yet run.
pub(crate) struct Prepared {
    started: Instant,
    action: usize,
    cid: Option<Value>,
    act: Action,
}

/// A checked `mail` waiting for its batch.
pub(crate) struct PendingMail {
    started: Instant,
    action: usize,
    cid: Option<Value>,
    checked: CheckedMail,
}

/// The `mail`s of one WebSocket waiting to be stored together, with their texts (the
/// replies copy an exact float correlationId from them). What it holds (texts and
/// decoded sealed bytes) is charged to the memory budget's frame share: when the budget
/// cannot cover one more, the batch is stored at once.
#[derive(Default)]
pub(crate) struct MailBatch {
    items: Vec<(PendingMail, Utf8Bytes)>,
    /// Sealed bytes held (the batch's own bound).
    sealed: usize,
    /// Texts and sealed bytes held, and their charge.
    held: usize,
    charge: Option<Charge>,
}

impl MailBatch {
    /// Adds a checked `mail`; whether the batch is to be stored now (full, or the memory
    /// budget cannot hold more).
    pub(crate) fn push(&mut self, state: &HubState, mail: PendingMail, text: Utf8Bytes) -> bool {
        let sealed = mail.checked.mail.sealed.len();
        self.sealed += sealed;
        self.held += sealed + text.len();
        self.items.push((mail, text));
        let charge = self
            .charge
            .get_or_insert_with(|| state.admission.memory.frames.empty());
        !charge.resize(self.held)
            || self.items.len() >= MAIL_STORE_BATCH
            || self.sealed >= MAIL_STORE_BATCH_BYTES
    }

    /// Stores the batch (one transaction) and offers each reply to `out`, in order.
    pub(crate) async fn flush(&mut self, state: &HubState, out: &mut Outbox) {
        if self.items.is_empty() {
            return;
        }
        let items = std::mem::take(&mut self.items);
        let (pending, texts): (Vec<PendingMail>, Vec<Utf8Bytes>) = items.into_iter().unzip();
        let mut meta = Vec::with_capacity(pending.len());
        let checked = pending
            .into_iter()
            .map(|p| {
                meta.push((p.started, p.action, p.cid));
                p.checked
            })
            .collect();
        let results = Box::pin(state.mail_store(checked)).await;
        for ((result, (started, action, cid)), text) in results.into_iter().zip(meta).zip(texts) {
            state
                .metrics
                .request(action, result.is_ok(), started.elapsed());
            let float_cid = matches!(&cid, Some(Value::Number(n)) if n.is_f64());
            let reply = match result {
                Ok(b) => ok(b, cid),
                Err(ErrorCode(code)) => error_text(&code, cid),
            };
            let reply = if float_cid {
                exact_correlation_id(text.as_str(), reply)
            } else {
                reply
            };
            out.offer(reply, text.as_str(), state);
        }
        (self.sealed, self.held) = (0, 0);
        if let Some(charge) = &mut self.charge {
            charge.resize(0);
        }
    }
}

impl HubState {
    /// Stages one WebSocket message: parses and admits it as [`HubState::handle_text`]
    /// does; a `mail` is checked and left for the batch, anything else is left to run.
    pub(crate) fn stage(&self, client: &mut Client, text: &str) -> Staged {
        let (started, action, cid, act) = match self.prepare(client, text) {
            Ok(prepared) => prepared,
            Err(reply) if reply.len() < 512 && ends_with_float_cid(&reply) => {
                return Staged::Reply(exact_correlation_id(text, reply))
            }
            Err(reply) => return Staged::Reply(reply),
        };
        let Action::Mail(m) = act else {
            return Staged::Run(Prepared {
                started,
                action,
                cid,
                act,
            });
        };
        match self.mail_check(client, m) {
            Ok(checked) => Staged::Mail(PendingMail {
                started,
                action,
                cid,
                checked,
            }),
            Err(e) => {
                let ErrorCode(code) = self.mail_refused(e);
                self.metrics.request(action, false, started.elapsed());
                let float_cid = matches!(&cid, Some(Value::Number(n)) if n.is_f64());
                let reply = error_text(&code, cid);
                Staged::Reply(if float_cid {
                    exact_correlation_id(text, reply)
                } else {
                    reply
                })
            }
        }
    }

    /// Runs a staged request other than `mail` (the rest of [`HubState::handle_text`]).
    pub(crate) async fn run_staged(&self, client: &mut Client, p: Prepared, text: &str) -> String {
        let float_cid = matches!(&p.cid, Some(Value::Number(n)) if n.is_f64());
        let result = self.dispatch(client, p.act, p.cid.clone()).await;
        self.metrics
            .request(p.action, result.is_ok(), p.started.elapsed());
        let reply = result.unwrap_or_else(|ErrorCode(code)| error_text(&code, p.cid));
        if float_cid {
            exact_correlation_id(text, reply)
        } else {
            reply
        }
    }
}
