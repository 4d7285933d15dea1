//! Project Wycheproof vectors (tests/data/vectors/wycheproof) against the primitives as this
//! crate uses them: AES-256-GCM through the envelope, X25519 through `KeyPair` (an all-zero
//! shared secret must be refused), Ed25519 through `IdentityKey` (strict verification), and
//! HKDF-SHA256 as the 2.1 key schedule calls it.

use m2m_proto::crypto::{CryptoError, EnvelopeKey, KeyPair, PublicKey, B64};
use m2m_proto::identity::IdentityKey;
use serde_json::Value;

use base64::Engine;

fn load(name: &str) -> Value {
    let path = format!(
        "{}/../../tests/data/vectors/wycheproof/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

fn tests(v: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    v["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["tests"].as_array().unwrap().iter().map(move |t| (g, t)))
}

fn h(t: &Value, k: &str) -> Vec<u8> {
    hex::decode(t[k].as_str().unwrap()).unwrap()
}

#[test]
fn aes_gcm() {
    let v = load("aes_gcm_test.json");
    let (mut run, mut through_envelope) = (0, 0);
    for (g, t) in tests(&v) {
        // The protocol fixes 96-bit nonces and 128-bit tags; other sizes cannot occur.
        if g["ivSize"] != 96 || g["tagSize"] != 128 {
            continue;
        }
        let alg = match g["keySize"].as_u64().unwrap() {
            128 => &ring::aead::AES_128_GCM,
            256 => &ring::aead::AES_256_GCM,
            _ => continue,
        };
        let id = &t["tcId"];
        let valid = t["result"] == "valid";
        let (key, iv, aad, msg, ct, tag) = (
            h(t, "key"),
            h(t, "iv"),
            h(t, "aad"),
            h(t, "msg"),
            h(t, "ct"),
            h(t, "tag"),
        );
        let k = ring::aead::LessSafeKey::new(ring::aead::UnboundKey::new(alg, &key).unwrap());
        let nonce: [u8; 12] = iv.clone().try_into().unwrap();
        let mut buf = [ct.clone(), tag.clone()].concat();
        let opened = k
            .open_in_place(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(&aad),
                &mut buf,
            )
            .map(|pt| pt.to_vec());
        if valid {
            assert_eq!(opened.as_deref(), Ok(&msg[..]), "tcId {id}");
        } else {
            assert!(opened.is_err(), "tcId {id} must fail");
        }
        if key.len() == 32 && aad.is_empty() {
            let envelope = B64.encode([iv.clone(), tag, ct.clone()].concat());
            let ek = EnvelopeKey::new(&key.clone().try_into().unwrap());
            match ek.open(&envelope) {
                Ok((_, pt)) => {
                    assert!(valid, "tcId {id} must fail");
                    assert_eq!(pt, msg, "tcId {id}");
                    assert_eq!(ek.seal(nonce, &msg), envelope, "tcId {id}");
                }
                Err(_) => assert!(!valid, "tcId {id} must open"),
            }
            through_envelope += 1;
        }
        run += 1;
    }
    assert_eq!((run, through_envelope), (133, 48));
}

#[test]
fn x25519() {
    let v = load("x25519_test.json");
    let mut run = 0;
    for (_, t) in tests(&v) {
        let id = &t["tcId"];
        let private: [u8; 32] = h(t, "private").try_into().unwrap();
        let public: [u8; 32] = h(t, "public").try_into().unwrap();
        let shared = h(t, "shared");
        let result = KeyPair::from_secret(private).shared_secret(&PublicKey(public));
        if shared.iter().all(|&b| b == 0) {
            // Wycheproof marks these "acceptable"; we refuse them (PROTOCOL.md A4, Ours).
            assert_eq!(result, Err(CryptoError::LowOrderKey), "tcId {id}");
        } else {
            assert_eq!(result.map(|s| s.to_vec()), Ok(shared), "tcId {id}");
        }
        run += 1;
    }
    assert_eq!(run, 518);
}

#[test]
fn ed25519() {
    let v = load("ed25519_test.json");
    let mut run = 0;
    for (g, t) in tests(&v) {
        let id = &t["tcId"];
        let pk: [u8; 32] = hex::decode(g["publicKey"]["pk"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let key = IdentityKey(pk);
        let sig = h(t, "sig");
        let msg = h(t, "msg");
        let verified = match <[u8; 64]>::try_from(sig.as_slice()) {
            Ok(raw) => key.verify_raw(&msg, &raw).is_ok(),
            Err(_) => false,
        };
        // Through the base64 entry point as well.
        assert_eq!(
            key.verify(&msg, &B64.encode(&sig)).is_ok(),
            verified,
            "tcId {id}"
        );
        assert_eq!(
            verified,
            t["result"] == "valid",
            "tcId {id}: {}",
            t["comment"]
        );
        run += 1;
    }
    assert_eq!(run, 151);
}

#[test]
fn hkdf_sha256() {
    let v = load("hkdf_sha256_test.json");
    let mut run = 0;
    for (_, t) in tests(&v) {
        let id = &t["tcId"];
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(&h(t, "salt")), &h(t, "ikm"));
        let mut okm = vec![0u8; t["size"].as_u64().unwrap() as usize];
        let result = hk.expand(&h(t, "info"), &mut okm);
        if t["result"] == "valid" {
            assert!(result.is_ok(), "tcId {id}");
            assert_eq!(okm, h(t, "okm"), "tcId {id}");
        } else {
            assert!(result.is_err(), "tcId {id} must fail");
        }
        run += 1;
    }
    assert_eq!(run, 86);
}
