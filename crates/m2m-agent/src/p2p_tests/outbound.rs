//! Our initiator and its pool: reuse and pipelining, reopening and idle close, typed
//! errors, ping, the retry of a dead pooled connection, and writes beyond the socket buffer.

use super::*;

#[tokio::test]
async fn pool_reuses_one_connection_for_many_pipelined_messages() {
    let server = server_with(limits(), 4096).await;
    let pool = Arc::new(pool_with(Duration::from_secs(25)));
    let mut sends = spawn_sends(&pool, &server.address, 2000, |i| json!({ "i": i }));
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
    let (go, read_on) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (mut lines, mut w, mut responder) = accept_handshake(stream).await;
        let mut read_on = Some(read_on);
        let mut seen = Vec::new();
        for n in 0..count {
            if n == 1 {
                // Read nothing more until every other message is queued: the sender's
                // socket fills up.
                read_on.take().unwrap().await.unwrap();
            }
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
    let conn = pool.pooled(&address, &Credentials::plain("me")).unwrap();
    while conn.awaiting_ack() < count - 1 {
        tokio::task::yield_now().await;
    }
    go.send(()).unwrap();
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
