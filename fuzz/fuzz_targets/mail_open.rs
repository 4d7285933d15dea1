//! Mailbox (docs/MAILBOX.md): `open` never panics on any sealed bytes, and never accepts a
//! sealed message with a changed byte. The input picks the payload, the message id and a
//! mutation; a message sealed from it opens exactly as sealed, and the same message with the
//! mutation applied is refused (or, for bytes that only the header names, refused as
//! malformed or an unknown key). The raw input is also opened as it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_proto::mailbox::{open, seal, sealed_issued, MailBody, MailboxKeys};
use m2m_proto::Identity;
use rand::rngs::StdRng;
use rand::SeedableRng;

const ISSUED: u64 = 2828 * 7 * 24 * 3600 * 1000;
const NOW: u64 = ISSUED + 1000;

fuzz_target!(|data: &[u8]| {
    let alice = Identity::from_secret_bytes(&[1; 32]);
    let bob = Identity::from_secret_bytes(&[2; 32]);
    let keys = MailboxKeys::new(bob.clone());
    let secret = keys.current(NOW);
    // Whatever the hub hands over, opening returns an error or a verified message.
    if let Ok(issued) = sealed_issued(data) {
        if let Some(s) = keys.secret_for(issued, NOW) {
            let _ = open(&s, bob.agent_id(), alice.agent_id(), "m", data, NOW);
        }
    }
    let Some((&at, rest)) = data.split_first() else {
        return;
    };
    let (flip, rest) = rest.split_first().unwrap_or((&1, &[]));
    let text = String::from_utf8_lossy(rest).into_owned();
    let body = MailBody {
        from: alice.agent_id().to_owned(),
        to: bob.agent_id().to_owned(),
        id: "m".to_owned(),
        message_type: "chat".to_owned(),
        payload: serde_json::Value::String(text),
        correlation_id: None,
        sent_at: NOW,
        expires_at: NOW + 1,
    };
    let mut rng = StdRng::seed_from_u64(u64::from(at));
    let sealed = seal(
        &mut rng,
        &alice,
        &secret.public_bytes(),
        secret.issued(),
        &body,
    )
    .expect("a derived key seals");
    let opened = open(&secret, bob.agent_id(), alice.agent_id(), "m", &sealed, NOW)
        .expect("an untouched message opens");
    assert_eq!(opened.body, body);
    let mut changed = sealed.clone();
    let i = usize::from(at) * 7 % changed.len();
    changed[i] ^= flip.max(&1);
    assert!(open(
        &secret,
        bob.agent_id(),
        alice.agent_id(),
        "m",
        &changed,
        NOW
    )
    .is_err());
});
