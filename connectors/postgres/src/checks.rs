//! What a Postgres server must offer before riffle replicates from it. Each
//! problem names the setting, what riffle expected, what it found, and the fix.

use crate::catalog::SelectedTable;
use crate::connect::ConnectParams;
use crate::error::{Col, PgError};
use crate::quote_ident;
use riffle_core::{human_bytes, Check};
use tokio_postgres::Client;

pub use riffle_core::Problem;

async fn setting(client: &Client, name: &str) -> Result<String, PgError> {
    let row =
        client.query_one("SELECT current_setting($1)", &[&name]).await.map_err(PgError::session(format!("reading setting {name}")))?;
    row.col(0)
}

/// Checks the server settings, the role's privileges and the tables'
/// replica identity for logical replication.
pub async fn replication_problems(client: &Client, params: &ConnectParams, tables: &[SelectedTable]) -> Result<Vec<Problem>, PgError> {
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
        Ok(r) => r.col::<bool>(0)?,
        // rds_replication does not exist outside RDS.
        Err(_) => client
            .query_one("SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user", &[])
            .await
            .map_err(PgError::session("reading role attributes"))?
            .col::<bool>(0)?,
    };
    if !can_replicate {
        problems.push(Problem {
            setting: format!("role {}", params.user),
            expected: "the REPLICATION attribute (or rds_replication on RDS)".into(),
            found: "no replication privilege".into(),
            fix: format!("ALTER ROLE {} WITH REPLICATION;", quote_ident(&params.user)),
        });
    }
    for t in tables.iter().filter(|t| t.unlogged) {
        problems.push(Problem {
            setting: format!("persistence of {}", t.id),
            expected: "a logged table (changes in the WAL)".into(),
            found: "UNLOGGED".into(),
            fix: format!("ALTER TABLE {} SET LOGGED; or leave it out with --exclude {}", t.qualified(), t.id),
        });
    }
    for t in tables.iter().filter(|t| !t.unlogged) {
        let keyless = !t.has_primary_key && matches!(t.replica_identity, b'd' | b'n');
        let nothing = t.replica_identity == b'n';
        if keyless || nothing {
            problems.push(Problem {
                setting: format!("replica identity of {}", t.id),
                expected: "a primary key, or REPLICA IDENTITY FULL (or USING INDEX)".into(),
                found: if nothing { "REPLICA IDENTITY NOTHING".into() } else { "no primary key and REPLICA IDENTITY DEFAULT".into() },
                fix: format!(
                    "its updates and deletes cannot be captured (and once published, Postgres would reject them); \
                     add a primary key, or ALTER TABLE {} REPLICA IDENTITY FULL; (or REPLICA IDENTITY USING INDEX a unique index \
                     over NOT NULL columns)",
                    t.qualified()
                ),
            });
        }
    }
    Ok(problems)
}

