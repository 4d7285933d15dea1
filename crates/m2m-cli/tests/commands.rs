//! Every scriptable command, run as a user runs it: the spawned `m2m` binary against a hub
//! started with `m2m hub --port 0`.

mod common;

use common::{m2m, run, Hub, Running};
use serde_json::{json, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn listen_prints_messages_and_send_delivers_by_id_and_address() {
    let hub = Hub::start();
    let (mut listener, connected) = hub.listen(&["--capabilities", "inbox"]);
    let id = s(&connected["id"]).to_owned();
    let address = s(&connected["address"]).to_owned();
    assert_eq!(id.len(), 32);

    // JSON payload.
    let sent = hub.run(&["send", &id, "task", r#"{"n": 1}"#]).ok_json();
    assert_eq!(sent["delivered"], true);
    let line = listener.next_json();
    assert_eq!(line["event"], "message");
    assert_eq!(line["type"], "task");
    assert_eq!(line["payload"], json!({"n": 1}));
    assert_eq!(line["correlationId"], sent["correlationId"]);
    assert_eq!(line["from"].as_str().unwrap().len(), 32);
    assert!(line["timestamp"].as_u64().unwrap() > 0);

    // Text that is not JSON goes as a string.
    hub.run(&["send", &id, "chat", "hello there"]).ok_json();
    assert_eq!(listener.next_json()["payload"], "hello there");

    // `-` reads stdin.
    let mut c = hub.m2m();
    c.args(["send", &id, "stdin", "-"]);
    run(c, Some("{\"from\": \"stdin\"}\n")).ok_json();
    assert_eq!(listener.next_json()["payload"], json!({"from": "stdin"}));

    // By address, no id involved.
    let direct = hub
        .run(&["send", "--address", &address, "direct", "42"])
        .ok_json();
    assert_eq!(direct["delivered"], true);
    let line = listener.next_json();
    assert_eq!(
        (&line["type"], &line["payload"]),
        (&json!("direct"), &json!(42))
    );

    // No payload: an empty object.
    hub.run(&["send", &id, "empty"]).ok_json();
    assert_eq!(listener.next_json()["payload"], json!({}));
}

#[test]
fn echo_and_exec_answer_requests() {
    let hub = Hub::start();
    let (_echo, echo) = hub.listen(&["--echo"]);
    let response = hub
        .run(&["request", s(&echo["id"]), "ask", r#"{"q": "why"}"#])
        .ok_json();
    assert_eq!(response["q"], "why");

    // --exec gets the message as JSON on stdin and answers with what it prints.
    let (_exec, exec) = hub.listen(&["--exec", r#"read m; echo "{\"got\": $m}""#]);
    let response = hub
        .run(&[
            "request",
            s(&exec["id"]),
            "compute",
            r#"{"x": 2}"#,
            "--timeout",
            "30s",
        ])
        .ok_json();
    assert_eq!(response["got"]["type"], "compute");
    assert_eq!(response["got"]["payload"]["x"], 2);
    assert_eq!(response["got"]["from"].as_str().unwrap().len(), 32);

    // A failing handler answers an error object.
    let (_bad, bad) = hub.listen(&["--exec", "echo broken >&2; exit 7"]);
    let response = hub.run(&["request", s(&bad["id"]), "x", "{}"]).ok_json();
    let error = s(&response["error"]);
    assert!(
        error.contains("exit status: 7") && error.contains("broken"),
        "{error}"
    );

    // Output that is not JSON answers an error object too.
    let (_text, text) = hub.listen(&["--exec", "echo not json"]);
    let response = hub.run(&["request", s(&text["id"]), "x", "{}"]).ok_json();
    assert!(
        s(&response["error"]).starts_with("handler output is not JSON"),
        "{response}"
    );
}

#[test]
fn discover_find_stats_and_broadcast() {
    let hub = Hub::start();
    let (mut a, a_line) = hub.listen(&["--capabilities", "alpha,shared"]);
    let (mut b, b_line) = hub.listen(&["--capabilities", "beta,shared"]);
    let (a_id, b_id) = (s(&a_line["id"]).to_owned(), s(&b_line["id"]).to_owned());

    let all = hub.run(&["discover"]).ok_json();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| s(&p["id"]))
        .collect();
    assert!(
        ids.contains(&a_id.as_str()) && ids.contains(&b_id.as_str()),
        "{all}"
    );
    for p in all.as_array().unwrap() {
        for field in [
            "id",
            "address",
            "capabilities",
            "metadata",
            "status",
            "lastSeen",
        ] {
            assert!(p.get(field).is_some(), "{field} missing in {p}");
        }
    }

    let alpha = hub.run(&["discover", "--capability", "alpha"]).ok_json();
    assert_eq!(alpha.as_array().unwrap().len(), 1);
    assert_eq!(alpha[0]["id"], a_id.as_str());
    let page = hub
        .run(&["discover", "--limit", "1", "--status", "online"])
        .ok_json();
    assert_eq!(page.as_array().unwrap().len(), 1);

    let beta = hub.run(&["find", "beta"]).ok_json();
    assert_eq!(beta.as_array().unwrap().len(), 1);
    assert_eq!(beta[0]["id"], b_id.as_str());
    assert_eq!(hub.run(&["find", "nobody-has-this"]).ok_json(), json!([]));

    let stats = hub.run(&["stats"]).ok_json();
    assert!(stats["agents"]["online"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["hub"]["version"].is_string());

    let report = hub
        .run(&["broadcast", "news", r#"{"v": 1}"#, "--capability", "shared"])
        .ok_json();
    assert_eq!(
        report,
        json!({"total": 2, "delivered": 2, "failed": 0, "relayed": 0, "errors": []})
    );
    for l in [&mut a, &mut b] {
        let line = l.next_json();
        assert_eq!(
            (&line["type"], &line["payload"]),
            (&json!("news"), &json!({"v": 1}))
        );
    }
}

#[test]
fn one_shot_commands_do_not_register() {
    let hub = Hub::start();
    hub.run(&["discover"]).ok_json();
    hub.run(&["stats"]).ok_json();
    // Neither the earlier commands nor this one is an agent of the hub.
    let stats = hub.run(&["stats"]).ok_json();
    assert_eq!(stats["agents"]["total"], 0, "{stats}");
    assert_eq!(stats["hub"]["activeConnections"], 0, "{stats}");
    assert_eq!(hub.run(&["discover"]).ok_json(), json!([]));
}

#[test]
fn errors_are_sentences_on_stderr() {
    let hub = Hub::start();

    let e = hub
        .run(&["send", "0123456789abcdef0123456789abcdef", "chat", "hi"])
        .error();
    assert!(
        e.contains("unknown agent 0123456789abcdef0123456789abcdef"),
        "{e}"
    );

    let e = hub
        .run(&["send", "someone", "chat", "{\"a\": 1,\n\"b\"}"])
        .error();
    assert!(
        e.contains("not valid JSON") && e.contains("line 2, column 4"),
        "{e}"
    );

    let (_quiet, quiet) = hub.listen(&[]);
    let e = hub
        .run(&["request", s(&quiet["id"]), "ask", "{}", "--timeout", "1s"])
        .error();
    assert!(
        e.contains("no ask:response from agent") && e.contains("within 1s"),
        "{e}"
    );

    // A port nothing listens on: bind one, read its number, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut c = m2m();
    c.args(["--hub", &format!("ws://127.0.0.1:{closed}/ws"), "discover"]);
    let e = run(c, None).error();
    assert!(
        e.contains("could not reach the hub at ws://127.0.0.1:"),
        "{e}"
    );

    let e = run(
        {
            let mut c = m2m();
            c.args(["ping", &format!("127.0.0.1:{closed}")]);
            c
        },
        None,
    )
    .error();
    assert!(e.contains("could not reach the agent"), "{e}");

    // Usage errors come from clap, also non-zero.
    let r = hub.run(&["send"]);
    assert!(!r.status.success());
}

#[test]
fn ping_needs_no_hub() {
    let hub = Hub::start();
    let (_l, line) = hub.listen(&[]);
    let mut c = m2m();
    c.args(["ping", s(&line["address"])]);
    let pong = run(c, None).ok_json();
    assert_eq!(pong["pong"], true);
    assert!(pong["rttMs"].as_f64().unwrap() >= 0.0);
}

#[test]
fn hub_stops_gracefully_on_sigterm_and_defaults_to_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    // No --database: the default embedded SQLite file in the working directory. PORT as the
    // original hub reads it.
    let mut cmd = m2m();
    cmd.args(["--log-format", "json", "hub", "--bind", "127.0.0.1"])
        .env("PORT", "0");
    let hub = Hub::from(Running::spawn_in(&mut cmd, Some(dir.path())));
    let (listener, _) = hub.listen(&[]);
    // The listener; `stats` itself does not register.
    assert_eq!(hub.run(&["stats"]).ok_json()["agents"]["online"], 1);
    drop(listener);
    assert!(dir.path().join("m2m-hub.db").exists());

    let (status, stderr) = hub.process.terminate();
    assert!(status.success(), "{status:?} {stderr}");
    let logs: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}")))
        .collect();
    assert!(
        logs.iter().any(|l| l["fields"]["message"] == "hub stopped"),
        "{stderr}"
    );
}

#[test]
fn hub_refuses_a_bad_database_url_with_a_sentence() {
    let mut c = m2m();
    c.args(["hub", "--port", "0", "--database", "mysql://nope"]);
    let e = run(c, None).error();
    assert!(e.contains("mysql://nope"), "{e}");
}

#[test]
fn demo_shows_everything_working() {
    let mut c = m2m();
    c.arg("demo");
    let r = run(c, None);
    assert!(r.status.success(), "{r:#?}");
    let events: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events.iter().map(|e| s(&e["event"])).collect();
    assert_eq!(
        names,
        [
            "hub",
            "joined",
            "joined",
            "discovered",
            "message",
            "response",
            "stats",
            "done"
        ]
    );
    assert_eq!(events[4]["payload"], json!({"text": "Hello Bob!"}));
    assert_eq!(events[5]["response"], json!({"sum": 6}));
}

#[test]
fn listen_leaves_the_hub_on_sigterm() {
    let hub = Hub::start();
    let (listener, line) = hub.listen(&[]);
    let id = s(&line["id"]).to_owned();
    assert_eq!(hub.run(&["discover"]).ok_json()[0]["id"], id.as_str());
    let (status, stderr) = listener.terminate();
    assert!(status.success(), "{status:?} {stderr}");
    assert_eq!(hub.run(&["discover"]).ok_json(), json!([]));
}

#[test]
fn hub_tls_files_that_do_not_exist_are_named() {
    let mut c = m2m();
    c.args([
        "hub",
        "--port",
        "0",
        "--database",
        "sqlite::memory:",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    let e = run(c, None).error();
    assert!(e.contains("/nonexistent/"), "{e}");
}

#[test]
fn an_interrupted_command_says_so_and_leaves_the_hub() {
    let hub = Hub::start();
    let (mut quiet, line) = hub.listen(&[]);
    let mut c = hub.m2m();
    c.args(["request", s(&line["id"]), "ask", "{}", "--timeout", "10m"]);
    let waiting = Running::spawn(c);
    // The request reached the listener: the command is waiting for the response.
    let asked = quiet.next_json();
    assert_eq!(asked["type"], "ask");
    let (status, stderr) = waiting.terminate();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("m2m: interrupted"), "{stderr}");
    // Only the listener is left.
    let online = hub.run(&["discover"]).ok_json();
    assert_eq!(online.as_array().unwrap().len(), 1, "{online}");
}

#[test]
fn the_terminal_agent_explains_that_it_needs_a_terminal() {
    let mut c = m2m();
    c.args(["agent", "--hub", "ws://127.0.0.1:9/ws"]);
    let e = run(c, None).error();
    assert!(
        e.contains("needs a terminal") && e.contains("m2m listen"),
        "{e}"
    );
}
