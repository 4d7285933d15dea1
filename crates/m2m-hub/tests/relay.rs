//! The hub's relay (docs/RELAY.md) against an in-process hub, with raw WebSocket clients:
//! attaching (registered, with a proof, refused), the reachability probe, routing with
//! renumbered stream ids and stamped sources, flow control, the stream, budget and idle
//! bounds, the ends going away, malformed frames. Each test names the rule it shows and
//! fails without it.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, http, Backend, Client, TestDb};
use futures_util::{SinkExt, StreamExt};
use m2m_hub::{Hub, HubConfig, ManualClock, RunningHub};
use m2m_proto::identity::{relay_attach_message, Identity};
use m2m_proto::relay::{raw_id, CloseReason, RawAgentId, RelayFrame};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WINDOW: u32 = 256 * 1024;

fn new_identity() -> Identity {
    Identity::generate(&mut rand::thread_rng())
}

/// An attached client: its WebSocket, identity and id.
struct Peer {
    c: Client,
    id: String,
    raw: RawAgentId,
}

/// A frame as the hub sent it, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum F {
    Open(u32, RawAgentId),
    Data(u32, Vec<u8>),
    Credit(u32, u32),
    Close(u32, CloseReason),
}

impl F {
    fn bytes(&self) -> Vec<u8> {
        match self {
            F::Open(s, p) => RelayFrame::Open {
                stream: *s,
                peer: *p,
            }
            .to_vec(),
            F::Data(s, b) => RelayFrame::Data {
                stream: *s,
                bytes: b,
            }
            .to_vec(),
            F::Credit(s, n) => RelayFrame::Credit {
                stream: *s,
                bytes: *n,
            }
            .to_vec(),
            F::Close(s, r) => RelayFrame::Close {
                stream: *s,
                reason: *r,
                detail: "",
            }
            .to_vec(),
        }
    }
}

impl Peer {
    /// Connects and attaches with the proof of a fresh key (no registration, no probe).
    async fn proof(hub: &RunningHub) -> Peer {
        let mut c = Client::connect(&hub.ws_url()).await;
        let identity = new_identity();
        let reply = attach_with(&mut c, &identity).await;
        assert_eq!(reply["status"], "ok", "{reply}");
        let id = identity.public().agent_id();
        assert_eq!(reply["agentId"], id.as_str());
        Peer {
            c,
            raw: raw_id(&id).unwrap(),
            id,
        }
    }

    async fn send(&mut self, f: F) {
        self.send_raw(f.bytes()).await;
    }

    async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.c.ws.send(Message::Binary(bytes.into())).await.unwrap();
    }

    /// The next binary frame (a text message here fails the test).
    async fn frame(&mut self) -> F {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.c.ws.next())
                .await
                .expect("no frame within 30 s")
                .expect("closed")
                .expect("error");
            match msg {
                Message::Binary(b) => {
                    return match RelayFrame::parse(&b).unwrap() {
                        RelayFrame::Open { stream, peer } => F::Open(stream, peer),
                        RelayFrame::Data { stream, bytes } => F::Data(stream, bytes.to_vec()),
                        RelayFrame::Credit { stream, bytes } => F::Credit(stream, bytes),
                        RelayFrame::Close { stream, reason, .. } => F::Close(stream, reason),
                    }
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a relay frame, got {other:?}"),
            }
        }
    }

    /// Receives DATA on `stream` until `n` bytes came; the bytes.
    async fn data(&mut self, stream: u32, n: usize) -> Vec<u8> {
        let mut got = Vec::new();
        while got.len() < n {
            match self.frame().await {
                F::Data(s, b) if s == stream => got.extend(b),
                other => panic!("expected DATA on {stream}, got {other:?}"),
            }
        }
        got
    }
}

