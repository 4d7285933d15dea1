//! Agent configuration: what `Agent::builder()` fills in, with the defaults of
//! [`crate::defaults`] (the protocol's from [`m2m_proto::limits`]), and the hub URL rules of
//! PROTOCOL.md A5.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use m2m_proto::Identity;

use crate::defaults;
use serde_json::{Map, Value};

use crate::error::AgentError;

/// The hub used when none is configured, as in the original SDK.
pub const DEFAULT_HUB: &str = "m2m.dev";
/// The environment variable naming the hub, read by
/// [`AgentBuilder::hub_from_env`](crate::AgentBuilder::hub_from_env) (and by the `m2m` tool).
pub const HUB_ENV: &str = "M2M_HUB";
/// Messages the application has not read yet before peers are slowed down.
pub const DEFAULT_INBOX_CAPACITY: usize = defaults::INBOX_CAPACITY;
/// Longest wait between two reconnect attempts.
pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = defaults::MAX_RECONNECT_DELAY;
/// Sends running at once in a broadcast.
pub const DEFAULT_BROADCAST_PARALLELISM: usize = defaults::BROADCAST_PARALLELISM;

/// Everything an [`Agent`](crate::Agent) needs to start. Build it with
/// [`Agent::builder`](crate::Agent::builder) or fill it in and call
/// [`Agent::connect_with`](crate::Agent::connect_with).
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// P2P listening port; 0 picks any free port.
    pub port: u16,
    /// Interface the P2P listener binds (default: all IPv4 interfaces).
    pub bind_ip: IpAddr,
    /// Hub, as a URL or a host (see [`hub_url`]); several, comma-separated, for failover
    /// (see [`hub_urls`]): the agent connects to the first that answers and, when its hub
    /// goes away, moves on to the next.
    pub hub: String,
    /// Public `host:port` to register instead of `<local IPv4>:<port>` (behind NAT).
    pub address: Option<String>,
    /// Capabilities offered.
    pub capabilities: Vec<String>,
    /// Free-form metadata registered at the hub.
    pub metadata: Map<String, Value>,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Reconnect (and re-register) when the hub connection drops.
    pub auto_reconnect: bool,
    /// First delay before reconnecting; doubles on every failed attempt.
    pub reconnect_delay: Duration,
    /// Cap of the reconnect delay.
    pub max_reconnect_delay: Duration,
    /// Time a hub request may take.
    pub hub_request_timeout: Duration,
    /// Default time [`Agent::request`](crate::Agent::request) waits for its response.
    pub request_timeout: Duration,
    /// Time a P2P send may take, connect and handshake included, until the ack.
    pub send_timeout: Duration,
    /// Time an inbound peer has to complete its handshake.
    pub handshake_timeout: Duration,
    /// Inbound connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Outbound pooled connections idle this long are closed (before the peer's idle close).
    pub pool_idle_close: Duration,
    /// How long discover/find/lookup answers are trusted for sends by id.
    pub address_cache_ttl: Duration,
    /// Longest P2P line accepted and sent.
    pub max_frame_len: usize,
    /// Simultaneous inbound P2P connections; when all are taken, a new one evicts the least
    /// useful (see [`crate::defaults::MAX_INBOUND_CONNECTIONS`]).
    pub max_inbound_connections: usize,
    /// Inbound connections one source address (IPv4, IPv6 /64) may hold.
    pub max_inbound_per_ip: usize,
    /// Bytes all inbound read buffers may hold beyond one read each.
    pub inbound_buffer_budget: usize,
    /// Handshakes one source address may start per second (0: no limit).
    pub handshakes_per_ip_per_second: u32,
    /// Handshakes one source address may start at once before the rate applies.
    pub handshake_burst_per_ip: u32,
    /// Time [`Agent::respond`](crate::Agent::respond) may take for an unauthenticated
    /// (2.0) message, whose `from` is only declared.
    pub unverified_respond_timeout: Duration,
    /// Messages buffered for the application before peers are slowed down.
    pub inbox_capacity: usize,
    /// Bytes (their lines on the wire) of the messages buffered for the application and the
    /// request handlers, all together, before peers are slowed down.
    pub inbox_bytes: usize,
    /// 2.1: our long-term identity (PROTOCOL.md B). `None` generates a fresh one at
    /// connect, so every agent is 2.1; give one (e.g. from a key file) to keep the same id
    /// across restarts.
    pub identity: Option<Identity>,
    /// 2.1: talk only to peers that prove an identity: 2.0 peers are refused in both
    /// directions, also when the hub vouches for nothing.
    pub authenticated_peers_only: bool,
    /// Register at the hub (the default). `false` makes a client that uses the hub without
    /// appearing in it: queries, sends and 2.1 requests work, no P2P port is opened, and
    /// nobody can find or message it (see [`AgentBuilder::register`](crate::AgentBuilder::register)).
    pub register: bool,
    /// Relay (docs/RELAY.md): attach to a 2.1 hub's relay, so that agents that cannot dial
    /// us reach us through it, and use it to reach agents we cannot dial (default true).
    pub relay: bool,
    /// Relay: open no TCP listener at all and register port 0
    /// ([`m2m_proto::relay::RELAY_ONLY_ADDRESS`]): reachable only through the relay of a
    /// 2.1 hub (connect fails on any other).
    pub relay_only: bool,
    /// How long a direct dial (connect and handshake) of a send by id may take before it
    /// falls back to the relay, when the record names one.
    pub direct_connect_timeout: Duration,
    /// Mailbox (docs/MAILBOX.md): publish a mailbox key at every registration on a 2.1 hub
    /// and receive the mail stored for us (default true).
    pub mailbox: bool,
    /// Mailbox: a file keeping the ids of mail already delivered, so that a restarted agent
    /// also drops a message the hub replays after we acked it (default none: in memory).
    pub mailbox_state: Option<std::path::PathBuf>,
    /// Mailbox: how long acks of delivered mail wait to be sent in one `mail_ack`.
    pub mail_ack_delay: Duration,
    /// Mailbox: ids of delivered mail remembered for de-duplication.
    pub mail_seen_ids: usize,
    /// Mailbox: the TTL of mail we queue when the send does not say (the hub clamps it to
    /// its maximum).
    pub mail_ttl: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            port: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            hub: DEFAULT_HUB.to_owned(),
            address: None,
            capabilities: Vec::new(),
            metadata: Map::new(),
            heartbeat_interval: defaults::HEARTBEAT_INTERVAL,
            auto_reconnect: true,
            reconnect_delay: defaults::RECONNECT_DELAY,
            max_reconnect_delay: DEFAULT_MAX_RECONNECT_DELAY,
            hub_request_timeout: defaults::HUB_REQUEST_TIMEOUT,
            request_timeout: defaults::REQUEST_TIMEOUT,
            send_timeout: defaults::SEND_TIMEOUT,
            handshake_timeout: defaults::HANDSHAKE_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            pool_idle_close: defaults::POOL_IDLE_CLOSE,
            address_cache_ttl: defaults::ADDRESS_CACHE_TTL,
            max_frame_len: defaults::MAX_FRAME_LEN,
            max_inbound_connections: defaults::MAX_INBOUND_CONNECTIONS,
            max_inbound_per_ip: defaults::MAX_INBOUND_PER_IP,
            inbound_buffer_budget: defaults::INBOUND_BUFFER_BUDGET,
            handshakes_per_ip_per_second: defaults::HANDSHAKES_PER_SECOND_PER_IP,
            handshake_burst_per_ip: defaults::HANDSHAKE_BURST_PER_IP,
            unverified_respond_timeout: defaults::UNVERIFIED_RESPOND_TIMEOUT,
            inbox_capacity: DEFAULT_INBOX_CAPACITY,
            inbox_bytes: defaults::INBOX_BYTES,
            identity: None,
            authenticated_peers_only: false,
            register: true,
            relay: true,
            relay_only: false,
            direct_connect_timeout: defaults::DIRECT_CONNECT_TIMEOUT,
            mailbox: true,
            mailbox_state: None,
            mail_ack_delay: defaults::MAIL_ACK_DELAY,
            mail_seen_ids: defaults::MAIL_SEEN_IDS,
            mail_ttl: defaults::MAIL_TTL,
        }
    }
}

