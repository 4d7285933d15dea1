//! Hostile peers driven by hand against a real agent (issue 13, failures 5-9): each test
//! mounts the attack that broke the agent, sized down by a configured limit, and shows that
//! the bound holds and a legitimate sender still gets through. Attackers connect from
//! 127.0.0.2 and up (all of 127/8 is loopback), legitimate senders from 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{agent, FakeHub, RealHub, TestHub};
use m2m_agent::{json, Agent, AgentBuilder, AgentError, Message, Value};
use m2m_proto::frame::errors;
use m2m_proto::{Frame, Initiator, InitiatorEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

on_both_hubs!(
    an_unauthenticated_claim_to_a_verified_id_is_not_answered,
    a_genuine_2_0_sender_is_still_answered,
);

fn local(agent: &Agent) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], agent.local_port()))
}

/// A raw peer connected from `source` (an address of 127/8).
struct Raw {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Raw {
    async fn connect(source: [u8; 4], to: SocketAddr) -> Raw {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let (r, w) = socket.connect(to).await.unwrap().into_split();
        Raw {
            r: BufReader::new(r),
            w,
        }
    }

    async fn send(&mut self, line: &[u8]) -> bool {
        self.w.write_all(line).await.is_ok()
    }

    /// The next line, `None` once the agent closed the connection.
    async fn line(&mut self) -> Option<Value> {
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => serde_json::from_str(&line).ok(),
            Ok(_) => None,
            Err(_) => panic!("the agent neither answered nor closed in 10 s"),
        }
    }

    /// A 2.0 handshake declaring `from`; the initiator if the agent answered it.
    async fn handshake(&mut self, from: &str) -> Option<Initiator> {
        let (mut init, hello) = Initiator::new(from, &mut rand::thread_rng());
        if !self.send(&hello.encode()).await {
            return None;
        }
        let ack = self.line().await?;
        let ok = init.handle_line(ack.to_string().as_bytes()) == Ok(InitiatorEvent::Established);
        ok.then_some(init)
    }
}

/// A target agent under attack and a legitimate sender, on one real hub.
struct Scene {
    hub: RealHub,
    target: Agent,
    sender: Agent,
}

impl Scene {
    async fn start(limits: impl FnOnce(AgentBuilder) -> AgentBuilder) -> Scene {
        let hub = RealHub::start(0).await;
        let target = limits(agent(&hub)).connect().await.unwrap();
        let sender = agent(&hub).connect().await.unwrap();
        Scene {
            hub,
            target,
            sender,
        }
    }

    /// The legitimate sender delivers a message to the target.
    async fn delivers(&self, message_type: &str, payload: Value) {
        self.sender
            .send(&self.target.id(), message_type, payload.clone())
            .await
            .unwrap();
        let m = next(&self.target).await;
        assert_eq!(
            (m.message_type.as_str(), m.payload),
            (message_type, payload)
        );
    }

    async fn stop(self) {
        self.target.disconnect().await.unwrap();
        self.sender.disconnect().await.unwrap();
        self.hub.shutdown().await;
    }
}

async fn next(agent: &Agent) -> Message {
    tokio::time::timeout(Duration::from_secs(10), agent.next_message())
        .await
        .expect("no message within 10 s")
        .expect("agent stopped")
}

/// Failure 5: connections that handshake and then only ping held every slot, so every
/// legitimate sender was refused. Now one source gets its share only, and when the slots run
/// short a newcomer evicts the connection that delivered nothing for longest.
#[tokio::test]
async fn cheap_connections_cannot_lock_senders_out() {
    let scene = Scene::start(|b| b.max_inbound_connections(32).max_inbound_per_ip(8)).await;
    let target = &scene.target;

    // One source: 8 handshakes answered, the rest closed at once.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        let mut raw = Raw::connect([127, 0, 0, 2], local(target)).await;
        match raw.handshake("flooder").await {
            Some(_) => held.push(raw),
            None => refused += 1,
        }
    }
    assert_eq!((held.len(), refused), (8, 4));
    // Each refusal is counted (the accept loop may still be closing the last one).
    while target.refusals().source_share < 4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(target.refusals().source_share, 4);

    // Many sources: 40 more connections from 127.0.0.3..=7, each pinging; the slots are
    // all taken, and the oldest holders have been evicted to make room.
    for source in 3..=7u8 {
        for _ in 0..8 {
            let mut raw = Raw::connect([127, 0, 0, source], local(target)).await;
            if raw.handshake("flooder").await.is_some() {
                raw.send(&Frame::Ping.encode()).await;
                assert_eq!(raw.line().await, Some(json!({"type": "pong"})));
                held.push(raw);
            }
        }
    }
    let mut alive = 0;
    for raw in &mut held {
        if raw.send(&Frame::Ping.encode()).await && raw.line().await.is_some() {
            alive += 1;
        }
    }
    assert_eq!(alive, 32, "every slot held by a flooder");
    // 8 + 40 connections for 32 slots: 16 evictions.
    assert_eq!(target.refusals().evicted, 16);

    // A legitimate sender still gets in (evicting a flooder), several times over.
    for n in 0..3 {
        scene.delivers("real", json!(n)).await;
    }
    scene.stop().await;
}

