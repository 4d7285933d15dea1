//! Unit tests of the hub bench's pure parts: reply outcomes, commands, addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use super::client::{outcome, source_addresses};
use super::report::redact;
use super::*;

#[test]
fn outcomes() {
    assert_eq!(outcome(r#"{"status":"ok","id":"x"}"#), Ok(()));
    assert_eq!(
        outcome(r#"{"status":"error","error":"rate_limited","correlationId":"1"}"#),
        Err("rate_limited".into())
    );
    assert_eq!(outcome("nope"), Err("unparsable_reply".into()));
}

#[test]
fn placeholders_and_redaction() {
    let c = HubCommand::m2m_cli(PathBuf::from("/x/m2m")).resolve(7, "sqlite://a.db");
    assert_eq!(
        c.display(),
        "/x/m2m hub --bind 127.0.0.1 --port 7 --database sqlite://a.db \
         --max-connections-per-ip 0 --registrations-per-hour 0"
    );
    assert_eq!(
        redact("postgres://m2m:secret@127.0.0.1:5432/db"),
        "postgres://m2m:…@127.0.0.1:5432/db"
    );
}

#[test]
fn many_agents_use_several_source_addresses() {
    let hub = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let opts = HubBenchOptions {
        agents: 100_000,
        ..HubBenchOptions::default()
    };
    assert_eq!(source_addresses(&opts, hub).len(), 4);
    let small = HubBenchOptions::default();
    assert_eq!(source_addresses(&small, hub), vec![None]);
}
