//! Background work of a hub, in one task: write batched liveness, run the status sweep,
//! keep this hub's instance row fresh and release the agents of dead hubs, and
//! (PostgreSQL) own the change-feed reader (`feed`), a task of its own so that a long sweep
//! never delays a doorbell.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::SweepConfig;
use crate::dashboard::AbortOnDrop;
use crate::defaults::{FLUSH_CHUNK, MIN_TIMER_PERIOD};
use crate::directory::parse_id;
use crate::error::StoreError;
use crate::feed::Feed;
use crate::state::HubState;
use crate::store::SweepCutoffs;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Agents that became `idle`.
    pub idled: usize,
    /// Agents that became `offline`.
    pub offlined: usize,
    /// Offline agents deleted after the retention period.
    pub purged: usize,
    /// Another hub held the sweep lock; this one did nothing in the database.
    pub skipped: bool,
    /// Mail deleted: expired, or stored for an agent whose record was deleted.
    pub mail_purged: u64,
}

/// What one look at the hub instances did ([`crate::RunningHub::check_hubs_now`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubsReport {
    /// Hubs taken as dead (their liveness expired); their rows are deleted.
    pub expired: Vec<String>,
    /// Their agents, marked offline.
    pub offlined: usize,
    /// Live instances on the registry, this one included.
    pub live: usize,
    /// This hub's own row was gone (another hub took it as dead) and was written again.
    pub reannounced: bool,
}

