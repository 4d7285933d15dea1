//! Issue 13, failures 9 and 11: a frame the responder's state does not allow is an error
//! that leaves the session as it was — a stray `auth` on an established session used to wipe
//! its keys (later messages got `handshake_required`), and every replayed handshake line
//! re-keyed the session (an X25519 + Ed25519 + HKDF per line).

use m2m_proto::frame::{errors, Frame};
use m2m_proto::identity::Identity;
use m2m_proto::session::{
    Initiator, InitiatorEvent, PeerExpectation, PeerPolicy, Responder, ResponderOutput,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

fn unexpected() -> ResponderOutput {
    ResponderOutput::Send(Frame::error(errors::UNEXPECTED_FRAME))
}

fn send(out: ResponderOutput) -> Frame {
    match out {
        ResponderOutput::Send(f) => f,
        other => panic!("expected a frame to send, got {other:?}"),
    }
}

/// Seals a message on `init` and checks that `resp` still opens it.
fn still_delivers(init: &mut Initiator, resp: &mut Responder, n: i64, rng: &mut StdRng) {
    let msg = init.seal("t", &json!({ "n": n }), None, rng).unwrap();
    match resp.handle_frame(msg, rng) {
        ResponderOutput::Deliver { message, .. } => assert_eq!(message.payload, json!({ "n": n })),
        other => panic!("the session lost its keys: {other:?}"),
    }
}

/// A 2.1 handshake up to the initiator's `auth` (not yet given to the responder); the
/// initiator's identity and its `handshake` frame are returned too.
fn until_auth(rng: &mut StdRng) -> (Initiator, Responder, Identity, Frame, Frame) {
    let alice = Identity::generate(rng);
    let bob = Identity::generate(rng);
    let (mut init, hello) = Initiator::new_authenticated(&alice, PeerExpectation::default(), rng);
    let mut resp = Responder::with_identity(bob, PeerPolicy::AcceptAll);
    let ack = send(resp.handle_frame(hello.clone(), rng));
    init.handle_frame(ack).unwrap();
    let auth = init.take_auth_frame().unwrap();
    (init, resp, alice, hello, auth)
}

#[test]
fn stray_auth_on_an_established_session_keeps_its_keys() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut init, mut resp, alice, _, auth) = until_auth(&mut rng);
    assert_eq!(
        resp.handle_frame(auth.clone(), &mut rng),
        ResponderOutput::Nothing
    );
    still_delivers(&mut init, &mut resp, 1, &mut rng);

    // The same auth again, and one with garbage: errors, and the session goes on.
    assert_eq!(resp.handle_frame(auth, &mut rng), unexpected());
    assert_eq!(
        resp.handle_line(br#"{"type":"auth","sig":"AAAA"}"#, &mut rng),
        unexpected()
    );
    assert!(resp.is_authenticated());
    assert_eq!(resp.peer_id(), Some(alice.agent_id()));
    still_delivers(&mut init, &mut resp, 2, &mut rng);
}

#[test]
fn auth_before_any_handshake_is_an_error() {
    let mut rng = StdRng::seed_from_u64(12);
    let mut resp = Responder::with_identity(Identity::generate(&mut rng), PeerPolicy::AcceptAll);
    assert_eq!(
        resp.handle_line(br#"{"type":"auth","sig":"AAAA"}"#, &mut rng),
        unexpected()
    );
    assert!(resp.awaits_handshake());
    // The handshake still works afterwards.
    let (mut init, hello) = Initiator::new("alice", &mut rng);
    let ack = send(resp.handle_frame(hello, &mut rng));
    assert_eq!(init.handle_frame(ack).unwrap(), InitiatorEvent::Established);
    still_delivers(&mut init, &mut resp, 1, &mut rng);
}

#[test]
fn one_handshake_per_connection() {
    let mut rng = StdRng::seed_from_u64(9);
    // 2.0: a replayed handshake line is refused before any key exchange, and the first
    // session's key still opens messages.
    let (mut init, hello) = Initiator::new("alice", &mut rng);
    let mut resp = Responder::new();
    let ack = send(resp.handle_frame(hello.clone(), &mut rng));
    init.handle_frame(ack).unwrap();
    assert!(!resp.awaits_handshake());
    for _ in 0..3 {
        assert_eq!(resp.handle_frame(hello.clone(), &mut rng), unexpected());
    }
    let (_, other) = Initiator::new("mallory", &mut rng);
    assert_eq!(resp.handle_frame(other, &mut rng), unexpected());
    assert_eq!(resp.peer_id(), Some("alice"));
    still_delivers(&mut init, &mut resp, 1, &mut rng);

    // 2.1, in both later states: waiting for `auth`, and established.
    let (mut init, mut resp, _, hello, auth) = until_auth(&mut rng);
    assert_eq!(resp.handle_frame(hello.clone(), &mut rng), unexpected());
    // The pending auth survived the replay: the first transcript's signature completes it.
    assert_eq!(resp.handle_frame(auth, &mut rng), ResponderOutput::Nothing);
    assert_eq!(resp.handle_frame(hello, &mut rng), unexpected());
    assert!(resp.is_authenticated());
    still_delivers(&mut init, &mut resp, 2, &mut rng);
}
