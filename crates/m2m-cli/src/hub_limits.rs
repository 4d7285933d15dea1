//! The resource flags of `m2m hub` (docs/SECURITY.md "Hub limits"): flattened into
//! `HubArgs`, applied to `m2m_hub::HubLimits`. Defaults and their reasons live in
//! `m2m_hub::limits`.

use std::time::Duration;

use clap::Args;
use m2m_hub::{limits, HubConfig};

use crate::duration;

/// Bounds on what clients may make the hub hold.
#[derive(Debug, Clone, Args)]
pub struct HubLimitArgs {
    /// Memory budget for connection buffers, unfinished frames and queued replies
    /// (e.g. 512MiB, 2GiB); when spent, new work is refused.
    #[arg(long, value_parser = parse_size, default_value = "1GiB", value_name = "SIZE")]
    pub memory_budget: usize,

    /// Simultaneous WebSockets.
    #[arg(long, default_value_t = limits::MAX_WEBSOCKETS, value_name = "N")]
    pub max_connections: usize,

    /// Simultaneous TCP connections, HTTP and WebSocket (also held below the descriptor
    /// limit).
    #[arg(long, default_value_t = limits::MAX_HTTP_CONNECTIONS, value_name = "N")]
    pub max_http_connections: usize,

    /// Simultaneous connections per source IP (an IPv6 /64 counts as one); 0: no limit.
    #[arg(long, default_value_t = limits::MAX_CONNECTIONS_PER_IP, value_name = "N")]
    pub max_connections_per_ip: usize,

    /// Registrations per source IP per hour; 0: no limit.
    #[arg(long, default_value_t = limits::REGISTRATIONS_PER_HOUR, value_name = "N")]
    pub registrations_per_hour: u32,

    /// Registrations one source IP may make at once before the hourly rate applies.
    #[arg(long, default_value_t = limits::REGISTRATION_BURST, value_name = "N")]
    pub registration_burst: u32,

    /// Offline 2.0 agents (no identity) are deleted after this long unseen.
    #[arg(long, value_parser = duration::parse, default_value = "15m", value_name = "DURATION")]
    pub anonymous_retention: Duration,

    /// An HTTP request head (and a kept-alive connection's next one) must arrive this fast.
    #[arg(long, value_parser = duration::parse, default_value = "10s", value_name = "DURATION")]
    pub header_timeout: Duration,

    /// A WebSocket that registered nothing and sends nothing this long is closed.
    #[arg(long, value_parser = duration::parse, default_value = "5m", value_name = "DURATION")]
    pub idle_timeout: Duration,

    /// A reply that cannot be written this fast closes its connection.
    #[arg(long, value_parser = duration::parse, default_value = "10s", value_name = "DURATION")]
    pub write_timeout: Duration,

    /// Turn the relay off (docs/RELAY.md): `relay` is answered `relay_unavailable` and
    /// relay-only (port 0) registrations are refused.
    #[arg(long)]
    pub no_relay: bool,

    /// Flow-control window of every relayed stream, each direction (e.g. 256KiB).
    #[arg(long, value_parser = parse_size, default_value = "256KiB", value_name = "SIZE")]
    pub relay_window: usize,

    /// Relayed streams one WebSocket may have open at once.
    #[arg(long, default_value_t = m2m_proto::defaults::RELAY_MAX_STREAMS, value_name = "N")]
    pub relay_streams: u32,

    /// Relay memory: all bytes queued towards destinations for all streams (e.g. 256MiB);
    /// when spent, the stream that needed more is closed (`budget`).
    #[arg(long, value_parser = parse_size, default_value = "256MiB", value_name = "SIZE")]
    pub relay_budget: usize,

    /// Relayed bytes per second per WebSocket (e.g. 64MiB; burst a quarter of it); reading
    /// waits when spent. 0: no limit.
    #[arg(long, value_parser = parse_rate, default_value = "64MiB", value_name = "SIZE")]
    pub relay_rate: usize,

    /// Turn the mailbox off (docs/MAILBOX.md): `mail` and `mailbox` are answered
    /// `mailbox_unavailable`.
    #[arg(long)]
    pub no_mailbox: bool,

