//! One agent in the mirror: its immutable part (fixed at register), its mutable state
//! behind a small lock, liveness as an atomic, and the cached JSON text its listings are
//! written from (see [`super::json`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;

use m2m_proto::hub::status;
use m2m_proto::relay::Reachable;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::json::{push_json_str, push_u64};

/// An agent id as a number: 16 bytes, printed as 32 lowercase hex characters.
pub type AgentKey = u128;

/// Parses an id as the hub makes them (32 lowercase hex). Anything else names no agent.
pub fn parse_id(s: &str) -> Option<AgentKey> {
    if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// An agent's status; the three the hub assigns are not allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// `online`.
    Online,
    /// `idle`.
    Idle,
    /// `offline`.
    Offline,
    /// A status the agent chose (`busy`, …).
    Other(Box<str>),
}

impl Status {
    /// From the wire/database string.
    pub fn from_wire(s: &str) -> Status {
        match s {
            status::ONLINE => Status::Online,
            status::IDLE => Status::Idle,
            status::OFFLINE => Status::Offline,
            other => Status::Other(other.into()),
        }
    }

    /// The wire string.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Online => status::ONLINE,
            Status::Idle => status::IDLE,
            Status::Offline => status::OFFLINE,
            Status::Other(s) => s,
        }
    }

    pub(super) fn slot(&self) -> usize {
        match self {
            Status::Online => 0,
            Status::Idle => 1,
            Status::Offline => 2,
            Status::Other(_) => 3,
        }
    }
}

/// The mutable part of an agent.
#[derive(Debug, Clone)]
pub struct EntryState {
    /// Current status.
    pub status: Status,
    /// Current metadata (shared with replies being written).
    pub metadata: Arc<Map<String, Value>>,
    /// Version of the last applied change.
    pub version: i64,
    /// No longer mirrored (see [`Retired`]): changes are ignored.
    pub retired: Option<Retired>,
    /// Relay: the URL of the hub the agent is attached to (docs/RELAY.md "Records").
    pub relay: Option<Arc<str>>,
    /// Relay: the reachability probe's result, when known.
    pub reachable: Option<Reachable>,
    /// The record's JSON text up to its metadata, `{"id":…,"address":…,"capabilities":[…],
    /// "metadata":{…}` (no closing brace): what replies share and what does not change
    /// with status or time. Built on first use, dropped when the metadata changes.
    pub(super) base: Option<Arc<str>>,
}

impl EntryState {
    pub(super) fn new(
        status: Status,
        metadata: Arc<Map<String, Value>>,
        version: i64,
    ) -> EntryState {
        EntryState {
            status,
            metadata,
            version,
            retired: None,
            relay: None,
            reachable: None,
            base: None,
        }
    }

    /// The relay fields of a stored row (an unknown `reachable` text is left out).
    pub(super) fn with_relay(mut self, relay: Option<&str>, reachable: Option<&str>) -> Self {
        self.relay = relay.map(Arc::from);
        self.reachable = reachable.and_then(Reachable::parse);
        self
    }

    /// Replaces the metadata (and forgets the text made from the old one).
    pub(super) fn set_metadata(&mut self, metadata: Arc<Map<String, Value>>) {
        self.metadata = metadata;
        self.base = None;
    }
}

/// Why an entry left the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// A newer registration of the same id replaced it.
    Replaced,
    /// Purged from the registry.
    Removed,
}

/// The WebSocket on this hub that registered an entry.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Which WebSocket (unique within this hub).
    pub serial: u64,
    /// Cancelled when a newer registration of the id replaces the entry.
    pub evict: CancellationToken,
}

/// One agent in memory.
#[derive(Debug)]
pub struct AgentEntry {
    /// Numeric id.
    pub key: AgentKey,
    /// Hex id.
    pub id: Box<str>,
    /// `host:port`.
    pub address: Box<str>,
    /// Capabilities.
    pub capabilities: Box<[String]>,
    /// 2.1 identity key.
    pub identity: Option<Box<str>>,
    /// Mailbox: the signed mailbox key the registration published (docs/MAILBOX.md).
    pub mailbox: Option<m2m_proto::mailbox::MailboxKey>,
    /// Token of the registration this entry mirrors.
    pub token: Box<str>,
    /// The record's JSON text after `status`/`lastSeen`: `,"identity":"…"}` or `}`.
    pub(super) tail: Cow<'static, str>,
    /// The local WebSocket holding the registration, if it was made through this hub.
    pub(super) holder: OnceLock<Holder>,
    pub(super) last_seen: AtomicI64,
    pub(super) seq: AtomicU64,
    pub(super) dirty: AtomicBool,
    pub(super) state: Mutex<EntryState>,
}

