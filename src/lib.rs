//! riffle: change-data-capture replication in one binary.
//!
//! # Layout
//!
//! - [`cli`]: the flags as typed; [`config`]: the validated pipeline.
//! - [`pipeline`]: source → sinks, commits, offsets, retries.
//! - [`state`]: the embedded state store.
//! - [`progress`]: progress bars and progress logs.
//! - [`connectors`]: the one place that names the systems riffle connects
//!   to: which connector a URL picks, and the dispatch to it.
//! - [`status`]: `riffle status`; [`check`]: `riffle check`; [`slots`]: `riffle slots`;
//!   [`resnapshot`]: `riffle snapshot`.
//! - [`transform`]: per-table columns, masks, filters and routing.
//! - [`metrics`]: Prometheus metrics and the health check.
//! - [`verify`]: `riffle verify`, the source against the file sinks at one position.
//!
//! The connectors live in `connectors/`: the core model (events, values,
//! positions, the Source and Sink contracts, checks, errors), the sources
//! (postgres, mysql) and the sinks (files and object stores, kafka) with
//! their encoders (formats). docs/architecture.md shows how an event and
//! its position travel through them.

/// A line of a report on stdout (`status`, `check`, `slots`). A reader that
/// went away (`riffle status | head`) is no error: the rest is dropped.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod check;
pub mod cli;
pub mod config;
pub mod connectors;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod resnapshot;
pub mod slots;
pub mod state;
pub mod status;
pub mod transform;
pub mod verify;

use anyhow::{bail, Result};
use cli::{Cli, Command};
use riffle_core::source::RunEnd;
use riffle_core::Until;
use tokio::sync::watch;

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sync(args) => {
            let cfg = config::build(config::Overrides {
                args: &args.pipeline,
                no_metadata: args.no_metadata,
                state: None,
                commit_interval: None,
                max_retries: None,
            })?;
            let stop = stop_on_signals();
            let summary = pipeline::run(&cfg, pipeline::Job::Sync, cli.quiet, stop).await?;
            match summary.end {
                RunEnd::Stopped => tracing::warn!("stopped before the snapshot completed; nothing was committed"),
                _ => tracing::info!(rows = summary.events, "sync complete"),
            }
            Ok(())
        }
        Command::Replicate(args) => {
            let cfg = config::build(config::Overrides {
                args: &args.pipeline,
                no_metadata: false,
                state: args.state.as_ref(),
                commit_interval: args.commit_interval.as_deref(),
                max_retries: args.max_retries,
            })?;
            let until = match args.until.as_deref() {
                None => Until::Never,
                Some("now") => Until::Now,
                Some(position) => Until::At(cfg.source_kind.parse_position(position)?),
            };
            // The state URL's query may hold credentials: not logged.
            let state = cfg.state_dir.to_string_lossy().split('?').next().unwrap_or_default().to_string();
            tracing::info!(pipeline = cfg.name, state, "starting");
            let stop = stop_on_signals();
            let summary = pipeline::run(&cfg, pipeline::Job::Replicate { until, standby: args.standby }, cli.quiet, stop.clone()).await?;
            let offset = summary.offset.map(|o| o.to_string()).unwrap_or_else(|| "none".into());
            match summary.end {
                RunEnd::ReachedUntil => tracing::info!(offset, events = summary.events, "reached --until; done"),
                _ => tracing::info!(offset, events = summary.events, "stopped; position saved"),
            }
            if args.verify && summary.end == RunEnd::ReachedUntil {
                verify_and_exit(&cfg, &args.verify_flags, true, cli.quiet, stop).await?;
            }
            Ok(())
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "riffle", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut out)?;
            use std::io::Write as _;
            // A reader that went away (`riffle man | head`) is no error.
            let _ = std::io::stdout().write_all(&out);
            Ok(())
        }
        Command::Verify(args) => {
            let cfg = config::build(config::Overrides::reading(&args.pipeline, args.state.as_ref()))?;
            verify_and_exit(&cfg, &args.verify, false, cli.quiet, stop_on_signals()).await
        }
        Command::Status(args) => status::run(&args).await,
        Command::Check(args) => {
            if check::run(&args).await? {
                Ok(())
            } else {
                bail!("riffle check found problems (listed above)")
            }
        }
        Command::Slots(args) => slots::run(&args.action).await,
        Command::Snapshot(args) => resnapshot::run(&args),
    }
}

/// Runs `riffle verify`: an error [`verify::Differences`] (exit 3) when
/// the copy differs.
async fn verify_and_exit(
    cfg: &config::Config,
    flags: &cli::VerifyFlags,
    catch_up: bool,
    quiet: bool,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let wait = match flags.wait.as_deref() {
        Some(w) => config::parse_duration(w).ok_or_else(|| anyhow::anyhow!("--wait: expected a duration like 30s or 5m, found {w:?}"))?,
        None => std::time::Duration::from_secs(300),
    };
    let opts = verify::Options { json: flags.json, show_values: flags.show_values, wait, catch_up };
    let report = verify::run(cfg, &opts, quiet, stop).await?;
    if report.matches {
        Ok(())
    } else {
        Err(verify::Differences.into())
    }
}

/// A watch that turns true on SIGINT or SIGTERM. A second signal exits at
/// once (the saved position stays where the last commit put it).
fn stop_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut count = 0;
        loop {
            wait_for_signal().await;
            count += 1;
            if count > 1 {
                tracing::warn!("second signal: exiting without waiting");
                std::process::exit(130);
            }
            tracing::info!("signal received: finishing the current transaction, committing, saving the position");
            let _ = tx.send(true);
        }
    });
    rx
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
