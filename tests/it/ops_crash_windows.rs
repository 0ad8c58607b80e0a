//! Crash windows hit on purpose: riffle built with fail points (`--features
//! failpoints`, on in scripts/test.sh) aborts at one commit window while a
//! writer keeps changing the table; the restart loses nothing, writes
//! nothing twice, and the slot is never confirmed past the saved offset.

use crate::support::*;
use serde_json::Value as Json;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn writer(url: String, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        client
            .batch_execute(&format!(
                "BEGIN; INSERT INTO t VALUES ({}, 0); UPDATE t SET v = v + 1 WHERE id = {}; DELETE FROM t WHERE id = {}; COMMIT;",
                1_000_000 + n,
                n % 5000 + 1,
                (n * 7) % 5000 + 1
            ))
            .await
            .unwrap();
        n += 1;
    }
    n as u64
}

/// The saved offset's LSN, as Postgres prints it.
fn saved_lsn(state: &Path) -> Option<String> {
    std::fs::read_dir(state)
        .ok()?
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "json"))
        .filter_map(|f| serde_json::from_str::<Json>(&std::fs::read_to_string(f.path()).ok()?).ok())
        .find_map(|s| s["offset"]["lsn"].as_str().map(str::to_string))
}

/// Aborts riffle at the `hit`-th pass through fail point `point`, checks
/// the slot, restarts, and checks the output.
async fn crash_at(point: &str, hit: u32, db: &str) {
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 5000) g")
        .await
        .unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir(&format!("{db}-out")), temp_dir(&format!("{db}-state")));
    let args: Vec<String> =
        ["replicate", "--source", &url, "--tables", "t", "--sink", out.to_str().unwrap(), "--state", state.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .chain(
                ["--commit-interval", "100ms", "--max-file-rows", "500", "--snapshot-chunk-rows", "1000", "--name", db].map(String::from),
            )
            .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), stop.clone()));
    let log = state.join("crash.log");
    let mut child = riffle_cmd(&args)
        .env("RIFFLE_FAIL_AT", format!("{point}@{hit}"))
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("riffle to reach the fail point", 120, || child.try_wait().unwrap().is_some()).await;
    let status = child.wait().unwrap();
    let shown = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success() && log_count(&log, &format!("fail point {point} reached")) == 1, "{status}: {}", shown());
    // The slot is never confirmed past what the state says is durable.
    let slot = connect(&admin_url()).await;
    let confirmed: Option<String> =
        slot.query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&db]).await.unwrap().get(0);
    if let (Some(confirmed), Some(saved)) = (confirmed, saved_lsn(&state)) {
        let cmp: bool = slot.query_one("SELECT $1::text::pg_lsn <= $2::text::pg_lsn", &[&confirmed, &saved]).await.unwrap().get(0);
        assert!(cmp, "the slot was confirmed at {confirmed}, past the saved offset {saved}");
    }
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    let mut until = args.clone();
    until.extend(["--until".into(), "now".into()]);
    let rerun = tokio::task::spawn_blocking(move || riffle_ok(&until)).await.unwrap();
    assert!(!stderr(&rerun).contains("fail point"));
    let events = read_jsonl(&out, "public.t");
    let mut positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    let n = positions.len();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), n, "{point}: an event was written twice");
    assert!(temp_files(&out).is_empty(), "{point}: temporary files left behind");
    assert_eq!(replay(&events, "id"), table_as_json(&client, "t", "id").await, "{point}: replaying the output must give the table");
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs riffle built with --features failpoints")]
async fn crash_with_files_written_but_no_manifest() {
    crash_at("files.written", 4, "it_fail_written").await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs riffle built with --features failpoints")]
async fn crash_with_the_manifest_saved_but_the_files_not_moved() {
    crash_at("files.manifest", 4, "it_fail_manifest").await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs riffle built with --features failpoints")]
async fn crash_with_the_sinks_committed_but_the_state_not_saved() {
    crash_at("pipeline.sinks_committed", 4, "it_fail_sinks").await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs riffle built with --features failpoints")]
async fn crash_with_the_state_saved_but_the_slot_not_confirmed() {
    crash_at("pipeline.state_saved", 4, "it_fail_state").await;
}

#[tokio::test(flavor = "multi_thread")]
#[cfg_attr(not(feature = "failpoints"), ignore = "needs riffle built with --features failpoints")]
async fn crash_in_the_middle_of_writing_a_file() {
    crash_at("files.mid_upload", 3, "it_fail_upload").await;
}
