//! What a Postgres server must offer before riffle replicates from it. Each
//! problem names the setting, what riffle expected, what it found, and the fix.

use crate::catalog::SelectedTable;
use crate::connect::ConnectParams;
use crate::quote_ident;
use riffle_core::SourceError;
use std::fmt;
use tokio_postgres::Client;

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub expected: String,
    pub found: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}, found {}; fix: {}", self.setting, self.expected, self.found, self.fix)
    }
}

async fn setting(client: &Client, name: &str) -> Result<String, SourceError> {
    let row = client
        .query_one("SELECT current_setting($1)", &[&name])
        .await
        .map_err(|e| SourceError::transient(format!("reading setting {name}: {e}")))?;
    Ok(row.get(0))
}

/// Checks the server settings, the role's privileges and the tables'
/// replica identity for logical replication.
pub async fn replication_problems(client: &Client, params: &ConnectParams, tables: &[SelectedTable]) -> Result<Vec<Problem>, SourceError> {
    let mut problems = Vec::new();
    let wal_level = setting(client, "wal_level").await?;
    if wal_level != "logical" {
        problems.push(Problem {
            setting: "wal_level".into(),
            expected: "logical".into(),
            found: wal_level,
            fix: "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL".into(),
        });
    }
    for name in ["max_replication_slots", "max_wal_senders"] {
        let value = setting(client, name).await?;
        if value.parse::<i64>().unwrap_or(0) < 1 {
            problems.push(Problem {
                setting: name.into(),
                expected: "at least 1 (one per pipeline)".into(),
                found: value,
                fix: format!("ALTER SYSTEM SET {name} = 10; then restart PostgreSQL"),
            });
        }
    }
    let row = client
        .query_one(
            "SELECT r.rolsuper OR r.rolreplication OR coalesce(pg_has_role(current_user, 'rds_replication', 'member'), false) \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await;
    let can_replicate = match row {
        Ok(r) => r.get::<_, bool>(0),
        // rds_replication does not exist outside RDS.
        Err(_) => client
            .query_one("SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user", &[])
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(|e| SourceError::transient(format!("reading role attributes: {e}")))?,
    };
    if !can_replicate {
        problems.push(Problem {
            setting: format!("role {}", params.user),
            expected: "the REPLICATION attribute (or rds_replication on RDS)".into(),
            found: "no replication privilege".into(),
            fix: format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(&params.user)),
        });
    }
    for t in tables {
        let keyless = !t.has_primary_key && matches!(t.replica_identity, b'd' | b'n');
        let nothing = t.replica_identity == b'n';
        if keyless || nothing {
            problems.push(Problem {
                setting: format!("replica identity of {}", t.id),
                expected: "a primary key, or REPLICA IDENTITY FULL".into(),
                found: if nothing { "REPLICA IDENTITY NOTHING".into() } else { "no primary key and REPLICA IDENTITY DEFAULT".into() },
                fix: format!(
                    "its updates and deletes cannot be captured (and once published, Postgres would reject them); \
                     add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL;",
                    t.qualified()
                ),
            });
        }
    }
    Ok(problems)
}

/// Fails with every problem listed when the server is not ready.
pub async fn require_replication_ready(client: &Client, params: &ConnectParams, tables: &[SelectedTable]) -> Result<(), SourceError> {
    let problems = replication_problems(client, params, tables).await?;
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
    Err(SourceError::definite(format!("postgres at {} is not ready for logical replication:\n{}", params.redacted(), list.join("\n"))))
}
