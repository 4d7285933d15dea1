//! SDK (docs written below)

mod agent;
mod cache;
pub mod config;
mod error;
mod hub_client;
mod hub_link;
mod inbox;
mod listener;
mod message;
mod peer;

#[cfg(test)]
mod p2p_tests;

pub use agent::{Agent, AgentBuilder};
pub use config::{hub_url, AgentConfig};
pub use error::{AgentError, Result};
pub use m2m_proto::hub::{AgentRecord, FoundAgent, Peer, Stats};
pub use message::{
    AgentEvent, BroadcastFailure, BroadcastOptions, BroadcastReport, Delivery, DiscoverOptions,
    Message,
};
pub use serde_json::{json, Map, Value};
