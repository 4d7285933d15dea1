//! A minimal in-memory hub speaking the WebSocket API of PROTOCOL.md A2, used until (and
//! beside) the real `m2m-hub`. It also sends an unsolicited `{"event":"challenge"}` first, as a
//! 2.1 hub does, to prove the agent ignores it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
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
}

#[derive(Default)]
struct Registry {
    agents: HashMap<String, Record>,
    clock: u64,
    connections: u64,
}

/// A running fake hub.
pub struct FakeHub {
    addr: SocketAddr,
    stop: CancellationToken,
    registry: Arc<Mutex<Registry>>,
}

impl FakeHub {
    /// Starts on 127.0.0.1:`port` (0 = any).
    pub async fn start(port: u16) -> FakeHub {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let registry = Arc::new(Mutex::new(Registry::default()));
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
    registry.lock().unwrap().connections += 1;
    let _ = ws
        .send(Message::text(
            json!({"event":"challenge","nonce":"00ff"}).to_string(),
        ))
        .await;
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
        let reply = handle(&text, peer, &registry, &mut mine);
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
        Some("register") => {
            let id = hex::encode(rand::random::<[u8; 16]>());
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
                .map(|r| json!({"id":r.id,"address":r.address,"capabilities":r.capabilities,"metadata":r.metadata,"status":r.status,"lastSeen":0}))
                .collect();
            json!({"status":"ok","count":page.len(),"limit":limit,"offset":offset,"agents":page})
        }
        Some("find") => {
            let cap = s("capability").unwrap_or_default();
            let page: Vec<Value> = reg
                .agents
                .values()
                .filter(|r| r.status == "online" && r.capabilities.contains(&cap))
                .map(|r| json!({"id":r.id,"address":r.address,"capabilities":r.capabilities,"metadata":r.metadata}))
                .collect();
            json!({"status":"ok","count":page.len(),"agents":page})
        }
        Some("lookup") => match s("id").and_then(|id| reg.agents.get(&id).cloned()) {
            Some(r) => {
                json!({"status":"ok","agent":{"id":r.id,"address":r.address,"capabilities":r.capabilities,"metadata":r.metadata,"status":r.status}})
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
