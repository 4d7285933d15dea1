//! The 2.1 hub registration message against `tests/data/registration-v21.json`, whose bytes
//! and signatures `tests/data/registration-v21.py` computed with Python's `cryptography`
//! (independently of this crate): the encoding is pinned byte for byte, and lists that a
//! `\n`-join confused (`["a","b"]` / `["a\nb"]`, `[]` / `[""]`) are different messages.

use m2m_proto::identity::{registration_message, Identity, IdentityKey};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let path = format!(
        "{}/../../tests/data/registration-v21.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

#[test]
fn registration_messages_and_signatures_match_the_vector() {
    let cases = cases();
    assert_eq!(cases.len(), 5);
    let mut messages = Vec::new();
    for c in &cases {
        let s = |k: &str| c[k].as_str().unwrap().to_owned();
        let seed: [u8; 32] = hex::decode(s("seed_hex")).unwrap().try_into().unwrap();
        let me = Identity::from_secret_bytes(&seed);
        assert_eq!(me.public().to_b64(), s("identity_b64"));
        let caps: Vec<String> = c["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        let message = registration_message(&s("nonce"), &me.public(), &s("address"), &caps);
        assert_eq!(hex::encode(&message), s("message_hex"), "{caps:?}");
        // Ed25519 is deterministic: the same key signs the same bytes the same way.
        assert_eq!(me.sign_b64(&message), s("signature_b64"));
        let key = IdentityKey::from_b64(&s("identity_b64")).unwrap();
        assert!(key.verify(&message, &s("signature_b64")).is_ok());
        messages.push((message, s("signature_b64"), key));
    }
    // [] vs [""] (cases 0 and 1) and ["a","b"] vs ["a\nb"] (cases 2 and 3): same key, nonce
    // and address, and neither signature verifies the other list.
    for (a, b) in [(0, 1), (2, 3)] {
        assert_ne!(messages[a].0, messages[b].0);
        assert!(messages[a]
            .2
            .verify(&messages[b].0, &messages[a].1)
            .is_err());
        assert!(messages[b]
            .2
            .verify(&messages[a].0, &messages[b].1)
            .is_err());
    }
}
