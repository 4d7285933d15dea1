//! P2P frames (PROTOCOL.md A4): one JSON object per line.
//!
//! [`Frame::parse`] reads any line a peer may send: unknown fields are ignored, an unknown
//! `type` becomes [`Frame::Unknown`] (ignored by the session, so later extensions pass
//! through), `{"error":…}` becomes [`Frame::Error`]. [`Frame::encode`] writes the exact field
//! order of the original so captures compare byte for byte.

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

/// The flat shape every line is parsed into first.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFrame {
    #[serde(rename = "type", default)]
    kind: Option<Value>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    identity: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    sig: Option<Value>,
    #[serde(default)]
    message_type: Option<Value>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    correlation_id: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
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

fn text(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    }
}

/// An id or type the original would have turned into a string.
fn text_lenient(v: Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

fn correlation(v: Option<Value>) -> Option<Value> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

impl Frame {
    /// Parses one line (without its `\n`).
    pub fn parse(line: &[u8]) -> Result<Frame, FrameError> {
        // serde would also read a JSON array into the struct, field by field; a frame is
        // an object.
        if line.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(FrameError::NotJson);
        }
        let raw: RawFrame = serde_json::from_slice(line).map_err(|_| FrameError::NotJson)?;
        let kind = match raw.kind {
            Some(Value::String(s)) => s,
            Some(other) => return Ok(Frame::Unknown(other.to_string())),
            None => {
                return Ok(match raw.error {
                    Some(Value::String(e)) => Frame::Error(e),
                    Some(other) => Frame::Error(other.to_string()),
                    None => Frame::Unknown(String::new()),
                })
            }
        };
        let bad = |kind, field| FrameError::BadField { kind, field };
        Ok(match kind.as_str() {
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
            "message" => Frame::Message {
                message_type: text_lenient(raw.message_type).unwrap_or_default(),
                data: text(raw.data).ok_or(bad("message", "data"))?,
                correlation_id: correlation(raw.correlation_id),
            },
            "ack" => Frame::Ack {
                correlation_id: correlation(raw.correlation_id),
            },
            "ping" => Frame::Ping,
            "pong" => Frame::Pong,
            _ => Frame::Unknown(kind),
        })
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
