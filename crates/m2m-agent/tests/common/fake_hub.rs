//! A minimal in-memory hub speaking the WebSocket API of PROTOCOL.md A2, used beside the
//! real `m2m-hub`. By default it is a 2.1 hub (PROTOCOL.md B): a challenge on WebSocket open
//! and on the `challenge` action, registration with a verified identity under the derived id,
//! and `identity` published in lookup/discover/find. [`FakeHub::start_v20`] is a 2.0 hub
//! (no challenge; `unknown_action`), and [`FakeHub::lie_about`] makes it answer with another
//! agent's address for an id — the malicious hub of docs/SECURITY.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use m2m_proto::identity::{registration_message, relay_attach_message};
use m2m_proto::relay::{id_text, raw_id, CloseReason, RelayFrame};
use m2m_proto::IdentityKey;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
struct Record {
    id: String,
    address: String,
    capabilities: Vec<String>,
    metadata: Map<String, Value>,
    status: String,
    seen: u64,
    identity: Option<String>,
    /// Relay: set once attached (kept by [`FakeHub::detach`]).
    relay: Option<String>,
}

impl Record {
    /// The address this hub tells others: the real one, unless it lies about this id.
    fn told_address(&self, reg: &Registry) -> String {
        reg.lies
            .get(&self.id)
            .cloned()
            .unwrap_or_else(|| self.address.clone())
    }
}

#[derive(Default)]
struct Registry {
    agents: HashMap<String, Record>,
    clock: u64,
    connections: u64,
    /// Addresses given out instead of the real ones, by id.
    lies: HashMap<String, String>,
    v21: bool,
    /// Relay (docs/RELAY.md) on: the `relay` action and binary frames.
    relay_on: bool,
    url: String,
    window: u32,
    /// Each WebSocket's outgoing queue, by connection number.
    conns: HashMap<u64, mpsc::UnboundedSender<Message>>,
    /// Attached agent ids → connection.
    attached: HashMap<String, u64>,
    /// (connection, stream) → (connection, stream), both directions.
    routes: HashMap<(u64, u32), (u64, u32)>,
    next_even: HashMap<u64, u32>,
    tamper: Option<Tamper>,
    /// Per tampered stream: message lines seen, and a held one (reorder).
    tampered: HashMap<(u64, u32), TamperState>,
}

/// Per tampered stream: message lines seen, and a held one (reorder).
type TamperState = (usize, Option<Vec<u8>>);

/// What a tampering relay does to the session bytes it forwards from an opener to the
/// stream's destination (docs/SECURITY.md, "Relay").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Flips a bit inside the first sealed message.
    FlipBit,
    /// Injects a forged message line before the first real one.
    Inject,
    /// Forwards the first message line twice.
    Replay,
    /// Swaps the first two message lines.
    Reorder,
    /// Stamps a random agent id as the source of every OPEN.
    WrongSource,
}

/// A running fake hub.
pub struct FakeHub {
    addr: SocketAddr,
    stop: CancellationToken,
    registry: Arc<Mutex<Registry>>,
}

impl FakeHub {
    /// Starts a 2.1 hub on 127.0.0.1:`port` (0 = any).
    pub async fn start(port: u16) -> FakeHub {
        Self::start_with(port, true).await
    }

    /// Starts a 2.0 hub: no challenge, ids random on every register, no identities.
    pub async fn start_v20(port: u16) -> FakeHub {
        Self::start_with(port, false).await
    }

    /// Starts a 2.1 hub that relays (docs/RELAY.md), with `window` bytes per stream.
    pub async fn start_relay(window: u32) -> FakeHub {
        let hub = Self::start_with(0, true).await;
        {
            let mut reg = hub.registry.lock().unwrap();
            reg.relay_on = true;
            reg.window = window;
        }
        hub
    }

    /// From now on, tampers with relayed bytes.
    pub fn tamper(&self, tamper: Tamper) {
        self.registry.lock().unwrap().tamper = Some(tamper);
    }

