//! `m2m agent` end to end in a real pseudo-terminal: it registers, lists a peer, sends it a
//! message and a request typed on the keyboard, answers a request made by `m2m request`,
//! survives a resize, and quits cleanly (leaving the hub). The bytes it draws go through a
//! vt100 parser, so the test reads the screen a person would see.

#![cfg(unix)]

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Hub, Running, PATIENCE};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use serde_json::json;

struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
    /// The agent's debug log (keys and terminal events), shown when a step fails.
    log: std::path::PathBuf,
}

impl Screen {
    fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Waits until the agent's log shows `needle`.
    fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains(needle) {
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the log never showed {needle:?}:\n{log}\nscreen:\n{}",
                self.text()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the screen shows `needle`; returns the screen.
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "the screen never showed {needle:?}; it shows:\n{text}\nlog:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn size(rows: u16, cols: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

#[test]
fn terminal_agent_end_to_end() {
    let hub = Hub::start();
    let (mut peer, peer_line) = hub.listen(&["--capabilities", "inbox", "--echo"]);
    let peer_id = peer_line["id"].as_str().unwrap().to_owned();

    let pty = native_pty_system();
    let pair = pty.openpty(size(30, 130)).unwrap();
    let mut cmd = CommandBuilder::new(common::m2m_path());
    cmd.args(["agent", "--port", "0", "--hub", &hub.ws]);
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("M2M_HUB");
    cmd.env_remove("M2M_IDENTITY");
    cmd.env("XDG_CONFIG_HOME", common::fresh_config_dir());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    cmd.env("M2M_LOG_FILE", &log);
    cmd.env("RUST_LOG", "m2m=debug");
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);

    let parser = Arc::new(Mutex::new(vt100::Parser::new(30, 130, 0)));
    let mut reader = pair.master.try_clone_reader().unwrap();
    {
        let parser = parser.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                parser.lock().unwrap().process(&buf[..n]);
            }
        });
    }
    let mut keys = pair.master.take_writer().unwrap();
    let mut press = |text: &str| {
        keys.write_all(text.as_bytes()).unwrap();
        keys.flush().unwrap();
    };
    let screen = Screen { parser, log };

    // Registered, and the peer is listed (the first refresh runs at start).
    let text = screen.wait_for("m2m agent ");
    let header = text.lines().find(|l| l.contains("m2m agent ")).unwrap();
    let own_id: String = header
        .split("m2m agent ")
        .nth(1)
        .unwrap()
        .chars()
        .take(32)
        .collect();
    assert!(own_id.chars().all(|c| c.is_ascii_hexdigit()), "{header}");
    // A 2.1 peer on our hub: the hub vouches for its key.
    screen.wait_for(&format!("{} online ✓", &peer_id[..8]));
    screen.wait_for("hub: ");

    // Pick the peer (the only one) and send it text typed on the keyboard.
    press("\r");
    screen.wait_for(&format!("Send to {}", &peer_id[..8]));
    press("hello from the tty\r");
    let line = peer.next_json();
    assert_eq!(line["event"], "message");
    assert_eq!(line["from"], own_id.as_str());
    assert_eq!(line["type"], "chat");
    assert_eq!(line["payload"], "hello from the tty");
    screen.wait_for("Delivered chat");

    // Ctrl-R turns the message into a request; the echoed response is shown.
    press("\r");
    press("\x12");
    screen.wait_for("Request to");
    press("[\"question\"]\r");
    screen.wait_for(r#"chat:response ["question"]"#);

    // A request from another terminal shows up and is answered from the keyboard.
    let mut c = hub.m2m();
    c.args(["request", &own_id, "ask", r#"{"q": 1}"#]);
    let mut requester = Running::spawn(c);
    screen.wait_for("Requests waiting (1)");
    // The requester did not register, yet its identity is proven in the handshake.
    screen.wait_for("✓ ask {");
    press("r");
    screen.wait_for("Answer ask from");
    press("{\"a\": 42}\r");
    assert_eq!(requester.next_json(), json!({"a": 42}));

    // Resizing redraws at the new size.
    pair.master.resize(size(20, 90)).unwrap();
    screen.parser.lock().unwrap().set_size(20, 90);
    // Keys typed while the resize signal is being handled can be lost: crossterm 0.28 returns
    // the resize and drops the tty's (edge-triggered) readiness reported with it. A person
    // presses the key again; the test waits until the resize is through.
    screen.wait_for_log("Resize(90, 20)");
    press("R");
    let text = screen.wait_for("Peers (1)");
    assert!(text.lines().count() <= 20, "{text}");

    // Help opens and closes, then q quits and leaves the hub.
    press("?");
    screen.wait_for("Help");
    press("?");
    press("q");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < PATIENCE, "m2m agent did not quit");
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", screen.text());
    let listed = hub.run(&["discover"]).ok_json();
    assert!(
        !listed.to_string().contains(&own_id),
        "the agent is still listed after quitting: {listed}"
    );
}

/// Runs `m2m ARGS` in a pseudo-terminal to the end and returns what it printed.
fn run_in_pty(hub: &Hub, args: &[&str]) -> String {
    let pair = native_pty_system().openpty(size(30, 200)).unwrap();
    let mut cmd = CommandBuilder::new(common::m2m_path());
    cmd.args(args);
    cmd.env("M2M_HUB", &hub.ws);
    cmd.env_remove("M2M_IDENTITY");
    cmd.env("XDG_CONFIG_HOME", common::fresh_config_dir());
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut reader = pair.master.try_clone_reader().unwrap();
    let output = thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EOF or EIO once the child has exited and the pty is closed.
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).replace("\r\n", "\n")
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < PATIENCE, "m2m {args:?} did not finish");
        thread::sleep(Duration::from_millis(20));
    };
    drop(pair.master);
    let text = output.join().unwrap();
    assert!(status.success(), "m2m {args:?}: {status:?}\n{text}");
    text
}

#[test]
fn one_shot_output_is_a_table_on_a_terminal_and_json_when_asked() {
    let hub = Hub::start();
    let (_peer, line) = hub.listen(&["--capabilities", "inbox"]);
    let id = line["id"].as_str().unwrap();

    let table = run_in_pty(&hub, &["discover"]);
    assert!(table.contains("ID "), "{table}");
    assert!(table.contains("CAPABILITIES"), "{table}");
    assert!(table.contains(&format!("{id}  online")), "{table}");
    assert!(table.contains("1 agent(s)"), "{table}");

    let stats = run_in_pty(&hub, &["stats"]);
    assert!(stats.contains("hub version"), "{stats}");

    let sent = run_in_pty(&hub, &["send", id, "chat", "hi"]);
    assert!(sent.contains(&format!("Delivered to agent {id}")), "{sent}");

    let json = run_in_pty(&hub, &["--json", "discover"]);
    let peers: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(peers[0]["id"], id);
}
