//! One core's crypto and parsing rates: AES-256-GCM (ring), X25519, base64, the 2.0
//! envelope and frame parsing.

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use m2m_proto::{EnvelopeKey, Frame, KeyPair};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde_json::{json, Value};

use crate::stats::round1;

/// What [`run_crypto`] does.
#[derive(Debug, Clone)]
pub struct CryptoOptions {
    /// Time spent on each primitive.
    pub duration: Duration,
}

impl Default for CryptoOptions {
    fn default() -> Self {
        CryptoOptions {
            duration: Duration::from_secs(1),
        }
    }
}

/// Runs `f` in batches until `d` has passed; returns operations per second.
fn per_second(d: Duration, mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut n: u64 = 0;
    let mut batch = 1u64;
    loop {
        for _ in 0..batch {
            f();
        }
        n += batch;
        let e = started.elapsed();
        if e >= d {
            return n as f64 / e.as_secs_f64();
        }
        if e < d / 10 {
            batch = (batch * 2).min(1 << 16);
        }
    }
}

fn mb(ops: f64, bytes: usize) -> f64 {
    round1(ops * bytes as f64 / 1e6)
}

/// Single-core speed of the primitives the protocol uses. The machine limit is this
/// times the number of cores, shared with everything else the machine does.
pub fn run_crypto(opts: CryptoOptions) -> Value {
    let d = opts.duration;
    let big = 64 * 1024;
    let small = 200;
    let key = match UnboundKey::new(&AES_256_GCM, &[7u8; 32]) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("32-byte AES-256 key"),
    };
    let mut buf = vec![0x5au8; big];
    let aes_big = per_second(d, || {
        let nonce = Nonce::assume_unique_for_key([1u8; 12]);
        let _ = black_box(key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf));
    });
    let mut buf_small = vec![0x5au8; small];
    let aes_small = per_second(d, || {
        let nonce = Nonce::assume_unique_for_key([1u8; 12]);
        let _ = black_box(key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf_small));
    });

    let mut rng = rand::thread_rng();
    let peer = KeyPair::generate(&mut rng).public();
    let x_side = per_second(d, || {
        let ours = KeyPair::generate(&mut rng);
        let _ = black_box(ours.shared_secret(&peer));
    });
    let fixed = KeyPair::generate(&mut rng);
    let x_agree = per_second(d, || {
        let _ = black_box(fixed.shared_secret(&peer));
    });

    let raw = vec![0xa5u8; big];
    let encoded = B64.encode(&raw);
    let b64_enc = per_second(d, || {
        black_box(B64.encode(black_box(&raw)));
    });
    let b64_dec = per_second(d, || {
        let _ = black_box(B64.decode(black_box(&encoded)));
    });

    let env = EnvelopeKey::new(&[9u8; 32]);
    let pt_big = vec![b'x'; big];
    let pt_small = vec![b'x'; small];
    let sealed_big = env.seal([3u8; 12], &pt_big);
    let sealed_small = env.seal([3u8; 12], &pt_small);
    let env_seal_big = per_second(d, || {
        black_box(env.seal([3u8; 12], &pt_big));
    });
    let env_open_big = per_second(d, || {
        let _ = black_box(env.open(&sealed_big));
    });
    let env_seal_small = per_second(d, || {
        black_box(env.seal([3u8; 12], &pt_small));
    });
    let env_open_small = per_second(d, || {
        let _ = black_box(env.open(&sealed_small));
    });
    let frame = Frame::Message {
        message_type: "bench.msg".into(),
        data: sealed_small.clone(),
        correlation_id: Some(json!("0123456789abcdef")),
    };
    let line = {
        let mut l = frame.encode();
        l.pop();
        l
    };
    let parse = per_second(d, || {
        let _ = black_box(Frame::parse(black_box(&line)));
    });
    let encode = per_second(d, || {
        black_box(frame.encode());
    });

    json!({
        "bench": "crypto",
        "note": "one core; the machine limit is this × cores",
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "aes256gcm_seal_64k_mb_per_s": mb(aes_big, big),
        "aes256gcm_seal_200b_per_s": round1(aes_small),
        "x25519_keypair_and_agree_per_s": round1(x_side),
        "x25519_agree_per_s": round1(x_agree),
        "handshakes_per_core_s": round1(x_side / 2.0),
        "base64_encode_64k_mb_per_s": mb(b64_enc, big),
        "base64_decode_64k_mb_per_s": mb(b64_dec, big),
        "envelope_seal_64k_mb_per_s": mb(env_seal_big, big),
        "envelope_open_64k_mb_per_s": mb(env_open_big, big),
        "envelope_seal_200b_per_s": round1(env_seal_small),
        "envelope_open_200b_per_s": round1(env_open_small),
        "frame_parse_message_200b_per_s": round1(parse),
        "frame_encode_message_200b_per_s": round1(encode),
    })
}
