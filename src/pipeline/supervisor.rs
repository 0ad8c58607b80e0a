//! The retry loop: runs the source in its own task while the committer
//! drives the sinks here; on a transient error drops what the sinks had not
//! committed and restarts the source from the saved offset, with
//! exponential backoff and jitter; on a definite error, or when retries
//! run out, ends the run.

use super::committer::Committer;
use super::{Job, Summary};
use crate::metrics::Metrics;
use anyhow::{anyhow, Result};
use rand::Rng;
use riffle_core::source::RunEnd;
use riffle_core::{ErrorKind, Offset, Source, StartMode, Until};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How many events a source may have in flight to the sinks, in batches.
const QUEUE_BATCHES: usize = 16;

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(7)).min(Duration::from_secs(60));
    let jitter = rand::rng().random_range(0.5..1.0);
    base.mul_f64(jitter)
}

/// Where the next run starts, from what is saved and the selection
/// (`tables`) asked for now. `reload`: enrichment reference tables whose
/// copy this process has not read, requested like `riffle snapshot`: a
/// database source reads them again while it streams, a Kafka source reads
/// their events again from the topics' start up to the saved offsets
/// (docs/kafka-source.md).
fn start_of(job: &Job, state: &crate::state::PipelineState, tables: &[String], reload: &[String]) -> (StartMode, Until) {
    match job {
        Job::Sync => (StartMode::Copy, Until::Never),
        Job::Replicate { until, .. } => {
            let start = match (&state.offset, &state.snapshot_started) {
                (Some(offset), _) => {
                    let previous_tables = (state.tables != tables).then(|| state.tables.clone());
                    let mut progress = state.chunks.clone().unwrap_or_default();
                    for t in reload {
                        if !progress.requested.contains(t) && progress.table(t).is_none_or(|p| p.is_done()) {
                            progress.requested.push(t.clone());
                        }
                    }
                    if !progress.is_done() || previous_tables.is_some() {
                        StartMode::ResumeChunks { offset: offset.clone(), progress, previous_tables }
                    } else {
                        StartMode::Resume(offset.clone())
                    }
                }
                (None, Some(started)) => StartMode::ResumeSnapshot(started.clone()),
                (None, None) => StartMode::Snapshot,
            };
            (start, until.clone())
        }
    }
}

/// The retry policy.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub max: u32,
    /// Waits are `backoff(attempt)` scaled by this (tests shorten them).
    pub scale: f64,
}

pub async fn supervise<S: Source + 'static>(
    mut source: S,
    committer: &mut Committer,
    job: &Job,
    retries: Retries,
    durable: watch::Receiver<Option<Offset>>,
    stop: watch::Receiver<bool>,
    metrics: &Arc<Metrics>,
) -> Result<Summary> {
    let mut attempt = 0u32;
    loop {
        let offset_before = committer.state.offset.clone();
        let (start, until) = start_of(job, &committer.state, committer.selection(), &committer.unloaded_references());
        source.prepare(start, until)?;
        source.sinks_hold(committer.sinks_hold());
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let (durable_rx, stop_rx) = (durable.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let r = source.run(tx, durable_rx, stop_rx).await;
            (source, r)
        });
        let consumed = committer.consume(rx).await;
        let (returned, result) = task.await.map_err(|e| anyhow!("source task failed: {e}"))?;
        source = returned;
        metrics.with(|c| c.retrying = None);
        let error: anyhow::Error = match (result, consumed) {
            (_, Err(sink_err)) => {
                tokio::task::block_in_place(|| committer.abort());
                if committer.take_restart() {
                    // Not a failure: the source starts again to read what was asked.
                    tracing::info!(reason = format!("{sink_err:#}"), "restarting the source");
                    continue;
                }
                if sink_err.kind() == ErrorKind::Definite {
                    metrics.with(|c| *c.errors.entry("definite").or_default() += 1);
                    return Err(sink_err.into());
                }
                sink_err.into()
            }
            (Ok(end), Ok(())) => {
                return Ok(Summary { end, events: committer.state.events, offset: committer.state.offset.clone() });
            }
            (Err(src_err), Ok(())) => {
                tokio::task::block_in_place(|| committer.abort());
                if src_err.kind() == ErrorKind::Definite {
                    metrics.with(|c| *c.errors.entry("definite").or_default() += 1);
                    return Err(src_err.into());
                }
                src_err.into()
            }
        };
        metrics.with(|c| *c.errors.entry("transient").or_default() += 1);
        if committer.state.offset != offset_before {
            attempt = 0;
        }
        let stopped = || Summary { end: RunEnd::Stopped, events: committer.state.events, offset: committer.state.offset.clone() };
        if *stop.borrow() {
            // Asked to stop: what is committed is saved; the error is moot.
            tracing::info!(error = format!("{error:#}"), "stopping instead of retrying");
            return Ok(stopped());
        }
        if attempt >= retries.max {
            // The error first, then why riffle stopped retrying it.
            return Err(anyhow!("{error:#} (gave up after {} retries; raise --max-retries to keep trying longer)", retries.max));
        }
        attempt += 1;
        let wait = backoff(attempt).mul_f64(retries.scale);
        let shown = format!("{error:#}");
        tracing::warn!(
            error = shown,
            attempt,
            max_retries = retries.max,
            retry_in_ms = wait.as_millis() as u64,
            "transient error, retrying"
        );
        metrics.with(|c| {
            c.retries += 1;
            c.retrying = Some(attempt);
        });
        let mut stop_wait = stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop_wait.changed() => {
                tracing::info!("stopped while waiting to retry");
                return Ok(stopped());
            }
        }
    }
}
