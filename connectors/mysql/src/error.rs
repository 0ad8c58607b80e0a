//! What went wrong reading MySQL/MariaDB, by what failed, and whether
//! retrying can help ([`MyError::kind`]).
//!
//! A variant caused by another error keeps it as its
//! [`std::error::Error::source`]; its own message says what riffle was
//! doing (and the fix, when there is one), so print the chain (`{:#}`,
//! [`riffle_core::error::chain`]) to see both: `a: b`. Messages name
//! tables, columns and positions, never a row's values.

use crate::connect::{is_transient_code, ConnectParams, MySslMode};
use crate::types::KNOWN_CHARSETS;
use riffle_core::{ErrorKind, Problem, SourceError, TableId};
use std::fmt;
use std::time::Duration;

/// The source URL's form, for messages.
const URL_FORM: &str = "mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE";

/// An error of the MySQL/MariaDB source.
#[derive(Debug, thiserror::Error)]
pub enum MyError {
    /// The source URL lacks a part, or has an option riffle does not know
    /// or support.
    #[error("invalid source URL {url}: {why}; expected {URL_FORM}")]
    Url { url: String, why: String },
    /// The source URL does not parse.
    #[error("invalid source URL {url}; expected {URL_FORM}")]
    UrlSyntax {
        url: String,
        #[source]
        source: url::ParseError,
    },
    /// `--until` other than `now`.
    #[error("--until {text}: a MySQL/MariaDB pipeline stops only at `now`")]
    Until { text: String },

