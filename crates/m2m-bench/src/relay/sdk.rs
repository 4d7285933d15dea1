//! The relay bench at the SDK level (`m2m bench relay --level sdk`): what an application
//! sees. Two relay-only SDK agents (`AgentBuilder::relay_only`) talk through the hub; two
//! ordinary agents of the same process talk direct P2P on loopback in the same run, so the
//! ratio relay / direct is measured on one machine state.
//!
//! ```text
//!  hub ◄── relay-only A ══ relay (2.1 session inside) ══► relay-only B (acks, echoes)
//!      ◄── direct C ───────────── TCP ──────────────────► direct D (acks, echoes)
//!  per scenario: relayed pair, then direct pair:
//!    frames (200 B messages, `in_flight` pipelined) · bulk (64 KiB, `bulk_in_flight`) ·
//!    request (one at a time, latency)
//!  streams: N more relay-only senders, one message each to B, all held open together:
//!    the hub's RSS per relayed session (each with its sender's WebSocket and record)
//! ```
//!
//! Every operation's route is checked (a relayed message that went direct, or the
//! reverse, counts as an error), so the two figures are the two routes.

use std::net::Ipv4Addr;

use anyhow::{bail, Context};
use m2m_agent::{Agent, Route, Value};
use serde_json::{json, Map};
use tokio::time::Instant;

use super::{RelayBenchOptions, RelayScenario};
use crate::hub::HubUnderTest;
use crate::p2p::scenario::{spawn_workers, Tally, Window};
use crate::stats::{rate, round1, round3};

/// The message type the receivers only ack.
const MESSAGE_TYPE: &str = "bench.msg";
/// The message type the receivers answer with the request's `data`.
const REQUEST_TYPE: &str = "bench.req";

/// One sender and its receiver, both connected to the hub.
struct Pair {
    tx: Agent,
    rx: Agent,
    route: Route,
    drain: tokio::task::JoinHandle<()>,
}

/// One SDK agent on the hub, on loopback.
async fn agent(hub_url: &str, relay_only: bool, inbox: usize, name: &str) -> anyhow::Result<Agent> {
    Agent::builder()
        .hub(hub_url)
        .port(0)
        .relay_only(relay_only)
        .inbox_capacity(inbox)
        .configure(|c| c.bind_ip = Ipv4Addr::LOCALHOST.into())
        .connect()
        .await
        .with_context(|| format!("starting agent {name}"))
}

impl Pair {
    async fn start(hub_url: &str, relay_only: bool, inbox: usize) -> anyhow::Result<Pair> {
        let tx = agent(hub_url, relay_only, inbox, "sender").await?;
        let rx = agent(hub_url, relay_only, inbox, "receiver").await?;
        rx.on_request(REQUEST_TYPE, |req| async move {
            Ok(json!({ "data": req.payload.get("data").cloned().unwrap_or(Value::Null) }))
        });
        let drain = tokio::spawn({
            let rx = rx.clone();
            async move { while rx.next_message().await.is_some() {} }
        });
        let route = if relay_only {
            Route::Relay
        } else {
            Route::Direct
        };
        Ok(Pair {
            tx,
            rx,
            route,
            drain,
        })
    }

    async fn stop(self) {
        self.drain.abort();
        let _ = self.tx.disconnect().await;
        let _ = self.rx.disconnect().await;
    }

    /// One scenario on this pair: the tally and the measured time.
    async fn measure(
        &self,
        opts: &RelayBenchOptions,
        scenario: RelayScenario,
    ) -> anyhow::Result<Tally> {
        let (size, workers) = match scenario {
            RelayScenario::Frames => (opts.size, opts.in_flight),
            RelayScenario::Bulk => (opts.bulk_size, opts.bulk_in_flight),
            RelayScenario::Request => (opts.size, 1),
            RelayScenario::Streams => bail!("`streams` is measured by `streams`, not here"),
        };
        // Printable and not JSON: the plaintext is exactly `size` bytes.
        let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let window = Window {
            warm_end: Instant::now() + opts.warmup,
            deadline: Instant::now() + opts.warmup + opts.duration,
        };
        let (tx, to, route) = (self.tx.clone(), self.rx.id(), self.route);
        let tasks = if scenario == RelayScenario::Request {
            let payload = json!({ "data": text });
            spawn_workers(workers, window, move || {
                let (tx, to, payload) = (tx.clone(), to.clone(), payload.clone());
                async move {
                    let reply = tx.request(&to, REQUEST_TYPE, payload, None).await?;
                    if reply.get("data").and_then(Value::as_str).map(str::len) != Some(size) {
                        bail!("response without the request's data");
                    }
                    Ok(())
                }
            })
        } else {
            let payload = Value::String(text);
            spawn_workers(workers, window, move || {
                let (tx, to, payload) = (tx.clone(), to.clone(), payload.clone());
                async move {
                    let sent = tx.send(&to, MESSAGE_TYPE, payload).await?;
                    if sent.route != route {
                        bail!("sent {:?} instead of {route:?}", sent.route);
                    }
                    Ok(())
                }
            })
        };
        let mut tally = Tally::default();
        for t in tasks {
            let t = t.await.context("a sending task failed")?;
            tally.latency.merge(&t.latency);
            tally.ok += t.ok;
            for (k, v) in t.errors {
                *tally.errors.entry(k).or_default() += v;
            }
        }
        Ok(tally)
    }
}

