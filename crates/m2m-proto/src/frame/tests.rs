//! Golden lines, and the fast and borrowed parse paths checked against serde.

use super::parse::{correlation, parse_message_fast, text_lenient, RawField, RawFrame};
use super::*;

#[test]
fn golden_lines() {
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame::Handshake {
                key: "K".into(),
                from: "F".into(),
                identity: None,
            },
            r#"{"type":"handshake","key":"K","from":"F"}"#,
        ),
        (
            Frame::HandshakeAck {
                key: "K".into(),
                identity: None,
                id: None,
                sig: None,
            },
            r#"{"type":"handshake_ack","key":"K"}"#,
        ),
        (
            Frame::Message {
                message_type: "chat".into(),
                data: "D".into(),
                correlation_id: Some(Value::String("c1".into())),
            },
            r#"{"type":"message","messageType":"chat","data":"D","correlationId":"c1"}"#,
        ),
        (
            Frame::Ack {
                correlation_id: Some(Value::String("c1".into())),
            },
            r#"{"type":"ack","correlationId":"c1"}"#,
        ),
        (
            Frame::Ack {
                correlation_id: None,
            },
            r#"{"type":"ack"}"#,
        ),
        (Frame::Ping, r#"{"type":"ping"}"#),
        (Frame::Pong, r#"{"type":"pong"}"#),
        (
            Frame::error(errors::INVALID_MESSAGE),
            r#"{"error":"invalid_message"}"#,
        ),
    ];
    for (frame, line) in cases {
        let mut expected = line.as_bytes().to_vec();
        expected.push(b'\n');
        assert_eq!(frame.encode(), expected, "{line}");
        assert_eq!(Frame::parse(line.as_bytes()).unwrap(), frame, "{line}");
    }
}

#[test]
fn direct_message_encoding_is_the_frame_encoding() {
    for (kind, cid) in [
        ("chat", Some("c1")),
        ("t\"y\\pe\u{1}é", Some("c\"\n\u{7f}ü")),
        ("", None),
        ("x", Some("")),
    ] {
        let data = "QUJD+/==";
        let frame = Frame::Message {
            message_type: kind.into(),
            data: data.into(),
            correlation_id: cid.map(|c| Value::String(c.into())),
        };
        let mut out = b"previous".to_vec();
        encode_message_with(&mut out, kind, cid, |o| {
            o.extend_from_slice(data.as_bytes())
        });
        assert_eq!(&out[8..], &frame.encode()[..]);
    }
}

