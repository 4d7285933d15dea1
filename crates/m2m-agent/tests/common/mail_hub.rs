//! A minimal 2.1 hub with a mailbox (docs/MAILBOX.md section 3), for the SDK's mailbox
//! tests: `challenge`, `register` (identity verified, the `mailbox` key kept as sent),
//! `lookup`, `discover` (online agents), heartbeats, and the `mail` / `mailbox` / `mail_ack` actions, with the attach
//! proof for a WebSocket that did not register. Every request is logged, and a test can
//! store or push any `mail` event it builds (tampered, forged, replayed), substitute a
//! record's mailbox key, or close an agent's WebSocket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use m2m_proto::identity::{registration_message, relay_attach_message};
use m2m_proto::IdentityKey;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct Rec {
    address: String,
    identity: String,
    mailbox: Option<Value>,
    status: String,
}

#[derive(Default)]
struct State {
    agents: HashMap<String, Rec>,
    conns: HashMap<u64, mpsc::UnboundedSender<Message>>,
    next_conn: u64,
    /// Agent id → the connection subscribed to its mail.
    subs: HashMap<String, u64>,
    /// Agent id → its registered connection.
    registered: HashMap<String, u64>,
    /// Recipient → stored `mail` events.
    stored: HashMap<String, Vec<Value>>,
    /// Every request, in order.
    log: Vec<Value>,
    /// The operator turned the mailbox off: `mail` and `mailbox` are `mailbox_unavailable`.
    mail_off: bool,
    /// Pushes are not followed by `mail_drained` (so only the SDK's ack delay sends acks).
    no_drain: bool,
}

