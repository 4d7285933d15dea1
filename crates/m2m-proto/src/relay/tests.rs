use super::*;

#[test]
fn frames_round_trip_byte_for_byte() {
    let peer = raw_id("00112233445566778899aabbccddeeff").unwrap();
    let frames = [
        RelayFrame::Open { stream: 1, peer },
        RelayFrame::Data {
            stream: 0x0102_0304,
            bytes: b"{\"type\":\"ping\"}\n",
        },
        RelayFrame::Credit {
            stream: 2,
            bytes: 131_072,
        },
        RelayFrame::Close {
            stream: 7,
            reason: CloseReason::Gone,
            detail: "destination went away",
        },
    ];
    for frame in frames {
        let bytes = frame.to_vec();
        assert_eq!(RelayFrame::parse(&bytes), Ok(frame));
    }
    // Golden bytes (docs/RELAY.md section 2).
    assert_eq!(
        RelayFrame::Open { stream: 1, peer }.to_vec(),
        [
            &[0x01, 0, 0, 0, 1][..],
            &[
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        ]
        .concat()
    );
    assert_eq!(
        RelayFrame::Credit {
            stream: 3,
            bytes: 5
        }
        .to_vec(),
        [0x03, 0, 0, 0, 3, 0, 0, 0, 5]
    );
    assert_eq!(
        RelayFrame::Close {
            stream: 2,
            reason: CloseReason::Budget,
            detail: "x"
        }
        .to_vec(),
        [0x04, 0, 0, 0, 2, 4, b'x']
    );
    assert_eq!(
        RelayFrame::Data {
            stream: 9,
            bytes: b"ab"
        }
        .to_vec(),
        [0x02, 0, 0, 0, 9, b'a', b'b']
    );
}

#[test]
fn malformed_frames_are_errors() {
    use RelayFrameError::*;
    let cases: &[(&[u8], RelayFrameError)] = &[
        (b"", UnknownKind),
        (&[0x09, 0, 0, 0, 1], UnknownKind),
        (&[0x02, 0, 0, 1], BadLength),
        (&[0x02, 0, 0, 0, 0, b'a'], ZeroStream),
        (&[0x02, 0, 0, 0, 1], BadLength),
        (&[0x01, 0, 0, 0, 1, 1, 2, 3], BadLength),
        (&[0x03, 0, 0, 0, 1, 0, 0, 0, 0], ZeroCredit),
        (&[0x03, 0, 0, 0, 1, 0, 0, 1], BadLength),
        (&[0x04, 0, 0, 0, 1], BadLength),
        (&[0x04, 0, 0, 0, 1, 0, 0xff], BadDetail),
    ];
    for (bytes, want) in cases {
        assert_eq!(RelayFrame::parse(bytes), Err(*want), "{bytes:?}");
    }
    let mut big = vec![0x02, 0, 0, 0, 1];
    big.resize(5 + MAX_DATA, b'x');
    assert!(RelayFrame::parse(&big).is_ok());
    big.push(b'x');
    assert_eq!(RelayFrame::parse(&big), Err(BadLength));
}

#[test]
fn unknown_close_codes_read_as_protocol_and_long_details_are_cut() {
    let parsed = RelayFrame::parse(&[0x04, 0, 0, 0, 1, 200]).unwrap();
    assert!(matches!(
        parsed,
        RelayFrame::Close {
            reason: CloseReason::Protocol,
            ..
        }
    ));
    for code in 0..=7 {
        assert_eq!(CloseReason::from_code(code).code(), code);
    }
    let long = "é".repeat(200); // 400 bytes
    let bytes = RelayFrame::Close {
        stream: 1,
        reason: CloseReason::Normal,
        detail: &long,
    }
    .to_vec();
    let RelayFrame::Close { detail, .. } = RelayFrame::parse(&bytes).unwrap() else {
        panic!("not a close")
    };
    assert_eq!(detail.len(), MAX_CLOSE_DETAIL);
}

#[test]
fn set_stream_rewrites_the_id_only() {
    let mut bytes = RelayFrame::Data {
        stream: 1,
        bytes: b"hello",
    }
    .to_vec();
    set_stream(&mut bytes, 42);
    assert_eq!(
        RelayFrame::parse(&bytes),
        Ok(RelayFrame::Data {
            stream: 42,
            bytes: b"hello"
        })
    );
}

#[test]
fn ids_convert_and_reject_what_is_not_an_agent_id() {
    let id = "0123456789abcdef0123456789abcdef";
    assert_eq!(id_text(&raw_id(id).unwrap()), id);
    for bad in [
        "",
        "0123",
        "0123456789ABCDEF0123456789abcdef",
        &"g".repeat(32),
    ] {
        assert_eq!(raw_id(bad), None, "{bad}");
    }
}

#[test]
fn stream_ids_are_odd_for_clients_and_even_for_the_hub() {
    let mut client = StreamIds::new(Opener::Client);
    let mut hub = StreamIds::new(Opener::Hub);
    assert_eq!([client.next_id(), client.next_id()], [Some(1), Some(3)]);
    assert_eq!([hub.next_id(), hub.next_id()], [Some(2), Some(4)]);
    assert_eq!(Opener::of(0), None);
    assert_eq!(Opener::of(5), Some(Opener::Client));
    assert_eq!(Opener::of(6), Some(Opener::Hub));
    let mut last = StreamIds {
        next: Some(u32::MAX),
    };
    assert_eq!(last.next_id(), Some(u32::MAX));
    assert_eq!(last.next_id(), None);
}

#[test]
fn send_credit_bounds_what_is_in_flight() {
    let mut credit = SendCredit::new(10);
    assert_eq!(credit.consume(11), Err(FlowError::BeyondCredit));
    credit.consume(6).unwrap();
    assert_eq!(credit.in_flight(), 6);
    assert_eq!(credit.consume(5), Err(FlowError::BeyondCredit));
    assert_eq!(credit.grant(7), Err(FlowError::CreditBeyondWindow));
    credit.grant(6).unwrap();
    assert_eq!(credit.available(), 10);
}

#[test]
fn recv_window_refuses_data_beyond_it_and_returns_credit_at_half() {
    let mut w = RecvWindow::new(8);
    w.on_data(5).unwrap();
    assert_eq!(w.on_data(4), Err(FlowError::BeyondCredit));
    assert_eq!(w.on_consumed(3), None);
    // Consumed but not credited bytes still count against the window.
    assert_eq!(w.on_data(4), Err(FlowError::BeyondCredit));
    assert_eq!(w.on_consumed(2), Some(5));
    w.on_data(8).unwrap();
    assert_eq!(w.buffered(), 8);
}

#[test]
fn a_sender_and_receiver_never_deadlock() {
    // The sender writes as much as it may; the reader consumes a byte at a time.
    let (mut tx, mut rx) = (SendCredit::new(16), RecvWindow::new(16));
    let mut sent = 0usize;
    let mut read = 0usize;
    while read < 1000 {
        let n = tx.available().min(7) as usize;
        if n > 0 {
            tx.consume(n).unwrap();
            rx.on_data(n).unwrap();
            sent += n;
        }
        assert!(
            rx.buffered() > 0,
            "blocked with nothing to read after {sent}"
        );
        read += 1;
        if let Some(c) = rx.on_consumed(1) {
            tx.grant(c).unwrap();
        }
    }
}

#[test]
fn relay_only_addresses_have_port_zero() {
    assert!(is_relay_only_address("203.0.113.7:0"));
    assert!(is_relay_only_address("[2001:db8::1]:0"));
    assert!(!is_relay_only_address("203.0.113.7:4000"));
    assert!(!is_relay_only_address("203.0.113.7:10"));
}

#[test]
fn an_unknown_close_code_re_encodes_as_protocol() {
    // fuzz/relay_frame's first finding: the frame parses, and its encoding differs from the
    // input only in the close code (185 → 7).
    let input = [0x04, 0x01, 0x0a, 0x6e, 0x32, 0xb9];
    let frame = RelayFrame::parse(&input).unwrap();
    assert_eq!(frame.to_vec(), [0x04, 0x01, 0x0a, 0x6e, 0x32, 7]);
    assert_eq!(RelayFrame::parse(&frame.to_vec()), Ok(frame));
}
