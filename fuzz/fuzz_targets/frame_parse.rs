//! `Frame::parse` on any line: no panic; the borrowing parse (with its fast path for the
//! `message` lines we and the original write) reads every line as the general path does;
//! and what we encode reads back as the same frame (unknown frames excepted: we never send
//! one, and their debug encoding names the type as `kind`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_proto::frame::{Frame, ParsedFrame};

fuzz_target!(|line: &[u8]| {
    let owned = Frame::parse(line);
    assert_eq!(
        Frame::parse_borrowed(line).map(ParsedFrame::into_owned),
        owned
    );
    // A leading space keeps the JSON the same but never takes the fast path.
    let mut spaced = Vec::with_capacity(line.len() + 1);
    spaced.push(b' ');
    spaced.extend_from_slice(line);
    assert_eq!(
        Frame::parse(&spaced),
        owned,
        "fast and general paths differ"
    );
    match owned {
        // Unknown frames are never sent, and their debug encoding names the type as `kind`.
        Err(_) | Ok(Frame::Unknown(_)) => {}
        Ok(frame) => roundtrip(frame),
    }
});

fn roundtrip(frame: Frame) {
    let mut encoded = frame.encode();
    assert_eq!(encoded.pop(), Some(b'\n'));
    assert!(!encoded.contains(&b'\n'), "an encoded frame spans lines");
    assert_eq!(
        Frame::parse(&encoded),
        Ok(frame),
        "encode does not read back"
    );
}
