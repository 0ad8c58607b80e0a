//! The command line, as the user typed it. [`crate::config`] turns it (and
//! the `--config` file) into a validated [`crate::config::Config`].

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "riffle",
    version,
    about = "Change-data-capture replication: a consistent snapshot, then every change with its before and after image",
    long_about = "riffle copies tables from PostgreSQL, MySQL or MariaDB in one consistent snapshot, then streams every insert, \
update, delete and truncate from logical replication or the binlog, with before and after images, to files (CSV, JSON lines, \
Avro or Parquet) on local disk, S3, Azure Blob / ADLS Gen2, GCS or HDFS, to Kafka (Debezium-compatible JSON, or Avro with a \
schema registry), or to standard output. It resumes after a crash or a restart without losing or duplicating a change.\n\n\
Exit codes: 0 done (also after SIGINT/SIGTERM, once the position is saved); 1 a definite error (bad configuration, \
missing privilege, server not set up for CDC, retries exhausted); 2 bad usage; 3 `riffle verify` (or `replicate --verify`) \
found the copy differs from the source.",
    after_help = "Examples:\n  \
riffle sync --source postgres://app@db/shop --tables 'public.*' --sink ./out --format csv\n  \
riffle replicate --source postgres://riffle@db/shop --tables public.orders --sink file:///data/cdc --format jsonl\n  \
riffle replicate --source mysql://riffle@db/shop --tables 'shop.*' --sink kafka://broker:9092 --name shop\n  \
riffle replicate --source postgres://riffle@db/shop --tables 'public.*' --format avro \\\n    \
--sink 'kafka://broker:9092?schema_registry=http://registry:8081&partitions=6'\n  \
riffle replicate --config pipeline.toml --until now\n  \
riffle replicate --config pipeline.toml --until now --verify\n  \
riffle verify --config pipeline.toml --json\n  \
riffle status --state .riffle"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More logs (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Fewer logs: warnings and errors only.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy the selected tables in one consistent snapshot to the sink(s), then exit.
    Sync(SyncArgs),
    /// Snapshot (unless a position is saved), then stream changes; --until stops.
    Replicate(ReplicateArgs),
    /// Show saved positions and, with a source, the slot's retained WAL or the binlog lag.
    Status(StatusArgs),
    /// Check the source and sinks are ready; print the fix for each failure (exit 0 only if all pass).
    Check(CheckArgs),
    /// List or drop riffle's replication slots and publications.
    Slots(SlotsArgs),
    /// Snapshot chosen tables of a pipeline again, while it streams (or at its next run); database sources only.
    Snapshot(SnapshotArgs),
    /// Compare the source with what the sinks hold (files, Kafka topics), at one exact source position (exit 3 on differences).
    Verify(VerifyArgs),
    /// Print a shell completion script: riffle completions bash > /etc/bash_completion.d/riffle
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): riffle man > /usr/local/share/man/man1/riffle.1
    Man,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Where the pipeline's saved positions live (as given to `riffle replicate`) [default: .riffle].
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<PathBuf>,

    #[command(flatten)]
    pub verify: VerifyFlags,
}

/// How `riffle verify` (and `replicate --verify`) reports.
#[derive(Debug, Clone, Args)]
pub struct VerifyFlags {
    /// Print the report as JSON (every differing key) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also print the differing rows' values, source and sink (the report then holds row values).
    #[arg(long)]
    pub show_values: bool,

    /// How long to wait for a running pipeline to reach the verify position, e.g. 30s, 5m [default: 5m].
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Tables to read again, `schema.table` globs among the pipeline's own. Repeatable.
    #[arg(long = "tables", short = 't', value_name = "GLOB", required = true)]
    pub tables: Vec<String>,

    /// The pipeline, by name (see `riffle status`).
    #[arg(long, required_unless_present = "config")]
    pub name: Option<String>,