    /// Forgets that `id` is attached (its record still names the relay): OPENs to it are
    /// answered `unreachable`.
    pub fn detach(&self, id: &str) {
        self.registry.lock().unwrap().attached.remove(id);
    }

    /// Closes the WebSocket `id` is attached on (the agent sees its hub connection drop).
    pub fn kick(&self, id: &str) {
        let reg = self.registry.lock().unwrap();
        if let Some(tx) = reg.attached.get(id).and_then(|c| reg.conns.get(c)) {
            let _ = tx.send(Message::Close(None));
        }
    }

    async fn start_with(port: u16, v21: bool) -> FakeHub {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let registry = Arc::new(Mutex::new(Registry {
            v21,
            url: format!("ws://{addr}/ws"),
            window: 256 * 1024,
            ..Registry::default()
        }));
        let (s, r) = (stop.clone(), registry.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    Ok((stream, peer)) = listener.accept() => {
                        tokio::spawn(serve(stream, peer, r.clone(), s.clone()));
                    }
                }
            }
        });
        FakeHub {
            addr,
            stop,
            registry,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting and closes every connection.
    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::task::yield_now().await;
    }

    /// From now on, tells everyone that `id` is at `address` (keeping its identity).
    pub fn lie_about(&self, id: &str, address: &str) {
        let mut reg = self.registry.lock().unwrap();
        reg.lies.insert(id.to_owned(), address.to_owned());
    }

    /// From now on, publishes `identity` (base64) under `id` instead of its own.
    pub fn lie_about_identity(&self, id: &str, identity: &str) {
        let mut reg = self.registry.lock().unwrap();
        if let Some(r) = reg.agents.get_mut(id) {
            r.identity = Some(identity.to_owned());
        }
    }

    /// Status of `id` as the registry holds it.
    pub fn status_of(&self, id: &str) -> Option<String> {
        let reg = self.registry.lock().unwrap();
        reg.agents.get(id).map(|r| r.status.clone())
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    stop: CancellationToken,
) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let (v21, conn) = {
        let mut reg = registry.lock().unwrap();
        reg.connections += 1;
        let conn = reg.connections;
        reg.conns.insert(conn, tx);
        (reg.v21, conn)
    };
    let nonce = v21.then(|| hex::encode(rand::random::<[u8; 32]>()));
    if let Some(nonce) = &nonce {
        let _ = ws
            .send(Message::text(
                json!({"event":"challenge","nonce":nonce}).to_string(),
            ))
            .await;
    }
    let mut mine: Option<String> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            out = rx.recv() => {
                match out {
                    Some(Message::Close(_)) | None => break,
                    Some(m) => if ws.send(m).await.is_err() { break },
                }
                continue;
            }
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Binary(b))) => {
                relay_frame(&registry, conn, &b);
                continue;
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let reply = handle(&text, peer, &registry, &mut mine, nonce.as_deref(), conn);
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
        }
    }
    {
        let mut reg = registry.lock().unwrap();
        reg.conns.remove(&conn);
        reg.attached.retain(|_, c| *c != conn);
        let gone: Vec<((u64, u32), (u64, u32))> = reg
            .routes
            .iter()
            .filter(|(from, _)| from.0 == conn)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (from, to) in gone {
            reg.routes.remove(&from);
            reg.routes.remove(&to);
            let close = RelayFrame::Close {
                stream: to.1,
                reason: CloseReason::Gone,
                detail: "",
            };
            send_frame(&reg, to.0, close.to_vec());
        }
    }
    if let Some(id) = mine {
        if let Some(r) = registry.lock().unwrap().agents.get_mut(&id) {
            r.status = "offline".into();
        }
    }
    let _ = ws.close(None).await;
}

