//! What scripts rely on: query commands that leave the registry as it was, options in any
//! place, stable exit statuses, completions and a manual page.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{m2m, run, Hub, Running};
use serde_json::{json, Value};

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

/// `GET path` on the hub's HTTP API (over a plain socket: the test needs no HTTP client).
fn http_get(hub: &Hub, path: &str) -> Value {
    let mut stream = TcpStream::connect(&hub.address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        hub.address
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The registry as the hub's HTTP API shows it, read without touching the WebSocket side:
/// the agent counts (`total` includes offline rows), the agents connected, and the listed
/// agents. (`connections` counts WebSockets accepted since start, not the registry.)
fn registry(hub: &Hub) -> Value {
    let stats = http_get(hub, "/stats");
    let agents = http_get(hub, "/agents");
    json!({
        "agents": stats["agents"],
        "activeConnections": stats["hub"]["activeConnections"],
        "listed": agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!([a["id"], a["status"], a["capabilities"], a["metadata"]]))
            .collect::<Vec<_>>(),
    })
}

#[test]
fn query_commands_leave_the_registry_as_it_was() {
    let hub = Hub::start();
    let (mut worker, line) = hub.listen(&["--capabilities", "compute", "--echo"]);
    let id = s(&line["id"]).to_owned();
    let before = registry(&hub);
    assert_eq!(before["agents"]["total"], 1, "{before}");

    // As a script would: every command, twice over.
    for round in 0..2 {
        for args in [
            vec!["discover"],
            vec!["discover", "--capability", "compute", "--status", "online"],
            vec!["find", "compute"],
            vec!["lookup", &id],
            vec!["stats"],
            vec!["send", &id, "note", "{\"round\": 1}"],
            vec!["broadcast", "news", "1"],
            vec!["request", &id, "ask", "{\"q\": 1}"],
        ] {
            let r = hub.run(&args);
            assert!(r.status.success(), "{args:?}: {r:#?}");
            assert_eq!(
                registry(&hub),
                before,
                "round {round}: `m2m {}`",
                args.join(" ")
            );
        }
        for expected in ["note", "news", "ask"] {
            assert_eq!(worker.next_json()["type"], expected);
        }
    }
    // What the commands printed is still what they found.
    let found = hub.run(&["lookup", &id]).ok_json();
    assert_eq!(
        (s(&found["id"]), s(&found["status"])),
        (id.as_str(), "online")
    );
    assert!(found["identity"].is_string(), "{found}");
    let echoed = hub.run(&["request", &id, "ask", "{\"q\": 2}"]).ok_json();
    assert_eq!(echoed["q"], 2, "{echoed}");
}

#[test]
fn options_may_come_anywhere_and_dashes_need_a_double_dash() {
    let hub = Hub::start();
    let (mut worker, line) = hub.listen(&[]);
    let id = s(&line["id"]).to_owned();

    // No M2M_HUB: the hub option comes last.
    let mut c = m2m();
    c.args(["send", &id, "chat", "hello", "--hub", &hub.ws]);
    run(c, None).ok_json();
    assert_eq!(worker.next_json()["payload"], "hello");

    hub.run(&["send", &id, "--json", "chat", "--", "-x"])
        .ok_json();
    assert_eq!(worker.next_json()["payload"], "-x");
    hub.run(&["send", &id, "num", "-5"]).ok_json();
    assert_eq!(worker.next_json()["payload"], -5);
    // Without `--`, a payload like an option is a usage error, not a guess.
    assert_eq!(hub.run(&["send", &id, "chat", "-x"]).status.code(), Some(2));
}

#[test]
fn exit_statuses_are_stable() {
    let hub = Hub::start();
    let (_quiet, line) = hub.listen(&[]);
    let quiet = s(&line["id"]).to_owned();
    let unknown = "0123456789abcdef0123456789abcdef";
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead_hub = format!("ws://127.0.0.1:{closed}/ws");
    let dead_peer = format!("127.0.0.1:{closed}");

    let code = |args: &[&str]| {
        let r = hub.run(args);
        if r.status.code() != Some(0) {
            r.error();
        }
        r.status.code()
    };
    assert_eq!(code(&["stats"]), Some(0));
    // Usage: clap's own errors and ours.
    assert_eq!(hub.run(&["send"]).status.code(), Some(2));
    assert_eq!(hub.run(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        hub.run(&["send", &quiet, "a", "b", "c"]).status.code(),
        Some(2)
    );
    assert_eq!(
        code(&["send", "--address", &dead_peer, "a", "b", "c"]),
        Some(2)
    );
    // Not found / offline.
    assert_eq!(code(&["lookup", unknown]), Some(3));
    assert_eq!(code(&["send", unknown, "chat"]), Some(3));
    assert_eq!(code(&["request", unknown, "ask"]), Some(3));
    // Unreachable: a hub or an agent where nothing listens.
    assert_eq!(code(&["--hub", &dead_hub, "discover"]), Some(4));
    assert_eq!(code(&["ping", &dead_peer]), Some(4));
    assert_eq!(code(&["send", "--address", &dead_peer, "chat"]), Some(4));
    // Timeout: nobody answers the request.
    assert_eq!(
        code(&["request", &quiet, "ask", "{}", "--timeout", "1s"]),
        Some(5)
    );
}

#[test]
fn interrupted_is_130() {
    let hub = Hub::start();
    let (mut quiet, line) = hub.listen(&[]);
    let mut c = hub.m2m();
    c.args(["request", s(&line["id"]), "ask", "--timeout", "10m"]);
    let waiting = Running::spawn(c);
    assert_eq!(quiet.next_json()["type"], "ask");
    let (status, _) = waiting.terminate();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn completions_and_the_manual_come_from_the_command_line() {
    for (shell, marker) in [
        ("bash", "complete"),
        ("zsh", "#compdef m2m"),
        ("fish", "complete -c m2m"),
    ] {
        let mut c = m2m();
        c.args(["completions", shell]);
        let r = run(c, None);
        assert!(r.status.success(), "{r:#?}");
        assert!(
            r.stdout.contains(marker),
            "{shell}: {}",
            &r.stdout[..200.min(r.stdout.len())]
        );
        // Every command is completed, the new ones included.
        for command in ["discover", "lookup", "send", "completions"] {
            assert!(r.stdout.contains(command), "{shell} lacks {command}");
        }
    }
    let mut c = m2m();
    c.arg("man");
    let page = run(c, None);
    assert!(page.status.success(), "{page:#?}");
    assert!(page.stdout.contains(".TH m2m 1"), "{}", page.stdout);
    assert!(page.stdout.contains("lookup"));
    let mut c = m2m();
    c.args(["man", "send"]);
    let page = run(c, None);
    assert!(page.stdout.contains(".TH m2m-send 1"), "{}", page.stdout);
    assert!(page.stdout.contains("\\-\\-address"));
    let mut c = m2m();
    c.args(["man", "nope"]);
    assert_eq!(run(c, None).status.code(), Some(2));
}

/// A 2.0 agent, as the original SDK behaves: registered at the hub without an identity,
/// it answers a request on a new connection to the address the hub gives for the sender.
mod v20 {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};

    use m2m_proto::{Initiator, InitiatorEvent, Responder, ResponderOutput};
    use serde_json::{json, Value};
    use tungstenite::{connect, Message};

    type Ws = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>;

    /// One hub request on `ws`; the reply with its correlationId.
    pub fn ask(ws: &mut Ws, mut request: Value) -> Value {
        request["correlationId"] = json!("c");
        ws.send(Message::text(request.to_string())).unwrap();
        loop {
            let Message::Text(text) = ws.read().unwrap() else {
                continue;
            };
            let reply: Value = serde_json::from_str(text.as_str()).unwrap();
            // Our hub greets with a 2.1 challenge event, which a 2.0 agent ignores.
            if reply.get("correlationId") == Some(&json!("c")) {
                return reply;
            }
        }
    }

    pub struct Peer {
        pub id: String,
        pub ws: Ws,
        pub listener: TcpListener,
    }

    pub fn register(hub_ws: &str) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut ws, _) = connect(hub_ws).unwrap();
        let reply = ask(
            &mut ws,
            json!({"action": "register", "address": format!("127.0.0.1:{port}"), "capabilities": []}),
        );
        assert_eq!(reply["status"], "ok", "{reply}");
        assert!(reply.get("identity").is_none());
        Peer {
            id: reply["id"].as_str().unwrap().to_owned(),
            ws,
            listener,
        }
    }

    fn line(reader: &mut impl BufRead) -> Vec<u8> {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        line
    }

    /// Takes one request, looks its sender up, and answers `answer` as the original
    /// `respond` does; returns the sender's hub record as it was while the sender waited.
    pub fn serve_one(peer: &mut Peer, answer: Value) -> Value {
        let mut rng = rand::thread_rng();
        let (stream, _) = peer.listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut responder = Responder::new();
        let request = loop {
            match responder.handle_line(&line(&mut reader), &mut rng) {
                ResponderOutput::Send(frame) => writer.write_all(&frame.encode()).unwrap(),
                ResponderOutput::Deliver { message, ack } => {
                    writer.write_all(&ack.encode()).unwrap();
                    break message;
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(!request.authenticated, "a 2.0 responder proves nothing");
        let record = ask(
            &mut peer.ws,
            json!({"action": "lookup", "id": request.from}),
        );
        let address = record["agent"]["address"].as_str().unwrap().to_owned();

        let back = TcpStream::connect(&address).unwrap();
        let mut back_reader = BufReader::new(back.try_clone().unwrap());
        let mut back_writer = back;
        let (mut initiator, hello) = Initiator::new(&peer.id, &mut rng);
        back_writer.write_all(&hello.encode()).unwrap();
        let established = initiator.handle_line(&line(&mut back_reader)).unwrap();
        assert_eq!(established, InitiatorEvent::Established);
        let response = initiator
            .seal(
                &format!("{}:response", request.message_type),
                &answer,
                request.correlation_id.clone(),
                &mut rng,
            )
            .unwrap();
        back_writer.write_all(&response.encode()).unwrap();
        let acked = initiator.handle_line(&line(&mut back_reader)).unwrap();
        assert!(matches!(acked, InitiatorEvent::Acked(_)), "{acked:?}");
        record
    }
}

#[test]
fn a_request_to_a_2_0_agent_registers_only_while_it_waits() {
    let hub = Hub::start();
    let mut peer = v20::register(&hub.ws);
    let before = registry(&hub);
    let mut c = hub.m2m();
    c.args(["request", &peer.id, "ask", "{\"q\": 1}", "--timeout", "30s"]);
    let mut waiting = Running::spawn(c);
    let sender = v20::serve_one(&mut peer, json!({"a": 1}));
    // While it waited, the requester was a registered, online agent the peer could reach.
    assert_eq!(sender["agent"]["status"], "online", "{sender}");
    assert_eq!(waiting.next_json(), json!({"a": 1}));
    let (status, stderr) = waiting.wait_exit();
    assert!(status.success(), "{stderr}");
    // Gone as soon as the answer was in: no one more online or connected, nothing new
    // listed; its row stays, offline, as every departed agent's does.
    let after = registry(&hub);
    assert_eq!(after["listed"], before["listed"]);
    assert_eq!(after["activeConnections"], before["activeConnections"]);
    assert_eq!(after["agents"]["online"], before["agents"]["online"]);
    assert_eq!(
        after["agents"]["offline"].as_u64().unwrap(),
        before["agents"]["offline"].as_u64().unwrap() + 1,
        "{after}"
    );
}
