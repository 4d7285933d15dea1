//! PostgreSQL: how the changes other hubs commit reach this hub's mirror.
//!
//! ```text
//!  commit on any hub ─► pg_notify(m2m_changes, first version) ─► listener task ─► Feed::ring
//!                                                                                   │
//!  fallback poll (sync_interval) ──────────────────────────► reader task ◄── one wake-up
//!                                                              │
//!                                  changes_since(from) ─► directory.upsert, watermark
//! ```
//!
//! The table is the truth; the doorbell only says when to read, and from where. The
//! listener task turns each notification into [`Feed::ring`]: the smallest version rung
//! since the last read is kept and the reader woken. A [`tokio::sync::Notify`] holds at
//! most one wake-up, so a burst of doorbells during a read causes one more read, not one
//! per doorbell. A doorbell read starts at `min(watermark, rung - 1)`: a transaction that
//! took its versions before a newer one but committed after it rings at its own commit with
//! its own smallest version, and is read from there.
//!
//! Polls (the fallback, or every read with `listen` off) and the read after the listener
//! (re)connects are catch-up reads: they start from the watermark of
//! [`FEED_LATE_COMMIT`] ago, which covers a transaction that committed late while no
//! doorbell could be heard.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::dashboard::AbortOnDrop;
use crate::defaults::{
    FEED_LATE_COMMIT, FEED_MARK_GRAIN, FEED_PAGE, LISTENER_RETRY, MIN_TIMER_PERIOD,
};
use crate::error::StoreError;
use crate::state::HubState;
use crate::store::Bell;

/// No doorbell rang since the last read.
const NOT_RUNG: i64 = i64::MAX;

/// What the reader knows about the feed: recent watermarks, the doorbells not read yet.
#[derive(Debug)]
pub(crate) struct Feed {
    /// `(when, watermark)` of recent reads, oldest first, spanning [`FEED_LATE_COMMIT`].
    marks: Mutex<VecDeque<(Instant, i64)>>,
    /// The smallest version rung since the last read ([`NOT_RUNG`]: none).
    rung: AtomicI64,
    /// The next read must be a catch-up read (the listener was lost, or is new).
    catch_up: AtomicBool,
    /// Wakes the reader; holds at most one wake-up (coalescing).
    wake: Notify,
    /// One read at a time (the reader task and [`crate::RunningHub::sync_now`]).
    reading: tokio::sync::Mutex<()>,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            marks: Mutex::new(VecDeque::new()),
            rung: AtomicI64::new(NOT_RUNG),
            catch_up: AtomicBool::new(false),
            wake: Notify::new(),
            reading: tokio::sync::Mutex::new(()),
        }
    }
}

impl Feed {
    /// A transaction committed changes from `first` on.
    pub(crate) fn ring(&self, first: i64) {
        self.rung.fetch_min(first, Ordering::AcqRel);
        self.wake.notify_one();
    }

    /// Doorbells may have been missed: the next read catches up.
    pub(crate) fn lost(&self) {
        self.catch_up.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The watermark of [`FEED_LATE_COMMIT`] ago (the oldest kept mark), seeded with
    /// `seed` when no read happened yet. Marks older than needed are dropped.
    fn overlapped(&self, now: Instant, seed: i64) -> i64 {
        let mut marks = self.marks.lock();
        if marks.is_empty() {
            marks.push_back((now, seed));
        }
        let horizon = now.checked_sub(FEED_LATE_COMMIT);
        while marks.len() > 1 && horizon.is_some_and(|h| marks[1].0 <= h) {
            marks.pop_front();
        }
        marks.front().map_or(seed, |m| m.1)
    }

    fn push(&self, now: Instant, mark: i64) {
        let mut marks = self.marks.lock();
        match marks.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < FEED_MARK_GRAIN => {
                last.1 = last.1.max(mark);
            }
            Some(last) => {
                let mark = mark.max(last.1);
                marks.push_back((now, mark));
            }
            None => marks.push_back((now, mark)),
        }
    }
}

/// How a read chooses where to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// A doorbell rang: from the watermark, or below the smallest version rung.
    Doorbell,
    /// A poll, or the first read after the listener (re)connected: with the overlap.
    CatchUp,
}

