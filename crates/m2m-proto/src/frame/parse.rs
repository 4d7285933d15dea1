//! Reading a line into a [`Frame`]: a fast path for the `message` line as our encoder and the
//! original write it, and serde for everything else, both leaving the envelope borrowed from
//! the line where they can.

use std::borrow::Cow;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

use super::{Frame, FrameError, ParsedFrame};

/// A field as sent: a string — borrowed from the line unless it has escapes — or any other
/// JSON value. Lets the 87 KB `data` of a 64 KiB message be read where it lies.
pub(super) enum RawField<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl<'de: 'a, 'a> Deserialize<'de> for RawField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RawFieldVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for RawFieldVisitor<'a> {
            type Value = RawField<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(RawField::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawField::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(RawField::Str(Cow::Owned(v)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::from(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawField::Other(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                RawField::deserialize(d)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(RawField::Other)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawField::Other)
            }
        }
        d.deserialize_any(RawFieldVisitor(std::marker::PhantomData))
    }
}

/// The flat shape every line is parsed into first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    pub(super) kind: Option<RawField<'a>>,
    #[serde(default, borrow)]
    key: Option<RawField<'a>>,
    #[serde(default, borrow)]
    from: Option<RawField<'a>>,
    #[serde(default, borrow)]
    identity: Option<RawField<'a>>,
    #[serde(default, borrow)]
    id: Option<RawField<'a>>,
    #[serde(default, borrow)]
    sig: Option<RawField<'a>>,
    #[serde(default, borrow)]
    pub(super) message_type: Option<RawField<'a>>,
    #[serde(default, borrow)]
    pub(super) data: Option<RawField<'a>>,
    #[serde(default, borrow)]
    pub(super) correlation_id: Option<RawField<'a>>,
    #[serde(default, borrow)]
    error: Option<RawField<'a>>,
}

fn text(v: Option<RawField<'_>>) -> Option<String> {
    match v {
        Some(RawField::Str(s)) => Some(s.into_owned()),
        _ => None,
    }
}

/// An id or type the original would have turned into a string.
pub(super) fn text_lenient(v: Option<RawField<'_>>) -> Option<String> {
    match v {
        Some(RawField::Str(s)) => Some(s.into_owned()),
        Some(RawField::Other(Value::Null)) | None => None,
        Some(RawField::Other(other)) => Some(other.to_string()),
    }
}

pub(super) fn correlation(v: Option<RawField<'_>>) -> Option<Value> {
    match v {
        None | Some(RawField::Other(Value::Null)) => None,
        Some(RawField::Str(s)) => Some(Value::String(s.into_owned())),
        Some(RawField::Other(v)) => Some(v),
    }
}

/// The `message` line exactly as our encoder and the original's `JSON.stringify` write it —
/// `{"type":"message","messageType":"…","data":"<base64>"[,"correlationId":"…"]}` — read
/// without serde: serde scans the 87 KB envelope of a 64 KiB message byte by byte for
/// escapes. `None` for anything else (other order or spacing, escapes, other types, any
/// character outside base64 in `data`), which then takes the general path; what this
/// accepts, the general path parses to the same frame (tests).
pub(super) fn parse_message_fast(line: &[u8]) -> Option<ParsedFrame<'_>> {
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
            Some(RawField::Str(s)) => s,
            Some(RawField::Other(other)) => {
                return Ok(ParsedFrame::Other(Frame::Unknown(other.to_string())))
            }
            None => {
                return Ok(ParsedFrame::Other(match raw.error {
                    Some(RawField::Str(e)) => Frame::Error(e.into_owned()),
                    Some(RawField::Other(other)) => Frame::Error(other.to_string()),
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
                    Some(RawField::Str(d)) => d,
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
}
