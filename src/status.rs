//! `riffle status`: what each pipeline saved, and what its slot holds back.

use crate::cli::StatusArgs;
use crate::state::{now_ms, PipelineState, StateStore};
use anyhow::Result;
use riffle_postgres::{catalog, connect::ConnectParams, object_name};
use std::path::PathBuf;

pub async fn run(args: &StatusArgs) -> Result<()> {
    let file = match &args.config {
        Some(p) => Some(crate::config::load_file(p)?),
        None => None,
    };
    let dir = args
        .state
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.state.as_ref().map(|s| s.dir.clone())))
        .unwrap_or_else(|| PathBuf::from(".riffle"));
    let name = args.name.clone().or_else(|| file.as_ref().and_then(|f| f.name.clone()));
    let source = args.source.clone().or_else(|| file.as_ref().and_then(|f| f.source.as_ref().and_then(|s| s.url.clone())));
    let store = StateStore::new(&dir)?;
    let mut states = store.list()?;
    if let Some(n) = &name {
        states.retain(|s| &s.name == n);
    }
    let mut rows = Vec::new();
    if let Some(url) = source.as_deref().filter(|u| crate::source::is_mysql_url(u)) {
        // MySQL/MariaDB: no slot; how far behind the binlog each pipeline is.
        let params = riffle_mysql::connect::ConnectParams::from_url(url, 0)?;
        let mut conn = params.connect().await?;
        let logs = riffle_mysql::checks::binary_logs(&mut conn).await?;
        for s in &states {
            let info = match &s.offset {
                Some(riffle_core::Offset::Mysql { file, pos, .. }) => {
                    let present = logs.iter().any(|(f, _)| f == file);
                    let behind: u64 = logs
                        .iter()
                        .skip_while(|(f, _)| f != file)
                        .map(|(f, size)| if f == file { size.saturating_sub(*pos) } else { *size })
                        .sum();
                    serde_json::json!({ "saved_file_on_server": present, "behind_bytes": if present { Some(behind) } else { None } })
                }
                _ => serde_json::Value::Null,
            };
            rows.push((s, info));
        }
        return print_rows(args, &store, rows);
    }
    let client = match &source {
        Some(url) => {
            let params = ConnectParams::from_url(url)?;
            Some(params.connect().await?)
        }
        None => None,
    };
    for s in &states {
        let mut slot = serde_json::Value::Null;
        if let Some(c) = &client {
            if let Some(info) = catalog::slot_info(c, &object_name(&s.name)).await? {
                slot = serde_json::json!({
                    "name": object_name(&s.name),
                    "active": info.active,
                    "confirmed_flush_lsn": info.confirmed_flush,
                    "retained_wal_bytes": info.retained_bytes,
                });
            } else {
                slot = serde_json::json!({ "name": object_name(&s.name), "missing": true });
            }
        }
        rows.push((s, slot));
    }
    print_rows(args, &store, rows)
}

fn print_rows(args: &StatusArgs, store: &StateStore, rows: Vec<(&PipelineState, serde_json::Value)>) -> Result<()> {
    if args.json {
        let out: Vec<serde_json::Value> = rows.iter().map(|(s, slot)| json_row(s, slot)).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no pipelines in {}", store.describe());
        return Ok(());
    }
    for (s, slot) in rows {
        println!("{}", s.name);
        println!("  source          {}", s.source);
        println!("  tables          {}", s.tables.join(", "));
        println!(
            "  snapshot        {}",
            if s.snapshot == crate::state::SnapshotState::Done { "done" } else { "in progress (restarts on next run)" }
        );
        println!("  offset          {}", s.offset.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "none".into()));
        println!("  last position   {}", s.last_position.map(|p| p.key()).unwrap_or_else(|| "none".into()));
        println!("  events          {}", s.events);
        println!("  saved           {} s ago", (now_ms() - s.updated_ms) / 1000);
        if let Some(ts) = s.last_source_ts_ms {
            println!("  last change     committed {} s ago at the source", (now_ms() - ts).max(0) / 1000);
        }
        if let Some(present) = slot.get("saved_file_on_server").and_then(|v| v.as_bool()) {
            if present {
                println!("  binlog          {} bytes behind the server", slot["behind_bytes"].as_u64().unwrap_or(0));
            } else {
                println!("  binlog          the saved file is NO LONGER on the server (purged): take a new snapshot");
            }
        } else if !slot.is_null() {
            if slot.get("missing").is_some() {
                println!("  slot            {} is MISSING on the server", slot["name"].as_str().unwrap_or(""));
            } else {
                println!(
                    "  slot            {} ({}), confirmed {}, retains {} bytes of WAL",
                    slot["name"].as_str().unwrap_or(""),
                    if slot["active"].as_bool() == Some(true) { "active" } else { "inactive" },
                    slot["confirmed_flush_lsn"].as_str().unwrap_or("-"),
                    slot["retained_wal_bytes"].as_i64().map(|b| b.to_string()).unwrap_or_else(|| "?".into())
                );
            }
        }
    }
    Ok(())
}

fn json_row(s: &PipelineState, slot: &serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        // Postgres: the slot; MySQL/MariaDB: where the saved position stands in the binlog.
        let key = if slot.get("saved_file_on_server").is_some() { "binlog" } else { "slot" };
        o.insert(key.into(), slot.clone());
    }
    v
}