    /// No connection within `connect_timeout`.
    #[error("connecting to {at}: timed out after {after:?}; check the host and port and that the server is running")]
    ConnectTimeout { at: String, after: Duration },
    /// The server, or the network, failed the connection (not a server
    /// error, not TLS).
    #[error("{at}: the connection failed; check the host and port and that the server is running")]
    Unreachable {
        at: String,
        #[source]
        source: MysqlError,
    },
    /// TLS could not be set up with the URL's `ssl-mode`.
    #[error(
        "{at}: TLS failed; with ssl-mode=verify_ca or verify_identity the server's certificate must be signed by the CA in ssl-ca \
         (verify_identity: and name the host); ssl-mode=required encrypts without checking; the server needs TLS configured \
         (have_ssl = YES)"
    )]
    Tls {
        at: String,
        #[source]
        source: MysqlError,
    },
    /// The server refused the login (error 1045).
    #[error(
        "{at} rejected the login for user {user:?}; check the password in the source URL or MYSQL_PWD{}",
        if *ssl_disabled { ", and whether the account REQUIREs SSL (then add ?ssl-mode=required)" } else { "" }
    )]
    LoginRejected {
        at: String,
        user: String,
        /// The URL asked for no TLS: the account may require it.
        ssl_disabled: bool,
        #[source]
        source: MysqlError,
    },
    /// The URL's database does not exist (error 1049).
    #[error("{at} has no such database; check the database name in the source URL")]
    UnknownDatabase {
        at: String,
        #[source]
        source: MysqlError,
    },
    /// The login lacks a privilege (errors 1044, 1142, 1227).
    #[error(
        "{at}: riffle's user needs SELECT, REPLICATION SLAVE and REPLICATION CLIENT (MariaDB: BINLOG MONITOR) \
         (GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%';)"
    )]
    Privileges {
        at: String,
        user: String,
        #[source]
        source: MysqlError,
    },
    /// The server cannot send the binlog from the saved position (error
    /// 1236): the file it needs was purged.
    #[error(
        "{at} cannot send the binlog from the saved position: the binlog it needs was purged, so changes since then are lost to \
         riffle; take a new snapshot (remove this pipeline's state file, see `riffle status`) and raise \
         binlog_expire_logs_seconds so it does not happen again"
    )]
    Purged {
        at: String,
        #[source]
        source: MysqlError,
    },
    /// Any other server error on a connection: retried when its code says
    /// the server is busy, restarting or dropped the session
    /// ([`is_transient_code`]).
    #[error("{at}: error {code}")]
    Server {
        at: String,
        code: u16,
        #[source]
        source: MysqlError,
    },

    /// A query failed; `what` says which. Retried unless the server
    /// answered with an error retrying cannot fix.
    #[error("{what}")]
    Query {
        what: String,
        #[source]
        source: MysqlError,
    },
    /// A query the login lacks the privilege for (errors 1044, 1142, 1227).
    #[error(
        "{what}; riffle's user needs SELECT on the tables, REPLICATION SLAVE, REPLICATION CLIENT (MariaDB: BINLOG MONITOR) and, \
         on MySQL, RELOAD (GRANT SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO …;)"
    )]
    QueryDenied {
        what: String,
        #[source]
        source: MysqlError,
    },
    /// Reading the server's state (version, grants, server id, table sizes,
    /// binlog files) failed: always retried, whatever the error.
    #[error("{what}")]
    Lookup {
        what: String,
        #[source]
        source: MysqlError,
    },

    /// Settings or privileges riffle needs for binlog replication are
    /// missing; each problem names the setting and its fix.
    #[error("{at} is not ready for binlog replication:\n{}", ProblemList(problems))]
    NotReady { at: String, problems: Vec<Problem> },
    /// Text columns in character sets the binlog decoder does not know
    /// (`db.table.column (charset)`).
    #[error(
        "columns in character sets riffle cannot decode from the binlog yet: {}; supported: {} and every set of characters \
         of at most 3 bytes (latin2, cp1251, koi8r, gbk, big5, sjis, ujis, euckr, …), read from the server's own tables. Convert them (ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4) or leave the tables out with --exclude",
        columns.join(", "),
        KNOWN_CHARSETS.join(", ")
    )]
    UnsupportedCharsets { columns: Vec<String> },
    /// A `--tables` pattern matched no table; `examples` are some the
    /// server has.
    #[error(
        "--tables {pattern}: {} {pattern} (the server has e.g. {}); tables are given as database.table, `*` matches any run of \
         characters",
        if *glob { "no table matches" } else { "table does not exist:" },
        if examples.is_empty() { "no tables".to_string() } else { examples.join(", ") }
    )]
    NoSuchTable { pattern: String, glob: bool, examples: Vec<String> },
    /// A selected table was dropped while riffle read it.
    #[error("table {table} no longer exists")]
    TableGone { table: TableId },
    /// The key an interrupted snapshot chunked a table by changed.
    #[error(
        "the snapshot of {table} was interrupted while chunked by key ({}), and its key is now ({}); \
         the chunks left cannot be found by the new key: restore the key, or start the pipeline over with another --name",
        .saved.join(", "), .now.join(", ")
    )]
    ChunkKeyChanged { table: String, saved: Vec<String>, now: Vec<String> },
    /// A chunk's last key did not come back as text.
    #[error("the key of {table} came back from the server as bytes that are not text")]
    KeyNotText { table: TableId },

    /// MySQL's `SHOW MASTER STATUS` gave no row at the snapshot.
    #[error("SHOW MASTER STATUS returned nothing: is log_bin on?")]
    NoMasterStatus,
    /// The server named no binlog file for the snapshot.
    #[error("the server reported no binlog position for the snapshot: is log_bin on?")]
    NoSnapshotPosition,
    /// The saved offset is another source's.
    #[error("the saved position is not a MySQL binlog position; this state belongs to another source")]
    NotMysqlPosition,
    /// The saved GTID set does not parse.
    #[error("the saved GTID set {gtid:?} is not valid")]
    BadGtidSet {
        gtid: String,
        #[source]
        source: std::io::Error,
    },
    /// A GTID resume landed in a binlog numbered below the saved one (a
    /// failover to a server numbered differently): positions would go
    /// backwards.
    #[error(
        "resuming by GTID landed in binlog {landed}, numbered below the saved {saved} (a failover to a server with other binlog \
         numbering?); riffle's positions would go backwards. Take a new snapshot into a new output directory (remove this \
         pipeline's state file)"
    )]
    GtidBehind { landed: String, saved: String },

    /// The binlog stream failed (not with a server error).
    #[error("binlog stream")]
    Stream {
        #[source]
        source: MysqlError,
    },
    /// The server closed the binlog stream.
    #[error("the server ended the binlog stream")]
    StreamEnded,
    /// Nothing came within the deadline, heartbeats included: the
    /// connection is presumed dead (a network path that drops packets
    /// silently never closes it).
    #[error("{what}: no answer from the server within {after:?}; the connection is presumed dead, reconnecting")]
    Silent { what: &'static str, after: std::time::Duration },
    /// A compressed event (MariaDB `log_bin_compress=ON`).
    #[error(
        "the binlog at {file}:{pos} holds a compressed event (log_bin_compress=ON), which riffle cannot read yet; \
         SET GLOBAL log_bin_compress = OFF; (and in my.cnf), then take a new snapshot"
    )]
    CompressedEvent { file: String, pos: u64 },
    /// An XA transaction.
    #[error(
        "the binlog at {file}:{pos} holds an XA transaction, which riffle does not support yet \
         (its rows would be emitted at PREPARE, before the outcome is known)"
    )]
    Xa { file: String, pos: u64 },
    /// Partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`).
    #[error("the binlog holds partial JSON updates (binlog_row_value_options=PARTIAL_JSON); set it to '' so rows carry whole values")]
    PartialJson,
    /// An event that does not decode.
    #[error("cannot decode a binlog event at {file}:{pos}")]
    BadEvent {
        file: String,
        pos: u64,
        #[source]
        source: std::io::Error,
    },
    /// A rows event without the table map before it.
    #[error("a rows event at {file}:{pos} has no table map")]
    NoTableMap { file: String, pos: u64 },
    /// A rows event whose images do not decode.
    #[error("cannot decode a row at {file}:{pos}")]
    BadRow {
        file: String,
        pos: u64,
        #[source]
        source: std::io::Error,
    },
    /// A row image with another number of values than the table has
    /// columns.
    #[error("a row of {table} has {values} values for {columns} columns: is binlog_row_image FULL?")]
    RowWidth { table: TableId, values: usize, columns: usize },
    /// A snapshot row whose packet does not hold the table's values.
    #[error("the server sent a row of {table} riffle cannot read: {why}")]
    BadSnapshotRow { table: TableId, why: String },

    /// A value of a column that does not decode (`from`: the snapshot or
    /// the binlog). A bug: riffle maps every type the server sends.
    #[error("cannot read column {column} ({source_type}) from {from}; this is a bug in riffle, please report it")]
    Decode { column: String, source_type: String, from: &'static str },
    /// A snapshot worker ended in a way riffle does not expect.
    #[error("{0}; this is a bug in riffle, please report it")]
    Unexpected(String),
}

