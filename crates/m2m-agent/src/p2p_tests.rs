//! P2P tests without a hub: our responder against hostile raw clients, and our pooled
//! initiator against our responder. Tests of deadlines and rates drive the responder over
//! in-memory streams ([`MemoryListener`]) on paused time: real sockets let paused time jump
//! ahead while the kernel carries bytes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use m2m_proto::{Frame, Identity, Initiator, InitiatorEvent};
use serde_json::{json, Value};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream,
    ReadHalf, WriteHalf,
};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::transport::Piped;
use crate::error::AgentError;
use crate::identity::LocalIdentity;
use crate::inbox::Inbox;
use crate::listener::{
    handle_connection, serve, InboundContext, InboundLimits, InboundSessions, SharedLimits,
};
use crate::peer::{Credentials, OutboundSettings, Pool};
use crate::refusals::RefusalCounter;
use crate::slots::InboundSlots;

struct Server {
    address: String,
    inbox: Arc<Inbox>,
    cancel: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn limits() -> InboundLimits {
    InboundLimits {
        max_frame_len: 4096,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_per_ip: 64,
        buffer_budget: crate::defaults::INBOUND_BUFFER_BUDGET,
        handshakes_per_second: crate::defaults::HANDSHAKES_PER_SECOND_PER_IP,
        handshake_burst: crate::defaults::HANDSHAKE_BURST_PER_IP,
    }
}

async fn server_with(limits: InboundLimits, capacity: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let inbox = Inbox::new(capacity, crate::defaults::INBOX_BYTES);
    let cancel = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        InboundContext {
            inbox: inbox.clone(),
            local: Arc::new(LocalIdentity::new(
                Identity::generate(&mut rand::thread_rng()),
                false,
                false,
            )),
            sessions: Arc::new(InboundSessions::default()),
            refusals: Arc::default(),
        },
        limits,
        cancel.clone(),
        TaskTracker::new(),
    ));
    Server {
        address,
        inbox,
        cancel,
    }
}

fn pool_with(idle: Duration) -> Pool {
    Pool::new(
        OutboundSettings {
            max_frame_len: 4096,
            write_timeout: Duration::from_secs(5),
            pool_idle_close: idle,
        },
        Identity::generate(&mut rand::thread_rng()),
        Inbox::new(16, crate::defaults::INBOX_BYTES),
        CancellationToken::new(),
        TaskTracker::new(),
    )
}

/// The responder's side of an in-memory stream.
type MemoryWriter = Piped<WriteHalf<DuplexStream>>;

/// Our responder without a socket: each [`MemoryListener::connect`] runs one inbound
/// connection's task over an in-memory stream, with the slots and limits they all share.
struct MemoryListener {
    shared: Arc<SharedLimits>,
    slots: Arc<InboundSlots>,
    context: InboundContext<MemoryWriter>,
    cancel: CancellationToken,
}

impl MemoryListener {
    fn new(limits: InboundLimits) -> Self {
        let refusals = Arc::new(RefusalCounter::default());
        MemoryListener {
            slots: InboundSlots::new(limits.max_connections, limits.max_per_ip, refusals.clone()),
            shared: SharedLimits::new(limits),
            context: InboundContext {
                inbox: Inbox::new(16, crate::defaults::INBOX_BYTES),
                local: Arc::new(LocalIdentity::new(
                    Identity::generate(&mut rand::thread_rng()),
                    false,
                    false,
                )),
                sessions: Arc::new(InboundSessions::default()),
                refusals,
            },
            cancel: CancellationToken::new(),
        }
    }

    /// A connection from `ip`: its task starts now (its deadlines count from here).
    fn connect(&self, ip: [u8; 4]) -> Raw<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>> {
        let ip = IpAddr::from(ip);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(server);
        let slot = self.slots.admit(ip, Instant::now()).unwrap();
        tokio::spawn(handle_connection(
            r,
            Arc::new(Piped::new(w)),
            ip,
            self.context.clone(),
            self.shared.clone(),
            self.cancel.clone(),
            slot,
        ));
        let (reader, writer) = tokio::io::split(client);
        Raw {
            reader: BufReader::new(reader),
            writer,
        }
    }
}

