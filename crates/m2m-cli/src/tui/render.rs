//! Draws an [`App`] on a ratatui frame. Pure: the same state gives the same screen, at any
//! size (tiny terminals get less, never a panic).
//!
//! ```text
//!  m2m agent <id> @ <address> · hub <url> · online
//!  hub: 3 agents (2 online, 1 idle) · 2 active connections · up 5m 3s
//! ┌ Peers (2) ─────────────┐┌ Messages ───────────────────────────┐
//! │> 1a2b3c4d online …     ││12:00:01 ← 1a2b3c4d chat "hi"        │
//! └────────────────────────┘└─────────────────────────────────────┘
//! ┌ Requests waiting (1) ───────────────────────────────────────────┐
//! ┌ Send to 1a2b3c4d ───────────────────────────────────────────────┐
//!  ↑↓ select · Enter send · r answer · R refresh · ? help · q quit
//! ```

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

use super::app::{
    compact, proof, short, App, Field, LogKind, Mode, AUTHENTICATED_MARK, UNVERIFIED_MARK,
};
use crate::output::human_duration;

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let requests_height = if app.requests.is_empty() {
        0
    } else {
        (app.requests.len().min(3) as u16) + 2
    };
    let [header, stats, main, requests, input, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(requests_height),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .areas(frame.area());

    draw_header(frame, app, header);
    frame.render_widget(Paragraph::new(stats_line(app)).dark_gray(), stats);
    let [peers, log] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(main);
    draw_peers(frame, app, peers);
    draw_log(frame, app, log);
    if requests_height > 0 {
        draw_requests(frame, app, requests);
    }
    draw_input(frame, app, input);
    frame.render_widget(Paragraph::new(key_help(app)).reversed(), help);
    if app.show_help {
        draw_help(frame, frame.area());
    }
}

fn draw_header(frame: &mut Frame, app: &App, area: Rect) {
    let (state, colour) = if app.hub_connected {
        ("online", Color::Green)
    } else if app.id.is_empty() {
        ("connecting…", Color::Yellow)
    } else {
        ("reconnecting…", Color::Yellow)
    };
    let id = if app.id.is_empty() { "-" } else { &app.id };
    let line = Line::from(vec![
        Span::raw(" m2m agent ").bold(),
        Span::raw(id.to_owned()).cyan(),
        Span::raw(format!(" @ {} · hub {} · ", app.address, app.hub)),
        Span::styled(state, Style::default().fg(colour)),
    ]);
    frame.render_widget(Paragraph::new(line), area);
}

fn stats_line(app: &App) -> String {
    match &app.stats {
        None => " hub stats: press R".to_owned(),
        Some(s) => format!(
            " hub: {} agents ({} online, {} idle, {} offline) · {} active connections · up {} · v{}",
            s.agents.total,
            s.agents.online,
            s.agents.idle,
            s.agents.offline,
            s.hub.active_connections,
            human_duration(s.hub.uptime),
            s.hub.version
        ),
    }
}

fn draw_peers(frame: &mut Frame, app: &App, area: Rect) {
    let items: Vec<ListItem> = app
        .peers
        .iter()
        .map(|p| {
            let status_colour = match p.status.as_str() {
                "online" => Color::Green,
                "idle" => Color::Yellow,
                _ => Color::Gray,
            };
            let caps = if p.capabilities.is_empty() {
                String::new()
            } else {
                format!(" [{}]", p.capabilities.join(","))
            };
            let name = p
                .metadata
                .get("name")
                .and_then(serde_json::Value::as_str)
                .map(|n| format!("{n} "))
                .unwrap_or_default();
            // The hub vouches for a 2.1 peer's identity key: a send to it is authenticated.
            let proof = if p.identity.is_some() {
                Span::raw(AUTHENTICATED_MARK).green()
            } else {
                Span::raw(UNVERIFIED_MARK).yellow()
            };
            ListItem::new(Line::from(vec![
                Span::raw(short(&p.id).to_owned()).cyan(),
                Span::raw(" "),
                Span::styled(p.status.clone(), Style::default().fg(status_colour)),
                Span::raw(" "),
                proof,
                Span::raw(" "),
                Span::raw(name).bold(),
                Span::raw(format!("{}{caps}", p.address)),
            ]))
        })
        .collect();
    let title = format!(" Peers ({}) ", app.peers.len());
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(title))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = ListState::default();
    if !app.peers.is_empty() {
        state.select(Some(app.selected));
    }
    frame.render_stateful_widget(list, area, &mut state);
    if app.peers.is_empty() && area.height > 2 && area.width > 2 {
        let inner = Rect {
            x: area.x + 1,
            y: area.y + 1,
            width: area.width - 2,
            height: 1,
        };
        frame.render_widget(
            Paragraph::new("no peers yet (R refreshes)").dark_gray(),
            inner,
        );
    }
}

