//! The README's 15-line responder is `examples/responder.rs`, word for word, and it runs:
//! the compiled example answers a request through a real hub.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use m2m_agent::{json, Agent};

const EXAMPLE: &str = include_str!("../examples/responder.rs");
const README: &str = include_str!("../../../README.md");

/// The example's code without its `//!` header.
fn code() -> String {
    EXAMPLE
        .lines()
        .skip_while(|l| l.starts_with("//!") || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_readme_shows_the_example_and_it_is_short() {
    let code = code();
    assert!(
        README.contains(&code),
        "README.md and examples/responder.rs differ"
    );
    let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines < 15, "{lines} lines");
}

/// The example `name`, compiled as the program a user runs. `cargo test --all-targets` (what
/// CI runs) builds examples only as test harnesses, which print "running 0 tests", so this
/// asks cargo for the real binary (the build lock is free while tests run; the example's
/// dependencies are already built, so it only links).
fn built_example(name: &str) -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "-p", "m2m-agent", "--example", name])
        .arg("--message-format=json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo could not be started");
    assert!(out.status.success(), "cargo build --example {name} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable for example {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_answers_requests() {
    let mut config = m2m_hub::HubConfig::in_memory();
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let hub = m2m_hub::Hub::start(config).await.unwrap();

    let example = built_example("responder");
    let mut child = Command::new(&example)
        .env("M2M_HUB", hub.ws_url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .expect("the example did not start")
        .unwrap()
        .unwrap();
    let id = line
        .trim()
        .strip_prefix("answering as ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();

    let asker = Agent::builder().hub(&hub.ws_url()).connect().await.unwrap();
    let answer = asker
        .request(
            &id,
            "compute",
            json!([1, 2, 3]),
            Some(Duration::from_secs(30)),
        )
        .await;
    let failed = asker
        .request(
            &id,
            "compute",
            json!("three"),
            Some(Duration::from_secs(30)),
        )
        .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer.unwrap(), json!({"sum": 6}));
    assert!(failed.unwrap()["error"].is_string());
    asker.disconnect().await.unwrap();
    hub.shutdown().await.unwrap();
}