impl Drop for MemoryListener {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A raw line client.
struct Raw<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: BufReader<R>,
    writer: W,
}

impl Raw {
    async fn connect(address: &str) -> Raw {
        let (r, w) = TcpStream::connect(address).await.unwrap().into_split();
        Raw {
            reader: BufReader::new(r),
            writer: w,
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Raw<R, W> {
    async fn send(&mut self, line: &[u8]) {
        self.writer.write_all(line).await.unwrap();
        self.writer.write_all(b"\n").await.unwrap();
    }

    /// The next line as JSON, or `None` at EOF / reset.
    async fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    /// Performs a valid handshake and returns the initiator.
    async fn handshake(&mut self, from: &str) -> Initiator {
        let (mut init, hello) = Initiator::new(from, &mut rand::thread_rng());
        self.writer.write_all(&hello.encode()).await.unwrap();
        let ack = self.recv().await.unwrap();
        assert_eq!(ack["type"], "handshake_ack");
        let ev = init.handle_line(ack.to_string().as_bytes()).unwrap();
        assert_eq!(ev, InitiatorEvent::Established);
        init
    }
}

#[tokio::test]
async fn hostile_peers_get_the_right_error_and_others_are_unaffected() {
    let server = server_with(limits(), 16).await;
    let pool = pool_with(Duration::from_secs(25));

    // Garbage: invalid_message, the connection stays usable.
    let mut garbage = Raw::connect(&server.address).await;
    garbage.send(b"hello there").await;
    assert_eq!(
        garbage.recv().await,
        Some(json!({"error":"invalid_message"}))
    );
    garbage.send(br#"{"type":"ping"}"#).await;
    assert_eq!(garbage.recv().await, Some(json!({"type":"pong"})));

    // A key that is not an X25519 SPKI.
    let mut bad_key = Raw::connect(&server.address).await;
    bad_key
        .send(br#"{"type":"handshake","key":"AAAA","from":"ffffffffffffffffffffffffffffffff"}"#)
        .await;
    assert_eq!(
        bad_key.recv().await,
        Some(json!({"error":"invalid_message"}))
    );

    // A message before any handshake.
    let mut early = Raw::connect(&server.address).await;
    early
        .send(br#"{"type":"message","messageType":"chat","data":"AAAA","correlationId":"x1"}"#)
        .await;
    assert_eq!(
        early.recv().await,
        Some(json!({"error":"handshake_required"}))
    );

    // Unknown frame types are ignored: the next answer is the pong.
    early.send(br#"{"type":"teleport"}"#).await;
    early.send(br#"{"type":"ping"}"#).await;
    assert_eq!(early.recv().await, Some(json!({"type":"pong"})));

    // An envelope that fails authentication.
    let mut forger = Raw::connect(&server.address).await;
    forger.handshake("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").await;
    forger
        .send(br#"{"type":"message","messageType":"chat","data":"4J3UP8zzp+A/vAQ9hn674AbpTfISDFh5XSaghLj4Vm/c3jcxvjxWPA==","correlationId":"c4"}"#)
        .await;
    assert_eq!(
        forger.recv().await,
        Some(json!({"error":"decryption_failed"}))
    );

    // A line over the limit: frame_too_large, then the connection is closed.
    let mut flood = Raw::connect(&server.address).await;
    flood.send(&vec![b'x'; 10_000]).await;
    assert_eq!(flood.recv().await, Some(json!({"error":"frame_too_large"})));
    assert_eq!(flood.recv().await, None);

    // Meanwhile a well-behaved peer is served normally.
    pool.send(
        &server.address,
        &Credentials::plain("good"),
        "chat",
        &json!({"hi": 1}),
        "c1",
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let got = server.inbox.next(&stop).await.unwrap();
    assert_eq!(got.from, "good");
    assert_eq!(got.payload, json!({"hi": 1}));
    assert_eq!(got.correlation_id.as_deref(), Some("c1"));
    assert!(got.encrypted && !got.authenticated);

    // And the hostile connections that were not closed still answer.
    garbage.send(br#"{"type":"ping"}"#).await;
    assert_eq!(garbage.recv().await, Some(json!({"type":"pong"})));
}

#[tokio::test]
async fn valid_session_acks_in_order_and_without_correlation_id() {
    let server = server_with(limits(), 16).await;
    let mut raw = Raw::connect(&server.address).await;
    let mut init = raw.handshake("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").await;
    let mut rng = rand::thread_rng();
    let m1 = init
        .seal("chat", &json!({"n":1}), Some(json!("c1")), &mut rng)
        .unwrap();
    let m2 = init
        .seal("chat", &json!("plain text"), None, &mut rng)
        .unwrap();
    let mut both = m1.encode();
    both.extend(m2.encode());
    raw.writer.write_all(&both).await.unwrap();
    assert_eq!(
        raw.recv().await,
        Some(json!({"type":"ack","correlationId":"c1"}))
    );
    assert_eq!(raw.recv().await, Some(json!({"type":"ack"})));
    let stop = CancellationToken::new();
    assert_eq!(
        server.inbox.next(&stop).await.unwrap().payload,
        json!({"n":1})
    );
    let second = server.inbox.next(&stop).await.unwrap();
    assert_eq!(second.payload, json!("plain text"));
    assert_eq!(second.correlation_id, None);
}

/// Waits at most a minute of (paused) time for the connection to close; the time it took.
async fn closes_after<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    raw: &mut Raw<R, W>,
) -> Duration {
    let started = Instant::now();
    let next = tokio::time::timeout(Duration::from_secs(60), raw.recv()).await;
    assert_eq!(next, Ok(None), "still open after a minute");
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn the_handshake_deadline_closes_a_connection_that_never_handshakes() {
    // The idle deadline is far: only the handshake deadline can close it at 100 ms.
    let listener = MemoryListener::new(InboundLimits {
        handshake_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    });
    let mut slow = listener.connect([127, 0, 0, 2]);
    // Pings do not complete a handshake: the connection is closed at the deadline.
    slow.send(br#"{"type":"ping"}"#).await;
    assert_eq!(slow.recv().await, Some(json!({"type":"pong"})));
    let took = closes_after(&mut slow).await;
    assert!(
        (Duration::from_millis(100)..Duration::from_millis(110)).contains(&took),
        "closed after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_idle_deadline_closes_a_silent_established_connection() {
    // The handshake deadline is far: only the idle deadline can close it at 150 ms.
    let listener = MemoryListener::new(InboundLimits {
        handshake_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_millis(150),
        ..limits()
    });
    let mut idle = listener.connect([127, 0, 0, 2]);
    idle.handshake("a").await;
    let took = closes_after(&mut idle).await;
    assert!(
        (Duration::from_millis(150)..Duration::from_millis(160)).contains(&took),
        "closed after {took:?}"
    );
    // Reading resets it: a connection that pings every 100 ms stays open past 150 ms.
    let mut busy = listener.connect([127, 0, 0, 2]);
    busy.handshake("b").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        busy.send(br#"{"type":"ping"}"#).await;
        assert_eq!(busy.recv().await, Some(json!({"type":"pong"})));
    }
}

#[tokio::test(start_paused = true)]
async fn handshakes_beyond_the_burst_wait_for_the_rate() {
    let listener = MemoryListener::new(InboundLimits {
        handshakes_per_second: 2,
        handshake_burst: 3,
        ..limits()
    });
    let hello = || Initiator::new("h", &mut rand::thread_rng()).1.encode();
    let answer = async |ip: [u8; 4]| {
        let mut raw = listener.connect(ip);
        raw.writer.write_all(&hello()).await.unwrap();
        raw.recv().await
    };
    for _ in 0..3 {
        assert_eq!(
            answer([10, 0, 0, 1]).await.unwrap()["type"],
            "handshake_ack"
        );
    }
    assert_eq!(
        answer([10, 0, 0, 1]).await,
        Some(json!({"error": "rate_limited"}))
    );
    let refused = || listener.context.refusals.snapshot().handshake_rate;
    assert_eq!(refused(), 1);
    // Another source has a burst of its own.
    assert_eq!(
        answer([10, 0, 0, 2]).await.unwrap()["type"],
        "handshake_ack"
    );
    // At 2 a second, one more after 500 ms, not before.
    tokio::time::advance(Duration::from_millis(400)).await;
    assert_eq!(
        answer([10, 0, 0, 1]).await,
        Some(json!({"error": "rate_limited"}))
    );
    assert_eq!(refused(), 2);
    tokio::time::advance(Duration::from_millis(200)).await;
    assert_eq!(
        answer([10, 0, 0, 1]).await.unwrap()["type"],
        "handshake_ack"
    );
    assert_eq!(refused(), 2);
}

#[tokio::test]
async fn inbound_connections_are_capped() {
    let server = server_with(
        InboundLimits {
            max_connections: 2,
            ..limits()
        },
        16,
    )
    .await;
    let mut a = Raw::connect(&server.address).await;
    let mut b = Raw::connect(&server.address).await;
    for c in [&mut a, &mut b] {
        c.send(br#"{"type":"ping"}"#).await;
        assert_eq!(c.recv().await, Some(json!({"type":"pong"})));
    }
    // Over the cap, a newcomer takes the slot of a holder that never handshook (issue 13
    // #5): the cap still holds, two connections at most.
    let mut over = Raw::connect(&server.address).await;
    over.send(br#"{"type":"ping"}"#).await;
    assert_eq!(over.recv().await, Some(json!({"type":"pong"})));
    let mut open = 0;
    for c in [&mut a, &mut b, &mut over] {
        // The evicted one may be closed already: a failed write is an answer too.
        let _ = c.writer.write_all(b"{\"type\":\"ping\"}\n").await;
        if c.recv().await.is_some() {
            open += 1;
        }
    }
    assert_eq!(open, 2);
}

#[tokio::test]
async fn a_full_inbox_holds_back_acks_instead_of_dropping() {
    let server = server_with(limits(), 1).await;
    let pool = Arc::new(pool_with(Duration::from_secs(25)));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..3 {
        let pool = pool.clone();
        let address = server.address.clone();
        sends.spawn(async move {
            pool.send(
                &address,
                &Credentials::plain("me"),
                "n",
                &json!(i),
                &format!("c{i}"),
            )
            .await
        });
    }
    // One message fits in the queue, so at least one send is still waiting for its ack.
    let done = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(r) = sends.join_next().await {
            r.unwrap().unwrap();
        }
    })
    .await;
    assert!(done.is_err(), "all acked although nobody read");
    let stop = CancellationToken::new();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(server.inbox.next(&stop).await.unwrap().payload);
    }
    while let Some(r) = sends.join_next().await {
        r.unwrap().unwrap();
    }
    got.sort_by_key(|v| v.as_i64());
    assert_eq!(got, vec![json!(0), json!(1), json!(2)]);
}

#[tokio::test]
async fn pool_reuses_one_connection_for_many_pipelined_messages() {
    let server = server_with(limits(), 4096).await;
    let pool = Arc::new(pool_with(Duration::from_secs(25)));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..2000 {
        let pool = pool.clone();
        let address = server.address.clone();
        sends.spawn(async move {
            pool.send(
                &address,
                &Credentials::plain("me"),
                "n",
                &json!({ "i": i }),
                &format!("c{i}"),
            )
            .await
        });
    }
    while let Some(r) = sends.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(pool.live(), 1);
    let stop = CancellationToken::new();
    for _ in 0..2000 {
        assert_eq!(server.inbox.next(&stop).await.unwrap().from, "me");
    }
    // Sequential sends arrive in order.
    for i in 0..50 {
        pool.send(
            &server.address,
            &Credentials::plain("me"),
            "seq",
            &json!(i),
            "s",
        )
        .await
        .unwrap();
    }
    for i in 0..50 {
        assert_eq!(server.inbox.next(&stop).await.unwrap().payload, json!(i));
    }
}

#[tokio::test]
async fn pool_reopens_after_the_peer_closed_the_connection() {
    let server = server_with(
        InboundLimits {
            idle_timeout: Duration::from_millis(50),
            ..limits()
        },
        16,
    )
    .await;
    let pool = pool_with(Duration::from_secs(25));
    let me = Credentials::plain("me");
    pool.send(&server.address, &me, "a", &json!(1), "c1")
        .await
        .unwrap();
    // The peer closes the idle connection (after 50 ms; real time, the peer is on TCP).
    let first = pool.pooled(&server.address, &me).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), first.closed()).await;
    assert!(closed.is_ok(), "the peer never closed the idle connection");
    // The next send still gets through, on a new connection.
    pool.send(&server.address, &me, "b", &json!(2), "c2")
        .await
        .unwrap();
    let second = pool.pooled(&server.address, &me).unwrap();
    assert!(
        !Arc::ptr_eq(&first, &second),
        "sent on the closed connection"
    );
    let stop = CancellationToken::new();
    assert_eq!(server.inbox.next(&stop).await.unwrap().message_type, "a");
    assert_eq!(server.inbox.next(&stop).await.unwrap().message_type, "b");
}

#[tokio::test]
async fn pool_closes_idle_connections() {
    let server = server_with(limits(), 16).await;
    let pool = pool_with(Duration::from_millis(50));
    let me = Credentials::plain("me");
    pool.send(&server.address, &me, "a", &json!(1), "c1")
        .await
        .unwrap();
    let sent = Instant::now();
    let conn = pool.pooled(&server.address, &me).unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed()).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    assert!(sent.elapsed() >= Duration::from_millis(50), "closed early");
    assert_eq!(pool.live(), 0);
    pool.send(&server.address, &me, "b", &json!(2), "c2")
        .await
        .unwrap();
}

#[tokio::test]
async fn send_errors_are_typed() {
    let pool = pool_with(Duration::from_secs(25));
    // Nobody listening.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    assert!(matches!(
        pool.send(&dead, &Credentials::plain("me"), "a", &json!(1), "c")
            .await,
        Err(AgentError::Unreachable { .. })
    ));

    // A peer that cannot decrypt, then one that refuses with another error.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        for answer in ["decryption_failed", "busy"] {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut lines, mut w, _responder) = accept_handshake(stream).await;
            let _message = lines.next_line().await.unwrap().unwrap();
            w.write_all(&Frame::error(answer).encode()).await.unwrap();
            // Keep the connection open so the failure is the error frame, not a close.
            let _ = lines.next_line().await;
        }
    });
    assert!(matches!(
        pool.send(&address, &Credentials::plain("me"), "a", &json!(1), "c")
            .await,
        Err(AgentError::DecryptionFailed { .. })
    ));
    // Dropping the pool closes its connection, which lets the fake peer accept the next.
    drop(pool);
    let pool = pool_with(Duration::from_secs(25));
    assert_eq!(
        pool.send(&address, &Credentials::plain("me"), "a", &json!(1), "c")
            .await,
        Err(AgentError::Peer {
            address: address.clone(),
            error: "busy".into()
        })
    );

    // A payload too large for one frame.
    let server = server_with(limits(), 16).await;
    assert!(matches!(
        pool.send(
            &server.address,
            &Credentials::plain("me"),
            "a",
            &json!("x".repeat(10_000)),
            "c"
        )
        .await,
        Err(AgentError::InvalidPayload(_))
    ));
}

#[tokio::test]
async fn ping_gets_a_pong_from_our_responder() {
    let server = server_with(limits(), 16).await;
    crate::peer::ping(&server.address, 4096).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn ping_measures_the_round_trip() {
    // A peer that answers 40 ms after the ping arrives, then one that refuses.
    for answer in [Frame::Pong, Frame::error("busy")] {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let peer = tokio::spawn(async move {
            let mut ping = [0u8; 16];
            let n = theirs.read(&mut ping).await.unwrap();
            assert_eq!(&ping[..n], b"{\"type\":\"ping\"}\n");
            tokio::time::sleep(Duration::from_millis(40)).await;
            theirs.write_all(&answer.encode()).await.unwrap();
            theirs
        });
        let rtt = crate::peer::ping_on(ours, "peer", 4096).await;
        drop(peer.await.unwrap());
        match rtt {
            Ok(rtt) => assert!(
                (Duration::from_millis(40)..Duration::from_millis(41)).contains(&rtt),
                "{rtt:?}"
            ),
            Err(e) => assert_eq!(
                e,
                AgentError::Peer {
                    address: "peer".into(),
                    error: "busy".into()
                }
            ),
        }
    }
    // A peer that hangs up without a pong.
    let (ours, theirs) = tokio::io::duplex(4096);
    drop(theirs);
    assert!(matches!(
        crate::peer::ping_on(ours, "peer", 4096).await,
        Err(AgentError::Unreachable { .. })
    ));
}

/// A peer that acks the first message on its first connection, then drops that connection
/// on the next message without acking; later connections are served normally. Counts the
/// connections it accepted and the messages it acked.
async fn flaky_peer() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (accepted, acked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counts = (accepted.clone(), acked.clone());
    tokio::spawn(async move {
        let mut first = true;
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let acked = acked.clone();
            let die_after_one = std::mem::replace(&mut first, false);
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = BufReader::new(r).lines();
                let mut responder = m2m_proto::Responder::new();
                let mut seen = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    let out = responder.handle_line(line.as_bytes(), &mut rand::thread_rng());
                    match out {
                        m2m_proto::ResponderOutput::Send(f) => {
                            w.write_all(&f.encode()).await.unwrap()
                        }
                        m2m_proto::ResponderOutput::Deliver { ack, .. } => {
                            seen += 1;
                            if die_after_one && seen == 2 {
                                return;
                            }
                            w.write_all(&ack.encode()).await.unwrap();
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (address, counts.0, counts.1)
}

#[tokio::test]
async fn a_dead_pooled_connection_is_retried_once_on_a_fresh_one() {
    let (address, accepted, acked) = flaky_peer().await;
    let pool = pool_with(Duration::from_secs(25));
    pool.send(&address, &Credentials::plain("me"), "a", &json!(1), "c1")
        .await
        .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // Message 2 goes out on the pooled connection, which dies without acking it: the pool
    // sends it again on a new connection, once.
    pool.send(&address, &Credentials::plain("me"), "b", &json!(2), "c2")
        .await
        .unwrap();
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(acked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_fresh_connection_that_dies_is_not_retried() {
    // Without a pooled connection to blame, a peer that hangs up is unreachable.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut responder = m2m_proto::Responder::new();
            let hello = lines.next_line().await.unwrap().unwrap();
            let out = responder.handle_line(hello.as_bytes(), &mut rand::thread_rng());
            if let m2m_proto::ResponderOutput::Send(f) = out {
                w.write_all(&f.encode()).await.unwrap();
            }
            let _ = lines.next_line().await;
        }
    });
    let pool = pool_with(Duration::from_secs(25));
    assert!(matches!(
        pool.send(&address, &Credentials::plain("me"), "a", &json!(1), "c1")
            .await,
        Err(AgentError::Unreachable { .. })
    ));
}

/// Throughput of one reused connection: `cargo test -p m2m-agent --release -- --ignored
/// throughput --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run in release"]
async fn throughput_on_one_connection() {
    const SENDERS: usize = 256;
    const N: usize = 200_000 / SENDERS * SENDERS;
    let server = server_with(limits(), 4096).await;
    let pool = Arc::new(pool_with(Duration::from_secs(25)));
    // ~200-byte frames.
    let payload = json!({ "text": "x".repeat(100) });
    pool.send(
        &server.address,
        &Credentials::plain("me"),
        "warmup",
        &payload,
        "w",
    )
    .await
    .unwrap();
    let inbox = server.inbox.clone();
    let reader = tokio::spawn(async move {
        let stop = CancellationToken::new();
        for _ in 0..=N {
            inbox.next(&stop).await.unwrap();
        }
    });
    let started = std::time::Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (pool, address, payload) = (pool.clone(), server.address.clone(), payload.clone());
        senders.spawn(async move {
            for i in 0..N / SENDERS {
                pool.send(
                    &address,
                    &Credentials::plain("me"),
                    "bulk",
                    &payload,
                    &format!("{s}-{i}"),
                )
                .await
                .unwrap();
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let elapsed = started.elapsed();
    reader.await.unwrap();
    println!(
        "{N} acked messages in {elapsed:?}: {:.0} msg/s",
        N as f64 / elapsed.as_secs_f64()
    );
}

/// Messages larger together than the socket takes: the senders write what fits and the
/// writer task the rest once the peer reads; every message arrives whole, in order, and is
/// acked.
#[tokio::test]
async fn sends_beyond_the_socket_buffer_are_finished_by_the_writer_task() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = 24usize;
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut lines, mut w, mut responder) = accept_handshake(stream).await;
        // Read nothing for a while: the sender's socket fills up.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut seen = Vec::new();
        for _ in 0..count {
            let line = lines.next_line().await.unwrap().unwrap();
            let output = responder.handle_line(line.as_bytes(), &mut rand::thread_rng());
            match output {
                m2m_proto::ResponderOutput::Deliver { message, ack } => {
                    let text = message.payload.as_str().unwrap().to_owned();
                    seen.push((text.len(), text.as_bytes()[0]));
                    w.write_all(&ack.encode()).await.unwrap();
                }
                other => panic!("{other:?}"),
            }
        }
        seen
    });
    let pool = Arc::new(Pool::new(
        OutboundSettings {
            max_frame_len: 2 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            pool_idle_close: Duration::from_secs(25),
        },
        Identity::generate(&mut rand::thread_rng()),
        Inbox::new(16, crate::defaults::INBOX_BYTES),
        CancellationToken::new(),
        TaskTracker::new(),
    ));
    // The first message opens the connection; the others queue behind it.
    pool.send(
        &address,
        &Credentials::plain("me"),
        "big",
        &json!("a"),
        "c0",
    )
    .await
    .unwrap();
    let mut sends = Vec::new();
    for i in 1..count {
        let pool = pool.clone();
        let address = address.clone();
        sends.push(tokio::spawn(async move {
            let text = char::from(b'a' + (i % 26) as u8)
                .to_string()
                .repeat(1_000_000);
            pool.send(
                &address,
                &Credentials::plain("me"),
                "big",
                &json!(text),
                &format!("c{i}"),
            )
            .await
        }));
        // Spawned one after another, so that they queue in order.
        tokio::task::yield_now().await;
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let seen = peer.await.unwrap();
    assert_eq!(seen.len(), count);
    assert_eq!(seen[0], (1, b'a'));
    for (i, (len, first)) in seen.into_iter().enumerate().skip(1) {
        assert_eq!((len, first), (1_000_000, b'a' + (i % 26) as u8));
    }
}

/// A hand-driven peer's side of the handshake on an accepted stream: reads the `handshake`
/// line and answers it.
async fn accept_handshake(
    stream: tokio::net::TcpStream,
) -> (
    tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    tokio::net::tcp::OwnedWriteHalf,
    m2m_proto::Responder,
) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut responder = m2m_proto::Responder::new();
    let hello = lines.next_line().await.unwrap().unwrap();
    let m2m_proto::ResponderOutput::Send(ack) =
        responder.handle_line(hello.as_bytes(), &mut rand::thread_rng())
    else {
        panic!("no handshake_ack");
    };
    w.write_all(&ack.encode()).await.unwrap();
    (lines, w, responder)
}
