//! The mailbox bench (`m2m bench mailbox`, issue 16): how fast a hub stores sealed mail and
//! pushes it back out, on SQLite and on PostgreSQL, and how many database bytes a stored
//! message takes. The clients speak docs/MAILBOX.md section 3 on raw WebSockets.
//!
//! ```text
//!  per backend: fresh database (SQLite temp file | PostgreSQL CREATE DATABASE)
//!    hub in this process (bench limits) ◄── recipient R: 2.1 register + mailbox key
//!                                       ◄── sender S: 2.1 register, lookup R, verify key
//!    S seals N messages (timed apart: the sender's CPU, not the hub's)
//!    store: S sends the N `mail` actions, `pipeline` in flight ─► ok replies   (timed)
//!    database bytes before/after ─► bytes per stored message
//!    drain: R subscribes (`mailbox`) ─► N `mail` events, `mail_ack` every
//!           `ack_batch` ids ─► the last ack's reply                              (timed)
//!  each backend's JSON ─► one document, figures flat (`<backend>_store_per_s`, …)
//! ```
//!
//! The hub runs in the bench's process: `process_cores` (CPU time over a phase's wall time)
//! is the hub's and the client's together, and says whether the two cores were the bound.
//!
//! The first pushed message is opened and checked as the SDK does (section 2), so a run
//! also shows that the sender's seal, the hub's storage and the push keep the bytes intact.

mod args;
mod client;
mod size;

pub use args::MailboxArgs;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use m2m_hub::{Hub, MailboxConfig};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::defaults::{MAIL_IN_FLIGHT, MAIL_MAX_MESSAGES, MAIL_QUOTA_OVERHEAD};
use crate::hub::bench_hub_config;
use crate::stats::{rate, round1, round3, summarize};
use crate::sys::{cores_used, ProcSample};
use client::MailClient;
use size::Database;

/// The issue's targets, reported beside the figures.
const STORE_TARGET_PER_S: f64 = 20_000.0;
/// The issue's drain target.
const DRAIN_TARGET_PER_S: f64 = 50_000.0;

/// What the mailbox bench does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxBenchOptions {
    /// Messages stored, then drained, per run.
    pub messages: usize,
    /// Payload bytes of each message.
    pub size: usize,
    /// `mail` actions in flight.
    pub pipeline: usize,
    /// Ids per `mail_ack`.
    pub ack_batch: usize,
    /// Run on a temporary SQLite file.
    pub sqlite: bool,
    /// Run on this PostgreSQL server (a fresh database).
    pub postgres: Option<String>,
    /// Runs per backend.
    pub repeat: usize,
}

impl MailboxBenchOptions {
    /// Refuses options the hub's defaults cannot serve, with the reason.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.messages == 0 || self.messages > MAIL_MAX_MESSAGES {
            bail!(
                "--messages must be 1 ..= {MAIL_MAX_MESSAGES} \
                 (they are sealed and held in memory before the store is timed)"
            );
        }
        if self.ack_batch == 0 || self.ack_batch > MAIL_IN_FLIGHT {
            bail!("--ack-batch must be 1 ..= {MAIL_IN_FLIGHT} (the hub's pushes in flight)");
        }
        // Room in the sealed message (MAX_SEALED) for the body's other fields, the
        // signature, the identity and the HPKE overhead.
        let max = m2m_proto::mailbox::MAX_SEALED / 2;
        if self.size == 0 || self.size > max {
            bail!("--size must be 1 ..= {max}");
        }
        if !self.sqlite && self.postgres.is_none() {
            bail!("nothing to run: --no-sqlite without --postgres");
        }
        Ok(())
    }
}

/// Runs every backend `repeat` times; one JSON document.
pub async fn run_mailbox(opts: MailboxBenchOptions) -> anyhow::Result<Value> {
    opts.check()?;
    let mut backends = Vec::new();
    if opts.sqlite {
        backends.push(None);
    }
    if let Some(url) = &opts.postgres {
        backends.push(Some(url.as_str()));
    }
    let mut by_backend = Map::new();
    let mut figures_runs = Vec::new();
    for postgres in backends {
        let name = if postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        };
        let mut runs = Vec::new();
        for run in 0..opts.repeat {
            tracing::info!(run, backend = name, "mailbox bench run");
            let db = Database::create(postgres).await?;
            let result = run_once(&opts, &db).await;
            db.remove().await;
            runs.push(result.with_context(|| format!("the {name} run"))?);
        }
        figures_runs.extend(runs.iter().map(|r| prefixed(name, r)));
        by_backend.insert(name.to_owned(), Value::Array(runs));
    }
    Ok(json!({
        "bench": "mailbox",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "options": {
            "messages": opts.messages,
            "size": opts.size,
            "pipeline": opts.pipeline,
            "ack_batch": opts.ack_batch,
            "repeat": opts.repeat,
        },
        "targets": {"store_per_s": STORE_TARGET_PER_S, "drain_per_s": DRAIN_TARGET_PER_S},
        "machine": crate::sys::machine_load(),
        "summary": summarize(&figures_runs),
        "runs": by_backend,
    }))
}

