//! `m2m listen`: a scriptable agent. It registers, prints one JSON object per line on stdout
//! (`connected`, then one `message` per incoming message), and optionally answers every
//! message that is not itself a response: with its own payload (`--echo`), or with what a
//! shell command prints when given the message as JSON on stdin (`--exec`), so a handler in
//! any language can serve requests.
//!
//! The main loop owns stdout; handlers run as tasks of one `JoinSet`, at most
//! `--exec-parallelism` at once (a full set makes the loop wait, which slows the senders
//! down instead of queueing without bound).
//!
//! **Answer budget** (issue 13 #7: 48 messages whose `from` tarpits held all 8 slots and a
//! legitimate request timed out): every answer waits for its slot in its own task, never in
//! the loop; one sender has at most `--max-answers-per-peer` answers running (its others wait
//! for its share without holding a slot), and unauthenticated senders, whose `from` anyone
//! can claim, run in at most half the slots, so an authenticated request always finds one
//! soon. At most eight times the slots wait or run: past that an authenticated message waits
//! in the loop (backpressure), an unauthenticated one is not answered. Answers to
//! unauthenticated senders also give up after `--unverified-respond-timeout`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use m2m_agent::{Agent, AgentError, AgentEvent, Message};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::{shutdown_signal, Join};
use crate::cli::{ListenArgs, ListenLimitArgs};
use crate::defaults::{MAX_HANDLER_OUTPUT, MAX_HANDLER_STDERR};
use crate::output::print_line;

/// How incoming messages are answered.
#[derive(Debug, Clone)]
enum Handler {
    /// Not at all.
    None,
    /// With their own payload.
    Echo,
    /// With the output of a shell command.
    Exec { command: String, timeout: Duration },
}

/// `m2m listen`.
pub async fn run(hub: &str, identity: Option<&Path>, args: ListenArgs) -> anyhow::Result<()> {
    let join = Join::long_running(
        hub,
        identity,
        args.serve.port,
        args.serve.address.clone(),
        &args.serve.connect,
        args.serve.authenticated_only,
    )?;
    let handler = match (&args.exec, args.echo) {
        (Some(command), _) => Handler::Exec {
            command: command.clone(),
            timeout: args.exec_timeout,
        },
        (None, true) => Handler::Echo,
        (None, false) => Handler::None,
    };
    let limits = args.limits.clone();
    let agent = join.connect_with(|b| configure_limits(b, &limits)).await?;
    let budget = AnswerBudget::new(args.exec_parallelism, limits.max_answers_per_peer);
    let result = serve(&agent, handler, budget).await;
    if let Err(e) = agent.disconnect().await {
        tracing::warn!("disconnecting from the hub: {e}");
    }
    match result {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// The agent's inbound limits from the flags.
fn configure_limits(
    builder: m2m_agent::AgentBuilder,
    l: &ListenLimitArgs,
) -> m2m_agent::AgentBuilder {
    let (budget, timeout) = (l.inbound_buffer_budget, l.unverified_respond_timeout);
    builder
        .max_inbound_connections(l.max_inbound)
        .max_inbound_per_ip(l.max_inbound_per_ip)
        .inbound_buffer_budget(budget.saturating_mul(1 << 20))
        .handshakes_per_ip_per_second(l.handshakes_per_ip)
        .configure(|c| c.unverified_respond_timeout = timeout)
}

/// Who may use the answer slots (see the module docs).
#[derive(Debug, Clone)]
struct AnswerBudget {
    /// Every answer runs holding one of these.
    slots: Arc<Semaphore>,
    /// Answers to unauthenticated senders also hold one of these: half the slots.
    unverified: Arc<Semaphore>,
    /// Answers waiting or running: bounds the tasks (and messages) held.
    waiting: Arc<Semaphore>,
    /// Each sender's share of running answers.
    per_peer: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    max_per_peer: usize,
}

/// What one answer holds while it runs; dropping it gives everything back.
struct Running {
    _slots: Vec<OwnedSemaphorePermit>,
    _share: PeerShare,
}

/// An answer's claim on its sender's share (waiting for it, then holding it).
struct PeerShare {
    per_peer: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    peer: String,
    semaphore: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        drop(self.permit.take());
        drop(self.semaphore.take());
        let mut map = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the sender once no answer waits on its share or holds it: handles are
        // cloned only under this lock, so the map's own is then the last one.
        if map
            .get(&self.peer)
            .is_some_and(|share| Arc::strong_count(share) == 1)
        {
            map.remove(&self.peer);
        }
    }
}

impl AnswerBudget {
    fn new(parallelism: usize, max_per_peer: usize) -> Self {
        let parallelism = parallelism.max(1);
        AnswerBudget {
            slots: Arc::new(Semaphore::new(parallelism)),
            unverified: Arc::new(Semaphore::new(parallelism.div_ceil(2))),
            waiting: Arc::new(Semaphore::new(parallelism * 8)),
            per_peer: Arc::new(Mutex::new(HashMap::new())),
            max_per_peer: max_per_peer.max(1),
        }
    }

    /// Waits for the sender's share, then (unauthenticated: for the unverified half, then)
    /// for a slot. Run in the answer's own task, never in the main loop.
    async fn run(&self, peer: &str, authenticated: bool) -> Option<Running> {
        let semaphore = {
            let mut map = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(peer.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.max_per_peer)))
                .clone()
        };
        let mut share = PeerShare {
            per_peer: self.per_peer.clone(),
            peer: peer.to_owned(),
            semaphore: Some(semaphore.clone()),
            permit: None,
        };
        share.permit = Some(semaphore.acquire_owned().await.ok()?);
        let mut slots = Vec::with_capacity(2);
        if !authenticated {
            slots.push(self.unverified.clone().acquire_owned().await.ok()?);
        }
        slots.push(self.slots.clone().acquire_owned().await.ok()?);
        Some(Running {
            _slots: slots,
            _share: share,
        })
    }
}