/// The WebSocket URL of a hub (PROTOCOL.md A5): `ws://` and `wss://` URLs are used as they
/// are; `http://` and `https://` become `ws://` and `wss://` (with `/ws` when no path is
/// given); a bare host becomes `wss://<host>/ws`, or `ws://<host>/ws` for a loopback host.
pub fn hub_url(hub: &str) -> Result<String, AgentError> {
    let hub = hub.trim();
    if hub.is_empty() {
        return Err(AgentError::Config("empty hub address".into()));
    }
    let lower = hub.to_ascii_lowercase();
    let url = if lower.starts_with("ws://") || lower.starts_with("wss://") {
        hub.to_owned()
    } else if let Some(rest) = strip_scheme(hub, "http://") {
        with_ws_path("ws://", rest)
    } else if let Some(rest) = strip_scheme(hub, "https://") {
        with_ws_path("wss://", rest)
    } else if hub.contains("://") {
        return Err(AgentError::Config(format!("unsupported hub scheme: {hub}")));
    } else {
        let host = hub.trim_end_matches('/');
        let scheme = if is_loopback_host(host_part(host)) {
            "ws://"
        } else {
            "wss://"
        };
        format!("{scheme}{host}/ws")
    };
    url::Url::parse(&url).map_err(|e| AgentError::Config(format!("bad hub URL {url}: {e}")))?;
    Ok(url)
}

