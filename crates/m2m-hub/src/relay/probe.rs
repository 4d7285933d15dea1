//! The reachability probe (docs/RELAY.md "The reachability probe"): does the registered
//! address answer a P2P `ping`? Only ever towards the WebSocket's own remote IP, so the hub
//! cannot be made to dial third parties.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use m2m_proto::relay::Reachable;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::defaults::RELAY_PROBE_MAX_LINE;

/// The P2P ping the probe sends.
const PING: &[u8] = b"{\"type\":\"ping\"}\n";

/// Dials `ip:port`, sends a P2P `ping` and waits for a `pong` line, all within `timeout`:
/// [`Reachable::Direct`] when it came, [`Reachable::Relay`] otherwise.
pub(crate) async fn probe(ip: IpAddr, port: u16, timeout: Duration) -> Reachable {
    match tokio::time::timeout(timeout, ping(SocketAddr::new(ip, port))).await {
        Ok(true) => Reachable::Direct,
        _ => Reachable::Relay,
    }
}

async fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    if stream.write_all(PING).await.is_err() {
        return false;
    }
    let mut line = Vec::new();
    let mut reader = BufReader::new(&mut stream).take(RELAY_PROBE_MAX_LINE as u64);
    if reader.read_until(b'\n', &mut line).await.is_err() {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&line)
        .is_ok_and(|v| v.get("type").and_then(|t| t.as_str()) == Some("pong"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_listener_that_answers_pong_is_direct_and_a_closed_port_is_relay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            BufReader::new(&mut s).read_line(&mut line).await.unwrap();
            assert_eq!(line.as_bytes(), PING);
            s.write_all(b"{\"type\":\"pong\",\"id\":\"x\"}\n")
                .await
                .unwrap();
        });
        let ip = IpAddr::from([127, 0, 0, 1]);
        let t = Duration::from_secs(5);
        assert_eq!(probe(ip, port, t).await, Reachable::Direct);
        server.await.unwrap();
        // Nothing listens there any more.
        assert_eq!(probe(ip, port, t).await, Reachable::Relay);
    }

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_never_answers_times_out_as_relay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ip = IpAddr::from([127, 0, 0, 1]);
        // Accepted by the kernel's backlog, never answered.
        assert_eq!(
            probe(ip, port, Duration::from_millis(1500)).await,
            Reachable::Relay
        );
        drop(listener);
    }
}
