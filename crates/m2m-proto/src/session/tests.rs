//! In-memory initiator–responder pairs on a seeded RNG.

use super::*;
use crate::crypto::encode_payload;
use crate::frame::Frame;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

fn line(f: &Frame) -> Vec<u8> {
    let mut l = f.encode();
    l.pop();
    l
}

#[test]
fn in_memory_pair_exchanges_messages() {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut init, hello) = Initiator::new("alice", &mut rng);
    let mut resp = Responder::new();
    let ResponderOutput::Send(ack) = resp.handle_line(&line(&hello), &mut rng) else {
        panic!("no handshake_ack")
    };
    assert_eq!(
        init.handle_line(&line(&ack)).unwrap(),
        InitiatorEvent::Established
    );
    for i in 0..3 {
        let payload = json!({"n": i});
        let msg = init
            .seal("chat", &payload, Some(json!(format!("c{i}"))), &mut rng)
            .unwrap();
        match resp.handle_line(&line(&msg), &mut rng) {
            ResponderOutput::Deliver { message, ack } => {
                assert_eq!(message.from, "alice");
                assert_eq!(message.payload, payload);
                assert!(!message.authenticated);
                assert_eq!(
                    init.handle_line(&line(&ack)).unwrap(),
                    InitiatorEvent::Acked(Some(json!(format!("c{i}"))))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

/// `seal_into` writes the frame `seal` builds (2.0: same nonce from the same rng state;
/// 2.1 both ways: the same counter), and what it writes opens on the other side.
#[test]
fn seal_into_writes_what_seal_builds() {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut init, hello) = Initiator::new("alice", &mut rng);
    let mut resp = Responder::new();
    let ResponderOutput::Send(ack) = resp.handle_line(&line(&hello), &mut rng) else {
        panic!("no handshake_ack")
    };
    init.handle_line(&line(&ack)).unwrap();
    let payload = json!({"n": "x".repeat(1000)});
    let plaintext = encode_payload(&payload);
    let cid = json!("c1");
    let framed = init
        .seal_plaintext(
            "t",
            &plaintext,
            Some(cid.clone()),
            &mut StdRng::seed_from_u64(9),
        )
        .unwrap();
    let mut out = Vec::new();
    init.seal_into(
        "t",
        &plaintext,
        Some("c1"),
        &mut StdRng::seed_from_u64(9),
        &mut out,
    )
    .unwrap();
    assert_eq!(out, framed.encode());
    for _ in 0..2 {
        let mut out = Vec::new();
        init.seal_into("t", &plaintext, None, &mut rng, &mut out)
            .unwrap();
        out.pop();
        match resp.handle_line(&out, &mut rng) {
            ResponderOutput::Deliver { message, ack } => {
                assert_eq!(message.payload, payload);
                assert_eq!(
                    ack,
                    Frame::Ack {
                        correlation_id: None
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
    // A 2.0 responder sends nothing back.
    assert_eq!(
        resp.seal_into("t", b"x", None, &mut rng, &mut Vec::new()),
        Err(SessionError::NotEstablished)
    );
}

#[test]
fn initiator_surfaces_peer_errors() {
    let mut rng = StdRng::seed_from_u64(2);
    let (mut init, _) = Initiator::new("a", &mut rng);
    assert_eq!(
        init.handle_line(br#"{"error":"invalid_message"}"#),
        Err(SessionError::PeerError("invalid_message".into()))
    );
    assert!(init.seal("x", &json!(1), None, &mut rng).is_err());
    assert!(matches!(
        init.handle_line(br#"{"type":"handshake_ack","key":"AAAA"}"#),
        Err(SessionError::Crypto(_))
    ));
}
