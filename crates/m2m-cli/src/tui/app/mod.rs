//! The terminal agent's state and key handling, without IO.
//!
//! Keys go in through [`App::handle_key`], which may give back a [`Command`] for the IO loop
//! to carry out (refresh, send, respond, quit). What the network answers comes back through
//! [`App::apply`] as an [`AppEvent`]. Drawing reads the state (see `render`). Nothing here
//! touches the terminal or the network, so tests drive it with plain values.
//!
//! This file holds the state and how it is shown in text (`short`, `proof`, `clock`);
//! `input` turns keys into state changes and commands; `events` applies what the hub and
//! peers said.

mod events;
mod input;

use std::collections::VecDeque;

use m2m_agent::Route;
use m2m_proto::hub::{Peer, Stats};
use serde_json::Value;

pub use crate::defaults::{
    TUI_MAX_INPUT as MAX_INPUT, TUI_MAX_LOG as MAX_LOG,
    TUI_MAX_PENDING_REQUESTS as MAX_PENDING_REQUESTS,
};

/// Message type proposed when composing the first message.
pub const DEFAULT_MESSAGE_TYPE: &str = "chat";

/// A message received from a peer, as the terminal agent shows and answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// Sender id.
    pub from: String,
    /// Application message type.
    pub message_type: String,
    /// The payload.
    pub payload: Value,
    /// The sender's correlation id.
    pub correlation_id: Option<String>,
    /// Receipt time, ms since the epoch.
    pub timestamp: u64,
    /// The sender's identity is proven (2.1).
    pub authenticated: bool,
    /// Directly, or through the hub's relay.
    pub route: Route,
}

impl Incoming {
    /// A request made with `request()`: not itself a response, and its payload carries the
    /// frame's correlationId (PROTOCOL.md A5), so the sender waits for `TYPE:response`.
    pub fn is_request(&self) -> bool {
        if self.message_type.ends_with(":response") {
            return false;
        }
        match (&self.correlation_id, self.payload.get("correlationId")) {
            (Some(c), Some(Value::String(p))) => c == p,
            _ => false,
        }
    }
}

/// What the IO loop should do after a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Fetch the peer list and the hub stats again.
    Refresh,
    /// Send one message to a peer.
    Send {
        /// Peer id.
        to: String,
        /// Message type.
        message_type: String,
        /// Payload.
        payload: Value,
    },
    /// Send a request and wait for its `TYPE:response`.
    Request {
        /// Peer id.
        to: String,
        /// Request type.
        message_type: String,
        /// Payload.
        payload: Value,
    },
    /// Answer a request.
    Respond {
        /// The request answered.
        request: Incoming,
        /// The response payload.
        payload: Value,
    },
    /// Disconnect and leave.
    Quit,
}

/// What the network said, for [`App::apply`]. `at` is the time in ms since the epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    /// Registered (again) at the hub.
    Registered {
        /// Our id.
        id: String,
        /// Our address as the hub stored it.
        address: String,
        /// Time.
        at: u64,
    },
    /// The hub connection dropped; the SDK is reconnecting.
    HubLost {
        /// Why.
        reason: String,
        /// Time.
        at: u64,
    },
    /// A discover answer.
    Peers(Result<Vec<Peer>, String>),
    /// A stats answer.
    Stats(Result<Stats, String>),
    /// A message arrived.
    Incoming(Incoming),
    /// A send finished.
    Sent {
        /// Peer id.
        to: String,
        /// Message type.
        message_type: String,
        /// Payload sent.
        payload: Value,
        /// Ok, or why it failed.
        result: Result<Route, String>,
        /// Time.
        at: u64,
    },
    /// A request of ours was answered (or failed or timed out).
    Answered {
        /// Peer id.
        to: String,
        /// The request's type.
        message_type: String,
        /// Payload sent.
        payload: Value,
        /// The response payload, or why there is none.
        result: Result<Value, String>,
        /// Time.
        at: u64,
    },
    /// A response was sent (or failed).
    Responded {
        /// Peer id.
        to: String,
        /// The response's type.
        message_type: String,
        /// Payload sent.
        payload: Value,
        /// Ok, or why it failed.
        result: Result<Route, String>,
        /// Time.
        at: u64,
    },
}

