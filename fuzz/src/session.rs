//! The session fuzz targets: one state machine under test, its honest counterpart run by
//! the harness, and an attacker (the fuzzer) on the wire between them.
//!
//! The input is a header and then lines (split on `\n`). A line whose first byte is an
//! opcode below is an action; any other line goes to the machine under test as it is, so
//! the recorded P2P transcripts are seeds as they stand:
//!
//! * `\x01 payload` — the honest counterpart's next line (handshake, handshake_ack, auth,
//!   or a message sealed with `payload`, whichever the protocol is at);
//! * `\x02 k` — the `k`-th line the machine under test already took, again (replay);
//! * `\x03 p p x payload` — the honest next line with byte `p` xor `x`;
//! * `\x04 p p payload` — the honest next line cut after `p` bytes;
//! * `\x05 i payload` — a handshake / handshake_ack with fields the fuzzer picks.
//!
//! Lines reach the machine through a real [`LineDecoder`], as from a socket. What must hold
//! whatever the attacker does:
//!
//! * every message delivered as authenticated comes from the honest counterpart, carries a
//!   payload the counterpart sealed, and names the counterpart's verified id;
//! * on a session that took the honest counterpart's own handshake, every delivered
//!   payload is one the counterpart sealed (AES-GCM integrity);
//! * a responder that accepts authenticated peers only never delivers an unauthenticated
//!   message; an initiator that expects an identity never completes without it;
//! * a frame other than a handshake never changes an established session, unless the
//!   machine closes the connection over it.

use m2m_proto::codec::LineDecoder;
use m2m_proto::crypto::{decode_payload, encode_payload};
use m2m_proto::frame::Frame;
use m2m_proto::limits::MAX_FRAME_LEN;
use m2m_proto::{
    Identity, Initiator, InitiatorEvent, PeerExpectation, PeerPolicy, Responder, ResponderOutput,
};
use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::Value;

/// Which protocol the target speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Both sides 2.0: no identities.
    V20,
    /// 2.1 identities on the side under test, the counterpart 2.1 or (flag) 2.0.
    V21,
}

/// The header: rng seed (8 bytes), flags (1 byte).
const HEADER: usize = 9;
/// Flag: the initiator is under test (else the responder).
const FLAG_INITIATOR: u8 = 1;
/// Flag (2.1): the responder accepts authenticated peers only / the initiator requires one.
const FLAG_STRICT: u8 = 2;
/// Flag (2.1): the honest counterpart speaks 2.0.
const FLAG_PEER_V20: u8 = 4;
/// Flag (2.1, initiator under test): it knows the responder's identity from the hub.
const FLAG_EXPECT_IDENTITY: u8 = 8;
/// At most this many lines per input: longer runs explore nothing new and cost time.
const MAX_LINES: usize = 256;

