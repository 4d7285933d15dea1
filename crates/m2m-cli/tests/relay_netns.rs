//! The relay end to end, as users run it: `m2m hub` and agent B in a "public" network
//! namespace, agent A (`m2m listen --echo`, no relay flag: zero configuration) behind a NAT
//! router namespace that lets it connect out and lets nobody connect in (tests/netns). Needs
//! root, `ip` and `nft` (scripts/test-deps installs them); fails, never skips, without them.

mod common;
mod netns;

use common::{run, Run, Running};
use netns::{Side, Topology, PRIVATE_IP, PUBLIC_IP, ROUTER_PUBLIC_IP};
use serde_json::{json, Value};

/// The hub's port inside the public namespace: the namespace is fresh, so a fixed port is
/// free, and the hub's public URL (what records name in `relay`) is known before it starts.
const HUB_PORT: u16 = 3000;

fn hub_ws() -> String {
    format!("ws://{PUBLIC_IP}:{HUB_PORT}/ws")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// Everything one test runs. Fields drop in order: the processes end before the
/// namespaces they run in are deleted.
struct Net {
    a: Running,
    a_line: Value,
    b: Running,
    b_line: Value,
    _hub: Running,
    _db: tempfile::TempDir,
    topology: Topology,
}

impl Net {
    /// The network, the hub (SQLite in a temp dir), B in public, A behind the NAT.
    fn start() -> Net {
        let topology = Topology::new();
        let db = tempfile::tempdir().expect("temp dir");
        let mut cmd = topology.m2m(Side::Public);
        cmd.args(["hub", "--bind", PUBLIC_IP, "--port", &HUB_PORT.to_string()])
            .arg("--database")
            .arg(format!("sqlite://{}", db.path().join("hub.db").display()))
            .args(["--public-url", &hub_ws()]);
        let mut hub = Running::spawn(cmd);
        let listening = hub.next_json();
        assert_eq!(listening["event"], "listening", "{listening}");
        let (b, b_line) = listen(&topology, Side::Public);
        let (a, a_line) = listen(&topology, Side::Private);
        Net {
            a,
            a_line,
            b,
            b_line,
            _hub: hub,
            _db: db,
            topology,
        }
    }

    /// Runs `m2m ARGS` in `side`'s namespace against the hub.
    fn run(&self, side: Side, args: &[&str]) -> Run {
        let mut c = self.topology.m2m(side);
        c.env("M2M_HUB", hub_ws()).args(args);
        run(c, None)
    }

    fn a_id(&self) -> &str {
        s(&self.a_line["id"])
    }

    fn b_id(&self) -> &str {
        s(&self.b_line["id"])
    }

    /// The port A listens on (its registered address names the router's IP with it).
    fn a_port(&self) -> &str {
        let address = s(&self.a_line["address"]);
        address.rsplit_once(':').map(|(_, p)| p).unwrap_or(address)
    }
}

/// `m2m listen --echo` in `side`: no relay flag, no address; returns its `connected` line.
fn listen(topology: &Topology, side: Side) -> (Running, Value) {
    let mut c = topology.m2m(side);
    c.env("M2M_HUB", hub_ws()).args(["listen", "--echo"]);
    let mut l = Running::spawn(c);
    let connected = l.next_json();
    assert_eq!(connected["event"], "connected", "{connected}");
    (l, connected)
}

/// The topology itself, with no relay involved: A reaches the hub and B through the NAT,
/// the hub sees A at the router's address, and neither that address nor A's own can be
/// dialled from the public side, although A answers there from its own side.
#[test]
fn nat_lets_the_private_agent_out_and_nobody_in() {
    let mut net = Net::start();

    // The hub saw A's connection come from the router: the masquerade works.
    let a_address = s(&net.a_line["address"]).to_owned();
    assert_eq!(
        a_address,
        format!("{ROUTER_PUBLIC_IP}:{}", net.a_port()),
        "{}",
        net.a_line
    );
    assert!(
        s(&net.b_line["address"]).starts_with(&format!("{PUBLIC_IP}:")),
        "{}",
        net.b_line
    );
    let all = net.run(Side::Public, &["discover"]).ok_json();
    let ids: Vec<&str> = all
        .as_array()
        .expect("discover prints an array")
        .iter()
        .map(|r| s(&r["id"]))
        .collect();
    assert!(
        ids.contains(&net.a_id()) && ids.contains(&net.b_id()),
        "{all}"
    );

    // A answers on its P2P port, seen from its own network (the router's private side)…
    let own = format!("{PRIVATE_IP}:{}", net.a_port());
    let pong = net.run(Side::Router, &["ping", &own]).ok_json();
    assert_eq!(pong["pong"], true, "{pong}");
    // …but from the public side neither its registered address (the router, which forwards
    // nothing inwards) nor its private one (no route) can be dialled.
    for target in [&a_address, &own] {
        let e = net
            .run(Side::Public, &["ping", target, "--timeout", "3s"])
            .error();
        assert!(e.contains("could not reach the agent"), "{target}: {e}");
    }

    // A → B goes out through the NAT, directly: B is public.
    let sent = net
        .run(Side::Private, &["send", net.b_id(), "task", r#"{"n":1}"#])
        .ok_json();
    assert_eq!(sent["delivered"], true, "{sent}");
    let line = net.b.next_json();
    assert_eq!(line["event"], "message", "{line}");
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("task"), &json!({"n": 1}))
    );
    let answer = net
        .run(
            Side::Private,
            &["request", net.b_id(), "ask", r#"{"q":"out"}"#],
        )
        .ok_json();
    assert_eq!(answer["q"], "out", "{answer}");
    assert_eq!(net.b.next_json()["type"], "ask");
}

/// The relay, zero configuration: B reaches A (which nobody can dial) through the hub both
/// with `send` and `request`, the outputs and A's record say so (docs/RELAY.md sections 3
/// and 4), and A → B stays direct.
#[test]
fn relay_reaches_the_agent_behind_nat_with_no_flag() {
    let mut net = Net::start();

    // B → A: send and request, through the relay (A cannot be dialled: the test above).
    let sent = net
        .run(Side::Public, &["send", net.a_id(), "task", r#"{"n":2}"#])
        .ok_json();
    assert_eq!(sent["delivered"], true, "{sent}");
    let line = net.a.next_json();
    assert_eq!(line["event"], "message", "{line}");
    assert_eq!(line["payload"], json!({"n": 2}), "{line}");
    assert_eq!(line["authenticated"], true, "{line}");
    let answer = net
        .run(
            Side::Public,
            &["request", net.a_id(), "ask", r#"{"q":"in"}"#],
        )
        .ok_json();
    assert_eq!(answer["q"], "in", "{answer}");
    let asked = net.a.next_json();
    assert_eq!(asked["type"], "ask", "{asked}");

    // A → B: direct, B is public.
    let sent_out = net
        .run(Side::Private, &["send", net.b_id(), "task", r#"{"n":3}"#])
        .ok_json();
    let line_out = net.b.next_json();
    assert_eq!(line_out["payload"], json!({"n": 3}), "{line_out}");

    // The CLI names routes and reachability (docs/RELAY.md sections 3 and 4). A's record:
    // reachable only through this hub's relay; B's: directly.
    let record = net.run(Side::Public, &["lookup", net.a_id()]).ok_json();
    assert_eq!(record["reachable"], "relay", "{record}");
    assert_eq!(record["relay"], hub_ws().as_str(), "{record}");
    let record = net.run(Side::Public, &["lookup", net.b_id()]).ok_json();
    assert_eq!(record["reachable"], "direct", "{record}");
    assert_eq!(net.a_line["reachable"], "relay", "{}", net.a_line);
    assert_eq!(net.b_line["reachable"], "direct", "{}", net.b_line);
    assert_eq!(sent["route"], "relay", "{sent}");
    assert_eq!(line["route"], "relay", "{line}");
    assert_eq!(asked["route"], "relay", "{asked}");
    assert_eq!(sent_out["route"], "direct", "{sent_out}");
    assert_eq!(line_out["route"], "direct", "{line_out}");
}
