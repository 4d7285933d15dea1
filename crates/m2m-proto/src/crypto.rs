//! The 2.0 crypto of PROTOCOL.md A4: ephemeral X25519 keys exchanged as base64 SPKI DER, the
//! raw shared secret used as the AES-256-GCM key, and the envelope
//! `base64(nonce[12] || tag[16] || ciphertext)`.
//!
//! X25519 comes from `x25519-dalek` (keys can be built from bytes, so the vectors and seeded
//! tests are deterministic); AES-GCM from `ring` (assembly, the fastest available here; see
//! `docs/PERFORMANCE.md` for the benchmark that chose it).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use rand_core::CryptoRngCore;
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use serde_json::Value;

use crate::defaults::MAX_PUBLIC_KEY_B64_LEN;

/// Standard base64 that accepts input with or without padding (Node always pads; hand-made
/// peers sometimes do not).
pub const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// DER prefix of an X25519 SubjectPublicKeyInfo; the 32 raw key bytes follow.
pub const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00,
];
/// Nonce length of the envelope.
pub const NONCE_LEN: usize = 12;
/// Tag length of the envelope.
pub const TAG_LEN: usize = 16;

/// Why a key or an envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Not base64 of a 44-byte X25519 SPKI.
    #[error("public key is not a base64 X25519 SPKI")]
    InvalidPublicKey,
    /// The peer's key gives an all-zero shared secret (a low-order point).
    #[error("public key is a low-order point")]
    LowOrderKey,
    /// The envelope is not base64, too short, or fails authentication.
    #[error("envelope failed to decrypt")]
    DecryptionFailed,
}

/// A peer's X25519 public key, validated.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.0[..8]))
    }
}

impl PublicKey {
    /// Parses base64 SPKI DER as the original sends it.
    pub fn from_spki_b64(text: &str) -> Result<Self, CryptoError> {
        if text.len() > MAX_PUBLIC_KEY_B64_LEN {
            return Err(CryptoError::InvalidPublicKey);
        }
        let der = B64
            .decode(text.trim())
            .map_err(|_| CryptoError::InvalidPublicKey)?;
        if der.len() != SPKI_PREFIX.len() + 32 || der[..SPKI_PREFIX.len()] != SPKI_PREFIX {
            return Err(CryptoError::InvalidPublicKey);
        }
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&der[SPKI_PREFIX.len()..]);
        Ok(PublicKey(raw))
    }

    /// Base64 SPKI DER, as the original sends it.
    pub fn to_spki_b64(&self) -> String {
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&SPKI_PREFIX);
        der[12..].copy_from_slice(&self.0);
        B64.encode(der)
    }
}

/// An ephemeral X25519 key pair: one per connection.
pub struct KeyPair {
    secret: x25519_dalek::StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key pair.
    pub fn generate(rng: &mut dyn CryptoRngCore) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self::from_secret(bytes)
    }

    /// A key pair from a 32-byte private key (tests, vectors).
    pub fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        KeyPair { secret, public }
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The raw X25519 shared secret with `peer`, refused when it is all zeros (a low-order
    /// peer key would otherwise give every session the same, public, key).
    pub fn shared_secret(&self, peer: &PublicKey) -> Result<[u8; 32], CryptoError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        if !shared.was_contributory() {
            return Err(CryptoError::LowOrderKey);
        }
        Ok(shared.to_bytes())
    }
}

/// An AES-256-GCM key sealing and opening 2.0 envelopes.
pub struct EnvelopeKey {
    // Boxed: the expanded AES key schedule is ~540 bytes, and sessions move this around.
    key: Box<LessSafeKey>,
}

impl std::fmt::Debug for EnvelopeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvelopeKey(..)")
    }
}

impl EnvelopeKey {
    /// The key from 32 bytes (in 2.0, the raw shared secret).
    pub fn new(bytes: &[u8; 32]) -> Self {
        // AES_256_GCM takes exactly 32 bytes, which the type guarantees.
        let unbound = match UnboundKey::new(&aead::AES_256_GCM, bytes) {
            Ok(k) => k,
            Err(_) => unreachable!("AES-256-GCM accepts any 32-byte key"),
        };
        EnvelopeKey {
            key: Box::new(LessSafeKey::new(unbound)),
        }
    }

