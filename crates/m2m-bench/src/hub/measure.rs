//! One run of the hub bench against a started hub: connect every WebSocket, register
//! every agent, run each action phase (and again with dashboards open), hold, then read the
//! end state. Each step hands the connections to the next.

use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::client::{call, open_ws, source_addresses, RegisteredClient};
use super::hold::hold_phase;
use super::load::{phase_worker, register_worker, PhaseJob};
use super::report::{mib, phase_figures, Tally};
use super::target::HubUnderTest;
use super::{HubAction, HubBenchOptions};
use crate::rawws::RawWs;
use crate::stats::{rate, round1, round3};
use crate::sys::{self, ProcSample};

/// What a run reports: the whole document, and the figures `summary` compares across runs.
#[derive(Default)]
struct RunReport {
    report: Map<String, Value>,
    figures: Map<String, Value>,
}

/// The connections of a run, one list per worker, with the agents registered on them.
type Workers = Vec<Vec<RegisteredClient>>;

pub(super) async fn measure(opts: &HubBenchOptions, hub: &HubUnderTest) -> anyhow::Result<Value> {
    let mut out = RunReport::default();
    let at_start = hub.sample();
    let opened = connect(opts, hub, &mut out).await?;
    let (chunks, registered, ids) = register(opts, hub, opened, &mut out).await?;
    let chunks = action_phases(opts, hub, chunks, ids, &mut out).await?;
    let mut chunks = match opts.hold {
        Some(hold) => hold_run(opts, hub, chunks, hold, &mut out).await?,
        None => chunks,
    };
    end_state(hub, &mut chunks, at_start, registered, &mut out).await;
    let figures = std::mem::take(&mut out.figures);
    out.report.insert("figures".into(), Value::Object(figures));
    drop(chunks);
    Ok(Value::Object(out.report))
}

