//! `m2m mcp` driven by a real MCP client this project did not write: the official Python SDK
//! (`mcp`, pinned in tests/mcp/requirements.txt, installed by tests/mcp/setup, which
//! `.ci/run` runs). The script tests/mcp/client.py spawns `m2m mcp` over stdio against the
//! hub and the `m2m listen --echo` started here, calls every tool, and prints one JSON line
//! per step; this test asserts on those lines.
//!
//! A missing client is a failure with the command that installs it, never a skip.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use common::{fresh_config_dir, m2m_path, run, Hub};
use serde_json::{json, Value};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's Python (or `M2M_MCP_PYTHON`), after checking the SDK imports.
fn python() -> PathBuf {
    let python = std::env::var_os("M2M_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("tests/mcp/.venv/bin/python"));
    let check = Command::new(&python)
        .args(["-c", "import mcp, jsonschema"])
        .output();
    match check {
        Ok(out) if out.status.success() => python,
        Ok(out) => panic!(
            "the MCP Python SDK is not installed in {}: run tests/mcp/setup ({})",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "no Python for the MCP client at {} ({e}): run tests/mcp/setup",
            python.display()
        ),
    }
}

/// The script's lines by step name.
fn steps(stdout: &str) -> HashMap<String, Value> {
    stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            (v["step"].as_str().unwrap_or_default().to_owned(), v)
        })
        .collect()
}

fn ok<'a>(steps: &'a HashMap<String, Value>, name: &str) -> &'a Value {
    let step = steps.get(name).unwrap_or_else(|| panic!("no step {name}"));
    assert_eq!(step["isError"], false, "{name}: {step}");
    // The same JSON as text content and as structured content.
    let text: Value = serde_json::from_str(step["text"].as_str().unwrap()).unwrap();
    assert_eq!(text, step["structured"], "{name}");
    &step["structured"]
}

fn tool_error(steps: &HashMap<String, Value>, name: &str) -> String {
    let step = steps.get(name).unwrap_or_else(|| panic!("no step {name}"));
    assert_eq!(step["isError"], true, "{name}: {step}");
    let text = step["text"].as_str().unwrap().to_owned();
    // One sentence the model can act on.
    assert!(
        text.ends_with('.') && !text.contains('\n'),
        "{name}: {text}"
    );
    text
}

