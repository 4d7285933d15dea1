//! Replays the requests of the original hub's recorded transcript
//! (`tests/data/vectors/hub-transcript-v2.jsonl`) against our hub and compares the replies:
//! field names and their order, JSON types, error strings, and list orderings. Values that
//! vary from run to run (ids, timestamps, uptimes, counters) are compared by type only;
//! ids are mapped from the transcript's to ours.
//!
//! Our hub is 2.1: its first message on every WebSocket is the unsolicited
//! `{"event":"challenge",…}`, which the original never sent. `Client::connect` reads it (as
//! an original agent ignores it), so the replay compares the replies to requests only.
//!
//! Deliberate differences (PROTOCOL.md **Ours:** rules) are asserted as such:
//! a register without an address is refused (`address_required`), and a heartbeat keeps the
//! `busy` status the agent chose (so `/agents` shows it `busy`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{config, http, Backend, Client, TestDb};
use m2m_hub::Hub;
use serde_json::{json, Value};

fn transcript() -> Vec<Value> {
    let path = format!(
        "{}/../../tests/data/vectors/hub-transcript-v2.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Keys, key order, types, and values (except run-dependent ones).
    Exact,
    /// Keys, key order and types.
    Shape,
}

const VOLATILE: &[&str] = &[
    "timestamp",
    "lastSeen",
    "uptime",
    "connections",
    "activeConnections",
];

fn compare(expected: &Value, actual: &Value, path: &str, mode: Mode, volatile: bool) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let ek: Vec<&String> = e.keys().collect();
            let ak: Vec<&String> = a.keys().collect();
            assert_eq!(ek, ak, "keys (and their order) at {path}");
            for (k, ev) in e {
                let vol = volatile || VOLATILE.contains(&k.as_str());
                compare(ev, &a[k], &format!("{path}.{k}"), mode, vol);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if mode == Mode::Exact {
                assert_eq!(e.len(), a.len(), "length at {path}: {actual}");
                for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                    compare(ev, av, &format!("{path}[{i}]"), mode, volatile);
                }
            } else if let (Some(ev), Some(av)) = (e.first(), a.first()) {
                for av in std::iter::once(av).chain(a.iter().skip(1)) {
                    compare(ev, av, &format!("{path}[]"), mode, volatile);
                }
            }
        }
        _ => {
            let same_type = std::mem::discriminant(expected) == std::mem::discriminant(actual)
                && (!expected.is_number() || expected.is_u64() == actual.is_u64());
            assert!(
                same_type,
                "type at {path}: expected {expected}, got {actual}"
            );
            if mode == Mode::Exact && !volatile {
                assert_eq!(expected, actual, "value at {path}");
            }
        }
    }
}

/// Replaces the transcript's ids by ours (and back) in a JSON value.
fn map_ids(v: &Value, ids: &[(String, String)]) -> Value {
    let mut text = v.to_string();
    for (theirs, ours) in ids {
        text = text.replace(theirs.as_str(), ours.as_str());
    }
    serde_json::from_str(&text).unwrap()
}

