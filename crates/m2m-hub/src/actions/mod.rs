//! The actions of PROTOCOL.md A2, one a file (as mini-redis's `cmd/`): a WebSocket's
//! message comes in through [`HubState::handle_text`], which checks its size, parses it,
//! takes a token from the client's request budget, answers `challenge` itself and hands
//! every other action to its file; each action reads the directory mirror or writes
//! through the writer, and returns its reply (or the error code of a refusal) as text.
//!
//! 2.1 (PROTOCOL.md B, docs/SECURITY.md "Hub registration"): every [`Client`] has a fresh
//! challenge nonce; a `register` carrying `identity` must sign it (with the address as sent
//! and the capabilities) and gets the id derived from the key. Such a registration replaces
//! any earlier one of the same id: the earlier WebSocket is closed (its evict token is
//! cancelled by the directory) and, because every write made on behalf of a WebSocket is
//! conditional on its registration token (`session` column), nothing that WebSocket still
//! does — its close included, on this hub or another — can touch the newer registration.

mod disconnect;
mod discover;
mod find;
mod heartbeat;
mod lookup;
mod mail;
mod mail_ack;
mod mail_batch;
mod mailbox;
mod register;
mod relay;
mod stats;
mod status;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use m2m_proto::hub::errors;
use m2m_proto::hub::{Action, HubRequest, Nonce, CHALLENGE_ACTION};
use serde_json::{Map, Value};

use crate::client::Client;
use crate::directory::AgentEntry;
use crate::metrics::action_index;
pub(crate) use crate::reply::ErrorCode;
use crate::reply::{ends_with_float_cid, error_text, exact_correlation_id, ok};
use crate::state::HubState;
use crate::store::Write;
use crate::writer::Unavailable;
pub(crate) use mail::mail_frame_limit;
pub(crate) use mail_batch::{MailBatch, Staged};

impl HubState {
    /// Answers one WebSocket message. Never fails: every problem is an error reply.
    pub(crate) async fn handle_text(&self, client: &mut Client, text: &str) -> String {
        // The parsed request (~0.9 KB) is dropped before anything is awaited: every
        // WebSocket's task holds room for what its futures keep across an await.
        let (started, action, cid, act) = match self.prepare(client, text) {
            Ok(prepared) => prepared,
            // Early replies are short: looking at their end costs nothing.
            Err(reply) if reply.len() < 512 && ends_with_float_cid(&reply) => {
                return exact_correlation_id(text, reply)
            }
            Err(reply) => return reply,
        };
        let float_cid = matches!(&cid, Some(Value::Number(n)) if n.is_f64());
        let result = self.dispatch(client, act, cid.clone()).await;
        self.metrics
            .request(action, result.is_ok(), started.elapsed());
        let reply = result.unwrap_or_else(|ErrorCode(code)| error_text(&code, cid));
        if float_cid {
            exact_correlation_id(text, reply)
        } else {
            reply
        }
    }