    /// The pipeline, by its file (its name, or the default name of its source and tables).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the pipeline's state lives (as given to `riffle replicate`) [default: .riffle].
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Where the saved positions live: a directory, or a bucket prefix (s3://BUCKET/PREFIX, az://…,
    /// gs://…; credentials as for sinks) so a stateless job can resume [default: .riffle].
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SlotsArgs {
    #[command(subcommand)]
    pub action: SlotsAction,
}

#[derive(Debug, Subcommand)]
pub enum SlotsAction {
    /// List logical slots (riffle's are those with a publication of the same name).
    List {
        /// Source database: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
        #[arg(long, value_name = "URL")]
        source: String,
    },
    /// Drop a pipeline's slot and publication (the server then releases its WAL).
    Drop {
        /// Source database.
        #[arg(long, value_name = "URL")]
        source: String,
        /// The pipeline (slot) name.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// Flags every pipeline command shares.
#[derive(Debug, Clone, Default, Args)]
pub struct PipelineArgs {
    /// Pipeline file (TOML); flags override its values, `${VAR}` reads the environment.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A Debezium Postgres, MySQL or MariaDB connector's configuration (.json as Kafka Connect's
    /// REST API takes it, or .properties) read as this pipeline: connection, table and column
    /// lists, topic.prefix, the handling modes, slot.name; settings riffle cannot take are listed
    /// in one error. Give the Kafka brokers with --sink kafka://HOST:PORT (docs/debezium-migration.md).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub debezium_config: Option<PathBuf>,

    /// Source database: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE (password also from PGPASSWORD;
    /// ?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=CA.pem as libpq), or
    /// mysql://… / mariadb://… (password also from MYSQL_PWD; ?server_id=N), or Kafka topics riffle or
    /// Debezium wrote: kafka://HOST:PORT[,…]?topics=GLOB[,GLOB][&group=NAME][&start=earliest|latest]
    /// [&schema_registry=URL].
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,

    /// Where to write: a directory (`./out`, `file:///data/out`), `-` for stdout,
    /// s3://BUCKET/PREFIX, az://CONTAINER/PREFIX, abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX,
    /// gs://BUCKET/PREFIX, hdfs://NAMENODE:PORT/PATH (credentials from AWS_*/AZURE_*/GOOGLE_*
    /// variables; options such as ?endpoint=URL&region=R&partition_by=hour&compression=zstd), or
    /// kafka://HOST:PORT[,HOST:PORT][?OPTION=VALUE&…] (options: topic_prefix, partitions,
    /// replication_factor, create_topics, tombstones, schemas_enable, schema_registry,
    /// transaction_topic, value_encoding=debezium|riffle, Debezium's decimal.handling.mode,
    /// time.precision.mode, binary.handling.mode, interval.handling.mode,
    /// bigint.unsigned.handling.mode, skipped.operations, kafka.<librdkafka setting>). Repeatable.
    #[arg(long = "sink", value_name = "URL")]
    pub sinks: Vec<String>,

    /// Tables to capture, `schema.table` (MySQL: `database.table`), `*` and `?` as wildcards;
    /// no schema means public (MySQL: the URL's database). Repeatable.
    #[arg(long = "tables", short = 't', value_name = "GLOB")]
    pub tables: Vec<String>,

    /// Tables to leave out, same syntax as --tables. Repeatable.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Output format of the --sink flags [default: jsonl]
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<FormatArg>,

    /// Pipeline name; names the replication slot, publication, state and
    /// manifest [default: riffle_<database>_<hash of the table selection>].
    #[arg(long)]
    pub name: Option<String>,

    /// Leave a column out: SCHEMA.TABLE.COLUMN. Repeatable.
    #[arg(long = "exclude-column", value_name = "COLUMN")]
    pub exclude_columns: Vec<String>,

    /// Mask a column: SCHEMA.TABLE.COLUMN[=hash|redact] (hash: salted SHA-256
    /// from mask_salt or RIFFLE_MASK_SALT, equal values stay equal; redact: ****). Repeatable.
    #[arg(long = "mask", value_name = "COLUMN[=KIND]")]
    pub masks: Vec<String>,

    /// Keep only rows matching a predicate, e.g. "public.orders: location_id = 10 AND status IN ('paid')".
    /// Operators = != <> < <= > >= IN, NOT IN, IS [NOT] NULL, AND, OR, NOT. Repeatable (one per table).
    #[arg(long = "filter", value_name = "TABLE: PREDICATE")]
    pub filters: Vec<String>,

    /// Require whole before images: refuse tables that are not REPLICA IDENTITY FULL.
    #[arg(long)]
    pub full_before_images: bool,

    /// Serve Prometheus metrics (/metrics) and a health check (/health) on HOST:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// /health turns unhealthy after this long without a message from the source
    /// [default: three heartbeats, at least 90s].
    #[arg(long, value_name = "DURATION")]
    pub stall_timeout: Option<String>,

    /// Postgres: emit a logical heartbeat message this often so an idle or filtered
    /// database never pins WAL (0s turns it off) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<String>,

    /// Connections reading the snapshot at once, across and within tables (Postgres; MariaDB when
    /// their snapshots agree on one binlog position; MySQL reads with one)
    /// [default: the cores, at most 4, within the server's free connections].
    #[arg(long, value_name = "N")]
    pub snapshot_workers: Option<usize>,

    /// Rows per snapshot chunk: the unit read by one query and saved as progress,
    /// so an interrupted snapshot resumes after its last committed chunk (a Postgres table
    /// without a key is split into block ranges of about this many rows, which a later run
    /// does not resume: it reloads that table) [default: 8192 for Postgres, 100000 for
    /// MySQL/MariaDB].
    #[arg(long, value_name = "ROWS")]
    pub snapshot_chunk_rows: Option<u64>,

    /// In-band signals: a table (SCHEMA.TABLE, columns id, type, data, as Debezium's) whose
    /// inserts ask the running pipeline to act: type `execute-snapshot`, data
    /// {"data-collections": ["GLOB", …]} reads those tables again (as `riffle snapshot`).
    /// It joins the selection; its own rows go to no sink.
    #[arg(long, value_name = "TABLE")]
    pub signal_table: Option<String>,

    /// How long one round of a snapshot read while streaming (a resume, added tables,
    /// riffle snapshot) starts chunks before the stream goes on: about the longest the other
    /// tables' changes wait (each worker reads at least one chunk a round, and a Postgres table
    /// without a key read by block ranges finishes in its round) [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub snapshot_round: Option<String>,

    /// Roll output files at this many rows [default: 1000000].
    #[arg(long, value_name = "ROWS")]
    pub max_file_rows: Option<u64>,

    /// Roll output files at this many bytes [default: 134217728].
    #[arg(long, value_name = "BYTES")]
    pub max_file_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// CSV files with a header (flat: the row plus `__` metadata columns)
    Csv,
    /// JSON lines files; JSON messages on Kafka (the Debezium envelope)
    Jsonl,
    /// The same as jsonl
    Json,
    /// Avro: Kafka messages in the Confluent wire format (needs schema_registry), or
    /// Avro container files
    Avro,
    /// Parquet files (flat: the row plus `__` metadata columns)
    Parquet,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Leave out the `__` metadata columns of CSV: a plain copy of each table.
    #[arg(long)]
    pub no_metadata: bool,
}

#[derive(Debug, Args)]
pub struct ReplicateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Where the saved positions live: a directory, or a bucket prefix (s3://BUCKET/PREFIX, az://…,
    /// gs://…; credentials as for sinks) so a stateless job can resume [default: .riffle].
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<PathBuf>,

    /// Stop once caught up to this position and exit 0: `now` (the source's
    /// position when riffle starts; Kafka: each partition's end offset) or a Postgres LSN like
    /// 0/16B3748 (MySQL, Kafka: `now` only).
    #[arg(long, value_name = "now|POSITION")]
    pub until: Option<String>,

    /// How often sinks commit and the position is saved, e.g. 500ms, 5s, 1m [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub commit_interval: Option<String>,

    /// Wait for this pipeline's running process to end, then take over, instead of refusing to
    /// start (a second replica for high availability; the lease is a lock on the state file).
    #[arg(long)]
    pub standby: bool,

    /// Retries of a transient error (connection lost, server restart) before giving up [default: 10].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,

    /// Once stopped by --until, verify the sinks against the source (as `riffle verify`,
    /// catching up to the verify position first) and exit with its code: 0 exact, 3 differences.
    #[arg(long, requires = "until")]
    pub verify: bool,

    #[command(flatten)]
    pub verify_flags: VerifyFlags,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the saved positions live: a directory, or a bucket prefix (s3://BUCKET/PREFIX, az://…,
    /// gs://…; credentials as for sinks) so a stateless job can resume [default: .riffle].
    #[arg(long, value_name = "DIR|URL")]
    pub state: Option<PathBuf>,

    /// Only this pipeline.
    #[arg(long)]
    pub name: Option<String>,

    /// Also ask this source for the slot's confirmed position and retained WAL.
    #[arg(long, value_name = "URL")]
    pub source: Option<String>,

    /// Pipeline file (TOML), for its state directory, name and source.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
