//! P2P frames (PROTOCOL.md A4): one JSON object per line.
//!
//! [`Frame::parse`] reads any line a peer may send: unknown fields are ignored, an unknown
//! `type` becomes [`Frame::Unknown`] (ignored by the session, so later extensions pass
//! through), `{"error":…}` becomes [`Frame::Error`]. [`Frame::encode`] writes the exact field
//! order of the original so captures compare byte for byte.

use std::borrow::Cow;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Wire error codes a responder sends.
pub mod errors {
    /// Not JSON, or a handshake whose key is not a valid X25519 SPKI (original).
    pub const INVALID_MESSAGE: &str = "invalid_message";
    /// The envelope did not open under the session key (original).
    pub const DECRYPTION_FAILED: &str = "decryption_failed";
    /// **Ours:** a message before any handshake.
    pub const HANDSHAKE_REQUIRED: &str = "handshake_required";
    /// **Ours:** a line over the maximum length; the connection is closed after it.
    pub const FRAME_TOO_LARGE: &str = "frame_too_large";
    /// **Ours (2.1):** the peer's signature or identity did not verify.
    pub const AUTHENTICATION_FAILED: &str = "authentication_failed";
    /// **Ours:** the responder accepts authenticated peers only.
    pub const AUTHENTICATION_REQUIRED: &str = "authentication_required";
    /// **Ours (2.1):** a counter nonce other than the next expected one.
    pub const REPLAY_DETECTED: &str = "replay_detected";
    /// **Ours:** a frame the session's state does not allow (a second handshake on a
    /// connection, an `auth` that no handshake asked for); the session stays as it was.
    pub const UNEXPECTED_FRAME: &str = "unexpected_frame";
    /// **Ours:** too many handshakes from the peer's address; the connection is closed.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// **Ours:** the agent's budget for inbound buffers is spent; the connection is closed.
    pub const OVERLOADED: &str = "overloaded";
}

/// One P2P frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// Initiator's opening: ephemeral key and declared id (+ 2.1 identity key).
    Handshake {
        /// Base64 SPKI X25519 key.
        key: String,
        /// The initiator's agent id as it declares it.
        from: String,
        /// 2.1: base64 Ed25519 identity key.
        identity: Option<String>,
    },
    /// Responder's answer (+ 2.1 identity and transcript signature).
    HandshakeAck {
        /// Base64 SPKI X25519 key.
        key: String,
        /// 2.1: base64 Ed25519 identity key.
        identity: Option<String>,
        /// 2.1: the responder's id.
        id: Option<String>,
        /// 2.1: base64 signature over the transcript.
        sig: Option<String>,
    },
    /// 2.1: the initiator's transcript signature.
    Auth {
        /// Base64 signature.
        sig: String,
    },
    /// An encrypted application message.
    Message {
        /// Application message type.
        message_type: String,
        /// The envelope.
        data: String,
        /// Echoed in the ack (a string in practice; kept as sent).
        correlation_id: Option<Value>,
    },
    /// Receipt of a message.
    Ack {
        /// The message's correlationId, if it had one.
        correlation_id: Option<Value>,
    },
    /// Liveness probe.
    Ping,
    /// Answer to ping.
    Pong,
    /// `{"error":"…"}`.
    Error(String),
    /// A frame with a type this implementation does not know; ignored.
    Unknown(String),
}

/// A field as sent: a string — borrowed from the line unless it has escapes — or any other
/// JSON value. Lets the 87 KB `data` of a 64 KiB message be read where it lies.
enum Field<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
            type Value = Field<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::from(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Field::Other(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Field::deserialize(d)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(Field::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(Field::Other)
            }
        }
        d.deserialize_any(FieldVisitor(std::marker::PhantomData))
    }
}