/// Reads the feed and applies it to the mirror; returns the rows applied.
pub(crate) async fn read(state: &HubState, feed: &Feed, how: Read) -> Result<usize, StoreError> {
    let _one = feed.reading.lock().await;
    let now = Instant::now();
    let watermark = state.feed_watermark.load(Ordering::Acquire);
    let rung = feed.rung.swap(NOT_RUNG, Ordering::AcqRel);
    let catch_up = how == Read::CatchUp || feed.catch_up.swap(false, Ordering::AcqRel);
    let overlapped = feed.overlapped(now, watermark);
    let mut from = if catch_up { overlapped } else { watermark };
    if rung != NOT_RUNG {
        from = from.min(rung.saturating_sub(1));
    }
    let result = read_from(state, from).await;
    match result {
        Ok((applied, newest)) => {
            let newest = newest.max(watermark);
            feed.push(now, newest);
            state.feed_watermark.fetch_max(newest, Ordering::AcqRel);
            state.metrics.feed_reads.fetch_add(1, Ordering::Relaxed);
            Ok(applied)
        }
        Err(e) => {
            // Nothing is lost: the doorbells are rung again for the next read.
            if rung != NOT_RUNG {
                feed.rung.fetch_min(rung, Ordering::AcqRel);
            }
            if catch_up {
                feed.catch_up.store(true, Ordering::Release);
            }
            Err(e)
        }
    }
}

/// Rows changed after `from`, page by page, applied; how many and the newest version.
async fn read_from(state: &HubState, mut from: i64) -> Result<(usize, i64), StoreError> {
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
    Ok((applied, newest))
}

/// The reader: reads when the doorbell rings and every `sync_interval`; with `listen` on, a
/// listener task feeds the doorbell. Runs until `stop` is cancelled.
pub(crate) async fn run(state: Arc<HubState>, feed: Arc<Feed>, stop: CancellationToken) {
    let tuning = &state.config.storage;
    let period = tuning.sync_interval.max(MIN_TIMER_PERIOD);
    let mut poll = tokio::time::interval_at(Instant::now() + period, period);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let _listener = tuning
        .listen
        .then(|| AbortOnDrop(tokio::spawn(listen(state.clone(), feed.clone()))));
    loop {
        let how = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = feed.wake.notified() => Read::Doorbell,
            _ = poll.tick() => Read::CatchUp,
        };
        if let Err(e) = read(&state, &feed, how).await {
            tracing::warn!(error = %e, "change feed read failed; will retry");
            // Retry at the next poll, or sooner when the doorbell rings again.
        }
    }
}

/// The listener task: hears the doorbell, makes a new listener when one breaks, and asks
/// for a catch-up read whenever it (re)connected.
async fn listen(state: Arc<HubState>, feed: Arc<Feed>) {
    loop {
        let mut listener = match state.registry.listen().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the change doorbell; will retry");
                tokio::time::sleep(LISTENER_RETRY).await;
                continue;
            }
        };
        state.metrics.feed_listens.fetch_add(1, Ordering::Relaxed);
        feed.lost();
        loop {
            match listener.next().await {
                Ok(Bell::Rang(first)) => {
                    state.metrics.feed_doorbells.fetch_add(1, Ordering::Relaxed);
                    feed.ring(first);
                }
                Ok(Bell::Mail(id)) => state.mailbox.ring_raw(id),
                Ok(Bell::Lost) => {
                    state.metrics.feed_listens.fetch_add(1, Ordering::Relaxed);
                    feed.lost();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change doorbell listener lost; listening again");
                    break;
                }
            }
        }
        tokio::time::sleep(LISTENER_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn catch_up_reads_start_from_the_watermark_of_the_late_commit_window_ago() {
        let feed = Feed::default();
        let t0 = Instant::now();
        assert_eq!(feed.overlapped(t0, 5), 5, "seeded");
        feed.push(t0, 10);
        // Reads in quick succession fold into one mark.
        feed.push(t0 + Duration::from_millis(3), 12);
        feed.push(t0 + Duration::from_millis(500), 20);
        feed.push(t0 + Duration::from_millis(1000), 30);
        assert_eq!(feed.marks.lock().len(), 3, "{:?}", feed.marks.lock());
        // 1.2 s in: the mark of 1.5 s ago is the first one.
        assert_eq!(feed.overlapped(t0 + Duration::from_millis(1200), 0), 12);
        // 2.1 s in: 0.6 s is more than 1.5 s ago, so the 0.5 s mark is the start.
        assert_eq!(feed.overlapped(t0 + Duration::from_millis(2100), 0), 20);
        // Long after: the last mark stays.
        assert_eq!(feed.overlapped(t0 + Duration::from_secs(60), 0), 30);
        assert_eq!(feed.marks.lock().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn marks_never_go_backwards_and_doorbells_keep_the_smallest_version() {
        let feed = Feed::default();
        let t0 = Instant::now();
        feed.push(t0, 40);
        feed.push(t0 + Duration::from_secs(1), 7);
        assert_eq!(feed.marks.lock().back().unwrap().1, 40);
        feed.ring(90);
        feed.ring(55);
        feed.ring(70);
        assert_eq!(feed.rung.load(Ordering::Acquire), 55);
        // One wake-up for the three doorbells.
        feed.wake.notified().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(10), feed.wake.notified())
                .await
                .is_err(),
            "bursts coalesce into one wake-up"
        );
    }
}
