//! Prometheus metrics and a health check, served over plain HTTP with
//! `--metrics-addr`. Counters are updated once per batch, not per event.
//!
//! | series | labels | meaning |
//! |---|---|---|
//! | `riffle_events_total` | `table`, `sink`, `op` | events written to a sink |
//! | `riffle_filtered_events_total` | `table` | events a row filter dropped |
//! | `riffle_enrich_misses_total` | `table` | enriched events whose join key found no reference row (the columns are null) |
//! | `riffle_sink_bytes_total` | `table`, `sink` | encoded bytes written to a sink |
//! | `riffle_snapshot_rows_total` | `table` | rows copied by the snapshot |
//! | `riffle_snapshot_rows_estimated` | `table` | the source's row estimate |
//! | `riffle_snapshot_done` | | 1 once the snapshot is committed |
//! | `riffle_snapshot_tables` | `state` (`done`, `left`) | tables of a chunked snapshot's saved plan |
//! | `riffle_snapshot_ranges_left` | | key ranges the saved plan has left to read |
//! | `riffle_commits_total` | | sink commits (each followed by a saved position) |
//! | `riffle_last_commit_timestamp_seconds` | | when the last commit happened |
//! | `riffle_source_position` | | the source's log position the server reported (Postgres LSN as a number) |
//! | `riffle_committed_position` | | the saved position (Postgres LSN as a number) |
//! | `riffle_lag_bytes` | | source position − saved position |
//! | `riffle_lag_seconds` | | age of the oldest change not yet committed (0 when caught up) |
//! | `riffle_errors_total` | `kind` | errors, `transient` or `definite` |
//! | `riffle_retries_total` | | restarts after a transient error |
//! | `riffle_healthy` | | 1 while the stream makes progress |
//! | `riffle_standby` | | 1 while `--standby` waits for the pipeline's lease |
//!
//! `/health` answers 200 `ok`, or 503 with the reason when no message has
//! come from the source for longer than the stall timeout, or riffle is
//! retrying a failure.

use riffle_core::source::SourceStats;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Default)]
pub struct Counters {
    pub events: BTreeMap<(String, String, &'static str), u64>,
    pub filtered: BTreeMap<String, u64>,
    pub enrich_misses: BTreeMap<String, u64>,
    pub sink_bytes: BTreeMap<(String, String), u64>,
    pub snapshot_rows: BTreeMap<String, u64>,
    pub snapshot_estimated: BTreeMap<String, u64>,
    pub snapshot_done: bool,
    /// `--standby` waiting for the lease.
    pub standby: bool,
    /// A chunked snapshot's saved plan: tables done, tables left, ranges left.
    pub snapshot_plan: Option<(usize, usize, usize)>,
    pub commits: u64,
    pub last_commit_ms: i64,
    pub committed_position: u64,
    /// Commit time of the oldest event written but not yet committed.
    pub oldest_uncommitted_ms: Option<i64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub retries: u64,
    /// The attempt of the transient error being retried, if one is. Not
    /// its text: `/health` answers anyone who can reach it, and error
    /// messages name users, hosts and databases (the log has the text).
    pub retrying: Option<u32>,
}

/// What `/health` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Why not, for the operator (no row values).
    Unhealthy(String),
}

pub struct Metrics {
    pub counters: Mutex<Counters>,
    pub source: Arc<SourceStats>,
    pub stall_after: Duration,
}

fn now_ms() -> i64 {
    crate::state::now_ms()
}

