//! A minimal WebSocket client for the load generator: the opening handshake, masked text
//! frames out, text frames in (continuations reassembled, pings answered, close reported).
//!
//! Why not `tokio-tungstenite` (what the SDK uses): the generator shares the two cores
//! with the hub it measures, and every microsecond it spends per request is taken from
//! the hub. A general client builds a `Message` per frame, draws a random mask, copies the
//! payload into its own buffers and hands the reply out as an owned allocation. Here a
//! request is masked straight into one write buffer (a batch of pipelined requests is one
//! `write`), and a reply is parsed in place in the read buffer and lent out as `&str`.
//!
//! The masks come from a per-connection xorshift: RFC 6455 asks for unpredictable masks
//! to protect intermediaries from cache poisoning by a hostile *script*; the bench talks
//! to a hub on loopback and sends its own fixed requests.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::defaults::{MAX_WS_HANDSHAKE as MAX_HANDSHAKE, MAX_WS_MESSAGE as MAX_MESSAGE};

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// One client connection.
pub(crate) struct RawWs {
    stream: TcpStream,
    /// Received bytes; `rbuf[start..end]` not yet parsed.
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    /// Frames queued by [`RawWs::feed`], written by [`RawWs::flush`].
    wbuf: Vec<u8>,
    /// A fragmented message being reassembled, and the last message returned when it was
    /// reassembled here rather than lent from `rbuf`.
    assembled: Vec<u8>,
    /// The message the last [`RawWs::recv`] returned.
    last: LastMessageAt,
    mask_state: u64,
}

/// Where the message [`RawWs::recv`] returns lives.
#[derive(Clone, Copy)]
enum LastMessageAt {
    Read(usize, usize),
    Assembled,
}