/// One run's `figures` with the backend's name before each key.
fn prefixed(backend: &str, run: &Value) -> Value {
    let mut figures = Map::new();
    if let Some(f) = run["figures"].as_object() {
        for (k, v) in f {
            figures.insert(format!("{backend}_{k}"), v.clone());
        }
    }
    json!({ "figures": figures })
}

/// The hub's mailbox quotas raised so that one sender may store the run's messages to one
/// recipient (the defaults stop at 10,000 messages and 64 MiB each); the rest stays the
/// hub's default (in flight per subscription, sizes, TTLs).
fn lift_quotas(mailbox: &mut MailboxConfig, opts: &MailboxBenchOptions) {
    let messages = opts.messages as i64;
    let bytes = messages * (opts.size + MAIL_QUOTA_OVERHEAD) as i64;
    mailbox.recipient_messages = mailbox.recipient_messages.max(messages);
    mailbox.sender_messages = mailbox.sender_messages.max(messages);
    mailbox.recipient_bytes = mailbox.recipient_bytes.max(bytes);
    mailbox.sender_bytes = mailbox.sender_bytes.max(bytes);
    mailbox.budget = mailbox.budget.max(bytes);
}

/// One run on `db`: a fresh hub, store, size, drain.
async fn run_once(opts: &MailboxBenchOptions, db: &Database) -> anyhow::Result<Value> {
    let mut config = bench_hub_config(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), db.url());
    config.dashboard = false;
    lift_quotas(&mut config.mailbox, opts);
    let hub = Hub::start(config).await.context("starting the hub")?;
    let outcome = measure(opts, db, &hub.ws_url(), hub.local_addr()).await;
    if let Err(e) = hub.shutdown().await {
        tracing::warn!(error = %e, "hub shutdown");
    }
    outcome
}

