//! The supervisor task: heartbeats while connected; on loss, reconnects with backoff and
//! re-registers, telling the application through [`AgentEvent`]s.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use m2m_proto::hub::{HeartbeatAck, HubRequest};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Connected, HubPresence, PresenceTiming, SUPERSEDED};
use crate::defaults::MIN_HEARTBEAT_INTERVAL;
use crate::error::AgentError;
use crate::message::AgentEvent;
use crate::peer::Pool;

/// Heartbeats while connected; on loss, reconnects with backoff and re-registers. Runs until
/// `cancel`.
pub(crate) async fn supervise(
    presence: Arc<HubPresence>,
    pool: Arc<Pool>,
    events: broadcast::Sender<AgentEvent>,
    cancel: CancellationToken,
) {
    let timing = presence.timing.clone();
    loop {
        let Ok(connected) = presence.connected() else {
            return;
        };
        let reason = heartbeat_until_lost(&connected, &timing, &cancel).await;
        let Some(mut reason) = reason else { return };
        if presence.leaving.load(Ordering::Acquire) {
            return;
        }
        connected.client.close();
        // Another process registered with our identity: reconnecting would only take the
        // registration back from it, and it from us, in turn.
        let superseded = connected.client.is_superseded();
        if superseded {
            reason = SUPERSEDED.to_owned();
        }
        let _ = events.send(AgentEvent::Disconnected {
            reason: reason.clone(),
        });
        tracing::info!(%reason, "hub connection lost");
        if !timing.auto_reconnect || superseded {
            return;
        }
        let mut delay = timing.reconnect_delay;
        // The hub went away: with several hubs, the next one is tried first (they share
        // the database, so our registration and mail are there too).
        if presence.hub_count() > 1 {
            let next = presence.next_hub();
            tracing::info!(hub = %next, "moving to the next hub");
        }
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let attempt = tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                r = presence.register() => r,
            };
            match attempt {
                Ok(standing) => {
                    // Pooled connections declared the old id in their handshakes.
                    if standing.id != connected.id {
                        pool.clear();
                    }
                    tracing::info!(id = %standing.id, verified = standing.hub_verified, "re-registered at the hub");
                    let _ = events.send(AgentEvent::Reconnected {
                        hub: presence.hub_url().to_owned(),
                        id: standing.id,
                        address: standing.address,
                        reachable: standing.reachable,
                    });
                    break;
                }
                Err(error) => {
                    tracing::debug!(%error, ?delay, hub = %presence.hub_url(), "reconnect failed");
                    if presence.hub_count() > 1 {
                        presence.next_hub();
                    }
                    let _ = events.send(AgentEvent::Error { error });
                    delay = (delay * 2).min(timing.max_reconnect_delay.max(timing.reconnect_delay));
                }
            }
        }
    }
}

/// Returns why the connection was lost, or `None` when cancelled.
async fn heartbeat_until_lost(
    connected: &Connected,
    timing: &PresenceTiming,
    cancel: &CancellationToken,
) -> Option<String> {
    let mut ticks = tokio::time::interval(timing.heartbeat_interval.max(MIN_HEARTBEAT_INTERVAL));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            _ = connected.client.closed() => return Some("hub connection closed".into()),
            _ = ticks.tick() => {}
        }
        let req = HubRequest {
            action: Some("heartbeat".into()),
            id: Some(connected.id.clone().into()),
            ..HubRequest::default()
        };
        let beat = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            r = connected.client.request::<HeartbeatAck>(req) => r,
        };
        match beat {
            Ok(_) => {}
            Err(AgentError::Hub(error)) => {
                // The hub answers but refuses: our registration is gone; register again.
                return Some(format!("heartbeat refused: {error}"));
            }
            Err(e) => return Some(format!("heartbeat failed: {e}")),
        }
    }
}
