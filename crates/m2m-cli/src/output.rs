//! What the commands print on stdout: JSON for scripts (when stdout is not a terminal, or
//! with `--json`), aligned tables and sentences for people. The table functions return
//! strings so tests can read them without a terminal.

use std::io::{IsTerminal, Write};

use anyhow::Context as _;
use m2m_proto::hub::{AgentRecord, FoundAgent, Peer, Stats};
use serde::Serialize;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// JSON lines instead of tables.
    pub json: bool,
}

impl Output {
    /// JSON when asked for or when stdout is not a terminal.
    pub fn detect(force_json: bool) -> Self {
        Output {
            json: force_json || !std::io::stdout().is_terminal(),
        }
    }

    /// Prints `value` as one compact JSON line.
    pub fn json_line(&self, value: &impl Serialize) -> anyhow::Result<()> {
        let line = serde_json::to_string(value).context("could not encode the output as JSON")?;
        print_line(&line)
    }

    /// Prints `value` as JSON: compact in JSON mode (one line, for `jq` and friends), pretty
    /// for a person.
    pub fn json_value(&self, value: &impl Serialize) -> anyhow::Result<()> {
        let text = if self.json {
            serde_json::to_string(value)
        } else {
            serde_json::to_string_pretty(value)
        }
        .context("could not encode the output as JSON")?;
        print_line(&text)
    }

    /// Prints JSON in JSON mode and `text()` otherwise.
    pub fn either(
        &self,
        value: &impl Serialize,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            self.json_line(value)
        } else {
            print_text(&text())
        }
    }
}

/// Writes one line to stdout and flushes it, so a reader of a pipe sees it at once.
pub fn print_line(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .context("could not write to stdout")
}

/// Writes text that may or may not end in a newline.
fn print_text(text: &str) -> anyhow::Result<()> {
    print_line(text.strip_suffix('\n').unwrap_or(text))
}

/// Columns padded to their widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    }
    out
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// `m2m discover` for people.
pub fn peers_table(peers: &[Peer]) -> String {
    if peers.is_empty() {
        return "No agents found.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.status.clone(),
                p.address.clone(),
                format!("{}s ago", p.last_seen),
                list(&p.capabilities),
            ]
        })
        .collect();
    let mut out = table(&["ID", "STATUS", "ADDRESS", "SEEN", "CAPABILITIES"], &rows);
    out.push_str(&format!("{} agent(s)\n", peers.len()));
    out
}

/// `m2m find` for people.
pub fn found_table(agents: &[FoundAgent]) -> String {
    if agents.is_empty() {
        return "No online agent has this capability.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| vec![a.id.clone(), a.address.clone(), list(&a.capabilities)])
        .collect();
    table(&["ID", "ADDRESS", "CAPABILITIES"], &rows)
}

/// `m2m lookup` for people.
pub fn record_text(record: &AgentRecord) -> String {
    let metadata = serde_json::Value::Object(record.metadata.clone()).to_string();
    let identity = match &record.identity {
        Some(key) => format!("{key} (2.1, verified by the hub)"),
        None => "none (2.0: nothing proves who answers)".to_owned(),
    };
    table(
        &["", ""],
        &[
            vec!["id".into(), record.id.clone()],
            vec!["status".into(), record.status.clone()],
            vec!["address".into(), record.address.clone()],
            vec!["capabilities".into(), list(&record.capabilities)],
            vec!["metadata".into(), metadata],
            vec!["identity".into(), identity],
        ],
    )
    .lines()
    .skip(1)
    .map(|l| format!("{}\n", l.trim_end()))
    .collect()
}

/// `m2m stats` for people.
pub fn stats_text(stats: &Stats) -> String {
    let a = &stats.agents;
    let h = &stats.hub;
    table(
        &["", ""],
        &[
            vec!["hub version".into(), h.version.clone()],
            vec!["uptime".into(), human_duration(h.uptime)],
            vec![
                "connections".into(),
                format!(
                    "{} active, {} since start",
                    h.active_connections, h.connections
                ),
            ],
            vec![
                "agents".into(),
                format!(
                    "{} total: {} online, {} idle, {} offline",
                    a.total, a.online, a.idle, a.offline
                ),
            ],
        ],
    )
    .lines()
    .skip(1)
    .map(|l| format!("{}\n", l.trim_end()))
    .collect()
}

/// RFC 3339 UTC time of a millisecond timestamp (`2026-12-04T20:00:00.000Z`).
pub fn time_text(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// `3725` → `1h 2m 5s`.
pub fn human_duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m")]
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .chain(std::iter::once(format!("{s}s")))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use m2m_proto::hub::{AgentCounts, HubCounters};

    fn peer(id: &str, caps: &[&str]) -> Peer {
        Peer {
            id: id.into(),
            address: "127.0.0.1:4000".into(),
            capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            metadata: Default::default(),
            status: "online".into(),
            last_seen: 3,
            identity: None,
            relay: None,
            reachable: None,
            mailbox: None,
        }
    }

    #[test]
    fn peers_are_aligned() {
        let text = peers_table(&[peer("aaaa", &["chat", "code"]), peer("b", &[])]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID    STATUS  ADDRESS         SEEN    CAPABILITIES"
        );
        assert_eq!(lines[1], "aaaa  online  127.0.0.1:4000  3s ago  chat,code");
        assert_eq!(lines[2], "b     online  127.0.0.1:4000  3s ago  -");
        assert_eq!(lines[3], "2 agent(s)");
        assert_eq!(peers_table(&[]), "No agents found.\n");
    }

    #[test]
    fn stats_read_as_sentences() {
        let stats = Stats {
            agents: AgentCounts {
                total: 3,
                online: 2,
                idle: 1,
                offline: 0,
            },
            hub: HubCounters {
                version: "2.0.0".into(),
                uptime: 3725,
                connections: 7,
                active_connections: 3,
            },
        };
        let text = stats_text(&stats);
        assert!(text.contains("hub version  2.0.0"), "{text}");
        assert!(text.contains("uptime       1h 2m 5s"), "{text}");
        assert!(
            text.contains("3 total: 2 online, 1 idle, 0 offline"),
            "{text}"
        );
        assert!(text.contains("3 active, 7 since start"), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(61), "1m 1s");
        assert_eq!(human_duration(90061), "1d 1h 1m 1s");
        assert_eq!(human_duration(3600), "1h 0m 0s");
    }
}