    /// Longest a mailbox message is kept (at most 168h, 7 days); larger `ttl`s are clamped.
    #[arg(long, value_parser = duration::parse, default_value = "168h", value_name = "DURATION")]
    pub mail_ttl: Duration,

    /// Largest sealed mailbox message (at most 256KiB): `message_too_large` beyond.
    #[arg(long, value_parser = parse_size, default_value = "256KiB", value_name = "SIZE")]
    pub mail_max_bytes: usize,

    /// Sealed mailbox bytes stored in all (e.g. 1GiB): `mailbox_full` beyond.
    #[arg(long, value_parser = parse_size, default_value = "1GiB", value_name = "SIZE")]
    pub mail_budget: usize,
}

impl HubLimitArgs {
    /// Sets these limits in `config`.
    pub fn apply(&self, config: &mut HubConfig) {
        let l = &mut config.limits;
        l.memory_budget = self.memory_budget;
        l.max_connections = self.max_connections;
        l.max_http_connections = self.max_http_connections;
        l.max_connections_per_ip = self.max_connections_per_ip;
        l.registrations_per_hour = self.registrations_per_hour;
        l.registration_burst = self.registration_burst;
        l.header_timeout = self.header_timeout;
        l.idle_timeout = self.idle_timeout;
        l.write_timeout = self.write_timeout;
        config.sweep.anonymous_retention = self.anonymous_retention;
        let r = &mut config.relay;
        r.enabled = !self.no_relay;
        r.window = u32::try_from(self.relay_window).unwrap_or(u32::MAX);
        r.max_streams = self.relay_streams;
        r.budget = self.relay_budget;
        r.rate = self.relay_rate as u64;
        // A quarter second of the rate (the default: 16 MiB of 64 MiB/s), and at least one
        // full DATA frame.
        r.burst = (r.rate / 4).max(m2m_proto::relay::MAX_DATA as u64);
        let m = &mut config.mailbox;
        m.enabled = !self.no_mailbox;
        m.max_ttl = self.mail_ttl.min(m2m_proto::mailbox::MAX_TTL);
        m.max_sealed = self.mail_max_bytes.min(m2m_proto::mailbox::MAX_SEALED);
        m.budget = i64::try_from(self.mail_budget).unwrap_or(i64::MAX);
    }
}

/// A bytes/s rate: a size, or 0 for no limit.
pub fn parse_rate(text: &str) -> Result<usize, String> {
    if text.trim() == "0" {
        return Ok(0);
    }
    parse_size(text)
}

/// A size: bytes, or with a unit `KiB`, `MiB`, `GiB` (`K`, `M`, `G`, `KB`… mean the same
/// binary units).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size (try 512MiB, 2GiB)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use KiB, MiB or GiB)"
            ))
        }
    };
    match value.checked_mul(scale) {
        Some(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(format!("`{text}` is not a usable size")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        limits: HubLimitArgs,
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("64mib"), Ok(64 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn defaults_are_the_hub_defaults() {
        let probe = Probe::parse_from(["probe"]);
        let mut config = HubConfig::default();
        probe.limits.apply(&mut config);
        assert_eq!(config.limits, HubConfig::default().limits);
        assert_eq!(config.sweep, HubConfig::default().sweep);
        assert_eq!(config.relay, HubConfig::default().relay);
        assert_eq!(config.mailbox, HubConfig::default().mailbox);
        let probe = Probe::parse_from([
            "probe",
            "--memory-budget",
            "64MiB",
            "--registrations-per-hour",
            "0",
        ]);
        probe.limits.apply(&mut config);
        assert_eq!(config.limits.memory_budget, 64 << 20);
        assert_eq!(config.limits.registrations_per_hour, 0);
        let probe = Probe::parse_from([
            "probe",
            "--no-relay",
            "--relay-streams",
            "8",
            "--relay-budget",
            "1MiB",
            "--relay-rate",
            "0",
            "--relay-window",
            "64KiB",
        ]);
        probe.limits.apply(&mut config);
        assert!(!config.relay.enabled);
        assert_eq!(config.relay.max_streams, 8);
        assert_eq!(config.relay.budget, 1 << 20);
        assert_eq!(config.relay.rate, 0);
        assert_eq!(config.relay.window, 64 << 10);
    }
}
