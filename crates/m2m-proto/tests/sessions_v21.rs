//! 2.1 sessions (PROTOCOL.md B) between in-memory peers, and every 2.0/2.1 combination.
//! Each attack test would pass the attacker's frame through without the protection it names.

use m2m_proto::frame::{errors, Frame};
use m2m_proto::identity::{Identity, IdentityError};
use m2m_proto::session::{
    Initiator, InitiatorEvent, PeerExpectation, PeerPolicy, Responder, ResponderOutput,
    SessionError,
};
use m2m_proto::KeyPair;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

fn rng() -> StdRng {
    StdRng::seed_from_u64(2101)
}

fn send(out: ResponderOutput) -> Frame {
    match out {
        ResponderOutput::Send(f) => f,
        other => panic!("expected a frame to send, got {other:?}"),
    }
}

/// Runs a full 2.1 handshake; returns both ends established.
fn pair(alice: &Identity, bob: &Identity, rng: &mut StdRng) -> (Initiator, Responder) {
    let expect = PeerExpectation {
        identity: Some(bob.public()),
        require_authenticated: true,
    };
    let (mut init, hello) = Initiator::new_authenticated(alice, expect, rng);
    let mut resp = Responder::with_identity(bob.clone(), PeerPolicy::AuthenticatedOnly);
    let ack = send(resp.handle_frame(hello, rng));
    assert_eq!(init.handle_frame(ack).unwrap(), InitiatorEvent::Established);
    let auth = init.take_auth_frame().expect("auth frame");
    assert_eq!(resp.handle_frame(auth, rng), ResponderOutput::Nothing);
    assert!(init.is_authenticated() && resp.is_authenticated());
    (init, resp)
}

#[test]
fn authenticated_session_both_directions() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let (mut init, mut resp) = pair(&alice, &bob, &mut rng);
    assert_eq!(init.peer_id(), Some(bob.agent_id()));
    assert_eq!(resp.peer_id(), Some(alice.agent_id()));

    let msg = init
        .seal("task", &json!({"n": 1}), Some(json!("c1")), &mut rng)
        .unwrap();
    match resp.handle_frame(msg, &mut rng) {
        ResponderOutput::Deliver { message, ack } => {
            assert!(message.authenticated);
            assert_eq!(message.from, alice.agent_id());
            assert_eq!(message.payload, json!({"n": 1}));
            assert_eq!(
                init.handle_frame(ack).unwrap(),
                InitiatorEvent::Acked(Some(json!("c1")))
            );
        }
        other => panic!("{other:?}"),
    }
    // The response travels back on the same connection.
    let reply = resp
        .seal(
            "task:response",
            &json!({"ok": true}),
            Some(json!("c1")),
            &mut rng,
        )
        .unwrap();
    match init.handle_frame(reply).unwrap() {
        InitiatorEvent::Message { message, ack } => {
            assert!(message.authenticated);
            assert_eq!(message.from, bob.agent_id());
            assert_eq!(message.message_type, "task:response");
            assert_eq!(
                resp.handle_frame(ack, &mut rng),
                ResponderOutput::Acked(Some(json!("c1")))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn spoofed_from_is_rejected() {
    let mut rng = rng();
    let mallory = Identity::generate(&mut rng);
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let (_, hello) = Initiator::new_authenticated(&mallory, PeerExpectation::default(), &mut rng);
    // Mallory presents her own key but claims Alice's id.
    let Frame::Handshake { key, identity, .. } = hello else {
        panic!()
    };
    let forged = Frame::Handshake {
        key,
        from: alice.agent_id().to_owned(),
        identity,
    };
    let mut resp = Responder::with_identity(bob, PeerPolicy::AcceptAll);
    assert_eq!(
        resp.handle_frame(forged, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_FAILED))
    );
    // Presenting Alice's public key without her secret fails at the auth signature.
    let (_, hello) = Initiator::new_authenticated(&mallory, PeerExpectation::default(), &mut rng);
    let Frame::Handshake { key, .. } = hello else {
        panic!()
    };
    let mut resp = Responder::with_identity(Identity::generate(&mut rng), PeerPolicy::AcceptAll);
    let ack = send(resp.handle_frame(
        Frame::Handshake {
            key,
            from: alice.agent_id().to_owned(),
            identity: Some(alice.public().to_b64()),
        },
        &mut rng,
    ));
    assert!(matches!(ack, Frame::HandshakeAck { .. }));
    let fake_auth = Frame::Auth {
        sig: mallory.sign_b64(b"anything"),
    };
    assert_eq!(
        resp.handle_frame(fake_auth, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_FAILED))
    );
}

#[test]
fn messages_before_auth_are_refused() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let (mut init, hello) =
        Initiator::new_authenticated(&alice, PeerExpectation::default(), &mut rng);
    let mut resp = Responder::with_identity(bob, PeerPolicy::AcceptAll);
    let ack = send(resp.handle_frame(hello, &mut rng));
    init.handle_frame(ack).unwrap();
    let msg = init.seal("x", &json!(1), None, &mut rng).unwrap();
    assert_eq!(
        resp.handle_frame(msg, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_REQUIRED))
    );
}

