//! Inputs the fuzz targets (fuzz/) found that broke a rule, kept as ordinary tests.

use m2m_proto::frame::{errors, Frame};
use m2m_proto::hub::HubRequest;
use m2m_proto::identity::Identity;
use m2m_proto::session::{
    Initiator, InitiatorEvent, PeerExpectation, PeerPolicy, Responder, ResponderOutput,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

/// A responder and an initiator with a completed session: 2.1 with identities, else 2.0.
fn established(v21: bool, rng: &mut StdRng) -> (Initiator, Responder) {
    let (alice, bob) = (Identity::generate(rng), Identity::generate(rng));
    let (mut init, hello, mut resp) = if v21 {
        let expect = PeerExpectation {
            identity: Some(bob.public()),
            require_authenticated: true,
        };
        let (init, hello) = Initiator::new_authenticated(&alice, expect, rng);
        (
            init,
            hello,
            Responder::with_identity(bob, PeerPolicy::AcceptAll),
        )
    } else {
        let (init, hello) = Initiator::new("alice", rng);
        (init, hello, Responder::new())
    };
    let ResponderOutput::Send(ack) = resp.handle_frame(hello, rng) else {
        panic!("no handshake_ack");
    };
    assert_eq!(init.handle_frame(ack).unwrap(), InitiatorEvent::Established);
    if let Some(auth) = init.take_auth_frame() {
        assert_eq!(resp.handle_frame(auth, rng), ResponderOutput::Nothing);
    }
    assert!(resp.is_established());
    (init, resp)
}

/// The answer to a frame in the wrong state: an error, and the connection stays.
fn refused() -> ResponderOutput {
    ResponderOutput::Send(Frame::error(errors::UNEXPECTED_FRAME))
}

/// fuzz/session_v21: `{"type":"auth"}` on an established session replaced the state before
/// checking it, so the session lost its keys and the next message got handshake_required.
#[test]
fn stray_auth_leaves_an_established_session_as_it_was() {
    for v21 in [true, false] {
        let mut rng = StdRng::seed_from_u64(13);
        let (mut init, mut resp) = established(v21, &mut rng);
        let peer = resp.peer_id().map(str::to_owned);
        let stray = Frame::parse(br#"{"type":"auth","sig":"AAAA"}"#).unwrap();
        assert_eq!(resp.handle_frame(stray, &mut rng), refused());
        assert!(resp.is_established());
        assert_eq!(resp.is_authenticated(), v21);
        assert_eq!(resp.peer_id().map(str::to_owned), peer);
        let msg = init
            .seal("chat", &json!({"n": 1}), Some(json!("c1")), &mut rng)
            .unwrap();
        match resp.handle_frame(msg, &mut rng) {
            ResponderOutput::Deliver { message, .. } => {
                assert_eq!(message.payload, json!({"n": 1}))
            }
            other => panic!("v21={v21}: the session lost its keys: {other:?}"),
        }
    }
}

/// A stray `auth` before any handshake is refused the same way.
#[test]
fn auth_before_handshake_is_refused() {
    let mut rng = StdRng::seed_from_u64(14);
    let mut resp = Responder::with_identity(Identity::generate(&mut rng), PeerPolicy::AcceptAll);
    let stray = Frame::parse(br#"{"type":"auth","sig":"AAAA"}"#).unwrap();
    assert_eq!(resp.handle_frame(stray, &mut rng), refused());
    assert!(!resp.is_established());
}

/// fuzz/hub_request: serde read a JSON array into the request field by field, so
/// `["register"]` was a register; a request that is not an object is invalid JSON.
#[test]
fn hub_requests_are_objects_only() {
    for text in [
        r#"["register"]"#,
        "[24e50]",
        r#" ["lookup", null, "abc"]"#,
        "[]",
        "\"x\"",
        "7",
    ] {
        assert!(HubRequest::parse(text).is_err(), "{text} parsed");
    }
    for text in [
        r#"{"action":"register"}"#,
        " \r\n\t{\"action\":\"stats\"}",
        "{}",
    ] {
        assert!(HubRequest::parse(text).is_ok(), "{text} refused");
    }
}