impl MyError {
    /// Whether retrying can help, as each site decided before this type:
    /// the network, a timeout, a busy or restarting server and the binlog
    /// stream ending are transient; the rest is definite.
    pub fn kind(&self) -> ErrorKind {
        use MyError::*;
        let transient = match self {
            ConnectTimeout { .. } | Unreachable { .. } | Lookup { .. } | Stream { .. } | StreamEnded | Silent { .. } => true,
            Server { code, .. } => is_transient_code(*code),
            Query { source, .. } => source.code().is_none_or(is_transient_code),
            Url { .. }
            | UrlSyntax { .. }
            | Until { .. }
            | Tls { .. }
            | LoginRejected { .. }
            | UnknownDatabase { .. }
            | Privileges { .. }
            | Purged { .. }
            | QueryDenied { .. }
            | NotReady { .. }
            | UnsupportedCharsets { .. }
            | NoSuchTable { .. }
            | TableGone { .. }
            | ChunkKeyChanged { .. }
            | KeyNotText { .. }
            | NoMasterStatus
            | NoSnapshotPosition
            | NotMysqlPosition
            | BadGtidSet { .. }
            | GtidBehind { .. }
            | CompressedEvent { .. }
            | Xa { .. }
            | PartialJson
            | BadEvent { .. }
            | NoTableMap { .. }
            | BadRow { .. }
            | RowWidth { .. }
            | BadSnapshotRow { .. }
            | Decode { .. }
            | Unexpected(_) => false,
        };
        if transient {
            ErrorKind::Transient
        } else {
            ErrorKind::Definite
        }
    }