impl Metrics {
    pub fn new(source: Arc<SourceStats>, stall_after: Duration) -> Arc<Self> {
        Arc::new(Metrics { counters: Mutex::new(Counters::default()), source, stall_after })
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
        let mut c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut c)
    }

    /// Is the pipeline making progress?
    pub fn health(&self) -> Health {
        if let Some(attempt) = self.with(|c| c.retrying) {
            return Health::Unhealthy(format!("retrying a transient error (attempt {attempt}; riffle's log says which)"));
        }
        let last = self.source.last_message_ms();
        if last > 0 && now_ms() - last > self.stall_after.as_millis() as i64 {
            return Health::Unhealthy(format!("no message from the source for {} s", (now_ms() - last) / 1000));
        }
        Health::Healthy
    }

    pub fn lag_bytes(&self) -> u64 {
        let committed = self.with(|c| c.committed_position);
        self.source.server_position().saturating_sub(committed)
    }

    pub fn lag_seconds(&self) -> f64 {
        match self.with(|c| c.oldest_uncommitted_ms) {
            Some(ts) => ((now_ms() - ts).max(0) as f64) / 1000.0,
            None => 0.0,
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let lag_bytes = self.lag_bytes();
        let lag_seconds = self.lag_seconds();
        let healthy = self.health() == Health::Healthy;
        let source_pos = self.source.server_position();
        let c = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        series(
            &mut out,
            "riffle_events_total",
            "counter",
            "Events written to a sink.",
            c.events.iter().map(|((t, s, op), n)| format!("{{table=\"{}\",sink=\"{}\",op=\"{op}\"}} {n}", esc(t), esc(s))).collect(),
        );
        series(
            &mut out,
            "riffle_filtered_events_total",
            "counter",
            "Events a row filter dropped.",
            c.filtered.iter().map(|(t, n)| format!("{{table=\"{}\"}} {n}", esc(t))).collect(),
        );
        series(
            &mut out,
            "riffle_enrich_misses_total",
            "counter",
            "Enriched events whose join key found no reference row.",
            c.enrich_misses.iter().map(|(t, n)| format!("{{table=\"{}\"}} {n}", esc(t))).collect(),
        );
        series(
            &mut out,
            "riffle_sink_bytes_total",
            "counter",
            "Bytes written to a sink.",
            c.sink_bytes.iter().map(|((t, s), n)| format!("{{table=\"{}\",sink=\"{}\"}} {n}", esc(t), esc(s))).collect(),
        );
        series(
            &mut out,
            "riffle_snapshot_rows_total",
            "counter",
            "Rows copied by the snapshot.",
            c.snapshot_rows.iter().map(|(t, n)| format!("{{table=\"{}\"}} {n}", esc(t))).collect(),
        );
        series(
            &mut out,
            "riffle_snapshot_rows_estimated",
            "gauge",
            "The source's estimate of each table's rows.",
            c.snapshot_estimated.iter().map(|(t, n)| format!("{{table=\"{}\"}} {n}", esc(t))).collect(),
        );
        series(
            &mut out,
            "riffle_snapshot_done",
            "gauge",
            "1 once the snapshot is committed.",
            vec![format!(" {}", u8::from(c.snapshot_done))],
        );
        if let Some((done, left, ranges)) = c.snapshot_plan {
            series(
                &mut out,
                "riffle_snapshot_tables",
                "gauge",
                "Tables of the chunked snapshot's saved plan, done or left.",
                vec![format!("{{state=\"done\"}} {done}"), format!("{{state=\"left\"}} {left}")],
            );
            series(
                &mut out,
                "riffle_snapshot_ranges_left",
                "gauge",
                "Key ranges the saved plan has left to read.",
                vec![format!(" {ranges}")],
            );
        }
        series(&mut out, "riffle_commits_total", "counter", "Sink commits.", vec![format!(" {}", c.commits)]);
        series(
            &mut out,
            "riffle_last_commit_timestamp_seconds",
            "gauge",
            "When the last commit happened.",
            vec![format!(" {:.3}", c.last_commit_ms as f64 / 1000.0)],
        );
        series(
            &mut out,
            "riffle_source_position",
            "gauge",
            "The source's log position as the server reported it.",
            vec![format!(" {source_pos}")],
        );
        series(&mut out, "riffle_committed_position", "gauge", "The saved position.", vec![format!(" {}", c.committed_position)]);
        series(&mut out, "riffle_lag_bytes", "gauge", "Source position minus saved position.", vec![format!(" {lag_bytes}")]);
        series(&mut out, "riffle_lag_seconds", "gauge", "Age of the oldest change not yet committed.", vec![format!(" {lag_seconds:.3}")]);
        series(
            &mut out,
            "riffle_errors_total",
            "counter",
            "Errors by kind.",
            ["transient", "definite"].iter().map(|k| format!("{{kind=\"{k}\"}} {}", c.errors.get(k).copied().unwrap_or(0))).collect(),
        );
        series(&mut out, "riffle_retries_total", "counter", "Restarts after a transient error.", vec![format!(" {}", c.retries)]);
        series(&mut out, "riffle_healthy", "gauge", "1 while the stream makes progress.", vec![format!(" {}", u8::from(healthy))]);
        series(
            &mut out,
            "riffle_standby",
            "gauge",
            "1 while --standby waits for the pipeline's lease.",
            vec![format!(" {}", u8::from(c.standby))],
        );
        out
    }
}

/// One metric family: its HELP and TYPE lines, then `name{labels} value` lines.
fn series(out: &mut String, name: &str, kind: &str, help: &str, lines: Vec<String>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for l in lines {
        let _ = writeln!(out, "{name}{l}");
    }
}

/// Serves `/metrics` and `/health` until the process ends.
pub async fn serve(addr: std::net::SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: cannot listen ({e}); pick a free port"))?;
    tracing::info!(addr = %addr, "serving /metrics and /health");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { continue };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                // Read the request head (it may come in several packets).
                let mut buf = Vec::with_capacity(1024);
                let mut chunk = [0u8; 1024];
                let read_head = async {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                };
                if tokio::time::timeout(Duration::from_secs(5), read_head).await.is_err() {
                    return;
                }
                let n = buf.len();
                let request = String::from_utf8_lossy(&buf[..n]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, ctype, body) = match path {
                    "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                    "/health" | "/healthz" => match metrics.health() {
                        Health::Healthy => ("200 OK", "text/plain", "ok\n".to_string()),
                        Health::Unhealthy(why) => ("503 Service Unavailable", "text/plain", format!("unhealthy: {why}\n")),
                    },
                    _ => ("404 Not Found", "text/plain", "try /metrics or /health\n".to_string()),
                };
                let head =
                    format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}