    /// Seals `plaintext` under `nonce` into the base64 envelope.
    pub fn seal(&self, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> String {
        let mut out = Vec::with_capacity(base64_len(NONCE_LEN + TAG_LEN + plaintext.len()));
        self.seal_append(nonce, plaintext, &mut Vec::new(), &mut out);
        // Base64 is ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Seals `plaintext` under `nonce` and appends the base64 envelope to `out`. `scratch`
    /// holds `nonce || tag || ciphertext` on the way; pass the same one every time so that
    /// no buffer is allocated per message.
    pub fn seal_append(
        &self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        scratch.clear();
        scratch.reserve(NONCE_LEN + TAG_LEN + plaintext.len());
        scratch.extend_from_slice(&nonce);
        scratch.extend_from_slice(&[0u8; TAG_LEN]);
        scratch.extend_from_slice(plaintext);
        let tag = match self.key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut scratch[NONCE_LEN + TAG_LEN..],
        ) {
            Ok(tag) => tag,
            // ring refuses only inputs beyond GCM's 64 GiB limit, which no frame reaches.
            Err(_) => unreachable!("AES-GCM input within limits"),
        };
        scratch[NONCE_LEN..NONCE_LEN + TAG_LEN].copy_from_slice(tag.as_ref());
        b64_encode_append(scratch, out);
    }

    /// Seals with a random nonce, as the original does.
    pub fn seal_random(&self, rng: &mut dyn CryptoRngCore, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        self.seal(nonce, plaintext)
    }

    /// Opens a base64 envelope; returns the nonce and the plaintext.
    pub fn open(&self, envelope: &str) -> Result<([u8; NONCE_LEN], Vec<u8>), CryptoError> {
        let mut buf = Vec::new();
        let (nonce, range) = self.open_in(envelope, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok((nonce, buf))
    }

    /// Opens a base64 envelope into `buf` (cleared first; reuse it across messages): returns
    /// the nonce and where the plaintext lies in `buf`.
    pub fn open_in(
        &self,
        envelope: &str,
        buf: &mut Vec<u8>,
    ) -> Result<([u8; NONCE_LEN], std::ops::Range<usize>), CryptoError> {
        buf.clear();
        b64_decode_append(envelope.trim().as_bytes(), buf)
            .map_err(|_| CryptoError::DecryptionFailed)?;
        if buf.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::DecryptionFailed);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[..NONCE_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&buf[NONCE_LEN..NONCE_LEN + TAG_LEN]);
        // The wire puts the tag before the ciphertext; ring takes it separately, so the
        // ciphertext is opened where it lies.
        let len = self
            .key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                aead::Tag::from(tag),
                &mut buf[NONCE_LEN + TAG_LEN..],
                0..,
            )
            .map_err(|_| CryptoError::DecryptionFailed)?
            .len();
        let start = NONCE_LEN + TAG_LEN;
        Ok((nonce, start..start + len))
    }
}

/// Length of the padded base64 of `n` bytes.
pub fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Appends standard, padded base64 of `src` to `out` (SIMD where the CPU has it). The same
/// text as [`B64`]`.encode`.
pub fn b64_encode_append(src: &[u8], out: &mut Vec<u8>) {
    base64_simd::STANDARD.encode_append(src, out);
}

/// Decodes standard base64 and appends the bytes to `out` (SIMD where the CPU has it), with
/// exactly the strictness of [`B64`]: padding optional but, when present, complete;
/// non-canonical trailing bits, whitespace and any other character refused. On error `out`
/// is left as it was.
pub fn b64_decode_append(src: &[u8], out: &mut Vec<u8>) -> Result<(), InvalidBase64> {
    // `B64` decodes "padding indifferent": after the data, as many `=` as a padded encoding
    // would have or fewer (`QQ`, `QQ=` and `QQ==` are all one byte; `QUJD=` is refused).
    // base64-simd's unpadded engine then checks the data exactly as `B64` does: alphabet,
    // length, canonical trailing bits.
    let data_len = src.len() - src.iter().rev().take_while(|&&c| c == b'=').count();
    let padding = src.len() - data_len;
    if padding > (4 - data_len % 4) % 4 {
        return Err(InvalidBase64);
    }
    let before = out.len();
    base64_simd::STANDARD_NO_PAD
        .decode_append(&src[..data_len], out)
        .map_err(|_| {
            out.truncate(before);
            InvalidBase64
        })
}

/// Input that [`b64_decode_append`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64")]
pub struct InvalidBase64;

/// Why a 2.1 envelope was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The nonce is not the next expected counter: a replayed, reordered or dropped frame.
    #[error("nonce is not the next expected counter (replay or reordering)")]
    Replay,
    /// The envelope does not open.
    #[error("envelope failed to decrypt")]
    DecryptionFailed,
}

/// A 2.1 directional key: the envelope layout of 2.0 with a 96-bit big-endian counter as the
/// nonce. The sender counts up from 0; the receiver accepts only the next value, so a frame
/// replayed, reordered or dropped by the network is detected.
pub struct CounterKey {
    key: EnvelopeKey,
    next: u64,
}

