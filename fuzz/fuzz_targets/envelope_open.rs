//! The 2.0 envelope and the 2.1 counter envelope. The input picks a mode:
//!
//! * open: 32 key bytes, then an envelope text — `open` never panics, and what opens seals
//!   back to the same bytes; our SIMD base64 decoder agrees with the `base64` crate
//!   exactly (the strictness the original's Node decoder has);
//! * tamper: key, nonce, plaintext and one edit — the sealed envelope opens to the
//!   plaintext, and the edited one never opens unless it decodes to the same bytes; the
//!   counter key opens each envelope once, in order.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use m2m_proto::crypto::{b64_decode_append, CounterError, CounterKey, EnvelopeKey, B64};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((key, rest)) = rest.split_first_chunk::<32>() else {
        return;
    };
    if mode % 2 == 0 {
        open(key, rest);
    } else {
        tamper(key, rest);
    }
});

fn open(key: &[u8; 32], text: &[u8]) {
    // Decoding appends and leaves `out` as it was on error.
    let mut out = b"kept".to_vec();
    let ours = b64_decode_append(text, &mut out);
    match B64.decode(text) {
        Ok(bytes) => {
            assert!(ours.is_ok(), "base64 crate accepts what we refuse");
            assert_eq!(&out[4..], bytes.as_slice());
        }
        Err(_) => {
            assert!(ours.is_err(), "we accept what the base64 crate refuses");
            assert_eq!(out, b"kept");
        }
    }
    let text = String::from_utf8_lossy(text);
    let key20 = EnvelopeKey::new(key);
    if let Ok((nonce, plaintext)) = key20.open(&text) {
        let resealed = key20.seal(nonce, &plaintext);
        assert_eq!(B64.decode(resealed).ok(), B64.decode(text.trim()).ok());
    }
    let mut key21 = CounterKey::new(key);
    if let Ok(plaintext) = key21.open(&text) {
        // Counter 0 was taken: the same envelope again is a replay.
        let _ = plaintext;
        assert_eq!(key21.open(&text), Err(CounterError::Replay));
    }
}

fn tamper(key: &[u8; 32], rest: &[u8]) {
    let Some((nonce, rest)) = rest.split_first_chunk::<12>() else {
        return;
    };
    let Some(([pos_lo, pos_hi, edit], plaintext)) = rest.split_first_chunk::<3>() else {
        return;
    };
    let k = EnvelopeKey::new(key);
    let sealed = k.seal(*nonce, plaintext);
    assert_eq!(k.open(&sealed), Ok((*nonce, plaintext.to_vec())));
    let mut edited = sealed.clone().into_bytes();
    let pos = usize::from(u16::from_le_bytes([*pos_lo, *pos_hi])) % edited.len();
    edited[pos] = *edit;
    let edited = String::from_utf8_lossy(&edited).into_owned();
    let same_bytes = B64.decode(edited.trim()).ok() == B64.decode(&sealed).ok();
    match k.open(&edited) {
        Ok(opened) => assert!(same_bytes, "an edited envelope opened: {opened:?}"),
        Err(_) => assert!(!same_bytes, "the same bytes failed to open"),
    }
    let mut tx = CounterKey::new(key);
    let mut rx = CounterKey::new(key);
    let first = tx.seal(plaintext);
    let second = tx.seal(plaintext);
    assert_eq!(rx.open(&second), Err(CounterError::Replay));
    assert_eq!(rx.open(&first).as_deref(), Ok(plaintext));
    assert_eq!(rx.open(&first), Err(CounterError::Replay));
    assert_eq!(rx.open(&second).as_deref(), Ok(plaintext));
}
