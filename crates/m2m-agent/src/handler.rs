//! Request handlers and typed payloads: [`Agent::on_request`], [`Agent::send_json`],
//! [`Agent::request_as`] and [`Message::payload_as`].
//!
//! A handler takes one message type off the inbox (its own bounded queue, see
//! [`Inbox::route`](crate::inbox::Inbox)), runs for each request in a task of its own, at
//! most [`HANDLERS_AT_ONCE`] at a time, and its result is sent back with
//! [`Agent::respond`]: `<type>:response` with the request's correlationId, an `Err` as
//! `{"error": "<message>"}` — the shape `m2m listen --exec` answers failures with.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::agent::Agent;
use crate::error::{AgentError, Result};
use crate::message::{Delivery, Message};

pub use crate::defaults::HANDLERS_AT_ONCE;
use crate::defaults::HANDLER_QUEUE;

/// Why a request handler failed; answered to the requester as `{"error": "<message>"}`.
///
/// Any error type converts into it with `?`, as with `anyhow`; [`HandlerError::new`] makes
/// one from a message.
pub struct HandlerError(String);

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        HandlerError(message.to_string())
    }

    /// The message sent to the requester.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HandlerError").field(&self.0).finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// No `impl std::error::Error for HandlerError`: it would overlap with this conversion.
impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError(error.to_string())
    }
}

/// What a request handler returns: the response payload, or why there is none.
pub type HandlerResult<T = Value> = std::result::Result<T, HandlerError>;

impl Message {
    /// The payload as a `T`; [`AgentError::InvalidPayload`] when it does not fit.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.payload)
            .map_err(|e| AgentError::InvalidPayload(format!("{} payload: {e}", self.message_type)))
    }
}

fn to_payload<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| AgentError::InvalidPayload(format!("{what}: {e}")))
}

impl Agent {
    /// Answers every incoming `message_type` request with what `handler` returns, like an
    /// axum handler: `Ok(payload)` is sent back as `<message_type>:response` with the
    /// request's correlationId, `Err(e)` as `{"error": "<e>"}`. Requests of that type no
    /// longer reach [`Agent::next_message`] or [`Agent::on_message`]; a later call for the
    /// same type replaces this handler. Handlers run concurrently, up to
    /// [`HANDLERS_AT_ONCE`], until the agent is disconnected.
    ///
    /// ```no_run
    /// # async fn run(agent: m2m_agent::Agent) {
    /// use m2m_agent::{json, HandlerError};
    ///
    /// agent.on_request("compute", |req| async move {
    ///     let numbers: Vec<i64> = req.payload_as()?;
    ///     if numbers.is_empty() {
    ///         return Err(HandlerError::new("nothing to add"));
    ///     }
    ///     Ok(json!({ "sum": numbers.iter().sum::<i64>() }))
    /// });
    /// # }
    /// ```
    pub fn on_request<F, Fut, T>(&self, message_type: &str, handler: F)
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<T>> + Send + 'static,
        T: Serialize + 'static,
    {
        let mut requests = self.inbox().route(message_type, HANDLER_QUEUE);
        // The loop holds no `Agent`: dropping the application's last handle still stops it.
        let weak = self.downgrade();
        let stop = self.cancel_token();
        let tracker = self.tracker().clone();
        let slots = Arc::new(Semaphore::new(HANDLERS_AT_ONCE));
        self.tracker().spawn(async move {
            loop {
                let slot = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    slot = slots.clone().acquire_owned() => slot,
                };
                let Ok(slot) = slot else { break };
                let request = tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    request = requests.recv() => request,
                };
                let Some(request) = request else { break };
                let Some(agent) = Agent::upgrade(&weak) else {
                    break;
                };
                let answer = handler(request.clone());
                tracker.spawn(async move {
                    let payload = match answer.await {
                        Ok(value) => match to_payload("response", &value) {
                            Ok(payload) => payload,
                            Err(e) => json!({ "error": e.to_string() }),
                        },
                        Err(e) => json!({ "error": e.message() }),
                    };
                    if let Err(e) = agent.respond(&request, payload).await {
                        tracing::debug!(error = %e, from = %request.from, "response not delivered");
                    }
                    drop(slot);
                });
            }
        });
    }

    /// [`Agent::send`] with any serializable payload.
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        id: &str,
        message_type: &str,
        payload: &T,
    ) -> Result<Delivery> {
        let payload = to_payload(message_type, payload)?;
        self.send(id, message_type, payload).await
    }

    /// [`Agent::request`] with a serializable payload and the response read as an `R`
    /// ([`AgentError::InvalidPayload`] when it does not fit — an `{"error": …}` answer
    /// from a failed handler, for instance, unless `R` accepts it).
    pub async fn request_as<R: DeserializeOwned, T: Serialize + ?Sized>(
        &self,
        id: &str,
        message_type: &str,
        payload: &T,
        timeout: Option<Duration>,
    ) -> Result<R> {
        let payload = to_payload(message_type, payload)?;
        let response = self.request(id, message_type, payload, timeout).await?;
        R::deserialize(&response).map_err(|e| {
            AgentError::InvalidPayload(format!("{message_type}:response payload: {e}"))
        })
    }
}
