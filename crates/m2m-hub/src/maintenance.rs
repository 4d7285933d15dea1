//! Background work of a hub, in one task: write batched liveness, run the status sweep,
//! and (PostgreSQL) read the change feed of other hubs into the mirror.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::SweepConfig;
use crate::defaults::{FEED_OVERLAP, FEED_PAGE, FLUSH_CHUNK, MIN_TIMER_PERIOD};
use crate::directory::parse_id;
use crate::error::StoreError;
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
}

/// Recent watermarks of the change feed (oldest first).
#[derive(Debug, Default)]
pub(crate) struct FeedMarks(Mutex<VecDeque<i64>>);

impl FeedMarks {
    fn start(&self, seed: i64) -> i64 {
        let mut marks = self.0.lock();
        if marks.is_empty() {
            marks.push_back(seed);
        }
        marks.front().copied().unwrap_or(seed)
    }

    fn push(&self, mark: i64) {
        let mut marks = self.0.lock();
        let latest = marks.back().copied().unwrap_or(mark).max(mark);
        marks.push_back(latest);
        while marks.len() > FEED_OVERLAP {
            marks.pop_front();
        }
    }
}

/// Runs until `stop` is cancelled.
pub(crate) async fn run(state: Arc<HubState>, marks: Arc<FeedMarks>, stop: CancellationToken) {
    let tuning = &state.config.storage;
    let every = |d: Duration| {
        let d = d.max(MIN_TIMER_PERIOD);
        let mut i = interval_at(Instant::now() + d, d);
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    };
    let mut flush = every(tuning.flush_interval);
    let mut sweep = every(state.config.sweep.interval);
    let mut sync = every(tuning.sync_interval);
    let mut relay_idle = every(state.config.relay.idle_sweep);
    let shared = state.registry.shared();
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
            _ = sync.tick(), if shared => {
                if let Err(e) = sync_feed(&state, &marks).await {
                    tracing::warn!(error = %e, "change feed read failed; will retry");
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
        }
        None => report.skipped = true,
    }
    // Every hub forgets what the retention rule deletes, whoever ran the DELETE.
    state
        .directory
        .purge_offline(
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

/// Applies what other hubs wrote since the last reads.
pub(crate) async fn sync_feed(state: &HubState, marks: &FeedMarks) -> Result<usize, StoreError> {
    let mut from = marks.start(state.feed_watermark.load(Ordering::Relaxed));
    let mut newest = from;
    let mut applied = 0;
    loop {
        let rows = state
            .registry
            .changes_since(from, FEED_PAGE)
            .await
            .inspect_err(|_| {
                state.metrics.db_errors.fetch_add(1, Ordering::Relaxed);
            })?;
        for row in &rows {
            state.directory.upsert(row);
            newest = newest.max(row.version);
        }
        applied += rows.len();
        if rows.len() < FEED_PAGE as usize {
            break;
        }
        from = newest;
    }
    state
        .metrics
        .feed_rows
        .fetch_add(applied as u64, Ordering::Relaxed);
    marks.push(newest);
    state.feed_watermark.fetch_max(newest, Ordering::Relaxed);
    Ok(applied)
}
