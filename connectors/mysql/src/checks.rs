//! What a MySQL/MariaDB server must offer before riffle reads its binlog.

use crate::connect::ConnectParams;
use crate::error::MyError;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

pub use riffle_core::Problem;

/// A global variable, `None` when the server does not have it.
async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, MyError> {
    // @@global works on MySQL 5.7, 8 and MariaDB alike (MySQL 8 removed
    // information_schema.GLOBAL_VARIABLES).
    match conn.query_first::<Option<String>, _>(format!("SELECT @@global.{name}")).await {
        Ok(v) => Ok(v.flatten()),
        Err(mysql_async::Error::Server(e)) if e.code == 1193 => Ok(None),
        Err(e) => Err(MyError::query(format!("reading {name}"), e)),
    }
}

/// Is this MariaDB (rather than MySQL)?
pub async fn is_mariadb(conn: &mut Conn) -> Result<bool, MyError> {
    let v: Option<String> = conn.query_first("SELECT VERSION()").await.map_err(|e| MyError::lookup("reading the version", e))?;
    Ok(v.unwrap_or_default().to_lowercase().contains("mariadb"))
}

/// Server settings and privileges riffle needs for binlog replication.
pub async fn replication_problems(conn: &mut Conn, params: &ConnectParams) -> Result<Vec<Problem>, MyError> {
    let mut problems = Vec::new();
    let conf = "in my.cnf under [mysqld], then restart the server";
    // @@global.log_bin reads 1/0.
    let log_bin = match variable(conn, "log_bin").await?.unwrap_or_default().as_str() {
        "1" => "ON".to_string(),
        "0" => "OFF".to_string(),
        other => other.to_string(),
    };
    if !log_bin.eq_ignore_ascii_case("ON") {
        problems.push(Problem {
            setting: "log_bin".into(),
            expected: "ON".into(),
            found: log_bin,
            fix: format!("set log_bin = mysql-bin and server_id = 1 {conf}"),
        });
    }
    for (name, want, dynamic) in [("binlog_format", "ROW", true), ("binlog_row_image", "FULL", true), ("binlog_row_metadata", "FULL", true)]
    {
        if let Some(found) = variable(conn, name).await? {
            if !found.eq_ignore_ascii_case(want) {
                problems.push(Problem {
                    setting: name.into(),
                    expected: want.into(),
                    found,
                    fix: if dynamic {
                        format!("SET GLOBAL {name} = '{want}'; and set {name} = {want} {conf}")
                    } else {
                        format!("set {name} = {want} {conf}")
                    },
                });
            }
        }
    }
    let grants: Vec<String> = conn.query("SHOW GRANTS FOR CURRENT_USER()").await.map_err(|e| MyError::lookup("reading the grants", e))?;
    let all = grants.join(" ").to_uppercase();
    let has = |p: &str| all.contains("ALL PRIVILEGES ON *.*") || all.contains(p);
    if !has("REPLICATION SLAVE") {
        problems.push(Problem {
            setting: format!("privileges of {}", params.user),
            expected: "REPLICATION SLAVE".into(),
            found: "not granted".into(),
            fix: format!("GRANT REPLICATION SLAVE ON *.* TO '{}'@'%';", params.user),
        });
    }
    if !(has("REPLICATION CLIENT") || has("BINLOG MONITOR") || has("SUPER")) {
        problems.push(Problem {
            setting: format!("privileges of {}", params.user),
            expected: "REPLICATION CLIENT (MariaDB: BINLOG MONITOR)".into(),
            found: "not granted".into(),
            fix: format!("GRANT REPLICATION CLIENT ON *.* TO '{}'@'%';", params.user),
        });
    }
    // Retention: a binlog must outlive a snapshot (and a stop).
    let expire_secs = match variable(conn, "binlog_expire_logs_seconds").await? {
        Some(v) => v.parse::<u64>().unwrap_or(0),
        None => variable(conn, "expire_logs_days").await?.and_then(|d| d.parse::<f64>().ok()).map(|d| (d * 86_400.0) as u64).unwrap_or(0),
    };
    if expire_secs > 0 {
        let rows: Option<u64> = conn
            .query_first("SELECT CAST(COALESCE(SUM(TABLE_ROWS), 0) AS UNSIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')")
            .await
            .map_err(|e| MyError::lookup("estimating table sizes", e))?;
        // A conservative 50,000 rows/s, doubled for headroom, at least a day.
        let needed = ((rows.unwrap_or(0) / 50_000) * 2).max(86_400);
        if expire_secs < needed {
            problems.push(Problem {
                setting: "binlog retention (binlog_expire_logs_seconds)".into(),
                expected: format!("at least {needed} s (a day, or twice the snapshot's expected time)"),
                found: format!("{expire_secs} s"),
                fix: format!("SET GLOBAL binlog_expire_logs_seconds = {}; (and in my.cnf)", needed.max(7 * 86_400)),
            });
        }
    }
    // Replica ids must be unique: riffle registers as one.
    let own: Option<u32> = conn.query_first("SELECT @@server_id").await.map_err(|e| MyError::lookup("reading server_id", e))?;
    if own == Some(params.server_id) {
        problems.push(Problem {
            setting: "server_id".into(),
            expected: format!("riffle's replica id ({}) to differ from the server's", params.server_id),
            found: format!("both are {}", params.server_id),
            fix: "pass another ?server_id=N in the source URL".into(),
        });
    }
    let replicas: Result<Vec<mysql_async::Row>, _> = conn.query("SHOW SLAVE HOSTS").await;
    if let Ok(rows) = replicas {
        let taken = rows.iter().any(|r| r.get::<u32, _>(0) == Some(params.server_id));
        if taken {
            problems.push(Problem {
                setting: "server_id".into(),
                expected: format!("no other replica using id {}", params.server_id),
                found: "a connected replica already uses it (another riffle with the same name?)".into(),
                fix: "pass another ?server_id=N in the source URL, or stop the other reader".into(),
            });
        }
    }
    Ok(problems)
}

