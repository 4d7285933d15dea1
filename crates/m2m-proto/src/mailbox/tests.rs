use base64::Engine;
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeS, Serializable};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use super::*;
use crate::crypto::B64;
use crate::hub::Mail;
use crate::identity::Identity;

const DAY: u64 = 24 * 3600 * 1000;
/// A period start (a multiple of 7 days): 2026-11-26 00:00 UTC.
const ISSUED: u64 = 2828 * 7 * DAY;
const NOW: u64 = ISSUED + 3 * DAY;

fn identity(seed: u8) -> Identity {
    Identity::from_secret_bytes(&[seed; 32])
}

fn body(from: &Identity, to: &Identity, id: &str) -> MailBody {
    MailBody {
        from: from.agent_id().to_owned(),
        to: to.agent_id().to_owned(),
        id: id.to_owned(),
        message_type: "chat".to_owned(),
        payload: json!({"text":"hello"}),
        correlation_id: None,
        sent_at: NOW,
        expires_at: NOW + DAY,
    }
}

/// Alice seals to Bob's published key, the way a sender does: verify the record first.
fn sealed_to(bob: &Identity, body: &MailBody, alice: &Identity) -> Vec<u8> {
    let published = MailboxKeys::new(bob.clone()).current(NOW).publish(bob);
    let key = published
        .verify(&bob.public(), bob.agent_id(), NOW)
        .expect("published key verifies");
    seal(
        &mut StdRng::seed_from_u64(1),
        alice,
        &key,
        published.issued,
        body,
    )
    .expect("seal")
}

fn open_as(bob: &Identity, from: &str, id: &str, sealed: &[u8]) -> Result<Opened, OpenError> {
    let issued = sealed_issued(sealed)?;
    let secret = MailboxKeys::new(bob.clone())
        .secret_for(issued, NOW)
        .ok_or(OpenError::UnknownKey)?;
    open(&secret, bob.agent_id(), from, id, sealed, NOW)
}

/// Seals arbitrary plaintext the way only an attacker would (to reach the checks behind
/// the AEAD): `to` in info and `aad` chosen freely.
fn raw_seal(key_of: &Identity, info_to: &str, aad: &str, plaintext: &[u8]) -> Vec<u8> {
    let secret = MailboxKeys::new(key_of.clone()).current(NOW);
    let public =
        <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(&secret.public_bytes()).unwrap();
    let mut info = MAIL_LABEL.as_bytes().to_vec();
    info.push(0);
    info.extend_from_slice(info_to.as_bytes());
    info.push(0);
    info.extend_from_slice(&secret.issued().to_be_bytes());
    let (enc, ct) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256, _>(
        &OpModeS::Base,
        &public,
        &info,
        plaintext,
        aad.as_bytes(),
        &mut StdRng::seed_from_u64(2),
    )
    .unwrap();
    let mut out = vec![SEALED_VERSION];
    out.extend_from_slice(&secret.issued().to_be_bytes());
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    out
}

fn signed_plaintext(signer: &Identity, body: &MailBody) -> Vec<u8> {
    let bytes = serde_json::to_vec(body).unwrap();
    let mut m = MAIL_LABEL.as_bytes().to_vec();
    m.push(0);
    m.extend_from_slice(&bytes);
    let mut p = signer.sign(&m).to_vec();
    p.extend_from_slice(&signer.public().0);
    p.extend_from_slice(&bytes);
    p
}

#[test]
fn a_sealed_message_opens_for_its_recipient_with_the_verified_sender() {
    let (alice, bob) = (identity(1), identity(2));
    let b = body(&alice, &bob, "m-1");
    let sealed = sealed_to(&bob, &b, &alice);
    assert_eq!(sealed[0], SEALED_VERSION);
    assert_eq!(sealed_issued(&sealed), Ok(ISSUED));
    let opened = open_as(&bob, alice.agent_id(), "m-1", &sealed).unwrap();
    assert_eq!(opened.body, b);
    assert_eq!(opened.sender, alice.public());
}