/// One run at the SDK level against `hub`: `{figures, relay, direct}`.
pub(super) async fn run_once(
    opts: &RelayBenchOptions,
    hub: &HubUnderTest,
) -> anyhow::Result<Value> {
    let inbox = opts.in_flight.max(opts.bulk_in_flight).max(1) * 4;
    let relayed = Pair::start(&hub.ws_url, true, inbox).await?;
    let direct = Pair::start(&hub.ws_url, false, inbox).await?;
    let outcome = async {
        let mut figures = Map::new();
        let mut per_route = [Map::new(), Map::new()];
        for &scenario in &opts.scenarios {
            if scenario == RelayScenario::Streams {
                let v = streams(opts, hub, &relayed)
                    .await
                    .context("sdk scenario streams")?;
                for key in ["hub_rss_per_stream_bytes", "open_ms"] {
                    if v[key].is_number() {
                        figures.insert(format!("sdk_streams_{key}"), v[key].clone());
                    }
                }
                per_route[0].insert("streams".to_owned(), v);
                continue;
            }
            let mut got = Vec::new();
            for (i, pair) in [&relayed, &direct].into_iter().enumerate() {
                let tally = pair
                    .measure(opts, scenario)
                    .await
                    .with_context(|| format!("sdk scenario {}", scenario.name()))?;
                let route = if i == 0 { "relay" } else { "direct" };
                let size = if scenario == RelayScenario::Bulk {
                    opts.bulk_size
                } else {
                    opts.size
                };
                let mut v = tally.json(opts.duration);
                let per_s = rate(tally.ok, opts.duration);
                v["payload_bytes"] = json!(size);
                v["payload_mb_per_s"] = json!(round1(per_s * size as f64 / 1e6));
                let failed: u64 = tally.errors.values().sum();
                if failed > 0 {
                    figures.insert(
                        format!("sdk_{route}_{}_errors", scenario.name()),
                        json!(failed),
                    );
                }
                put_figures(route, scenario, &v, &mut figures);
                per_route[i].insert(scenario.name().to_owned(), v);
                got.push(per_s);
            }
            if let [relay, direct] = got[..] {
                if direct > 0.0 {
                    let key = format!("sdk_{}_relay_over_direct", scenario.name());
                    figures.insert(key, json!(round3(relay / direct)));
                }
            }
        }
        let [relay, direct] = per_route;
        anyhow::Ok(json!({ "figures": figures, "relay": relay, "direct": direct }))
    }
    .await;
    relayed.stop().await;
    direct.stop().await;
    outcome
}

/// The headline numbers of one route's scenario as flat `figures`.
fn put_figures(route: &str, scenario: RelayScenario, v: &Value, out: &mut Map<String, Value>) {
    let mut put = |name: String, value: &Value| {
        if value.is_number() {
            out.insert(name, value.clone());
        }
    };
    match scenario {
        RelayScenario::Frames => put(format!("sdk_{route}_msgs_per_s"), &v["ok_per_s"]),
        RelayScenario::Bulk => put(format!("sdk_{route}_bulk_mb_per_s"), &v["payload_mb_per_s"]),
        RelayScenario::Request => {
            put(format!("sdk_{route}_request_per_s"), &v["ok_per_s"]);
            put(
                format!("sdk_{route}_request_p50_us"),
                &v["latency"]["p50_us"],
            );
            put(
                format!("sdk_{route}_request_p99_us"),
                &v["latency"]["p99_us"],
            );
        }
        RelayScenario::Streams => {}
    }
}

/// `streams`: `opts.streams` more relay-only agents each send one message to the relayed
/// pair's receiver (a relayed session each) and stay connected; the hub's RSS before the
/// agents connect and with every session open. With the hub in this process the RSS is
/// the process's (the agents' memory included): `hub_in_process` says so.
async fn streams(
    opts: &RelayBenchOptions,
    hub: &HubUnderTest,
    pair: &Pair,
) -> anyhow::Result<Value> {
    let rss = || hub.sample().map(|s| s.rss_kib);
    let before = rss();
    let started = Instant::now();
    let payload = Value::String("s".repeat(opts.size));
    let mut senders = Vec::with_capacity(opts.streams);
    let outcome = async {
        for i in 0..opts.streams {
            let a = agent(&hub.ws_url, true, 4, "stream sender").await?;
            senders.push(a.clone());
            let sent = a
                .send(&pair.rx.id(), MESSAGE_TYPE, payload.clone())
                .await
                .with_context(|| format!("stream {i} of {}", opts.streams))?;
            if sent.route != Route::Relay {
                bail!("stream {i} went {:?}, not through the relay", sent.route);
            }
        }
        anyhow::Ok(())
    }
    .await;
    let open_took = started.elapsed();
    let with = rss();
    for a in senders {
        let _ = a.disconnect().await;
    }
    outcome?;
    let per_stream = match (before, with) {
        // Signed: the allocator may give back more than the sessions take (shown as is).
        (Some(b), Some(w)) if opts.streams > 0 => {
            json!(round1((w as f64 - b as f64) * 1024.0 / opts.streams as f64))
        }
        _ => Value::Null,
    };
    Ok(json!({
        "streams": opts.streams,
        "open_ms": round1(open_took.as_secs_f64() * 1e3),
        "hub_in_process": hub.pid == Some(std::process::id()),
        "hub_rss_before_kib": before,
        "hub_rss_with_streams_kib": with,
        "hub_rss_per_stream_bytes": per_stream,
    }))
}
