//! The local address we advertise when registering without an explicit one.

use std::net::{IpAddr, Ipv4Addr};

use crate::config::is_loopback_host;
use crate::defaults::LOCAL_ADDRESS_PROBE_TIMEOUT;

/// The IPv4 address other agents would reach us at, as far as we can tell without asking:
/// loopback for a loopback hub, else the source address of a route to the hub.
pub(crate) async fn local_ipv4(hub_url: &str) -> IpAddr {
    let fallback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let Ok(url) = url::Url::parse(hub_url) else {
        return fallback;
    };
    let Some(host) = url.host_str() else {
        return fallback;
    };
    if is_loopback_host(host) {
        return fallback;
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let probe = async {
        // Connecting a UDP socket sends nothing; it only picks the route and source address.
        let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
            .await
            .ok()?;
        socket.connect((host, port)).await.ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    };
    match tokio::time::timeout(LOCAL_ADDRESS_PROBE_TIMEOUT, probe).await {
        Ok(Some(ip)) if ip.is_ipv4() && !ip.is_unspecified() => ip,
        _ => fallback,
    }
}