impl AgentEntry {
    /// Last seen, ms since the epoch.
    pub fn last_seen(&self) -> i64 {
        self.last_seen.load(Ordering::Acquire)
    }

    /// A copy of the mutable part.
    pub fn state(&self) -> EntryState {
        self.state.lock().clone()
    }

    /// Current status.
    pub fn status(&self) -> Status {
        self.state.lock().status.clone()
    }

    /// Whether the entry left the directory (replaced or purged).
    pub fn is_retired(&self) -> bool {
        self.state.lock().retired.is_some()
    }

    /// Whether a newer registration of the id replaced this entry.
    pub fn is_replaced(&self) -> bool {
        self.state.lock().retired == Some(Retired::Replaced)
    }

    /// The cached [`EntryState::base`] text, built if missing.
    pub(super) fn base<'s>(&self, st: &'s mut EntryState) -> &'s str {
        st.base.get_or_insert_with(|| {
            #[derive(serde::Serialize)]
            struct Base<'a> {
                id: &'a str,
                address: &'a str,
                capabilities: &'a [String],
                metadata: &'a Map<String, Value>,
            }
            let mut text = serde_json::to_string(&Base {
                id: &self.id,
                address: &self.address,
                capabilities: &self.capabilities,
                metadata: &st.metadata,
            })
            .unwrap_or_else(|_| String::from("{}"));
            // Serializing these types cannot fail; the object stays open for more fields.
            text.pop();
            Arc::from(text)
        })
    }

    /// Appends the entry as `discover` lists it ([`m2m_proto::hub::Peer`]) with `lastSeen` =
    /// `last_seen` (whole seconds), from a locked state.
    pub(super) fn write_peer(&self, st: &mut EntryState, last_seen: u64, out: &mut String) {
        out.push_str(self.base(st));
        out.push_str(",\"status\":");
        push_json_str(out, st.status.as_str());
        out.push_str(",\"lastSeen\":");
        push_u64(out, last_seen);
        self.push_tail(st, out);
    }

    /// Appends the end of the record: `identity` (the cached tail), then the relay fields
    /// when there are any (none: the tail alone, byte for byte as before the relay).
    fn push_tail(&self, st: &EntryState, out: &mut String) {
        if st.relay.is_none() && st.reachable.is_none() && self.mailbox.is_none() {
            out.push_str(&self.tail);
            return;
        }
        out.push_str(&self.tail[..self.tail.len() - 1]);
        if let Some(relay) = &st.relay {
            out.push_str(",\"relay\":");
            push_json_str(out, relay);
        }
        if let Some(reachable) = st.reachable {
            out.push_str(",\"reachable\":\"");
            out.push_str(reachable.as_str());
            out.push('"');
        }
        if let Some(key) = &self.mailbox {
            // Serializing three plain fields cannot fail.
            out.push_str(",\"mailbox\":");
            out.push_str(&serde_json::to_string(key).unwrap_or_else(|_| "null".into()));
        }
        out.push('}');
    }

    /// Appends the entry as `lookup` returns it ([`m2m_proto::hub::AgentRecord`]).
    pub fn write_record(&self, out: &mut String) {
        let mut st = self.state.lock();
        out.push_str(self.base(&mut st));
        out.push_str(",\"status\":");
        push_json_str(out, st.status.as_str());
        self.push_tail(&st, out);
    }

    /// Appends the entry as `find` lists it ([`m2m_proto::hub::FoundAgent`]), from a locked state.
    pub(super) fn write_found(&self, st: &mut EntryState, out: &mut String) {
        out.push_str(self.base(st));
        self.push_tail(st, out);
    }

    /// The entry as `lookup` returns it, through serde (tests compare the text with it).
    #[cfg(test)]
    pub fn record(&self) -> m2m_proto::hub::AgentRecord {
        let st = self.state();
        m2m_proto::hub::AgentRecord {
            id: self.id.to_string(),
            address: self.address.to_string(),
            capabilities: self.capabilities.to_vec(),
            metadata: (*st.metadata).clone(),
            status: st.status.as_str().to_owned(),
            identity: self.identity.as_deref().map(str::to_owned),
            relay: st.relay.as_deref().map(str::to_owned),
            reachable: st.reachable,
            mailbox: self.mailbox.clone(),
        }
    }
}

/// Seconds from `last_seen` to `now`, rounded to the nearest whole second (never
/// negative): the original computes `EXTRACT(EPOCH FROM NOW() - last_seen)::int`, and a
/// cast to `int` rounds.
pub fn secs_since(now: i64, last_seen: i64) -> u64 {
    u64::try_from((now.saturating_sub(last_seen).max(0) + 500) / 1000).unwrap_or(0)
}
