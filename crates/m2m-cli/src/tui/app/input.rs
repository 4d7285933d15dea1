//! Keys: the normal mode (move, refresh, help, quit), the compose box and the reply box.
//! A key changes the state and may give back a [`Command`] for the IO loop.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde_json::Value;

use super::*;

impl App {
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
