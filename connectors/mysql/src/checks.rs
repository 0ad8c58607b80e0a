//! What a MySQL/MariaDB server must offer before riffle reads its binlog.

use crate::connect::ConnectParams;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use riffle_core::SourceError;

/// One failed check: the setting, what riffle expected, what it found, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub expected: String,
    pub found: String,
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, found {}; fix: {}", self.setting, self.expected, self.found, self.fix)
    }
}

async fn variable(conn: &mut Conn, name: &str) -> Result<Option<String>, SourceError> {
    let row: Option<(String, String)> = conn
        .exec_first(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME = ?",
            (name.to_uppercase(),),
        )
        .await
        .map_err(|e| SourceError::transient(format!("reading {name}: {e}")))?;
    Ok(row.map(|(_, v)| v))
}

/// Is this MariaDB (rather than MySQL)?
pub async fn is_mariadb(conn: &mut Conn) -> Result<bool, SourceError> {
    let v: Option<String> =
        conn.query_first("SELECT VERSION()").await.map_err(|e| SourceError::transient(format!("reading the version: {e}")))?;
    Ok(v.unwrap_or_default().to_lowercase().contains("mariadb"))
}

/// Server settings and privileges riffle needs for binlog replication.
pub async fn replication_problems(conn: &mut Conn, params: &ConnectParams) -> Result<Vec<Problem>, SourceError> {
    let mut problems = Vec::new();
    let conf = "in my.cnf under [mysqld], then restart the server";
    let log_bin = variable(conn, "log_bin").await?.unwrap_or_default();
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
    let grants: Vec<String> =
        conn.query("SHOW GRANTS FOR CURRENT_USER()").await.map_err(|e| SourceError::transient(format!("reading the grants: {e}")))?;
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
    Ok(problems)
}

pub async fn require_replication_ready(conn: &mut Conn, params: &ConnectParams) -> Result<(), SourceError> {
    let problems = replication_problems(conn, params).await?;
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    Err(SourceError::definite(format!("{} is not ready for binlog replication:\n{}", params.redacted(), list.join("\n"))))
}
