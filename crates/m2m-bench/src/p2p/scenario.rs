//! One scenario's closed loop: workers keep a window of operations in flight for the
//! measured time and tally each operation's latency and outcome.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use m2m_agent::{Agent, Value};
use m2m_proto::{Identity, IdentityKey};
use serde_json::json;
use tokio::time::Instant;

use super::{
    fresh::fresh_message, peer::PeerProcess, P2pBenchOptions, P2pScenario, MESSAGE_TYPE,
    REQUEST_TYPE,
};
use crate::stats::{rate, Latency};
use crate::sys::{self, ProcSample};

/// What the workers of one scenario measured.
#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) latency: Latency,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(crate) fn json(&self, elapsed: Duration) -> Value {
        json!({
            "ok": self.ok,
            "errors": self.errors,
            "seconds": elapsed.as_secs_f64(),
            "ok_per_s": rate(self.ok, elapsed),
            "latency": self.latency.summary(),
        })
    }
}

pub(super) async fn scenario_run(
    opts: &P2pBenchOptions,
    scenario: P2pScenario,
    agent: &Agent,
    peer: &PeerProcess,
) -> anyhow::Result<(Tally, Duration, (Value, Value))> {
    let text = |n: usize| -> String {
        // Printable and not JSON, so the receiver's JSON attempt fails at the first byte.
        (0..n).map(|i| (b'a' + (i % 26) as u8) as char).collect()
    };
    let addr = peer.addr.to_string();
    let small = Value::String(text(opts.message_size));
    let window = Window {
        warm_end: Instant::now() + opts.warmup,
        deadline: Instant::now() + opts.warmup + opts.duration,
    };
    let tasks = match scenario {
        P2pScenario::Messages | P2pScenario::Bulk => {
            let (payload, workers) = if scenario == P2pScenario::Bulk {
                (Value::String(text(opts.bulk_size)), opts.bulk_in_flight)
            } else {
                (small, opts.in_flight)
            };
            spawn_workers(workers, window, {
                let agent = agent.clone();
                move || {
                    let (agent, addr, payload) = (agent.clone(), addr.clone(), payload.clone());
                    async move {
                        agent.send_direct(&addr, MESSAGE_TYPE, payload).await?;
                        Ok(())
                    }
                }
            })
        }
        P2pScenario::Fresh | P2pScenario::FreshV21 => {
            let plaintext: Arc<[u8]> = text(opts.message_size).into_bytes().into();
            let addr = peer.addr;
            let auth = if scenario == P2pScenario::FreshV21 {
                let record = agent
                    .lookup(&peer.id)
                    .await
                    .context("looking up the peer")?;
                let key = record
                    .identity
                    .context("the hub vouches for no identity of the peer")?;
                let key = IdentityKey::from_b64(&key).context("the peer's identity key")?;
                Some(Arc::new((Identity::generate(&mut rand::thread_rng()), key)))
            } else {
                None
            };
            spawn_workers(opts.fresh_in_flight, window, move || {
                let (plaintext, auth) = (plaintext.clone(), auth.clone());
                async move { fresh_message(addr, &plaintext, auth.as_deref()).await }
            })
        }
        P2pScenario::Request | P2pScenario::RequestPipelined => {
            let workers = if scenario == P2pScenario::Request {
                1
            } else {
                opts.request_in_flight
            };
            let payload = json!({ "data": small });
            let id = peer.id.clone();
            spawn_workers(workers, window, {
                let agent = agent.clone();
                move || {
                    let (agent, id, payload) = (agent.clone(), id.clone(), payload.clone());
                    async move {
                        let reply = agent.request(&id, REQUEST_TYPE, payload, None).await?;
                        if reply.get("data").is_none() {
                            bail!("response without data");
                        }
                        Ok(())
                    }
                }
            })
        }
    };
    let pid = peer.process.pid();
    tokio::time::sleep_until(window.warm_end).await;
    let before = (ProcSample::current(), pid.and_then(ProcSample::read));
    tokio::time::sleep_until(window.deadline).await;
    let after = (ProcSample::current(), pid.and_then(ProcSample::read));
    let mut tally = Tally::default();
    for t in tasks {
        let t = t.await?;
        tally.latency.merge(&t.latency);
        tally.ok += t.ok;
        for (k, v) in t.errors {
            *tally.errors.entry(k).or_default() += v;
        }
    }
    let cores = (
        sys::cores_used(Some(before.0), Some(after.0), opts.duration),
        sys::cores_used(before.1, after.1, opts.duration),
    );
    Ok((tally, opts.duration, cores))
}

/// The warm-up end and the deadline of one closed loop.
#[derive(Clone, Copy)]
pub(crate) struct Window {
    pub(crate) warm_end: Instant,
    pub(crate) deadline: Instant,
}

/// `workers` closed loops of `op` until the window ends; operations that start during the
/// warm-up are not recorded.
pub(crate) fn spawn_workers<F, Fut>(
    workers: usize,
    window: Window,
    op: F,
) -> Vec<tokio::task::JoinHandle<Tally>>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    (0..workers.max(1))
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let started = Instant::now();
                    if started >= window.deadline {
                        break;
                    }
                    let result = op().await;
                    if started < window.warm_end {
                        continue;
                    }
                    match result {
                        Ok(()) => {
                            tally.latency.record(started.elapsed());
                            tally.ok += 1;
                        }
                        Err(e) => {
                            let mut msg = e.to_string();
                            msg.truncate(120);
                            *tally.errors.entry(msg).or_default() += 1;
                        }
                    }
                }
                tally
            })
        })
        .collect()
}