fn handle(
    text: &str,
    peer: SocketAddr,
    registry: &Mutex<Registry>,
    mine: &mut Option<String>,
    nonce: Option<&str>,
    conn: u64,
) -> Value {
    let Ok(req) = serde_json::from_str::<Value>(text) else {
        return json!({"status":"error","error":"invalid_json"});
    };
    let cid = req.get("correlationId").cloned().unwrap_or(Value::Null);
    let mut reg = registry.lock().unwrap();
    reg.clock += 1;
    let now = reg.clock;
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let s = |k: &str| req.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut reply = match s("action").as_deref() {
        Some("challenge") if nonce.is_some() => {
            json!({"status":"ok","nonce":nonce})
        }
        Some("register") => 'register: {
            let caps = strs(req.get("capabilities"));
            let (id, identity) = match (nonce, s("identity")) {
                (Some(nonce), Some(identity)) => {
                    let Ok(key) = IdentityKey::from_b64(&identity) else {
                        break 'register json!({"status":"error","error":"invalid_identity"});
                    };
                    let signed =
                        registration_message(nonce, &key, &s("address").unwrap_or_default(), &caps);
                    if key
                        .verify(&signed, &s("signature").unwrap_or_default())
                        .is_err()
                    {
                        break 'register json!({"status":"error","error":"invalid_signature"});
                    }
                    (key.agent_id(), Some(identity))
                }
                _ => (hex::encode(rand::random::<[u8; 16]>()), None),
            };
            let port = s("address")
                .and_then(|a| a.rsplit_once(':').map(|(_, p)| p.to_owned()))
                .unwrap_or_default();
            let address = format!("{}:{}", peer.ip(), port);
            reg.agents.insert(
                id.clone(),
                Record {
                    id: id.clone(),
                    address: address.clone(),
                    capabilities: strs(req.get("capabilities")),
                    metadata: req
                        .get("metadata")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    status: "online".into(),
                    seen: now,
                    identity,
                    relay: None,
                },
            );
            *mine = Some(id.clone());
            json!({"status":"ok","id":id,"address":address})
        }
        Some("discover") => {
            let caps = strs(req.get("capabilities"));
            let status = s("status");
            let me = s("id");
            let limit = req.get("limit").and_then(Value::as_u64).unwrap_or(100) as usize;
            let offset = req.get("offset").and_then(Value::as_u64).unwrap_or(0) as usize;
            let mut list: Vec<&Record> = reg
                .agents
                .values()
                .filter(|r| r.status != "offline")
                .filter(|r| Some(&r.id) != me.as_ref())
                .filter(|r| caps.is_empty() || r.capabilities.iter().any(|c| caps.contains(c)))
                .filter(|r| status.as_ref().is_none_or(|s| &r.status == s))
                .collect();
            list.sort_by_key(|r| std::cmp::Reverse(r.seen));
            let page: Vec<Value> = list
                .into_iter()
                .skip(offset)
                .take(limit)
                .map(|r| with_identity(json!({"id":r.id,"address":r.told_address(&reg),"capabilities":r.capabilities,"metadata":r.metadata,"status":r.status,"lastSeen":0}), r))
                .collect();
            json!({"status":"ok","count":page.len(),"limit":limit,"offset":offset,"agents":page})
        }
        Some("find") => {
            let cap = s("capability").unwrap_or_default();
            let page: Vec<Value> = reg
                .agents
                .values()
                .filter(|r| r.status == "online" && r.capabilities.contains(&cap))
                .map(|r| with_identity(json!({"id":r.id,"address":r.told_address(&reg),"capabilities":r.capabilities,"metadata":r.metadata}), r))
                .collect();
            json!({"status":"ok","count":page.len(),"agents":page})
        }
        Some("lookup") => match s("id").and_then(|id| reg.agents.get(&id).cloned()) {
            Some(r) => {
                let agent = json!({"id":r.id,"address":r.told_address(&reg),"capabilities":r.capabilities,"metadata":r.metadata,"status":r.status});
                json!({"status":"ok","agent":with_identity(agent, &r)})
            }
            None => json!({"status":"error","error":"agent_not_found"}),
        },
        Some(action @ ("heartbeat" | "status" | "disconnect")) => {
            let id = s("id");
            if id.is_none() || id != *mine {
                json!({"status":"error","error":"forbidden"})
            } else {
                let id = id.unwrap_or_default();
                let r = reg.agents.get_mut(&id);
                match (action, r) {
                    (_, None) => json!({"status":"error","error":"agent_not_found"}),
                    ("heartbeat", Some(r)) => {
                        r.seen = now;
                        json!({"status":"ok","timestamp":1_700_000_000_000u64})
                    }
                    ("status", Some(r)) => {
                        if let Some(st) = req.get("status").and_then(Value::as_str) {
                            r.status = st.to_owned();
                        }
                        if let Some(m) = req.get("metadata").and_then(Value::as_object) {
                            for (k, v) in m {
                                r.metadata.insert(k.clone(), v.clone());
                            }
                        }
                        json!({"status":"ok"})
                    }
                    (_, Some(r)) => {
                        r.status = "offline".into();
                        json!({"status":"ok"})
                    }
                }
            }
        }
        Some("relay") if reg.relay_on && nonce.is_some() => 'relay: {
            let id = match (mine.clone(), s("identity")) {
                (Some(id), _) => id,
                (None, Some(identity)) => {
                    let Ok(key) = IdentityKey::from_b64(&identity) else {
                        break 'relay json!({"status":"error","error":"invalid_identity"});
                    };
                    let signed = relay_attach_message(nonce.unwrap_or_default(), &key);
                    if key
                        .verify(&signed, &s("signature").unwrap_or_default())
                        .is_err()
                    {
                        break 'relay json!({"status":"error","error":"invalid_signature"});
                    }
                    key.agent_id()
                }
                (None, None) => break 'relay json!({"status":"error","error":"identity_required"}),
            };
            reg.attached.insert(id.clone(), conn);
            let url = reg.url.clone();
            let window = reg.window;
            let mut reachable = None;
            if let Some(r) = reg.agents.get_mut(&id) {
                r.relay = Some(url.clone());
                if r.address.ends_with(":0") {
                    reachable = Some("relay");
                }
            }
            let mut reply =
                json!({"status":"ok","relay":url,"agentId":id,"window":window,"maxStreams":1024});
            if let Some(r) = reachable {
                reply["reachable"] = json!(r);
            }
            reply
        }
        Some("stats") => {
            let count = |st: &str| reg.agents.values().filter(|r| r.status == st).count();
            json!({"status":"ok","agents":{"total":reg.agents.len(),"online":count("online"),"idle":count("idle"),"offline":count("offline")},"hub":{"version":"2.0.0","uptime":1,"connections":reg.connections,"activeConnections":0}})
        }
        _ => json!({"status":"error","error":"unknown_action"}),
    };
    if !cid.is_null() {
        reply["correlationId"] = cid;
    }
    reply
}