    /// A driver error on a connection to `p` (connecting, or the binlog
    /// connection's queries and stream), sorted by what to do about it.
    pub fn connection(p: &ConnectParams, e: mysql_async::Error) -> MyError {
        let at = p.redacted();
        let code = match &e {
            mysql_async::Error::Server(s) => Some(s.code),
            _ => None,
        };
        let source = MysqlError(e);
        match code {
            Some(1045) => MyError::LoginRejected { at, user: p.user.clone(), ssl_disabled: p.ssl_mode == MySslMode::Disabled, source },
            Some(1049) => MyError::UnknownDatabase { at, source },
            Some(1044 | 1142 | 1227) => MyError::Privileges { at, user: p.user.clone(), source },
            Some(1236) => MyError::Purged { at, source },
            Some(code) => MyError::Server { at, code, source },
            None => {
                let text = source.to_string();
                let tls = text.contains("certificate") || text.contains("Certificate") || text.contains("TLS") || text.contains("SSL");
                if p.ssl_mode != MySslMode::Disabled && tls {
                    MyError::Tls { at, source }
                } else {
                    MyError::Unreachable { at, source }
                }
            }
        }
    }

    /// A failed query (not a login), `what` saying which.
    pub fn query(what: impl Into<String>, e: mysql_async::Error) -> MyError {
        let what = what.into();
        match &e {
            mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1142 | 1227) => MyError::QueryDenied { what, source: MysqlError(e) },
            _ => MyError::Query { what, source: MysqlError(e) },
        }
    }

    /// A failed read of the server's state, retried whatever the error.
    pub fn lookup(what: impl Into<String>, e: mysql_async::Error) -> MyError {
        MyError::Lookup { what: what.into(), source: MysqlError(e) }
    }
}

impl From<MyError> for SourceError {
    fn from(e: MyError) -> SourceError {
        SourceError::typed(e.kind(), e)
    }
}

/// An error of the `mysql_async` driver or of the server, as riffle shows
/// it: a server error by its message (the variants that act on its code
/// show the code), a driver error by the driver's text.
///
/// It ends the chain: the driver's errors print their own causes in their
/// text, so following their `source()` would print each cause twice. The
/// driver's error is [`MysqlError::get`].
#[derive(Debug)]
pub struct MysqlError(pub mysql_async::Error);

impl MysqlError {
    /// The driver's error.
    pub fn get(&self) -> &mysql_async::Error {
        &self.0
    }

    /// The server's error code, when the server answered with an error.
    pub fn code(&self) -> Option<u16> {
        match &self.0 {
            mysql_async::Error::Server(s) => Some(s.code),
            _ => None,
        }
    }
}

impl fmt::Display for MysqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            mysql_async::Error::Server(s) => f.write_str(&s.message),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for MysqlError {}

