//! Relay frames: one binary WebSocket message each (docs/RELAY.md section 2).

use super::{kind, RawAgentId};

/// Most bytes one DATA frame carries: large enough that bulk transfer costs few frames,
/// small enough that one frame never holds a WebSocket (and the streams multiplexed on it)
/// for long.
pub const MAX_DATA: usize = 64 * 1024;
/// Most bytes of UTF-8 detail a CLOSE carries.
pub const MAX_CLOSE_DETAIL: usize = 256;

/// Bytes before the payload of a DATA frame: kind and stream id.
pub const DATA_HEADER: usize = 5;

/// One relay frame, borrowing its payload from the message it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFrame<'a> {
    /// Open `stream`; `peer` is the destination (client→hub) or the verified source
    /// (hub→client).
    Open {
        /// The opener's id for the stream.
        stream: u32,
        /// The other end's agent id.
        peer: RawAgentId,
    },
    /// Stream bytes, 1 ..= [`MAX_DATA`] of them.
    Data {
        /// The stream.
        stream: u32,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The receiver consumed `bytes`; the sender may send that many more.
    Credit {
        /// The stream.
        stream: u32,
        /// At least 1.
        bytes: u32,
    },
    /// The stream is gone, both directions.
    Close {
        /// The stream.
        stream: u32,
        /// Why.
        reason: CloseReason,
        /// Up to [`MAX_CLOSE_DETAIL`] bytes of UTF-8 for people.
        detail: &'a str,
    },
}

/// Why a binary message is not a relay frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayFrameError {
    /// Empty message, or an unknown kind byte.
    #[error("unknown relay frame kind")]
    UnknownKind,
    /// The body is shorter or longer than its kind allows.
    #[error("relay frame of the wrong length")]
    BadLength,
    /// Stream id 0.
    #[error("relay stream id 0")]
    ZeroStream,
    /// CREDIT of 0 bytes.
    #[error("relay credit of 0 bytes")]
    ZeroCredit,
    /// CLOSE detail that is not UTF-8.
    #[error("relay close detail is not UTF-8")]
    BadDetail,
}

/// Why a stream was closed (the CLOSE frame's reason byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The end closed the stream.
    Normal,
    /// No WebSocket is attached for that agent id at this hub.
    Unreachable,
    /// The destination refused the stream (no free inbound slot, …).
    Refused,
    /// The other end's WebSocket closed or was replaced.
    Gone,
    /// The hub's relay memory budget is spent.
    Budget,
    /// Too many streams on this WebSocket.
    Limit,
    /// No byte in either direction for too long.
    Idle,
    /// A frame broke the rules (DATA beyond credit, bad stream id, …); also any unknown code.
    Protocol,
}

impl CloseReason {
    /// The reason byte.
    pub fn code(self) -> u8 {
        match self {
            CloseReason::Normal => 0,
            CloseReason::Unreachable => 1,
            CloseReason::Refused => 2,
            CloseReason::Gone => 3,
            CloseReason::Budget => 4,
            CloseReason::Limit => 5,
            CloseReason::Idle => 6,
            CloseReason::Protocol => 7,
        }
    }

    /// The reason of a byte; unknown codes are [`CloseReason::Protocol`].
    pub fn from_code(code: u8) -> Self {
        match code {
            0 => CloseReason::Normal,
            1 => CloseReason::Unreachable,
            2 => CloseReason::Refused,
            3 => CloseReason::Gone,
            4 => CloseReason::Budget,
            5 => CloseReason::Limit,
            6 => CloseReason::Idle,
            _ => CloseReason::Protocol,
        }
    }

