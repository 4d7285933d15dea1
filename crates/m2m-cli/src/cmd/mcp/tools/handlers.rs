//! What each tool does: one method per tool, taking its parsed arguments (or the refusal
//! of them) and returning the JSON result.

use std::sync::atomic::Ordering;
use std::time::Duration;

use m2m_agent::{BroadcastOptions, DiscoverOptions, Value};
use serde_json::json;

use super::catalogue::*;
use super::checks::{in_range, name_arg, payload, refuse};
use super::*;

impl Tools {
    pub(super) fn whoami(&self, args: Result<NoArgs, ToolError>) -> Outcome {
        args?;
        let agent = &self.agent;
        Ok(json!({
            "id": agent.id(),
            "address": agent.address(),
            "hub": self.hub,
            "capabilities": agent.config().capabilities,
            "verified": agent.hub_verified(),
            // The public half only: the secret never leaves the key file and this process.
            "identityKey": agent.identity().public().to_b64(),
            "connected": !agent.is_disconnected() && !self.superseded.load(Ordering::Relaxed),
        }))
    }

    pub(super) async fn discover(&self, args: Result<DiscoverArgs, ToolError>) -> Outcome {
        let args = args?;
        for c in &args.capabilities {
            name_arg("a capability", c)?;
        }
        if let Some(s) = &args.status {
            name_arg("status", s)?;
        }
        if let Some(limit) = args.limit {
            in_range("limit", limit, 1, m2m_proto::limits::MAX_PAGE)?;
        }
        let peers = self
            .agent
            .discover(DiscoverOptions {
                capabilities: args.capabilities,
                status: args.status,
                limit: args.limit,
                offset: args.offset,
            })
            .await?;
        Ok(json!({ "count": peers.len(), "agents": peers }))
    }

    pub(super) async fn find(&self, args: Result<FindArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("capability", &args.capability)?;
        let agents = self.agent.find(&args.capability).await?;
        Ok(json!({ "count": agents.len(), "agents": agents }))
    }

    pub(super) async fn lookup(&self, args: Result<LookupArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("id", &args.id)?;
        let record = self.agent.lookup(&args.id).await?;
        Ok(json!({ "agent": record }))
    }

    pub(super) async fn send(&self, args: Result<SendArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("type", &args.message_type)?;
        let payload = payload(args.payload)?;
        let delivery = match (args.id.as_deref(), args.address.as_deref()) {
            (Some(id), None) => {
                name_arg("id", id)?;
                self.agent.send(id, &args.message_type, payload).await?
            }
            (None, Some(address)) => {
                name_arg("address", address)?;
                self.agent
                    .send_direct(address, &args.message_type, payload)
                    .await?
            }
            (Some(_), Some(_)) => return Err(refuse("give either `id` or `address`, not both")),
            (None, None) => {
                return Err(refuse(
                    "say who receives the message: give `id` (from discover or find) or `address`",
                ))
            }
        };
        Ok(json!(delivery))
    }

    pub(super) async fn request(&self, args: Result<RequestArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("id", &args.id)?;
        name_arg("type", &args.message_type)?;
        let secs = args.timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS);
        in_range("timeout", secs, 1, MAX_REQUEST_TIMEOUT_SECS)?;
        let payload = payload(args.payload)?;
        let timeout = Duration::from_secs(secs.into());
        match self
            .agent
            .request(&args.id, &args.message_type, payload, Some(timeout))
            .await
        {
            Ok(response) => Ok(json!({
                "from": args.id,
                "type": format!("{}:response", args.message_type),
                "payload": response,
                "notice": UNTRUSTED_NOTICE,
            })),
            Err(AgentError::Timeout { operation, .. }) if operation == "request" => {
                Err(refuse(format!(
                    "timeout after {secs} s: agent {} sent no {}:response",
                    args.id, args.message_type
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(super) async fn broadcast(&self, args: Result<BroadcastArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("type", &args.message_type)?;
        for c in &args.capabilities {
            name_arg("a capability", c)?;
        }
        let payload = payload(args.payload)?;
        let report = self
            .agent
            .broadcast(
                &args.message_type,
                payload,
                BroadcastOptions::new().capabilities(args.capabilities),
            )
            .await?;
        Ok(json!(report))
    }

    pub(super) fn take_inbox(&self, args: Result<InboxArgs, ToolError>) -> Outcome {
        let args = args?;
        let limit = args.limit.unwrap_or(DEFAULT_INBOX_LIMIT);
        in_range("limit", limit, 1, MAX_INBOX_LIMIT)?;
        let taken = self.inbox.take(
            args.message_type.as_deref(),
            usize::try_from(limit).unwrap_or(usize::MAX),
        );
        let messages: Vec<Value> = taken.messages.iter().map(message_json).collect();
        Ok(json!({
            "notice": UNTRUSTED_NOTICE,
            "count": messages.len(),
            "messages": messages,
            "remaining": taken.remaining,
            "dropped": taken.dropped,
        }))
    }

    pub(super) async fn wait_for_message(&self, args: Result<WaitArgs, ToolError>) -> Outcome {
        let args = args?;
        let secs = args.timeout.unwrap_or(DEFAULT_WAIT_SECS);
        in_range("timeout", secs, 0, MAX_WAIT_SECS)?;
        let got = self
            .inbox
            .wait(
                args.message_type.as_deref(),
                Duration::from_secs(secs.into()),
            )
            .await;
        Ok(match got {
            Some(r) => json!({ "notice": UNTRUSTED_NOTICE, "message": message_json(&r) }),
            None => json!({
                "message": null,
                "timedOut": true,
                "note": format!("no message arrived within {secs} s"),
            }),
        })
    }

    pub(super) async fn respond(&self, args: Result<RespondArgs, ToolError>) -> Outcome {
        let args = args?;
        let Some(message) = self.inbox.answerable(&args.message_id) else {
            return Err(refuse(format!(
                "no message {} to answer: use a messageId from inbox or wait_for_message \
                 (responses cannot be answered, and each message only once)",
                args.message_id
            )));
        };
        let payload = payload(Some(args.payload))?;
        let delivery = self.agent.respond(&message, payload).await?;
        self.inbox.answered(&args.message_id);
        Ok(json!({
            "delivered": delivery.delivered,
            "to": message.from,
            "type": format!("{}:response", message.message_type),
            "correlationId": delivery.correlation_id,
        }))
    }

    pub(super) async fn update_status(&self, args: Result<UpdateStatusArgs, ToolError>) -> Outcome {
        let args = args?;
        name_arg("status", &args.status)?;
        // The hub merges these fields into the metadata it holds: none keeps it as it is.
        let metadata = args.metadata.unwrap_or_default();
        self.agent
            .update_status(&args.status, metadata.clone())
            .await?;
        Ok(json!({ "status": args.status, "metadataUpdated": metadata }))
    }
}