/// Ends this process's previous binlog dump (connection `id`), whose
/// connection was lost without the server noticing, and waits until its
/// thread is gone (and with it the replica registered under riffle's
/// server_id). A user may always kill its own connections; one already
/// gone is fine.
pub async fn end_own_dump(conn: &mut Conn, session: u64) -> Result<(), MyError> {
    let (started, id) = (session >> 32, (session & 0xFFFF_FFFF) as u32);
    // Another server run: the id names someone else, if anyone.
    if server_started(conn).await?.abs_diff(started) > 2 {
        return Ok(());
    }
    // Only a binlog dump: after a server restart the id may name another
    // of this user's connections.
    let command: Option<String> = conn
        .exec_first("SELECT COMMAND FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
        .await
        .map_err(|e| MyError::lookup("reading the process list", e))?;
    if !command.is_some_and(|c| c.starts_with("Binlog Dump")) {
        return Ok(());
    }
    tracing::info!(connection = id, "ending this pipeline's previous binlog dump, whose connection was lost");
    if let Err(e) = conn.query_drop(format!("KILL CONNECTION {id}")).await {
        tracing::debug!(error = %riffle_core::error::chain(&e), "the previous binlog dump was already gone");
    }
    // A user sees its own threads in the process list without PROCESS.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        let alive: Option<u64> = conn
            .exec_first("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", (id,))
            .await
            .map_err(|e| MyError::lookup("reading the process list", e))?;
        if alive.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(())
}

/// When the server started, in seconds since the epoch by its own clock
/// (give or take a second).
pub async fn server_started(conn: &mut Conn) -> Result<u64, MyError> {
    let now: Option<u64> =
        conn.query_first("SELECT UNIX_TIMESTAMP()").await.map_err(|e| MyError::lookup("reading the server's clock", e))?;
    let uptime: Option<(String, u64)> =
        conn.query_first("SHOW GLOBAL STATUS LIKE 'Uptime'").await.map_err(|e| MyError::lookup("reading the server's uptime", e))?;
    Ok(now.unwrap_or(0).saturating_sub(uptime.map_or(0, |(_, u)| u)) & 0xFFFF_FFFF)
}

/// The server's binlog files and their sizes, oldest first.
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, MyError> {
    let rows: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.map_err(|e| MyError::lookup("SHOW BINARY LOGS", e))?;
    Ok(rows.iter().filter_map(|r| Some((r.get::<String, _>(0)?, r.get::<u64, _>(1).unwrap_or(0)))).collect())
}

/// Warns when the saved binlog file is the oldest the server still has: the
/// next purge would lose the position.
pub async fn warn_if_near_purge(conn: &mut Conn, file: &str) {
    if let Ok(logs) = binary_logs(conn).await {
        if logs.len() > 1 && logs.first().is_some_and(|(oldest, _)| oldest == file) {
            tracing::warn!(file, "the saved position is in the oldest binlog the server keeps; the next purge would lose it (raise binlog_expire_logs_seconds)");
        }
    }
}

/// Refuses tables with text columns in a character set the binlog decoder
/// does not know, rather than garble them: it knows
/// [`crate::types::KNOWN_CHARSETS`] and the sets the server's tables cover
/// (every set of characters at most 3 bytes long: [`crate::catalog`]; the snapshot
/// reads everything as utf8mb4; the binlog carries each column's own bytes).
pub async fn require_supported_charsets(conn: &mut Conn, tables: &[crate::catalog::SelectedTable]) -> Result<(), MyError> {
    let mut bad = Vec::new();
    for t in tables {
        for c in crate::catalog::load_columns(conn, &t.id).await? {
            let known = |cs: &&str| crate::types::KNOWN_CHARSETS.contains(cs) || c.server_charset.is_some();
            if let Some(cs) = c.charset.as_deref().filter(|cs| !known(cs)) {
                bad.push(format!("{}.{} ({cs})", t.id, c.column.name));
            }
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(MyError::UnsupportedCharsets { columns: bad })
}

pub async fn require_replication_ready(conn: &mut Conn, params: &ConnectParams) -> Result<(), MyError> {
    let problems = replication_problems(conn, params).await?;
    if problems.is_empty() {
        return Ok(());
    }
    Err(MyError::NotReady { at: params.redacted(), problems })
}
