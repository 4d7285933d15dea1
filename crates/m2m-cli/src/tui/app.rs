//! The terminal agent's state and key handling, without IO.
//!
//! Keys go in through [`App::handle_key`], which may give back a [`Command`] for the IO loop
//! to carry out (refresh, send, respond, quit). What the network answers comes back through
//! [`App::apply`] as an [`AppEvent`]. Drawing reads the state (see `render`). Nothing here
//! touches the terminal or the network, so tests drive it with plain values.

use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use m2m_proto::hub::{Peer, Stats};
use serde_json::Value;

/// Log lines kept; older ones are dropped.
pub const MAX_LOG: usize = 1000;
/// Unanswered requests kept; the oldest is dropped (its sender times out).
pub const MAX_PENDING_REQUESTS: usize = 100;
/// Longest text accepted in an input field (one P2P frame could not carry more anyway).
pub const MAX_INPUT: usize = 64 * 1024;

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
        result: Result<(), String>,
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
        result: Result<(), String>,
        /// Time.
        at: u64,
    },
}

/// Kind of a log line (drawn in different colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A message received.
    In,
    /// A message sent.
    Out,
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

    /// Handles one key; returns what the IO loop must do, if anything.
    pub fn handle_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL)
            && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('d'))
        {
            return Some(self.request_quit());
        }
        match std::mem::replace(&mut self.mode, Mode::Normal) {
            Mode::Normal => self.normal_key(key),
            Mode::Compose(compose) => self.compose_key(compose, key),
            Mode::Reply(reply) => self.reply_key(reply, key),
        }
    }

    fn request_quit(&mut self) -> Command {
        self.quit = true;
        self.status = "Disconnecting…".to_owned();
        Command::Quit
    }

    fn normal_key(&mut self, key: KeyEvent) -> Option<Command> {
        if self.show_help && !matches!(key.code, KeyCode::Char('q')) {
            // Any key closes the help panel; `q` still quits.
            self.show_help = false;
            if matches!(key.code, KeyCode::Esc | KeyCode::Char('?')) {
                return None;
            }
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            // Esc cancels elsewhere, so it does not quit here: one press too many must not
            // end the session.
            KeyCode::Char('q') => Some(self.request_quit()),
            KeyCode::Esc => None,
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                if self.selected + 1 < self.peers.len() {
                    self.selected += 1;
                }
                None
            }
            KeyCode::Home => {
                self.selected = 0;
                None
            }
            KeyCode::End => {
                self.selected = self.peers.len().saturating_sub(1);
                None
            }
            KeyCode::Char('R') | KeyCode::F(5) => self.refresh(),
            KeyCode::Char('r') if ctrl => self.refresh(),
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => {
                self.show_help = true;
                None
            }
            KeyCode::Enter | KeyCode::Char('s') => {
                match self.selected_peer() {
                    Some(peer) => {
                        self.mode = Mode::Compose(Compose {
                            to: peer.id.clone(),
                            field: Field::Payload,
                            message_type: self.last_type.clone(),
                            payload: String::new(),
                            request: false,
                        });
                        self.status.clear();
                    }
                    None => {
                        self.status = "No peer selected: press R to refresh the peer list.".into()
                    }
                }
                None
            }
            KeyCode::Tab => {
                if !self.requests.is_empty() {
                    self.selected_request = (self.selected_request + 1) % self.requests.len();
                }
                None
            }
            KeyCode::Char('a') | KeyCode::Char('r') => {
                match self.requests.get(self.selected_request) {
                    Some(request) => {
                        self.mode = Mode::Reply(Reply {
                            request: request.clone(),
                            payload: String::new(),
                        });
                        self.status.clear();
                    }
                    None => self.status = "No request is waiting for an answer.".into(),
                }
                None
            }
            _ => None,
        }
    }

    fn refresh(&mut self) -> Option<Command> {
        self.status = "Refreshing…".into();
        Some(Command::Refresh)
    }

    fn compose_key(&mut self, mut compose: Compose, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Esc => {
                self.status = "Message discarded.".into();
                return None;
            }
            KeyCode::Tab | KeyCode::BackTab => {
                compose.field = match compose.field {
                    Field::Type => Field::Payload,
                    Field::Payload => Field::Type,
                };
            }
            KeyCode::Char('r') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                compose.request = !compose.request;
            }
            KeyCode::Enter if compose.field == Field::Type => compose.field = Field::Payload,
            KeyCode::Enter => {
                let message_type = compose.message_type.trim().to_owned();
                if message_type.is_empty() {
                    self.status = "The message type is empty.".into();
                    compose.field = Field::Type;
                    self.mode = Mode::Compose(compose);
                    return None;
                }
                match parse_input(&compose.payload) {
                    Ok(payload) => {
                        self.last_type = message_type.clone();
                        if compose.request {
                            self.status = format!(
                                "Waiting for {message_type}:response from {}…",
                                short(&compose.to)
                            );
                            return Some(Command::Request {
                                to: compose.to,
                                message_type,
                                payload,
                            });
                        }
                        self.status = format!("Sending {message_type} to {}…", short(&compose.to));
                        return Some(Command::Send {
                            to: compose.to,
                            message_type,
                            payload,
                        });
                    }
                    Err(e) => self.status = e,
                }
            }
            _ => {
                let field = match compose.field {
                    Field::Type => &mut compose.message_type,
                    Field::Payload => &mut compose.payload,
                };
                edit(field, key);
            }
        }
        self.mode = Mode::Compose(compose);
        None
    }

    fn reply_key(&mut self, mut reply: Reply, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Esc => {
                self.status = "Answer discarded; the request is still waiting.".into();
                return None;
            }
            KeyCode::Enter => match parse_input(&reply.payload) {
                Ok(payload) => {
                    let request = reply.request;
                    self.requests.retain(|r| r != &request);
                    self.selected_request = self
                        .selected_request
                        .min(self.requests.len().saturating_sub(1));
                    self.status = format!("Answering {}…", short(&request.from));
                    return Some(Command::Respond { request, payload });
                }
                Err(e) => self.status = e,
            },
            _ => edit(&mut reply.payload, key),
        }
        self.mode = Mode::Reply(reply);
        None
    }

    /// Applies what the network said.
    pub fn apply(&mut self, event: AppEvent) {
        match event {
            AppEvent::Registered { id, address, at } => {
                let again = !self.id.is_empty();
                self.push(
                    at,
                    LogKind::Info,
                    if again {
                        format!("reconnected to the hub as {id} at {address}")
                    } else {
                        format!("registered as {id} at {address}")
                    },
                );
                self.id = id;
                self.address = address;
                self.hub_connected = true;
            }
            AppEvent::HubLost { reason, at } => {
                self.hub_connected = false;
                self.push(at, LogKind::Error, format!("hub connection lost: {reason}"));
            }
            AppEvent::Peers(Ok(peers)) => {
                let keep = self.selected_peer().map(|p| p.id.clone());
                self.peers = peers;
                self.selected = keep
                    .and_then(|id| self.peers.iter().position(|p| p.id == id))
                    .unwrap_or(0)
                    .min(self.peers.len().saturating_sub(1));
                self.status = format!("{} peer(s).", self.peers.len());
            }
            AppEvent::Peers(Err(e)) => self.status = format!("Could not list peers: {e}"),
            AppEvent::Stats(Ok(stats)) => self.stats = Some(stats),
            AppEvent::Stats(Err(e)) => self.status = format!("Could not read hub stats: {e}"),
            AppEvent::Incoming(message) => {
                let request = message.is_request();
                let text = format!(
                    "{} {} {}{} {}",
                    short(&message.from),
                    proof(message.authenticated),
                    message.message_type,
                    if request { " (request: press r)" } else { "" },
                    compact(&message.payload)
                );
                self.push(message.timestamp, LogKind::In, text);
                if request {
                    if self.requests.len() >= MAX_PENDING_REQUESTS {
                        self.requests.pop_front();
                    }
                    self.requests.push_back(message);
                    self.status = "A request is waiting: press r to answer it.".into();
                }
            }
            AppEvent::Answered {
                to,
                message_type,
                payload,
                result,
                at,
            } => match result {
                Ok(response) => {
                    self.push(
                        at,
                        LogKind::Out,
                        format!(
                            "{} {message_type} (request) {}",
                            short(&to),
                            compact(&payload)
                        ),
                    );
                    self.push(
                        at,
                        LogKind::In,
                        format!(
                            "{} {message_type}:response {}",
                            short(&to),
                            compact(&response)
                        ),
                    );
                    self.status = format!("{} answered {message_type}.", short(&to));
                }
                Err(e) => {
                    self.push(
                        at,
                        LogKind::Error,
                        format!("request {message_type} to {} failed: {e}", short(&to)),
                    );
                    self.status = format!("No answer: {e}");
                }
            },
            AppEvent::Sent {
                to,
                message_type,
                payload,
                result,
                at,
            }
            | AppEvent::Responded {
                to,
                message_type,
                payload,
                result,
                at,
            } => match result {
                Ok(()) => {
                    self.push(
                        at,
                        LogKind::Out,
                        format!("{} {message_type} {}", short(&to), compact(&payload)),
                    );
                    self.status = format!("Delivered {message_type} to {}.", short(&to));
                }
                Err(e) => {
                    self.push(
                        at,
                        LogKind::Error,
                        format!("{message_type} to {} failed: {e}", short(&to)),
                    );
                    self.status = format!("Not delivered: {e}");
                }
            },
        }
    }

    fn push(&mut self, at: u64, kind: LogKind, text: String) {
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

/// Compose-box text as a payload: like the command line (JSON, else a string), and an empty
/// box sends `{}`.
fn parse_input(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    crate::payload::parse(text, "The payload").map_err(|e| e.message)
}

/// Line editing shared by every input field.
fn edit(field: &mut String, key: KeyEvent) {
    match key.code {
        KeyCode::Backspace => {
            field.pop();
        }
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => field.clear(),
        KeyCode::Char('w') if key.modifiers.contains(KeyModifiers::CONTROL) => {
            let trimmed = field.trim_end().len();
            field.truncate(trimmed);
            let cut = field.rfind(' ').map(|i| i + 1).unwrap_or(0);
            field.truncate(cut);
        }
        KeyCode::Char(c)
            if !key.modifiers.contains(KeyModifiers::CONTROL) && field.len() < MAX_INPUT =>
        {
            field.push(c);
        }
        _ => {}
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
mod tests {
    use super::*;
    use serde_json::json;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn type_text(app: &mut App, text: &str) {
        for c in text.chars() {
            assert_eq!(app.handle_key(key(KeyCode::Char(c))), None);
        }
    }

    fn peer(id: &str) -> Peer {
        Peer {
            id: id.into(),
            address: "127.0.0.1:4001".into(),
            capabilities: vec!["chat".into()],
            metadata: Default::default(),
            status: "online".into(),
            last_seen: 0,
            identity: None,
        }
    }

    fn request(from: &str) -> Incoming {
        Incoming {
            from: from.into(),
            message_type: "ask".into(),
            payload: json!({"q": 1, "correlationId": "c1"}),
            correlation_id: Some("c1".into()),
            timestamp: 3_723_000,
            authenticated: false,
        }
    }

    #[test]
    fn select_and_send() {
        let mut app = App::new("ws://hub");
        app.apply(AppEvent::Peers(Ok(vec![
            peer("aaaaaaaa11"),
            peer("bbbbbbbb22"),
        ])));
        assert_eq!(app.handle_key(key(KeyCode::Down)), None);
        assert_eq!(app.selected_peer().unwrap().id, "bbbbbbbb22");
        assert_eq!(app.handle_key(key(KeyCode::Down)), None);
        assert_eq!(app.selected, 1, "selection stops at the last peer");
        app.handle_key(key(KeyCode::Enter));
        assert!(matches!(app.mode, Mode::Compose(_)));
        // Type field: replace "chat" with "task".
        app.handle_key(key(KeyCode::BackTab));
        for _ in 0..4 {
            app.handle_key(key(KeyCode::Backspace));
        }
        type_text(&mut app, "task");
        app.handle_key(key(KeyCode::Enter));
        type_text(&mut app, r#"{"n": 2}"#);
        let cmd = app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            cmd,
            Some(Command::Send {
                to: "bbbbbbbb22".into(),
                message_type: "task".into(),
                payload: json!({"n": 2}),
            })
        );
        assert_eq!(app.mode, Mode::Normal);
        assert_eq!(app.last_type, "task");
        app.apply(AppEvent::Sent {
            to: "bbbbbbbb22".into(),
            message_type: "task".into(),
            payload: json!({"n": 2}),
            result: Ok(()),
            at: 0,
        });
        assert_eq!(app.log.back().unwrap().text, r#"bbbbbbbb task {"n":2}"#);
        assert_eq!(app.log.back().unwrap().kind, LogKind::Out);
    }

    #[test]
    fn text_payloads_are_strings_and_bad_json_stays_in_the_box() {
        let mut app = App::new("h");
        app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
        app.handle_key(key(KeyCode::Char('s')));
        type_text(&mut app, "{oops");
        assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
        assert!(app.status.contains("line 1, column 2"), "{}", app.status);
        assert!(matches!(&app.mode, Mode::Compose(c) if c.payload == "{oops"));
        app.handle_key(key_ctrl('u'));
        type_text(&mut app, "hello there");
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Some(Command::Send {
                to: "p1".into(),
                message_type: "chat".into(),
                payload: json!("hello there"),
            })
        );
    }

    fn key_ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    #[test]
    fn ctrl_r_sends_a_request_and_the_answer_is_logged() {
        let mut app = App::new("h");
        app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
        app.handle_key(key(KeyCode::Enter));
        app.handle_key(key_ctrl('r'));
        assert!(matches!(&app.mode, Mode::Compose(c) if c.request));
        type_text(&mut app, "[1]");
        assert_eq!(
            app.handle_key(key(KeyCode::Enter)),
            Some(Command::Request {
                to: "p1".into(),
                message_type: "chat".into(),
                payload: json!([1]),
            })
        );
        assert!(app.status.contains("Waiting for chat:response"));
        app.apply(AppEvent::Answered {
            to: "p1".into(),
            message_type: "chat".into(),
            payload: json!([1]),
            result: Ok(json!({"ok": true})),
            at: 0,
        });
        assert_eq!(
            app.log.back().unwrap().text,
            r#"p1 chat:response {"ok":true}"#
        );
        app.apply(AppEvent::Answered {
            to: "p1".into(),
            message_type: "chat".into(),
            payload: json!([1]),
            result: Err("timed out".into()),
            at: 0,
        });
        assert_eq!(app.log.back().unwrap().kind, LogKind::Error);
    }

    #[test]
    fn escape_discards_and_no_peer_is_explained() {
        let mut app = App::new("h");
        assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
        assert!(app.status.contains("No peer selected"));
        app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
        app.handle_key(key(KeyCode::Enter));
        type_text(&mut app, "x");
        app.handle_key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        app.handle_key(key(KeyCode::Esc));
        assert!(!app.quit, "Esc in the normal mode does not quit");
    }

    #[test]
    fn requests_wait_and_are_answered() {
        let mut app = App::new("h");
        app.apply(AppEvent::Incoming(request("requester1")));
        assert_eq!(app.requests.len(), 1);
        assert!(app.log.back().unwrap().text.contains("(request: press r)"));
        assert_eq!(app.log.back().unwrap().time, "01:02:03");
        // A plain message is logged but not a request.
        let mut plain = request("other");
        plain.payload = json!("hi");
        app.apply(AppEvent::Incoming(plain));
        assert_eq!(app.requests.len(), 1);
        // Neither is a response.
        let mut response = request("other");
        response.message_type = "ask:response".into();
        app.apply(AppEvent::Incoming(response));
        assert_eq!(app.requests.len(), 1);

        app.handle_key(key(KeyCode::Char('r')));
        type_text(&mut app, r#"{"a": 42}"#);
        let cmd = app.handle_key(key(KeyCode::Enter));
        assert_eq!(
            cmd,
            Some(Command::Respond {
                request: request("requester1"),
                payload: json!({"a": 42}),
            })
        );
        assert!(app.requests.is_empty());
        app.handle_key(key(KeyCode::Char('r')));
        assert!(app.status.contains("No request"));
    }

    #[test]
    fn quit_keys_and_refresh() {
        let mut app = App::new("h");
        assert_eq!(
            app.handle_key(key(KeyCode::Char('R'))),
            Some(Command::Refresh)
        );
        assert_eq!(app.handle_key(key(KeyCode::F(5))), Some(Command::Refresh));
        assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Some(Command::Quit));
        assert!(app.quit);
        let mut app = App::new("h");
        app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
        app.handle_key(key(KeyCode::Enter));
        // `q` while typing is a letter; Ctrl-C always quits.
        type_text(&mut app, "q");
        assert!(!app.quit);
        assert_eq!(app.handle_key(key_ctrl('c')), Some(Command::Quit));
    }

    #[test]
    fn help_opens_and_closes() {
        let mut app = App::new("h");
        app.handle_key(key(KeyCode::Char('?')));
        assert!(app.show_help);
        app.handle_key(key(KeyCode::Char('?')));
        assert!(!app.show_help);
        assert!(!app.quit);
    }

    #[test]
    fn refresh_keeps_the_selected_peer() {
        let mut app = App::new("h");
        app.apply(AppEvent::Peers(Ok(vec![peer("a"), peer("b")])));
        app.handle_key(key(KeyCode::Down));
        app.apply(AppEvent::Peers(Ok(vec![peer("c"), peer("a"), peer("b")])));
        assert_eq!(app.selected_peer().unwrap().id, "b");
        app.apply(AppEvent::Peers(Ok(vec![])));
        assert_eq!(app.selected, 0);
        assert!(app.selected_peer().is_none());
    }

    #[test]
    fn log_is_bounded() {
        let mut app = App::new("h");
        for i in 0..(MAX_LOG + 5) {
            let mut m = request("x");
            m.payload = json!(i);
            app.apply(AppEvent::Incoming(m));
        }
        assert_eq!(app.log.len(), MAX_LOG);
        assert!(app.log.front().unwrap().text.ends_with(" 5"));
    }
}