#[test]
fn every_flipped_byte_fails_to_open() {
    let (alice, bob) = (identity(1), identity(2));
    let sealed = sealed_to(&bob, &body(&alice, &bob, "m-1"), &alice);
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x01;
        let e = open_as(&bob, alice.agent_id(), "m-1", &t).unwrap_err();
        // Header bytes name another version or key; everything after fails the AEAD.
        let expected = match i {
            0 => OpenError::Malformed,
            1..=8 => OpenError::UnknownKey,
            _ => OpenError::DecryptionFailed,
        };
        assert_eq!(e, expected, "byte {i}");
    }
    let truncated = &sealed[..sealed.len() - 1];
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", truncated).unwrap_err(),
        OpenError::DecryptionFailed
    );
    // Shorter than a tag and an empty signed body can be.
    let short = &sealed[..SEALED_HEADER + 16 + 95];
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", short).unwrap_err(),
        OpenError::Malformed
    );
    assert_eq!(sealed_issued(&sealed[..20]), Err(OpenError::Malformed));
}

#[test]
fn another_recipient_or_another_id_cannot_open() {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let sealed = sealed_to(&bob, &body(&alice, &bob, "m-1"), &alice);
    assert_eq!(
        open_as(&carol, alice.agent_id(), "m-1", &sealed).unwrap_err(),
        OpenError::DecryptionFailed
    );
    // The hub renaming the message (to have it acked as another) breaks the AAD.
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-2", &sealed).unwrap_err(),
        OpenError::DecryptionFailed
    );
}

#[test]
fn the_hub_cannot_re_attribute_a_message() {
    let (alice, bob, mallory) = (identity(1), identity(2), identity(4));
    let sealed = sealed_to(&bob, &body(&alice, &bob, "m-1"), &alice);
    assert_eq!(
        open_as(&bob, mallory.agent_id(), "m-1", &sealed).unwrap_err(),
        OpenError::ForgedSender
    );
    // Mallory signing a body that claims to be from Alice.
    let forged = raw_seal(
        &bob,
        bob.agent_id(),
        "m-1",
        &signed_plaintext(&mallory, &body(&alice, &bob, "m-1")),
    );
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", &forged).unwrap_err(),
        OpenError::ForgedSender
    );
    // A signature over other bytes than the body.
    let mut p = signed_plaintext(&alice, &body(&alice, &bob, "m-1"));
    let last = p.len() - 2;
    p[last] ^= 1;
    let bad = raw_seal(&bob, bob.agent_id(), "m-1", &p);
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", &bad).unwrap_err(),
        OpenError::BadSignature
    );
}

#[test]
fn a_forwarded_message_names_its_first_recipient() {
    // Bob re-seals Alice's signed body (to Bob) to Carol: Carol sees it was not for her.
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let p = signed_plaintext(&alice, &body(&alice, &bob, "m-1"));
    let forwarded = raw_seal(&carol, carol.agent_id(), "m-1", &p);
    assert_eq!(
        open_as(&carol, alice.agent_id(), "m-1", &forwarded).unwrap_err(),
        OpenError::WrongRecipient
    );
    // An id inside that is not the id the AAD and the hub name.
    let p = signed_plaintext(&alice, &body(&alice, &bob, "m-9"));
    let renamed = raw_seal(&bob, bob.agent_id(), "m-1", &p);
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", &renamed).unwrap_err(),
        OpenError::WrongId
    );
}

#[test]
fn expired_mail_is_dropped() {
    let (alice, bob) = (identity(1), identity(2));
    let mut b = body(&alice, &bob, "m-1");
    b.expires_at = NOW;
    let sealed = sealed_to(&bob, &b, &alice);
    assert_eq!(
        open_as(&bob, alice.agent_id(), "m-1", &sealed).unwrap_err(),
        OpenError::Expired
    );
}

