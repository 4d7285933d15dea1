//! Micro-benchmarks of the protocol core, and the comparison that chose the crypto crates.
//!
//! `cargo bench -p m2m-proto` — results and the machine's limits are in docs/PERFORMANCE.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use m2m_proto::crypto::{EnvelopeKey, KeyPair};
use m2m_proto::frame::Frame;
use m2m_proto::identity::Identity;
use m2m_proto::session::{Initiator, PeerExpectation, PeerPolicy, Responder, ResponderOutput};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use std::hint::black_box;

fn aead(c: &mut Criterion) {
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit};
    let key_bytes = [7u8; 32];
    let ring_key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key_bytes).unwrap(),
    );
    let rc_key = Aes256Gcm::new_from_slice(&key_bytes).unwrap();
    let mut g = c.benchmark_group("aes256gcm_seal");
    for size in [200usize, 64 * 1024] {
        let mut buf = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| {
                let tag = ring_key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key([1u8; 12]),
                        ring::aead::Aad::empty(),
                        &mut buf,
                    )
                    .unwrap();
                let _ = black_box(tag);
            })
        });
        g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter(|| {
                let tag = rc_key
                    .encrypt_in_place_detached(&[1u8; 12].into(), b"", &mut buf)
                    .unwrap();
                let _ = black_box(tag);
            })
        });
    }
    g.finish();
}

fn x25519(c: &mut Criterion) {
    let mut g = c.benchmark_group("x25519_keygen_and_agree");
    let peer = KeyPair::from_secret([9u8; 32]).public();
    g.bench_function("x25519-dalek", |b| {
        let mut rng = StdRng::seed_from_u64(1);
        b.iter(|| {
            let kp = KeyPair::generate(&mut rng);
            black_box(kp.shared_secret(&peer).unwrap());
        })
    });
    let rng = ring::rand::SystemRandom::new();
    let peer_ring = ring::agreement::UnparsedPublicKey::new(&ring::agreement::X25519, peer.0);
    g.bench_function("ring", |b| {
        b.iter(|| {
            let sk = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::X25519, &rng)
                .unwrap();
            black_box(sk.compute_public_key().unwrap());
            ring::agreement::agree_ephemeral(sk, &peer_ring, |s| black_box(s[0])).unwrap();
        })
    });
    g.finish();
}

fn envelope(c: &mut Criterion) {
    let key = EnvelopeKey::new(&[3u8; 32]);
    let mut g = c.benchmark_group("envelope");
    for size in [200usize, 64 * 1024] {
        let plaintext = vec![b'a'; size];
        let sealed = key.seal([5u8; 12], &plaintext);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| black_box(key.seal([5u8; 12], &plaintext)))
        });
        g.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| black_box(key.open(&sealed).unwrap()))
        });
    }
    g.finish();
}

fn frames(c: &mut Criterion) {
    let frame = Frame::Message {
        message_type: "chat".into(),
        data: "x".repeat(300),
        correlation_id: Some(json!("0123456789abcdef")),
    };
    let line = frame.encode();
    let mut g = c.benchmark_group("frame");
    g.bench_function("encode_message", |b| b.iter(|| black_box(frame.encode())));
    g.bench_function("parse_message", |b| {
        b.iter(|| black_box(Frame::parse(&line[..line.len() - 1]).unwrap()))
    });
    g.finish();
}

fn handshake(c: &mut Criterion) {
    c.bench_function("session_handshake_both_sides", |b| {
        let mut rng = StdRng::seed_from_u64(3);
        b.iter(|| {
            let (mut init, hello) = Initiator::new("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &mut rng);
            let mut resp = Responder::new();
            let ResponderOutput::Send(ack) = resp.handle_frame(hello, &mut rng) else {
                panic!("no ack")
            };
            black_box(init.handle_frame(ack).unwrap());
        })
    });
}

/// The 2.1 handshake (PROTOCOL.md B), both sides: ephemeral X25519, the transcript signed
/// and verified with Ed25519 both ways, HKDF session keys. What an authenticated fresh
/// connection costs before its first message.
fn handshake_v21(c: &mut Criterion) {
    c.bench_function("session_handshake_v21_both_sides", |b| {
        let mut rng = StdRng::seed_from_u64(21);
        let alice = Identity::generate(&mut rng);
        let bob = Identity::generate(&mut rng);
        b.iter(|| {
            let expect = PeerExpectation {
                identity: Some(bob.public()),
                require_authenticated: true,
            };
            let (mut init, hello) = Initiator::new_authenticated(&alice, expect, &mut rng);
            let mut resp = Responder::with_identity(bob.clone(), PeerPolicy::AuthenticatedOnly);
            let ResponderOutput::Send(ack) = resp.handle_frame(hello, &mut rng) else {
                panic!("no ack")
            };
            init.handle_frame(ack).unwrap();
            let auth = init.take_auth_frame().expect("auth frame");
            black_box(resp.handle_frame(auth, &mut rng));
            assert!(resp.is_authenticated());
        })
    });
}

criterion_group!(
    benches,
    aead,
    x25519,
    envelope,
    frames,
    handshake,
    handshake_v21
);
criterion_main!(benches);
