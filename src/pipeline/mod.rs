//! The pipeline: runs a source, passes its events through the table rules
//! to the sinks, commits the sinks on source checkpoints, and only then saves
//! the offset and tells the source it may release its log.
//!
//! # Layout
//!
//! - [`ledger`]: the commit bookkeeping and replay rule, without I/O.
//! - [`committer`]: routes events to the sinks, commits, saves the state.
//! - [`supervisor`]: the retry loop around one source run.
//!
//! The source runs in its own task; the sinks are driven here, with their
//! blocking file I/O inside `block_in_place`, so reading and writing use
//! both cores. Transient errors restart the source from the saved offset
//! after dropping what the sinks had not committed, with exponential backoff
//! and jitter; definite errors end the run.

mod committer;
mod ledger;
mod marks;
mod supervisor;
#[cfg(test)]
mod tests;

use committer::{Committer, Parts};
use supervisor::{supervise, Retries};

use crate::config::Config;
use crate::connectors::sinks::open_sinks;
use crate::connectors::AnySource;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::state::{PipelineState, StateSave, StateStore};
use crate::transform::Transformer;
use anyhow::Result;
use riffle_core::source::RunEnd;
use riffle_core::{Offset, Source, Until};
use tokio::sync::watch;

/// What to run.
#[derive(Debug, Clone)]
pub enum Job {
    Sync,
    /// `standby`: wait for the pipeline's lease instead of refusing to start.
    Replicate {
        until: Until,
        standby: bool,
    },
}

/// How a run ended, for the exit message.
#[derive(Debug)]
pub struct Summary {
    pub end: RunEnd,
    pub events: u64,
    pub offset: Option<Offset>,
}

pub async fn run(cfg: &Config, job: Job, quiet: bool, stop: watch::Receiver<bool>) -> Result<Summary> {
    let store = StateStore::new(&cfg.state_dir)?;
    let source = AnySource::new(&cfg.source_spec())?;
    let sync = matches!(job, Job::Sync);
    let metrics = Metrics::new(source.stats(), cfg.stall_timeout);
    // Served while a standby waits too: it is alive (`/health` says ok)
    // and says it waits (`riffle_standby`).
    if let Some(addr) = cfg.metrics_addr {
        crate::metrics::serve(addr, metrics.clone()).await?;
    }
    // One process per pipeline: taken before anything is read or written.
    let lease = match job {
        Job::Sync => None,
        Job::Replicate { standby, .. } => {
            metrics.with(|c| c.standby = standby);
            let lease = store.lease(&cfg.name, standby, &stop).await?;
            metrics.with(|c| c.standby = false);
            match lease {
                Some(lease) => Some(lease),
                None => return Ok(Summary { end: RunEnd::Stopped, events: 0, offset: None }),
            }
        }
    };
    let redacted = crate::config::redact_source_url(&cfg.source_url);
    let mut saved = match job {
        Job::Sync => None,
        Job::Replicate { .. } => store.load(&cfg.name)?,
    };
    // In a bucket, made ours: a previous holder that froze before its next
    // save (and lost the lease meanwhile) can no longer save over it (a
    // save replaces only the version its process last saw). On local disk
    // the lock is held for as long as its holder lives, frozen or not.
    if let Some(s) = saved.as_mut().filter(|_| store.is_bucket()) {
        s.updated_ms = crate::state::now_ms();
        store.save(s)?;
    }
    // A `riffle snapshot` request made while the pipeline was stopped.
    if let Some(s) = saved.as_mut().filter(|s| s.offset.is_some()) {
        let asked = store.request(&cfg.name)?;
        if !asked.is_empty() {
            tracing::info!(tables = asked.join(","), "reading tables again, as riffle snapshot asked");
            s.request_snapshot(&asked);
            store.save(s)?;
            store.clear_request(&cfg.name)?;
        }
    }
    if let Some(s) = saved.as_ref().filter(|s| s.tables != cfg.tables) {
        tracing::info!(
            pipeline = cfg.name,
            was = s.tables.join(","),
            now = cfg.tables.join(","),
            "the table selection changed: added tables are snapshotted while the others stream on, removed ones stop"
        );
    }
    check_rules(cfg).await?;
    // Sinks are checked before anything is read from the source.
    crate::check::require_sinks_ready(cfg)?;
    let sinks = tokio::task::block_in_place(|| open_sinks(cfg))?;
    for s in &sinks {
        tracing::info!(sink = s.describe(), "sink ready");
    }
    let state = saved.clone().unwrap_or_else(|| PipelineState::new(&cfg.name, redacted, cfg.tables.clone()));
    // The previous holder of the lease is gone: what it left on the server
    // is ours to end.
    if let (Some(session), true) = (state.source_session, lease.is_some()) {
        source.stats().set_session(session);
    }
    if let Some(offset) = &state.offset {
        let n = offset.as_number();
        let done = state.chunks.is_none();
        metrics.with(|c| {
            c.committed_position = n;
            c.snapshot_done = done;
        });
    }
    let status_line = (!sync && !quiet).then(|| crate::progress::spawn_status_line(metrics.clone()));
    let (durable_tx, durable_rx) = watch::channel(state.offset.clone());
    let mut committer = Committer::new(Parts {
        sink_names: cfg.sinks.iter().map(|s| s.name.clone()).collect(),
        sinks,
        transformer: Transformer::new(cfg.rules.clone(), cfg.mask_salt.clone()),
        store: (!sync).then(|| Box::new(store) as Box<dyn StateSave>),
        state,
        durable: durable_tx,
        interval: cfg.commit_interval,
        sync,
        progress: Progress::new(quiet),
        metrics: metrics.clone(),
        selection: cfg.tables.clone(),
        fence: lease.as_ref().and_then(|l| l.fence()),
        signal: cfg.signal_table.as_deref().and_then(riffle_core::TableId::parse),
    });
    let retries = Retries { max: cfg.max_retries, scale: 1.0 };
    let result = supervise(source, &mut committer, &job, retries, durable_rx, stop, &metrics).await;
    if let Some(line) = status_line {
        line.abort();
    }
    // The sinks let their leases go first, then the pipeline's.
    drop(committer);
    if let Some(lease) = lease {
        lease.release().await;
    }
    result
}

/// The `[[tables]]` rules against the source's tables, before anything
/// runs: a column a rule names that its table lacks, or an enrichment's
/// reference table or columns the source does not have, is the error a
/// table's first event would meet, given now; a rule matching no table is
/// a warning. Skipped when the source cannot be asked now (its run reports
/// why, with retries) or has no catalog (Kafka: checked at each table's
/// first event).
async fn check_rules(cfg: &Config) -> Result<()> {
    if cfg.rules.is_empty() {
        return Ok(());
    }
    let wanted = Transformer::tables_named(&cfg.rules);
    let tables = match crate::connectors::table_columns(&cfg.source_spec(), &wanted).await {
        Ok(Some(tables)) => tables,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, "the table rules are checked at each table's first event instead");
            return Ok(());
        }
    };
    for pattern in Transformer::preflight(&cfg.rules, &tables)? {
        tracing::warn!(pattern, "a [[tables]] rule matches none of the source's tables (yet): its settings apply to none");
    }
    Ok(())
}
