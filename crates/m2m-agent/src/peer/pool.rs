//! The pool of outbound connections: one per address and [`Credentials`], reused for every
//! send, opened on demand; a reused connection found dead before the peer acked anything we
//! queued is retried once on a fresh one. Relayed sessions are pooled the same way under
//! `relay:<id>` ([`Dial::key`]), so a relayed and a direct session to one peer never mix.

use std::collections::HashMap;
use std::sync::Arc;

use m2m_proto::Identity;
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Credentials, Dial, OutboundSettings, PeerConnection, SendFailure};
use crate::defaults::MAX_POOL_ENTRIES;
use crate::error::{AgentError, Result};
use crate::inbox::Inbox;

type Slot = Arc<tokio::sync::Mutex<Option<Arc<PeerConnection>>>>;

/// How [`Pool::try_send`] failed.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// No connection could be made: nothing was sent.
    Dial(AgentError),
    /// The message may have been sent.
    Send(AgentError),
}

impl PoolError {
    /// The error, whichever it was.
    pub(crate) fn into_error(self) -> AgentError {
        match self {
            PoolError::Dial(e) | PoolError::Send(e) => e,
        }
    }
}

/// Outbound connections by address and credentials.
pub(crate) struct Pool {
    /// By address, then credentials (looked up without building an owned key per send).
    slots: Mutex<HashMap<String, Vec<(Credentials, Slot)>>>,
    settings: OutboundSettings,
    identity: Identity,
    inbox: Arc<Inbox>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field(
                "slots",
                &self.slots.lock().values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(
        settings: OutboundSettings,
        identity: Identity,
        inbox: Arc<Inbox>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        Pool {
            slots: Mutex::new(HashMap::new()),
            settings,
            identity,
            inbox,
            cancel,
            tracker,
        }
    }

    fn slot(&self, address: &str, credentials: &Credentials) -> Slot {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots
            .get(address)
            .and_then(|list| list.iter().find(|(c, _)| c == credentials))
        {
            return slot.1.clone();
        }
        if slots.values().map(Vec::len).sum::<usize>() >= MAX_POOL_ENTRIES {
            slots.retain(|_, list| {
                list.retain(|(_, slot)| match slot.try_lock() {
                    Ok(conn) => conn.as_ref().is_some_and(|c| !c.conn.is_closed()),
                    Err(_) => true,
                });
                !list.is_empty()
            });
        }
        let slot = Slot::default();
        slots
            .entry(address.to_owned())
            .or_default()
            .push((credentials.clone(), slot.clone()));
        slot
    }

    /// The pooled connection for `dial` (reused = true), or a new one.
    async fn connection(
        &self,
        dial: &Dial,
        credentials: &Credentials,
    ) -> std::result::Result<(Arc<PeerConnection>, bool), AgentError> {
        let slot = self.slot(&dial.key(), credentials);
        let mut held = slot.lock().await;
        if let Some(conn) = held.as_ref().filter(|c| c.is_usable(credentials)) {
            return Ok((conn.clone(), true));
        }
        // Boxed: the handshake's state is most of this future's size, and every send would
        // otherwise copy it around.
        let conn = Box::pin(PeerConnection::open(
            dial,
            credentials,
            &self.identity,
            &self.settings,
            &self.inbox,
            &self.cancel,
            &self.tracker,
        ))
        .await
        .map_err(|e| e.error)?;
        if let Some(old) = held.replace(conn.clone()) {
            old.close();
        }
        Ok((conn, false))
    }

    /// Sends one message to `address` (direct) under `credentials` over a pooled
    /// connection. Not bounded in time: the caller applies the send timeout.
    pub(crate) async fn send(
        &self,
        address: &str,
        credentials: &Credentials,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        let dial = Dial::tcp(address);
        self.send_via(&dial, credentials, message_type, payload, correlation_id)
            .await
    }

    /// [`Pool::send`] over `dial` (direct or relayed).
    pub(crate) async fn send_via(
        &self,
        dial: &Dial,
        credentials: &Credentials,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        self.try_send(dial, credentials, message_type, payload, correlation_id)
            .await
            .map_err(PoolError::into_error)
    }

    /// [`Pool::send`], telling a dial that failed before anything was sent (another route
    /// may be tried) from a failure after.
    pub(crate) async fn try_send(
        &self,
        dial: &Dial,
        credentials: &Credentials,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> std::result::Result<(), PoolError> {
        let address = dial.key();
        let address = address.as_str();
        let (conn, reused) = self
            .connection(dial, credentials)
            .await
            .map_err(PoolError::Dial)?;
        let failed = |e| Err(PoolError::Send(e));
        match conn.send(message_type, payload, correlation_id).await {
            Ok(()) => Ok(()),
            Err(SendFailure::Failed(e)) => failed(e),
            Err(SendFailure::Lost {
                nothing_acked: true,
                ..
            }) if reused => {
                tracing::debug!(address, "pooled connection was dead; retrying on a new one");
                let (conn, _) = self
                    .connection(dial, credentials)
                    .await
                    .map_err(PoolError::Send)?;
                match conn.send(message_type, payload, correlation_id).await {
                    Ok(()) => Ok(()),
                    Err(SendFailure::Failed(e)) => failed(e),
                    Err(SendFailure::Lost { reason, .. }) => {
                        failed(AgentError::unreachable(address, reason))
                    }
                }
            }
            Err(SendFailure::Lost { reason, .. }) => {
                failed(AgentError::unreachable(address, reason))
            }
        }
    }

    /// Closes every pooled connection (used when our id or hub standing changes).
    pub(crate) fn clear(&self) {
        let slots: Vec<Slot> = self
            .slots
            .lock()
            .drain()
            .flat_map(|(_, list)| list.into_iter().map(|(_, s)| s))
            .collect();
        for slot in slots {
            if let Ok(conn) = slot.try_lock() {
                if let Some(c) = conn.as_ref() {
                    c.close();
                }
            }
        }
    }

    /// The pooled connection to `address` under `credentials`, if any (tests).
    #[cfg(test)]
    pub(crate) fn pooled(
        &self,
        address: &str,
        credentials: &Credentials,
    ) -> Option<Arc<PeerConnection>> {
        let slot = self
            .slots
            .lock()
            .get(address)?
            .iter()
            .find(|(c, _)| c == credentials)?
            .1
            .clone();
        let conn = slot.try_lock().ok()?.clone();
        conn
    }

    /// Number of live pooled connections (tests).
    #[cfg(test)]
    pub(crate) fn live(&self) -> usize {
        self.slots
            .lock()
            .values()
            .flatten()
            .map(|(_, s)| s)
            .filter(|s| {
                s.try_lock()
                    .map(|c| c.as_ref().is_some_and(|c| !c.conn.is_closed()))
                    .unwrap_or(true)
            })
            .count()
    }
}