/// Opens every WebSocket, `connect_concurrency` at a time; returns them by index.
async fn connect(
    opts: &HubBenchOptions,
    hub: &HubUnderTest,
    out: &mut RunReport,
) -> anyhow::Result<Vec<(usize, RawWs)>> {
    let sources = source_addresses(opts, hub.addr);
    let started = Instant::now();
    let url: Arc<str> = hub.ws_url.clone().into();
    let connections = opts.connections();
    let mut opened: Vec<(usize, RawWs)> = futures_util::stream::iter(0..connections)
        .map(|i| {
            let url = url.clone();
            let source = sources[i % sources.len()];
            let addr = hub.addr;
            async move {
                open_ws(&url, addr, source)
                    .await
                    .map(|ws| (i, ws))
                    .with_context(|| format!("connection {i}"))
            }
        })
        .buffer_unordered(opts.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let connect_time = started.elapsed();
    opened.sort_by_key(|(i, _)| *i);
    out.figures.insert(
        "connect_per_s".into(),
        json!(rate(connections as u64, connect_time)),
    );
    out.report.insert(
        "connect".into(),
        json!({
            "connections": connections,
            "source_ips": sources.len(),
            "seconds": round3(connect_time.as_secs_f64()),
            "per_s": rate(connections as u64, connect_time),
        }),
    );
    Ok(opened)
}

/// Registers every agent, one worker per share of the connections; returns the workers'
/// connections, how many agents registered, and their ids.
async fn register(
    opts: &HubBenchOptions,
    hub: &HubUnderTest,
    opened: Vec<(usize, RawWs)>,
    out: &mut RunReport,
) -> anyhow::Result<(Workers, u64, Arc<Vec<String>>)> {
    let connections = opened.len();
    let workers = opts.concurrency.clamp(1, connections);
    let mut chunks: Vec<Vec<(usize, RawWs)>> = (0..workers).map(|_| Vec::new()).collect();
    for (n, c) in opened.into_iter().enumerate() {
        chunks[n % workers].push(c);
    }
    let groups = opts.capability_groups.max(1);
    let before = (hub.sample(), ProcSample::current());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for chunk in chunks {
        tasks.push(tokio::spawn(register_worker(
            chunk,
            groups,
            opts.agents,
            opts.agents_per_connection,
        )));
    }
    let mut chunks: Vec<Vec<RegisteredClient>> = Vec::new();
    let mut tally = Tally::default();
    for t in tasks {
        let (conns, t) = t.await??;
        chunks.push(conns);
        tally.add(t);
    }
    let register_time = started.elapsed();
    let after = (hub.sample(), ProcSample::current());
    let registered = tally.ok;
    let mut reg = tally.json(register_time);
    reg["hub_cpu_cores"] = sys::cores_used(before.0, after.0, register_time);
    reg["generator_cpu_cores"] = sys::cores_used(Some(before.1), Some(after.1), register_time);
    phase_figures(&mut out.figures, "register", &tally, register_time);
    out.report.insert("register".into(), reg);
    if let Some(s) = after.0 {
        out.figures
            .insert("hub_rss_mib_registered".into(), json!(mib(s.rss_kib)));
    }
    if registered == 0 {
        bail!("no agent registered: {:?}", tally.errors);
    }
    let ids: Arc<Vec<String>> = Arc::new(
        chunks
            .iter()
            .flatten()
            .flat_map(|c| c.ids.iter())
            .filter(|id| !id.is_empty())
            .cloned()
            .collect(),
    );
    Ok((chunks, registered, ids))
}

/// Each action in turn (and again with dashboards open): a closed loop for `duration`
/// after `warmup`.
async fn action_phases(
    opts: &HubBenchOptions,
    hub: &HubUnderTest,
    mut chunks: Workers,
    ids: Arc<Vec<String>>,
    out: &mut RunReport,
) -> anyhow::Result<Workers> {
    let groups = opts.capability_groups.max(1);
    let mut phases = Map::new();
    let variants: &[bool] = if opts.dashboards > 0 {
        &[false, true]
    } else {
        &[false]
    };
    let phase_list: Vec<(HubAction, bool)> = opts
        .actions
        .iter()
        .flat_map(|a| variants.iter().map(move |d| (*a, *d)))
        .collect();
    for (p, (action, with_dashboards)) in phase_list.into_iter().enumerate() {
        let action = &action;
        let name = if with_dashboards {
            format!("{}_with_dashboards", action.name())
        } else {
            action.name().to_owned()
        };
        let dashboards = if with_dashboards {
            Some(crate::dashboard::open(hub.addr, opts.dashboards).await?)
        } else {
            None
        };
        let warm_end = Instant::now() + opts.warmup;
        let deadline = warm_end + opts.duration;
        let mut tasks = Vec::new();
        for (w, chunk) in chunks.into_iter().enumerate() {
            let ids = ids.clone();
            let job = PhaseJob {
                action: *action,
                warm_end,
                deadline,
                discover_limit: opts.discover_limit,
                groups,
                pipeline: opts.pipeline.max(1),
                seed: 0x9e37_79b9_7f4a_7c15 ^ ((w as u64 + 1) << 20) ^ p as u64,
            };
            tasks.push(tokio::spawn(phase_worker(chunk, ids, job)));
        }
        tokio::time::sleep_until(warm_end).await;
        let before = (hub.sample(), ProcSample::current());
        tokio::time::sleep_until(deadline).await;
        let after = (hub.sample(), ProcSample::current());
        let mut back = Vec::new();
        let mut tally = Tally::default();
        for t in tasks {
            let (conns, t) = t.await??;
            back.push(conns);
            tally.add(t);
        }
        chunks = back;
        let mut j = tally.json(opts.duration);
        j["hub_cpu_cores"] = sys::cores_used(before.0, after.0, opts.duration);
        j["generator_cpu_cores"] = sys::cores_used(Some(before.1), Some(after.1), opts.duration);
        if let Some(s) = after.0 {
            j["hub_rss_mib"] = json!(mib(s.rss_kib));
        }
        if *action == HubAction::Discover {
            j["agents_per_reply"] = json!(tally.discover_returned);
            j["reply_bytes"] = json!(tally.discover_reply_bytes);
        }
        if let Some(d) = dashboards {
            j["dashboards"] = json!({
                "open": opts.dashboards,
                "events_read": d.events.load(std::sync::atomic::Ordering::Relaxed),
                "page_queries": d.queries.load(std::sync::atomic::Ordering::Relaxed),
            });
            let without = out
                .figures
                .get(&format!("{}_ops_per_s", action.name()))
                .and_then(Value::as_f64);
            let with = rate(tally.ok, opts.duration);
            if let Some(without) = without.filter(|w| *w > 0.0) {
                out.figures.insert(
                    format!("{}_dashboard_cost_pct", action.name()),
                    json!(round1((1.0 - with / without) * 100.0)),
                );
            }
        }
        phase_figures(&mut out.figures, &name, &tally, opts.duration);
        phases.insert(name, j);
    }
    out.report.insert("actions".into(), Value::Object(phases));
    Ok(chunks)
}

/// `--hold`: every agent connected and heartbeating for `hold`.
async fn hold_run(
    opts: &HubBenchOptions,
    hub: &HubUnderTest,
    chunks: Workers,
    hold: std::time::Duration,
    out: &mut RunReport,
) -> anyhow::Result<Workers> {
    let (chunks, j) = hold_phase(chunks, hub, hold, opts.hold_heartbeat_interval).await?;
    if let Some(x) = j.get("hub_rss_mib_max").and_then(Value::as_f64) {
        out.figures.insert("hold_hub_rss_mib_max".into(), json!(x));
    }
    if let Some(x) = j
        .pointer("/heartbeats/latency/p99_us")
        .and_then(Value::as_f64)
    {
        out.figures.insert("hold_heartbeat_p99_us".into(), json!(x));
    }
    out.report.insert("hold".into(), j);
    Ok(chunks)
}

/// The hub's own view (`stats`), then the memory of both processes at the end.
async fn end_state(
    hub: &HubUnderTest,
    chunks: &mut Workers,
    at_start: Option<ProcSample>,
    registered: u64,
    out: &mut RunReport,
) {
    if let Some(conn) = chunks.iter_mut().flatten().next() {
        let text = r#"{"action":"stats","correlationId":"s"}"#.to_owned();
        if let Ok(reply) = call(&mut conn.ws, text).await {
            if let Ok(v) = serde_json::from_str::<Value>(&reply) {
                out.report.insert("hub_stats".into(), v);
            }
        }
    }
    let end = hub.sample();
    if let Some(s) = end {
        out.figures
            .insert("hub_rss_mib_end".into(), json!(mib(s.rss_kib)));
        out.figures
            .insert("hub_hwm_mib".into(), json!(mib(s.hwm_kib)));
    }
    let me = ProcSample::current();
    out.report.insert(
        "hub_process".into(),
        json!({
            "pid": hub.pid,
            "rss_mib_start": at_start.map(|s| mib(s.rss_kib)),
            "rss_mib_end": end.map(|s| mib(s.rss_kib)),
            "hwm_mib": end.map(|s| mib(s.hwm_kib)),
        }),
    );
    out.report.insert(
        "generator_process".into(),
        json!({"rss_mib": mib(me.rss_kib), "hwm_mib": mib(me.hwm_kib)}),
    );
    out.report.insert("registered".into(), json!(registered));
}
