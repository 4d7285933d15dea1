//! The terminal agent's IO loop: terminal keys, incoming messages, hub events and finished
//! network tasks all feed one [`App`]; the screen is redrawn after each. Network work runs
//! in tasks of one `JoinSet` (so the screen never waits on the network) and reports back
//! through a bounded channel as [`AppEvent`]s.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::Context as _;
use crossterm::event::{Event, EventStream};
use futures_util::StreamExt;
use m2m_agent::{Agent, AgentEvent, DiscoverOptions, Message};
use ratatui::DefaultTerminal;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

use super::app::{App, AppEvent, Command, Incoming};
use super::render;
use crate::cli::AgentArgs;
use crate::cmd::{explain, now_ms, shutdown_signal, Join};
use crate::defaults::{TUI_AUTO_REFRESH as AUTO_REFRESH, TUI_EVENT_QUEUE as EVENT_QUEUE};

/// `m2m agent`.
pub async fn run(hub: &str, identity: Option<&Path>, args: AgentArgs) -> anyhow::Result<()> {
    let join = Join::long_running(
        hub,
        identity,
        args.port,
        args.address.clone(),
        &args.connect,
        args.authenticated_only,
    )?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "m2m agent is interactive and needs a terminal; scripts can use `m2m listen` and the one-shot commands"
        );
    }
    // Join before taking over the terminal, so a failure prints as a normal error.
    let agent = join.connect().await?;
    let hub_url = agent.hub_url();
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            let _ = agent.disconnect().await;
            return Err(e).context("could not set up the terminal");
        }
    };
    let result = event_loop(&mut terminal, &agent, App::new(hub_url)).await;
    let _ = agent.disconnect().await;
    ratatui::restore();
    result
}

async fn event_loop(
    terminal: &mut DefaultTerminal,
    agent: &Agent,
    mut app: App,
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel::<AppEvent>(EVENT_QUEUE);
    let mut keys = EventStream::new();
    let mut hub_events = agent.events();
    let mut tasks = JoinSet::new();
    let mut refresh = tokio::time::interval(AUTO_REFRESH);
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);

    app.apply(AppEvent::Registered {
        id: agent.id(),
        address: agent.address(),
        at: now_ms(),
    });
    loop {
        terminal
            .draw(|frame| render::draw(frame, &app))
            .context("could not draw on the terminal")?;
        if app.quit {
            break;
        }
        tokio::select! {
            () = &mut shutdown => break,
            key = keys.next() => match key {
                Some(Ok(Event::Key(key))) => {
                    tracing::debug!(?key, "key");
                    if let Some(command) = app.handle_key(key) {
                        execute(command, agent, &tx, &mut tasks);
                    }
                }
                // A resize needs nothing but the redraw at the top of the loop.
                Some(Ok(event)) => tracing::debug!(?event, "terminal event"),
                Some(Err(e)) => return Err(e).context("could not read the terminal"),
                None => break,
            },
            Some(event) = rx.recv() => app.apply(event),
            message = agent.next_message() => match message {
                Some(m) => app.apply(AppEvent::Incoming(incoming(m))),
                None => break,
            },
            event = hub_events.recv() => match event {
                Ok(AgentEvent::Reconnected { hub, id, address, .. }) => {
                    app.hub = hub;
                    app.apply(AppEvent::Registered { id, address, at: now_ms() });
                    execute(Command::Refresh, agent, &tx, &mut tasks);
                }
                Ok(AgentEvent::Disconnected { reason }) => {
                    app.apply(AppEvent::HubLost { reason, at: now_ms() });
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = refresh.tick() => execute(Command::Refresh, agent, &tx, &mut tasks),
            Some(_) = tasks.join_next() => {}
        }
    }
    if !app.quit {
        app.quit = true;
        app.status = "Disconnecting…".into();
    }
    let _ = terminal.draw(|frame| render::draw(frame, &app));
    tasks.shutdown().await;
    Ok(())
}

fn incoming(m: Message) -> Incoming {
    Incoming {
        from: m.from,
        message_type: m.message_type,
        payload: m.payload,
        correlation_id: m.correlation_id,
        timestamp: m.timestamp,
        authenticated: m.authenticated,
        route: m.route,
    }
}

/// Starts the network work a key asked for; its result comes back on `tx`.
fn execute(command: Command, agent: &Agent, tx: &mpsc::Sender<AppEvent>, tasks: &mut JoinSet<()>) {
    let agent = agent.clone();
    let tx = tx.clone();
    match command {
        Command::Quit => {}
        Command::Refresh => {
            tasks.spawn(async move {
                let (peers, stats) =
                    tokio::join!(agent.discover(DiscoverOptions::new()), agent.stats());
                let _ = tx
                    .send(AppEvent::Peers(peers.map_err(|e| explain(e).to_string())))
                    .await;
                let _ = tx
                    .send(AppEvent::Stats(stats.map_err(|e| explain(e).to_string())))
                    .await;
            });
        }
        Command::Send {
            to,
            message_type,
            payload,
        } => {
            tasks.spawn(async move {
                let result = agent
                    .send(&to, &message_type, payload.clone())
                    .await
                    .map(|d| d.route)
                    .map_err(|e| explain(e).to_string());
                let _ = tx
                    .send(AppEvent::Sent {
                        to,
                        message_type,
                        payload,
                        result,
                        at: now_ms(),
                    })
                    .await;
            });
        }
        Command::Request {
            to,
            message_type,
            payload,
        } => {
            tasks.spawn(async move {
                let result = agent
                    .request(&to, &message_type, payload.clone(), None)
                    .await
                    .map_err(|e| explain(e).to_string());
                let _ = tx
                    .send(AppEvent::Answered {
                        to,
                        message_type,
                        payload,
                        result,
                        at: now_ms(),
                    })
                    .await;
            });
        }
        Command::Respond { request, payload } => {
            tasks.spawn(async move {
                let message = Message {
                    from: request.from.clone(),
                    message_type: request.message_type.clone(),
                    payload: request.payload,
                    correlation_id: request.correlation_id,
                    timestamp: request.timestamp,
                    encrypted: true,
                    authenticated: request.authenticated,
                    route: request.route,
                };
                let result = agent
                    .respond(&message, payload.clone())
                    .await
                    .map(|d| d.route)
                    .map_err(|e| explain(e).to_string());
                let _ = tx
                    .send(AppEvent::Responded {
                        to: request.from,
                        message_type: format!("{}:response", request.message_type),
                        payload,
                        result,
                        at: now_ms(),
                    })
                    .await;
            });
        }
    }
}
