//! What riffle tells the person watching: a progress bar per snapshot table
//! when stderr is a terminal, plain log lines otherwise, and a periodic
//! summary of the stream. Never row values.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use riffle_core::TableId;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

const LOG_EVERY: Duration = Duration::from_secs(10);

/// One table being copied.
struct Copying {
    table: TableId,
    rows: u64,
    estimated: u64,
    started: Instant,
    bar: Option<ProgressBar>,
}

/// Snapshot progress: with a terminal, one bar for the whole snapshot and
/// one per table being copied (several at once when the source reads
/// tables in parallel); without one, a log line every 10 s and one per
/// table copied. Stream progress: a log line every 10 s.
pub struct Progress {
    bars: bool,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    copying: Vec<Copying>,
    /// The source reads tables in parallel and says when each is done;
    /// otherwise a table is done when the next one starts.
    parallel: bool,
    tables_done: usize,
    tables_planned: usize,
    rows: u64,
    estimated: u64,
    started: Instant,
    last_log: Instant,
    streamed: u64,
    streamed_at_last_log: u64,
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let bars = !quiet && std::io::stderr().is_terminal();
        Progress {
            bars,
            multi: None,
            overall: None,
            copying: Vec::new(),
            parallel: false,
            tables_done: 0,
            tables_planned: 0,
            rows: 0,
            estimated: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            streamed: 0,
            streamed_at_last_log: 0,
        }
    }

    /// The source planned its snapshot: `tables` tables, read in parallel,
    /// each reported done.
    pub fn plan(&mut self, tables: usize) {
        self.parallel = true;
        self.tables_planned = tables;
    }

    fn multi(&mut self) -> &MultiProgress {
        self.multi.get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
    }

    pub fn start_table(&mut self, table: &TableId, estimated: u64) {
        if !self.parallel {
            self.finish_tables();
        }
        // A snapshot read in rounds announces a table again each round.
        if self.copying.iter().any(|c| c.table == *table) {
            return;
        }
        if self.copying.is_empty() && self.tables_done == 0 {
            self.started = Instant::now();
        }
        self.estimated += estimated;
        let bar = self.bars.then(|| {
            if self.overall.is_none() {
                let overall = self.multi().add(ProgressBar::new(1));
                overall.set_style(bar_style("{prefix:.bold} [{bar:30}] {human_pos}/{human_len} rows {per_sec} eta {eta}"));
                self.overall = Some(overall);
            }
            let bar = self.multi().add(ProgressBar::new(estimated.max(1)));
            bar.set_style(bar_style("  {prefix} [{bar:30}] {human_pos}/{human_len} rows {per_sec}"));
            bar.set_prefix(table.to_string());
            bar
        });
        self.copying.push(Copying { table: table.clone(), rows: 0, estimated, started: Instant::now(), bar });
        self.draw_overall();
    }

    fn draw_overall(&self) {
        if let Some(o) = &self.overall {
            o.set_prefix(format!(
                "snapshot: {} of {} tables",
                self.tables_done,
                self.tables_planned.max(self.tables_done + self.copying.len())
            ));
            o.set_length(self.estimated.max(self.rows).max(1));
            o.set_position(self.rows);
        }
    }

    /// `n` rows of `table` read.
    pub fn snapshot_rows(&mut self, table: &TableId, n: u64) {
        if n == 0 {
            return;
        }
        self.rows += n;
        if let Some(c) = self.copying.iter_mut().find(|c| c.table == *table) {
            c.rows += n;
            if let Some(bar) = &c.bar {
                if c.rows > bar.length().unwrap_or(0) {
                    bar.set_length(c.rows);
                }
                bar.set_position(c.rows);
            }
        }
        self.draw_overall();
        if !self.bars && self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let rate = self.rows as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let copying: Vec<String> = self.copying.iter().map(|c| format!("{} {}/{}", c.table, c.rows, c.estimated)).collect();
            tracing::info!(
                tables_done = self.tables_done,
                tables = self.tables_planned.max(self.tables_done + self.copying.len()),
                rows = self.rows,
                estimated_rows = self.estimated,
                rows_per_sec = rate as u64,
                copying = copying.join(", "),
                "snapshot progress"
            );
        }
    }

    /// Every row of `table` (`schema.table`) has been read.
    pub fn finish_table(&mut self, table: &str) {
        let Some(i) = self.copying.iter().position(|c| c.table.to_string() == table) else { return };
        let c = self.copying.remove(i);
        if let Some(bar) = c.bar {
            bar.finish_and_clear();
        }
        self.tables_done += 1;
        let secs = c.started.elapsed().as_secs_f64();
        tracing::info!(table = %c.table, rows = c.rows, seconds = format!("{secs:.1}"), "table copied");
        self.draw_overall();
    }

    fn finish_tables(&mut self) {
        let tables: Vec<String> = self.copying.iter().map(|c| c.table.to_string()).collect();
        for t in tables {
            self.finish_table(&t);
        }
    }

    /// The snapshot ended.
    pub fn finish_all(&mut self) {
        self.finish_tables();
        if let Some(o) = self.overall.take() {
            o.finish_and_clear();
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
