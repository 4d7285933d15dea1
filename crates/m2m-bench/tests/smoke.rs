//! Every bench mode, run tiny (a few operations), with the shape of its JSON checked.
//! No timing is asserted: these prove the benches run, not how fast anything is.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use m2m_bench::sys::CommandLine;
use m2m_bench::{
    run_crypto, run_hub, run_loopback, run_p2p, CryptoOptions, HubAction, HubBenchOptions,
    HubCommand, HubTarget, LoopbackOptions, P2pBenchOptions, PeerCommand,
};
use serde_json::Value;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_m2m-bench"))
}

/// The bench binary, to which a bench subcommand is appended.
fn bench() -> CommandLine {
    CommandLine {
        program: exe(),
        args: Vec::new(),
    }
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_bench_runs_each_action_again_with_dashboards_open() {
    let opts = HubBenchOptions {
        agents: 6,
        concurrency: 2,
        duration: Duration::from_millis(1200),
        warmup: Duration::from_millis(50),
        actions: vec![HubAction::Lookup],
        dashboards: 3,
        ..HubBenchOptions::default()
    };
    let v = run_hub(opts).await.unwrap();
    let run = &v["runs"][0];
    assert!(number(run, "/actions/lookup/ok") > 0.0);
    assert!(number(run, "/actions/lookup_with_dashboards/ok") > 0.0);
    assert_eq!(
        number(run, "/actions/lookup_with_dashboards/dashboards/open"),
        3.0
    );
    // Each stream sends its first event at once and one `stats` a second.
    assert!(
        number(
            run,
            "/actions/lookup_with_dashboards/dashboards/events_read"
        ) >= 3.0
    );
    assert!(run.pointer("/figures/lookup_dashboard_cost_pct").is_some());
    assert!(run.pointer("/actions/lookup/dashboards").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_bench_against_a_spawned_hub() {
    let opts = HubBenchOptions {
        target: HubTarget::Spawn(HubCommand::bench_serve(bench())),
        agents: 12,
        concurrency: 3,
        duration: Duration::from_millis(150),
        warmup: Duration::from_millis(50),
        hold: Some(Duration::from_millis(300)),
        hold_heartbeat_interval: Duration::from_millis(100),
        repeat: 2,
        ..HubBenchOptions::default()
    };
    let v = run_hub(opts).await.unwrap();
    assert_eq!(v["bench"], "hub");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(number(run, "/registered"), 12.0);
        assert_eq!(number(run, "/register/ok"), 12.0);
        for action in HubAction::ALL {
            let name = action.name();
            assert!(number(run, &format!("/actions/{name}/ok")) > 0.0, "{name}");
            assert!(run
                .pointer(&format!("/actions/{name}/errors"))
                .unwrap()
                .as_object()
                .unwrap()
                .is_empty());
            assert!(number(run, &format!("/actions/{name}/latency/p99_us")) > 0.0);
            assert!(number(run, &format!("/figures/{name}_ops_per_s")) > 0.0);
        }
        // Everyone but the caller matches the one capability, up to the limit.
        assert_eq!(number(run, "/actions/discover/agents_per_reply"), 11.0);
        assert_eq!(number(run, "/hold/agents_connected"), 12.0);
        assert_eq!(number(run, "/hold/agents_heartbeated"), 12.0);
        assert!(number(run, "/hold/heartbeats/ok") > 0.0);
        assert!(number(run, "/hub_process/rss_mib_end") > 0.0);
        assert_eq!(number(run, "/hub_stats/agents/online"), 12.0);
    }
    for key in ["register_ops_per_s", "lookup_p99_us", "hub_rss_mib_end"] {
        let s = &v["summary"][key];
        assert!(s["median"].as_f64().is_some(), "{key}: {s}");
        assert_eq!(s["runs"].as_array().unwrap().len(), 2);
    }
}

/// Several agents per WebSocket (how the bench holds more agents than the descriptor
/// limit allows connections): all register, all heartbeat during the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_bench_several_agents_per_connection() {
    let opts = HubBenchOptions {
        target: HubTarget::InProcess,
        agents: 14,
        agents_per_connection: 3,
        concurrency: 2,
        actions: vec![HubAction::Lookup],
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        hold: Some(Duration::from_millis(400)),
        hold_heartbeat_interval: Duration::from_millis(100),
        ..HubBenchOptions::default()
    };
    let v = run_hub(opts).await.unwrap();
    assert_eq!(number(&v, "/options/connections"), 5.0);
    let run = &v["runs"][0];
    assert_eq!(number(run, "/connect/connections"), 5.0);
    assert_eq!(number(run, "/registered"), 14.0);
    assert_eq!(number(run, "/hub_stats/agents/online"), 14.0);
    assert_eq!(number(run, "/hub_stats/hub/activeConnections"), 5.0);
    assert_eq!(number(run, "/hold/connections_open"), 5.0);
    assert_eq!(number(run, "/hold/agents_connected"), 14.0);
    assert_eq!(number(run, "/hold/agents_heartbeated"), 14.0);
    assert!(run
        .pointer("/hold/heartbeats/errors")
        .unwrap()
        .as_object()
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_bench_in_process_with_groups() {
    let opts = HubBenchOptions {
        target: HubTarget::InProcess,
        agents: 20,
        concurrency: 4,
        capability_groups: 4,
        discover_limit: 3,
        pipeline: 4,
        duration: Duration::from_millis(100),
        warmup: Duration::ZERO,
        actions: vec![HubAction::Discover],
        ..HubBenchOptions::default()
    };
    let v = run_hub(opts).await.unwrap();
    let run = &v["runs"][0];
    assert_eq!(number(run, "/actions/discover/agents_per_reply"), 3.0);
    assert!(run.pointer("/actions/lookup").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_bench_every_scenario() {
    let mut opts = P2pBenchOptions::new(PeerCommand::bench_peer(bench()));
    opts.duration = Duration::from_millis(200);
    opts.warmup = Duration::from_millis(50);
    opts.bulk_size = 4096;
    opts.in_flight = 8;
    opts.bulk_in_flight = 2;
    opts.fresh_in_flight = 2;
    opts.request_in_flight = 4;
    let v = run_p2p(opts).await.unwrap();
    assert_eq!(v["bench"], "p2p");
    let run = &v["runs"][0];
    for name in [
        "messages",
        "bulk",
        "fresh",
        "fresh-v21",
        "request",
        "request-pipelined",
    ] {
        assert!(number(run, &format!("/{name}/ok")) > 0.0, "{name}: {run:#}");
        assert!(
            run[name]["errors"].as_object().unwrap().is_empty(),
            "{name}: {run:#}"
        );
        assert!(number(run, &format!("/{name}/latency/p50_us")) > 0.0);
    }
    for key in [
        "messages_per_s",
        "bulk_mb_per_s",
        "fresh_per_s",
        "fresh_v21_per_s",
        "request_p99_us",
        "request_pipelined_per_s",
    ] {
        assert!(v["summary"][key]["median"].as_f64().is_some(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_probe() {
    let v = run_loopback(LoopbackOptions {
        duration: Duration::from_millis(100),
        echo: Some(CommandLine {
            program: exe(),
            args: vec!["loopback-echo".into()],
        }),
    })
    .await
    .unwrap();
    assert!(number(&v, "/stream_64k_writes_mb_per_s") > 0.0);
    assert!(number(&v, "/ping_pong_200b/round_trips_per_s") > 0.0);
    assert!(number(&v, "/process_ping_pong_200b/round_trips_per_s") > 0.0);
    assert!(number(&v, "/process_ping_pong_200b/latency/p99_us") > 0.0);
    assert!(number(&v, "/pipelined_200b_64_in_flight_per_s") > 0.0);
    assert!(number(&v, "/connect_exchange_close_per_s") > 0.0);
}

#[test]
fn crypto_probe() {
    let v = run_crypto(CryptoOptions {
        duration: Duration::from_millis(10),
    });
    for key in [
        "aes256gcm_seal_64k_mb_per_s",
        "x25519_keypair_and_agree_per_s",
        "base64_decode_64k_mb_per_s",
        "envelope_open_64k_mb_per_s",
        "frame_parse_message_200b_per_s",
    ] {
        assert!(number(&v, &format!("/{key}")) > 0.0, "{key}");
    }
}

#[test]
fn the_binary_prints_json() {
    let out = Command::new(exe())
        .args(["crypto", "--duration", "5ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["bench"], "crypto");

    let bad = Command::new(exe())
        .args(["hub", "--actions", "fly"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown hub action"));
}