/// Runs until `stop` is cancelled.
pub(crate) async fn run(state: Arc<HubState>, feed: Arc<Feed>, stop: CancellationToken) {
    let tuning = &state.config.storage;
    let every = |d: Duration| {
        let d = d.max(MIN_TIMER_PERIOD);
        let mut i = interval_at(Instant::now() + d, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let mut flush = every(tuning.flush_interval);
    let mut sweep = every(state.config.sweep.interval);
    let mut alive = every(tuning.alive_interval);
    let mut relay_idle = every(state.config.relay.idle_sweep);
    // The feed reader ends with this task (stop, or abort when the hub is dropped).
    // Shared PostgreSQL: the fallback poll for mail stored through other hubs.
    let _mail_poll = (state.registry.shared() && state.config.mailbox.enabled).then(|| {
        AbortOnDrop(tokio::spawn(crate::mailbox::poll(
            state.clone(),
            stop.clone(),
        )))
    });
    let _feed = state.registry.shared().then(|| {
        AbortOnDrop(tokio::spawn(crate::feed::run(
            state.clone(),
            feed,
            stop.clone(),
        )))
    });
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = flush.tick() => {
                if let Err(e) = flush_liveness(&state).await {
                    tracing::warn!(error = %e, "liveness flush failed; will retry");
                }
                state.retry_pending_offline().await;
            }
            _ = sweep.tick() => {
                match sweep_once(&state).await {
                    Ok(r) if r.idled + r.offlined + r.purged > 0 => {
                        tracing::info!(idle = r.idled, offline = r.offlined, purged = r.purged, "sweep");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
                }
            }
            // Each attached WebSocket closes its own idle streams when asked.
            _ = relay_idle.tick() => state.relay.sweep(),
            _ = alive.tick() => {
                if let Err(e) = check_hubs(&state).await {
                    tracing::warn!(error = %e, "hub instance check failed; will retry");
                }
            }
        }
    }
}

/// Writes the liveness of every agent heard from since the last flush.
pub(crate) async fn flush_liveness(state: &HubState) -> Result<usize, StoreError> {
    let dirty = state.directory.take_dirty();
    let total = dirty.len();
    let mut chunks = dirty.chunks(FLUSH_CHUNK);
    while let Some(chunk) = chunks.next() {
        let seen: Vec<(String, i64)> = chunk
            .iter()
            .map(|(e, at)| (e.id.to_string(), *at))
            .collect();
        if let Err(e) = state.registry.touch(&seen).await {
            state.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
            let mut back: Vec<_> = chunk.iter().map(|(e, _)| e.clone()).collect();
            back.extend(chunks.flatten().map(|(e, _)| e.clone()));
            state.directory.requeue(back);
            return Err(e);
        }
        state
            .metrics
            .liveness_flushed
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    Ok(total)
}

/// One status sweep: liveness is flushed first so the database judges by fresh times.
pub(crate) async fn sweep_once(state: &HubState) -> Result<SweepReport, StoreError> {
    flush_liveness(state).await?;
    let cut = cutoffs(&state.config.sweep, state.now_ms());
    let outcome = state.registry.sweep(cut).await.inspect_err(|_| {
        state.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
    })?;
    let mut report = SweepReport::default();
    match outcome {
        Some(outcome) => {
            for change in &outcome.changed {
                state
                    .directory
                    .set_status(&change.id, &change.status, change.version);
                if change.status == m2m_proto::hub::status::IDLE {
                    report.idled += 1;
                } else {
                    report.offlined += 1;
                }
            }
            for id in &outcome.purged {
                if let Some(key) = parse_id(id) {
                    state.directory.remove(key);
                }
            }
            report.purged = outcome.purged.len();
            // The hub holding the sweep lock purges mail too (expired, or of the agents
            // just deleted): one hub at a time, like the rest of the sweep.
            match state
                .mailbox
                .store
                .purge(state.now_ms(), &outcome.purged)
                .await
            {
                Ok(n) => {
                    report.mail_purged = n;
                    state
                        .mailbox
                        .counters
                        .purged
                        .fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    state.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "mail purge failed; will retry");
                }
            }
        }
        None => report.skipped = true,
    }
    // Every hub forgets what the retention rule deletes, whoever ran the DELETE.
    state.directory.purge_offline(
        cut.purge_before,
        cut.purge_anonymous_before,
        cut.purge_mailbox_before,
    );
    Ok(report)
}

/// The sweep's thresholds at `now`.
pub(crate) fn cutoffs(cfg: &SweepConfig, now: i64) -> SweepCutoffs {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let purge_before = now.saturating_sub(ms(cfg.retention));
    SweepCutoffs {
        idle_before: now.saturating_sub(ms(cfg.idle_after)),
        offline_before: now.saturating_sub(ms(cfg.offline_after)),
        purge_before,
        purge_anonymous_before: now
            .saturating_sub(ms(cfg.anonymous_retention))
            .max(purge_before),
        // Mail to an agent with a mailbox key may be stored for MAX_TTL after it left:
        // its record (the key senders seal to) stays at least that long.
        purge_mailbox_before: now
            .saturating_sub(ms(m2m_proto::mailbox::MAX_TTL))
            .min(purge_before),
    }
}

/// Says this hub is alive (writing its row again if another hub took it as dead), marks
/// offline the agents of hubs whose liveness expired, and counts the live instances.
pub(crate) async fn check_hubs(state: &HubState) -> Result<HubsReport, StoreError> {
    fn counted<T>(state: &HubState, r: Result<T, StoreError>) -> Result<T, StoreError> {
        r.inspect_err(|_| {
            state.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
        })
    }
    let now = state.now_ms();
    let mut report = HubsReport::default();
    if !counted(state, state.registry.alive(&state.hub_id, now).await)? {
        if let Some(row) = state.instance_row(now) {
            tracing::warn!(
                hub = %state.hub_id,
                "this hub's instance row was gone (another hub took it as dead); writing it again"
            );
            counted(state, state.registry.announce(&row).await)?;
            report.reannounced = true;
        }
    }
    let expiry = i64::try_from(state.config.storage.hub_expiry.as_millis()).unwrap_or(i64::MAX);
    let alive_before = now.saturating_sub(expiry);
    let expired = counted(
        state,
        state
            .registry
            .expire_hubs(alive_before, &state.hub_id)
            .await,
    )?;
    if let Some(expired) = expired {
        for c in &expired.changed {
            state.directory.set_status(&c.id, &c.status, c.version);
        }
        if !expired.hubs.is_empty() {
            tracing::warn!(
                hubs = ?expired.hubs,
                agents = expired.changed.len(),
                "hubs taken as dead (liveness expired); their agents are offline"
            );
            state
                .metrics
                .hubs_expired
                .fetch_add(expired.hubs.len() as u64, Ordering::Relaxed);
        }
        report.offlined = expired.changed.len();
        report.expired = expired.hubs;
    }
    let rows = counted(state, state.registry.instances().await)?;
    report.live = rows.iter().filter(|h| h.alive_at >= alive_before).count();
    state
        .metrics
        .instances
        .store(report.live as u64, Ordering::Relaxed);
    Ok(report)
}