#[test]
fn replayed_and_reordered_frames_are_rejected() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);

    let (mut init, mut resp) = pair(&alice, &bob, &mut rng);
    let m1 = init.seal("t", &json!(1), None, &mut rng).unwrap();
    assert!(matches!(
        resp.handle_frame(m1.clone(), &mut rng),
        ResponderOutput::Deliver { .. }
    ));
    assert_eq!(
        resp.handle_frame(m1, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::REPLAY_DETECTED))
    );

    let (mut init, mut resp) = pair(&alice, &bob, &mut rng);
    let m1 = init.seal("t", &json!(1), None, &mut rng).unwrap();
    let m2 = init.seal("t", &json!(2), None, &mut rng).unwrap();
    assert_eq!(
        resp.handle_frame(m2, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::REPLAY_DETECTED))
    );
    drop(m1);

    // Replay towards the initiator too.
    let (mut init, mut resp) = pair(&alice, &bob, &mut rng);
    let back = resp.seal("t:response", &json!(1), None, &mut rng).unwrap();
    assert!(matches!(
        init.handle_frame(back.clone()),
        Ok(InitiatorEvent::Message { .. })
    ));
    assert_eq!(init.handle_frame(back), Err(SessionError::Replay));
}

#[test]
fn a_lying_hub_cannot_put_a_man_in_the_middle() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let mallory = Identity::generate(&mut rng);
    // The hub vouches for Bob's key but gives Mallory's address: Mallory answers as herself.
    let expect = PeerExpectation {
        identity: Some(bob.public()),
        require_authenticated: false,
    };
    let (mut init, hello) = Initiator::new_authenticated(&alice, expect.clone(), &mut rng);
    let mut mitm = Responder::with_identity(mallory.clone(), PeerPolicy::AcceptAll);
    let ack = send(mitm.handle_frame(hello, &mut rng));
    assert_eq!(
        init.handle_frame(ack),
        Err(SessionError::Authentication(IdentityError::IdMismatch))
    );

    // Mallory relays to Bob but swaps in her own ephemeral key to read the traffic: Bob's
    // signature covers the ephemeral keys, so the swap is detected.
    let (mut init, hello) = Initiator::new_authenticated(&alice, expect.clone(), &mut rng);
    let mut bob_resp = Responder::with_identity(bob.clone(), PeerPolicy::AcceptAll);
    let ack = send(bob_resp.handle_frame(hello, &mut rng));
    let Frame::HandshakeAck {
        identity, id, sig, ..
    } = ack
    else {
        panic!()
    };
    let mallory_eph = KeyPair::generate(&mut rng);
    let tampered = Frame::HandshakeAck {
        key: mallory_eph.public().to_spki_b64(),
        identity,
        id,
        sig,
    };
    assert_eq!(
        init.handle_frame(tampered),
        Err(SessionError::Authentication(IdentityError::BadSignature))
    );

    // Mallory answers as 2.0 (no identity): refused, the hub vouched for a 2.1 key.
    let (mut init, hello) = Initiator::new_authenticated(&alice, expect, &mut rng);
    let mut plain = Responder::new();
    let ack = send(plain.handle_frame(hello, &mut rng));
    assert_eq!(init.handle_frame(ack), Err(SessionError::DowngradeRefused));
}

#[test]
fn every_version_combination_interoperates() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    type MakeInit = Box<dyn Fn(&mut StdRng) -> (Initiator, Frame)>;
    let v20_init: MakeInit =
        Box::new(|rng| Initiator::new("0123456789abcdef0123456789abcdef", rng));
    let a = alice.clone();
    let v21_init: MakeInit =
        Box::new(move |rng| Initiator::new_authenticated(&a, PeerExpectation::default(), rng));
    for (init_name, make_init) in [("2.0", &v20_init), ("2.1", &v21_init)] {
        for resp_v21 in [false, true] {
            let (mut init, hello) = make_init(&mut rng);
            if init_name == "2.0" {
                // A 2.0 handshake is exactly the original's: no extra fields.
                let line = String::from_utf8(hello.encode()).unwrap();
                let keys: Vec<String> =
                    serde_json::from_str::<serde_json::Map<String, Value>>(&line)
                        .unwrap()
                        .keys()
                        .cloned()
                        .collect();
                assert_eq!(keys, ["type", "key", "from"]);
            }
            let mut resp = if resp_v21 {
                Responder::with_identity(bob.clone(), PeerPolicy::AcceptAll)
            } else {
                Responder::new()
            };
            let ack = send(resp.handle_frame(hello, &mut rng));
            assert_eq!(init.handle_frame(ack).unwrap(), InitiatorEvent::Established);
            if let Some(auth) = init.take_auth_frame() {
                resp.handle_frame(auth, &mut rng);
            }
            let both_v21 = init_name == "2.1" && resp_v21;
            assert_eq!(
                init.is_authenticated(),
                both_v21,
                "{init_name} -> {resp_v21}"
            );
            let msg = init
                .seal("hello", &json!({"hi": 1}), Some(json!("k")), &mut rng)
                .unwrap();
            match resp.handle_frame(msg, &mut rng) {
                ResponderOutput::Deliver { message, ack } => {
                    assert_eq!(message.authenticated, both_v21);
                    assert_eq!(message.payload, json!({"hi": 1}));
                    assert_eq!(
                        init.handle_frame(ack).unwrap(),
                        InitiatorEvent::Acked(Some(json!("k")))
                    );
                }
                other => panic!("{init_name} -> {resp_v21}: {other:?}"),
            }
        }
    }
}

