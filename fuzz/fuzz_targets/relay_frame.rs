//! Relay frames (docs/RELAY.md): `RelayFrame::parse` never panics on any bytes, and what
//! parses encodes back to exactly the same bytes but for an unknown close code, which reads
//! as `protocol` (so the hub can forward a frame it parsed without re-encoding it, changing
//! only the stream id). The tail of the input also drives
//! a sender's credit and a receiver's window through DATA and CREDIT: whatever the order,
//! the receiver never holds more than the window and a credit check never overflows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_proto::relay::{set_stream, RecvWindow, RelayFrame, SendCredit};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = RelayFrame::parse(data) {
        let encoded = frame.to_vec();
        assert_eq!(RelayFrame::parse(&encoded), Ok(frame));
        // A close code we do not know reads (and re-encodes) as `protocol`; every other
        // frame encodes back to exactly its bytes.
        let unknown_code = matches!(frame, RelayFrame::Close { .. }) && data[5] > 7;
        if !unknown_code {
            assert_eq!(encoded, data, "{frame:?}");
        }
        let mut moved = data.to_vec();
        set_stream(&mut moved, frame.stream().wrapping_add(1).max(1));
        let again = RelayFrame::parse(&moved).expect("a renumbered frame parses");
        assert_eq!(again.stream(), frame.stream().wrapping_add(1).max(1));
    }
    let Some((&window, ops)) = data.split_first() else {
        return;
    };
    let window = u32::from(window) * 64 + 1;
    let (mut tx, mut rx) = (SendCredit::new(window), RecvWindow::new(window));
    for pair in ops.chunks_exact(2) {
        let n = usize::from(u16::from_le_bytes([pair[0], pair[1]]) >> 1);
        if pair[0] & 1 == 0 {
            let sent = tx.consume(n).is_ok();
            if sent {
                rx.on_data(n).expect("data within credit fits the window");
            }
        } else if let Some(credit) = rx.on_consumed(n) {
            tx.grant(credit)
                .expect("credit the receiver returns is owed");
        }
        assert!(rx.buffered() <= window);
        assert!(tx.in_flight() <= window);
    }
});
