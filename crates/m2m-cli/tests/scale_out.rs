//! Three `m2m hub` processes on one real PostgreSQL database (issue 20): one is killed with
//! SIGKILL; the agents it held go offline on the others once its liveness expires, an
//! `m2m listen` given several hubs reconnects to the next one under the same id (and says
//! so), and what was registered or queued is still there. Needs `M2M_TEST_POSTGRES` (scripts/test
//! sets it); missing is a failure, never a skip.

mod common;

use std::time::{Duration, Instant};

use common::{m2m, Hub, Running, PATIENCE};
use serde_json::Value;

/// `m2m hub` on `database` with a short liveness expiry (1 s, refreshed every 300 ms).
fn hub_on(database: &str) -> Hub {
    Hub::start_on(
        database,
        0,
        &["--alive-interval", "300ms", "--hub-expiry", "1s"],
    )
}

/// A plain HTTP/1.1 GET (the body and headers as text).
fn http_get(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn lookup(via: &Hub, id: &str) -> Value {
    via.run(&["lookup", id]).ok_json()
}

/// Polls `lookup` through `via` until `pred` holds (bounded by PATIENCE); returns the record.
fn lookup_until(via: &Hub, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let record = lookup(via, id);
        if pred(&record) {
            return record;
        }
        assert!(start.elapsed() < PATIENCE, "never: {record}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_killed_hub_s_agents_go_offline_and_failover_keeps_the_id() {
    let db = common::fresh_postgres_database("m2m_cli_test");
    let one = hub_on(&db);
    let two = hub_on(&db);
    let three = hub_on(&db);

    // `moving` knows hubs one and two; `stuck` only hub one.
    let mut cmd = m2m();
    cmd.args([
        "listen",
        "--hub",
        &format!("{},{}", one.ws, two.ws),
        "--capabilities",
        "failover",
    ]);
    let mut moving = Running::spawn(cmd);
    let connected = moving.next_json();
    assert_eq!(connected["event"], "connected", "{connected}");
    assert_eq!(connected["hub"], one.ws.as_str(), "{connected}");
    let moving_id = connected["id"].as_str().unwrap().to_owned();
    let (_stuck, stuck_connected) = one.listen(&["--capabilities", "stuck"]);
    let stuck_id = stuck_connected["id"].as_str().unwrap().to_owned();
    for id in [&moving_id, &stuck_id] {
        lookup_until(&three, id, |r| r["status"] == "online");
    }
    // `sleeper` ran once through hub one and stopped; mail for it is queued through hub one.
    let dir = tempfile::tempdir().unwrap();
    let sleeper_key = dir.path().join("sleeper.key");
    let mut c = one.m2m();
    c.arg("--identity").arg(&sleeper_key).arg("listen");
    let mut sleeper = Running::spawn(c);
    let sleeper_id = sleeper.next_json()["id"].as_str().unwrap().to_owned();
    assert!(sleeper.terminate().0.success());
    let queued = one
        .run(&["send", &sleeper_id, "note", "\"kept\""])
        .ok_json();
    assert_eq!(queued["queued"], true, "{queued}");

    // kill -9: no goodbye, no clean shutdown of its WebSockets' rows.
    let mut one = one;
    one.process.child.kill().unwrap();
    one.process.child.wait().unwrap();

    // The agent with a second hub moves there, with the same id.
    let reconnected = loop {
        let line = moving.next_json();
        if line["event"] == "reconnected" {
            break line;
        }
        assert_eq!(line["event"], "hub_lost", "{line}");
    };
    assert_eq!(reconnected["id"], moving_id.as_str(), "{reconnected}");
    assert_eq!(reconnected["hub"], two.ws.as_str(), "{reconnected}");

    // The one held only by the dead hub goes offline everywhere once the hub's liveness
    // expires (1 s here), not at the 2-minute sweep; its record is kept.
    let record = lookup_until(&three, &stuck_id, |r| r["status"] == "offline");
    assert_eq!(
        record["capabilities"],
        serde_json::json!(["stuck"]),
        "{record}"
    );
    let record = lookup_until(&two, &moving_id, |r| r["status"] == "online");
    assert_eq!(
        record["capabilities"],
        serde_json::json!(["failover"]),
        "{record}"
    );

    // Reached through hub three, at its new hub.
    let sent = three.run(&["send", &moving_id, "chat", "\"after the kill\""]);
    assert!(sent.status.success(), "{sent:?}");
    let message = moving.next_json();
    assert_eq!(message["event"], "message", "{message}");
    assert_eq!(message["payload"], "after the kill");

    // What was queued through the dead hub is in the database: fetched through hub two.
    let mut c = two.m2m();
    c.arg("--identity").arg(&sleeper_key).arg("inbox");
    let fetched = common::run(c, None);
    assert!(fetched.status.success(), "{fetched:?}");
    let lines: Vec<Value> = fetched
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        (&lines[0]["via"], &lines[0]["payload"]),
        (&Value::from("mailbox"), &Value::from("kept"))
    );

    // The dead hub's instance row is gone; the two live ones remain.
    let metrics = http_get(&three.address, "/metrics");
    let instances = metrics
        .lines()
        .find(|l| l.starts_with("m2m_hub_instances "))
        .unwrap_or_else(|| panic!("no m2m_hub_instances in {metrics}"));
    assert_eq!(instances, "m2m_hub_instances 2", "{instances}");
}
