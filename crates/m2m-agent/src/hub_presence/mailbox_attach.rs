//! Mailbox (docs/MAILBOX.md): the `mailbox` action after each registration on a 2.1 hub
//! (the hub then pushes our mail to this WebSocket), and the `mail` action that stores a
//! sealed message, proving our key inline when this WebSocket did not register.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::hub::{errors as hub_errors, HubRequest};
use m2m_proto::identity::relay_attach_message;
use m2m_proto::mailbox::{MailQueued, MailboxSubscribed, ACTION_MAILBOX};
use tokio::sync::broadcast;

use super::HubPresence;
use crate::defaults::MAIL_EVENT_QUEUE;
use crate::error::{AgentError, Result};
use crate::hub_client::HubClient;
use crate::inbox::Inbox;
use crate::mailbox::subscription::{self, Subscription};
use crate::mailbox::MailboxReceiver;
use crate::message::AgentEvent;

/// How the agent uses the hub's mailbox.
#[derive(Debug)]
pub(crate) struct MailboxSettings {
    /// `None`: turned off (`AgentBuilder::mailbox(false)`): no key, no subscription.
    pub receiver: Option<Arc<MailboxReceiver>>,
    pub inbox: Arc<Inbox>,
    pub events: broadcast::Sender<AgentEvent>,
    pub ack_delay: Duration,
    /// The hub said it keeps no mail for us: not asked again.
    pub refused: AtomicBool,
}

/// Whether a hub error means "no mailbox here" (the hub predates it, or its operator
/// turned it off).
fn no_mailbox_here(e: &AgentError) -> bool {
    matches!(e, AgentError::Hub(e) if e == hub_errors::UNKNOWN_ACTION || e == hub_errors::MAILBOX_UNAVAILABLE)
}

impl HubPresence {
    /// The mailbox key to publish in a 2.1 registration, unless the mailbox is off.
    pub(super) fn mailbox_key(&self) -> Option<serde_json::Value> {
        let receiver = self.mailbox.receiver.as_ref()?;
        if self.mailbox.refused.load(Ordering::Acquire) {
            return None;
        }
        let identity = self.local.identity();
        let key = receiver
            .keys()
            .current(crate::mailbox::now_ms())
            .publish(identity);
        serde_json::to_value(key).ok()
    }

    /// After a 2.1 registration: subscribes this WebSocket to our mail and starts the task
    /// that delivers it. A hub without a mailbox is logged once and not asked again.
    pub(super) async fn subscribe_mailbox(&self, client: &HubClient, hub_verified: bool) {
        let Some(receiver) = self.mailbox.receiver.clone() else {
            return;
        };
        if !hub_verified || self.mailbox.refused.load(Ordering::Acquire) {
            return;
        }
        let events = client.mail_events(MAIL_EVENT_QUEUE);
        let req = HubRequest {
            action: Some(ACTION_MAILBOX.into()),
            ..HubRequest::default()
        };
        match client.request::<MailboxSubscribed>(req).await {
            Ok(subscribed) => {
                tracing::debug!(pending = subscribed.pending, "subscribed to our mailbox");
                let sub = Subscription::new(
                    client.clone(),
                    receiver,
                    self.mailbox.ack_delay,
                    Some(self.mailbox.events.clone()),
                );
                self.tracker.spawn(subscription::run(
                    sub,
                    events,
                    self.mailbox.inbox.clone(),
                    self.cancel.clone(),
                ));
            }
            Err(e) if no_mailbox_here(&e) => {
                self.mailbox.refused.store(true, Ordering::Release);
                tracing::info!(error = %e, "the hub keeps no mail for us: mailbox off for this hub");
            }
            Err(e) => tracing::debug!(error = %e, "mailbox subscription failed"),
        }
    }

    /// Sends the `mail` action `req` on the current WebSocket, proving our key with the
    /// connection's nonce when it did not register. `agent` names the recipient in errors.
    pub(crate) async fn mail(&self, mut req: HubRequest, agent: &str) -> Result<MailQueued> {
        let connected = self.connected()?;
        let unavailable = |reason: &str| AgentError::MailboxUnavailable {
            agent: agent.to_owned(),
            reason: reason.to_owned(),
        };
        if connected.registered {
            if !self.local.hub_verified() {
                return Err(unavailable("the hub is 2.0"));
            }
        } else {
            let Some(nonce) = Self::probe_challenge(&connected.client).await? else {
                return Err(unavailable("the hub is 2.0"));
            };
            let identity = self.local.identity();
            let public = identity.public();
            req.identity = Some(public.to_b64().into());
            req.signature = Some(
                identity
                    .sign_b64(&relay_attach_message(&nonce, &public))
                    .into(),
            );
        }
        connected.client.request(req).await
    }
}