async fn replay(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (cfg, _clock) = config(&db);
    let hub = Hub::start(cfg).await.unwrap();
    let url = hub.ws_url();
    let lines = transcript();
    assert_eq!(lines.len(), 28, "transcript changed: review this test");

    // The three agents of the transcript, each on its own WebSocket (as the original SDK).
    let mut conns = vec![
        Client::connect(&url).await,
        Client::connect(&url).await,
        Client::connect(&url).await,
    ];
    let mut ids: Vec<(String, String)> = Vec::new();

    for (n, line) in lines.iter().enumerate() {
        let label = line["label"].as_str().unwrap();
        if let Some(path) = label.strip_prefix("HTTP GET ") {
            check_http(&hub, path, line, &ids).await;
            continue;
        }
        let sent = &line["sent"];
        let mut expected = line["received"].clone();

        if n < 3 {
            // register, one agent per connection.
            let mut request = sent.clone();
            if n == 2 {
                // Ours: a register without an address is refused, not stored port-less.
                let refused = conns[2].req(request.clone()).await;
                assert_eq!(
                    refused,
                    json!({"status":"error","error":"address_required","correlationId":"1"})
                );
                request["address"] = json!("1.2.3.4:4103");
                expected["address"] = json!("127.0.0.1:4103");
            }
            let got = conns[n].req(request).await;
            let theirs = expected["id"].as_str().unwrap().to_owned();
            let ours = got["id"].as_str().unwrap().to_owned();
            expected["id"] = json!(ours);
            compare(&expected, &got, label, Mode::Exact, false);
            assert_eq!(ours.len(), 32);
            assert!(ours
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            ids.push((theirs, ours));
            continue;
        }
        // After the registers: the third agent's stored address has our port.
        let mut expected = map_ids(&expected, &ids);
        patch_address(&mut expected, &ids[2].1);

        if label.contains("websocket of an agent closed") {
            let b = std::mem::replace(&mut conns[1], Client::connect(&url).await);
            b.close().await;
            let b_id = ids[1].1.clone();
            let mut offline = false;
            for _ in 0..600 {
                let req = json!({"action":"lookup","id":b_id,"correlationId":"w"});
                if conns[0].req(req).await["agent"]["status"] == "offline" {
                    offline = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert!(offline, "a closed WebSocket's agent never went offline");
        }

        let got = if let Some(text) = sent.as_str() {
            conns[0].send_text(text).await;
            conns[0].recv().await.unwrap()
        } else {
            let request = map_ids(sent, &ids);
            let action = request["action"].as_str().unwrap_or("");
            let conn = match action {
                "heartbeat" | "status" | "disconnect" => {
                    owner_of(request["id"].as_str().unwrap(), &ids)
                }
                _ => 0,
            };
            conns[conn].req(request).await
        };
        let mode = if label == "stats" {
            Mode::Shape
        } else {
            Mode::Exact
        };
        compare(&expected, &got, label, mode, false);
    }
    for c in conns {
        c.close().await;
    }
    hub.shutdown().await.unwrap();
    db.drop_db().await;
}

fn owner_of(id: &str, ids: &[(String, String)]) -> usize {
    ids.iter().position(|(_, ours)| ours == id).unwrap_or(0)
}

/// The transcript stored the third agent without a port; ours has one.
fn patch_address(v: &mut Value, third_id: &str) {
    match v {
        Value::Object(m) => {
            if m.get("id").and_then(Value::as_str) == Some(third_id) {
                if let Some(a) = m.get_mut("address") {
                    *a = json!("127.0.0.1:4103");
                }
            }
            m.values_mut().for_each(|x| patch_address(x, third_id));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| patch_address(x, third_id)),
        _ => {}
    }
}

async fn check_http(hub: &m2m_hub::RunningHub, path: &str, line: &Value, ids: &[(String, String)]) {
    let reply = http(hub.local_addr(), "GET", path).await;
    assert_eq!(
        u64::from(reply.status),
        line["status"].as_u64().unwrap(),
        "{path}"
    );
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/json"),
        "{path}"
    );
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("*"),
        "{path}"
    );
    let body = reply.json();
    let expected = map_ids(&line["body"], ids);
    compare(&expected, &body, path, Mode::Shape, false);
    // Not the request's `Host` (hub.test), which the original reflects: the address the
    // client connected to (docs/SECURITY.md, "/info").
    let ws = format!("ws://127.0.0.1:{}/ws", hub.local_addr().port());
    let first = &ids[0].1;
    match path {
        "/" | "/info" => {
            for k in [
                "name",
                "version",
                "description",
                "encryption",
                "github",
                "twitter",
            ] {
                assert_eq!(
                    body["protocol"][k], expected["protocol"][k],
                    "{path} protocol.{k}"
                );
            }
            assert_eq!(body["protocol"]["websocket"], json!(ws));
            assert_eq!(body["api"]["websocket"]["url"], json!(ws));
            assert_eq!(body["hub"]["status"], "running");
            assert_eq!(body["api"]["http"], expected["api"]["http"]);
            let actions: Vec<&String> = body["api"]["websocket"]["actions"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            let theirs: Vec<&String> = expected["api"]["websocket"]["actions"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            assert_eq!(actions, theirs);
        }
        "/health" => {
            assert_eq!(body["status"], "healthy");
            assert_eq!(body["version"], "2.0.0");
            let ts = body["timestamp"].as_str().unwrap();
            assert_eq!(ts.len(), "2026-11-24T19:15:57.419Z".len(), "{ts}");
            assert!(ts.ends_with('Z'));
        }
        "/agents" | "/agents?capability=chat&limit=5&offset=0" => {
            assert_eq!(body["count"], 1);
            assert_eq!(body["total"], 1);
            assert_eq!(body["limit"], expected["limit"]);
            assert_eq!(body["offset"], expected["offset"]);
            assert_eq!(body["agents"][0]["id"], json!(first));
            // Ours: the heartbeat kept the status the agent chose.
            assert_eq!(body["agents"][0]["status"], "busy");
            assert_eq!(
                body["agents"][0]["metadata"],
                expected["agents"][0]["metadata"]
            );
        }
        "/agents?status=busy" => {
            // Ours: still busy after a heartbeat (the original reset it to online).
            assert_eq!(body["count"], 1);
            assert_eq!(body["agents"][0]["id"], json!(first));
        }
        "/stats" => {
            assert_eq!(body["status"], "ok");
            assert_eq!(body["hub"]["version"], "2.0.0");
            assert_eq!(body["agents"]["total"], 3);
            assert_eq!(body["agents"]["offline"], 2);
        }
        "/nope" => {
            assert_eq!(body["error"], "Not found");
            assert_eq!(body["endpoints"], expected["endpoints"]);
            assert_eq!(body["websocket"], json!(ws));
        }
        other => panic!("unexpected HTTP line {other}"),
    }
}

on_both_backends! {
    transcript_replay => super::replay;
}
