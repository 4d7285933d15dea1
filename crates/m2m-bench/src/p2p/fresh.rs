//! The `fresh` scenarios' initiator: the protocol core (`m2m_proto::Initiator`) over a
//! bare `TcpStream`, one connection, handshake and message each time, as the original
//! implementation sends.

use std::net::SocketAddr;

use anyhow::bail;
use m2m_agent::Value;
use m2m_proto::session::PeerExpectation;
use m2m_proto::{Identity, IdentityKey, Initiator, InitiatorEvent, LineDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{FRESH_FROM, MESSAGE_TYPE};
use crate::defaults::FRESH_MAX_LINE;

/// The original's pattern: connect, handshake, one message, wait for its ack, close. With
/// `auth` (our identity, the peer's key), the 2.1 handshake instead of 2.0.
pub(super) async fn fresh_message(
    addr: SocketAddr,
    plaintext: &[u8],
    auth: Option<&(Identity, IdentityKey)>,
) -> anyhow::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut session, hello) = match auth {
        None => Initiator::new(FRESH_FROM, &mut rand::thread_rng()),
        Some((me, peer)) => Initiator::new_authenticated(
            me,
            PeerExpectation {
                identity: Some(*peer),
                require_authenticated: true,
            },
            &mut rand::thread_rng(),
        ),
    };
    stream.write_all(&hello.encode()).await?;
    let mut decoder = LineDecoder::new(FRESH_MAX_LINE);
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("the peer closed the connection before the ack");
        }
        decoder.push(&buf[..n]);
        let mut outgoing = Vec::new();
        while let Some(line) = decoder.next_line()? {
            match session.handle_line(line)? {
                InitiatorEvent::Established => {
                    if let Some(proof) = session.take_auth_frame() {
                        proof.encode_into(&mut outgoing);
                    }
                    let frame = session.seal_plaintext(
                        MESSAGE_TYPE,
                        plaintext,
                        Some(Value::String("fresh".into())),
                        &mut rand::thread_rng(),
                    )?;
                    frame.encode_into(&mut outgoing);
                }
                InitiatorEvent::Acked(_) => return Ok(()),
                _ => {}
            }
        }
        if !outgoing.is_empty() {
            stream.write_all(&outgoing).await?;
        }
    }
}
