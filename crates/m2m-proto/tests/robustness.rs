//! Peer-controlled input must never panic the protocol core. A seeded mutation fuzzer feeds
//! random bytes and mutated valid frames to every parser and both state machines; a panic
//! fails the test (and the seed and case number reproduce it).

use m2m_proto::crypto::{CounterKey, EnvelopeKey, PublicKey};
use m2m_proto::hub::HubRequest;
use m2m_proto::identity::{Identity, IdentityKey};
use m2m_proto::session::{Initiator, PeerExpectation, PeerPolicy, Responder};
use m2m_proto::{Frame, LineDecoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: &[&[u8]] = &[
    br#"{"type":"handshake","key":"MCowBQYDK2VuAyEAbu0+IrC1acqfyIVr7bNmcz0i8DjG0BnGw1X6e7Xp7G4=","from":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}"#,
    br#"{"type":"handshake_ack","key":"MCowBQYDK2VuAyEATNB96TnGSgXeIeONreKPAXezgbjB6uRhL79bTXNnZ1A=","identity":"AAAA","id":"x","sig":"AAAA"}"#,
    br#"{"type":"message","messageType":"chat","data":"e/WtL5hvG1CynFHvcBbnmkv9X8kUg2sqI/CwMu6IlB+9PntZZ84yr37t","correlationId":"c1"}"#,
    br#"{"type":"ack","correlationId":{"deep":[1,2,{"x":null}]}}"#,
    br#"{"type":"auth","sig":"QUJD"}"#,
    br#"{"type":"ping"}"#,
    br#"{"error":"invalid_message"}"#,
    br#"{"action":"register","address":"1.2.3.4:5","capabilities":["a","b"],"metadata":{"k":[1,2]},"correlationId":"1"}"#,
    br#"{"action":"discover","capabilities":["x"],"status":"online","limit":1e308,"offset":-1}"#,
    br#"{"action":"status","id":"abc","status":7,"metadata":[]}"#,
    br#"{"action":"find","capability":null,"limit":"12"}"#,
];

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..rng.gen_range(1..8) {
        match rng.gen_range(0..6) {
            0 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out[i] = rng.gen();
            }
            1 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out.remove(i);
            }
            2 => {
                let i = rng.gen_range(0..=out.len());
                let b = *b"{}[]\":,\\0123456789eE-+.truefalsnul \n\r\t\xff\xc3"
                    .get(rng.gen_range(0..40))
                    .unwrap_or(&b'x');
                out.insert(i, b);
            }
            3 if !out.is_empty() => {
                let i = rng.gen_range(0..out.len());
                out.truncate(i);
            }
            4 => {
                let other = SEEDS[rng.gen_range(0..SEEDS.len())];
                let i = rng.gen_range(0..=out.len());
                let j = rng.gen_range(0..=other.len());
                out.splice(i..i, other[..j].iter().copied());
            }
            _ => {
                let n = rng.gen_range(0..64);
                out.extend((0..n).map(|_| rng.gen::<u8>()));
            }
        }
    }
    out
}

fn exercise(rng: &mut StdRng, line: &[u8], identity: &Identity) {
    let _ = Frame::parse(line);
    if let Ok(text) = std::str::from_utf8(line) {
        if let Ok(req) = HubRequest::parse(text) {
            let _ = req.action();
        }
        let _ = PublicKey::from_spki_b64(text);
        let _ = IdentityKey::from_b64(text);
        let _ = EnvelopeKey::new(&[1u8; 32]).open(text);
        let _ = CounterKey::new(&[1u8; 32]).open(text);
    }
    let mut plain = Responder::new();
    let _ = plain.handle_line(line, rng);
    let _ = plain.handle_line(line, rng);
    let mut v21 = Responder::with_identity(identity.clone(), PeerPolicy::AcceptAll);
    let _ = v21.handle_line(line, rng);
    let _ = v21.handle_line(line, rng);
    let (mut init, _) = Initiator::new("me", rng);
    let _ = init.handle_line(line);
    let _ = init.handle_line(line);
    let (mut init, _) = Initiator::new_authenticated(identity, PeerExpectation::default(), rng);
    let _ = init.handle_line(line);
    let mut decoder = LineDecoder::new(64);
    decoder.push(line);
    while let Ok(Some(_)) = decoder.next_line() {}
}

#[test]
fn random_and_mutated_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x6d326d);
    let identity = Identity::generate(&mut rng);
    for case in 0..20_000u32 {
        let line = if case % 5 == 0 {
            let n = rng.gen_range(0..256);
            (0..n).map(|_| rng.gen::<u8>()).collect()
        } else {
            let seed = SEEDS[rng.gen_range(0..SEEDS.len())];
            mutate(&mut rng, seed)
        };
        exercise(&mut rng, &line, &identity);
    }
}

#[test]
fn deeply_nested_json_is_refused_not_overflowed() {
    // serde_json stops at depth 128; a peer cannot overflow our stack.
    let deep = format!(
        "{{\"type\":\"ack\",\"correlationId\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(Frame::parse(deep.as_bytes()).is_err());
    let deep = format!(
        "{{\"action\":\"lookup\",\"id\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(HubRequest::parse(&deep).is_err());
}
