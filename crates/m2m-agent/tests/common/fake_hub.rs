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
use m2m_proto::identity::registration_message;
use m2m_proto::IdentityKey;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
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

    async fn start_with(port: u16, v21: bool) -> FakeHub {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let registry = Arc::new(Mutex::new(Registry {
            v21,
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
    let v21 = {
        let mut reg = registry.lock().unwrap();
        reg.connections += 1;
        reg.v21
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
            m = ws.next() => m,
        };
        let text = match msg {
            Some(Ok(Message::Text(t))) => t.to_string(),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => continue,
        };
        let reply = handle(&text, peer, &registry, &mut mine, nonce.as_deref());
        if ws.send(Message::text(reply.to_string())).await.is_err() {
            break;
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
    agent
}