/// One line of the input.
enum Op<'a> {
    Honest(&'a [u8]),
    Replay(usize),
    Flip(usize, u8, &'a [u8]),
    Cut(usize, &'a [u8]),
    Forge(u8, &'a [u8]),
    Raw(&'a [u8]),
}

fn op(line: &[u8]) -> Op<'_> {
    let u16_at = |r: &[u8]| usize::from(u16::from_le_bytes([r[0], r[1]]));
    match line {
        [1, payload @ ..] => Op::Honest(payload),
        [2, k, ..] => Op::Replay(usize::from(*k)),
        [3, rest @ ..] if rest.len() >= 3 => Op::Flip(u16_at(rest), rest[2], &rest[3..]),
        [4, rest @ ..] if rest.len() >= 2 => Op::Cut(u16_at(rest), &rest[2..]),
        [5, i, payload @ ..] => Op::Forge(*i, payload),
        other => Op::Raw(other),
    }
}

/// Runs one input.
pub fn run(data: &[u8], version: Version) {
    let Some((header, body)) = data.split_at_checked(HEADER) else {
        return;
    };
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&header[..8]);
    let flags = header[8];
    let rng = StdRng::seed_from_u64(u64::from_le_bytes(seed));
    let ops = body.split(|&b| b == b'\n').take(MAX_LINES).map(op);
    if flags & FLAG_INITIATOR != 0 {
        drive(InitiatorUnderTest::new(version, flags, rng), ops);
    } else {
        drive(ResponderUnderTest::new(version, flags, rng), ops);
    }
}

/// Identities from fixed seeds: the harness must know which ids are honest. 1: the honest
/// initiator, 2: the honest responder, 0xEE: a stranger. Made once: deriving a key costs
/// more than most inputs.
fn identity(n: u8) -> Identity {
    static IDENTITIES: OnceLock<[Identity; 3]> = OnceLock::new();
    let [one, two, stranger] =
        IDENTITIES.get_or_init(|| [1, 2, 0xEE].map(|n| Identity::from_secret_bytes(&[n; 32])));
    match n {
        1 => one.clone(),
        2 => two.clone(),
        _ => stranger.clone(),
    }
}

fn line_of(frame: &Frame) -> Vec<u8> {
    let mut line = frame.encode();
    line.pop();
    line
}

/// A message type and a correlationId picked from the payload, so that both vary.
fn labels(payload: &[u8]) -> (&'static str, Option<Value>) {
    match payload.first().map(|b| b % 4) {
        Some(0) => ("chat", Some(Value::from(format!("c{}", payload.len())))),
        Some(1) => ("task:response", Some(Value::from(payload.len()))),
        Some(2) => ("", None),
        _ => ("x", Some(Value::Null)),
    }
}

/// A fuzzer-built handshake or handshake_ack, fields picked by `i` from real and junk keys.
fn forged(i: u8, payload: &[u8], real_key: &str, honest: &Identity) -> Frame {
    let text = String::from_utf8_lossy(payload).into_owned();
    let key = match i % 3 {
        0 => real_key.to_owned(),
        1 => text.clone(),
        // The all-zero point: a low-order key the shared secret must refuse.
        _ => "MCowBQYDK2VuAyEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
    };
    let stranger = identity(0xEE);
    let (identity, id) = match (i / 3) % 4 {
        0 => (None, None),
        1 => (
            Some(honest.public().to_b64()),
            Some(honest.agent_id().to_owned()),
        ),
        2 => (
            Some(stranger.public().to_b64()),
            Some(stranger.agent_id().to_owned()),
        ),
        _ => (Some(text.clone()), Some(text.clone())),
    };
    if i & 0x80 == 0 {
        Frame::Handshake {
            key,
            from: id.unwrap_or(text),
            identity,
        }
    } else {
        Frame::HandshakeAck {
            key,
            identity,
            id,
            sig: Some(stranger.sign_b64(payload)),
        }
    }
}

/// Plaintexts the honest side sealed, as the receiver decodes them.
#[derive(Default)]
struct Sealed(Vec<Value>);

impl Sealed {
    fn add(&mut self, plaintext: &[u8]) {
        self.0.push(decode_payload(plaintext));
    }

    /// A payload sealed as a JSON value: the receiver reads back its encoding.
    fn add_value(&mut self, payload: &Value) {
        self.add(&encode_payload(payload));
    }

    fn assert_contains(&self, payload: &Value) {
        assert!(
            self.0.contains(payload),
            "delivered a payload nobody sealed: {payload}"
        );
    }
}

/// Splits `bytes` into lines as the IO layer does and hands each to `take`; stops (returns
/// false) when `take` says the connection is closed.
fn deliver(decoder: &mut LineDecoder, bytes: &[u8], mut take: impl FnMut(&[u8]) -> bool) -> bool {
    decoder.push(bytes);
    decoder.push(b"\n");
    loop {
        match decoder.next_line() {
            Ok(Some(line)) => {
                let line = line.to_vec();
                if !take(&line) {
                    return false;
                }
            }
            Ok(None) => return true,
            // The IO layer answers frame_too_large and closes.
            Err(_) => return false,
        }
    }
}

/// What [`drive`] needs of each side's harness.
trait Harness {
    /// The honest counterpart's next line, if it has one.
    fn honest_next(&mut self, payload: &[u8]) -> Option<Vec<u8>>;
    /// An op this side handles itself (true), before it becomes a line.
    fn intercept(&mut self, _op: &Op<'_>) -> bool {
        false
    }
    /// A forged handshake (responder under test) or handshake_ack (initiator under test).
    fn forge(&self, i: u8, payload: &[u8]) -> Vec<u8>;
    /// The lines the machine under test took so far.
    fn history(&self) -> &[Vec<u8>];
    fn decoder(&mut self) -> &mut LineDecoder;
    /// Gives one line to the machine under test; false once the connection is closed.
    fn take(&mut self, line: &[u8]) -> bool;
}

/// Turns each op into a line and puts it on the wire until the connection closes.
fn drive<'a, H: Harness>(mut h: H, ops: impl Iterator<Item = Op<'a>>) {
    for op in ops {
        if h.intercept(&op) {
            continue;
        }
        let line = match op {
            Op::Honest(p) => h.honest_next(p),
            Op::Replay(k) => h.history().get(k % h.history().len().max(1)).cloned(),
            Op::Flip(pos, x, p) => h.honest_next(p).map(|mut l| {
                if !l.is_empty() {
                    let i = pos % l.len();
                    l[i] ^= x.max(1);
                }
                l
            }),
            Op::Cut(pos, p) => h.honest_next(p).map(|mut l| {
                l.truncate(pos % (l.len() + 1));
                l
            }),
            Op::Forge(i, p) => Some(h.forge(i, p)),
            Op::Raw(l) => Some(l.to_vec()),
        };
        let Some(line) = line else {
            continue;
        };
        let mut decoder = std::mem::replace(h.decoder(), LineDecoder::new(0));
        let open = deliver(&mut decoder, &line, |l| h.take(l));
        *h.decoder() = decoder;
        if !open {
            return;
        }
    }
}

struct ResponderUnderTest {
    version: Version,
    strict: bool,
    rng: StdRng,
    uut: Responder,
    honest: Initiator,
    /// The honest initiator's identity (2.1) or declared id (2.0).
    honest_id: String,
    honest_identity: Option<Identity>,
    hello: Option<Vec<u8>>,
    hello_line: Vec<u8>,
    /// The honest initiator failed (it would have closed): it sends nothing more.
    honest_gone: bool,
    /// The responder's current keys come from the honest hello as sent.
    keyed_by_honest: bool,
    sealed: Sealed,
    history: Vec<Vec<u8>>,
    decoder: LineDecoder,
}

impl ResponderUnderTest {
    fn new(version: Version, flags: u8, mut rng: StdRng) -> Self {
        let strict = version == Version::V21 && flags & FLAG_STRICT != 0;
        let uut = match version {
            Version::V20 => Responder::new(),
            Version::V21 => Responder::with_identity(
                identity(2),
                if strict {
                    PeerPolicy::AuthenticatedOnly
                } else {
                    PeerPolicy::AcceptAll
                },
            ),
        };
        let honest_identity =
            (version == Version::V21 && flags & FLAG_PEER_V20 == 0).then(|| identity(1));
        let (honest, hello) = match &honest_identity {
            Some(id) => {
                let expect = PeerExpectation {
                    identity: Some(identity(2).public()),
                    require_authenticated: true,
                };
                Initiator::new_authenticated(id, expect, &mut rng)
            }
            None => Initiator::new("honest-initiator", &mut rng),
        };
        let honest_id = match &honest_identity {
            Some(id) => id.agent_id().to_owned(),
            None => "honest-initiator".to_owned(),
        };
        let hello_line = line_of(&hello);
        ResponderUnderTest {
            version,
            strict,
            rng,
            uut,
            honest,
            honest_id,
            honest_identity,
            hello: Some(hello_line.clone()),
            hello_line,
            honest_gone: false,
            keyed_by_honest: false,
            sealed: Sealed::default(),
            history: Vec::new(),
            decoder: LineDecoder::new(MAX_FRAME_LEN),
        }
    }
}

impl Harness for ResponderUnderTest {
    /// An odd first byte: the responder sends a message of its own (2.1).
    fn intercept(&mut self, op: &Op<'_>) -> bool {
        match op {
            Op::Honest(p)
                if p.first().is_some_and(|b| b % 2 == 1) && self.uut.is_authenticated() =>
            {
                self.responder_sends(p);
                true
            }
            _ => false,
        }
    }

    fn forge(&self, i: u8, payload: &[u8]) -> Vec<u8> {
        let key = match Frame::parse(&self.hello_line) {
            Ok(Frame::Handshake { key, .. }) => key,
            _ => String::new(),
        };
        line_of(&forged(i & 0x7f, payload, &key, &identity(1)))
    }

    fn history(&self) -> &[Vec<u8>] {
        &self.history
    }

    fn decoder(&mut self) -> &mut LineDecoder {
        &mut self.decoder
    }

    /// The honest initiator's next line.
    fn honest_next(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.honest_gone {
            return None;
        }
        if let Some(hello) = self.hello.take() {
            return Some(hello);
        }
        if let Some(auth) = self.honest.take_auth_frame() {
            return Some(line_of(&auth));
        }
        if !self.honest.is_established() {
            return None;
        }
        let (kind, cid) = labels(payload);
        let mut out = Vec::new();
        let sealed = if payload.len().is_multiple_of(2) {
            let frame = self
                .honest
                .seal_plaintext(kind, payload, cid, &mut self.rng);
            frame.map(|f| out = line_of(&f))
        } else {
            let cid = cid.as_ref().and_then(Value::as_str).map(str::to_owned);
            let r = self
                .honest
                .seal_into(kind, payload, cid.as_deref(), &mut self.rng, &mut out);
            out.pop();
            r
        };
        sealed.ok()?;
        self.sealed.add(payload);
        Some(out)
    }

    /// Gives one line to the responder; false once it closes the connection.
    fn take(&mut self, line: &[u8]) -> bool {
        if self.history.len() < 64 {
            self.history.push(line.to_vec());
        }
        let before = (
            self.uut.is_established(),
            self.uut.is_authenticated(),
            self.uut.peer_id().map(str::to_owned),
        );
        let is_handshake = matches!(Frame::parse(line), Ok(Frame::Handshake { .. }));
        let out = self.uut.handle_line(line, &mut self.rng);
        let after = (
            self.uut.is_established(),
            self.uut.is_authenticated(),
            self.uut.peer_id().map(str::to_owned),
        );
        let closes = matches!(out, ResponderOutput::SendAndClose(_));
        if before.0 && !is_handshake && !closes {
            assert_eq!(
                before, after,
                "a non-handshake frame changed the session: {out:?}"
            );
        }
        if self.uut.is_authenticated() {
            assert_eq!(self.uut.peer_id(), Some(self.honest_id.as_str()));
            assert!(self.honest_identity.is_some());
        }
        match out {
            ResponderOutput::Send(Frame::HandshakeAck { .. })
                if is_handshake && line != self.hello_line.as_slice() =>
            {
                self.keyed_by_honest = false;
            }
            ResponderOutput::Send(ref ack @ Frame::HandshakeAck { .. }) => {
                self.keyed_by_honest = true;
                if !self.honest_gone && self.honest.handle_line(&line_of(ack)).is_err() {
                    self.honest_gone = true;
                }
            }
            ResponderOutput::Deliver { message, ack } => {
                if self.strict {
                    assert!(message.authenticated, "strict responder took 2.0");
                }
                if message.authenticated {
                    assert_eq!(message.from, self.honest_id);
                    assert_eq!(self.version, Version::V21);
                    self.sealed.assert_contains(&message.payload);
                } else if self.keyed_by_honest {
                    self.sealed.assert_contains(&message.payload);
                    assert_eq!(message.from, self.honest_id);
                }
                if !self.honest_gone {
                    match self.honest.handle_line(&line_of(&ack)) {
                        Ok(InitiatorEvent::Acked(_)) => {}
                        _ => self.honest_gone = true,
                    }
                }
            }
            ResponderOutput::SendAndClose(_) => return false,
            ResponderOutput::Send(_) | ResponderOutput::Acked(_) | ResponderOutput::Nothing => {}
        }
        true
    }
}

impl ResponderUnderTest {
    /// 2.1: the responder seals a message back to the initiator (as a response); the
    /// honest initiator must open it and ack it.
    fn responder_sends(&mut self, payload: &[u8]) {
        let (kind, cid) = labels(payload);
        let value = decode_payload(payload);
        let Ok(frame) = self.uut.seal(kind, &value, cid, &mut self.rng) else {
            return;
        };
        if self.honest_gone {
            return;
        }
        match self.honest.handle_line(&line_of(&frame)) {
            Ok(InitiatorEvent::Message { message, ack }) => {
                // The responder authenticated us, so we authenticated it: its id is proven.
                assert!(message.authenticated);
                assert_eq!(message.from, identity(2).agent_id());
                assert_eq!(message.payload, decode_payload(&encode_payload(&value)));
                let mut decoder = std::mem::replace(&mut self.decoder, LineDecoder::new(0));
                let open = deliver(&mut decoder, &line_of(&ack), |l| self.take(l));
                self.decoder = decoder;
                if !open {
                    self.honest_gone = true;
                }
            }
            // The honest initiator may be on other keys than the responder after attacks.
            _ => self.honest_gone = true,
        }
    }
}

struct InitiatorUnderTest {
    rng: StdRng,
    uut: Initiator,
    honest: Responder,
    /// Whether the honest responder is 2.1 (it has identity 2).
    honest_v21: bool,
    /// Must the initiator end up authenticated to identity 2?
    must_authenticate: bool,
    /// The honest responder's lines not yet given to the initiator (its handshake_ack,
    /// then acks of the initiator's messages).
    pending: Vec<Vec<u8>>,
    sealed: Sealed,
    history: Vec<Vec<u8>>,
    decoder: LineDecoder,
    honest_gone: bool,
}

impl InitiatorUnderTest {
    fn new(version: Version, flags: u8, mut rng: StdRng) -> Self {
        let v21 = version == Version::V21;
        let honest_v21 = v21 && flags & FLAG_PEER_V20 == 0;
        let expect = PeerExpectation {
            identity: (v21 && flags & FLAG_EXPECT_IDENTITY != 0).then(|| identity(2).public()),
            require_authenticated: v21 && flags & FLAG_STRICT != 0,
        };
        let must_authenticate = expect.identity.is_some() || expect.require_authenticated;
        let (uut, hello) = if v21 {
            Initiator::new_authenticated(&identity(1), expect, &mut rng)
        } else {
            Initiator::new("initiator-under-test", &mut rng)
        };
        let mut honest = if honest_v21 {
            Responder::with_identity(identity(2), PeerPolicy::AcceptAll)
        } else {
            Responder::new()
        };
        let mut pending = Vec::new();
        let mut honest_gone = true;
        if let ResponderOutput::Send(ack) = honest.handle_line(&line_of(&hello), &mut rng) {
            pending.push(line_of(&ack));
            honest_gone = false;
        }
        InitiatorUnderTest {
            rng,
            uut,
            honest,
            honest_v21,
            must_authenticate,
            pending,
            sealed: Sealed::default(),
            history: Vec::new(),
            decoder: LineDecoder::new(MAX_FRAME_LEN),
            honest_gone,
        }
    }
}

impl Harness for InitiatorUnderTest {
    fn forge(&self, i: u8, payload: &[u8]) -> Vec<u8> {
        line_of(&forged(i | 0x80, payload, "", &identity(2)))
    }

    fn history(&self) -> &[Vec<u8>] {
        &self.history
    }

    fn decoder(&mut self) -> &mut LineDecoder {
        &mut self.decoder
    }

    /// The honest responder's next line: what it has queued, else (2.1) a message it seals
    /// or the ack of a message the initiator seals now.
    fn honest_next(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if self.honest_gone {
            return None;
        }
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        if !self.uut.is_established() {
            return None;
        }
        let (kind, cid) = labels(payload);
        if self.honest_v21 && payload.len() % 2 == 1 {
            let value = decode_payload(payload);
            let frame = self.honest.seal(kind, &value, cid, &mut self.rng).ok()?;
            self.sealed.add_value(&value);
            return Some(line_of(&frame));
        }
        // The initiator sends a message; the honest responder's ack is the next line.
        let frame = self
            .uut
            .seal_plaintext(kind, payload, cid, &mut self.rng)
            .ok()?;
        match self.honest.handle_line(&line_of(&frame), &mut self.rng) {
            ResponderOutput::Deliver { message, ack } => {
                assert_eq!(message.payload, decode_payload(payload));
                Some(line_of(&ack))
            }
            _ => {
                self.honest_gone = true;
                None
            }
        }
    }

    /// Gives one line to the initiator; false once it fails (the IO layer closes).
    fn take(&mut self, line: &[u8]) -> bool {
        if self.history.len() < 64 {
            self.history.push(line.to_vec());
        }
        let was_established = self.uut.is_established();
        let result = self.uut.handle_line(line);
        if self.uut.is_established() && self.must_authenticate {
            assert!(self.uut.is_authenticated(), "downgrade accepted");
            assert_eq!(self.uut.peer_id(), Some(identity(2).agent_id()));
        }
        if self.uut.is_authenticated() {
            // Only identity 2's key can sign the handshake_ack the initiator accepted.
            assert_eq!(self.uut.peer_id(), Some(identity(2).agent_id()));
        }
        match result {
            Ok(InitiatorEvent::Established) => {
                assert!(!was_established);
                if let Some(auth) = self.uut.take_auth_frame() {
                    if !matches!(
                        self.honest.handle_line(&line_of(&auth), &mut self.rng),
                        ResponderOutput::Nothing
                    ) {
                        self.honest_gone = true;
                    }
                }
            }
            Ok(InitiatorEvent::Message { message, .. }) => {
                assert!(message.authenticated);
                assert_eq!(message.from, identity(2).agent_id());
                self.sealed.assert_contains(&message.payload);
            }
            Ok(InitiatorEvent::Acked(_) | InitiatorEvent::Pong | InitiatorEvent::Ignored) => {}
            Err(_) => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed inputs run through the harness without tripping it: the honest exchanges
    /// and the recorded transcript hold every rule.
    #[test]
    fn seeds_hold_every_rule() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/vectors/");
        let read = |name: &str| std::fs::read_to_string(format!("{dir}{name}")).unwrap();
        let vectors = m2m_fuzz_seeds::Vectors::parse(
            &read("p2p-transcript-v2.jsonl"),
            &read("hub-transcript-v2.jsonl"),
            &read("crypto-v2.json"),
        );
        for (target, seeds) in vectors.seeds() {
            let version = match target {
                "session_v20" => Version::V20,
                "session_v21" => Version::V21,
                _ => continue,
            };
            assert!(!seeds.is_empty());
            for seed in seeds {
                run(&seed, version);
            }
        }
    }
}