async fn serve(agent: &Agent, handler: Handler, budget: AnswerBudget) -> anyhow::Result<()> {
    let mut events = agent.events();
    // Installed before `connected` is printed: whoever reacts to that line may signal at once.
    let shutdown = shutdown_signal();
    let mut connected = json!({
        "event": "connected",
        "id": agent.id(),
        "address": agent.address(),
        "hubVerified": agent.hub_verified(),
        "hub": agent.hub_url(),
    });
    // How others reach us (docs/RELAY.md): directly, or only through the hub's relay.
    if let Some(reachable) = agent.reachable() {
        connected["reachable"] = json!(reachable.as_str());
    }
    print_line(&connected.to_string())?;
    let mut handlers = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = handlers.join_next() => {
                if let Err(e) = done {
                    tracing::warn!("a message handler failed: {e}");
                }
            }
            event = events.recv() => match event {
                Ok(AgentEvent::Reconnected { hub, id, address, reachable }) => {
                    let mut line = json!({"event": "reconnected", "id": id, "address": address, "hub": hub});
                    if let Some(reachable) = reachable {
                        line["reachable"] = json!(reachable.as_str());
                    }
                    print_line(&line.to_string())?;
                }
                Ok(AgentEvent::Disconnected { reason }) => {
                    print_line(&json!({"event": "hub_lost", "reason": reason}).to_string())?;
                    if reason.starts_with("superseded") {
                        // The SDK does not reconnect: another process holds our identity.
                        handlers.shutdown().await;
                        anyhow::bail!(
                            "another m2m process registered at the hub with this identity;                              give each agent its own key file with --identity FILE"
                        );
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = agent.next_message() => {
                let Some(message) = message else { break };
                print_line(&message_line(&message).to_string())?;
                if matches!(handler, Handler::None) || message.message_type.ends_with(":response") {
                    continue;
                }
                // Bounded: at most this many answers wait or run. Past it, an authenticated
                // sender's message waits here (backpressure, as before), an unauthenticated
                // one is not answered (its sender can claim any `from`).
                let queued = match budget.waiting.clone().try_acquire_owned() {
                    Ok(q) => q,
                    Err(_) if !message.authenticated => {
                        tracing::info!(
                            "not answering {} from {}: too many answers waiting",
                            message.message_type, message.from
                        );
                        continue;
                    }
                    Err(_) => tokio::select! {
                        q = budget.waiting.clone().acquire_owned() => q.context("handler pool closed")?,
                        () = &mut shutdown => break,
                    },
                };
                let agent = agent.clone();
                let handler = handler.clone();
                let budget = budget.clone();
                handlers.spawn(async move {
                    let _queued = queued;
                    if let Some(_running) = budget.run(&message.from, message.authenticated).await {
                        answer(&agent, &handler, message).await;
                    }
                });
            }
        }
    }
    handlers.shutdown().await;
    Ok(())
}

/// The `message` line of the output.
/// The JSON line of one message (also `m2m inbox`'s).
pub(crate) fn message_line(m: &Message) -> Value {
    json!({
        "event": "message",
        "from": m.from,
        "type": m.message_type,
        "payload": m.payload,
        "correlationId": m.correlation_id,
        "timestamp": m.timestamp,
        // Whether `from` is proven (a 2.1 session) or only declared (2.0).
        "authenticated": m.authenticated,
        // Directly over TCP, through the hub's relay, or from the hub's mailbox (then
        // `timestamp` is when the sender sent it).
        "route": m.route.as_str(),
        "via": m.via(),
    })
}

async fn answer(agent: &Agent, handler: &Handler, message: Message) {
    let response = match handler {
        Handler::None => return,
        Handler::Echo => message.payload.clone(),
        Handler::Exec { command, timeout } => exec(command, &message, *timeout).await,
    };
    match agent.respond(&message, response).await {
        Ok(_) => {}
        // A one-shot `m2m send` has usually left by the time its answer is ready.
        Err(
            e @ (AgentError::AgentOffline(_)
            | AgentError::AgentNotFound(_)
            | AgentError::Unreachable { .. }),
        ) => tracing::info!(
            "could not answer {} from {} (it has left?): {e}",
            message.message_type,
            message.from
        ),
        Err(e) => tracing::warn!(
            "could not answer {} from {}: {e}",
            message.message_type,
            message.from
        ),
    }
}

/// Runs `command` through the shell with the message as JSON on stdin; its stdout, parsed
/// as JSON, is the answer. Anything else answers `{"error": "…"}`.
async fn exec(command: &str, message: &Message, timeout: Duration) -> Value {
    match tokio::time::timeout(timeout, run_handler(command, message)).await {
        Ok(Ok(value)) => value,
        Ok(Err(reason)) => json!({ "error": reason }),
        Err(_) => json!({ "error": format!("handler timed out after {}s", timeout.as_secs_f64()) }),
    }
}

fn shell(command: &str) -> tokio::process::Command {
    #[cfg(windows)]
    {
        let mut c = tokio::process::Command::new("cmd");
        c.arg("/C").arg(command);
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = tokio::process::Command::new("sh");
        c.arg("-c").arg(command);
        c
    }
}

async fn run_handler(command: &str, message: &Message) -> Result<Value, String> {
    let mut input =
        serde_json::to_vec(message).map_err(|e| format!("encoding the message: {e}"))?;
    input.push(b'\n');
    let mut child = shell(command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // On timeout the future is dropped: the handler must not outlive it.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("could not start the handler: {e}"))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("could not connect to the handler's stdin/stdout".to_owned());
    };
    // Write and read at once: a handler that prints before reading all its input must not
    // deadlock against us.
    let write = async move {
        // A handler that ignores its input may close stdin early: that is fine.
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    };
    let read_out = read_bounded(stdout, MAX_HANDLER_OUTPUT);
    let read_err = read_bounded(stderr, MAX_HANDLER_STDERR);
    let ((), out, err) = tokio::join!(write, read_out, read_err);
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for the handler: {e}"))?;
    let out = out.map_err(|e| format!("reading the handler's output: {e}"))?;
    let err = err.unwrap_or_default();
    if !status.success() {
        let last = String::from_utf8_lossy(&err)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| format!(": {}", l.trim()))
            .unwrap_or_default();
        return Err(format!("handler failed ({status}){last}"));
    }
    if out.len() > MAX_HANDLER_OUTPUT {
        return Err(format!(
            "handler output is larger than {MAX_HANDLER_OUTPUT} bytes"
        ));
    }
    let text = String::from_utf8(out).map_err(|_| "handler output is not UTF-8".to_owned())?;
    if text.trim().is_empty() {
        return Err("handler printed nothing (expected JSON)".to_owned());
    }
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "handler output is not JSON ({} at line {}, column {})",
            e.to_string().split(" at line ").next().unwrap_or_default(),
            e.line(),
            e.column()
        )
    })
}

