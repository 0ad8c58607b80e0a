//! riffle's MySQL and MariaDB source.
//!
//! # Layout
//!
//! - [`connect`]: `mysql://`/`mariadb://` URLs and connection errors.
//! - [`checks`]: binlog settings and privileges riffle needs.
//! - [`catalog`]: table selection and columns.
//! - [`types`]: MySQL types to riffle's lossless values, from text and binlog.
//! - [`snapshot`]: the consistent initial copy and its binlog position.
//! - [`stream`]: binlog rows to change events.

pub mod catalog;
pub mod checks;
pub mod connect;
pub mod gtid;
pub mod rows;
pub mod snapshot;
pub mod stream;
pub mod types;

use connect::ConnectParams;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{Offset, Source, SourceError, SourceItem};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What the source should do.
#[derive(Debug, Clone)]
pub enum Mode {
    /// `riffle sync`: copy the tables in one consistent read.
    Sync,
    /// Snapshot unless `resume` is set, then stream the binlog;
    /// `until_now` stops at the end of the binlog.
    Replicate { resume: Option<Offset>, until_now: bool },
}

#[derive(Debug, Clone)]
pub struct MySourceConfig {
    pub url: String,
    pub name: String,
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    pub mode: Mode,
}

pub struct MySource {
    config: MySourceConfig,
    params: ConnectParams,
    stats: Arc<SourceStats>,
}

/// A replica server id derived from the pipeline name, so two pipelines on
/// one server do not collide (override with `?server_id=N`).
pub fn default_server_id(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    1_000_000 + h % 1_000_000_000
}

impl MySource {
    pub fn new(config: MySourceConfig) -> Result<Self, SourceError> {
        let params = ConnectParams::from_url(&config.url, default_server_id(&config.name))?;
        Ok(MySource { config, params, stats: Arc::default() })
    }

    pub fn set_mode(&mut self, mode: Mode) {
        self.config.mode = mode;
    }

    pub fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    pub fn params(&self) -> &ConnectParams {
        &self.params
    }

    async fn run_inner(&mut self, out: mpsc::Sender<Vec<SourceItem>>, stop: watch::Receiver<bool>) -> Result<RunEnd, SourceError> {
        let mut conn = self.params.connect().await?;
        tracing::info!(source = %self.params.redacted(), "connected");
        let mariadb = checks::is_mariadb(&mut conn).await?;
        let tables = catalog::resolve_tables(&mut conn, &self.params.database, &self.config.tables, &self.config.exclude).await?;
        let ctx = snapshot::Context {
            name: Arc::from(self.config.name.as_str()),
            connector: if mariadb { "mariadb" } else { "mysql" },
            server_id: self.params.server_id,
            stats: self.stats.clone(),
        };
        match self.config.mode.clone() {
            Mode::Sync => Ok(snapshot::copy_tables(&mut conn, &ctx, &tables, mariadb, false, &out, &stop).await?.0),
            Mode::Replicate { resume, until_now } => {
                checks::require_replication_ready(&mut conn, &self.params).await?;
                checks::require_supported_charsets(&mut conn, &tables).await?;
                let start = match resume {
                    Some(o) => o,
                    None => {
                        let (end, offset) = snapshot::copy_tables(&mut conn, &ctx, &tables, mariadb, true, &out, &stop).await?;
                        if end == RunEnd::Stopped {
                            return Ok(RunEnd::Stopped);
                        }
                        offset
                    }
                };
                drop(conn);
                let stream = stream::Stream { params: &self.params, ctx: &ctx, selected: &tables, mariadb };
                stream.run(start, until_now, out, stop).await
            }
        }
    }
}

impl Source for MySource {
    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        _durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        // The binlog needs no acknowledgement: the server keeps it by time
        // (binlog_expire_logs_seconds), not by reader.
        self.run_inner(out, stop).await
    }
}
