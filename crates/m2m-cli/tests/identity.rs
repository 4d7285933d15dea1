//! The 2.1 identity key file, as a user meets it: created private on first use, the same id
//! on every run against a 2.1 hub, `--identity` for another one, a key file other users can
//! read refused; `listen` says whether each message's sender is proven.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;

use common::{fresh_config_dir, Hub, Running};
use m2m_proto::{Initiator, InitiatorEvent};
use serde_json::{json, Value};

/// `m2m listen ARGS` with `config` as its config directory.
fn listen_with(hub: &Hub, config: &Path, args: &[&str]) -> (Running, Value) {
    let mut c = hub.m2m();
    c.env("XDG_CONFIG_HOME", config).arg("listen").args(args);
    let mut l = Running::spawn(c);
    let connected = l.next_json();
    assert_eq!(connected["event"], "connected", "{connected}");
    (l, connected)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_key_file_is_made_private_and_keeps_the_id() {
    let hub = Hub::start();
    let config = fresh_config_dir();
    let key = config.join("m2m").join("identity.key");

    let (first, connected) = listen_with(&hub, &config, &[]);
    assert_eq!(connected["hubVerified"], true);
    let id = connected["id"].as_str().unwrap().to_owned();
    assert!(key.exists());
    #[cfg(unix)]
    assert_eq!(mode(&key), 0o600);
    let (status, _) = first.terminate();
    assert!(status.code().is_some());

    let (mut second, connected) = listen_with(&hub, &config, &[]);
    assert_eq!(connected["id"], id.as_str(), "same key file, same id");

    // A second process with the same key takes the registration over; the first one says
    // so and stops instead of taking it back.
    let (third, connected) = listen_with(&hub, &config, &[]);
    assert_eq!(connected["id"], id.as_str());
    let lost = second.next_json();
    assert_eq!(lost["event"], "hub_lost");
    let (status, stderr) = second.wait_exit();
    assert!(!status.success());
    assert!(
        stderr.contains("another m2m process registered"),
        "{stderr}"
    );
    drop(third);

    // --identity: another key file, another id.
    let other = config.join("other.key");
    let (third, connected) = listen_with(&hub, &config, &["--identity", other.to_str().unwrap()]);
    assert_ne!(connected["id"], id.as_str());
    #[cfg(unix)]
    assert_eq!(mode(&other), 0o600);
    drop(third);
}

#[cfg(unix)]
#[test]
fn a_key_file_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let hub = Hub::start();
    let config = fresh_config_dir();
    let key = config.join("shared.key");
    // A valid key, but world-readable.
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = hub.m2m();
    c.args(["listen", "--identity", key.to_str().unwrap()]);
    let error = common::run(c, None).error();
    assert!(
        error.contains("refusing to use the identity key file"),
        "{error}"
    );
    assert!(error.contains("other users can access it"), "{error}");
    assert!(error.contains("chmod 600"), "{error}");
    // Once private, it is used.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_l, connected) = listen_with(&hub, &config, &["--identity", key.to_str().unwrap()]);
    assert_eq!(connected["id"].as_str().unwrap().len(), 32);
}

/// A 2.0 initiator's handshake and one message, sent raw; returns the replies.
fn raw_2_0(address: &str) -> Vec<Value> {
    let mut stream = TcpStream::connect(address).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut init, hello) = Initiator::new("an-old-agent", &mut rand::thread_rng());
    stream.write_all(&hello.encode()).unwrap();
    let mut replies = Vec::new();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    replies.push(serde_json::from_str(&line).unwrap());
    if init.handle_line(line.trim_end().as_bytes()) != Ok(InitiatorEvent::Established) {
        return replies;
    }
    let msg = init
        .seal("old", &json!(1), Some(json!("c1")), &mut rand::thread_rng())
        .unwrap();
    stream.write_all(&msg.encode()).unwrap();
    line.clear();
    if reader.read_line(&mut line).unwrap_or(0) > 0 {
        replies.push(serde_json::from_str(&line).unwrap());
    }
    replies
}

#[test]
fn listen_says_who_is_proven_and_can_refuse_the_rest() {
    let hub = Hub::start();
    let (mut open, connected) = hub.listen(&[]);
    let id = connected["id"].as_str().unwrap().to_owned();
    let address = connected["address"].as_str().unwrap().to_owned();

    hub.run(&["send", &id, "new", "1"]).ok_json();
    let line = open.next_json();
    assert_eq!(
        (&line["type"], &line["authenticated"]),
        (&json!("new"), &json!(true))
    );

    assert_eq!(raw_2_0(&address)[1]["type"], "ack");
    let line = open.next_json();
    assert_eq!(line["from"], "an-old-agent");
    assert_eq!(line["authenticated"], false);

    let (mut strict, connected) = hub.listen(&["--authenticated-only"]);
    let id = connected["id"].as_str().unwrap().to_owned();
    let address = connected["address"].as_str().unwrap().to_owned();
    assert_eq!(
        raw_2_0(&address),
        [json!({"error": "authentication_required"})]
    );
    hub.run(&["send", &id, "new", "2"]).ok_json();
    let line = strict.next_json();
    assert_eq!(
        (&line["payload"], &line["authenticated"]),
        (&json!(2), &json!(true))
    );
}