/// Failure 6: every connection could hold ~2 MiB of an unfinished line. Now the read
/// buffers beyond 64 KiB each share one agent-wide budget; a connection whose line needs
/// more than is left is closed with `overloaded`, and the budget comes back when it closes.
#[tokio::test]
async fn unfinished_lines_share_one_budget() {
    let scene = Scene::start(|b| b.inbound_buffer_budget(4 << 20)).await;
    let (target, sender) = (&scene.target, &scene.sender);

    let chunk = vec![b'x'; 64 * 1024];
    let mut conns = Vec::new();
    for i in 0..12u8 {
        let mut raw = Raw::connect([127, 0, 0, 2 + i], local(target)).await;
        raw.handshake("hoarder").await.expect("handshake");
        // 900 KB of a line that never ends.
        for _ in 0..14 {
            if !raw.send(&chunk).await {
                break;
            }
        }
        conns.push(raw);
    }
    let mut overloaded = 0;
    let mut holding = 0;
    for raw in &mut conns {
        // A ping after the unfinished line is part of the line: a holder stays silent.
        raw.send(b"1").await;
        match tokio::time::timeout(Duration::from_millis(300), raw.line()).await {
            Ok(Some(v)) => {
                assert_eq!(v, json!({"error": errors::OVERLOADED}));
                assert_eq!(raw.line().await, None, "closed after overloaded");
                overloaded += 1;
            }
            Ok(None) => panic!("closed without a word"),
            Err(_) => holding += 1,
        }
    }
    // 4 MiB hold four lines of ~1 MiB (the last one partly): the rest were refused.
    assert!(
        (3..=5).contains(&holding),
        "{holding} connections hold a line"
    );
    assert_eq!(overloaded + holding, 12);
    assert_eq!(target.refusals().buffer_budget, overloaded);

    // Small messages need no budget: they still get through.
    scene.delivers("small", json!(1)).await;
    // Once the hoarders are gone the budget is back, and a large message fits again.
    drop(conns);
    let big = json!("y".repeat(600_000));
    let mut delivered = false;
    for _ in 0..50 {
        if sender.send(&target.id(), "big", big.clone()).await.is_ok() {
            delivered = true;
            break;
        }
        // The agent notices the closed hoarders within a poll; give it that.
        tokio::task::yield_now().await;
    }
    assert!(delivered);
    assert_eq!(next(target).await.message_type, "big");
    scene.stop().await;
}

/// Failure 9: one connection could replay its handshake line without end (a key exchange
/// each). Now a second handshake is refused before any crypto, and handshakes per source
/// are rate-limited.
#[tokio::test]
async fn handshakes_are_one_per_connection_and_rate_limited_per_source() {
    let scene = Scene::start(|b| {
        b.handshakes_per_ip_per_second(1)
            .configure(|c| c.handshake_burst_per_ip = 3)
    })
    .await;
    let target = &scene.target;

    let mut raw = Raw::connect([127, 0, 0, 2], local(target)).await;
    let (_, hello) = Initiator::new("replayer", &mut rand::thread_rng());
    raw.send(&hello.encode()).await;
    assert_eq!(raw.line().await.unwrap()["type"], "handshake_ack");
    for _ in 0..3 {
        raw.send(&hello.encode()).await;
        assert_eq!(
            raw.line().await,
            Some(json!({"error": errors::UNEXPECTED_FRAME}))
        );
    }

    // That was one of 3; ten more back to back: a couple at most are let through (one a
    // second after the burst), the rest refused and closed.
    let (mut answered, mut limited) = (0, 0);
    for _ in 0..10 {
        let mut raw = Raw::connect([127, 0, 0, 2], local(target)).await;
        raw.send(&hello.encode()).await;
        match raw.line().await {
            Some(v) if v["type"] == "handshake_ack" => answered += 1,
            Some(v) => {
                assert_eq!(v, json!({"error": errors::RATE_LIMITED}));
                assert_eq!(raw.line().await, None);
                limited += 1;
            }
            None => panic!("closed without a word"),
        }
    }
    assert!(
        (2..=4).contains(&answered),
        "{answered} handshakes answered"
    );
    assert_eq!(answered + limited, 10);
    assert_eq!(target.refusals().handshake_rate, limited);
    // Other sources are not limited by it.
    scene.delivers("real", json!(1)).await;
    scene.stop().await;
}

/// A raw 2.0 sender at `to` declaring `from`: one `ask` message with correlationId `c1`.
async fn claim(to: SocketAddr, from: &str) {
    let mut raw = Raw::connect([127, 0, 0, 2], to).await;
    let mut init = raw.handshake(from).await.expect("handshake");
    let msg = init
        .seal(
            "ask",
            &json!({"say": "I owe you"}),
            Some(json!("c1")),
            &mut rand::thread_rng(),
        )
        .unwrap();
    raw.send(&msg.encode()).await;
    assert_eq!(
        raw.line().await,
        Some(json!({"type":"ack","correlationId":"c1"}))
    );
}

