//! What riffle tells the person watching: a progress bar per snapshot table
//! when stderr is a terminal, plain log lines otherwise, and a periodic
//! summary of the stream. Never row values.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use riffle_core::TableId;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bars: bool,
    bar: Option<ProgressBar>,
    table: Option<TableId>,
    table_rows: u64,
    estimated: u64,
    table_started: Instant,
    last_log: Instant,
    streamed: u64,
    streamed_at_last_log: u64,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let bars = !quiet && std::io::stderr().is_terminal();
        Progress {
            bars,
            bar: None,
            table: None,
            table_rows: 0,
            estimated: 0,
            table_started: Instant::now(),
            last_log: Instant::now(),
            streamed: 0,
            streamed_at_last_log: 0,
        }
    }

    pub fn start_table(&mut self, table: &TableId, estimated: u64) {
        self.finish_table();
        self.table = Some(table.clone());
        self.table_rows = 0;
        self.estimated = estimated;
        self.table_started = Instant::now();
        self.last_log = Instant::now();
        if self.bars {
            let bar = ProgressBar::with_draw_target(Some(estimated.max(1)), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(table.to_string());
            self.bar = Some(bar);
        }
    }

    pub fn snapshot_rows(&mut self, n: u64) {
        if n == 0 || self.table.is_none() {
            return;
        }
        self.table_rows += n;
        if let Some(bar) = &self.bar {
            if self.table_rows > bar.length().unwrap_or(0) {
                bar.set_length(self.table_rows);
            }
            bar.set_position(self.table_rows);
        } else if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.table_rows as f64 / self.table_started.elapsed().as_secs_f64().max(0.001);
            let table = self.table.as_ref().map(ToString::to_string).unwrap_or_default();
            tracing::info!(table, rows = self.table_rows, estimated_rows = self.estimated, rows_per_sec = rate as u64, "snapshot progress");
        }
    }

    pub fn finish_table(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(table) = self.table.take() {
            let secs = self.table_started.elapsed().as_secs_f64();
            tracing::info!(table = %table, rows = self.table_rows, seconds = format!("{secs:.1}"), "table copied");
        }
    }

    pub fn streamed(&mut self, n: u64) {
        self.streamed += n;
        if self.last_log.elapsed() >= LOG_EVERY {
            let secs = self.last_log.elapsed().as_secs_f64();
            let rate = (self.streamed - self.streamed_at_last_log) as f64 / secs;
            self.last_log = Instant::now();
            self.streamed_at_last_log = self.streamed;
            tracing::info!(events = self.streamed, events_per_sec = rate as u64, "streaming");
        }
    }
}

/// In `replicate` on a terminal: one status line, redrawn every second, with
/// events/s, lag, position and per-table counts. Elsewhere the periodic log
/// lines carry the same figures.
pub fn spawn_status_line(metrics: std::sync::Arc<crate::metrics::Metrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_total = 0u64;
        loop {
            tick.tick().await;
            let (total, tables) = metrics.with(|c| {
                let mut per_table: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
                let mut total = 0;
                for ((t, _, _), n) in &c.events {
                    *per_table.entry(t.as_str()).or_default() += n;
                    total += n;
                }
                let tables: Vec<String> = per_table.iter().take(4).map(|(t, n)| format!("{t} {n}")).collect();
                (total, tables.join(", "))
            });
            let rate = total.saturating_sub(last_total);
            last_total = total;
            let pos = riffle_core::Lsn(metrics.with(|c| c.committed_position));
            bar.set_message(format!(
                "{rate} ev/s · lag {:.1} s / {} KiB · saved {pos} · {tables}",
                metrics.lag_seconds(),
                metrics.lag_bytes() / 1024
            ));
            bar.tick();
        }
    })
}
