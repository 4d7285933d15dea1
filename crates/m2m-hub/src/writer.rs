//! The single path by which the hub changes the registry: requests queue their [`Write`]
//! here and one task commits whatever has queued up in one transaction (group commit).
//! Under load this turns thousands of registers per second into a few dozen commits; when
//! idle a write is committed at once. One writer also means this hub's writes reach the
//! database in the order they were made.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::defaults::WRITE_QUEUE as QUEUE;
use crate::metrics::Metrics;
use crate::store::{Registry, Write};

/// The write failed; the details are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("registry unavailable")]
pub struct Unavailable;

type Job = (Write, oneshot::Sender<Result<Option<i64>, Unavailable>>);

/// Handle to the writer task.
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task. It ends when every handle is dropped.
    pub fn spawn(
        registry: Arc<dyn Registry>,
        metrics: Arc<Metrics>,
        max_batch: usize,
    ) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(registry, metrics, rx, max_batch.max(1)));
        (Writer { tx }, task)
    }

    /// Commits `write`; the row's new version, or `None` when the row does not exist.
    pub async fn write(&self, write: Write) -> Result<Option<i64>, Unavailable> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((write, reply))
            .await
            .map_err(|_| Unavailable)?;
        done.await.map_err(|_| Unavailable)?
    }
}

async fn run(
    registry: Arc<dyn Registry>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut jobs, max_batch).await > 0 {
        let (writes, replies): (Vec<Write>, Vec<_>) = jobs.drain(..).unzip();
        match registry.apply(&writes).await {
            Ok(versions) => {
                for (reply, v) in replies.into_iter().zip(versions) {
                    let _ = reply.send(Ok(v));
                }
            }
            Err(e) if writes.len() > 1 => {
                // One bad write must not fail its neighbours: retry them one by one.
                tracing::warn!(error = %e, batch = writes.len(), "batched write failed; retrying singly");
                for (write, reply) in writes.into_iter().zip(replies) {
                    let result = registry.apply(std::slice::from_ref(&write)).await;
                    let _ = reply.send(match result {
                        Ok(v) => Ok(v.into_iter().next().flatten()),
                        Err(e) => {
                            metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(error = %e, "registry write failed");
                            Err(Unavailable)
                        }
                    });
                }
            }
            Err(e) => {
                metrics.db_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "registry write failed");
                for reply in replies {
                    let _ = reply.send(Err(Unavailable));
                }
            }
        }
    }
}
