//! The terminal agent driven with keys and events, as a user and the network drive it.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::json;

use super::*;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(app.handle_key(key(KeyCode::Char(c))), None);
    }
}

fn peer(id: &str) -> Peer {
    Peer {
        id: id.into(),
        address: "127.0.0.1:4001".into(),
        capabilities: vec!["chat".into()],
        metadata: Default::default(),
        status: "online".into(),
        last_seen: 0,
        identity: None,
        relay: None,
        reachable: None,
        mailbox: None,
    }
}

fn request(from: &str) -> Incoming {
    Incoming {
        from: from.into(),
        message_type: "ask".into(),
        payload: json!({"q": 1, "correlationId": "c1"}),
        correlation_id: Some("c1".into()),
        timestamp: 3_723_000,
        authenticated: false,
        route: Default::default(),
    }
}

#[test]
fn select_and_send() {
    let mut app = App::new("ws://hub");
    app.apply(AppEvent::Peers(Ok(vec![
        peer("aaaaaaaa11"),
        peer("bbbbbbbb22"),
    ])));
    assert_eq!(app.handle_key(key(KeyCode::Down)), None);
    assert_eq!(app.selected_peer().unwrap().id, "bbbbbbbb22");
    assert_eq!(app.handle_key(key(KeyCode::Down)), None);
    assert_eq!(app.selected, 1, "selection stops at the last peer");
    app.handle_key(key(KeyCode::Enter));
    assert!(matches!(app.mode, Mode::Compose(_)));
    // Type field: replace "chat" with "task".
    app.handle_key(key(KeyCode::BackTab));
    for _ in 0..4 {
        app.handle_key(key(KeyCode::Backspace));
    }
    type_text(&mut app, "task");
    app.handle_key(key(KeyCode::Enter));
    type_text(&mut app, r#"{"n": 2}"#);
    let cmd = app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        cmd,
        Some(Command::Send {
            to: "bbbbbbbb22".into(),
            message_type: "task".into(),
            payload: json!({"n": 2}),
        })
    );
    assert_eq!(app.mode, Mode::Normal);
    assert_eq!(app.last_type, "task");
    app.apply(AppEvent::Sent {
        to: "bbbbbbbb22".into(),
        message_type: "task".into(),
        payload: json!({"n": 2}),
        result: Ok(m2m_agent::Route::Direct),
        at: 0,
    });
    assert_eq!(app.log.back().unwrap().text, r#"bbbbbbbb task {"n":2}"#);
    assert_eq!(app.log.back().unwrap().kind, LogKind::Sent);
}

#[test]
fn text_payloads_are_strings_and_bad_json_stays_in_the_box() {
    let mut app = App::new("h");
    app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
    app.handle_key(key(KeyCode::Char('s')));
    type_text(&mut app, "{oops");
    assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
    assert!(app.status.contains("line 1, column 2"), "{}", app.status);
    assert!(matches!(&app.mode, Mode::Compose(c) if c.payload == "{oops"));
    app.handle_key(key_ctrl('u'));
    type_text(&mut app, "hello there");
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        Some(Command::Send {
            to: "p1".into(),
            message_type: "chat".into(),
            payload: json!("hello there"),
        })
    );
}

fn key_ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

#[test]
fn ctrl_r_sends_a_request_and_the_answer_is_logged() {
    let mut app = App::new("h");
    app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
    app.handle_key(key(KeyCode::Enter));
    app.handle_key(key_ctrl('r'));
    assert!(matches!(&app.mode, Mode::Compose(c) if c.request));
    type_text(&mut app, "[1]");
    assert_eq!(
        app.handle_key(key(KeyCode::Enter)),
        Some(Command::Request {
            to: "p1".into(),
            message_type: "chat".into(),
            payload: json!([1]),
        })
    );
    assert!(app.status.contains("Waiting for chat:response"));
    app.apply(AppEvent::Answered {
        to: "p1".into(),
        message_type: "chat".into(),
        payload: json!([1]),
        result: Ok(json!({"ok": true})),
        at: 0,
    });
    assert_eq!(
        app.log.back().unwrap().text,
        r#"p1 chat:response {"ok":true}"#
    );
    app.apply(AppEvent::Answered {
        to: "p1".into(),
        message_type: "chat".into(),
        payload: json!([1]),
        result: Err("timed out".into()),
        at: 0,
    });
    assert_eq!(app.log.back().unwrap().kind, LogKind::Error);
}