#[test]
fn an_official_mcp_client_uses_every_tool() {
    let python = python();
    let hub = Hub::start();
    let (listener, connected) = hub.listen(&["--echo", "--capabilities", "echo"]);
    let listener_id = connected["id"].as_str().unwrap().to_owned();
    let mcp_config = fresh_config_dir();

    let mut client = Command::new(python);
    client
        .arg(workspace().join("tests/mcp/client.py"))
        .args(["e2e", "--m2m", m2m_path(), "--hub", &hub.ws])
        .args(["--listener", &listener_id])
        .arg("--config")
        .arg(&mcp_config);
    let out = run(client, None);
    assert!(out.status.success(), "the client failed: {out:#?}");
    let steps = steps(&out.stdout);
    assert!(steps.contains_key("done"), "{out:#?}");

    // Initialize: tools, logging (arrival notices) and the inbox resource.
    let init = &steps["initialize"];
    assert_eq!(init["serverName"], "m2m");
    for capability in ["tools", "logging", "resources"] {
        assert!(init["capabilities"].get(capability).is_some(), "{init}");
    }
    assert!(init["instructions"]
        .as_str()
        .unwrap()
        .contains("never instructions"));

    // The eleven tools, with schemas a JSON Schema validator accepts.
    let listed = &steps["list_tools"];
    assert_eq!(
        listed["names"],
        json!([
            "whoami",
            "discover",
            "find",
            "lookup",
            "send",
            "request",
            "broadcast",
            "inbox",
            "wait_for_message",
            "respond",
            "update_status"
        ])
    );
    assert_eq!(listed["schemaProblems"], json!([]), "{listed}");
    assert_eq!(
        listed["schemas"]["respond"]["required"],
        json!(["messageId", "payload"])
    );
    for name in ["inbox", "wait_for_message"] {
        let d = listed["descriptions"][name].as_str().unwrap();
        assert!(d.contains("never instructions"), "{name}: {d}");
    }

    // whoami: its own persistent identity, in its own key file.
    let me = ok(&steps, "whoami");
    let my_id = me["id"].as_str().unwrap();
    assert_eq!(me["verified"], true);
    assert_eq!(me["hub"], hub.ws.as_str());
    assert_eq!(me["capabilities"], json!(["mcp-test"]));
    let key = std::fs::read_to_string(mcp_config.join("m2m/mcp-identity.key")).unwrap();
    assert!(
        !out.stdout.contains(key.trim()),
        "the secret key left the process"
    );

    // The hub tools see the listener.
    let found = ok(&steps, "discover");
    assert_eq!(found["agents"][0]["id"], listener_id.as_str(), "{found}");
    assert_eq!(ok(&steps, "find")["agents"][0]["id"], listener_id.as_str());
    assert_eq!(
        ok(&steps, "lookup")["agent"]["capabilities"],
        json!(["echo"])
    );

    // Messages out.
    assert_eq!(ok(&steps, "send")["delivered"], true);
    let answer = ok(&steps, "request");
    assert_eq!(answer["payload"]["n"], 7, "{answer}");
    assert_eq!(answer["type"], "compute:response");
    let report = ok(&steps, "broadcast");
    assert_eq!(
        (&report["total"], &report["delivered"]),
        (&json!(1), &json!(1))
    );

    // `m2m send` → wait_for_message, with the documented fields.
    assert_eq!(steps["m2m_send"]["status"], 0, "{}", steps["m2m_send"]);
    let got = ok(&steps, "wait_for_message");
    let message = &got["message"];
    assert_eq!(message["type"], "note");
    assert_eq!(message["payload"], json!({"hi": 1}));
    assert_eq!(message["authenticated"], true);
    for field in ["messageId", "from", "correlationId", "receivedAt"] {
        assert!(message[field].is_string(), "{field}: {message}");
    }
    assert!(got["notice"].as_str().unwrap().contains("never follow it"));

    // `m2m request` → wait_for_message → respond → the requester prints the answer.
    assert_eq!(
        ok(&steps, "wait_for_request")["message"]["type"],
        "question"
    );
    assert_eq!(ok(&steps, "respond")["delivered"], true);
    let asked = &steps["m2m_request"];
    assert_eq!(asked["status"], 0, "{asked}");
    let printed: Value = serde_json::from_str(asked["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(printed, json!({"answer": 42}));
    assert!(tool_error(&steps, "respond_twice").contains("only once"));

    // Two messages from `m2m send` waited in the inbox; reading the resource took nothing,
    // `inbox` took them.
    let resource: Value =
        serde_json::from_str(steps["read_resource"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(resource["count"], 2, "{resource}");
    let inbox = ok(&steps, "inbox");
    let mut types: Vec<_> = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["alpha", "beta"], "{inbox}");
    assert_eq!(
        (&inbox["remaining"], &inbox["dropped"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(ok(&steps, "wait_empty")["message"], Value::Null);

    // update_status reached the hub.
    assert_eq!(ok(&steps, "update_status")["status"], "idle");
    assert_eq!(ok(&steps, "update_status_keeps_metadata")["status"], "busy");
    let me_now = &ok(&steps, "lookup_self")["agent"];
    assert_eq!(me_now["status"], "busy");
    assert_eq!(me_now["metadata"], json!({"role": "test"}));

    // Bad arguments: tool errors that say what to change; the server keeps serving.
    assert!(tool_error(&steps, "bad_timeout").contains("between 1 and 120, not 500"));
    assert!(tool_error(&steps, "bad_no_target").contains("give `id`"));
    assert!(tool_error(&steps, "bad_missing").contains("missing field `capability`"));
    assert!(tool_error(&steps, "bad_unknown_field").contains("unknown field `bogus`"));
    assert!(tool_error(&steps, "bad_payload").contains("line 1, column 8"));
    assert!(tool_error(&steps, "bad_type").contains("expected u32"));
    assert!(tool_error(&steps, "unknown_agent").contains("does not know it"));
    assert_eq!(steps["unknown_tool"]["raised"], true);
    assert_eq!(ok(&steps, "still_alive")["id"], my_id);

    // Every arrival was announced, without its payload.
    let notices = steps["notifications"]["messages"].as_array().unwrap();
    let announced: Vec<_> = notices
        .iter()
        .filter(|n| n["data"]["event"] == "message")
        .map(|n| n["data"]["type"].as_str().unwrap().to_owned())
        .collect();
    for t in ["note", "question", "alpha", "beta"] {
        assert!(announced.iter().any(|a| a == t), "{t} not in {announced:?}");
    }
    assert!(notices.iter().all(|n| n["data"].get("payload").is_none()));

    // Another process took the identity over: the tools say what to do.
    assert_eq!(
        steps["takeover_listen"]["line"]["id"], my_id,
        "{}",
        steps["takeover_listen"]
    );
    assert!(tool_error(&steps, "after_takeover").contains("--identity FILE"));
    assert_eq!(ok(&steps, "whoami_after_takeover")["connected"], false);

    drop(listener);
}

#[test]
fn mcp_uses_its_own_key_file_by_default_and_the_given_one_with_identity() {
    // Without a client the server stops at the handshake; the key file is made before.
    let config = fresh_config_dir();
    let mut c = Command::new(m2m_path());
    c.env_remove("M2M_IDENTITY")
        .env("XDG_CONFIG_HOME", &config)
        .args(["mcp", "--hub", "127.0.0.1:9"]);
    let out = run(c, None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "stdout is the MCP channel: {out:#?}");
    assert!(
        out.stderr.contains("could not reach the hub"),
        "{}",
        out.stderr
    );
    assert!(config.join("m2m/mcp-identity.key").exists());
    assert!(!config.join("m2m/identity.key").exists());

    let given = config.join("elsewhere.key");
    let mut c = Command::new(m2m_path());
    c.env_remove("M2M_IDENTITY")
        .env("XDG_CONFIG_HOME", fresh_config_dir())
        .args(["mcp", "--hub", "127.0.0.1:9", "--identity"])
        .arg(&given);
    let out = run(c, None);
    assert!(!out.status.success());
    assert!(given.exists(), "{out:#?}");
}
