//! One raw WebSocket connection to the hub under test (`rawws.rs`, not the SDK, so the
//! generator stays cheaper than the hub), its source address, and one request's reply.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::http::Uri;

use super::HubBenchOptions;
use crate::defaults;
use crate::rawws::RawWs;

/// A WebSocket to the hub at `url` (`hub` its address), from `source` when given.
pub(crate) async fn open_ws(
    url: &str,
    hub: SocketAddr,
    source: Option<IpAddr>,
) -> anyhow::Result<RawWs> {
    let uri: Uri = url.parse().with_context(|| format!("bad hub URL {url}"))?;
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_else(|| hub.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let socket = if hub.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("binding a client socket to {ip}"))?;
    }
    let stream = socket
        .connect(hub)
        .await
        .with_context(|| format!("connecting to {hub}"))?;
    stream.set_nodelay(true)?;
    RawWs::handshake(stream, &host, path, defaults::CLIENT_READ_BUFFER).await
}

/// Sends one request and returns the reply.
pub(super) async fn call(ws: &mut RawWs, text: String) -> anyhow::Result<String> {
    ws.send(&text).await?;
    recv(ws).await.map(str::to_owned)
}

/// The next reply, skipping unsolicited events such as a 2.1 hub's challenge.
pub(super) async fn recv(ws: &mut RawWs) -> anyhow::Result<&str> {
    while ws.recv().await?.starts_with(r#"{"event""#) {}
    ws.last()
}

/// `Ok` for an ok reply, else the error code.
pub(super) fn outcome(reply: &str) -> Result<(), String> {
    if reply.contains(r#""status":"ok""#) {
        return Ok(());
    }
    let v: Value = serde_json::from_str(reply).map_err(|_| "unparsable_reply".to_owned())?;
    if v.get("status").and_then(Value::as_str) == Some("ok") {
        return Ok(());
    }
    Err(v
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown_error")
        .to_owned())
}

/// One registered client.
pub(super) struct RegisteredClient {
    pub(super) ws: RawWs,
    pub(super) index: usize,
    /// The agents registered on it (empty string: a failed registration).
    pub(super) ids: Vec<String>,
}

impl RegisteredClient {
    /// The first agent: the one that heartbeats and discovers in the action phases.
    pub(super) fn id(&self) -> &str {
        self.ids.first().map_or("", String::as_str)
    }
}

pub(super) fn source_addresses(opts: &HubBenchOptions, hub: SocketAddr) -> Vec<Option<IpAddr>> {
    let wanted = opts.source_ips.unwrap_or_else(|| {
        opts.connections()
            .div_ceil(defaults::CONNECTIONS_PER_SOURCE_IP)
    });
    if !hub.ip().is_loopback() || !hub.is_ipv4() || wanted <= 1 {
        return vec![None];
    }
    (1..=wanted.min(250))
        .map(|k| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))))
        .collect()
}