fn with_identity(mut agent: Value, r: &Record) -> Value {
    if let Some(identity) = &r.identity {
        agent["identity"] = json!(identity);
    }
    if let Some(relay) = &r.relay {
        agent["relay"] = json!(relay);
        if r.address.ends_with(":0") {
            agent["reachable"] = json!("relay");
        }
    }
    agent
}

fn send_frame(reg: &Registry, conn: u64, frame: Vec<u8>) {
    if let Some(tx) = reg.conns.get(&conn) {
        let _ = tx.send(Message::binary(frame));
    }
}

/// Forwards one relay frame from connection `conn` (docs/RELAY.md section 2).
fn relay_frame(registry: &Mutex<Registry>, conn: u64, bytes: &[u8]) {
    let mut guard = registry.lock().unwrap();
    let reg = &mut *guard;
    let Ok(frame) = RelayFrame::parse(bytes) else {
        return;
    };
    match frame {
        RelayFrame::Open { stream, peer } => {
            let source = reg
                .attached
                .iter()
                .find(|(_, c)| **c == conn)
                .map(|(id, _)| id.clone());
            let dest = reg.attached.get(&id_text(&peer)).copied();
            let (Some(source), Some(dest)) = (source, dest) else {
                let close = RelayFrame::Close {
                    stream,
                    reason: CloseReason::Unreachable,
                    detail: "",
                };
                return send_frame(reg, conn, close.to_vec());
            };
            let next = reg.next_even.entry(dest).or_insert(2);
            let dstream = *next;
            *next += 2;
            reg.routes.insert((conn, stream), (dest, dstream));
            reg.routes.insert((dest, dstream), (conn, stream));
            let stamped = if reg.tamper == Some(Tamper::WrongSource) {
                rand::random::<[u8; 16]>()
            } else {
                raw_id(&source).unwrap()
            };
            let open = RelayFrame::Open {
                stream: dstream,
                peer: stamped,
            };
            send_frame(reg, dest, open.to_vec());
        }
        RelayFrame::Data { stream, bytes } => {
            let Some(&(dest, dstream)) = reg.routes.get(&(conn, stream)) else {
                return;
            };
            let out = match reg.tamper {
                Some(t) if stream % 2 == 1 && t != Tamper::WrongSource => {
                    let state = reg.tampered.entry((conn, stream)).or_default();
                    tampered(t, state, bytes)
                }
                _ => bytes.to_vec(),
            };
            if !out.is_empty() {
                let data = RelayFrame::Data {
                    stream: dstream,
                    bytes: &out,
                };
                send_frame(reg, dest, data.to_vec());
            }
        }
        RelayFrame::Credit { stream, bytes } => {
            let Some(&(dest, dstream)) = reg.routes.get(&(conn, stream)) else {
                return;
            };
            send_frame(
                reg,
                dest,
                RelayFrame::Credit {
                    stream: dstream,
                    bytes,
                }
                .to_vec(),
            );
        }
        RelayFrame::Close { stream, reason, .. } => {
            let Some((dest, dstream)) = reg.routes.remove(&(conn, stream)) else {
                return;
            };
            reg.routes.remove(&(dest, dstream));
            send_frame(
                reg,
                dest,
                RelayFrame::Close {
                    stream: dstream,
                    reason,
                    detail: "",
                }
                .to_vec(),
            );
        }
    }
}

