//! The reply side of a WebSocket: an [`Outbox`] of replies (unmasked text frames) and relay
//! frames (unmasked binary frames) written straight to the socket, in batches, within the
//! write timeout. tungstenite only reads
//! (and answers pings and closes): writing through it would copy every reply into a
//! per-connection buffer that keeps the capacity of the largest reply ever sent.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt};
use m2m_proto::hub::errors;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;

use crate::budget::Charge;
use crate::defaults::{self, BATCH_BYTES, BATCH_REPLIES};
use crate::metrics::Refusal;
use crate::reply::error_text;
use crate::state::HubState;

/// Replies waiting to be written, as unmasked text frames (RFC 6455 5.2): a 2–10 byte
/// header each and the reply itself, written with one vectored write. Nothing is copied,
/// and nothing outlives the write but a one-slot list.
///
/// Reply bytes beyond [`defaults::FREE_REPLY_BYTES`] are charged to the memory budget until
/// written; a reply the budget cannot hold is replaced by an `overloaded` error.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    frames: Vec<(FrameHeader, Payload)>,
    bytes: usize,
    /// Of `bytes`, those of replies (relay frames are charged to the relay budget instead).
    text_bytes: usize,
    charge: Option<Charge>,
}

impl Outbox {
    /// An outbox whose replies are charged to `charge`'s budget.
    pub(crate) fn charged(charge: Charge) -> Outbox {
        Outbox {
            charge: Some(charge),
            ..Outbox::default()
        }
    }

    /// Queues the reply to `request`, or, when the budget cannot hold it, an `overloaded`
    /// error with the request's correlationId.
    pub(crate) fn offer(&mut self, reply: String, request: &str, state: &HubState) {
        let total = self.text_bytes + reply.len();
        let fits = match &mut self.charge {
            Some(charge) if total > defaults::FREE_REPLY_BYTES => {
                charge.resize(total - defaults::FREE_REPLY_BYTES)
            }
            _ => true,
        };
        if fits {
            self.push(reply);
        } else {
            drop(reply);
            state.metrics.refused(Refusal::MemoryReply);
            self.push(error_text(errors::OVERLOADED, correlation_id(request)));
        }
    }

    /// Queues a pushed event (mail) when the memory budget can hold it; `false` (and
    /// nothing queued) when it cannot.
    pub(crate) fn try_push(&mut self, text: String) -> bool {
        let total = self.text_bytes + text.len();
        let fits = match &mut self.charge {
            Some(charge) if total > defaults::FREE_REPLY_BYTES => {
                charge.resize(total - defaults::FREE_REPLY_BYTES)
            }
            _ => true,
        };
        if fits {
            self.push(text);
        }
        fits
    }

    pub(crate) fn push(&mut self, text: String) {
        self.bytes += text.len();
        self.text_bytes += text.len();
        self.frames
            .push((FrameHeader::text(text.len()), Payload::Text(text)));
    }

    /// Queues one binary frame: `head` (at most [`MAX_HEAD`] bytes: a relay frame's kind,
    /// stream id and fixed fields) followed by `body`, which is written in place (a
    /// forwarded DATA payload is not copied).
    pub(crate) fn push_binary(&mut self, head: &[u8], body: Bytes) {
        debug_assert!(head.len() <= MAX_HEAD);
        let len = head.len().min(MAX_HEAD);
        let mut bytes = [0u8; MAX_HEAD];
        bytes[..len].copy_from_slice(&head[..len]);
        let total = len + body.len();
        self.bytes += total;
        self.frames.push((
            FrameHeader::binary(total),
            Payload::Binary {
                head: bytes,
                len: len as u8,
                body,
            },
        ));
    }

    pub(crate) fn is_full(&self) -> bool {
        self.frames.len() >= BATCH_REPLIES || self.bytes >= BATCH_BYTES
    }

    /// Writes and flushes the frames within `timeout` (tried once at once, so that a
    /// write the socket takes right away sets no timer), and empties the box. With
    /// `after_tungstenite`, whatever tungstenite still holds (a pong) goes first, so that
    /// frames never interleave.
    pub(crate) async fn write<S>(
        &mut self,
        socket: &mut WebSocketStream<S>,
        timeout: Duration,
        after_tungstenite: bool,
    ) -> Result<(), WriteFailed>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = &self.frames;
        let result = within(timeout, async move {
            if after_tungstenite {
                socket.flush().await.map_err(|_| ())?;
            }
            write_frames(socket.get_mut(), frames).await.map_err(|_| ())
        })
        .await;
        if self.frames.capacity() > 4 {
            self.frames = Vec::new();
        } else {
            self.frames.clear();
        }
        self.bytes = 0;
        self.text_bytes = 0;
        if let Some(charge) = &mut self.charge {
            charge.resize(0);
        }
        result
    }
}

/// Runs `write`, bounded by `timeout`; a write that completes on its first poll (the
/// usual case: the socket has room) does not touch the timer.
async fn within<F>(timeout: Duration, write: F) -> Result<(), WriteFailed>
where
    F: Future<Output = Result<(), ()>>,
{
    let mut write = pin!(write);
    match write.as_mut().now_or_never() {
        Some(result) => result.map_err(|()| WriteFailed::Error),
        None => match tokio::time::timeout(timeout, write).await {
            Ok(result) => result.map_err(|()| WriteFailed::Error),
            Err(_) => Err(WriteFailed::TimedOut),
        },
    }
}

/// Longest fixed part of a binary frame the outbox holds inline (an OPEN: kind, stream,
/// agent id).
pub(crate) const MAX_HEAD: usize = 21;

/// What follows a frame header.
#[derive(Debug)]
enum Payload {
    /// A reply.
    Text(String),
    /// A relay frame: its fixed part, then its payload.
    Binary {
        head: [u8; MAX_HEAD],
        len: u8,
        body: Bytes,
    },
}