#[test]
fn borrowed_parse_borrows_the_envelope_and_agrees_with_parse() {
    let line = br#"{"type":"message","messageType":"m","data":"QUJD","correlationId":"c"}"#;
    match Frame::parse_borrowed(line).unwrap() {
        ParsedFrame::Message { data, .. } => assert!(matches!(data, Cow::Borrowed("QUJD"))),
        other => panic!("{other:?}"),
    }
    let lines: [&[u8]; 16] = [
        line,
        br#"{"type":"message","messageType":"m","data":"QU\/D\u0041"}"#,
        br#"{"type":"message","messageType":7,"data":"x","correlationId":{"a":[1]}}"#,
        br#"{"type":"message","messageType":null,"data":"x","correlationId":null}"#,
        br#"{"type":"message","data":5}"#,
        br#"{"type":"message","data":null}"#,
        br#"{"type":"message","data":"a","data":"b"}"#,
        br#"{"type":["message"],"data":"a"}"#,
        br#"{"type":null,"error":{"e":1}}"#,
        br#"{"error":"decryption_failed","type":null}"#,
        br#"{"type":"handshake","key":"K","from":12.5,"identity":true}"#,
        br#"{"type":"ack","correlationId":1e3}"#,
        br#"{"type":"ack","correlationId":"\ud83d\ude00"}"#,
        br#"{"type":"ack","correlationId":"\ud83d"}"#,
        br#"  {"type":"pong"} "#,
        br#"{"type":"ping"} x"#,
    ];
    for line in lines {
        let borrowed = Frame::parse_borrowed(line).map(ParsedFrame::into_owned);
        assert_eq!(
            borrowed,
            Frame::parse(line),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(
        Frame::parse(lines[1]).unwrap(),
        Frame::Message {
            message_type: "m".into(),
            data: "QU/DA".into(),
            correlation_id: None
        }
    );
    assert_eq!(
        Frame::parse(lines[4]),
        Err(FrameError::BadField {
            kind: "message",
            field: "data"
        })
    );
    assert_eq!(Frame::parse(lines[6]), Err(FrameError::NotJson));
    assert_eq!(
        Frame::parse(lines[7]).unwrap(),
        Frame::Unknown(r#"["message"]"#.into())
    );
    assert_eq!(
        Frame::parse(lines[8]).unwrap(),
        Frame::Error(r#"{"e":1}"#.into())
    );
    assert_eq!(
        Frame::parse(lines[10]).unwrap(),
        Frame::Handshake {
            key: "K".into(),
            from: "12.5".into(),
            identity: None
        }
    );
    assert_eq!(
        Frame::parse(lines[11]).unwrap(),
        Frame::Ack {
            correlation_id: Some(serde_json::json!(1000.0))
        }
    );
    assert_eq!(Frame::parse(lines[15]), Err(FrameError::NotJson));
}

/// Lines the fast `message` reader takes, and near misses it must leave to serde: both
/// paths give the same frame or the same error.
#[test]
fn fast_message_path_agrees_with_serde() {
    let fast: [&[u8]; 5] = [
        br#"{"type":"message","messageType":"chat","data":"QUJD+/==","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"","data":""}"#,
        r#"{"type":"message","messageType":"é ü","data":"QUJD","correlationId":""}"#.as_bytes(),
        br#"{"type":"message","messageType":"t","data":"QQ","correlationId":"x y"}"#,
        br#"{"type":"message","messageType":"t","data":"=","correlationId":"c"}"#,
    ];
    let slow: [&[u8]; 19] = [
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":"c1"} "#,
        br#" {"type":"message","messageType":"chat","data":"QUJD","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":"QU\/D","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD\","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":" QUJD","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":"QU	JD","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":1}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":null}"#,
        br#"{"type":"message","messageType":"c"h","data":"QUJD","correlationId":"c1"}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":"c
"}"#,
        br#"{"type":"message","messageType":"c	h","data":"QUJD"}"#,
        br#"{"type":"message","messageType":5,"data":"QUJD"}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":"c1","x":1}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","data":"QUJD"}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD"}}"#,
        br#"{"type":"message","messageType":"chat","data":"QUJD""#,
        br#"{"type":"message","messageType":"chat","data":"QUJD","correlationId":"c1""#,
        r#"{"type":"message","messageType":"chat","data":"QUJDé","correlationId":"c"}"#.as_bytes(),
        br#"{"type": "message","messageType":"chat","data":"QUJD"}"#,
    ];
    for line in fast {
        assert!(
            parse_message_fast(line).is_some(),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let mut invalid_utf8 = fast[0].to_vec();
    invalid_utf8[33] = 0xff;
    let mut control = fast[0].to_vec();
    control[60] = 0x01;
    for line in slow
        .iter()
        .copied()
        .chain([&invalid_utf8[..], &control[..]])
    {
        assert!(
            parse_message_fast(line).is_none(),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    for line in fast
        .iter()
        .chain(slow.iter())
        .copied()
        .chain([&invalid_utf8[..], &control[..]])
    {
        let general = if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            Err(FrameError::NotJson)
        } else {
            serde_json::from_slice::<RawFrame<'_>>(line)
                .map(|_| ())
                .map_err(|_| FrameError::NotJson)
        };
        let parsed = Frame::parse(line);
        if general.is_err() {
            assert_eq!(
                parsed,
                Err(FrameError::NotJson),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        if let Some(fast) = parse_message_fast(line) {
            // The general path, with the fast one out of the way.
            let raw: RawFrame<'_> = serde_json::from_slice(line).unwrap();
            let (Some(RawField::Str(t)), Some(RawField::Str(d))) = (raw.kind, raw.data) else {
                panic!("not a message")
            };
            assert_eq!(t, "message");
            assert_eq!(
                fast,
                ParsedFrame::Message {
                    message_type: text_lenient(raw.message_type).unwrap_or_default(),
                    data: d,
                    correlation_id: correlation(raw.correlation_id),
                }
            );
        }
    }
    // A 64 KiB envelope, and one with a foreign character at every position class.
    let mut big = br#"{"type":"message","messageType":"m","data":""#.to_vec();
    let head = big.len();
    crate::crypto::b64_encode_append(&vec![7u8; 65_536], &mut big);
    big.extend_from_slice(br#"","correlationId":"c"}"#);
    assert!(parse_message_fast(&big).is_some());
    for at in [head, head + 31, head + 32, head + 50_000, head + 87_380] {
        for c in [b' ', b'\\', b'-', 0x80] {
            let mut bad = big.clone();
            bad[at] = c;
            assert!(parse_message_fast(&bad).is_none());
        }
    }
}

#[test]
fn lenient_parse() {
    assert_eq!(Frame::parse(b"hello"), Err(FrameError::NotJson));
    assert_eq!(Frame::parse(b"[1,2]"), Err(FrameError::NotJson));
    assert_eq!(
        Frame::parse(br#"{"type":"teleport","x":1}"#),
        Ok(Frame::Unknown("teleport".into()))
    );
    assert_eq!(
        Frame::parse(br#"{"type":"ping","extra":[1]}"#),
        Ok(Frame::Ping)
    );
    assert!(matches!(
        Frame::parse(br#"{"type":"handshake"}"#),
        Err(FrameError::BadField { .. })
    ));
}
