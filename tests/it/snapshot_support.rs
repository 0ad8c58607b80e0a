//! What the snapshot tests of both sources share: replaying events into a
//! table's rows, reading a saved snapshot plan, and freezing riffle at a
//! chosen point of its snapshot.

use crate::support::{kill_9_when, log_count, signal, spawn_riffle, wait_for};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// A row's key columns as one string.
pub fn key_of(row: &Json, key: &[&str]) -> String {
    serde_json::to_string(&key.iter().map(|k| row[*k].clone()).collect::<Vec<_>>()).unwrap()
}

/// What a consumer replaying the events ends with: the table's rows as
/// sorted JSON texts (by key, or, without a key, as a bag with duplicates);
/// a truncate empties the table.
pub fn replay_rows(events: &[Json], key: &[&str]) -> Vec<String> {
    let mut keyed: BTreeMap<String, String> = BTreeMap::new();
    let mut bag: Vec<String> = Vec::new();
    for e in events {
        let op = e["op"].as_str().unwrap();
        if op == "t" {
            (keyed, bag) = Default::default();
            continue;
        }
        if key.is_empty() {
            if matches!(op, "u" | "d") {
                let text = e["before"].to_string();
                let i = bag.iter().position(|r| *r == text).unwrap_or_else(|| panic!("no row {text} to change"));
                bag.swap_remove(i);
            }
            if matches!(op, "r" | "c" | "u") {
                bag.push(e["after"].to_string());
            }
            continue;
        }
        if matches!(op, "u" | "d") {
            keyed.remove(&key_of(&e["before"], key));
        }
        if matches!(op, "r" | "c" | "u") {
            keyed.insert(key_of(&e["after"], key), e["after"].to_string());
        }
    }
    let mut rows: Vec<String> = if key.is_empty() { bag } else { keyed.into_values().collect() };
    rows.sort();
    rows
}

/// Checks a table's output against its rows `want` (sorted JSON texts):
/// positions strictly increase, no row is read twice at one snapshot point
/// (by `key`; without one, the bag replay shows it), and replaying the
/// events gives `want`. On a mismatch, says which rows differ (at most 10
/// each way) rather than printing both tables.
pub fn assert_replays(table: &str, events: &[Json], key: &[&str], want: &[String]) {
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{table}: positions must strictly increase");
    if !key.is_empty() {
        let mut reads = std::collections::HashSet::new();
        for e in events.iter().filter(|e| e["op"] == "r") {
            let p = e["source"]["position"].as_str().unwrap();
            let at = p.rsplit_once('.').map_or(p, |(at, _)| at);
            assert!(
                reads.insert((at.to_string(), key_of(&e["after"], key))),
                "{table}: row {} read twice at {at}",
                key_of(&e["after"], key)
            );
        }
    }
    let got = replay_rows(events, key);
    if got != want {
        // Both sorted: one merge finds what each side has that the other lacks.
        let (mut extra, mut missing) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < got.len() || j < want.len() {
            match (got.get(i), want.get(j)) {
                (Some(a), Some(b)) if a == b => (i, j) = (i + 1, j + 1),
                (Some(a), b) if b.is_none_or(|b| a < b) => {
                    extra.push(a);
                    i += 1
                }
                (_, b) => {
                    missing.push(b.unwrap());
                    j += 1
                }
            }
        }
        panic!(
            "{table}: replaying the output must give the table: {} rows replayed, {} in the table; {} only replayed, first: {:?}; {} only in the table, first: {:?}",
            got.len(),
            want.len(),
            extra.len(),
            &extra[..extra.len().min(10)],
            missing.len(),
            &missing[..missing.len().min(10)],
        );
    }
}

/// The table whose name ends with `suffix` (`.big`) in the snapshot plan
/// saved in `state`, if any.
fn plan_table(state: &Path, suffix: &str) -> Option<Json> {
    std::fs::read_dir(state)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .filter_map(|f| serde_json::from_str::<Json>(&std::fs::read_to_string(f.path()).ok()?).ok())
        .find_map(|s| s["chunks"]["tables"].as_array()?.iter().find(|t| t["table"].as_str().is_some_and(|n| n.ends_with(suffix))).cloned())
}

/// The rows the saved snapshot plan in `state` says are committed for the
/// table whose name ends with `suffix` (`.big`), or 0.
pub fn plan_rows(state: &Path, suffix: &str) -> u64 {
    plan_table(state, suffix).and_then(|t| t["rows"].as_u64()).unwrap_or(0)
}

/// The chunk key the saved snapshot plan in `state` reads the table whose
/// name ends with `suffix` by.
pub fn plan_key(state: &Path, suffix: &str) -> Vec<String> {
    let t = plan_table(state, suffix).unwrap_or_else(|| panic!("no {suffix} in the saved plan"));
    t["key"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(String::from)).collect()
}

/// Runs riffle with `args` once per share of `shares`, each run killed
/// (`kill -9`) once the saved plan has that share of `total` rows of the
/// table named `….big` committed: the rows each kill left committed, each
/// run having gone on from the one before.
pub async fn kill_9_at_shares<S: AsRef<std::ffi::OsStr>>(args: &[S], state: &Path, total: u64, shares: &[f64]) -> Vec<u64> {
    let mut at_kills = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        let mut child = spawn_riffle(args, None, &state.join(format!("run{i}.log")));
        let target = (total as f64 * share) as u64;
        kill_9_when(&mut child, "the snapshot to commit chunks of big", 120, async || plan_rows(state, ".big") >= target).await;
        at_kills.push(plan_rows(state, ".big"));
    }
    assert!(at_kills.windows(2).all(|w| w[1] > w[0]), "each run went on from the one before: {at_kills:?}");
    at_kills
}

/// Freezes `child` (SIGSTOP) once `ready` holds, checking it while frozen so
/// what it saw stays true; the caller acts, then continues it (SIGCONT).
pub async fn freeze_when(child: &Child, what: &str, secs: u64, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        signal(child, "STOP");
        if ready() {
            return;
        }
        signal(child, "CONT");
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for `child` to end, which must be a success whose log at `log`
/// says `warning` once.
pub async fn ends_saying(child: &mut Child, log: &Path, warning: &str) {
    wait_for("riffle to finish", 60, || child.try_wait().unwrap().is_some()).await;
    let shown = || std::fs::read_to_string(log).unwrap_or_default();
    assert!(child.wait().unwrap().success(), "{}", shown());
    assert_eq!(log_count(log, warning), 1, "{}", shown());
}