/// The flat shape every line is parsed into first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Field<'a>>,
    #[serde(default, borrow)]
    key: Option<Field<'a>>,
    #[serde(default, borrow)]
    from: Option<Field<'a>>,
    #[serde(default, borrow)]
    identity: Option<Field<'a>>,
    #[serde(default, borrow)]
    id: Option<Field<'a>>,
    #[serde(default, borrow)]
    sig: Option<Field<'a>>,
    #[serde(default, borrow)]
    message_type: Option<Field<'a>>,
    #[serde(default, borrow)]
    data: Option<Field<'a>>,
    #[serde(default, borrow)]
    correlation_id: Option<Field<'a>>,
    #[serde(default, borrow)]
    error: Option<Field<'a>>,
}

/// Why a line is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a JSON object.
    #[error("line is not a JSON object")]
    NotJson,
    /// A known type with a missing or mistyped field.
    #[error("`{kind}` frame without a valid `{field}`")]
    BadField {
        /// Frame type.
        kind: &'static str,
        /// Field name.
        field: &'static str,
    },
}

fn text(v: Option<Field<'_>>) -> Option<String> {
    match v {
        Some(Field::Str(s)) => Some(s.into_owned()),
        _ => None,
    }
}

/// An id or type the original would have turned into a string.
fn text_lenient(v: Option<Field<'_>>) -> Option<String> {
    match v {
        Some(Field::Str(s)) => Some(s.into_owned()),
        Some(Field::Other(Value::Null)) | None => None,
        Some(Field::Other(other)) => Some(other.to_string()),
    }
}

fn correlation(v: Option<Field<'_>>) -> Option<Value> {
    match v {
        None | Some(Field::Other(Value::Null)) => None,
        Some(Field::Str(s)) => Some(Value::String(s.into_owned())),
        Some(Field::Other(v)) => Some(v),
    }
}

/// A parsed line whose `message` envelope is still borrowed from the line (see
/// [`Frame::parse_borrowed`]).
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedFrame<'a> {
    /// A `message` frame.
    Message {
        /// Application message type.
        message_type: String,
        /// The envelope, borrowed unless the line escaped characters in it.
        data: Cow<'a, str>,
        /// The frame's correlationId.
        correlation_id: Option<Value>,
    },
    /// Any other frame.
    Other(Frame),
}

impl ParsedFrame<'_> {
    /// The owned frame.
    pub fn into_owned(self) -> Frame {
        match self {
            ParsedFrame::Message {
                message_type,
                data,
                correlation_id,
            } => Frame::Message {
                message_type,
                data: data.into_owned(),
                correlation_id,
            },
            ParsedFrame::Other(f) => f,
        }
    }
}