/// A running mailbox hub.
pub struct MailHub {
    addr: SocketAddr,
    stop: CancellationToken,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl MailHub {
    pub async fn start() -> MailHub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hub = MailHub {
            addr,
            stop: CancellationToken::new(),
            state: Arc::default(),
            changed: Arc::default(),
        };
        let (stop, state, changed) = (hub.stop.clone(), hub.state.clone(), hub.changed.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Ok((stream, _)) = listener.accept() => {
                        tokio::spawn(serve(stream, state.clone(), changed.clone(), stop.clone()));
                    }
                }
            }
        });
        hub
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The requests received with `action`, in order.
    pub fn requests(&self, action: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.log
            .iter()
            .filter(|r| r["action"] == action)
            .cloned()
            .collect()
    }

    /// Every id acked so far, in order (repeats included).
    pub fn acked(&self) -> Vec<String> {
        self.requests("mail_ack")
            .iter()
            .flat_map(|r| r["ids"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }

    /// The mail events stored for `to`.
    pub fn stored(&self, to: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.stored.get(to).cloned().unwrap_or_default()
    }

    /// The mailbox key the record of `id` carries.
    pub fn mailbox_of(&self, id: &str) -> Option<Value> {
        let st = self.state.lock().unwrap();
        st.agents.get(id).and_then(|r| r.mailbox.clone())
    }

    /// From now on, publishes `key` as the mailbox key of `id`.
    pub fn substitute_mailbox(&self, id: &str, key: Value) {
        let mut st = self.state.lock().unwrap();
        if let Some(r) = st.agents.get_mut(id) {
            r.mailbox = Some(key);
        }
    }

    /// From now on, keeps no mail (`--no-mailbox`).
    pub fn turn_mail_off(&self) {
        self.state.lock().unwrap().mail_off = true;
    }

    /// From now on, pushes mail without a `mail_drained` after it.
    pub fn stop_draining(&self) {
        self.state.lock().unwrap().no_drain = true;
    }

    /// Stores a `mail` event for `to` and pushes it when `to` is subscribed.
    pub fn store(&self, to: &str, event: Value) {
        let mut st = self.state.lock().unwrap();
        st.stored
            .entry(to.to_owned())
            .or_default()
            .push(event.clone());
        push(&st, to, &event);
    }

    /// Pushes `event` to `to`'s subscription (nothing stored: a replaying hub).
    pub fn push(&self, to: &str, event: Value) {
        push(&self.state.lock().unwrap(), to, &event);
    }

    /// Closes the WebSocket `id` registered on.
    pub fn kick(&self, id: &str) {
        let st = self.state.lock().unwrap();
        if let Some(tx) = st.registered.get(id).and_then(|c| st.conns.get(c)) {
            let _ = tx.send(Message::Close(None));
        }
    }

    /// Waits (bounded) until `pred` holds of the hub.
    pub async fn wait_until(&self, what: &str, mut pred: impl FnMut(&MailHub) -> bool) {
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let changed = self.changed.notified();
                if pred(self) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        assert!(waited.is_ok(), "the hub never saw: {what}");
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::task::yield_now().await;
    }
}

fn push(st: &State, to: &str, event: &Value) {
    if let Some(tx) = st.subs.get(to).and_then(|c| st.conns.get(c)) {
        let _ = tx.send(Message::text(event.to_string()));
        if !st.no_drain {
            let _ = tx.send(Message::text(json!({"event":"mail_drained"}).to_string()));
        }
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let conn = {
        let mut st = state.lock().unwrap();
        st.next_conn += 1;
        let conn = st.next_conn;
        st.conns.insert(conn, tx.clone());
        conn
    };
    let nonce = hex::encode(rand::random::<[u8; 32]>());
    let hello = json!({"event":"challenge","nonce":nonce}).to_string();
    let _ = ws.send(Message::text(hello)).await;
    let mut mine: Option<String> = None;
    loop {
        let text = tokio::select! {
            _ = stop.cancelled() => break,
            out = rx.recv() => {
                match out {
                    Some(Message::Close(_)) | None => break,
                    Some(m) => if ws.send(m).await.is_err() { break },
                }
                continue;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => t.to_string(),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        let reply = {
            let mut st = state.lock().unwrap();
            handle(&mut st, &text, conn, &nonce, &mut mine)
        };
        // The reply goes first, then whatever it made the hub push (via the queue).
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
        }
        changed.notify_waiters();
    }
    let mut st = state.lock().unwrap();
    st.conns.remove(&conn);
    st.subs.retain(|_, c| *c != conn);
    if let Some(id) = mine {
        if st.registered.get(&id) == Some(&conn) {
            st.registered.remove(&id);
            if let Some(r) = st.agents.get_mut(&id) {
                r.status = "offline".into();
            }
        }
    }
    drop(st);
    changed.notify_waiters();
}

/// The id an unregistered WebSocket proves with the attach proof, or the error reply.
fn proven(req: &Value, nonce: &str, mine: &Option<String>) -> Result<String, Value> {
    if let Some(id) = mine {
        return Ok(id.clone());
    }
    let err = |e: &str| json!({"status":"error","error":e});
    let identity = req["identity"]
        .as_str()
        .ok_or_else(|| err("identity_required"))?;
    let key = IdentityKey::from_b64(identity).map_err(|_| err("invalid_identity"))?;
    let sig = req["signature"].as_str().unwrap_or_default();
    key.verify(&relay_attach_message(nonce, &key), sig)
        .map_err(|_| err("invalid_signature"))?;
    Ok(key.agent_id())
}

fn handle(st: &mut State, text: &str, conn: u64, nonce: &str, mine: &mut Option<String>) -> Value {
    let req: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    st.log.push(req.clone());
    let err = |e: &str| json!({"status":"error","error":e});
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_owned();
    let mut reply = match s("action").as_str() {
        "challenge" => json!({"status":"ok","nonce":nonce}),
        "register" => 'register: {
            let Ok(key) = IdentityKey::from_b64(&s("identity")) else {
                break 'register err("identity_required");
            };
            let caps: Vec<String> =
                serde_json::from_value(req["capabilities"].clone()).unwrap_or_default();
            let signed = registration_message(nonce, &key, &s("address"), &caps);
            if key.verify(&signed, &s("signature")).is_err() {
                break 'register err("invalid_signature");
            }
            let id = key.agent_id();
            let rec = Rec {
                address: s("address"),
                identity: s("identity"),
                mailbox: req.get("mailbox").cloned(),
                status: "online".into(),
            };
            st.agents.insert(id.clone(), rec);
            st.registered.insert(id.clone(), conn);
            *mine = Some(id.clone());
            json!({"status":"ok","id":id,"address":s("address")})
        }
        "lookup" => match st.agents.get(&s("id")) {
            Some(r) => {
                let mut agent = json!({"id":s("id"),"address":r.address,"capabilities":[],
                    "metadata":{},"status":r.status,"identity":r.identity});
                if let Some(m) = &r.mailbox {
                    agent["mailbox"] = m.clone();
                }
                json!({"status":"ok","agent":agent})
            }
            None => err("agent_not_found"),
        },
        "discover" => {
            let agents: Vec<Value> = st
                .agents
                .iter()
                .filter(|(id, r)| r.status == "online" && Some(*id) != mine.as_ref())
                .map(|(id, r)| {
                    let mut agent = json!({"id":id,"address":r.address,"capabilities":[],
                        "metadata":{},"status":r.status,"lastSeen":0,"identity":r.identity});
                    if let Some(m) = &r.mailbox {
                        agent["mailbox"] = m.clone();
                    }
                    agent
                })
                .collect();
            json!({"status":"ok","count":agents.len(),"limit":100,"offset":0,"agents":agents})
        }
        "heartbeat" => json!({"status":"ok","timestamp":1_700_000_000_000u64}),
        "status" => json!({"status":"ok"}),
        "disconnect" => {
            if let Some(r) = mine.as_ref().and_then(|id| st.agents.get_mut(id)) {
                r.status = "offline".into();
            }
            json!({"status":"ok"})
        }
        "mail" | "mailbox" if st.mail_off => err("mailbox_unavailable"),
        "mailbox" => match proven(&req, nonce, mine) {
            Ok(id) => {
                st.subs.insert(id.clone(), conn);
                let stored = st.stored.get(&id).cloned().unwrap_or_default();
                if let Some(tx) = st.conns.get(&conn) {
                    for event in &stored {
                        let _ = tx.send(Message::text(event.to_string()));
                    }
                    let _ = tx.send(Message::text(json!({"event":"mail_drained"}).to_string()));
                }
                json!({"status":"ok","agentId":id,"pending":stored.len()})
            }
            Err(e) => e,
        },
        "mail" => match proven(&req, nonce, mine) {
            Ok(from) => {
                let to = s("to");
                match st.agents.get(&to) {
                    None => err("agent_not_found"),
                    Some(r) if r.mailbox.is_none() => err("mailbox_unavailable"),
                    Some(_) => {
                        let expires = 1_900_000_000_000u64 + req["ttl"].as_u64().unwrap_or(0);
                        let event = json!({"event":"mail","id":s("id"),"from":from,
                            "storedAt":1_800_000_000_000u64,"expiresAt":expires,"sealed":s("sealed")});
                        st.stored.entry(to.clone()).or_default().push(event.clone());
                        push(st, &to, &event);
                        json!({"status":"ok","queued":true,"messageId":s("id"),"expiresAt":expires})
                    }
                }
            }
            Err(e) => e,
        },
        "mail_ack" => {
            let me = mine.clone().or_else(|| {
                st.subs
                    .iter()
                    .find(|(_, c)| **c == conn)
                    .map(|(id, _)| id.clone())
            });
            let ids: Vec<String> = serde_json::from_value(req["ids"].clone()).unwrap_or_default();
            let mut acked = 0;
            if let Some(stored) = me.and_then(|me| st.stored.get_mut(&me)) {
                let before = stored.len();
                stored.retain(|e| !ids.iter().any(|id| e["id"] == id.as_str()));
                acked = before - stored.len();
            }
            json!({"status":"ok","acked":acked})
        }
        _ => err("unknown_action"),
    };
    if let Some(cid) = req.get("correlationId") {
        reply["correlationId"] = cid.clone();
    }
    reply
}
