//! Writing frames: each [`Frame`] in the original's field order, and a `message` line
//! written straight from its parts without building the frame.

use serde::Serialize;
use serde_json::Value;

use super::Frame;

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
    /// The frame as one line, `\n` included, fields in the original's order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// A first capacity, not a bound: the fields around a `message`'s `data` take about 96
    /// bytes, and the other frames fit in 128 (a 2.1 `handshake_ack` outgrows it, once a session).
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
            } => WireFrame::Handshake {
                key,
                from,
                identity: identity.as_deref(),
            },
            Frame::HandshakeAck {
                key,
                identity,
                id,
                sig,
            } => WireFrame::HandshakeAck {
                key,
                identity: identity.as_deref(),
                id: id.as_deref(),
                sig: sig.as_deref(),
            },
            Frame::Auth { sig } => WireFrame::Auth { sig },
            Frame::Message {
                message_type,
                data,
                correlation_id,
            } => WireFrame::Message {
                message_type,
                data,
                correlation_id: correlation_id.as_ref(),
            },
            Frame::Ack { correlation_id } => WireFrame::Ack {
                correlation_id: correlation_id.as_ref(),
            },
            Frame::Ping => WireFrame::Ping,
            Frame::Pong => WireFrame::Pong,
            Frame::Error(e) => {
                let _ = serde_json::to_writer(&mut *out, &WireError { error: e });
                out.push(b'\n');
                return;
            }
            Frame::Unknown(t) => WireFrame::Unknown { kind: t },
        };
        // Serializing these borrowed string/Value fields cannot fail.
        let _ = serde_json::to_writer(&mut *out, &wire);
        out.push(b'\n');
    }
}

#[derive(Serialize)]
struct WireError<'a> {
    error: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum WireFrame<'a> {
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