/// The `message` line exactly as our encoder and the original's `JSON.stringify` write it —
/// `{"type":"message","messageType":"…","data":"<base64>"[,"correlationId":"…"]}` — read
/// without serde: serde scans the 87 KB envelope of a 64 KiB message byte by byte for
/// escapes. `None` for anything else (other order or spacing, escapes, other types, any
/// character outside base64 in `data`), which then takes the general path; what this
/// accepts, the general path parses to the same frame (tests).
fn parse_message_fast(line: &[u8]) -> Option<ParsedFrame<'_>> {
    let rest = line.strip_prefix(br#"{"type":"message","messageType":"#)?;
    let (message_type, rest) = plain_json_string(rest)?;
    let rest = rest.strip_prefix(br#","data":""#)?;
    let end = memchr::memchr(b'"', rest)?;
    let (data, rest) = (&rest[..end], &rest[end + 1..]);
    if !is_base64_text(data) {
        return None;
    }
    let correlation_id = match rest {
        b"}" => None,
        _ => {
            let rest = rest.strip_prefix(br#","correlationId":"#)?;
            let (cid, rest) = plain_json_string(rest)?;
            if rest != b"}" {
                return None;
            }
            Some(Value::String(cid.to_owned()))
        }
    };
    // Base64 text is ASCII.
    let data = std::str::from_utf8(data).ok()?;
    Some(ParsedFrame::Message {
        message_type: message_type.to_owned(),
        data: Cow::Borrowed(data),
        correlation_id,
    })
}

/// A JSON string at the start of `text` that has no escapes and no control characters:
/// its contents and what follows it.
fn plain_json_string(text: &[u8]) -> Option<(&str, &[u8])> {
    let text = text.strip_prefix(b"\"")?;
    let end = memchr::memchr2(b'"', b'\\', text)?;
    if text[end] != b'"' || text[..end].iter().any(|&c| c < 0x20) {
        return None;
    }
    Some((std::str::from_utf8(&text[..end]).ok()?, &text[end + 1..]))
}

/// Only base64 characters (no JSON escaping, no control characters, ASCII). Written to
/// check 32 bytes at a time without branches.
fn is_base64_text(data: &[u8]) -> bool {
    let ok = |c: u8| {
        (c.wrapping_sub(b'A') < 26)
            | (c.wrapping_sub(b'a') < 26)
            | (c.wrapping_sub(b'0') < 10)
            | (c == b'+')
            | (c == b'/')
            | (c == b'=')
    };
    let mut chunks = data.chunks_exact(32);
    for chunk in &mut chunks {
        if !chunk.iter().fold(true, |all, &c| all & ok(c)) {
            return false;
        }
    }
    chunks.remainder().iter().all(|&c| ok(c))
}

/// Appends a `message` frame and its `\n` to `out`, writing the envelope with `data`, which
/// must append text that needs no JSON escaping (base64 does not). The same bytes as
/// [`Frame::encode_into`] of the equivalent [`Frame::Message`] (with a string
/// correlationId), without building it.
pub fn encode_message_with(
    out: &mut Vec<u8>,
    message_type: &str,
    correlation_id: Option<&str>,
    data: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(br#"{"type":"message","messageType":"#);
    // Serializing a string or a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, message_type);
    out.extend_from_slice(br#","data":""#);
    data(out);
    out.push(b'"');
    if let Some(c) = correlation_id {
        out.extend_from_slice(br#","correlationId":"#);
        let _ = serde_json::to_writer(&mut *out, c);
    }
    out.extend_from_slice(b"}\n");
}

impl Frame {
    /// Parses one line (without its `\n`).
    pub fn parse(line: &[u8]) -> Result<Frame, FrameError> {
        Self::parse_borrowed(line).map(ParsedFrame::into_owned)
    }

    /// Parses one line, leaving a `message` envelope in the line: the same rules as
    /// [`Frame::parse`], without copying the largest field.
    pub fn parse_borrowed(line: &[u8]) -> Result<ParsedFrame<'_>, FrameError> {
        if let Some(message) = parse_message_fast(line) {
            return Ok(message);
        }
        // serde would also read a JSON array into the struct, field by field; a frame is
        // an object.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(FrameError::NotJson);
        }
        let raw: RawFrame<'_> = serde_json::from_slice(line).map_err(|_| FrameError::NotJson)?;
        let kind = match raw.kind {
            Some(Field::Str(s)) => s,
            Some(Field::Other(other)) => {
                return Ok(ParsedFrame::Other(Frame::Unknown(other.to_string())))
            }
            None => {
                return Ok(ParsedFrame::Other(match raw.error {
                    Some(Field::Str(e)) => Frame::Error(e.into_owned()),
                    Some(Field::Other(other)) => Frame::Error(other.to_string()),
                    None => Frame::Unknown(String::new()),
                }))
            }
        };
        let bad = |kind, field| FrameError::BadField { kind, field };
        Ok(ParsedFrame::Other(match kind.as_ref() {
            "handshake" => Frame::Handshake {
                key: text(raw.key).ok_or(bad("handshake", "key"))?,
                from: text_lenient(raw.from).unwrap_or_default(),
                identity: text(raw.identity),
            },
            "handshake_ack" => Frame::HandshakeAck {
                key: text(raw.key).ok_or(bad("handshake_ack", "key"))?,
                identity: text(raw.identity),
                id: text(raw.id),
                sig: text(raw.sig),
            },
            "auth" => Frame::Auth {
                sig: text(raw.sig).ok_or(bad("auth", "sig"))?,
            },
            "message" => {
                let data = match raw.data {
                    Some(Field::Str(d)) => d,
                    _ => return Err(bad("message", "data")),
                };
                return Ok(ParsedFrame::Message {
                    message_type: text_lenient(raw.message_type).unwrap_or_default(),
                    data,
                    correlation_id: correlation(raw.correlation_id),
                });
            }
            "ack" => Frame::Ack {
                correlation_id: correlation(raw.correlation_id),
            },
            "ping" => Frame::Ping,
            "pong" => Frame::Pong,
            _ => Frame::Unknown(kind.into_owned()),
        }))
    }

    /// The frame as one line, `\n` included, fields in the original's order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            Frame::Message { data, .. } => data.len() + 96,
            _ => 128,
        }
    }

    /// Appends the frame and its `\n` to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let wire = match self {
            Frame::Handshake {
                key,
                from,
                identity,
            } => Wire::Handshake {
                key,
                from,
                identity: identity.as_deref(),
            },
            Frame::HandshakeAck {
                key,
                identity,
                id,
                sig,
            } => Wire::HandshakeAck {
                key,
                identity: identity.as_deref(),
                id: id.as_deref(),
                sig: sig.as_deref(),
            },
            Frame::Auth { sig } => Wire::Auth { sig },
            Frame::Message {
                message_type,
                data,
                correlation_id,
            } => Wire::Message {
                message_type,
                data,
                correlation_id: correlation_id.as_ref(),
            },
            Frame::Ack { correlation_id } => Wire::Ack {
                correlation_id: correlation_id.as_ref(),
            },
            Frame::Ping => Wire::Ping,
            Frame::Pong => Wire::Pong,
            Frame::Error(e) => {
                let _ = serde_json::to_writer(&mut *out, &ErrorWire { error: e });
                out.push(b'\n');
                return;
            }
            Frame::Unknown(t) => Wire::Unknown { kind: t },
        };
        // Serializing these borrowed string/Value fields cannot fail.
        let _ = serde_json::to_writer(&mut *out, &wire);
        out.push(b'\n');
    }

    /// An error frame with `code`.
    pub fn error(code: &str) -> Frame {
        Frame::Error(code.to_owned())
    }
}

