//! Three `m2m hub` processes on one real PostgreSQL database (issue 20): one is killed with
//! SIGKILL; the agents it held go offline on the others once its liveness expires, an
//! `m2m listen` given several hubs reconnects to the next one under the same id (and says
//! so), and what was registered is still there. Needs `M2M_TEST_POSTGRES` (scripts/test
//! sets it); missing is a failure, never a skip.

mod common;

use std::time::{Duration, Instant};

use common::{m2m, Hub, Running, PATIENCE};
use serde_json::Value;

fn fresh_database() -> String {
    let admin = std::env::var("M2M_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!(
            "M2M_TEST_POSTGRES is not set: this test needs a PostgreSQL superuser URL such as \
             postgres://m2m:m2m@127.0.0.1:5432/postgres (scripts/test starts a local server)"
        )
    });
    let base = &admin[..admin.rfind('/').expect("a URL with a database")];
    format!("{base}/m2m_cli_test_{:016x}", rand::random::<u64>())
}

/// `m2m hub` on `database` with a short liveness expiry (1 s, refreshed every 300 ms).
fn hub_on(database: &str) -> Hub {
    let mut cmd = m2m();
    cmd.args([
        "hub",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--database",
        database,
        "--alive-interval",
        "300ms",
        "--hub-expiry",
        "1s",
    ]);
    Hub::from(Running::spawn(cmd))
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
    let db = fresh_database();
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

    // The dead hub's instance row is gone; the two live ones remain.
    let metrics = http_get(&three.address, "/metrics");
    let instances = metrics
        .lines()
        .find(|l| l.starts_with("m2m_hub_instances "))
        .unwrap_or_else(|| panic!("no m2m_hub_instances in {metrics}"));
    assert_eq!(instances, "m2m_hub_instances 2", "{instances}");
}