/// Reads up to `max + 1` bytes (so "too large" can be told from "exactly max"), then keeps
/// draining so the child is not blocked on a full pipe.
async fn read_bounded(
    mut reader: impl tokio::io::AsyncRead + Unpin,
    max: usize,
) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(kept);
        }
        let room = (max + 1).saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: Value) -> Message {
        Message {
            from: "f".into(),
            message_type: "ask".into(),
            payload,
            correlation_id: Some("c".into()),
            timestamp: 1,
            encrypted: true,
            authenticated: false,
            route: Default::default(),
        }
    }

    #[tokio::test]
    async fn exec_answers_with_the_handlers_json() {
        let m = message(json!({"n": 2}));
        let v = exec("cat", &m, Duration::from_secs(30)).await;
        assert_eq!(v["payload"], json!({"n": 2}));
        assert_eq!(v["type"], "ask");
        let v = exec("echo '[1,2]'", &m, Duration::from_secs(30)).await;
        assert_eq!(v, json!([1, 2]));
    }

    #[tokio::test]
    async fn exec_failures_answer_an_error() {
        let m = message(json!(null));
        let v = exec("echo nope >&2; exit 3", &m, Duration::from_secs(30)).await;
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("exit status: 3") && e.ends_with(": nope"), "{e}");
        let v = exec("echo '{bad'", &m, Duration::from_secs(30)).await;
        let e = v["error"].as_str().unwrap();
        assert!(
            e.starts_with("handler output is not JSON") && e.contains("line 1, column 2"),
            "{e}"
        );
        let v = exec("true", &m, Duration::from_secs(30)).await;
        assert!(v["error"].as_str().unwrap().contains("printed nothing"));
        let v = exec("sleep 30", &m, Duration::from_millis(200)).await;
        assert!(v["error"].as_str().unwrap().contains("timed out"));
    }

    /// Polls `f` once: its output if it is ready at once.
    async fn ready<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::time::timeout(Duration::ZERO, f).await.ok()
    }

    /// Issue 13 #7: 48 messages from a sender whose answers tarpit held all 8 answer slots.
    /// Now one sender runs its share only, unauthenticated senders together half the
    /// slots, and the rest stays for authenticated requests.
    #[tokio::test]
    async fn one_sender_cannot_take_the_answer_slots() {
        let budget = AnswerBudget::new(8, 2);
        let mut running = Vec::new();
        let mut waiting = Vec::new();
        for _ in 0..48 {
            let b = budget.clone();
            let mut task = Box::pin(async move { b.run("tarpit", true).await });
            match ready(&mut task).await {
                Some(r) => running.push(r.unwrap()),
                None => waiting.push(task),
            }
        }
        assert_eq!((running.len(), waiting.len()), (2, 46));
        // Many unauthenticated senders: 4 of the 8 slots at most.
        let mut strangers = 0;
        for i in 0..10 {
            if let Some(Some(r)) = ready(budget.run(&format!("stranger{i}"), false)).await {
                running.push(r);
                strangers += 1;
            }
        }
        assert_eq!(strangers, 4);
        // An authenticated request still finds a slot at once.
        let request = ready(budget.run("requester", true)).await.flatten();
        assert!(request.is_some());
        // When a tarpitted answer ends, the next one of that sender runs.
        drop(running.remove(0));
        assert!(ready(&mut waiting[0]).await.is_some());
        drop(waiting);
        drop(running);
        drop(request);
        assert!(
            budget.per_peer.lock().unwrap().is_empty(),
            "senders are forgotten"
        );
    }

    #[test]
    fn message_lines_have_the_documented_fields() {
        let v = message_line(&message(json!({"a": 1})));
        assert_eq!(
            v,
            json!({"event":"message","from":"f","type":"ask","payload":{"a":1},"correlationId":"c","timestamp":1,"authenticated":false,"route":"direct","via":"direct"})
        );
    }
}