#[test]
fn escape_discards_and_no_peer_is_explained() {
    let mut app = App::new("h");
    assert_eq!(app.handle_key(key(KeyCode::Enter)), None);
    assert!(app.status.contains("No peer selected"));
    app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
    app.handle_key(key(KeyCode::Enter));
    type_text(&mut app, "x");
    app.handle_key(key(KeyCode::Esc));
    assert_eq!(app.mode, Mode::Normal);
    app.handle_key(key(KeyCode::Esc));
    assert!(!app.quit, "Esc in the normal mode does not quit");
}

#[test]
fn requests_wait_and_are_answered() {
    let mut app = App::new("h");
    app.apply(AppEvent::Incoming(request("requester1")));
    assert_eq!(app.requests.len(), 1);
    assert!(app.log.back().unwrap().text.contains("(request: press r)"));
    assert_eq!(app.log.back().unwrap().time, "01:02:03");
    // A plain message is logged but not a request.
    let mut plain = request("other");
    plain.payload = json!("hi");
    app.apply(AppEvent::Incoming(plain));
    assert_eq!(app.requests.len(), 1);
    // Neither is a response.
    let mut response = request("other");
    response.message_type = "ask:response".into();
    app.apply(AppEvent::Incoming(response));
    assert_eq!(app.requests.len(), 1);

    app.handle_key(key(KeyCode::Char('r')));
    type_text(&mut app, r#"{"a": 42}"#);
    let cmd = app.handle_key(key(KeyCode::Enter));
    assert_eq!(
        cmd,
        Some(Command::Respond {
            request: request("requester1"),
            payload: json!({"a": 42}),
        })
    );
    assert!(app.requests.is_empty());
    app.handle_key(key(KeyCode::Char('r')));
    assert!(app.status.contains("No request"));
}

#[test]
fn quit_keys_and_refresh() {
    let mut app = App::new("h");
    assert_eq!(
        app.handle_key(key(KeyCode::Char('R'))),
        Some(Command::Refresh)
    );
    assert_eq!(app.handle_key(key(KeyCode::F(5))), Some(Command::Refresh));
    assert_eq!(app.handle_key(key(KeyCode::Char('q'))), Some(Command::Quit));
    assert!(app.quit);
    let mut app = App::new("h");
    app.apply(AppEvent::Peers(Ok(vec![peer("p1")])));
    app.handle_key(key(KeyCode::Enter));
    // `q` while typing is a letter; Ctrl-C always quits.
    type_text(&mut app, "q");
    assert!(!app.quit);
    assert_eq!(app.handle_key(key_ctrl('c')), Some(Command::Quit));
}

#[test]
fn help_opens_and_closes() {
    let mut app = App::new("h");
    app.handle_key(key(KeyCode::Char('?')));
    assert!(app.show_help);
    app.handle_key(key(KeyCode::Char('?')));
    assert!(!app.show_help);
    assert!(!app.quit);
}

#[test]
fn refresh_keeps_the_selected_peer() {
    let mut app = App::new("h");
    app.apply(AppEvent::Peers(Ok(vec![peer("a"), peer("b")])));
    app.handle_key(key(KeyCode::Down));
    app.apply(AppEvent::Peers(Ok(vec![peer("c"), peer("a"), peer("b")])));
    assert_eq!(app.selected_peer().unwrap().id, "b");
    app.apply(AppEvent::Peers(Ok(vec![])));
    assert_eq!(app.selected, 0);
    assert!(app.selected_peer().is_none());
}

#[test]
fn log_is_bounded() {
    let mut app = App::new("h");
    for i in 0..(MAX_LOG + 5) {
        let mut m = request("x");
        m.payload = json!(i);
        app.apply(AppEvent::Incoming(m));
    }
    assert_eq!(app.log.len(), MAX_LOG);
    assert!(app.log.front().unwrap().text.ends_with(" 5"));
}

#[test]
fn relayed_messages_and_sends_say_so() {
    let mut app = App::new("ws://hub");
    let mut relayed = request("cccccccc33");
    relayed.route = m2m_agent::Route::Relay;
    app.apply(AppEvent::Incoming(relayed));
    assert!(
        app.log.back().unwrap().text.contains("ask via relay"),
        "{}",
        app.log.back().unwrap().text
    );
    app.apply(AppEvent::Incoming(request("dddddddd44")));
    assert!(!app.log.back().unwrap().text.contains("relay"));
    app.apply(AppEvent::Sent {
        to: "cccccccc33".into(),
        message_type: "task".into(),
        payload: json!(1),
        result: Ok(m2m_agent::Route::Relay),
        at: 0,
    });
    assert_eq!(app.log.back().unwrap().text, "cccccccc task via relay 1");
    assert!(app.status.ends_with("via relay."), "{}", app.status);
}