    /// Parses and admits a message: the action to run (with the metrics index and the
    /// correlationId), or the reply when there is nothing to run.
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        client: &mut Client,
        text: &str,
    ) -> Result<(Instant, usize, Option<Value>, Action), String> {
        let started = Instant::now();
        let limits = &self.config.limits;
        if text.len() > limits.max_message_bytes && !self.mail_sized(text) {
            self.metrics.oversized.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .request(action_index(None), false, started.elapsed());
            return Err(error_text(errors::MESSAGE_TOO_LARGE, None));
        }
        let request = match HubRequest::parse(text) {
            Ok(r) => r,
            Err(_) => {
                self.metrics
                    .request(action_index(None), false, started.elapsed());
                return Err(error_text(errors::INVALID_JSON, None));
            }
        };
        let action = action_index(request.action_name());
        let cid = request.correlation_id.clone();
        // No clock read when requests are unlimited (as `hub-serve` runs for the benches).
        if !self.request_rate.is_unlimited()
            && !client.take_request(self.request_rate, self.instant())
        {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            self.metrics.request(action, false, started.elapsed());
            return Err(error_text(errors::RATE_LIMITED, cid));
        }
        // `challenge` is a hub-level probe, not an `Action`: it names no agent.
        let result = if request.action_name() == Some(CHALLENGE_ACTION) {
            let nonce = Nonce {
                nonce: client.nonce.clone(),
            };
            Ok(ok(nonce, cid.clone()))
        } else {
            match request.action() {
                Ok(a) => return Ok((started, action, cid, a)),
                Err(e) => Err(ErrorCode(e.code())),
            }
        };
        self.metrics
            .request(action, result.is_ok(), started.elapsed());
        Err(result.unwrap_or_else(|ErrorCode(code)| error_text(&code, cid)))
    }

    async fn dispatch(
        &self,
        client: &mut Client,
        action: Action,
        cid: Option<Value>,
    ) -> Result<String, ErrorCode> {
        // The actions that wait for the database are boxed: every WebSocket's task holds
        // room for the largest future it may await, and these are kilobytes that an idle
        // connection would otherwise carry all its life.
        match action {
            Action::Register(r) => Box::pin(self.register(client, r)).await.map(|b| ok(b, cid)),
            Action::Discover(d) => Ok(self.discover(&d, cid)),
            Action::Find(f) => Ok(self.find(&f, cid)),
            Action::Lookup { id } => self.lookup(&id, cid).await,
            Action::Heartbeat { id } => self.heartbeat(client, &id).await.map(|b| ok(b, cid)),
            Action::Status {
                id,
                status,
                metadata,
            } => Box::pin(self.set_status(client, &id, status, metadata))
                .await
                .map(|b| ok(b, cid)),
            Action::Disconnect { id } => Box::pin(self.disconnect(client, &id))
                .await
                .map(|b| ok(b, cid)),
            Action::Stats => Ok(ok(self.stats(), cid)),
            Action::Relay {
                identity,
                signature,
            } => Box::pin(self.relay_attach(client, identity, signature, cid)).await,
            Action::Mail(m) => Box::pin(self.mail(client, m)).await.map(|b| ok(b, cid)),
            Action::Mailbox {
                identity,
                signature,
            } => Box::pin(self.mailbox_subscribe(client, identity, signature, cid)).await,
            Action::MailAck { ids } => Box::pin(self.mail_ack(client, ids))
                .await
                .map(|b| ok(b, cid)),
        }
    }

    /// Whether `text`, over `max_message_bytes`, is a `mail` within the mailbox's own
    /// bound (a sealed message may be `max_sealed`, more than other requests need).
    fn mail_sized(&self, text: &str) -> bool {
        let cfg = &self.config.mailbox;
        cfg.enabled
            && text.len() <= mail::mail_frame_limit(cfg.max_sealed)
            && HubRequest::parse(text)
                .is_ok_and(|r| r.action_name() == Some(m2m_proto::mailbox::ACTION_MAIL))
    }

    fn check_capabilities(&self, caps: &[String]) -> Result<(), ErrorCode> {
        let limits = &self.config.limits;
        if caps.len() > limits.max_capabilities {
            return Err(errors::TOO_MANY_CAPABILITIES.into());
        }
        if caps.iter().any(|c| c.len() > limits.max_capability_len) {
            return Err(errors::CAPABILITY_TOO_LONG.into());
        }
        Ok(())
    }

    fn check_metadata(&self, metadata: &Map<String, Value>) -> Result<(), ErrorCode> {
        let size = serde_json::to_vec(metadata)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > self.config.limits.max_metadata_bytes {
            return Err(errors::METADATA_TOO_LARGE.into());
        }
        Ok(())
    }

    /// The entry `id` of this WebSocket, unless a newer registration took the id over.
    fn owned_entry(&self, client: &Client, id: &str) -> Result<Arc<AgentEntry>, ErrorCode> {
        client
            .owned(id)
            .filter(|e| !e.is_replaced())
            .ok_or(ErrorCode::from(errors::FORBIDDEN))
    }

    async fn write_offline(&self, entry: &AgentEntry) -> Result<Option<i64>, Unavailable> {
        self.writer
            .write(Write::SetStatus {
                id: entry.id.to_string(),
                token: entry.token.to_string(),
                status: m2m_proto::hub::status::OFFLINE.to_owned(),
                last_seen: None,
            })
            .await
    }
}
