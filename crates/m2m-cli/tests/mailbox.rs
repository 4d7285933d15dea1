//! The mailbox from the command line (docs/MAILBOX.md), against `m2m hub` processes on
//! SQLite (a file) and on PostgreSQL: a message to an agent that is not running is queued
//! (`"queued":true`), survives a hub restart, and reaches the agent exactly once — through
//! `m2m inbox` (which exits when it has everything) or first thing in `m2m listen` — with
//! `"via":"mailbox"`, the verified sender and the time it was sent. `--no-queue` fails as
//! before. PostgreSQL needs `M2M_TEST_POSTGRES` (scripts/test sets it).

mod common;

use std::path::Path;

use common::{run, Hub, Run, Running};
use serde_json::Value;

fn hub_on(database: &str, port: u16) -> Hub {
    Hub::start_on(database, port, &[])
}

/// `m2m ARGS` against `hub` with the recipient's key file.
fn as_recipient(hub: &Hub, key: &Path, args: &[&str]) -> Run {
    let mut c = hub.m2m();
    c.arg("--identity").arg(key).args(args);
    run(c, None)
}

/// A counter of the hub's `/metrics`.
fn metric(hub: &Hub, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&hub.address).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

fn json_lines(run: &Run) -> Vec<Value> {
    assert!(run.status.success(), "failed: {run:#?}");
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn offline_mail_reaches_the_agent_once(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("recipient.key");
    let mut hub = hub_on(database, 0);

    // The recipient ran once (its record and mailbox key are at the hub), then stopped.
    let mut c = hub.m2m();
    c.arg("--identity").arg(&key).arg("listen");
    let mut listen = Running::spawn(c);
    let connected = listen.next_json();
    let id = connected["id"].as_str().unwrap().to_owned();
    let (status, _) = listen.terminate();
    assert!(status.success());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let sent = hub.run(&["send", &id, "chat", "\"while you were away\""]);
    let sent = sent.ok_json();
    assert_eq!(sent["queued"], true, "{sent}");
    assert_eq!(sent["delivered"], false, "{sent}");
    assert_eq!(sent["route"], "mailbox", "{sent}");
    let message_id = sent["messageId"].as_str().unwrap().to_owned();
    assert!(sent["expiresAt"].as_u64().unwrap() > before, "{sent}");

    // `--no-queue`: the error of an offline agent, as before the mailbox.
    let refused = hub.run(&["send", "--no-queue", &id, "chat", "\"x\""]);
    let error = refused.error();
    assert!(error.contains("offline"), "{error}");

    // The hub restarts: the mail is in its database.
    let ws = hub.ws.clone();
    let (status, _) = hub.process.terminate();
    assert!(status.success());
    let port: u16 = ws
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/ws")
        .parse()
        .unwrap();
    hub = hub_on(database, port);

    let fetched = json_lines(&as_recipient(&hub, &key, &["inbox"]));
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    let m = &fetched[0];
    assert_eq!(m["event"], "message", "{m}");
    assert_eq!(m["via"], "mailbox", "{m}");
    assert_eq!(m["type"], "chat", "{m}");
    assert_eq!(m["payload"], "while you were away", "{m}");
    assert_eq!(m["authenticated"], true, "{m}");
    let ts = m["timestamp"].as_u64().unwrap();
    assert!(
        ts >= before.saturating_sub(1000) && ts <= before + 60_000,
        "the time it was sent: {m}"
    );
    // Exactly once: the second inbox is empty.
    let again = json_lines(&as_recipient(&hub, &key, &["inbox"]));
    assert!(again.is_empty(), "{again:?} (first was {message_id})");

    // Mail queued while it is away comes first thing when `m2m listen` starts.
    let sent = hub.run(&["send", &id, "task", "{\"n\":2}"]).ok_json();
    assert_eq!(sent["queued"], true, "{sent}");
    let mut c = hub.m2m();
    c.arg("--identity").arg(&key).arg("listen");
    let mut listen = Running::spawn(c);
    assert_eq!(listen.next_json()["event"], "connected");
    let line = listen.next_json();
    assert_eq!(line["event"], "message", "{line}");
    assert_eq!(line["via"], "mailbox", "{line}");
    assert_eq!(line["payload"], serde_json::json!({"n": 2}), "{line}");

    // Online now: a send is delivered directly, not queued.
    let sent = hub.run(&["send", &id, "chat", "\"live\""]).ok_json();
    assert_eq!(sent["delivered"], true, "{sent}");
    assert!(sent.get("queued").is_none(), "{sent}");
    let line = listen.next_json();
    assert_eq!(line["payload"], "live", "{line}");
    assert_ne!(line["via"], "mailbox", "{line}");
    drop(listen);
}

#[test]
fn offline_mail_survives_a_restart_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("hub.db").display());
    offline_mail_reaches_the_agent_once(&db);
}

#[test]
fn offline_mail_survives_a_restart_on_postgres() {
    let db = common::fresh_postgres_database("m2m_cli_mail");
    offline_mail_reaches_the_agent_once(&db);
}

#[test]
fn a_queued_request_is_answered_when_the_agent_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("responder.key");
    let hub = common::Hub::start();
    let mut c = hub.m2m();
    c.arg("--identity").arg(&key).arg("listen");
    let mut listen = Running::spawn(c);
    let id = listen.next_json()["id"].as_str().unwrap().to_owned();
    let (status, _) = listen.terminate();
    assert!(status.success());

    // Without --queue: fails fast.
    let error = hub.run(&["request", &id, "echo", "1"]).error();
    assert!(error.contains("offline"), "{error}");

    // With --queue: waits; the responder starts and answers the mailed request.
    let mut c = hub.m2m();
    c.args([
        "request",
        "--queue",
        "--timeout",
        "60s",
        &id,
        "echo",
        "{\"n\":7}",
    ]);
    let asking = std::thread::spawn(move || run(c, None));
    // The responder starts only once the request is stored (the hub's counter says so),
    // so the answer can only come through the mailbox path.
    let start = std::time::Instant::now();
    while metric(&hub, "m2m_hub_mail_stored_total") < 1 {
        assert!(
            start.elapsed() < common::PATIENCE,
            "the request was never queued"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut c = hub.m2m();
    c.arg("--identity").arg(&key).args(["listen", "--echo"]);
    let mut listen = Running::spawn(c);
    assert_eq!(listen.next_json()["event"], "connected");
    let answer = asking.join().unwrap().ok_json();
    // The echo: our payload, with the correlationId the request added (as the original).
    assert_eq!(answer["n"], 7, "{answer}");
    drop(listen);
}