/// Fails with every problem listed when the server is not ready.
pub async fn require_replication_ready(
    client: &Client,
    params: &ConnectParams,
    tables: &[SelectedTable],
    want_full_before_images: bool,
) -> Result<(), PgError> {
    let mut problems = replication_problems(client, params, tables).await?;
    if want_full_before_images {
        for t in tables.iter().filter(|t| t.replica_identity != b'f') {
            if !problems.iter().any(|p| p.setting == format!("replica identity of {}", t.id)) {
                problems.push(Problem {
                    setting: format!("replica identity of {}", t.id),
                    expected: "FULL (full before images were asked for)".into(),
                    found: "not FULL (key-only before images)".into(),
                    fix: format!("ALTER TABLE {} REPLICA IDENTITY FULL;", t.qualified()),
                });
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(PgError::NotReady { at: params.redacted(), problems })
}

/// Every check `riffle check` runs against a Postgres source: the server
/// settings, the role, each table's privileges and replica identity, the
/// publication and the slot.
pub async fn full_check(
    client: &Client,
    params: &ConnectParams,
    tables: &[SelectedTable],
    slot: &str,
    want_full_before_images: bool,
) -> Result<Vec<Check>, PgError> {
    let mut checks = Vec::new();
    let problems = replication_problems(client, params, tables).await?;
    let settings = ["wal_level", "max_replication_slots", "max_wal_senders"];
    for name in settings {
        let found = setting(client, name).await?;
        let outcome = match problems.iter().find(|p| p.setting == name) {
            Some(p) => Err(p.clone()),
            None => Ok(found),
        };
        checks.push(Check { name: name.into(), outcome });
    }
    let role = format!("role {}", params.user);
    checks.push(Check {
        name: role.clone(),
        outcome: match problems.iter().find(|p| p.setting == role) {
            Some(p) => Err(p.clone()),
            None => Ok("can replicate".into()),
        },
    });
    for t in tables {
        let can_select: bool = client
            .query_one("SELECT has_table_privilege($1::oid, 'SELECT')", &[&t.oid])
            .await
            .map_err(PgError::session("checking privileges"))?
            .col(0)?;
        let name = format!("table {}", t.id);
        let identity = problems
            .iter()
            .find(|p| p.setting == format!("replica identity of {}", t.id) || p.setting == format!("persistence of {}", t.id))
            .cloned();
        let outcome = if !can_select {
            Err(Problem {
                setting: format!("SELECT on {}", t.id),
                expected: "granted".into(),
                found: "not granted".into(),
                fix: format!("GRANT SELECT ON {} TO {};", t.qualified(), quote_ident(&params.user)),
            })
        } else if let Some(p) = identity {
            Err(p)
        } else if want_full_before_images && t.replica_identity != b'f' {
            Err(Problem {
                setting: format!("replica identity of {}", t.id),
                expected: "FULL (full before images were asked for)".into(),
                found: match t.replica_identity {
                    b'd' => "DEFAULT (key columns only)".into(),
                    b'i' => "USING INDEX (index columns only)".into(),
                    _ => "NOTHING".into(),
                },
                fix: format!("ALTER TABLE {} REPLICA IDENTITY FULL;", t.qualified()),
            })
        } else {
            let identity = match t.replica_identity {
                b'f' => "REPLICA IDENTITY FULL (whole before images)",
                b'i' => "REPLICA IDENTITY USING INDEX (index-only before images)",
                _ => "primary key (key-only before images)",
            };
            Ok(format!("readable, {identity}, ~{} rows", t.estimated_rows))
        };
        checks.push(Check { name, outcome });
    }
    checks.push(publication_check(client, params, tables, slot).await?);
    let slot_outcome = match crate::catalog::slot_info(client, slot).await? {
        None => Ok("not created yet (the first replicate creates it)".to_string()),
        Some(info) if info.database.as_deref() != Some(params.dbname.as_str()) || info.plugin.as_deref() != Some("pgoutput") => {
            Err(Problem {
                setting: format!("replication slot {slot}"),
                expected: format!("a pgoutput slot in database {}", params.dbname),
                found: format!("plugin {:?} in database {:?}", info.plugin.unwrap_or_default(), info.database.unwrap_or_default()),
                fix: "give this pipeline another --name".into(),
            })
        }
        Some(info) => Ok(format!(
            "{}, confirmed {}, retains {} of WAL",
            if info.active { "active" } else { "inactive" },
            info.confirmed_flush.unwrap_or_else(|| "-".into()),
            human_bytes(info.retained_bytes.unwrap_or(0).max(0) as u64)
        )),
    };
    checks.push(Check { name: format!("slot {slot}"), outcome: slot_outcome });
    Ok(checks)
}

async fn publication_check(client: &Client, params: &ConnectParams, tables: &[SelectedTable], name: &str) -> Result<Check, PgError> {
    let err = |e: tokio_postgres::Error| PgError::session("reading publications")(e);
    let exists = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name]).await.map_err(err)?.is_some();
    let mut wanted: Vec<String> = tables.iter().map(|t| t.id.to_string()).collect();
    wanted.sort();
    let outcome = if exists {
        let rows = client
            .query("SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", &[&name])
            .await
            .map_err(err)?;
        let have: Vec<String> = rows.iter().map(|r| r.col(0)).collect::<Result<_, _>>()?;
        if have == wanted {
            Ok(format!("exists, publishes the {} selected tables", have.len()))
        } else {
            Err(Problem {
                setting: format!("publication {name}"),
                expected: format!("[{}]", wanted.join(", ")),
                found: format!("[{}]", have.join(", ")),
                fix: format!(
                    "riffle replicate with this pipeline's saved state alters it (added tables are snapshotted, removed ones stop); \
                     a new pipeline needs another --name, or DROP PUBLICATION {};",
                    quote_ident(name)
                ),
            })
        }
    } else {
        // Creating it needs ownership of every table (or superuser).
        let not_owned: Vec<String> = {
            let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
            let rows = client
                .query(
                    "SELECT c.oid FROM pg_class c WHERE c.oid = ANY($1) AND NOT pg_has_role(current_user, c.relowner, 'USAGE') \
                     AND NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)",
                    &[&oids],
                )
                .await
                .map_err(err)?;
            let bad: Vec<u32> = rows.iter().map(|r| r.col(0)).collect::<Result<_, _>>()?;
            tables.iter().filter(|t| bad.contains(&t.oid)).map(|t| t.qualified()).collect()
        };
        if not_owned.is_empty() {
            Ok("missing; riffle will create it".into())
        } else {
            Err(Problem {
                setting: format!("publication {name}"),
                expected: "to exist, or tables riffle's user owns so it can create it".into(),
                found: format!("missing, and {} does not own {}", params.user, not_owned.join(", ")),
                fix: format!(
                    "as the tables' owner: CREATE PUBLICATION {} FOR TABLE {};",
                    quote_ident(name),
                    tables.iter().map(SelectedTable::qualified).collect::<Vec<_>>().join(", ")
                ),
            })
        }
    };
    Ok(Check { name: format!("publication {name}"), outcome })
}
