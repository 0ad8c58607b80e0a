//! `riffle status`: what each pipeline saved, and what its slot holds back.

use crate::cli::StatusArgs;
use crate::state::{now_ms, PipelineState, StateStore};
use anyhow::Result;
use riffle_core::{SavedPipeline, StatusReport, TableProgress};
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
    let reports = match source.as_deref() {
        Some(url) => {
            let pipelines: Vec<SavedPipeline> = states
                .iter()
                .map(|s| SavedPipeline { name: s.name.clone(), offset: s.offset.clone(), location: store.location(&s.name) })
                .collect();
            crate::connectors::source_status(url, &pipelines).await?.into_iter().map(Some).collect()
        }
        None => vec![None; states.len()],
    };
    print_rows(args, &store, states.iter().zip(reports).collect())
}

fn print_rows(args: &StatusArgs, store: &StateStore, rows: Vec<(&PipelineState, Option<StatusReport>)>) -> Result<()> {
    if args.json {
        let out: Vec<serde_json::Value> = rows.iter().map(|(s, report)| json_row(s, report.as_ref())).collect();
        out!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if rows.is_empty() {
        out!("no pipelines in {}", store.describe());
        return Ok(());
    }
    for (s, report) in rows {
        out!("{}", s.name);
        out!("  source          {}", s.source);
        out!("  tables          {}", s.tables.join(", "));
        out!("  snapshot        {}", snapshot_line(s));
        out!("  offset          {}", s.offset.as_ref().map(|o| o.to_string()).unwrap_or_else(|| "none".into()));
        out!("  last position   {}", s.last_position.map(|p| p.key()).unwrap_or_else(|| "none".into()));
        out!("  events          {}", s.events);
        out!("  saved           {} s ago", (now_ms() - s.updated_ms) / 1000);
        if let Some(ts) = s.last_source_ts_ms {
            out!("  last change     committed {} s ago at the source", (now_ms() - ts).max(0) / 1000);
        }
        for (label, line) in report.iter().flat_map(|r| &r.lines) {
            out!("  {label:<15} {line}");
        }
    }
    Ok(())
}

/// `done`; `in progress: 3 of 5 tables done, 12 chunks left…`; or, for a
/// snapshot that saved no chunk yet, that the next run starts it again.
fn snapshot_line(s: &PipelineState) -> String {
    if s.snapshot == crate::state::SnapshotState::Done {
        return "done".into();
    }
    match &s.chunks {
        Some(p) if s.offset.is_some() => {
            let done = p.tables.iter().filter(|t| t.is_done()).count();
            let rows: u64 = p.tables.iter().map(|t| t.rows).sum();
            // Tables read by storage positions (block ranges) in part: those
            // hold only in the snapshot that read them.
            let (positional, keyed): (Vec<&TableProgress>, Vec<&TableProgress>) = p.pending().partition(|t| t.reloads());
            let mut line = format!("in progress: {done} of {} tables done, {rows} rows committed", p.tables.len());
            if !keyed.is_empty() {
                let left: usize = keyed.iter().map(|t| t.left.len()).sum();
                let next: Vec<&str> = keyed.iter().map(|t| t.table.as_str()).take(5).collect();
                line += &format!(", {left} key ranges left (next: {}), which a later run reads as they are", next.join(", "));
            }
            if !positional.is_empty() {
                let names: Vec<&str> = positional.iter().map(|t| t.table.as_str()).collect();
                let (it, is) = if names.len() == 1 { ("it", "is") } else { ("them", "are") };
                line += &format!(
                    "; {} read in part by storage positions, which hold only in the snapshot that read them: if the run reading \
                     {it} ends before {it} {is} done, the next run reads {it} again whole, after a truncate event",
                    names.join(", ")
                );
            }
            line
        }
        _ => "in progress (no chunk committed yet: the next run starts it again)".into(),
    }
}

fn json_row(s: &PipelineState, report: Option<&StatusReport>) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let (Some(o), Some(r)) = (v.as_object_mut(), report) {
        // Postgres: the slot; MySQL/MariaDB: where the saved position stands in the binlog.
        o.insert(r.key.into(), r.json.clone());
    }
    v
}