#[test]
fn a_published_key_verifies_only_for_its_identity_and_id() {
    let (alice, bob) = (identity(1), identity(2));
    let k = MailboxKeys::new(bob.clone()).current(NOW).publish(&bob);
    assert_eq!(k.issued, ISSUED);
    assert!(k.verify(&bob.public(), bob.agent_id(), NOW).is_ok());
    assert_eq!(
        k.verify(&alice.public(), alice.agent_id(), NOW),
        Err(KeyError::BadSignature)
    );
    assert_eq!(
        k.verify(&bob.public(), alice.agent_id(), NOW),
        Err(KeyError::IdMismatch)
    );
    // A hub substituting its own key (or another period) under Bob's signature.
    let mut swapped = k.clone();
    swapped.key = MailboxKeys::new(alice.clone())
        .current(NOW)
        .publish(&alice)
        .key;
    assert_eq!(
        swapped.verify(&bob.public(), bob.agent_id(), NOW),
        Err(KeyError::BadSignature)
    );
    let mut older = k.clone();
    older.issued -= 7 * DAY;
    assert_eq!(
        older.verify(&bob.public(), bob.agent_id(), NOW),
        Err(KeyError::BadSignature)
    );
    let mut junk = k.clone();
    junk.key = B64.encode([1u8; 31]);
    assert_eq!(
        junk.verify(&bob.public(), bob.agent_id(), NOW),
        Err(KeyError::InvalidKey)
    );
    let future = MailboxSecret::derive(&bob, ISSUED + 7 * DAY).publish(&bob);
    assert_eq!(
        future.verify(&bob.public(), bob.agent_id(), NOW),
        Err(KeyError::FromTheFuture)
    );
}

#[test]
fn old_keys_stay_derivable_until_their_mail_has_expired() {
    let bob = identity(2);
    let keys = MailboxKeys::new(bob.clone());
    let period = 7 * DAY;
    // Mail sealed to last period's key, read now: still opens.
    let alice = identity(1);
    let old = MailboxSecret::derive(&bob, ISSUED - period);
    let sealed = seal(
        &mut StdRng::seed_from_u64(3),
        &alice,
        &old.public_bytes(),
        old.issued(),
        &body(&alice, &bob, "m-old"),
    )
    .unwrap();
    let secret = keys.secret_for(ISSUED - period, NOW).unwrap();
    assert!(open(
        &secret,
        bob.agent_id(),
        alice.agent_id(),
        "m-old",
        &sealed,
        NOW
    )
    .is_ok());
    // Bounds: one period + MAX_TTL back, aligned, not from the future.
    assert!(keys.secret_for(ISSUED - 2 * period, NOW).is_none());
    assert!(keys.secret_for(ISSUED + 1, NOW).is_none());
    assert!(keys.secret_for(ISSUED + period, NOW).is_none());
    // A derived key is a function of identity and period only (restarts read old mail).
    assert_eq!(
        MailboxSecret::derive(&bob, ISSUED).public_bytes(),
        keys.current(NOW).public_bytes()
    );
    assert_ne!(
        MailboxSecret::derive(&bob, ISSUED).public_bytes(),
        MailboxSecret::derive(&alice, ISSUED).public_bytes()
    );
}

#[test]
fn key_derivation_and_signed_message_are_pinned() {
    // Golden values: a change here strands every agent's stored mail.
    let bob = identity(2);
    let secret = MailboxSecret::derive(&bob, ISSUED);
    assert_eq!(
        hex::encode(secret.public_bytes()),
        "9e51ec0501f799ef5f0238e9715381f9a9a5792bb1f5a4b0723799c945cb9a30",
        "mailbox key derivation changed"
    );
    let m = key_message(bob.agent_id(), ISSUED, &[9u8; 32]);
    assert!(m.starts_with(b"m2m/2.1 mailbox key\0\0\0\0\x20"));
    assert_eq!(m.len(), KEY_LABEL.len() + 1 + 4 + 32 + 4 + 8 + 4 + 32);
}

#[test]
fn message_ids_are_short_and_plain() {
    assert!(valid_message_id("3f2b0c1e-8a9d-4b7e-9c1a-0d2e3f4a5b6c"));
    assert!(valid_message_id("a.b_c:d-e"));
    assert!(!valid_message_id(""));
    assert!(!valid_message_id(&"a".repeat(MAX_ID_LEN + 1)));
    assert!(!valid_message_id("a b"));
    assert!(!valid_message_id("a\"b"));
    assert!(!valid_message_id("é"));
}

