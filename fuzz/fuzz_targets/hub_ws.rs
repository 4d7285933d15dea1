//! The hub's WebSocket session from the first byte after the upgrade: frame reading with
//! the hub's limits (masking, fragmentation, control frames, oversized messages), request
//! handling and replies, on a real in-memory hub. The input is one byte of read-size seeds
//! count, the read sizes, then what the client sends.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use m2m_fuzz::hub::with_hub;
use m2m_fuzz::ws_io::ScriptedIo;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (sizes, input) = rest.split_at(usize::from(n % 8).min(rest.len()));
    with_hub(|state| async move {
        let mut io = ScriptedIo::new(input, sizes);
        m2m_hub::fuzzing::serve_websocket(state, &mut io, IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
        // The challenge is written before anything is read.
        assert!(io.written > 0);
    });
});