/// The WebSocket URLs of a comma-separated hub list (`"hub-a.example,hub-b.example"`), in
/// order, each as [`hub_url`] makes it; duplicates are dropped. At most
/// [`MAX_HUBS`](crate::defaults::MAX_HUBS) hubs.
pub fn hub_urls(hubs: &str) -> Result<Vec<String>, AgentError> {
    let mut urls: Vec<String> = Vec::new();
    for hub in hubs.split(',') {
        let url = hub_url(hub)?;
        if !urls.contains(&url) {
            urls.push(url);
        }
    }
    if urls.len() > defaults::MAX_HUBS {
        return Err(AgentError::Config(format!(
            "{} hubs given; at most {} are tried",
            urls.len(),
            defaults::MAX_HUBS
        )));
    }
    Ok(urls)
}

fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let head = s.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &s[scheme.len()..])
}

fn with_ws_path(scheme: &str, rest: &str) -> String {
    match rest.find('/') {
        Some(i) if rest[i..].trim_end_matches('/').len() > 1 => format!("{scheme}{rest}"),
        Some(i) => format!("{scheme}{}/ws", &rest[..i]),
        None => format!("{scheme}{rest}/ws"),
    }
}

/// The host of `host[:port]` or `[v6][:port]`.
fn host_part(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if !host.contains(':') => host,
        Some(_) => authority,
        None => authority,
    }
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_lists() {
        assert_eq!(
            hub_urls("localhost:1, ws://b/x,localhost:1").unwrap(),
            vec!["ws://localhost:1/ws".to_owned(), "ws://b/x".to_owned()]
        );
        assert_eq!(
            hub_urls("m2m.dev").unwrap(),
            vec!["wss://m2m.dev/ws".to_owned()]
        );
        assert!(
            hub_urls("a,,b").is_err(),
            "an empty entry is a mistake, not skipped"
        );
        let many = vec!["h"; defaults::MAX_HUBS + 1]
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{h}{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(hub_urls(&many).is_err());
    }

    #[test]
    fn hub_url_rules() {
        let cases = [
            ("m2m.dev", "wss://m2m.dev/ws"),
            ("hub.example.com:8443", "wss://hub.example.com:8443/ws"),
            ("ws://127.0.0.1:3000/ws", "ws://127.0.0.1:3000/ws"),
            ("wss://m2m.dev/custom", "wss://m2m.dev/custom"),
            ("http://localhost:3000", "ws://localhost:3000/ws"),
            ("https://m2m.dev/", "wss://m2m.dev/ws"),
            ("https://m2m.dev/hub/ws", "wss://m2m.dev/hub/ws"),
            ("localhost:3000", "ws://localhost:3000/ws"),
            ("127.0.0.1:3000", "ws://127.0.0.1:3000/ws"),
            ("[::1]:3000", "ws://[::1]:3000/ws"),
            ("10.0.0.1:3000", "wss://10.0.0.1:3000/ws"),
        ];
        for (input, want) in cases {
            assert_eq!(hub_url(input).unwrap(), want, "{input}");
        }
        assert!(hub_url("").is_err());
        assert!(hub_url("ftp://x").is_err());
    }
}