#[test]
fn wire_bodies_have_the_documented_shape() {
    let q = MailQueued {
        queued: true,
        message_id: "m-1".into(),
        expires_at: 5,
    };
    assert_eq!(
        serde_json::to_string(&q).unwrap(),
        r#"{"queued":true,"messageId":"m-1","expiresAt":5}"#
    );
    let e = MailEvent {
        event: EVENT_MAIL.into(),
        id: "m-1".into(),
        from: "a".into(),
        stored_at: 1,
        expires_at: 2,
        sealed: "AA==".into(),
    };
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"event":"mail","id":"m-1","from":"a","storedAt":1,"expiresAt":2,"sealed":"AA=="}"#
    );
    assert_eq!(
        serde_json::to_string(&MailDrained::default()).unwrap(),
        r#"{"event":"mail_drained"}"#
    );
    assert_eq!(
        serde_json::to_string(&MailboxSubscribed {
            agent_id: "a".into(),
            pending: 3
        })
        .unwrap(),
        r#"{"agentId":"a","pending":3}"#
    );
    let k = MailboxKey {
        key: "k".into(),
        issued: 7,
        sig: "s".into(),
    };
    assert_eq!(
        serde_json::to_string(&k).unwrap(),
        r#"{"key":"k","issued":7,"sig":"s"}"#
    );
}

#[test]
fn the_documented_requests_parse() {
    use crate::hub::{Action, HubRequest, RequestError};
    let action = |line: &str| HubRequest::parse(line).unwrap().action();
    let Action::Mail(m) = action(
        r#"{"action":"mail","correlationId":"c","to":"b","id":"m-1","ttl":3600,"sealed":"AAAA"}"#,
    )
    .unwrap() else {
        panic!("not mail")
    };
    assert_eq!(
        (m.to.as_str(), m.id.as_str(), m.ttl),
        ("b", "m-1", Some(3600))
    );
    assert_eq!(m.sealed, "AAAA");
    assert!(matches!(
        action(r#"{"action":"mail","to":"b","id":"a b","sealed":"AAAA"}"#),
        Err(RequestError::InvalidField { field: "id", .. })
    ));
    assert_eq!(
        action(r#"{"action":"mail","to":"b","id":"m","ttl":-5,"sealed":"A"}"#)
            .map(|a| matches!(a, Action::Mail(Mail { ttl: Some(-5), .. }))),
        Ok(true)
    );
    assert!(matches!(
        action(r#"{"action":"mail","to":"b","id":"m","ttl":"x","sealed":"A"}"#),
        Err(RequestError::InvalidField { field: "ttl", .. })
    ));
    assert_eq!(
        action(r#"{"action":"mail","id":"m","sealed":"A"}"#),
        Err(RequestError::MissingField("to"))
    );
    assert_eq!(
        action(r#"{"action":"mailbox","correlationId":"c"}"#),
        Ok(Action::Mailbox {
            identity: None,
            signature: None
        })
    );
    assert_eq!(
        action(r#"{"action":"mail_ack","ids":["m-1","m-2"]}"#),
        Ok(Action::MailAck {
            ids: vec!["m-1".into(), "m-2".into()]
        })
    );
    assert!(matches!(
        action(r#"{"action":"mail_ack","ids":[]}"#),
        Err(RequestError::InvalidField { field: "ids", .. })
    ));
    let many = serde_json::to_string(&vec!["m"; MAX_ACK_IDS + 1]).unwrap();
    assert!(matches!(
        action(&format!(r#"{{"action":"mail_ack","ids":{many}}}"#)),
        Err(RequestError::InvalidField { field: "ids", .. })
    ));
    let Action::Register(r) = action(
        r#"{"action":"register","address":"h:1","mailbox":{"key":"k","issued":7,"sig":"s"}}"#,
    )
    .unwrap() else {
        panic!("not register")
    };
    assert_eq!(r.mailbox.map(|k| k.issued), Some(7));
    assert!(matches!(
        action(r#"{"action":"register","address":"h:1","mailbox":{"key":"k"}}"#),
        Err(RequestError::InvalidField {
            field: "mailbox",
            ..
        })
    ));
}
