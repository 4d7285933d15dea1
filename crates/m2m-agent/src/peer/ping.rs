//! `ping`: a P2P round trip on a connection of its own, no handshake (PROTOCOL.md A4).

use std::time::Duration;

use m2m_proto::frame::Frame;
use m2m_proto::LineDecoder;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::conn;
use crate::defaults::PING_READ_BUFFER;
use crate::error::{AgentError, Result};

/// Round trip of `{"type":"ping"}` → `{"type":"pong"}` on a fresh connection.
pub(crate) async fn ping(address: &str, max_frame_len: usize) -> Result<Duration> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| AgentError::unreachable_io(address, e))?;
    let _ = stream.set_nodelay(true);
    ping_on(stream, address, max_frame_len).await
}

/// [`ping`] on a connected stream (`address` names it in errors).
pub(crate) async fn ping_on<S>(
    mut stream: S,
    address: &str,
    max_frame_len: usize,
) -> Result<Duration>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    stream
        .write_all(&Frame::Ping.encode())
        .await
        .map_err(|e| AgentError::unreachable_io(address, e))?;
    let mut decoder = LineDecoder::new(max_frame_len);
    let mut buf = vec![0u8; PING_READ_BUFFER];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| AgentError::unreachable_io(address, e))?;
        if n == 0 {
            return Err(AgentError::unreachable(address, "closed without pong"));
        }
        decoder.push(&buf[..n]);
        while let Some(line) = decoder
            .next_line()
            .map_err(|e| AgentError::misbehaved(address, e))?
        {
            match Frame::parse(line) {
                Ok(Frame::Pong) => {
                    let rtt = started.elapsed();
                    let _ = stream.shutdown().await;
                    return Ok(rtt);
                }
                Ok(Frame::Error(error)) => return Err(conn::peer_error(address, error)),
                _ => {}
            }
        }
    }
}