/// Why a write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteFailed {
    /// The connection failed.
    Error,
    /// The client did not read fast enough (`write_timeout`).
    TimedOut,
}

/// The header of an unfragmented, unmasked text frame.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    bytes: [u8; 10],
    len: u8,
}

impl FrameHeader {
    fn text(payload: usize) -> FrameHeader {
        FrameHeader::new(0x81, payload) // FIN + text
    }

    fn binary(payload: usize) -> FrameHeader {
        FrameHeader::new(0x82, payload) // FIN + binary
    }

    fn new(first: u8, payload: usize) -> FrameHeader {
        let mut bytes = [0u8; 10];
        bytes[0] = first;
        let len = match payload {
            0..=125 => {
                bytes[1] = payload as u8;
                2
            }
            126..=0xffff => {
                bytes[1] = 126;
                bytes[2..4].copy_from_slice(&(payload as u16).to_be_bytes());
                4
            }
            _ => {
                bytes[1] = 127;
                bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
                10
            }
        };
        FrameHeader { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes every frame (vectored: headers and replies in place) and flushes.
async fn write_frames<W>(w: &mut W, frames: &[(FrameHeader, Payload)]) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(frames.len() * 3);
    for (header, payload) in frames {
        slices.push(IoSlice::new(header.as_bytes()));
        match payload {
            Payload::Text(text) => {
                if !text.is_empty() {
                    slices.push(IoSlice::new(text.as_bytes()));
                }
            }
            Payload::Binary { head, len, body } => {
                slices.push(IoSlice::new(&head[..usize::from(*len)]));
                if !body.is_empty() {
                    slices.push(IoSlice::new(body));
                }
            }
        }
    }
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    w.flush().await
}

/// The correlationId of a request, for an error that replaces its reply (rare path: the
/// request is parsed again).
fn correlation_id(request: &str) -> Option<serde_json::Value> {
    m2m_proto::hub::HubRequest::parse(request)
        .ok()
        .and_then(|r| r.correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tungstenite::protocol::Role;
    use tungstenite::Message;

    /// Frames the outbox writes read back, through tungstenite's client, as the same
    /// messages, whatever their size and around tungstenite's own pongs.
    #[tokio::test]
    async fn outbox_frames_read_back_as_the_replies() {
        let (server_io, client_io) = tokio::io::duplex(8 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let sizes = [0usize, 1, 125, 126, 127, 65535, 65536, 70_000];
        let replies: Vec<String> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut s = "é".repeat(n / 2);
                s.push_str(&"x".repeat(n % 2));
                s.push_str(&i.to_string());
                s
            })
            .collect();
        let reader = tokio::spawn(async move {
            client
                .send(Message::Ping(b"p".to_vec().into()))
                .await
                .unwrap();
            client.send(Message::Text("hello".into())).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 8 {
                match client.next().await.unwrap().unwrap() {
                    Message::Text(t) => got.push(t.as_str().to_owned()),
                    Message::Pong(p) => assert_eq!(&p[..], b"p"),
                    other => panic!("unexpected {other:?}"),
                }
            }
            got
        });
        // The ping is answered by tungstenite while reading, before the replies go out.
        match server.next().await.unwrap().unwrap() {
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(server.next().await, Some(Ok(Message::Text(_)))));
        let mut out = Outbox::default();
        for (i, r) in replies.iter().enumerate() {
            out.push(r.clone());
            if i % 3 == 2 {
                out.write(&mut server, Duration::from_secs(5), true)
                    .await
                    .unwrap();
            }
        }
        out.write(&mut server, Duration::from_secs(5), true)
            .await
            .unwrap();
        assert!(out.frames.is_empty() && out.frames.capacity() <= 4);
        assert_eq!(reader.await.unwrap(), replies);
    }

    /// Binary frames (a fixed head and a payload written in place) read back as binary
    /// messages, in order with the text replies around them.
    #[tokio::test]
    async fn binary_frames_read_back_between_the_replies() {
        let (server_io, client_io) = tokio::io::duplex(8 * 1024);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let big = Bytes::from(vec![7u8; 65_536]);
        let mut out = Outbox::default();
        out.push("first".into());
        out.push_binary(&[2, 0, 0, 0, 4], big.clone());
        out.push_binary(&[4, 0, 0, 0, 6, 3], Bytes::new());
        out.push("last".into());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 4 {
                got.push(client.next().await.unwrap().unwrap());
            }
            got
        });
        out.write(&mut server, Duration::from_secs(5), true)
            .await
            .unwrap();
        let mut expected_data = vec![2, 0, 0, 0, 4];
        expected_data.extend_from_slice(&big);
        assert_eq!(
            reader.await.unwrap(),
            vec![
                Message::Text("first".into()),
                Message::Binary(expected_data.into()),
                Message::Binary(vec![4, 0, 0, 0, 6, 3].into()),
                Message::Text("last".into()),
            ]
        );
        assert_eq!(FrameHeader::binary(5).as_bytes(), [0x82, 5]);
    }

    #[test]
    fn frame_headers_follow_rfc_6455() {
        assert_eq!(FrameHeader::text(0).as_bytes(), [0x81, 0]);
        assert_eq!(FrameHeader::text(125).as_bytes(), [0x81, 125]);
        assert_eq!(FrameHeader::text(126).as_bytes(), [0x81, 126, 0, 126]);
        assert_eq!(FrameHeader::text(16184).as_bytes(), [0x81, 126, 0x3f, 0x38]);
        assert_eq!(FrameHeader::text(65535).as_bytes(), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            FrameHeader::text(65536).as_bytes(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }
}
