//! The Postgres source's errors, by what failed, each knowing whether
//! retrying can help ([`PgError::kind`]).
//!
//! A variant with an underlying error carries it as its `#[source]` and does
//! not repeat it: `riffle_core::error::chain` (and `{:#}`) print it after
//! `: `. What the server said of a login or a missing privilege is kept as
//! a `message` field instead, because the fix follows it. No variant holds
//! a row's values: errors end up in logs, and logs never carry row data.

use crate::replication::client::ServerError;
use crate::tls::SslMode;
use riffle_core::error::Cause;
use riffle_core::position::ParseLsnError;
use riffle_core::{DataType, ErrorKind, Lsn, Problem, SourceError, TableId};
use std::path::PathBuf;
use std::time::Duration;

/// An error of the Postgres source. It becomes a [`SourceError`] of its
/// [`kind`](PgError::kind) at the crate's boundary (`?` does it).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    // ---- Configuration: the URL, `--until`, the saved state.
    /// `url` is shown without its password.
    #[error("invalid source URL {url}: {why}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    InvalidUrl { url: String, why: String },
    #[error("--until: expected `now` or a Postgres LSN")]
    InvalidUntil(#[source] ParseLsnError),
    #[error("--until {until}: a Postgres pipeline stops at an LSN")]
    UntilNotAnLsn { until: String },
    #[error(
        "the saved position ({offset}) is not a Postgres position: this state belongs to another source; use another --name or --state"
    )]
    NotAPostgresPosition { offset: String },

    // ---- Connecting and logging in.
    /// Nothing answers at the address (refused, reset, timed out), or the
    /// session broke while logging in.
    #[error("cannot connect to postgres at {at}; check the host and port and that the server is running")]
    Unreachable {
        at: String,
        #[source]
        source: DriverError,
    },
    #[error("connecting to postgres at {addr}: timed out after {after:?}")]
    ConnectTimeout { addr: String, after: Duration },
    #[error("postgres at {addr}: no answer to the TLS request or login within {after:?}")]
    LoginTimeout { addr: String, after: Duration },
    #[error("postgres at {at} rejected the password for user {user:?} ({message}); check the password in the source URL or PGPASSWORD")]
    PasswordRejected { at: String, user: String, message: String },
    #[error("postgres asked for a password for user {user:?} and none was given; put it in the URL or in PGPASSWORD")]
    NoPassword { user: String },
    #[error(
        "postgres at {at} accepts user {user:?} only over TLS ({message}); connect with sslmode=require (or verify-full with sslrootcert=CA.pem)"
    )]
    TlsOnlyUser { at: String, user: String, message: String },
    /// pg_hba.conf has no line for this login.
    #[error(
        "postgres at {at} refused the login ({message}); allow it in pg_hba.conf: riffle needs a `host DATABASE USER ADDRESS scram-sha-256` \
         line for its snapshot session and a `host replication USER ADDRESS scram-sha-256` line for its replication connection, \
         then `SELECT pg_reload_conf();`"
    )]
    LoginRefused { at: String, message: String },
    #[error("postgres at {at}: {message}; check the database name in the source URL")]
    NoSuchDatabase { at: String, message: String },
    #[error("postgres at {at}: {message}; grant the privilege: ALTER ROLE {} WITH REPLICATION;", crate::quote_ident(.user))]
    NoReplicationPrivilege { at: String, user: String, message: String },
    /// The server is starting up, shutting down or full (SQLSTATE 57P01,
    /// 57P02, 57P03, 53300): it will take the login later.
    #[error("postgres at {at}: {message}")]
    Unavailable { at: String, code: String, message: String },
    /// Any other error the server answered a login with.
    #[error("postgres at {at}: {message}")]
    ConnectRefused { at: String, code: String, message: String },
    #[error("postgres asked for SASL mechanisms {mechanisms:?}; riffle supports SCRAM-SHA-256 (without channel binding)")]
    SaslMechanisms { mechanisms: Vec<String> },
    #[error(
        "postgres asked for authentication method {method}, which riffle does not support; use scram-sha-256, md5 or password in pg_hba.conf"
    )]
    AuthMethod { method: i32 },
    #[error("SCRAM authentication")]
    Scram(#[source] std::io::Error),
    #[error("SCRAM authentication: the server's proof did not verify")]
    ScramProof(#[source] std::io::Error),

    // ---- TLS.
    #[error("TLS setup")]
    TlsSetup(#[source] rustls::Error),
    #[error(
        "sslmode={}: cannot read the CA certificate {}; give the CA that signed the server's certificate with sslrootcert=/path/to/ca.pem",
        .mode.name(), .path.display()
    )]
    RootCertUnreadable {
        mode: SslMode,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("sslrootcert {}", .path.display())]
    RootCert {
        path: PathBuf,
        #[source]
        source: Cause,
    },
    #[error("TLS: {host:?} is not a valid server name")]
    ServerName {
        host: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    #[error(
        "postgres at {at} does not accept TLS connections (ssl = off) and sslmode={} requires TLS; turn ssl on in postgresql.conf, \
         or use sslmode=prefer",
        .mode.name()
    )]
    TlsRefused { at: String, mode: SslMode },
    #[error(
        "postgres at {at}: the server's TLS certificate was not accepted; with sslmode={} it must be signed by the CA in sslrootcert{}; \
         check sslrootcert, or use sslmode=require to encrypt without checking the certificate",
        .mode.name(), if *.mode == SslMode::VerifyFull { " and name the host" } else { "" }
    )]
    Certificate {
        at: String,
        mode: SslMode,
        #[source]
        source: Cause,
    },
    #[error("postgres at {at} answered the TLS request with {answer:?}; is this a Postgres server?")]
    NotPostgres { at: String, answer: u8 },

    // ---- Queries on the regular session.
    /// A catalog read or the copy: definite when the server answered with
    /// an error, transient when the session broke.
    #[error("{what}")]
    Query {
        what: String,
        #[source]
        source: DriverError,
    },
    /// A statement whose failure is transient whatever the cause: reading
    /// a setting, a role or `pg_type`, the snapshot transaction, a
    /// heartbeat, `riffle slots`' statements.
    #[error("{what}")]
    Session {
        what: String,
        #[source]
        source: DriverError,
    },
    /// SQLSTATE 42501 on `what`, with the grant that fixes it.
    #[error("{what}: {message}; {fix}")]
    PermissionDenied { what: String, message: String, fix: String },

    // ---- The table selection.
    /// `examples` names a few tables the database has.
    #[error(
        "--tables {pattern}: {} {pattern} in this database {}; check the name (tables are given as schema.table, `*` matches any run of characters)",
        if .pattern.contains(['*', '?']) { "no table matches" } else { "table does not exist:" },
        examples_hint(.examples)
    )]
    NoSuchTable { pattern: String, examples: Vec<String> },
    #[error("table with oid {oid} no longer exists")]
    TableGone { oid: u32 },
    #[error(
        "the snapshot of {table} was interrupted while chunked by key ({}), and its key is now ({}); \
         the chunks left cannot be found by the new key: restore the key, or start the pipeline over with another --name",
        .saved.join(", "), .now.join(", ")
    )]
    ChunkKeyChanged { table: String, saved: Vec<String>, now: Vec<String> },

    // ---- The server is not set up for logical replication.
    #[error("postgres at {at} is not ready for logical replication:\n{}", problem_list(.problems))]
    NotReady { at: String, problems: Vec<Problem> },

    // ---- The slot and the publication against the saved position.
    #[error(
        "the saved position is {saved} in replication slot {slot:?}, but the slot no longer exists, so the changes since then are gone from the server; \
         take a new snapshot: remove this pipeline's state file (see `riffle status`) and run riffle again"
    )]
    SlotMissing { slot: String, saved: Lsn },
    #[error(
        "replication slot {slot:?} belongs to database {:?} with plugin {:?}, but this pipeline reads database {database:?} with pgoutput; \
         give this pipeline another --name",
        .slot_database.as_deref().unwrap_or("(physical)"),
        .plugin.as_deref().unwrap_or("(none)")
    )]
    SlotOfAnotherDatabase { slot: String, slot_database: Option<String>, plugin: Option<String>, database: String },
    #[error("replication slot {slot:?} is in use by another connection (another riffle with the same --name?)")]
    SlotInUse { slot: String },
    #[error(
        "replication slot {slot:?} has confirmed {confirmed} but this pipeline's saved position is {saved}: the changes in between were \
         consumed by someone else (another riffle with the same --name?) and are gone; take a new snapshot: remove this \
         pipeline's state file (see `riffle status`) and drop the slot"
    )]
    SlotAdvanced { slot: String, confirmed: Lsn, saved: Lsn },
    #[error(
        "replication slot {slot:?} already exists but this pipeline has no saved position for it (wrong --state, or another pipeline uses --name {pipeline:?}); \
         point --state at this pipeline's state, choose another --name, or drop the slot: SELECT pg_drop_replication_slot('{slot}');"
    )]
    SlotWithoutPosition { slot: String, pipeline: String },
    #[error(
        "publication {name:?} exists and publishes [{}], but this pipeline selects [{}]; \
         a changed selection needs a new snapshot: use another --name, or drop the old pipeline's slot and publication \
         (SELECT pg_drop_replication_slot({}); DROP PUBLICATION {};) and its state",
        .have.join(", "), .wanted.join(", "), crate::quote_literal(.name), crate::quote_ident(.name)
    )]
    PublicationMismatch { name: String, have: Vec<String>, wanted: Vec<String> },

    // ---- The walsender connection and its protocol.
    /// Reading or writing the replication connection.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("postgres closed the replication connection")]
    ConnectionClosed,
    #[error("postgres ended the replication stream")]
    StreamEnded,
    /// Nothing came back within the deadline: the connection is presumed
    /// dead (a network path that drops packets silently never closes it).
    #[error("{what}: no answer from postgres within {after:?}; the connection is presumed dead, reconnecting")]
    Silent { what: &'static str, after: Duration },
    /// The walsender refused a command (`what` is the command, or what it
    /// was for).
    #[error("{what}")]
    Command {
        what: String,
        #[source]
        source: ServerError,
    },
    /// An error in the middle of the replication stream.
    #[error("replication stream")]
    Stream(#[source] ServerError),
    /// A message the protocol does not allow here.
    #[error("{0}")]
    Unexpected(String),
    /// A message from the server riffle cannot read (framing, login, the
    /// stream, pgoutput); `what` names the message, never its content.
    #[error("malformed message from postgres: {what}; this is a bug in riffle or an unsupported server version")]
    Malformed { what: String },
    /// A position the server sent that is not an LSN; `what` says which.
    #[error("{what}")]
    ServerLsn {
        what: &'static str,
        #[source]
        source: ParseLsnError,
    },

    // ---- Rows and values.
    #[error("the copy of {table} ended in the middle of a row")]
    CopyTruncated { table: TableId },
    #[error("COPY of {table} returned a row with another number of columns than the table has")]
    CopyColumns { table: TableId },
    /// A value of a COPY row that does not decode; never the value itself.
    #[error("cannot read column {column} of {table} from its COPY: {source}")]
    CopyValue {
        table: TableId,
        column: String,
        #[source]
        source: Box<PgError>,
    },
    #[error("pgoutput sent {sent} columns for {table} but its relation has {expected}")]
    TupleColumns { table: TableId, sent: usize, expected: usize },
    /// `what` is `COPY returned text` or `pgoutput sent text`.
    #[error("{what} that is not UTF-8")]
    NotUtf8 { what: &'static str },
    /// Only the value's length is kept, never the value.
    #[error("cannot read a {ty:?} value from postgres' text form ({len} bytes); this is a bug in riffle, please report it")]
    Value { ty: DataType, len: usize },
    #[error("cannot parse a postgres array literal ({len} bytes) at byte {pos}")]
    ArrayLiteral { len: usize, pos: usize },
}

fn examples_hint(examples: &[String]) -> String {
    if examples.is_empty() {
        "(it has no tables)".into()
    } else {
        format!("(it has e.g. {})", examples.join(", "))
    }
}

fn problem_list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
}

impl PgError {
    /// Whether retrying can help: a broken or refused connection, a server
    /// that is starting up, a slot another connection holds are transient;
    /// configuration, privileges, slot conflicts and malformed data are not.
    pub fn kind(&self) -> ErrorKind {
        use PgError::*;
        match self {
            Unreachable { .. }
            | ConnectTimeout { .. }
            | LoginTimeout { .. }
            | Unavailable { .. }
            | Session { .. }
            | SlotInUse { .. }
            | Io { .. }
            | ConnectionClosed
            | StreamEnded
            | Silent { .. }
            | Stream(_)
            | CopyTruncated { .. } => ErrorKind::Transient,
            Query { source, .. } if source.0.as_db_error().is_none() => ErrorKind::Transient,
            Query { .. }
            | InvalidUrl { .. }
            | InvalidUntil(_)
            | UntilNotAnLsn { .. }
            | NotAPostgresPosition { .. }
            | PasswordRejected { .. }
            | NoPassword { .. }
            | TlsOnlyUser { .. }
            | LoginRefused { .. }
            | NoSuchDatabase { .. }
            | NoReplicationPrivilege { .. }
            | ConnectRefused { .. }
            | SaslMechanisms { .. }
            | AuthMethod { .. }
            | Scram(_)
            | ScramProof(_)
            | TlsSetup(_)
            | RootCertUnreadable { .. }
            | RootCert { .. }
            | ServerName { .. }
            | TlsRefused { .. }
            | Certificate { .. }
            | NotPostgres { .. }
            | PermissionDenied { .. }
            | NoSuchTable { .. }
            | TableGone { .. }
            | ChunkKeyChanged { .. }
            | NotReady { .. }
            | SlotMissing { .. }
            | SlotOfAnotherDatabase { .. }
            | SlotAdvanced { .. }
            | SlotWithoutPosition { .. }
            | PublicationMismatch { .. }
            | Command { .. }
            | Unexpected(_)
            | Malformed { .. }
            | ServerLsn { .. }
            | CopyColumns { .. }
            | CopyValue { .. }
            | TupleColumns { .. }
            | NotUtf8 { .. }
            | Value { .. }
            | ArrayLiteral { .. } => ErrorKind::Definite,
        }
    }

    /// A failed query on the regular session: with SQLSTATE 42501 a
    /// [`PgError::PermissionDenied`] with `fix`, otherwise a
    /// [`PgError::Query`].
    pub(crate) fn query(what: impl Into<String>, source: tokio_postgres::Error, fix: impl FnOnce() -> String) -> PgError {
        let what = what.into();
        match source.as_db_error() {
            Some(db) if db.code().code() == "42501" => PgError::PermissionDenied { what, message: db.message().to_string(), fix: fix() },
            _ => PgError::Query { what, source: DriverError(source) },
        }
    }

    pub(crate) fn session(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        let what = what.into();
        move |source| PgError::Session { what, source: DriverError(source) }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PgError {
        let what = what.into();
        move |source| PgError::Io { what, source }
    }
}

impl From<PgError> for SourceError {
    fn from(e: PgError) -> Self {
        SourceError::typed(e.kind(), e)
    }
}

/// The driver's error, shown once: a server error as its severity and
/// message only (its DETAIL may quote row values, which riffle never
/// prints), anything else with its cause. Ends the chain.
#[derive(Debug)]
pub struct DriverError(pub tokio_postgres::Error);

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(db) = self.0.as_db_error() {
            return write!(f, "{}: {}", db.severity(), db.message());
        }
        write!(f, "{}", self.0)?;
        let mut next = std::error::Error::source(&self.0);
        while let Some(c) = next {
            write!(f, ": {c}")?;
            next = c.source();
        }
        Ok(())
    }
}

