//! Our responder: hostile lines, acks in order, the deadlines, the handshake rate, the
//! connection cap and backpressure from a full inbox.

use super::*;

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
    let mut sends = spawn_sends(&pool, &server.address, 3, |i| json!(i));
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