impl RawWs {
    /// The opening handshake on a connected stream, for `ws://host[:port]/path`.
    pub(crate) async fn handshake(
        mut stream: TcpStream,
        host: &str,
        path: &str,
        read_buffer: usize,
    ) -> anyhow::Result<RawWs> {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            ^ (stream
                .local_addr()
                .map(|a| u64::from(a.port()))
                .unwrap_or(0)
                << 32);
        let mut mask_state = seed | 1;
        let key: [u8; 16] = std::array::from_fn(|_| next_u64(&mut mask_state) as u8);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            base64_std(&key)
        );
        stream.write_all(request.as_bytes()).await?;
        let mut rbuf = vec![0u8; read_buffer.max(1024)];
        let mut end = 0;
        let head_len = loop {
            if let Some(pos) = find(&rbuf[..end], b"\r\n\r\n") {
                break pos + 4;
            }
            if end == rbuf.len() {
                if rbuf.len() >= MAX_HANDSHAKE {
                    bail!("the hub's handshake response is larger than {MAX_HANDSHAKE} bytes");
                }
                rbuf.resize(rbuf.len() * 2, 0);
            }
            let n = stream.read(&mut rbuf[end..]).await?;
            if n == 0 {
                bail!("the hub closed the connection during the WebSocket handshake");
            }
            end += n;
        };
        let head = String::from_utf8_lossy(&rbuf[..head_len]);
        let status = head.lines().next().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 101") {
            bail!("the hub refused the WebSocket upgrade: {status}");
        }
        Ok(RawWs {
            stream,
            rbuf,
            start: head_len,
            end,
            wbuf: Vec::with_capacity(1024),
            assembled: Vec::new(),
            last: LastMessageAt::Read(0, 0),
            mask_state,
        })
    }

    /// Queues a masked text frame.
    pub(crate) fn feed(&mut self, text: &str) {
        self.queue(OP_TEXT, text.as_bytes());
    }

    /// Queues a masked binary frame whose payload is `parts` one after the other (a relay
    /// frame's header and its bytes, without joining them first).
    pub(crate) fn feed_binary(&mut self, parts: &[&[u8]]) {
        self.queue_parts(OP_BINARY, parts);
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes every queued frame.
    pub(crate) async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream
                .write_all(&self.wbuf)
                .await
                .context("writing to the hub")?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// [`RawWs::feed`] then [`RawWs::flush`].
    pub(crate) async fn send(&mut self, text: &str) -> anyhow::Result<()> {
        self.feed(text);
        self.flush().await
    }

    /// Sends a close frame (status 1000) and stops writing; errors are ignored.
    pub(crate) async fn close(&mut self) {
        self.queue(OP_CLOSE, &1000u16.to_be_bytes());
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    /// The next text (or binary, read as UTF-8) message; answers pings on the way.
    pub(crate) async fn recv(&mut self) -> anyhow::Result<&str> {
        self.last = self.next_message().await?.0;
        self.last()
    }

    /// The next message as bytes, and whether it came as a binary frame; answers pings on
    /// the way.
    pub(crate) async fn recv_any(&mut self) -> anyhow::Result<(bool, &[u8])> {
        let (at, binary) = self.next_message().await?;
        self.last = at;
        Ok((binary, self.last_bytes()))
    }

    fn last_bytes(&self) -> &[u8] {
        match self.last {
            LastMessageAt::Read(a, b) => &self.rbuf[a..b],
            LastMessageAt::Assembled => &self.assembled[..],
        }
    }

    /// The message the last [`RawWs::recv`] returned, again (empty before the first).
    pub(crate) fn last(&self) -> anyhow::Result<&str> {
        std::str::from_utf8(self.last_bytes()).context("the hub sent a message that is not UTF-8")
    }

    /// The next message and whether it is binary.
    async fn next_message(&mut self) -> anyhow::Result<(LastMessageAt, bool)> {
        self.assembled.clear();
        let mut fragmented = false;
        let mut binary = false;
        loop {
            let Some((fin, op, payload_at, len)) = self.parse_header()? else {
                self.fill().await?;
                continue;
            };
            if self.end - payload_at < len {
                self.fill_for(payload_at + len - self.start).await?;
                continue;
            }
            let (a, b) = (payload_at, payload_at + len);
            self.start = b;
            match op {
                OP_TEXT | OP_BINARY if !fragmented => {
                    binary = op == OP_BINARY;
                    if fin {
                        return Ok((LastMessageAt::Read(a, b), binary));
                    }
                    fragmented = true;
                    self.assembled.extend_from_slice(&self.rbuf[a..b]);
                }
                OP_CONTINUATION if fragmented => {
                    if self.assembled.len() + len > MAX_MESSAGE {
                        bail!("the hub sent a message larger than {MAX_MESSAGE} bytes");
                    }
                    self.assembled.extend_from_slice(&self.rbuf[a..b]);
                    if fin {
                        return Ok((LastMessageAt::Assembled, binary));
                    }
                }
                OP_PING => {
                    let data = self.rbuf[a..b].to_vec();
                    self.queue(OP_PONG, &data);
                    self.flush().await?;
                }
                OP_PONG => {}
                OP_CLOSE => bail!("the hub closed the connection"),
                other => bail!("the hub sent an unexpected WebSocket frame (opcode {other:#x})"),
            }
        }
    }

    /// `(fin, opcode, payload start, payload length)` of the frame at `start`, if its
    /// header is complete.
    fn parse_header(&self) -> anyhow::Result<Option<(bool, u8, usize, usize)>> {
        let buf = &self.rbuf[self.start..self.end];
        if buf.len() < 2 {
            return Ok(None);
        }
        let fin = buf[0] & 0x80 != 0;
        let op = buf[0] & 0x0F;
        if buf[1] & 0x80 != 0 {
            bail!("the hub sent a masked frame");
        }
        let (len, header) = match buf[1] & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            n => (u64::from(n), 2),
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_MESSAGE)
            .with_context(|| format!("the hub sent a frame of {len} bytes"))?;
        Ok(Some((fin, op, self.start + header, len)))
    }

    /// Reads more bytes, first moving the unparsed rest to the front.
    async fn fill(&mut self) -> anyhow::Result<()> {
        self.fill_for(self.end - self.start + 1).await
    }

    /// Reads until `need` unparsed bytes are buffered (at least one read).
    async fn fill_for(&mut self, need: usize) -> anyhow::Result<()> {
        if self.start > 0 {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.rbuf.len() < need {
            self.rbuf.resize(need.next_power_of_two(), 0);
        }
        loop {
            let n = self
                .stream
                .read(&mut self.rbuf[self.end..])
                .await
                .context("reading from the hub")?;
            if n == 0 {
                bail!("the hub closed the connection");
            }
            self.end += n;
            if self.end >= need {
                return Ok(());
            }
        }
    }

    fn queue(&mut self, op: u8, payload: &[u8]) {
        self.queue_parts(op, &[payload]);
    }

    fn queue_parts(&mut self, op: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.wbuf.push(0x80 | op);
        if len < 126 {
            self.wbuf.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            self.wbuf.push(0x80 | 126);
            self.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            self.wbuf.push(0x80 | 127);
            self.wbuf.extend_from_slice(&(len as u64).to_be_bytes());
        }
        let mask = (next_u64(&mut self.mask_state) as u32).to_ne_bytes();
        self.wbuf.extend_from_slice(&mask);
        let at = self.wbuf.len();
        for part in parts {
            self.wbuf.extend_from_slice(part);
        }
        for (i, b) in self.wbuf[at..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }
}

fn next_u64(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn base64_std(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64_std(b""), "");
        assert_eq!(base64_std(b"f"), "Zg==");
        assert_eq!(base64_std(b"fo"), "Zm8=");
        assert_eq!(base64_std(b"foo"), "Zm9v");
        assert_eq!(base64_std(b"foobar"), "Zm9vYmFy");
    }

    /// Against tungstenite's server: small, 16-bit and 64-bit lengths, a fragmented
    /// message, a ping in between, pipelined requests, close.
    #[tokio::test]
    async fn talks_to_a_tungstenite_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
            use tokio_tungstenite::tungstenite::protocol::frame::Frame;
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            ws.send(Message::text("hello")).await.unwrap();
            ws.send(Message::text("x".repeat(300))).await.unwrap();
            ws.send(Message::text("y".repeat(70_000))).await.unwrap();
            let mut first = Frame::message(&b"frag"[..], OpCode::Data(Data::Text), false);
            first.header_mut().is_final = false;
            ws.send(Message::Frame(first)).await.unwrap();
            ws.send(Message::Ping(vec![1, 2, 3].into())).await.unwrap();
            let last = Frame::message(&b"mented"[..], OpCode::Data(Data::Continue), true);
            ws.send(Message::Frame(last)).await.unwrap();
            ws.send(Message::binary(vec![0u8, 1, 0xff])).await.unwrap();
            let mut got = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Text(t) => {
                        got.push(t.to_string());
                        if got.len() == 3 {
                            ws.send(Message::text("done")).await.unwrap();
                        }
                    }
                    Message::Pong(p) => got.push(format!("pong {:?}", &p[..])),
                    Message::Binary(b) => got.push(format!("binary {:?}", &b[..])),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            got
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut ws = RawWs::handshake(tcp, &addr.to_string(), "/", 64)
            .await
            .unwrap();
        assert_eq!(ws.recv().await.unwrap(), "hello");
        assert_eq!(ws.recv().await.unwrap(), "x".repeat(300));
        assert_eq!(ws.recv().await.unwrap(), "y".repeat(70_000));
        assert_eq!(ws.recv().await.unwrap(), "fragmented");
        let (binary, bytes) = ws.recv_any().await.unwrap();
        assert!(binary);
        assert_eq!(bytes, [0u8, 1, 0xff]);
        ws.feed_binary(&[&[1u8, 2], &[], &[3u8]]);
        ws.feed("a");
        ws.feed(&"b".repeat(200));
        ws.feed(&"c".repeat(70_000));
        ws.flush().await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), "done");
        ws.close().await;
        let got = server.await.unwrap();
        assert_eq!(
            got,
            vec![
                "pong [1, 2, 3]".to_owned(),
                "binary [1, 2, 3]".to_owned(),
                "a".to_owned(),
                "b".repeat(200),
                "c".repeat(70_000)
            ]
        );
    }
}