/// Problems as an indented list, one a line.
struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::error::chain;

    #[test]
    fn a_character_set_riffle_cannot_decode_is_named_with_the_fix() {
        // No MariaDB set is refused any more; MySQL's gb18030 is.
        let text = MyError::UnsupportedCharsets { columns: vec!["shop.t.name (gb18030)".into()] }.to_string();
        assert!(text.contains("shop.t.name (gb18030)") && text.contains("utf16") && text.contains("gbk"), "{text}");
        assert!(text.contains("ALTER TABLE … CONVERT TO CHARACTER SET utf8mb4") && text.contains("--exclude"), "{text}");
    }

    fn server(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError { code, message: message.into(), state: "HY000".into() })
    }

    fn io(kind: std::io::ErrorKind) -> mysql_async::Error {
        mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(kind)))
    }

    fn params(url: &str) -> ConnectParams {
        ConnectParams::from_url(url, 1).unwrap()
    }

    #[test]
    fn kinds_follow_what_failed() {
        let p = params("mysql://u:secret@h/db");
        let tls = params("mysql://u:secret@h/db?ssl-mode=required");
        let definite = [
            MyError::connection(&p, server(1045, "Access denied")),
            MyError::connection(&p, server(1049, "Unknown database 'db'")),
            MyError::connection(&p, server(1142, "SELECT command denied")),
            MyError::connection(&p, server(1236, "Could not find first log file name in binary log index file")),
            MyError::connection(&p, server(1064, "syntax")),
            MyError::connection(&tls, mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)),
            MyError::query("copying shop.t", server(1146, "Table 'shop.t' doesn't exist")),
            MyError::query("listing tables", server(1227, "Access denied; you need the RELOAD privilege")),
            MyError::GtidBehind { landed: "mysql-bin.000001".into(), saved: "mysql-bin.000009".into() },
            MyError::Decode { column: "c".into(), source_type: "int".into(), from: "the binlog" },
            MyError::UnsupportedCharsets { columns: vec!["shop.t.name (cp1251)".into()] },
        ];
        for e in &definite {
            assert_eq!(e.kind(), ErrorKind::Definite, "{}", chain(e));
        }
        let transient = [
            MyError::connection(&p, io(std::io::ErrorKind::ConnectionRefused)),
            // Without TLS asked for, a TLS-sounding driver error is the network's.
            MyError::connection(&p, mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)),
            MyError::connection(&p, server(1053, "Server shutdown in progress")),
            MyError::query("copying shop.t", server(1213, "Deadlock found")),
            MyError::query("copying shop.t", io(std::io::ErrorKind::ConnectionReset)),
            // Always retried, even a server error that is not.
            MyError::lookup("reading the grants", server(1142, "denied")),
            MyError::ConnectTimeout { at: p.redacted(), after: Duration::from_secs(10) },
            MyError::StreamEnded,
        ];
        for e in &transient {
            assert_eq!(e.kind(), ErrorKind::Transient, "{}", chain(e));
        }
        let e = SourceError::from(MyError::connection(&p, server(1236, "purged")));
        assert_eq!(e.kind(), ErrorKind::Definite);
    }

    #[test]
    fn chains_show_the_cause_once_and_no_password() {
        let p = params("mysql://u:secret@h/db");
        let e = SourceError::from(MyError::connection(&p, server(1045, "Access denied for user 'u'")));
        let text = chain(&e);
        assert!(text.starts_with("mysql://u@h:3306/db rejected the login for user \"u\"; check the password"), "{text}");
        assert!(text.ends_with("REQUIREs SSL (then add ?ssl-mode=required): Access denied for user 'u'"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        let e = MyError::query("copying shop.t", server(1146, "Table 'shop.t' doesn't exist"));
        assert_eq!(chain(&e), "copying shop.t: Table 'shop.t' doesn't exist");
        let e = MyError::connection(&p, server(1064, "syntax"));
        assert_eq!(chain(&e), "mysql://u@h:3306/db: error 1064: syntax");
        let e = MyError::NotReady {
            at: p.redacted(),
            problems: vec![Problem { setting: "log_bin".into(), expected: "ON".into(), found: "OFF".into(), fix: "turn it on".into() }],
        };
        assert_eq!(
            e.to_string(),
            "mysql://u@h:3306/db is not ready for binlog replication:\n  - log_bin: expected ON, found OFF; fix: turn it on"
        );
    }
}
