//! The hub's phone book from the agent: discover, find, lookup, status and stats. Every
//! answer that names agents refreshes the address cache that sends by id resolve through
//! ([`super::routing`]).

use m2m_proto::hub::{
    errors as hub_errors, AgentRecord, Discovered, Found, FoundAgent, HubRequest, LookedUp, Peer,
    Stats,
};
use serde_json::{Map, Value};

use super::Agent;
use crate::cache::Known;
use crate::error::{AgentError, Result};
use crate::message::DiscoverOptions;

impl Agent {
    /// Agents known to the hub (ourselves excluded), most recently seen first.
    pub async fn discover(&self, options: DiscoverOptions) -> Result<Vec<Peer>> {
        let req = HubRequest {
            action: Some("discover".into()),
            capabilities: (!options.capabilities.is_empty()).then(|| options.capabilities.into()),
            status: options.status.map(Into::into),
            limit: options.limit.map(Into::into),
            offset: options.offset.map(Into::into),
            ..HubRequest::default()
        };
        let found: Discovered = self.inner.presence.request(req, true).await?;
        for p in &found.agents {
            self.inner.cache.insert(
                &p.id,
                Known::of(
                    &p.address,
                    Some(&p.status),
                    p.identity.as_deref(),
                    p.relay.as_deref(),
                    p.reachable,
                )
                .with_mailbox(p.mailbox.as_ref()),
            );
        }
        Ok(found.agents)
    }

    /// Online agents offering `capability`.
    pub async fn find(&self, capability: &str) -> Result<Vec<FoundAgent>> {
        let req = HubRequest {
            action: Some("find".into()),
            capability: Some(capability.into()),
            ..HubRequest::default()
        };
        let found: Found = self.inner.presence.request(req, false).await?;
        for a in &found.agents {
            self.inner.cache.insert(
                &a.id,
                Known::of(
                    &a.address,
                    None,
                    a.identity.as_deref(),
                    a.relay.as_deref(),
                    a.reachable,
                )
                .with_mailbox(a.mailbox.as_ref()),
            );
        }
        Ok(found.agents)
    }

    /// One agent by id; [`AgentError::AgentNotFound`] if the hub does not know it.
    pub async fn lookup(&self, id: &str) -> Result<AgentRecord> {
        let req = HubRequest {
            action: Some("lookup".into()),
            id: Some(id.into()),
            ..HubRequest::default()
        };
        let found: LookedUp = match self.inner.presence.request(req, false).await {
            Err(AgentError::Hub(e)) if e == hub_errors::AGENT_NOT_FOUND => {
                return Err(AgentError::AgentNotFound(id.to_owned()))
            }
            other => other?,
        };
        let a = &found.agent;
        self.inner.cache.insert(
            &a.id,
            Known::of(
                &a.address,
                Some(&a.status),
                a.identity.as_deref(),
                a.relay.as_deref(),
                a.reachable,
            )
            .with_mailbox(a.mailbox.as_ref()),
        );
        Ok(found.agent)
    }

    /// Sets our status (`busy`, …) and merges `metadata` into the hub's record. Restored
    /// after a reconnect.
    pub async fn update_status(&self, status: &str, metadata: Map<String, Value>) -> Result<()> {
        self.inner.presence.update_status(status, metadata).await
    }

    /// The hub's statistics.
    pub async fn stats(&self) -> Result<Stats> {
        let req = HubRequest {
            action: Some("stats".into()),
            ..HubRequest::default()
        };
        self.inner.presence.request(req, false).await
    }
}