fn draw_log(frame: &mut Frame, app: &App, area: Rect) {
    let visible = usize::from(area.height.saturating_sub(2));
    let skip = app.log.len().saturating_sub(visible);
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(skip)
        .map(|entry| {
            let (arrow, colour) = match entry.kind {
                LogKind::Received => ("←", Color::Cyan),
                LogKind::Sent => ("→", Color::Green),
                LogKind::Info => ("·", Color::Gray),
                LogKind::Error => ("!", Color::Red),
            };
            Line::from(vec![
                Span::raw(format!("{} ", entry.time)).dark_gray(),
                Span::styled(format!("{arrow} "), Style::default().fg(colour)),
                Span::raw(entry.text.clone()),
            ])
        })
        .collect();
    let block = Block::default().borders(Borders::ALL).title(" Messages ");
    let inner_width = area.width.saturating_sub(2);
    if inner_width == 0 || visible == 0 {
        frame.render_widget(block, area);
        return;
    }
    // Long lines wrap; scroll so the newest line is at the bottom.
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    let scroll = paragraph.line_count(inner_width).saturating_sub(visible);
    frame.render_widget(
        paragraph
            .scroll((u16::try_from(scroll).unwrap_or(u16::MAX), 0))
            .block(block),
        area,
    );
}

fn draw_requests(frame: &mut Frame, app: &App, area: Rect) {
    let items: Vec<ListItem> = app
        .requests
        .iter()
        .map(|r| {
            ListItem::new(format!(
                "{} {} {} {}",
                short(&r.from),
                proof(r.authenticated),
                r.message_type,
                compact(&r.payload)
            ))
        })
        .collect();
    let title = format!(
        " Requests waiting ({}) — r answer, Tab next ",
        app.requests.len()
    );
    let list = List::new(items)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .border_style(Style::default().fg(Color::Yellow)),
        )
        .highlight_symbol("> ");
    let mut state = ListState::default();
    state.select(Some(app.selected_request));
    frame.render_stateful_widget(list, area, &mut state);
}

fn draw_input(frame: &mut Frame, app: &App, area: Rect) {
    let (title, line, cursor) = match &app.mode {
        Mode::Normal => (" Status ".to_owned(), Line::from(app.status.clone()), None),
        Mode::Compose(c) => {
            let field_style = |f: Field| {
                if c.field == f {
                    Style::default().add_modifier(Modifier::UNDERLINED)
                } else {
                    Style::default()
                }
            };
            let type_label = "type: ";
            let payload_label = "  payload: ";
            let cursor = match c.field {
                Field::Type => type_label.len() + c.message_type.chars().count(),
                Field::Payload => {
                    type_label.len()
                        + c.message_type.chars().count()
                        + payload_label.len()
                        + c.payload.chars().count()
                }
            };
            (
                if c.request {
                    format!(
                        " Request to {} — Enter sends and waits for {}:response, Ctrl-R plain message ",
                        short(&c.to),
                        c.message_type.trim()
                    )
                } else {
                    format!(
                        " Send to {} — Tab switches field, Enter sends, Ctrl-R request, Esc cancels ",
                        short(&c.to)
                    )
                },
                Line::from(vec![
                    Span::raw(type_label).dark_gray(),
                    Span::styled(c.message_type.clone(), field_style(Field::Type)),
                    Span::raw(payload_label).dark_gray(),
                    Span::styled(c.payload.clone(), field_style(Field::Payload)),
                ]),
                Some(cursor),
            )
        }
        Mode::Reply(r) => {
            let label = "response: ";
            (
                format!(
                    " Answer {} from {} — Enter sends {}:response, Esc cancels ",
                    r.request.message_type,
                    short(&r.request.from),
                    r.request.message_type
                ),
                Line::from(vec![
                    Span::raw(label).dark_gray(),
                    Span::raw(r.payload.clone()),
                ]),
                Some(label.len() + r.payload.chars().count()),
            )
        }
    };
    let width = usize::from(area.width.saturating_sub(2));
    // Long input scrolls so the cursor stays visible.
    let scroll = cursor
        .map(|c| c.saturating_sub(width.saturating_sub(1)))
        .unwrap_or(0);
    let paragraph = Paragraph::new(line)
        .block(Block::default().borders(Borders::ALL).title(title))
        .scroll((0, u16::try_from(scroll).unwrap_or(u16::MAX)));
    let paragraph = if cursor.is_none() {
        paragraph.wrap(Wrap { trim: true })
    } else {
        paragraph
    };
    frame.render_widget(paragraph, area);
    if let Some(c) = cursor {
        if area.width > 2 && area.height > 2 {
            let x = (c - scroll).min(width.saturating_sub(1));
            frame.set_cursor_position((area.x + 1 + x as u16, area.y + 1));
        }
    }
}