impl std::fmt::Debug for CounterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterKey")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl CounterKey {
    /// A key whose counter starts at 0.
    pub fn new(bytes: &[u8; 32]) -> Self {
        CounterKey {
            key: EnvelopeKey::new(bytes),
            next: 0,
        }
    }

    fn nonce(counter: u64) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        n
    }

    /// Seals under the next counter.
    pub fn seal(&mut self, plaintext: &[u8]) -> String {
        let nonce = Self::nonce(self.next);
        // 2^64 messages on one connection cannot happen; wrapping would reuse a nonce, so
        // saturate and let the receiver refuse the repeat instead.
        self.next = self.next.saturating_add(1);
        self.key.seal(nonce, plaintext)
    }

    /// Seals under the next counter and appends the base64 envelope to `out` (see
    /// [`EnvelopeKey::seal_append`]).
    pub fn seal_append(&mut self, plaintext: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) {
        let nonce = Self::nonce(self.next);
        self.next = self.next.saturating_add(1);
        self.key.seal_append(nonce, plaintext, scratch, out);
    }

    /// Opens the envelope if it carries the next expected counter.
    pub fn open(&mut self, envelope: &str) -> Result<Vec<u8>, CounterError> {
        let mut buf = Vec::new();
        let range = self.open_in(envelope, &mut buf)?;
        buf.truncate(range.end);
        buf.drain(..range.start);
        Ok(buf)
    }

    /// Like [`CounterKey::open`], into `buf` (see [`EnvelopeKey::open_in`]).
    pub fn open_in(
        &mut self,
        envelope: &str,
        buf: &mut Vec<u8>,
    ) -> Result<std::ops::Range<usize>, CounterError> {
        let (nonce, range) = self
            .key
            .open_in(envelope, buf)
            .map_err(|_| CounterError::DecryptionFailed)?;
        if nonce != Self::nonce(self.next) || self.next == u64::MAX {
            return Err(CounterError::Replay);
        }
        self.next += 1;
        Ok(range)
    }
}