#[derive(Serialize)]
struct ErrorWire<'a> {
    error: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum Wire<'a> {
    #[serde(rename = "handshake")]
    Handshake {
        key: &'a str,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a str>,
    },
    #[serde(rename = "handshake_ack")]
    HandshakeAck {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sig: Option<&'a str>,
    },
    #[serde(rename = "auth")]
    Auth { sig: &'a str },
    #[serde(rename = "message")]
    Message {
        #[serde(rename = "messageType")]
        message_type: &'a str,
        data: &'a str,
        #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
        correlation_id: Option<&'a Value>,
    },
    #[serde(rename = "ack")]
    Ack {
        #[serde(rename = "correlationId", skip_serializing_if = "Option::is_none")]
        correlation_id: Option<&'a Value>,
    },
    #[serde(rename = "ping")]
    Ping,
    #[serde(rename = "pong")]
    Pong,
    #[serde(rename = "unknown")]
    Unknown {
        #[serde(rename = "kind")]
        kind: &'a str,
    },
}

#[cfg(test)]
mod tests {
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
            r#"{"type":"message","messageType":"chat","data":"QUJDé","correlationId":"c"}"#
                .as_bytes(),
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
                let (Some(Field::Str(t)), Some(Field::Str(d))) = (raw.kind, raw.data) else {
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
}