async fn attach_with(c: &mut Client, identity: &Identity) -> Value {
    let message = relay_attach_message(&c.nonce, &identity.public());
    c.req(json!({
        "action": "relay",
        "correlationId": "a",
        "identity": identity.public().to_b64(),
        "signature": identity.sign_b64(&message),
    }))
    .await
}

/// A hub on SQLite in memory with the per-IP limits lifted (every client is 127.0.0.1).
/// A hub whose probe waits `probe_timeout`, and a client registered (2.1) at the port of a
/// listener that accepts and never answers: its probe takes the whole timeout.
async fn registered_at_a_silent_port(probe_timeout: Duration) -> (RunningHub, TcpListener, Client) {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let (hub, _) = hub_with(|cfg| cfg.relay.probe_timeout = probe_timeout).await;
    let identity = new_identity();
    let mut c = Client::connect(&hub.ws_url()).await;
    let reply = c
        .register_signed(&identity, &format!("127.0.0.1:{port}"), &[], json!({}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    (hub, silent, c)
}

async fn hub_with(edit: impl FnOnce(&mut HubConfig)) -> (RunningHub, ManualClock) {
    let db = TestDb::new(Backend::Sqlite).await;
    let (mut cfg, clock) = config(&db);
    cfg.limits.max_connections_per_ip = 0;
    cfg.limits.registrations_per_hour = 0;
    cfg.limits.requests_per_second = 0;
    edit(&mut cfg);
    (Hub::start(cfg).await.unwrap(), clock)
}

async fn hub() -> RunningHub {
    hub_with(|_| {}).await.0
}

/// A's stream 1 to B, as B sees it: B's id for it. Checks the OPEN B got.
async fn open(a: &mut Peer, a_stream: u32, b: &mut Peer) -> u32 {
    a.send(F::Open(a_stream, b.raw)).await;
    match b.frame().await {
        F::Open(s, peer) => {
            assert_eq!(peer, a.raw, "the OPEN names the opener's verified id");
            assert_eq!(s % 2, 0, "hub-side ids are even: {s}");
            s
        }
        other => panic!("expected OPEN, got {other:?}"),
    }
}

async fn metric(hub: &RunningHub, line: &str) -> u64 {
    let m = http(hub.local_addr(), "GET", "/metrics").await;
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .unwrap_or_else(|| panic!("no {line} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attaching_with_a_proof_replies_the_relay_url_id_window_and_streams() {
    let hub = hub().await;
    let mut c = Client::connect(&hub.ws_url()).await;
    let identity = new_identity();
    let reply = attach_with(&mut c, &identity).await;
    assert_eq!(
        reply,
        json!({"status":"ok","relay":hub.ws_url(),"agentId":identity.public().agent_id(),
               "window":WINDOW,"maxStreams":1024,"correlationId":"a"}),
        "no reachable: this WebSocket did not register"
    );
    // Attaching again is harmless: the same reply.
    assert_eq!(attach_with(&mut c, &identity).await, reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_proof_a_2_0_client_and_a_relay_turned_off_are_refused() {
    let hub = hub().await;
    let mut c = Client::connect(&hub.ws_url()).await;
    let identity = new_identity();
    // Signed over another WebSocket's nonce: replayed.
    let message = relay_attach_message(&"0".repeat(64), &identity.public());
    let reply = c
        .req(json!({"action":"relay","correlationId":"x",
                    "identity":identity.public().to_b64(),"signature":identity.sign_b64(&message)}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"invalid_signature","correlationId":"x"})
    );
    // A 2.0 registration proves no key.
    c.register(4000, &[]).await;
    let reply = c.req(json!({"action":"relay","correlationId":"y"})).await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"identity_required","correlationId":"y"})
    );

    let (off, _) = hub_with(|cfg| cfg.relay.enabled = false).await;
    let mut c = Client::connect(&off.ws_url()).await;
    let reply = attach_with(&mut c, &identity).await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"relay_unavailable","correlationId":"a"})
    );
}

