//! What the Postgres source tells `riffle check` and `riffle status`: the
//! server's readiness, and how much WAL each pipeline's slot holds back.

use crate::catalog;
use crate::checks::full_check;
use crate::connect::ConnectParams;
use crate::object_name;
use riffle_core::{glob_match, human_bytes, Check, Problem, Report, SavedPipeline, SourceError, SourceSpec, StatusReport, TableId};

/// Every check of `riffle check` for a Postgres source. The server and role
/// checks run even when the table selection is wrong; a saved position
/// whose slot is gone is reported (its changes are lost).
pub async fn check(spec: &SourceSpec, saved: Option<&SavedPipeline>) -> Result<Report, SourceError> {
    let params = ConnectParams::from_url(&spec.url)?;
    let mut report = Report { heading: format!("source {}", params.redacted()), checks: Vec::new() };
    let client = match params.connect().await {
        Ok(c) => c,
        Err(e) => {
            report.checks.push(Check::error("connection", &e));
            return Ok(report);
        }
    };
    report.checks.push(Check::passed("connection", format!("as {}", params.user)));
    let tables = match catalog::resolve_tables(&client, &spec.tables, &spec.exclude).await {
        Ok(t) => t,
        Err(e) => {
            report.checks.push(Check::error("tables", &e));
            Vec::new()
        }
    };
    let slot = object_name(&spec.name);
    report.checks.extend(full_check(&client, &params, &tables, &slot, spec.full_before_images).await?);
    if let Some(saved) = saved.filter(|s| s.offset.is_some()) {
        if catalog::slot_info(&client, &slot).await?.is_none() {
            report.checks.push(Check::from(Problem {
                setting: format!("slot {slot}"),
                expected: "to exist: a position is saved for this pipeline".into(),
                found: "no such slot (the changes since the saved position are gone)".into(),
                fix: format!("take a new snapshot: remove {}", saved.location),
            }));
        }
    }
    Ok(report)
}

/// The column names of the selected tables that match one of `wanted`
/// (globs), in their order, as the stream sends them (generated columns
/// left out): what the pipeline checks its table rules against before it
/// runs.
pub async fn columns(spec: &SourceSpec, wanted: &[String]) -> Result<Vec<(TableId, Vec<String>)>, SourceError> {
    let client = ConnectParams::from_url(&spec.url)?.connect().await?;
    let mut out = Vec::new();
    for t in catalog::resolve_tables_lenient(&client, &spec.tables, &spec.exclude).await? {
        if !wanted.iter().any(|g| glob_match(g, &t.id.to_string())) {
            continue;
        }
        let rows = client
            .query(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
                 AND attgenerated = '' ORDER BY attnum",
                &[&t.oid],
            )
            .await
            .map_err(crate::error::PgError::session("listing a table's columns"))?;
        out.push((t.id, rows.iter().map(|r| r.get::<_, String>(0)).collect()));
    }
    Ok(out)
}

/// Each pipeline's slot: whether it is active, what it confirmed, and how
/// much WAL it keeps on the server.
pub async fn status(url: &str, pipelines: &[SavedPipeline]) -> Result<Vec<StatusReport>, SourceError> {
    let client = ConnectParams::from_url(url)?.connect().await?;
    let mut out = Vec::with_capacity(pipelines.len());
    for p in pipelines {
        let name = object_name(&p.name);
        let report = match catalog::slot_info(&client, &name).await? {
            Some(info) => {
                let line = format!(
                    "{name} ({}), confirmed {}, retains {} bytes of WAL",
                    if info.active { "active" } else { "inactive" },
                    info.confirmed_flush.as_deref().unwrap_or("-"),
                    info.retained_bytes.map(|b| b.to_string()).unwrap_or_else(|| "?".into())
                );
                StatusReport {
                    key: "slot",
                    json: serde_json::json!({
                        "name": name,
                        "active": info.active,
                        "confirmed_flush_lsn": info.confirmed_flush,
                        "retained_wal_bytes": info.retained_bytes,
                    }),
                    lines: vec![("slot", line)],
                }
            }
            None => StatusReport {
                key: "slot",
                json: serde_json::json!({ "name": name, "missing": true }),
                lines: vec![("slot", format!("{name} is MISSING on the server"))],
            },
        };
        out.push(report);
    }
    Ok(out)
}

/// `1.5 GiB` of WAL a slot retains, for `riffle slots list`.
pub(crate) fn retained(bytes: Option<i64>) -> String {
    human_bytes(bytes.unwrap_or(0).max(0) as u64)
}
