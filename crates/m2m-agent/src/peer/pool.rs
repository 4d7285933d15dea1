//! The pool of outbound connections: one per address and [`Credentials`], reused for every
//! send, opened on demand; a reused connection found dead before the peer acked anything we
//! queued is retried once on a fresh one.

use std::collections::HashMap;
use std::sync::Arc;

use m2m_proto::Identity;
use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Credentials, OutboundSettings, PeerConnection, SendFailure};
use crate::defaults::MAX_POOL_ENTRIES;
use crate::error::{AgentError, Result};
use crate::inbox::Inbox;

type Slot = Arc<tokio::sync::Mutex<Option<Arc<PeerConnection>>>>;

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

    /// The pooled connection to `address` (reused = true), or a new one.
    async fn connection(
        &self,
        address: &str,
        credentials: &Credentials,
    ) -> Result<(Arc<PeerConnection>, bool)> {
        let slot = self.slot(address, credentials);
        let mut held = slot.lock().await;
        if let Some(conn) = held.as_ref().filter(|c| c.is_usable(credentials)) {
            return Ok((conn.clone(), true));
        }
        // Boxed: the handshake's state is most of this future's size, and every send would
        // otherwise copy it around.
        let conn = Box::pin(PeerConnection::open(
            address,
            credentials,
            &self.identity,
            &self.settings,
            &self.inbox,
            &self.cancel,
            &self.tracker,
        ))
        .await?;
        if let Some(old) = held.replace(conn.clone()) {
            old.close();
        }
        Ok((conn, false))
    }

    /// Sends one message to `address` under `credentials` over a pooled connection. Not
    /// bounded in time: the caller applies the send timeout.
    pub(crate) async fn send(
        &self,
        address: &str,
        credentials: &Credentials,
        message_type: &str,
        payload: &Value,
        correlation_id: &str,
    ) -> Result<()> {
        let (conn, reused) = self.connection(address, credentials).await?;
        match conn.send(message_type, payload, correlation_id).await {
            Ok(()) => Ok(()),
            Err(SendFailure::Failed(e)) => Err(e),
            Err(SendFailure::Lost {
                nothing_acked: true,
                ..
            }) if reused => {
                tracing::debug!(address, "pooled connection was dead; retrying on a new one");
                let (conn, _) = self.connection(address, credentials).await?;
                match conn.send(message_type, payload, correlation_id).await {
                    Ok(()) => Ok(()),
                    Err(SendFailure::Failed(e)) => Err(e),
                    Err(SendFailure::Lost { reason, .. }) => {
                        Err(AgentError::unreachable(address, reason))
                    }
                }
            }
            Err(SendFailure::Lost { reason, .. }) => Err(AgentError::unreachable(address, reason)),
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
