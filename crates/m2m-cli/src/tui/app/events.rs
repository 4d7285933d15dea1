//! What the network said ([`AppEvent`]: registration, peers, messages, requests, replies,
//! failures), applied to the state and logged.

use super::*;

impl App {
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
                    "{} {} {}{}{} {}",
                    short(&message.from),
                    proof(message.authenticated),
                    message.message_type,
                    via(message.route),
                    if request { " (request: press r)" } else { "" },
                    compact(&message.payload)
                );
                self.push(message.timestamp, LogKind::Received, text);
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
                        LogKind::Sent,
                        format!(
                            "{} {message_type} (request) {}",
                            short(&to),
                            compact(&payload)
                        ),
                    );
                    self.push(
                        at,
                        LogKind::Received,
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
                Ok(route) => {
                    self.push(
                        at,
                        LogKind::Sent,
                        format!(
                            "{} {message_type}{} {}",
                            short(&to),
                            via(route),
                            compact(&payload)
                        ),
                    );
                    self.status =
                        format!("Delivered {message_type} to {}{}.", short(&to), via(route));
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
}

/// " via relay" for what went through the hub's relay; nothing for a direct connection.
fn via(route: m2m_agent::Route) -> &'static str {
    match route {
        m2m_agent::Route::Relay => " via relay",
        m2m_agent::Route::Direct => "",
        m2m_agent::Route::Mailbox => " via mailbox",
    }
}