/// A listener on 127.0.0.1 that answers one P2P ping with a pong.
async fn pong_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut line = String::new();
            let mut r = BufReader::new(&mut s);
            if r.read_line(&mut line).await.is_ok() && line.contains("\"ping\"") {
                let _ = s.write_all(b"{\"type\":\"pong\"}\n").await;
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_agent_is_probed_direct_when_it_answers_and_relay_when_nothing_listens() {
    let hub = hub().await;
    let port = pong_listener().await;
    let identity = new_identity();
    let mut c = Client::connect(&hub.ws_url()).await;
    let reply = c
        .register_signed(&identity, &format!("127.0.0.1:{port}"), &[], json!({}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let reply = c.req(json!({"action":"relay","correlationId":1})).await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["agentId"], identity.public().agent_id().as_str());
    assert_eq!(reply["reachable"], "direct", "{reply}");
    assert_eq!(reply["correlationId"], 1);

    // A port nobody listens on (bound, then closed).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let other = new_identity();
    let mut d = Client::connect(&hub.ws_url()).await;
    let reply = d
        .register_signed(&other, &format!("127.0.0.1:{dead}"), &[], json!({}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let reply = d.req(json!({"action":"relay"})).await;
    assert_eq!(reply["reachable"], "relay", "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_is_served_while_its_probe_runs() {
    let (_hub, silent, mut c) = registered_at_a_silent_port(Duration::from_secs(2)).await;
    c.send_text(json!({"action":"relay","correlationId":"r"}).to_string())
        .await;
    // Answered before the relay reply: the task keeps reading while the probe waits.
    let stats = c.req(json!({"action":"stats","correlationId":"s"})).await;
    assert_eq!(stats["correlationId"], "s", "{stats}");
    let reply = c.recv().await.unwrap();
    assert_eq!(reply["correlationId"], "r", "{reply}");
    assert_eq!(reply["reachable"], "relay", "{reply}");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_to_an_id_not_attached_is_closed_unreachable() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    a.send(F::Open(
        1,
        raw_id(&new_identity().public().agent_id()).unwrap(),
    ))
    .await;
    assert_eq!(a.frame().await, F::Close(1, CloseReason::Unreachable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_both_ways_in_order_on_renumbered_streams() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    let b3 = open(&mut a, 3, &mut b).await;
    assert_ne!(b1, b3);
    // A's stream 1 and 3 arrive on B's ids, in order, whole.
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let chunk: Vec<u8> = (0..1000).map(|j| ((i * 7 + j) % 251) as u8).collect();
        sent.extend_from_slice(&chunk);
        a.send(F::Data(1, chunk)).await;
    }
    a.send(F::Data(3, b"on three".to_vec())).await;
    assert_eq!(b.data(b1, sent.len()).await, sent);
    assert_eq!(b.frame().await, F::Data(b3, b"on three".to_vec()));
    // B answers on its id; A gets it on its own.
    b.send(F::Data(b1, b"pong".to_vec())).await;
    assert_eq!(a.frame().await, F::Data(1, b"pong".to_vec()));
    // CREDIT goes back renumbered; CLOSE too, with its reason.
    b.send(F::Credit(b1, 50_000)).await;
    assert_eq!(a.frame().await, F::Credit(1, 50_000));
    a.send(F::Close(3, CloseReason::Normal)).await;
    assert_eq!(b.frame().await, F::Close(b3, CloseReason::Normal));
    // B may open towards A too: A sees B's verified id on an even id of its own.
    b.send(F::Open(1, a.raw)).await;
    match a.frame().await {
        F::Open(s, peer) => assert!(s % 2 == 0 && peer == b.raw, "{s} {peer:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(metric(&hub, "m2m_hub_relay_streams_total ").await, 3);
    assert_eq!(
        metric(&hub, "m2m_hub_relay_bytes_total ").await,
        50_000 + 8 + 4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_credit_closes_the_stream_protocol_at_both_ends() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    // Four full frames are the whole window; the fifth byte is beyond it.
    for _ in 0..4 {
        a.send(F::Data(1, vec![7; 64 * 1024])).await;
    }
    a.send(F::Data(1, vec![8])).await;
    assert_eq!(a.frame().await, F::Close(1, CloseReason::Protocol));
    assert_eq!(b.data(b1, WINDOW as usize).await, vec![7; WINDOW as usize]);
    assert_eq!(b.frame().await, F::Close(b1, CloseReason::Protocol));
    // Credit granted for bytes never sent is refused the same way.
    let b3 = open(&mut a, 3, &mut b).await;
    b.send(F::Credit(b3, 1)).await;
    assert_eq!(b.frame().await, F::Close(b3, CloseReason::Protocol));
    assert_eq!(a.frame().await, F::Close(3, CloseReason::Protocol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_returned_lets_the_sender_go_on_beyond_one_window() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    for round in 0..3u8 {
        for _ in 0..4 {
            a.send(F::Data(1, vec![round; 64 * 1024])).await;
        }
        assert_eq!(
            b.data(b1, WINDOW as usize).await,
            vec![round; WINDOW as usize]
        );
        b.send(F::Credit(b1, WINDOW)).await;
        assert_eq!(a.frame().await, F::Credit(1, WINDOW));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_streams_are_closed_limit() {
    let (hub, _) = hub_with(|cfg| cfg.relay.max_streams = 2).await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    open(&mut a, 1, &mut b).await;
    open(&mut a, 3, &mut b).await;
    a.send(F::Open(5, b.raw)).await;
    assert_eq!(a.frame().await, F::Close(5, CloseReason::Limit));
    // The destination's table counts too: C opening towards B (full) is refused.
    let mut c = Peer::proof(&hub).await;
    c.send(F::Open(1, b.raw)).await;
    assert_eq!(c.frame().await, F::Close(1, CloseReason::Limit));
    // Closing one frees a slot.
    a.send(F::Close(1, CloseReason::Normal)).await;
    b.frame().await;
    open(&mut a, 7, &mut b).await;
    assert!(metric(&hub, "m2m_hub_refused_total{limit=\"relay_streams\"} ").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_relay_budget_closes_the_stream_budget_at_both_ends() {
    // Room for 1,000 queued bytes hub-wide.
    let (hub, _) = hub_with(|cfg| cfg.relay.budget = 1000).await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    // Written bytes leave the budget: many times the budget goes through, 600 at a time.
    for i in 0..10u8 {
        a.send(F::Data(1, vec![i; 600])).await;
        assert_eq!(b.frame().await, F::Data(b1, vec![i; 600]));
        // Released once B's task finished its write (which B may read a moment before).
        common::eventually("the written bytes are released", || async {
            metric(&hub, "m2m_hub_relay_used_bytes ").await == 0
        })
        .await;
    }
    // More than it can hold at once: refused, never dropped silently.
    a.send(F::Data(1, vec![9; 1001])).await;
    assert_eq!(a.frame().await, F::Close(1, CloseReason::Budget));
    assert_eq!(b.frame().await, F::Close(b1, CloseReason::Budget));
    assert_eq!(
        metric(&hub, "m2m_hub_refused_total{limit=\"relay_budget\"} ").await,
        1
    );
    assert_eq!(metric(&hub, "m2m_hub_relay_used_bytes ").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_disconnects_closes_its_streams_gone() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    open(&mut a, 1, &mut b).await;
    open(&mut a, 3, &mut b).await;
    b.c.close().await;
    let mut closed = vec![a.frame().await, a.frame().await];
    closed.sort_by_key(|f| format!("{f:?}"));
    assert_eq!(
        closed,
        [
            F::Close(1, CloseReason::Gone),
            F::Close(3, CloseReason::Gone)
        ]
    );
    // And the id is no longer routable.
    a.send(F::Open(5, b.raw)).await;
    assert_eq!(a.frame().await, F::Close(5, CloseReason::Unreachable));
    common::eventually("the gauge is back to 0", || async {
        metric(&hub, "m2m_hub_relay_streams ").await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_attach_of_the_same_id_replaces_the_older() {
    let hub = hub().await;
    let identity = new_identity();
    let mut old = Client::connect(&hub.ws_url()).await;
    assert_eq!(attach_with(&mut old, &identity).await["status"], "ok");
    let raw = raw_id(&identity.public().agent_id()).unwrap();
    let mut old = Peer {
        c: old,
        raw,
        id: identity.public().agent_id(),
    };
    let mut a = Peer::proof(&hub).await;
    let o = open(&mut a, 1, &mut old).await;
    let mut new = Client::connect(&hub.ws_url()).await;
    assert_eq!(attach_with(&mut new, &identity).await["status"], "ok");
    let mut new = Peer {
        c: new,
        raw,
        id: old.id.clone(),
    };
    // The older attachment's stream is closed gone at both ends.
    assert_eq!(old.frame().await, F::Close(o, CloseReason::Gone));
    assert_eq!(a.frame().await, F::Close(1, CloseReason::Gone));
    // The id routes to the newer WebSocket now.
    open(&mut a, 3, &mut new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_or_an_even_open_closes_the_websocket_1002() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    a.send_raw(vec![0x09, 0, 0, 0, 1]).await;
    assert_eq!(a.c.closed_by_hub().await, Some(1002));
    let mut b = Peer::proof(&hub).await;
    let c = Peer::proof(&hub).await;
    b.send(F::Open(2, c.raw)).await;
    assert_eq!(b.c.closed_by_hub().await, Some(1002));
    // A client that did not attach gets binary read as text, as before.
    let mut plain = Client::connect(&hub.ws_url()).await;
    plain
        .ws
        .send(Message::Binary(vec![0x02, 0, 0, 0, 1, 0xff].into()))
        .await
        .unwrap();
    assert_eq!(
        plain.recv().await.unwrap(),
        json!({"status":"error","error":"invalid_json"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_over_64_kib_is_still_refused_on_an_attached_websocket() {
    let hub = hub().await;
    let mut a = Peer::proof(&hub).await;
    let big = format!(
        r#"{{"action":"stats","pad":"{}"}}"#,
        "x".repeat(64 * 1024 + 10)
    );
    a.c.send_text(big).await;
    assert_eq!(
        a.c.recv().await.unwrap(),
        json!({"status":"error","error":"message_too_large"})
    );
    // A full DATA frame (5 + 64 KiB) is not too large.
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    a.send(F::Data(1, vec![3; 64 * 1024])).await;
    assert_eq!(b.data(b1, 64 * 1024).await, vec![3; 64 * 1024]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_idle_past_its_limit_is_closed_idle_at_both_ends() {
    let (hub, clock) = hub_with(|_| {}).await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    let b3 = open(&mut a, 3, &mut b).await;
    clock.advance(Duration::from_secs(200));
    // Stream 3 carries a byte: its idle time starts over.
    a.send(F::Data(3, b"x".to_vec())).await;
    assert_eq!(b.frame().await, F::Data(b3, b"x".to_vec()));
    clock.advance(Duration::from_secs(100));
    hub.relay_sweep_now();
    assert_eq!(a.frame().await, F::Close(1, CloseReason::Idle));
    assert_eq!(b.frame().await, F::Close(b1, CloseReason::Idle));
    // Stream 3 is still open.
    a.send(F::Data(3, b"y".to_vec())).await;
    assert_eq!(b.frame().await, F::Data(b3, b"y".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_port_0_is_accepted_for_2_1_and_refused_for_2_0() {
    let hub = hub().await;
    let identity = new_identity();
    let mut c = Client::connect(&hub.ws_url()).await;
    let reply = c
        .register_signed(
            &identity,
            m2m_proto::relay::RELAY_ONLY_ADDRESS,
            &[],
            json!({}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    assert_eq!(reply["address"], "127.0.0.1:0");
    // Never probed: relay-only.
    let reply = c.req(json!({"action":"relay"})).await;
    assert_eq!(reply["reachable"], "relay", "{reply}");
    assert_eq!(reply["agentId"], identity.public().agent_id().as_str());

    let mut old = Client::connect(&hub.ws_url()).await;
    let reply = old
        .req(json!({"action":"register","address":"relay:0","correlationId":"o"}))
        .await;
    assert_eq!(
        reply,
        json!({"status":"error","error":"invalid_address","correlationId":"o"})
    );
}

/// The record of `id` as lookup, discover, find and `/agents` show it (each must agree).
async fn records(hub: &RunningHub, w: &mut Client, id: &str) -> Vec<Value> {
    let lookup = w
        .req(json!({"action":"lookup","id":id}))
        .await
        .get("agent")
        .cloned()
        .unwrap_or(Value::Null);
    let pick = |list: &Value| {
        list["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let discover = pick(&w.req(json!({"action":"discover"})).await);
    let find = pick(&w.req(json!({"action":"find","capability":"relayed"})).await);
    let agents = pick(&http(hub.local_addr(), "GET", "/agents").await.json());
    vec![lookup, discover, find, agents]
}

async fn records_show_relay_and_reachable_until_offline(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (mut cfg, _clock) = config(&db);
    cfg.limits.max_connections_per_ip = 0;
    cfg.limits.requests_per_second = 0;
    cfg.public_url = Some("wss://hub.example/ws".into());
    let hub = Hub::start(cfg.clone()).await.unwrap();
    let identity = new_identity();
    let id = identity.public().agent_id();
    let mut c = Client::connect(&hub.ws_url()).await;
    let reply = c
        .register_signed(
            &identity,
            m2m_proto::relay::RELAY_ONLY_ADDRESS,
            &["relayed"],
            json!({}),
        )
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");
    let mut w = Client::connect(&hub.ws_url()).await;
    // Registered relay-only, not attached yet: reachable, no relay.
    for r in records(&hub, &mut w, &id).await {
        assert_eq!(r["reachable"], "relay", "{r}");
        assert!(r.get("relay").is_none(), "{r}");
    }
    let reply = c.req(json!({"action":"relay"})).await;
    assert_eq!(reply["relay"], "wss://hub.example/ws", "{reply}");
    for r in records(&hub, &mut w, &id).await {
        assert_eq!(r["relay"], "wss://hub.example/ws", "{r}");
        assert_eq!(r["reachable"], "relay", "{r}");
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            &keys[keys.len() - 3..],
            ["identity", "relay", "reachable"],
            "{r}"
        );
    }
    // Stored, so another hub on the same database publishes it too.
    if backend == Backend::Postgres {
        let other = Hub::start(cfg.clone()).await.unwrap();
        other.sync_now().await.unwrap();
        let mut w2 = Client::connect(&other.ws_url()).await;
        let r = w2.req(json!({"action":"lookup","id":id})).await;
        assert_eq!(r["agent"]["relay"], "wss://hub.example/ws", "{r}");
        w2.close().await;
        other.shutdown().await.unwrap();
    }
    let row = hub.state().registry().get(&id).await.unwrap().unwrap();
    assert_eq!(row.relay.as_deref(), Some("wss://hub.example/ws"));
    assert_eq!(row.reachable.as_deref(), Some("relay"));
    // The WebSocket closes: offline, and `relay` is gone everywhere.
    c.close().await;
    common::eventually("the agent is offline", || {
        let (hub, id) = (&hub, id.clone());
        async move {
            let row = hub.state().registry().get(&id).await.unwrap().unwrap();
            row.status == "offline"
        }
    })
    .await;
    let row = hub.state().registry().get(&id).await.unwrap().unwrap();
    assert_eq!(row.relay, None);
    let r = w.req(json!({"action":"lookup","id":id})).await;
    assert!(r["agent"].get("relay").is_none(), "{r}");
    assert_eq!(r["agent"]["reachable"], "relay", "{r}");
    w.close().await;
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

async fn a_2_0_record_is_unchanged_byte_for_byte(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let mut c = Client::connect(&hub.ws_url()).await;
    let id = c.register(4000, &["relayed"]).await;
    c.send_text(json!({"action":"lookup","id":id}).to_string())
        .await;
    let text = loop {
        match c.ws.next().await.unwrap().unwrap() {
            Message::Text(t) => break t.as_str().to_owned(),
            _ => continue,
        }
    };
    assert_eq!(
        text,
        format!(
            r#"{{"status":"ok","agent":{{"id":"{id}","address":"127.0.0.1:4000","capabilities":["relayed"],"metadata":{{}},"status":"online"}}}}"#
        )
    );
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

on_both_backends! {
    records_show_relay_and_reachable => super::records_show_relay_and_reachable_until_offline;
    records_without_relay_fields => super::a_2_0_record_is_unchanged_byte_for_byte;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bytes_per_second_limit_makes_the_sender_wait_and_loses_nothing() {
    // 256 KiB/s with a 64 KiB burst: four 64 KiB frames take at least half a second.
    let (hub, _) = hub_with(|cfg| {
        cfg.relay.rate = 256 * 1024;
        cfg.relay.burst = 64 * 1024;
    })
    .await;
    let mut a = Peer::proof(&hub).await;
    let mut b = Peer::proof(&hub).await;
    let b1 = open(&mut a, 1, &mut b).await;
    let started = std::time::Instant::now();
    let sent: Vec<u8> = (0..4 * 64 * 1024).map(|i| (i % 253) as u8).collect();
    for chunk in sent.chunks(64 * 1024) {
        a.send(F::Data(1, chunk.to_vec())).await;
    }
    assert_eq!(b.data(b1, sent.len()).await, sent);
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
    assert!(metric(&hub, "m2m_hub_refused_total{limit=\"relay_rate\"} ").await >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_beyond_the_per_ip_rate_are_not_made_and_leave_reachable_absent() {
    let (hub, _) = hub_with(|cfg| {
        cfg.relay.probes_per_ip = 1;
        cfg.relay.probe_burst = 1;
    })
    .await;
    let port = pong_listener().await;
    let mut replies = Vec::new();
    for _ in 0..2 {
        let identity = new_identity();
        let mut c = Client::connect(&hub.ws_url()).await;
        let reply = c
            .register_signed(&identity, &format!("127.0.0.1:{port}"), &[], json!({}))
            .await;
        assert_eq!(reply["status"], "ok", "{reply}");
        replies.push(c.req(json!({"action":"relay"})).await);
    }
    assert_eq!(replies[0]["reachable"], "direct", "{}", replies[0]);
    assert_eq!(replies[1]["status"], "ok", "{}", replies[1]);
    assert!(replies[1].get("reachable").is_none(), "{}", replies[1]);
    assert_eq!(
        metric(&hub, "m2m_hub_refused_total{limit=\"relay_probes\"} ").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_asked_twice_while_the_probe_runs_answers_both() {
    let (_hub, silent, mut c) = registered_at_a_silent_port(Duration::from_millis(500)).await;
    c.send_text(json!({"action":"relay","correlationId":1}).to_string())
        .await;
    let second = c.req(json!({"action":"relay","correlationId":2})).await;
    assert_eq!(second["correlationId"], 2, "{second}");
    assert!(second.get("reachable").is_none(), "{second}");
    let first = c.recv().await.unwrap();
    assert_eq!(first["correlationId"], 1, "{first}");
    assert_eq!(first["reachable"], "relay", "{first}");
    drop(silent);
}