/// Kind of a log line (drawn in different colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A message received.
    Received,
    /// A message sent.
    Sent,
    /// Something about the agent itself.
    Info,
    /// Something failed.
    Error,
}

/// One line of the message log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// `HH:MM:SS` (UTC).
    pub time: String,
    /// Kind.
    pub kind: LogKind,
    /// The text.
    pub text: String,
}

/// Which compose field has the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The message type.
    Type,
    /// The payload text.
    Payload,
}

/// A message being written.
#[derive(Debug, Clone, PartialEq)]
pub struct Compose {
    /// Peer id.
    pub to: String,
    /// Field with the cursor.
    pub field: Field,
    /// Message type typed so far.
    pub message_type: String,
    /// Payload typed so far (JSON, or text sent as a string).
    pub payload: String,
    /// Send as a request and wait for the response (Ctrl-R toggles).
    pub request: bool,
}

/// A response being written.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request answered.
    pub request: Incoming,
    /// Payload typed so far.
    pub payload: String,
}

/// What keys do right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// Browsing: select peers and requests, open composers.
    Normal,
    /// Writing a message to a peer.
    Compose(Compose),
    /// Writing a response to a request.
    Reply(Reply),
}

/// The whole state of the terminal agent.
#[derive(Debug, Clone)]
pub struct App {
    /// Our id (empty until registered).
    pub id: String,
    /// Our address as the hub stored it.
    pub address: String,
    /// The hub URL.
    pub hub: String,
    /// Whether the hub connection is up.
    pub hub_connected: bool,
    /// Last peer list.
    pub peers: Vec<Peer>,
    /// Selected peer index.
    pub selected: usize,
    /// Message log, oldest first.
    pub log: VecDeque<LogEntry>,
    /// Requests not answered yet, oldest first.
    pub requests: VecDeque<Incoming>,
    /// Selected request index.
    pub selected_request: usize,
    /// Last hub stats.
    pub stats: Option<Stats>,
    /// Key mode.
    pub mode: Mode,
    /// One-line status (last error or hint).
    pub status: String,
    /// The help panel is shown.
    pub show_help: bool,
    /// Type used last, proposed for the next message.
    pub last_type: String,
    /// Set when the user asked to quit.
    pub quit: bool,
}

impl App {
    /// A fresh state for an agent at `hub`.
    pub fn new(hub: impl Into<String>) -> Self {
        App {
            id: String::new(),
            address: String::new(),
            hub: hub.into(),
            hub_connected: false,
            peers: Vec::new(),
            selected: 0,
            log: VecDeque::new(),
            requests: VecDeque::new(),
            selected_request: 0,
            stats: None,
            mode: Mode::Normal,
            status: "Press ? for help.".to_owned(),
            show_help: false,
            last_type: DEFAULT_MESSAGE_TYPE.to_owned(),
            quit: false,
        }
    }

    /// The selected peer, if any.
    pub fn selected_peer(&self) -> Option<&Peer> {
        self.peers.get(self.selected)
    }

    pub(super) fn push(&mut self, at: u64, kind: LogKind, text: String) {
        if self.log.len() >= MAX_LOG {
            self.log.pop_front();
        }
        self.log.push_back(LogEntry {
            time: clock(at),
            kind,
            text,
        });
    }
}

/// The first 8 characters of an id: enough to tell peers apart on screen.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// How a message's sender is shown: proven by a 2.1 session, or only declared (2.0: anyone
/// could have used that id).
pub fn proof(authenticated: bool) -> &'static str {
    if authenticated {
        AUTHENTICATED_MARK
    } else {
        UNVERIFIED_MARK
    }
}

/// Beside a sender or a peer whose identity is proven (or vouched for by the hub).
pub const AUTHENTICATED_MARK: &str = "✓";
/// Beside a sender or a peer that proves nothing (2.0).
pub const UNVERIFIED_MARK: &str = "?";

/// A payload on one line.
pub fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// `HH:MM:SS` (UTC) of a time in ms since the epoch.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600 % 24, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests;
