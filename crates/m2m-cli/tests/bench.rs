//! `m2m bench`, run tiny (a handful of operations) as a user runs it: each bench prints one
//! JSON document and starts `m2m` itself again for its second processes. No timing is
//! asserted.

mod common;

use common::{m2m, run};
use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let mut c = m2m();
    c.arg("bench").args(args);
    run(c, None).ok_json()
}

fn positive(v: &Value, pointer: &str) -> f64 {
    let x = v
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}"));
    assert!(x > 0.0, "{pointer} = {x} in {v:#}");
    x
}

#[test]
fn bench_hub_measures_the_m2m_hub() {
    // M2M_HUB names the agent commands' hub; the bench must not take it for its target.
    let mut c = m2m();
    c.env("M2M_HUB", "localhost:1").args([
        "bench",
        "hub",
        "--hub-cmd",
        "m2m",
        "--agents",
        "8",
        "--concurrency",
        "2",
        "--duration",
        "150ms",
        "--warmup",
        "0s",
    ]);
    let v = run(c, None).ok_json();
    assert_eq!(v["bench"], "hub");
    let spawned = v["options"]["target"]["spawn"].as_str().unwrap();
    assert!(spawned.contains(" hub --bind 127.0.0.1 "), "{spawned}");
    let run = &v["runs"][0];
    assert_eq!(run["register"]["ok"], 8);
    for action in ["discover", "lookup", "heartbeat"] {
        positive(run, &format!("/actions/{action}/ok"));
        assert!(run["actions"][action]["errors"]
            .as_object()
            .unwrap()
            .is_empty());
    }
    positive(run, "/hub_process/rss_mib_end");
}

#[test]
fn bench_p2p_runs_its_peer_as_m2m_bench() {
    let v = bench(&[
        "--threads",
        "1",
        "p2p",
        "--scenarios",
        "request,messages",
        "--in-flight",
        "4",
        "--duration",
        "150ms",
        "--warmup",
        "0s",
    ]);
    assert_eq!(v["bench"], "p2p");
    let peer = v["options"]["peer"].as_str().unwrap();
    assert!(peer.ends_with(" bench --threads 1 p2p-peer"), "{peer}");
    positive(&v, "/runs/0/request/ok");
    positive(&v, "/runs/0/messages/ok");
    positive(&v, "/summary/request_p99_us/median");
}

#[test]
fn bench_loopback_and_crypto_probe_the_machine() {
    let v = bench(&["loopback", "--duration", "100ms"]);
    positive(&v, "/process_ping_pong_200b/round_trips_per_s");
    positive(&v, "/ping_pong_200b/latency/p50_us");
    let v = bench(&["crypto", "--duration", "5ms"]);
    positive(&v, "/aes256gcm_seal_64k_mb_per_s");
}

/// `m2m bench relay`: its hub is `m2m bench hub-serve` started again from this binary, and
/// every scenario relays through it.
#[test]
fn bench_relay_relays_through_its_own_hub() {
    let v = bench(&[
        "relay",
        // Long enough that a loaded 2-core machine moves at least one 64 KiB bulk frame
        // in the window (150 ms once moved none while other tests ran).
        "--duration",
        "500ms",
        "--warmup",
        "50ms",
        "--streams",
        "16",
    ]);
    assert_eq!(v["bench"], "relay", "{v:#}");
    positive(&v, "/runs/0/figures/frames_per_s");
    positive(&v, "/runs/0/figures/bulk_mb_per_s");
    positive(&v, "/runs/0/figures/request_per_s");
    positive(&v, "/runs/0/scenarios/streams/hub_rss_with_streams_kib");
}

#[test]
fn bench_errors_are_sentences() {
    let mut c = m2m();
    c.args(["bench", "p2p", "--scenarios", "teleport"]);
    let line = run(c, None).error();
    assert!(line.contains("unknown scenario `teleport`"), "{line}");
}

/// `m2m hub --rate-limit N` throttles one busy WebSocket; `--rate-limit 0` never does.
#[test]
fn hub_rate_limit_is_the_operators_choice() {
    let measure = |limit: &str| {
        let hub_cmd = format!(
            "{} hub --bind 127.0.0.1 --port {{port}} --database {{database}} --rate-limit {limit}",
            common::m2m_path()
        );
        bench(&[
            "hub",
            "--hub-cmd",
            &hub_cmd,
            "--agents",
            "1",
            "--concurrency",
            "1",
            "--actions",
            "lookup",
            "--duration",
            "300ms",
            "--warmup",
            "0s",
        ])
    };
    let throttled = measure("5");
    let lookup = &throttled["runs"][0]["actions"]["lookup"];
    assert!(
        lookup["errors"]["rate_limited"].as_u64().unwrap_or(0) > 0,
        "{lookup:#}"
    );
    let free = measure("0");
    let lookup = &free["runs"][0]["actions"]["lookup"];
    assert!(
        lookup["errors"].as_object().unwrap().is_empty(),
        "{lookup:#}"
    );
    positive(lookup, "/ok");
}

/// `--peer-cmd` runs the P2P bench against another peer program (here `m2m bench p2p-peer`
/// spelled out; the original JavaScript SDK's peer is crates/m2m-bench/js/original-p2p.js).
#[test]
fn bench_p2p_takes_another_peer_command() {
    let peer = format!("{} bench p2p-peer", common::m2m_path());
    let v = bench(&[
        "p2p",
        "--peer-cmd",
        &peer,
        "--scenarios",
        "fresh,request",
        "--fresh-in-flight",
        "2",
        "--duration",
        "150ms",
        "--warmup",
        "0s",
    ]);
    assert_eq!(v["options"]["peer"], peer.as_str());
    positive(&v, "/runs/0/fresh/ok");
    positive(&v, "/runs/0/request/ok");
}