/// The bytes a tampering relay forwards instead of `bytes` (line by line: the session's
/// frames are JSON lines; only the sealed message lines are touched).
fn tampered(t: Tamper, state: &mut TamperState, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let is_message = line.ends_with(b"\n")
            && std::str::from_utf8(line).is_ok_and(|l| l.contains(r#""type":"message""#));
        if !is_message {
            out.extend_from_slice(line);
            continue;
        }
        state.0 += 1;
        let nth = state.0;
        match t {
            Tamper::FlipBit if nth == 1 => {
                let mut l = line.to_vec();
                let at = find(&l, br#""data":""#).expect("data") + 12;
                l[at] = if l[at] == b'A' { b'B' } else { b'A' };
                out.extend_from_slice(&l);
            }
            Tamper::Inject if nth == 1 => {
                let forged = base64_of(&rand::random::<[u8; 32]>());
                out.extend_from_slice(
                    format!(r#"{{"type":"message","messageType":"chat","data":"{forged}","correlationId":"forged"}}"#)
                        .as_bytes(),
                );
                out.push(b'\n');
                out.extend_from_slice(line);
            }
            Tamper::Replay if nth == 1 => {
                out.extend_from_slice(line);
                out.extend_from_slice(line);
            }
            Tamper::Reorder if nth == 1 => state.1 = Some(line.to_vec()),
            Tamper::Reorder if nth == 2 => {
                out.extend_from_slice(line);
                out.extend_from_slice(&state.1.take().unwrap_or_default());
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn base64_of(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
