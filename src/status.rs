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
    let store = StateStore::new(&dir);
    let mut states = store.list()?;
    if let Some(n) = &name {
        states.retain(|s| &s.name == n);
    }
    let mut rows = Vec::new();
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
    if args.json {
        let out: Vec<serde_json::Value> = rows.iter().map(|(s, slot)| json_row(s, slot)).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no pipelines in {}", dir.display());
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
        if !slot.is_null() {
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
        o.insert("slot".into(), slot.clone());
    }
    v
}