    /// Its name in docs/RELAY.md (`normal`, `unreachable`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Normal => "normal",
            CloseReason::Unreachable => "unreachable",
            CloseReason::Refused => "refused",
            CloseReason::Gone => "gone",
            CloseReason::Budget => "budget",
            CloseReason::Limit => "limit",
            CloseReason::Idle => "idle",
            CloseReason::Protocol => "protocol",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

impl<'a> RelayFrame<'a> {
    /// Parses one binary message.
    pub fn parse(message: &'a [u8]) -> Result<Self, RelayFrameError> {
        let (&kind, _) = message.split_first().ok_or(RelayFrameError::UnknownKind)?;
        let stream = match kind {
            kind::OPEN | kind::DATA | kind::CREDIT | kind::CLOSE => {
                u32_at(message, 1).ok_or(RelayFrameError::BadLength)?
            }
            _ => return Err(RelayFrameError::UnknownKind),
        };
        if stream == 0 {
            return Err(RelayFrameError::ZeroStream);
        }
        let body = &message[5..];
        match kind {
            kind::OPEN => {
                let peer: RawAgentId = body.try_into().map_err(|_| RelayFrameError::BadLength)?;
                Ok(RelayFrame::Open { stream, peer })
            }
            kind::DATA => {
                if body.is_empty() || body.len() > MAX_DATA {
                    return Err(RelayFrameError::BadLength);
                }
                Ok(RelayFrame::Data {
                    stream,
                    bytes: body,
                })
            }
            kind::CREDIT => {
                let bytes = match body.len() {
                    4 => u32_at(body, 0).ok_or(RelayFrameError::BadLength)?,
                    _ => return Err(RelayFrameError::BadLength),
                };
                if bytes == 0 {
                    return Err(RelayFrameError::ZeroCredit);
                }
                Ok(RelayFrame::Credit { stream, bytes })
            }
            _ => {
                let (&code, detail) = body.split_first().ok_or(RelayFrameError::BadLength)?;
                if detail.len() > MAX_CLOSE_DETAIL {
                    return Err(RelayFrameError::BadLength);
                }
                let detail = std::str::from_utf8(detail).map_err(|_| RelayFrameError::BadDetail)?;
                Ok(RelayFrame::Close {
                    stream,
                    reason: CloseReason::from_code(code),
                    detail,
                })
            }
        }
    }

    /// The stream the frame is about.
    pub fn stream(&self) -> u32 {
        match *self {
            RelayFrame::Open { stream, .. }
            | RelayFrame::Data { stream, .. }
            | RelayFrame::Credit { stream, .. }
            | RelayFrame::Close { stream, .. } => stream,
        }
    }

    /// Appends the frame's bytes to `out`. A CLOSE detail longer than [`MAX_CLOSE_DETAIL`]
    /// is cut at a character boundary; DATA must hold 1 ..= [`MAX_DATA`] bytes (the caller
    /// splits larger writes), or the frame would not parse at the other end.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match *self {
            RelayFrame::Open { stream, peer } => {
                out.reserve(21);
                out.push(kind::OPEN);
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&peer);
            }
            RelayFrame::Data { stream, bytes } => {
                debug_assert!(!bytes.is_empty() && bytes.len() <= MAX_DATA);
                out.reserve(DATA_HEADER + bytes.len());
                out.extend_from_slice(&data_header(stream));
                out.extend_from_slice(bytes);
            }
            RelayFrame::Credit { stream, bytes } => {
                out.push(kind::CREDIT);
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&bytes.to_be_bytes());
            }
            RelayFrame::Close {
                stream,
                reason,
                detail,
            } => {
                let mut end = detail.len().min(MAX_CLOSE_DETAIL);
                while !detail.is_char_boundary(end) {
                    end -= 1;
                }
                out.push(kind::CLOSE);
                out.extend_from_slice(&stream.to_be_bytes());
                out.push(reason.code());
                out.extend_from_slice(&detail.as_bytes()[..end]);
            }
        }
    }

    /// The frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// The 5 bytes before a DATA frame's payload, for writers that put the payload right after
/// it in their own buffer (no copy through [`RelayFrame`]).
pub fn data_header(stream: u32) -> [u8; DATA_HEADER] {
    let s = stream.to_be_bytes();
    [kind::DATA, s[0], s[1], s[2], s[3]]
}

/// Rewrites the stream id of an encoded frame in place (the hub forwards a frame with the
/// other end's id for the stream without re-encoding it). The frame must have parsed.
pub fn set_stream(frame: &mut [u8], stream: u32) {
    if frame.len() >= 5 {
        frame[1..5].copy_from_slice(&stream.to_be_bytes());
    }
}
