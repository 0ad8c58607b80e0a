//! The configured source: PostgreSQL or MySQL/MariaDB, chosen by the URL's
//! scheme. A closed set, so an enum rather than a trait object.

use crate::config::Config;
use anyhow::{bail, Result};
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{Offset, Source, SourceError, SourceItem};
use riffle_mysql::{MySource, MySourceConfig};
use riffle_postgres::{PgSource, PgSourceConfig, Until};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

pub enum AnySource {
    Postgres(PgSource),
    Mysql(MySource),
}

/// Is this a MySQL or MariaDB URL?
pub fn is_mysql_url(url: &str) -> bool {
    url.starts_with("mysql://") || url.starts_with("mariadb://")
}

impl AnySource {
    pub fn new(cfg: &Config) -> Result<Self> {
        if is_mysql_url(&cfg.source_url) {
            return Ok(AnySource::Mysql(MySource::new(MySourceConfig {
                url: cfg.source_url.clone(),
                name: cfg.name.clone(),
                tables: cfg.tables.clone(),
                exclude: cfg.exclude.clone(),
                mode: riffle_mysql::Mode::Sync,
            })?));
        }
        Ok(AnySource::Postgres(PgSource::new(PgSourceConfig {
            url: cfg.source_url.clone(),
            name: cfg.name.clone(),
            tables: cfg.tables.clone(),
            exclude: cfg.exclude.clone(),
            mode: riffle_postgres::Mode::Sync,
            heartbeat: cfg.heartbeat,
            full_before_images: cfg.full_before_images,
        })?))
    }

    /// Sets what the next run does: a one-shot copy (`replicate == None`),
    /// or replication from `resume`.
    pub fn set_job(&mut self, replicate: Option<(Option<Offset>, Option<riffle_core::Lsn>, Until)>) -> Result<()> {
        match self {
            AnySource::Postgres(s) => s.set_mode(match replicate {
                None => riffle_postgres::Mode::Sync,
                Some((resume, snapshot_interrupted, until)) => riffle_postgres::Mode::Replicate { resume, snapshot_interrupted, until },
            }),
            AnySource::Mysql(s) => s.set_mode(match replicate {
                None => riffle_mysql::Mode::Sync,
                Some((_, _, Until::Lsn(l))) => bail!("--until {l}: a MySQL/MariaDB pipeline stops only at `now`"),
                Some((resume, _, until)) => riffle_mysql::Mode::Replicate { resume, until_now: until == Until::Now },
            }),
        }
        Ok(())
    }

    pub fn stats(&self) -> Arc<SourceStats> {
        match self {
            AnySource::Postgres(s) => s.stats(),
            AnySource::Mysql(s) => s.stats(),
        }
    }
}

impl Source for AnySource {
    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        match self {
            AnySource::Postgres(s) => s.run(out, durable, stop).await,
            AnySource::Mysql(s) => s.run(out, durable, stop).await,
        }
    }
}