fn key_help(app: &App) -> &'static str {
    match app.mode {
        Mode::Normal => {
            " ↑↓ select · Enter send · r answer request · Tab next request · R refresh · ? help · q quit"
        }
        Mode::Compose(_) => {
            " Tab type/payload · Enter send · Ctrl-R message/request · Esc cancel · Ctrl-U clear · Ctrl-C quit"
        }
        Mode::Reply(_) => " Enter send the answer · Esc cancel · Ctrl-U clear · Ctrl-C quit",
    }
}

const HELP: &str = "\
↑/↓ or j/k   select a peer
Enter or s   write a message to the selected peer: its type,
             then its payload (JSON, or text sent as a string)
r or a       answer the selected waiting request
Tab          select the next waiting request
R or F5      refresh peers and hub stats
?            show or hide this help
q            disconnect and quit (Ctrl-C anywhere)

While writing: Tab switches field, Enter sends, Esc cancels,
Ctrl-R sends a request and shows its response, Ctrl-U clears
the field, Ctrl-W deletes a word.

✓  the sender proved its identity, or the hub vouches for the
   peer's key (2.1)
?  a 2.0 agent: nothing proves its id, anyone could claim it";

fn draw_help(frame: &mut Frame, area: Rect) {
    let width = area.width.min(66);
    let height = area.height.min(20);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(HELP).wrap(Wrap { trim: false }).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Help — any key closes "),
        ),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::app::{AppEvent, Incoming};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use m2m_proto::hub::{AgentCounts, HubCounters, Peer, Stats};
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use serde_json::json;

    fn screen(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, app)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn peer(id: &str, status: &str) -> Peer {
        Peer {
            id: id.into(),
            address: "127.0.0.1:4001".into(),
            capabilities: vec!["chat".into()],
            metadata: Default::default(),
            status: status.into(),
            last_seen: 0,
            identity: None,
            relay: None,
            reachable: None,
            mailbox: None,
        }
    }

    fn sample() -> App {
        let mut app = App::new("ws://127.0.0.1:3000/ws");
        app.apply(AppEvent::Registered {
            id: "0123456789abcdef0123456789abcdef".into(),
            address: "127.0.0.1:4000".into(),
            at: 0,
        });
        app.apply(AppEvent::Peers(Ok(vec![
            peer("aaaaaaaa00000000", "online"),
            peer("bbbbbbbb00000000", "idle"),
        ])));
        app.apply(AppEvent::Stats(Ok(Stats {
            agents: AgentCounts {
                total: 3,
                online: 2,
                idle: 1,
                offline: 0,
            },
            hub: HubCounters {
                version: "2.0.0".into(),
                uptime: 65,
                connections: 4,
                active_connections: 3,
            },
        })));
        app.apply(AppEvent::Incoming(Incoming {
            from: "aaaaaaaa00000000".into(),
            message_type: "chat".into(),
            payload: json!({"text": "hello"}),
            correlation_id: Some("c0".into()),
            timestamp: 45_296_000,
            authenticated: false,
            route: Default::default(),
        }));
        app
    }

    #[test]
    fn shows_identity_peers_log_stats_and_help_line() {
        let text = screen(&sample(), 120, 20);
        assert!(
            text.contains("m2m agent 0123456789abcdef0123456789abcdef @ 127.0.0.1:4000"),
            "{text}"
        );
        assert!(text.contains("online"), "{text}");
        assert!(text.contains("Peers (2)"), "{text}");
        assert!(
            text.contains("> aaaaaaaa online ? 127.0.0.1:4001 [chat]"),
            "{text}"
        );
        assert!(text.contains("bbbbbbbb idle ? 127.0.0.1:4001"), "{text}");
        assert!(
            text.contains(r#"12:34:56 ← aaaaaaaa ? chat {"text":"hello"}"#),
            "{text}"
        );
        assert!(
            text.contains(
                "hub: 3 agents (2 online, 1 idle, 0 offline) · 3 active connections · up 1m 5s"
            ),
            "{text}"
        );
        assert!(text.contains("q quit"), "{text}");
    }

    #[test]
    fn compose_box_and_requests_panel() {
        let mut app = sample();
        app.apply(AppEvent::Incoming(Incoming {
            from: "bbbbbbbb00000000".into(),
            message_type: "compute".into(),
            payload: json!({"n": 1, "correlationId": "c9"}),
            correlation_id: Some("c9".into()),
            timestamp: 0,
            authenticated: false,
            route: Default::default(),
        }));
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        for c in "hi".chars() {
            app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        }
        let text = screen(&app, 120, 24);
        assert!(text.contains("Requests waiting (1)"), "{text}");
        assert!(
            text.contains(r#"> bbbbbbbb ? compute {"n":1,"correlationId":"c9"}"#),
            "{text}"
        );
        assert!(text.contains("Send to aaaaaaaa"), "{text}");
        assert!(text.contains("type: chat  payload: hi"), "{text}");

        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
        let text = screen(&app, 120, 24);
        assert!(text.contains("Answer compute from bbbbbbbb"), "{text}");
        assert!(text.contains("response:"), "{text}");
    }

    #[test]
    fn long_log_lines_wrap_and_the_newest_stays_in_view() {
        let mut app = sample();
        for i in 0..30 {
            app.apply(AppEvent::Incoming(Incoming {
                from: "aaaaaaaa00000000".into(),
                message_type: "chat".into(),
                payload: json!(format!("{i:02} {}END", "x".repeat(100))),
                correlation_id: None,
                timestamp: 0,
                authenticated: false,
                route: Default::default(),
            }));
        }
        let text = screen(&app, 120, 20);
        assert!(text.contains("END"), "{text}");
        assert!(text.contains(r#"chat "29"#), "{text}");
        assert!(!text.contains(r#"chat "03"#), "{text}");
    }

    #[test]
    fn peers_show_their_name() {
        let mut app = sample();
        let mut named = peer("cccccccc00000000", "online");
        named.metadata.insert("name".into(), json!("bot"));
        app.apply(AppEvent::Peers(Ok(vec![named])));
        let text = screen(&app, 120, 20);
        assert!(
            text.contains("cccccccc online ? bot 127.0.0.1:4001 [chat]"),
            "{text}"
        );
    }

    #[test]
    fn authenticated_peers_and_messages_are_marked() {
        let mut app = sample();
        let mut vouched = peer("dddddddd00000000", "online");
        vouched.identity = Some("key".into());
        app.apply(AppEvent::Peers(Ok(vec![
            vouched,
            peer("eeeeeeee00000000", "online"),
        ])));
        for (from, authenticated) in [("dddddddd00000000", true), ("eeeeeeee00000000", false)] {
            app.apply(AppEvent::Incoming(Incoming {
                from: from.into(),
                message_type: "ask".into(),
                payload: json!({"correlationId": "c1"}),
                correlation_id: Some("c1".into()),
                timestamp: 0,
                authenticated,
                route: Default::default(),
            }));
        }
        let text = screen(&app, 120, 24);
        assert!(text.contains("dddddddd online ✓ 127.0.0.1:4001"), "{text}");
        assert!(text.contains("eeeeeeee online ? 127.0.0.1:4001"), "{text}");
        assert!(text.contains("← dddddddd ✓ ask (request"), "{text}");
        assert!(text.contains("← eeeeeeee ? ask (request"), "{text}");
        // The waiting requests say it too.
        assert!(text.contains("dddddddd ✓ ask {"), "{text}");
        assert!(text.contains("eeeeeeee ? ask {"), "{text}");
    }

    #[test]
    fn help_panel() {
        let mut app = sample();
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        let text = screen(&app, 100, 30);
        assert!(text.contains("Help — any key closes"), "{text}");
        assert!(text.contains("refresh peers and hub stats"), "{text}");
    }

    #[test]
    fn any_size_draws_without_panic() {
        let mut app = sample();
        app.handle_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        for (w, h) in [(1, 1), (2, 2), (10, 3), (20, 8), (40, 10), (300, 80)] {
            screen(&app, w, h);
        }
        app.handle_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        for _ in 0..300 {
            app.handle_key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE));
        }
        for (w, h) in [(1, 1), (5, 5), (30, 10), (120, 30)] {
            let text = screen(&app, w, h);
            if w == 120 {
                // The end of a long payload stays in view.
                assert!(text.contains("xxxxxxxx"), "{text}");
            }
        }
    }

    #[test]
    fn resizing_redraws_to_the_new_size() {
        let app = sample();
        let mut terminal = Terminal::new(TestBackend::new(120, 20)).unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
        terminal.backend_mut().resize(60, 15);
        terminal.autoresize().unwrap();
        terminal.draw(|f| draw(f, &app)).unwrap();
        let buffer = terminal.backend().buffer();
        assert_eq!((buffer.area.width, buffer.area.height), (60, 15));
        let row: String = (0..60)
            .map(|x| buffer[(x, 14)].symbol().to_owned())
            .collect();
        assert!(row.contains("select"), "{row}");
    }
}
