//! Where an agent can be dialled: the IP its WebSocket came from, plus the port it named
//! (PROTOCOL.md A2, Address). Pure functions, no IO.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use m2m_proto::hub::errors;

/// The client's IP: the socket's peer, or — only when the operator said the hub is behind a
/// proxy — the first entry of `X-Forwarded-For`. IPv4-mapped IPv6 becomes plain IPv4 (the
/// original strips `::ffff:`).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_proxy: bool) -> IpAddr {
    if trust_proxy {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .and_then(|v| v.parse::<IpAddr>().ok());
        if let Some(ip) = forwarded {
            return ip.to_canonical();
        }
    }
    peer.ip().to_canonical()
}

/// The port of a `host:port` or `[v6]:port` address, or the error code to send. Port 0
/// is refused ([`port_of_any`] accepts it).
pub fn port_of(address: &str) -> Result<u16, &'static str> {
    match port_of_any(address)? {
        0 => Err(errors::INVALID_ADDRESS),
        p => Ok(p),
    }
}

/// [`port_of`], with port 0 allowed (a relay-only 2.1 agent, docs/RELAY.md).
pub fn port_of_any(address: &str) -> Result<u16, &'static str> {
    let address = address.trim();
    let port = if let Some(rest) = address.strip_prefix('[') {
        let (_, port) = rest.split_once("]:").ok_or(errors::INVALID_ADDRESS)?;
        port
    } else {
        match address.split_once(':') {
            // A bare IPv6 address has more colons: which part is the port is a guess we
            // refuse to make.
            Some((host, port)) if !host.is_empty() && !port.contains(':') => port,
            _ => return Err(errors::INVALID_ADDRESS),
        }
    };
    port.parse::<u16>().map_err(|_| errors::INVALID_ADDRESS)
}

/// The address the hub stores: `ip:port`, IPv6 in brackets. Port 0 (relay-only) only
/// with `relay_only` (a 2.1 registration on a hub whose relay is on).
pub fn dial_address(
    ip: IpAddr,
    given: Option<&str>,
    max_len: usize,
    relay_only: bool,
) -> Result<String, &'static str> {
    let given = given.ok_or(errors::ADDRESS_REQUIRED)?;
    if given.trim().is_empty() {
        return Err(errors::ADDRESS_REQUIRED);
    }
    if given.len() > max_len {
        return Err(errors::ADDRESS_TOO_LONG);
    }
    let port = if relay_only {
        port_of_any(given)?
    } else {
        port_of(given)?
    };
    Ok(SocketAddr::new(ip, port).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn port_0_is_a_relay_only_address_for_those_allowed_it() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            dial_address(ip, Some("relay:0"), 256, true).unwrap(),
            "127.0.0.1:0"
        );
        assert_eq!(
            dial_address(ip, Some("relay:0"), 256, false),
            Err(errors::INVALID_ADDRESS)
        );
        assert_eq!(
            dial_address(ip, Some("relay:x"), 256, true),
            Err(errors::INVALID_ADDRESS)
        );
    }

    #[test]
    fn keeps_the_remote_ip_and_the_given_port() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            dial_address(ip, Some("10.9.8.7:4101"), 256, false).unwrap(),
            "127.0.0.1:4101"
        );
        assert_eq!(
            dial_address(ip, Some("host.example:80"), 256, false).unwrap(),
            "127.0.0.1:80"
        );
        assert_eq!(
            dial_address(ip, Some("[::1]:4000"), 256, false).unwrap(),
            "127.0.0.1:4000"
        );
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(
            dial_address(v6, Some("x:9"), 256, false).unwrap(),
            "[2001:db8::7]:9"
        );
    }

    #[test]
    fn refuses_what_no_one_could_dial() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            dial_address(ip, None, 256, false),
            Err(errors::ADDRESS_REQUIRED)
        );
        assert_eq!(
            dial_address(ip, Some(""), 256, false),
            Err(errors::ADDRESS_REQUIRED)
        );
        for bad in [
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            ":80",
            "::1:80",
            "[::1]",
        ] {
            assert_eq!(
                dial_address(ip, Some(bad), 256, false),
                Err(errors::INVALID_ADDRESS),
                "{bad}"
            );
        }
        let long = format!("{}:80", "a".repeat(300));
        assert_eq!(
            dial_address(ip, Some(&long), 256, false),
            Err(errors::ADDRESS_TOO_LONG)
        );
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let peer: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static(" 203.0.113.9 , 10.0.0.2"),
        );
        assert_eq!(client_ip(peer, &headers, false).to_string(), "10.0.0.1");
        assert_eq!(client_ip(peer, &headers, true).to_string(), "203.0.113.9");
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(peer, &headers, true).to_string(), "10.0.0.1");
    }
}