#[test]
fn authenticated_only_responder_refuses_2_0_initiators() {
    let mut rng = rng();
    let bob = Identity::generate(&mut rng);
    let (_, hello) = Initiator::new("0123456789abcdef0123456789abcdef", &mut rng);
    let mut resp = Responder::with_identity(bob, PeerPolicy::AuthenticatedOnly);
    assert_eq!(
        resp.handle_frame(hello, &mut rng),
        ResponderOutput::SendAndClose(Frame::error(errors::AUTHENTICATION_REQUIRED))
    );
    // And an initiator that demands authentication refuses a 2.0 responder.
    let alice = Identity::generate(&mut rng);
    let expect = PeerExpectation {
        identity: None,
        require_authenticated: true,
    };
    let (mut init, hello) = Initiator::new_authenticated(&alice, expect, &mut rng);
    let ack = send(Responder::new().handle_frame(hello, &mut rng));
    assert_eq!(init.handle_frame(ack), Err(SessionError::DowngradeRefused));
}

/// The buffer-writing path (`seal_into`, and lines parsed with the envelope borrowed) in
/// both directions: the same frames as `seal` (2.1 nonces are counters, so equal state gives
/// equal bytes), counters advance, and a replayed line is refused.
#[test]
fn seal_into_both_directions_over_lines() {
    let mut rng = rng();
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let (mut init, mut resp) = pair(&alice, &bob, &mut rng);
    let (mut init2, mut resp2) = {
        let mut rng = StdRng::seed_from_u64(2101);
        let alice = Identity::generate(&mut rng);
        let bob = Identity::generate(&mut rng);
        pair(&alice, &bob, &mut rng)
    };
    let strip = |mut l: Vec<u8>| {
        assert_eq!(l.pop(), Some(b'\n'));
        l
    };
    for i in 0..3 {
        let payload = json!({"i": i, "pad": "p".repeat(5000)});
        let plaintext = m2m_proto::crypto::encode_payload(&payload);
        let cid_text = format!("c{i}");
        let cid = json!(cid_text);
        let mut line = Vec::new();
        init.seal_into(
            "task",
            &plaintext,
            Some(cid_text.as_str()),
            &mut rng,
            &mut line,
        )
        .unwrap();
        let built = init2
            .seal("task", &payload, Some(cid.clone()), &mut rng)
            .unwrap();
        assert_eq!(line, built.encode());
        let line = strip(line);
        match resp.handle_line(&line, &mut rng) {
            ResponderOutput::Deliver { message, ack } => {
                assert!(message.authenticated);
                assert_eq!(message.payload, payload);
                assert_eq!(
                    ack,
                    Frame::Ack {
                        correlation_id: Some(cid.clone())
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        let _ = resp2.handle_frame(built, &mut rng);
        // Replaying the line: the counter has moved on.
        if i == 2 {
            assert_eq!(
                resp.handle_line(&line, &mut rng),
                ResponderOutput::SendAndClose(Frame::error(errors::REPLAY_DETECTED))
            );
        }
        let mut back = Vec::new();
        resp2
            .seal_into(
                "task:response",
                b"plain text",
                Some(cid_text.as_str()),
                &mut rng,
                &mut back,
            )
            .unwrap();
        let built = resp.seal(
            "task:response",
            &json!("plain text"),
            Some(cid.clone()),
            &mut rng,
        );
        assert_eq!(back, built.unwrap().encode());
        match init.handle_line(&strip(back)).unwrap() {
            InitiatorEvent::Message { message, .. } => {
                assert_eq!(message.payload, json!("plain text"));
                assert_eq!(message.from, bob.agent_id());
            }
            other => panic!("{other:?}"),
        }
    }
}