impl std::error::Error for DriverError {}

/// Reading a column of a row the server sent, as an error rather than a
/// panic when the server answers with another type or fewer columns than
/// the query asks for (a Postgres-compatible server that differs, or bytes
/// altered on the way).
pub(crate) trait Col {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, idx: usize) -> Result<T, PgError>;
}

impl Col for tokio_postgres::Row {
    fn col<'a, T: tokio_postgres::types::FromSql<'a>>(&'a self, idx: usize) -> Result<T, PgError> {
        self.try_get(idx)
            .map_err(|e| PgError::Malformed { what: format!("the server answered a catalog query unexpectedly (column {idx}: {e})") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_shows_the_driver_error() {
        let params = crate::connect::ConnectParams::from_url("postgres://u:p@127.0.0.1:1/db?sslmode=disable").unwrap();
        let e = params.connect().await.unwrap_err();
        assert!(matches!(e, PgError::Unreachable { .. }), "{e:?}");
        assert_eq!(e.kind(), ErrorKind::Transient);
        let shown = riffle_core::error::chain(&e);
        assert!(shown.contains("127.0.0.1:1") && shown.contains("check the host and port"), "{shown}");
        // The driver's error follows, once.
        assert!(shown.contains("running: error connecting to server"), "{shown}");
        assert!(!shown.contains("p@"), "{shown}");
        let io = PgError::io("connecting to postgres at 127.0.0.1:1")(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(io.kind(), ErrorKind::Transient);
    }

    #[test]
    fn kinds_follow_what_failed() {
        let missing = PgError::SlotMissing { slot: "s".into(), saved: Lsn(1) };
        assert_eq!(missing.kind(), ErrorKind::Definite);
        assert_eq!(PgError::SlotInUse { slot: "s".into() }.kind(), ErrorKind::Transient);
        assert_eq!(
            PgError::Unavailable { at: "x".into(), code: "57P03".into(), message: "starting up".into() }.kind(),
            ErrorKind::Transient
        );
        assert_eq!(PgError::NoSuchDatabase { at: "x".into(), message: "no".into() }.kind(), ErrorKind::Definite);
        assert_eq!(PgError::Stream(ServerError::default()).kind(), ErrorKind::Transient);
        assert_eq!(PgError::Command { what: "START_REPLICATION".into(), source: ServerError::default() }.kind(), ErrorKind::Definite);
        assert_eq!(PgError::Malformed { what: "begin".into() }.kind(), ErrorKind::Definite);
        assert_eq!(PgError::CopyTruncated { table: TableId::new("public", "t") }.kind(), ErrorKind::Transient);
        // As a SourceError: the same kind and text.
        let source: SourceError = missing.into();
        assert_eq!(source.kind(), ErrorKind::Definite);
        assert!(source.to_string().starts_with("the saved position is 0/1 in replication slot \"s\""), "{source}");
    }

    #[test]
    fn a_cause_is_printed_once_after_the_message() {
        let e = PgError::Command {
            what: "starting replication from slot \"s\" at 0/1".into(),
            source: ServerError { code: "42704".into(), message: "replication slot \"s\" does not exist".into() },
        };
        assert_eq!(riffle_core::error::chain(&e), "starting replication from slot \"s\" at 0/1: replication slot \"s\" does not exist");
        let e = PgError::InvalidUntil("x".parse::<Lsn>().unwrap_err());
        assert_eq!(riffle_core::error::chain(&e), "--until: expected `now` or a Postgres LSN: expected an LSN like 0/16B3748, found \"x\"");
    }
}
