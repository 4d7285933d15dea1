//! [`fetch_mail`]: the mailbox of a short-lived agent (`m2m inbox`, an LLM tool run, a cron
//! job). It connects to the hub with an identity, subscribes with the attach proof of
//! docs/RELAY.md section 1 — no registration, so the agent never appears online — hands
//! each opened message to a callback, acks it after the callback returned, and returns once
//! the hub said `mail_drained` and everything was acked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::hub::HubRequest;
use m2m_proto::identity::relay_attach_message;
use m2m_proto::mailbox::{MailboxKeys, MailboxSubscribed, ACTION_MAILBOX, MAX_ACK_IDS};
use m2m_proto::Identity;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::subscription::{Seen, Sink, Subscription};
use super::MailboxReceiver;
use crate::config::hub_url;
use crate::defaults::{HUB_REQUEST_TIMEOUT, MAIL_ACK_DELAY, MAIL_EVENT_QUEUE, MAIL_SEEN_IDS};
use crate::error::{AgentError, Result};
use crate::hub_client::HubClient;
use crate::hub_presence::HubPresence;
use crate::message::Message;

/// What [`fetch_mail`] does.
#[derive(Debug, Clone)]
pub struct FetchMail {
    /// The hub (as [`AgentBuilder::hub`](crate::AgentBuilder::hub) takes it).
    pub hub: String,
    /// Whose mail: the identity its messages are sealed to.
    pub identity: Identity,
    /// When nothing is pending, how long to wait for mail to arrive (zero: return at once).
    pub wait: Duration,
    /// A file keeping the ids already delivered, so that a message the hub replays after
    /// an earlier run acked it is dropped (`duplicate`), not delivered again.
    pub state_file: Option<PathBuf>,
    /// How long a hub request (connect, subscribe, ack) may take, and how long the hub may
    /// stay silent before `mail_drained` (default [`HUB_REQUEST_TIMEOUT`]).
    pub request_timeout: Duration,
}

impl FetchMail {
    /// Fetch `identity`'s mail at `hub`, not waiting, without a state file.
    pub fn new(hub: &str, identity: Identity) -> Self {
        FetchMail {
            hub: hub.to_owned(),
            identity,
            wait: Duration::ZERO,
            state_file: None,
            request_timeout: HUB_REQUEST_TIMEOUT,
        }
    }
}

/// What [`fetch_mail`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// Messages handed to the callback (and acked).
    pub delivered: usize,
    /// Messages dropped (and acked): (reason, message id), the reason as
    /// [`AgentEvent::MailDropped`](crate::AgentEvent::MailDropped) gives it.
    pub dropped: Vec<(String, String)>,
}

/// Fetches the mail stored for `options.identity`: connects, subscribes without
/// registering, calls `on_message` for each message (oldest first; `authenticated`, the
/// verified `from`, `timestamp` = when it was sent, `route` = [`Route::Mailbox`](crate::Route::Mailbox)),
/// acks it once `on_message` returned, and returns when the hub said everything was pushed
/// and all of it was acked. When nothing was pending it first waits up to `options.wait`
/// for mail to arrive. Fails with [`AgentError::MailboxUnavailable`] on a 2.0 hub or one
/// that keeps no mail.
pub async fn fetch_mail(
    options: FetchMail,
    mut on_message: impl FnMut(Message) + Send,
) -> Result<FetchReport> {
    let url = hub_url(&options.hub)?;
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let client = HubClient::connect(&url, options.request_timeout, &cancel, &tracker).await?;
    let result = fetch_on(&client, &options, &mut on_message, &cancel).await;
    client.close();
    cancel.cancel();
    tracker.close();
    let _ = tokio::time::timeout(options.request_timeout, tracker.wait()).await;
    result
}

async fn fetch_on(
    client: &HubClient,
    options: &FetchMail,
    on_message: &mut (dyn FnMut(Message) + Send),
    cancel: &CancellationToken,
) -> Result<FetchReport> {
    let me = options.identity.agent_id().to_owned();
    let unavailable = |reason: &str| AgentError::MailboxUnavailable {
        agent: me.clone(),
        reason: reason.to_owned(),
    };
    let Some(nonce) = HubPresence::probe_challenge(client).await? else {
        return Err(unavailable("the hub is 2.0"));
    };
    let receiver = Arc::new(MailboxReceiver::new(
        MailboxKeys::new(options.identity.clone()),
        MAIL_SEEN_IDS,
        options.state_file.as_deref(),
    ));
    let mut events = client.mail_events(MAIL_EVENT_QUEUE);
    let public = options.identity.public();
    let req = HubRequest {
        action: Some(ACTION_MAILBOX.into()),
        identity: Some(public.to_b64().into()),
        signature: Some(
            options
                .identity
                .sign_b64(&relay_attach_message(&nonce, &public))
                .into(),
        ),
        ..HubRequest::default()
    };
    let subscribed: MailboxSubscribed = match client.request(req).await {
        Err(AgentError::Hub(e))
            if e == m2m_proto::hub::errors::UNKNOWN_ACTION
                || e == m2m_proto::hub::errors::MAILBOX_UNAVAILABLE =>
        {
            return Err(unavailable("the hub keeps no mail"))
        }
        other => other?,
    };
    let mut sub = Subscription::new(client.clone(), receiver, MAIL_ACK_DELAY, None);
    let mut sink = Sink::Callback(on_message);
    let mut report = FetchReport::default();
    // With nothing pending, the first `mail_drained` says nothing new: wait for mail.
    let mut waiting = subscribed.pending == 0;
    let mut deadline = tokio::time::Instant::now()
        + if waiting {
            options.wait
        } else {
            options.request_timeout
        };
    loop {
        let flush_at = sub.flush_at();
        let flush = async {
            match flush_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = client.closed() => return Err(AgentError::NotConnected),
            _ = flush => sub.flush().await?,
            _ = tokio::time::sleep_until(deadline) => break,
            event = events.recv() => {
                let Some(event) = event else { break };
                match sub.on_event(event, &mut sink, cancel).await {
                    Seen::Delivered => report.delivered += 1,
                    Seen::Drained if !waiting => break,
                    Seen::Drained | Seen::Dropped | Seen::Other => {}
                }
                if sub.pending_acks() >= MAX_ACK_IDS {
                    sub.flush().await?;
                }
                if waiting && sub.has_pending_acks() {
                    // Mail came: drain it all now.
                    waiting = false;
                }
                if !waiting {
                    // The hub is not silent: give it the idle time again.
                    deadline = tokio::time::Instant::now() + options.request_timeout;
                }
            }
        }
    }
    sub.flush().await?;
    report.dropped = std::mem::take(&mut sub.drops);
    Ok(report)
}