/// Failure 8: a 2.0 sender declares `from = <victim>`; answering it over our authenticated
/// route to the victim handed the attacker's words to the victim as authenticated. Now the
/// answer is refused (the hub vouches for the victim's identity, so the claim is false), and
/// even a response the victim never asked for would not reach its application.
async fn an_unauthenticated_claim_to_a_verified_id_is_not_answered<H: TestHub>() {
    let hub = H::start(0).await;
    let responder = agent(&hub).connect().await.unwrap();
    let victim = agent(&hub).connect().await.unwrap();
    claim(local(&responder), &victim.id()).await;
    let m = next(&responder).await;
    assert_eq!(
        (m.from.as_str(), m.authenticated),
        (victim.id().as_str(), false)
    );
    let answered = responder.respond(&m, m.payload.clone()).await;
    assert!(
        matches!(answered, Err(AgentError::Authentication { .. })),
        "{answered:?}"
    );
    // The victim's next message is the honest one after the attempt.
    responder
        .send(&victim.id(), "marker", json!({}))
        .await
        .unwrap();
    let seen = next(&victim).await;
    assert_eq!(
        (seen.message_type.as_str(), seen.authenticated),
        ("marker", true)
    );
    responder.disconnect().await.unwrap();
    victim.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// Registers a raw 2.0 agent (no identity) at `port` on the hub; returns its id and keeps
/// the WebSocket open while the returned handle lives.
async fn register_2_0(hub_url: &str, port: u16) -> (String, impl Drop) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Ws;
    let (mut ws, _) = tokio_tungstenite::connect_async(hub_url).await.unwrap();
    let register = json!({"action": "register", "address": format!("127.0.0.1:{port}"),
        "capabilities": [], "correlationId": "r1"});
    ws.send(Ws::text(register.to_string())).await.unwrap();
    loop {
        let Some(Ok(Ws::Text(text))) = ws.next().await else {
            panic!("the hub closed before answering register")
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        if v["correlationId"] == "r1" {
            assert_eq!(v["status"], "ok", "{v}");
            let id = v["id"].as_str().unwrap().to_owned();
            return (id, ws_keeper(ws).drop_guard());
        }
    }
}

/// Keeps a WebSocket open (read and ignored) until the returned token is cancelled.
fn ws_keeper<S>(mut ws: S) -> tokio_util::sync::CancellationToken
where
    S: futures_util::Stream + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    let stop = tokio_util::sync::CancellationToken::new();
    let done = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = done.cancelled() => break,
                m = ws.next() => if m.is_none() { break },
            }
        }
    });
    stop
}

/// The other side of failure 8: an agent that really is 2.0 (registered without identity)
/// still gets its answer, as plain 2.0.
async fn a_genuine_2_0_sender_is_still_answered<H: TestHub>() {
    let hub = H::start(0).await;
    let responder = agent(&hub).connect().await.unwrap();
    // The 2.0 agent's P2P side: a plain responder that takes one message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (old_id, _registered) = register_2_0(&hub.url(), port).await;
    let received = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut session = m2m_proto::Responder::new();
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap() == 0 {
                panic!("closed before a message");
            }
            let out = session.handle_line(line.trim_end().as_bytes(), &mut rand::thread_rng());
            match out {
                m2m_proto::ResponderOutput::Send(f) => w.write_all(&f.encode()).await.unwrap(),
                m2m_proto::ResponderOutput::Deliver { message, ack } => {
                    w.write_all(&ack.encode()).await.unwrap();
                    return message;
                }
                other => panic!("{other:?}"),
            }
        }
    });
    claim(local(&responder), &old_id).await;
    let m = next(&responder).await;
    responder.respond(&m, json!({"paid": true})).await.unwrap();
    let answer = received.await.unwrap();
    assert_eq!(
        (
            answer.message_type.as_str(),
            answer.correlation_id,
            answer.payload
        ),
        ("ask:response", Some(json!("c1")), json!({"paid": true}))
    );
    responder.disconnect().await.unwrap();
    hub.shutdown().await;
}

/// Failure 7 (the SDK part): an answer to an unauthenticated sender gives up after the
/// short unverified deadline, not the full send timeout, when the address behind its
/// `from` accepts and never answers (a tarpit).
#[tokio::test]
async fn an_answer_to_a_tarpit_gives_up_early() {
    let hub = FakeHub::start_v20(0).await;
    let responder = agent(&hub)
        .configure(|c| c.unverified_respond_timeout = Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let decoy = agent(&hub).connect().await.unwrap();
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tarpit_addr = tarpit.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = tarpit.accept().await {
            conns.push(c);
        }
    });
    hub.lie_about(&decoy.id(), &tarpit_addr.to_string());
    claim(local(&responder), &decoy.id()).await;
    let m = next(&responder).await;
    let answered = responder.respond(&m, json!("ok")).await;
    match answered {
        Err(AgentError::Timeout { operation, after }) => {
            assert_eq!(
                (operation.as_str(), after),
                ("respond", Duration::from_millis(300))
            );
        }
        other => panic!("{other:?}"),
    }
    held.abort();
    responder.disconnect().await.unwrap();
    decoy.disconnect().await.unwrap();
    hub.shutdown().await;
}
