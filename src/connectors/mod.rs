//! The one place the binary names the systems riffle connects to: which
//! connector a URL picks, and the dispatch to it (sinks in [`sinks`], Debezium
//! connector configurations read as pipelines in [`debezium_config`]). Everything a
//! connector knows (its URL options, checks, status, how it snapshots and
//! streams) lives in its crate under `connectors/`; the rest of `src/`
//! speaks only riffle_core's vocabulary.
//!
//! Adding a source: a variant in [`AnySource`] and [`SourceKind`], and an
//! arm in each `match` below; adding a sink: [`sinks`] (see
//! docs/architecture.md).

pub mod debezium_config;
pub mod sinks;

use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{Offset, Report, SavedPipeline, Source, SourceError, SourceItem, SourceSpec, StartMode, StatusReport, TableId, Until};
use riffle_kafka::KafkaSource;
use riffle_mysql::MySource;
use riffle_postgres::PgSource;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// `riffle slots` is Postgres' own command.
pub use riffle_postgres::slots as pg_slots;

/// Which connector reads a source URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Postgres,
    Mysql,
    Kafka,
}

/// The source URL forms, for messages.
pub const SOURCE_SCHEMES: &str = "a postgres://, postgresql://, mysql://, mariadb:// or kafka:// URL";

impl SourceKind {
    pub fn of(url: &str) -> Option<SourceKind> {
        let scheme = url.split_once("://")?.0;
        match scheme {
            "postgres" | "postgresql" => Some(SourceKind::Postgres),
            "mysql" | "mariadb" => Some(SourceKind::Mysql),
            "kafka" => Some(SourceKind::Kafka),
            _ => None,
        }
    }

    /// Does this source take a snapshot of its tables (a database), so that
    /// `riffle snapshot` can ask it to read some again? (Kafka: its topics
    /// hold what there is.)
    pub fn takes_snapshots(self) -> bool {
        !matches!(self, SourceKind::Kafka)
    }

    fn require(url: &str) -> Result<SourceKind, SourceError> {
        SourceKind::of(url).ok_or_else(|| {
            SourceError::definite(format!("source: expected {SOURCE_SCHEMES}, found {:?}", riffle_core::url::redact_url(url)))
        })
    }

    /// `--until POSITION` in this source's own form.
    pub fn parse_position(self, text: &str) -> Result<Offset, SourceError> {
        match self {
            SourceKind::Postgres => riffle_postgres::parse_position(text),
            SourceKind::Mysql => riffle_mysql::parse_position(text),
            SourceKind::Kafka => Err(SourceError::definite(format!(
                "--until {text:?}: a Kafka source stops at `now` (each partition's end offset when it starts)"
            ))),
        }
    }
}

/// The configured source. A closed set, so an enum rather than a trait
/// object (the [`Source`] trait's `run` returns `impl Future`).
pub enum AnySource {
    Postgres(PgSource),
    Mysql(MySource),
    Kafka(Box<KafkaSource>),
}

impl AnySource {
    pub fn new(spec: &SourceSpec) -> Result<Self, SourceError> {
        Ok(match SourceKind::require(&spec.url)? {
            SourceKind::Postgres => AnySource::Postgres(PgSource::new(spec)?),
            SourceKind::Mysql => AnySource::Mysql(MySource::new(spec)?),
            SourceKind::Kafka => AnySource::Kafka(Box::new(KafkaSource::new(spec)?)),
        })
    }
}

impl Source for AnySource {
    fn prepare(&mut self, start: StartMode, until: Until) -> Result<(), SourceError> {
        match self {
            AnySource::Postgres(s) => s.prepare(start, until),
            AnySource::Mysql(s) => s.prepare(start, until),
            AnySource::Kafka(s) => s.prepare(start, until),
        }
    }

    fn sinks_hold(&mut self, through: Option<riffle_core::Position>) {
        match self {
            AnySource::Postgres(s) => s.sinks_hold(through),
            AnySource::Mysql(s) => s.sinks_hold(through),
            AnySource::Kafka(s) => s.sinks_hold(through),
        }
    }

    fn stats(&self) -> Arc<SourceStats> {
        match self {
            AnySource::Postgres(s) => s.stats(),
            AnySource::Mysql(s) => s.stats(),
            AnySource::Kafka(s) => s.stats(),
        }
    }

    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        durable: watch::Receiver<Option<Offset>>,
        stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        match self {
            AnySource::Postgres(s) => s.run(out, durable, stop).await,
            AnySource::Mysql(s) => s.run(out, durable, stop).await,
            AnySource::Kafka(s) => s.run(out, durable, stop).await,
        }
    }
}

/// The column names of the source's selected tables that match `wanted`
/// (globs), for the pipeline's checks of its table rules before it runs;
/// `None` for a source without a catalog to ask (Kafka: each event brings
/// its table's schema).
pub async fn table_columns(spec: &SourceSpec, wanted: &[String]) -> Result<Option<Vec<(TableId, Vec<String>)>>, SourceError> {
    match SourceKind::require(&spec.url)? {
        SourceKind::Postgres => riffle_postgres::report::columns(spec, wanted).await.map(Some),
        SourceKind::Mysql => riffle_mysql::report::columns(spec, wanted).await.map(Some),
        SourceKind::Kafka => Ok(None),
    }
}

/// `riffle check` for the source; `saved` is the pipeline's state, if any.
pub async fn check_source(spec: &SourceSpec, saved: Option<&SavedPipeline>) -> Result<Report, SourceError> {
    match SourceKind::require(&spec.url)? {
        SourceKind::Postgres => riffle_postgres::report::check(spec, saved).await,
        SourceKind::Mysql => riffle_mysql::report::check(spec).await,
        SourceKind::Kafka => riffle_kafka::source::report::check(spec).await,
    }
}

/// `riffle status --source URL`: what the server says of each pipeline.
pub async fn source_status(url: &str, pipelines: &[SavedPipeline]) -> Result<Vec<StatusReport>, SourceError> {
    match SourceKind::require(url)? {
        SourceKind::Postgres => riffle_postgres::report::status(url, pipelines).await,
        SourceKind::Mysql => riffle_mysql::report::status(url, pipelines).await,
        SourceKind::Kafka => riffle_kafka::source::report::status(url, pipelines).await,
    }
}
