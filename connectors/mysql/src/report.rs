//! What the MySQL/MariaDB source tells `riffle check` and `riffle status`:
//! the server's binlog settings and privileges, and how far behind the
//! binlog each pipeline's saved position is.

use crate::connect::ConnectParams;
use crate::{catalog, checks, default_server_id};
use mysql_async::prelude::Queryable;
use riffle_core::{glob_match, Check, Offset, Report, SavedPipeline, SourceError, SourceSpec, StatusReport, TableId};

/// Every check of `riffle check` for a MySQL/MariaDB source.
pub async fn check(spec: &SourceSpec) -> Result<Report, SourceError> {
    let params = ConnectParams::from_url(&spec.url, default_server_id(&spec.name))?;
    let mut report = Report { heading: format!("source {}", params.redacted()), checks: Vec::new() };
    let mut conn = match params.connect().await {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(Check::error("connection", &e));
            return Ok(report);
        }
    };
    report.checks.push(Check::passed("connection", format!("as {}", params.user)));
    match catalog::resolve_tables(&mut conn, &params.database, &spec.tables, &spec.exclude).await {
        Ok(tables) => {
            for t in tables {
                let key = match (t.has_primary_key, t.keyed) {
                    (true, _) => "primary key",
                    (false, true) => "no primary key: events keyed by its unique index over NOT NULL columns",
                    (false, false) => "no primary key or unique index over NOT NULL columns (events carry no key)",
                };
                report.checks.push(Check::passed(format!("table {}", t.id), format!("{key}, ~{} rows", t.estimated_rows)));
            }
        }
        Err(e) => report.checks.push(Check::error("tables", &e)),
    }
    let problems = checks::replication_problems(&mut conn, &params).await?;
    if problems.is_empty() {
        report.checks.push(Check::passed("binlog", "log_bin ON, binlog_format ROW, binlog_row_image FULL, privileges granted"));
    }
    report.checks.extend(problems.into_iter().map(Check::from));
    Ok(report)
}

/// The column names of the selected tables that match one of `wanted`
/// (globs), in their order: what the pipeline checks its table rules
/// against before it runs.
pub async fn columns(spec: &SourceSpec, wanted: &[String]) -> Result<Vec<(TableId, Vec<String>)>, SourceError> {
    let params = ConnectParams::from_url(&spec.url, default_server_id(&spec.name))?;
    let mut conn = params.connect().await?;
    let mut out = Vec::new();
    for t in catalog::resolve_tables_lenient(&mut conn, &params.database, &spec.tables, &spec.exclude).await? {
        if !wanted.iter().any(|g| glob_match(g, &t.id.to_string())) {
            continue;
        }
        let names: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (t.id.schema.as_str(), t.id.name.as_str()),
            )
            .await
            .map_err(|e| crate::MyError::query("listing a table's columns", e))?;
        out.push((t.id, names));
    }
    Ok(out)
}

/// For each pipeline: is its saved binlog file still on the server, and how
/// many bytes of binlog lie after its position.
pub async fn status(url: &str, pipelines: &[SavedPipeline]) -> Result<Vec<StatusReport>, SourceError> {
    let mut conn = ConnectParams::from_url(url, 0)?.connect().await?;
    let logs = checks::binary_logs(&mut conn).await?;
    Ok(pipelines
        .iter()
        .map(|p| {
            let (json, line) = match &p.offset {
                Some(Offset::Mysql { file, pos, .. }) => {
                    let present = logs.iter().any(|(f, _)| f == file);
                    let behind: u64 = logs
                        .iter()
                        .skip_while(|(f, _)| f != file)
                        .map(|(f, size)| if f == file { size.saturating_sub(*pos) } else { *size })
                        .sum();
                    let line = if present {
                        format!("{behind} bytes behind the server")
                    } else {
                        "the saved file is NO LONGER on the server (purged): take a new snapshot".to_string()
                    };
                    (serde_json::json!({ "saved_file_on_server": present, "behind_bytes": present.then_some(behind) }), Some(line))
                }
                _ => (serde_json::Value::Null, None),
            };
            StatusReport { key: "binlog", json, lines: line.map(|l| vec![("binlog", l)]).unwrap_or_default() }
        })
        .collect())
}