async fn measure(
    opts: &MailboxBenchOptions,
    db: &Database,
    url: &str,
    addr: SocketAddr,
) -> anyhow::Result<Value> {
    let mut recipient = MailClient::connect(url, addr).await.context("recipient")?;
    let mut sender = MailClient::connect(url, addr).await.context("sender")?;
    let to = recipient.identity.agent_id().to_owned();
    let from = sender.identity.agent_id().to_owned();
    let (key, issued) = sender.mailbox_key_of(&to).await?;

    let sealing = Instant::now();
    let requests = sender.seal_all(&to, &key, issued, opts.messages, opts.size, "m")?;
    let seal_took = sealing.elapsed();
    let request_bytes = requests.iter().map(String::len).sum::<usize>() / requests.len();

    let bytes_before = db.mail_bytes().await?;
    let cpu = ProcSample::current();
    let stored = sender.store(&requests, opts.pipeline).await?;
    let store_cores = cores_used(Some(cpu), Some(ProcSample::current()), stored.elapsed);
    let bytes_after = db.mail_bytes().await?;
    if stored.ok == 0 {
        bail!("the hub stored no message: {:?}", stored.errors);
    }
    let cpu = ProcSample::current();
    let drained = recipient
        .drain(stored.ok, opts.ack_batch, &from)
        .await
        .context("draining")?;
    let drain_cores = cores_used(Some(cpu), Some(ProcSample::current()), drained.elapsed);
    sender.close().await;
    recipient.close().await;

    let n = opts.messages as u64;
    let store_per_s = rate(stored.ok, stored.elapsed);
    let drain_per_s = rate(drained.received, drained.elapsed);
    let per_message = (bytes_after - bytes_before) as f64 / stored.ok as f64;
    let mut figures = Map::new();
    figures.insert("store_per_s".into(), json!(round1(store_per_s)));
    figures.insert("drain_per_s".into(), json!(round1(drain_per_s)));
    figures.insert("db_bytes_per_message".into(), json!(round1(per_message)));
    figures.insert("seal_per_s".into(), json!(round1(rate(n, seal_took))));
    let failed: u64 = stored.errors.values().sum();
    if failed > 0 {
        figures.insert("store_errors".into(), json!(failed));
    }
    Ok(json!({
        "backend": db.name(),
        "figures": figures,
        "seal": {"messages": n, "seconds": round3(seal_took.as_secs_f64())},
        "store": {
            "messages": n,
            "ok": stored.ok,
            "errors": stored.errors,
            "seconds": round3(stored.elapsed.as_secs_f64()),
            "mail_request_bytes": request_bytes,
            "process_cores": store_cores,
        },
        "drain": {
            "pending_at_subscribe": drained.pending,
            "received": drained.received,
            "acked": drained.acked,
            "first_opened": drained.first_opened,
            "process_cores": drain_cores,
            "seconds": round3(drained.elapsed.as_secs_f64()),
        },
        "database": {
            "measured": db.how(),
            "bytes_before": bytes_before,
            "bytes_after": bytes_after,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> MailboxBenchOptions {
        MailboxBenchOptions {
            messages: 50,
            size: 200,
            pipeline: 16,
            ack_batch: 8,
            sqlite: true,
            postgres: None,
            repeat: 1,
        }
    }

    #[test]
    fn options_beyond_the_hubs_defaults_are_refused() {
        assert!(opts().check().is_ok());
        let too_many = MailboxBenchOptions {
            messages: MAIL_MAX_MESSAGES + 1,
            ..opts()
        };
        assert!(too_many.check().unwrap_err().to_string().contains("memory"));
        let batch = MailboxBenchOptions {
            ack_batch: MAIL_IN_FLIGHT + 1,
            ..opts()
        };
        assert!(batch.check().unwrap_err().to_string().contains("in flight"));
        let nothing = MailboxBenchOptions {
            sqlite: false,
            ..opts()
        };
        assert!(nothing.check().is_err());
    }

    #[test]
    fn each_backends_figures_are_prefixed_and_summarized_together() {
        let run = |store: f64| json!({"figures": {"store_per_s": store, "drain_per_s": 2.0}});
        let runs = [
            prefixed("sqlite", &run(10.0)),
            prefixed("sqlite", &run(30.0)),
            prefixed("postgres", &run(5.0)),
            prefixed("postgres", &run(7.0)),
        ];
        assert_eq!(runs[2]["figures"]["postgres_store_per_s"], 5.0);
        let s = summarize(&runs);
        assert_eq!(s["sqlite_store_per_s"]["median"], 20.0, "{s}");
        assert_eq!(s["postgres_store_per_s"]["median"], 6.0, "{s}");
        assert_eq!(s["postgres_drain_per_s"]["runs"], json!([2.0, 2.0]), "{s}");
    }

    /// The whole bench against a hub with the mailbox, small: every message stored,
    /// drained, acked, the first one opened.
    /// On PostgreSQL too when `M2M_TEST_POSTGRES` names a server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_stores_and_drains_everything() {
        let postgres = std::env::var("M2M_TEST_POSTGRES").ok();
        let backends: &[&str] = if postgres.is_some() {
            &["sqlite", "postgres"]
        } else {
            &["sqlite"]
        };
        let doc = run_mailbox(MailboxBenchOptions { postgres, ..opts() })
            .await
            .unwrap();
        for backend in backends {
            let run = &doc["runs"][backend][0];
            assert_eq!(run["store"]["ok"], 50, "{doc}");
            assert_eq!(run["drain"]["received"], 50, "{doc}");
            assert_eq!(run["drain"]["acked"], 50, "{doc}");
            assert_eq!(run["drain"]["first_opened"], true, "{doc}");
            assert!(run["figures"]["db_bytes_per_message"].as_f64().unwrap() > 0.0);
            assert!(run["figures"].get("store_errors").is_none(), "{doc}");
        }
    }

    /// Beyond the hub's default quotas (10,000 messages, 64 MiB each): raised to the run.
    #[test]
    fn the_quotas_are_raised_to_the_run_not_lowered() {
        let mut m = MailboxConfig::default();
        let default = m.clone();
        lift_quotas(&mut m, &opts());
        assert_eq!(m, default, "a small run keeps the defaults");
        let big = MailboxBenchOptions {
            messages: 100_000,
            ..opts()
        };
        lift_quotas(&mut m, &big);
        assert_eq!(m.recipient_messages, 100_000);
        assert_eq!(m.sender_messages, 100_000);
        assert_eq!(
            m.recipient_bytes,
            100_000 * (200 + MAIL_QUOTA_OVERHEAD as i64)
        );
        assert_eq!(m.budget, default.budget, "1 GiB already holds them");
        assert_eq!(m.in_flight, default.in_flight);
    }
}