/// The plaintext of a payload: a string travels as itself, anything else as JSON
/// (`JSON.stringify`).
pub fn encode_payload(payload: &Value) -> Vec<u8> {
    match payload {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

/// The payload of a plaintext: JSON if it parses, else the text itself (`JSON.parse` with
/// fallback to the raw string).
pub fn decode_payload(plaintext: &[u8]) -> Value {
    match serde_json::from_slice(plaintext) {
        Ok(v) => v,
        // Valid UTF-8 (the usual case) is copied once; only invalid text pays for the
        // replacement characters.
        Err(_) => Value::String(match std::str::from_utf8(plaintext) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(plaintext).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spki_roundtrip_and_rejections() {
        let kp = KeyPair::from_secret([7u8; 32]);
        let b64 = kp.public().to_spki_b64();
        assert_eq!(PublicKey::from_spki_b64(&b64), Ok(kp.public()));
        assert_eq!(
            PublicKey::from_spki_b64("AAAA"),
            Err(CryptoError::InvalidPublicKey)
        );
        // An Ed25519 SPKI (OID 1.3.101.112) is not an X25519 key.
        let mut der = SPKI_PREFIX.to_vec();
        der[8] = 0x70;
        der.extend_from_slice(&[1u8; 32]);
        assert_eq!(
            PublicKey::from_spki_b64(&B64.encode(&der)),
            Err(CryptoError::InvalidPublicKey)
        );
    }

    #[test]
    fn low_order_points_are_refused() {
        let kp = KeyPair::from_secret([9u8; 32]);
        // 0 and 1 are low-order points on Curve25519.
        for raw in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert_eq!(
                kp.shared_secret(&PublicKey(raw)),
                Err(CryptoError::LowOrderKey)
            );
        }
    }

    #[test]
    fn seal_open_roundtrip() {
        let key = EnvelopeKey::new(&[3u8; 32]);
        let env = key.seal([1u8; 12], b"hello");
        let (nonce, pt) = key.open(&env).unwrap();
        assert_eq!(nonce, [1u8; 12]);
        assert_eq!(pt, b"hello");
        assert_eq!(
            EnvelopeKey::new(&[4u8; 32]).open(&env),
            Err(CryptoError::DecryptionFailed)
        );
    }

    /// Every string over an alphabet that exercises the alphabet's edges, padding,
    /// non-canonical trailing bits, whitespace and foreign characters, up to 6 characters:
    /// the SIMD decoder accepts exactly what `B64` (the base64 crate, padding indifferent)
    /// accepts, with the same bytes.
    #[test]
    fn simd_decoder_is_as_strict_as_b64_exhaustively() {
        let alphabet = [
            b'A', b'B', b'Q', b'g', b'/', b'+', b'=', b' ', b'\n', b'-', b'*',
        ];
        let mut input = Vec::new();
        let mut checked = 0usize;
        for len in 0..=5u32 {
            for mut n in 0..alphabet.len().pow(len) {
                input.clear();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_same_decoding(&input);
                checked += 1;
            }
        }
        assert!(checked > 170_000);
    }

    fn assert_same_decoding(input: &[u8]) {
        let expected = B64.decode(input).ok();
        let mut out = b"kept".to_vec();
        let got = b64_decode_append(input, &mut out)
            .ok()
            .map(|()| out[4..].to_vec());
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(&out[..4], b"kept");
        if expected.is_none() {
            assert_eq!(out, b"kept", "output left as it was on error");
        }
    }

    /// Valid encodings of random lengths (so the SIMD loops run), then one character of each
    /// replaced, removed or added: same verdicts as `B64`; the encoder writes `B64`'s text.
    #[test]
    fn simd_codec_matches_b64_on_long_and_mutated_input() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(64);
        let specials = [
            b'=', b' ', b'\n', b'\r', b'\t', b'-', b'_', b'.', 0u8, 0xc3, 0x80,
        ];
        for round in 0..3000 {
            let len = if round % 100 == 0 {
                rng.gen_range(0..70_000)
            } else {
                rng.gen_range(0..300)
            };
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut text = b"x".to_vec();
            b64_encode_append(&bytes, &mut text);
            assert_eq!(&text[1..], B64.encode(&bytes).as_bytes());
            assert_eq!(text.len() - 1, base64_len(len));
            let text = &text[1..];
            assert_same_decoding(text);
            // Unpadded, as hand-made peers send it.
            let unpadded: Vec<u8> = text.iter().copied().filter(|&c| c != b'=').collect();
            assert_same_decoding(&unpadded);
            if text.is_empty() {
                continue;
            }
            for _ in 0..4 {
                let mut m = text.to_vec();
                let at = rng.gen_range(0..m.len());
                match rng.gen_range(0..4) {
                    0 => m[at] = specials[rng.gen_range(0..specials.len())],
                    1 => m[at] = B64_CHARS[rng.gen_range(0..64)],
                    2 => {
                        m.remove(at);
                    }
                    _ => m.insert(at, specials[rng.gen_range(0..specials.len())]),
                }
                assert_same_decoding(&m);
            }
            if text.len() > 400 {
                continue;
            }
            // The last character changed to every other one: non-canonical trailing bits.
            let last = text.iter().rposition(|&c| c != b'=').unwrap_or(0);
            for c in B64_CHARS {
                let mut m = text.to_vec();
                m[last] = c;
                assert_same_decoding(&m);
            }
        }
    }

    const B64_CHARS: [u8; 64] =
        *b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    #[test]
    fn envelope_open_trims_whitespace_like_before() {
        let key = EnvelopeKey::new(&[3u8; 32]);
        let env = key.seal([1u8; 12], b"hello");
        for wrapped in [
            format!(" {env}\n"),
            format!("\u{a0}{env}"),
            format!("\t{env}\r"),
        ] {
            assert_eq!(key.open(&wrapped).unwrap().1, b"hello");
        }
        let mut inner_space = env.clone();
        inner_space.insert(8, ' ');
        assert_eq!(key.open(&inner_space), Err(CryptoError::DecryptionFailed));
    }

    #[test]
    fn open_in_reuses_the_buffer_and_seal_append_appends() {
        let key = EnvelopeKey::new(&[5u8; 32]);
        let (mut scratch, mut out) = (Vec::new(), b"head:".to_vec());
        key.seal_append([2u8; 12], b"payload", &mut scratch, &mut out);
        assert_eq!(&out[5..], key.seal([2u8; 12], b"payload").as_bytes());
        let env = std::str::from_utf8(&out[5..]).unwrap();
        let mut buf = vec![9u8; 100];
        let (nonce, range) = key.open_in(env, &mut buf).unwrap();
        assert_eq!((nonce, &buf[range]), ([2u8; 12], &b"payload"[..]));
        // A tampered tag fails.
        let mut raw = B64.decode(env).unwrap();
        raw[NONCE_LEN] ^= 1;
        assert_eq!(
            key.open_in(&B64.encode(&raw), &mut buf),
            Err(CryptoError::DecryptionFailed)
        );
        assert_eq!(
            key.open_in(&B64.encode([0u8; NONCE_LEN + TAG_LEN - 1]), &mut buf),
            Err(CryptoError::DecryptionFailed)
        );
    }

    #[test]
    fn payload_rules() {
        assert_eq!(encode_payload(&Value::String("x y".into())), b"x y");
        assert_eq!(encode_payload(&serde_json::json!({"a":1})), b"{\"a\":1}");
        assert_eq!(decode_payload(b"{\"a\":1}"), serde_json::json!({"a":1}));
        assert_eq!(decode_payload(b"plain"), Value::String("plain".into()));
        // Invalid UTF-8 still becomes text with replacement characters.
        assert_eq!(
            decode_payload(b"a\xffb"),
            Value::String("a\u{fffd}b".into())
        );
    }
}
