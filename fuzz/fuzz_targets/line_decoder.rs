//! `LineDecoder` against a model: the input is cut into reads of fuzzer-chosen sizes (through
//! `push` and through `read_buf`/`commit`), and every line, skip and error must be what a
//! plain split on `\n` gives at the same point of the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_fuzz::line_model::LineModel;
use m2m_proto::codec::LineDecoder;

fuzz_target!(|data: &[u8]| {
    // Header: the limit (small, so that the over-limit paths are reached) and a seed for
    // the read sizes.
    let [max_lo, max_hi, cuts, rest @ ..] = data else {
        return;
    };
    let max = usize::from(u16::from_le_bytes([*max_lo, *max_hi]) % 2048);
    let mut decoder = LineDecoder::new(max);
    let mut model = LineModel::new(max);
    let mut input = rest;
    let mut step = usize::from(*cuts);
    let mut i = 0usize;
    while !input.is_empty() {
        // Read sizes from 1 to 256 bytes, varying read by read.
        step = step.wrapping_mul(31).wrapping_add(17 + i);
        let n = (step % 256 + 1).min(input.len());
        let (chunk, tail) = input.split_at(n);
        input = tail;
        if i.is_multiple_of(2) {
            decoder.push(chunk);
        } else {
            // A socket read: room for more than arrives, then commit what arrived.
            let room = decoder.read_buf(n + step % 64);
            assert!(room.len() >= n);
            room[..n].copy_from_slice(chunk);
            decoder.commit(n);
        }
        model.push(chunk);
        i += 1;
        loop {
            let got = decoder.next_line().map(|l| l.map(<[u8]>::to_vec));
            let want = model.next_line();
            assert_eq!(got, want, "max {max}");
            match got {
                Ok(Some(_)) => {}
                // After an error the connection is closed: nothing more to compare.
                Err(_) => return,
                Ok(None) => break,
            }
        }
        assert_eq!(decoder.buffered(), model.buffered());
    }
});
