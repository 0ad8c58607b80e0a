//! Chunked, parallel and resumable Postgres snapshots: under a writer that
//! inserts, updates, deletes and changes keys, the output replays to the
//! source tables exactly, for every kind of key (composite, text with
//! escapes, uuid, a unique index instead of a primary key, none) and after
//! `kill -9` in the middle of the snapshot, with no chunk read twice.

use crate::snapshot_support::{assert_replays, ends_saying, freeze_when, kill_9_at_shares, plan_rows};
use crate::support::*;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_postgres::Client;

/// The tables and their key columns (empty: no key).
const TABLES: [(&str, &[&str]); 7] =
    [("big", &["id"]), ("comp", &["a", "b"]), ("tkey", &["k"]), ("ukey", &["u"]), ("uniq", &["id"]), ("nokey", &[]), ("empty", &["id"])];

async fn create_tables(client: &Client, big_rows: i64) {
    client
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO big SELECT g, g, repeat('x', 40) FROM generate_series(1, {big_rows}) g;
             CREATE TABLE comp (a int, b text, v int, PRIMARY KEY (a, b));
             INSERT INTO comp SELECT g % 7, 'k' || g, g FROM generate_series(1, 6000) g;
             CREATE TABLE tkey (k text PRIMARY KEY, v int);
             INSERT INTO tkey SELECT 'key ' || g || E'\\t\\n\\\\''é', g FROM generate_series(1, 3000) g;
             CREATE TABLE ukey (u uuid PRIMARY KEY, v int);
             INSERT INTO ukey SELECT md5(g::text)::uuid, g FROM generate_series(1, 3000) g;
             CREATE TABLE uniq (id int NOT NULL, v int);
             CREATE UNIQUE INDEX uniq_id ON uniq (id);
             ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_id;
             INSERT INTO uniq SELECT g, g FROM generate_series(1, 3000) g;
             CREATE TABLE nokey (x int, y text);
             ALTER TABLE nokey REPLICA IDENTITY FULL;
             INSERT INTO nokey SELECT g % 100, 'n' FROM generate_series(1, 3000) g;
             CREATE TABLE empty (id int PRIMARY KEY);
             ANALYZE;"
        ))
        .await
        .unwrap();
}

/// Small transactions touching every table until `stop`: inserts, updates,
/// deletes, and key changes (moving a row to a key range not read yet).
async fn writer(url: String, big_rows: i64, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let k = (n * 7919) % big_rows + 1;
        let sql = format!(
            "BEGIN;
             INSERT INTO big VALUES ({new}, {n}, 'w');
             UPDATE big SET v = v + 1, note = 'u{n}' WHERE id = {k};
             DELETE FROM big WHERE id = {del};
             UPDATE big SET id = id + 100000000 WHERE id = {moved};
             UPDATE comp SET v = v + 1 WHERE a = {a} AND b = 'k{b}';
             DELETE FROM tkey WHERE v = {t};
             INSERT INTO tkey VALUES ('w{n}', {n});
             UPDATE ukey SET v = -v WHERE v = {t};
             UPDATE uniq SET v = v + 1 WHERE id = {t};
             INSERT INTO nokey VALUES ({n}, 'w');
             UPDATE nokey SET y = 'u' WHERE ctid = (SELECT ctid FROM nokey WHERE y = 'n' LIMIT 1);
             COMMIT;",
            new = 50_000_000 + n,
            del = (k * 13) % big_rows + 1,
            moved = (k * 17) % big_rows + 1,
            a = n % 7,
            b = n % 6000 + 1,
            t = n % 3000 + 1,
        );
        client.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n as u64
}

async fn source_rows(client: &Client, table: &str) -> Vec<String> {
    let rows = client.query(&format!("SELECT to_jsonb(t)::text FROM {table} t"), &[]).await.unwrap();
    let mut rows: Vec<String> = rows.iter().map(|r| serde_json::from_str::<Json>(&r.get::<_, String>(0)).unwrap().to_string()).collect();
    rows.sort();
    rows
}

/// Every table replays to the source, positions strictly increase, and no
/// key was read by the snapshot twice at one snapshot point.
async fn assert_exact(client: &Client, out: &Path) {
    for (table, key) in TABLES {
        let events = read_jsonl(out, &format!("public.{table}"));
        assert_replays(table, &events, key, &source_rows(client, table).await);
        // The events carry the key replaying uses: without a primary key,
        // uniq's is its unique index (its replica identity), as Debezium's.
        for e in events.iter().filter(|e| e["op"] != "t") {
            let row = if e["op"] == "d" { &e["before"] } else { &e["after"] };
            let want: Json = if key.is_empty() { Json::Null } else { key.iter().map(|k| (k.to_string(), row[*k].clone())).collect() };
            assert_eq!(e["key"], want, "{table}: the event's key");
        }
    }
}

fn args<'a>(url: &'a str, out: &'a Path, state: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "replicate",
        "--source",
        url,
        "--tables",
        "public.*",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "100ms",
    ];
    a.extend_from_slice(extra);
    a
}

async fn run_to_now(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|s| s.to_string()).chain(["--until".into(), "now".into()]).collect();
    let out = tokio::task::spawn_blocking(move || riffle_ok(&owned)).await.unwrap();
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_chunked_snapshot_under_a_writer_reproduces_every_kind_of_table() {
    let db = "it_snap_parallel";
    let client = fresh_db(db).await;
    create_tables(&client, 60_000).await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-par-out"), temp_dir("snap-par-state"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), 60_000, stop.clone()));
    let seen = connect(&url).await;
    wait_for_async("the writer's first transactions", 30, async || {
        seen.query_one("SELECT count(*) FROM big WHERE id >= 50000000", &[]).await.unwrap().get::<_, i64>(0) >= 5
    })
    .await;
    let a = args(&url, &out, &state, &["--snapshot-workers", "3", "--snapshot-chunk-rows", "700"]);
    let log = run_to_now(&a).await;
    assert!(log.contains("workers=3"), "{log}");
    let split = |l: &&str| l.contains("split into block ranges") && l.contains("public.nokey");
    assert!(log.lines().any(|l| split(&l)), "a keyless table is read by block ranges: {log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 5);
    run_to_now(&a).await;
    assert_exact(&client, &out).await;
    let reads = read_jsonl(&out, "public.big").iter().filter(|e| e["op"] == "r").count();
    assert!(reads > 55_000, "the snapshot read big ({reads} rows)");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_twice_mid_snapshot_resumes_with_only_the_chunks_left() {
    let db = "it_snap_resume";
    let client = fresh_db(db).await;
    let big = 200_000;
    create_tables(&client, big).await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-resume-out"), temp_dir("snap-resume-state"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), big, stop.clone()));
    // Short rounds: a resumed snapshot is read in several rounds between
    // stretches of the stream.
    let a = args(&url, &out, &state, &["--snapshot-workers", "2", "--snapshot-chunk-rows", "2000", "--snapshot-round", "200ms"]);
    kill_9_at_shares(&a, &state, big as u64, &[0.2, 0.6]).await;
    let log = run_to_now(&a).await;
    let rounds = log.lines().filter(|l| l.contains("snapshot round")).count();
    assert!(rounds >= 2, "the rest is read in rounds: {rounds}\n{log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    run_to_now(&a).await;
    assert_exact(&client, &out).await;
    // A snapshot point per run and round; no key read at two of them
    // (a row the writer moved to another key is another key).
    let events = read_jsonl(&out, "public.big");
    let mut points: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = std::collections::HashSet::new();
    for e in events.iter().filter(|e| e["op"] == "r") {
        *points.entry(e["source"]["position"].as_str().unwrap().split('.').next().unwrap().to_string()).or_default() += 1;
        let id = e["after"]["id"].as_i64().unwrap();
        assert!(ids.insert(id), "row {id} was read twice: a committed chunk was read again");
    }
    assert!(points.len() >= 4, "big was read at each run's point and in several rounds: {points:?}");
    let first = *points.values().next().unwrap();
    assert!(first as f64 >= big as f64 * 0.2, "what the first run committed is kept: {points:?}");
}

/// A fresh database `db` with the keyless table `heap` of `rows` rows (x
/// int, y text 'n'), after `more` SQL, analyzed (so it is split into block
/// ranges).
async fn heap_db(db: &str, rows: u64, more: &str) -> Client {
    let client = fresh_db(db).await;
    client
        .batch_execute(&format!(
            "{more}
             CREATE TABLE heap (x int, y text);
             ALTER TABLE heap REPLICA IDENTITY FULL;
             INSERT INTO heap SELECT g % 1000, 'n' FROM generate_series(1, {rows}) g;
             ANALYZE;"
        ))
        .await
        .unwrap();
    client
}

/// Inserts, updates and deletes on the keyless table `heap` (columns x
/// int, y text; y 'n' as seeded) that move rows between blocks, until
/// `stop`; returns how many rounds of them it made.
async fn heap_writer(url: String, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let pick = |y: &str| format!("(SELECT ctid FROM heap WHERE y = '{y}' AND x = {} LIMIT 1)", n % 1000);
        let sql = format!(
            "INSERT INTO heap VALUES ({n}, 'w'); UPDATE heap SET y = 'u' WHERE ctid = {}; DELETE FROM heap WHERE ctid = {};",
            pick("n"),
            pick("w")
        );
        client.batch_execute(&sql).await.unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_table_read_by_block_ranges_is_not_rewritten_under_it_and_a_cut_reloads_it_exactly() {
    let db = "it_snap_blocks";
    let rows = 200_000;
    let client = heap_db(db, rows, "").await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-blocks-out"), temp_dir("snap-blocks-state"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(heap_writer(url.clone(), stop.clone()));
    let a = args(&url, &out, &state, &["--snapshot-workers", "2", "--snapshot-chunk-rows", "2000", "--snapshot-round", "200ms"]);
    let first_log = state.join("run0.log");
    let mut child = spawn_riffle(&a, None, &first_log);
    freeze_when(&child, "block ranges to be committed", 120, || plan_rows(&state, ".heap") >= 20_000).await;
    // No rewrite (new blocks for every row) while block ranges are read.
    client.batch_execute("SET lock_timeout = '1s'").await.unwrap();
    let rewrite = client.batch_execute("VACUUM FULL heap").await;
    signal(&child, "KILL");
    child.wait().unwrap();
    let err = rewrite.expect_err("VACUUM FULL waits for the snapshot's lock");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{err}");
    client.batch_execute("RESET lock_timeout").await.unwrap();
    let committed = plan_rows(&state, ".heap");
    assert!(committed < rows, "killed before the last block range: {committed} rows committed");
    // What the next run does, as `riffle status` tells it: the table again, whole.
    let status = String::from_utf8_lossy(&riffle_ok(&["status", "--state", state.to_str().unwrap()]).stdout).into_owned();
    assert!(status.contains("public.heap read in part by storage positions"), "{status}");
    assert!(status.contains("the next run reads it again whole") && !status.contains("key ranges left"), "{status}");
    assert_eq!(log_count(&first_log, "split into block ranges"), 1, "{}", std::fs::read_to_string(&first_log).unwrap());
    let log = run_to_now(&a).await;
    assert!(log.contains("reloading it") && log.contains("split into block ranges"), "reloaded by block ranges: {log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    run_to_now(&a).await;
    let events = read_jsonl(&out, "public.heap");
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions must strictly increase");
    let truncates = events.iter().filter(|e| e["op"] == "t").count();
    assert_eq!(truncates, 1, "one reload");
    let before = events.iter().take_while(|e| e["op"] != "t").count() as u64;
    assert_eq!(before, committed, "the output holds the committed block ranges, then the reload");
    assert_replays("heap", &events, &[], &source_rows(&client, "heap").await);
}

/// A keyless table added to a running pipeline is read by block ranges in
/// one round however short the round is: a range left to the next round's
/// snapshot would name other rows (and the next run would reload it).
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_table_added_while_streaming_is_read_by_block_ranges_within_one_round() {
    let db = "it_snap_blocks_added";
    let client = heap_db(
        db,
        200_000,
        "CREATE TABLE keyed (id int PRIMARY KEY, v int);
         INSERT INTO keyed SELECT g, g FROM generate_series(1, 20000) g;",
    )
    .await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-blocks-added-out"), temp_dir("snap-blocks-added-state"));
    // 100 block ranges and 10 chunks of keyed, in rounds of 50 ms.
    let extra = ["--name", "blocksadded", "--snapshot-workers", "2", "--snapshot-chunk-rows", "2000", "--snapshot-round", "50ms"];
    let all = args(&url, &out, &state, &extra);
    let first: Vec<&str> = all.iter().map(|a| if *a == "public.*" { "public.keyed" } else { a }).collect();
    run_to_now(&first).await;
    assert!(read_jsonl(&out, "public.heap").is_empty(), "heap is not selected yet");
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(heap_writer(url.clone(), stop.clone()));
    // keyed, read again at the same time, takes several rounds.
    riffle_ok(&["snapshot", "--state", state.to_str().unwrap(), "--name", "blocksadded", "--tables", "public.keyed"]);
    let log = run_to_now(&all).await;
    assert!(log.contains("table added to the selection") && log.contains("split into block ranges"), "{log}");
    assert!(log.matches("snapshot round").count() >= 2, "the rounds' deadline passed while heap was read: {log}");
    assert!(!log.contains("reloading it"), "{log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    run_to_now(&all).await;
    let events = read_jsonl(&out, "public.heap");
    assert_eq!(events.iter().filter(|e| e["op"] == "t").count(), 0, "no reload");
    assert_replays("heap", &events, &[], &source_rows(&client, "heap").await);
}

/// The tables read by block ranges are locked before any worker reads
/// them: a rewrite asked for while another table is read waits for the
/// snapshot, so no range is read in the old blocks and another in the new.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyless_table_waiting_for_its_turn_is_not_rewritten_before_it() {
    let db = "it_snap_blocks_lock";
    let client = heap_db(
        db,
        50_000,
        "CREATE TABLE a (id bigint PRIMARY KEY, pad text);
         INSERT INTO a SELECT g, repeat('a', 50) FROM generate_series(1, 200000) g;",
    )
    .await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-blocks-lock-out"), temp_dir("snap-blocks-lock-state"));
    let mut a = args(&url, &out, &state, &["--snapshot-workers", "1", "--snapshot-chunk-rows", "1000"]);
    a.extend(["--until", "now"]);
    let log = state.join("run.log");
    let mut child = Running(spawn_riffle(&a, None, &log));
    freeze_when(&child.0, "the snapshot of a", 60, || plan_rows(&state, "public.a") >= 2000).await;
    assert_eq!(plan_rows(&state, "public.heap"), 0, "heap is not read yet");
    client.batch_execute("SET lock_timeout = '1s'").await.unwrap();
    let rewrite = client.batch_execute("VACUUM FULL heap").await;
    signal(&child.0, "CONT");
    let err = rewrite.expect_err("VACUUM FULL waits for the snapshot's lock");
    assert_eq!(err.code(), Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE), "{err}");
    ends_saying(&mut child.0, &log, "split into block ranges").await;
    let events = read_jsonl(&out, "public.heap");
    assert_replays("heap", &events, &[], &source_rows(&client, "heap").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_added_to_a_running_pipeline_are_snapshotted_and_removed_ones_stop() {
    let db = "it_snap_added";
    let client = fresh_db(db).await;
    create_tables(&client, 30_000).await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-added-out"), temp_dir("snap-added-state"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), 30_000, stop.clone()));
    let name = ["--name", "added"];
    let first: Vec<&str> = args(&url, &out, &state, &name).into_iter().map(|a| if a == "public.*" { "public.big" } else { a }).collect();
    run_to_now(&first).await;
    assert!(read_jsonl(&out, "public.comp").is_empty(), "comp is not selected yet");
    // Every other table joins while the writer keeps changing all of them.
    let all = args(&url, &out, &state, &["--name", "added", "--snapshot-chunk-rows", "1000"]);
    let log = run_to_now(&all).await;
    assert!(log.contains("table added to the selection"), "{log}");
    assert!(log.contains("snapshot round"), "{log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    run_to_now(&all).await;
    assert_exact(&client, &out).await;
    // big was never snapshotted again: one snapshot point for its reads.
    let big_points: std::collections::BTreeSet<String> = read_jsonl(&out, "public.big")
        .iter()
        .filter(|e| e["op"] == "r")
        .map(|e| e["source"]["position"].as_str().unwrap().split('.').next().unwrap().to_string())
        .collect();
    assert_eq!(big_points.len(), 1, "{big_points:?}");

    // Removing comp stops its changes, and says so.
    let without: Vec<&str> = all.iter().map(|a| if *a == "public.*" { "public.big" } else { a }).collect();
    let before = read_jsonl(&out, "public.comp").len();
    let log = run_to_now(&without).await;
    assert!(log.contains("table removed from the selection"), "{log}");
    client.batch_execute("UPDATE comp SET v = 0; UPDATE big SET v = 0 WHERE id = 2").await.unwrap();
    run_to_now(&without).await;
    assert_eq!(read_jsonl(&out, "public.comp").len(), before, "comp's changes are no longer captured");
    assert_eq!(read_jsonl(&out, "public.big").last().unwrap()["after"]["v"], 0, "big still streams");
}

#[tokio::test(flavor = "multi_thread")]
async fn riffle_snapshot_reads_chosen_tables_again_in_a_running_and_a_stopped_pipeline() {
    let db = "it_snap_again";
    let client = fresh_db(db).await;
    create_tables(&client, 20_000).await;
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-again-out"), temp_dir("snap-again-state"));
    let s = state.to_str().unwrap();
    let a = args(&url, &out, &state, &["--name", "again", "--snapshot-chunk-rows", "1000"]);
    run_to_now(&a).await;
    let reads = |table: &str| read_jsonl(&out, table).iter().filter(|e| e["op"] == "r").count();
    assert_eq!(reads("public.comp"), 6000);

    // A stopped pipeline: read at its next run.
    let asked = riffle_ok(&["snapshot", "--name", "again", "--state", s, "--tables", "public.comp"]);
    assert!(String::from_utf8_lossy(&asked.stdout).contains("public.comp"));
    // Changes made before the new read are delivered too (a delete that
    // were left out would leave a row the first snapshot showed).
    client.batch_execute("UPDATE comp SET v = -v WHERE a = 3; DELETE FROM comp WHERE a = 4").await.unwrap();
    run_to_now(&a).await;
    let deleted = read_jsonl(&out, "public.comp").iter().filter(|e| e["op"] == "d").count();
    assert_eq!(deleted, 857, "comp's deletes are delivered");
    assert_eq!(reads("public.comp"), 6000 + 6000 - 857, "comp read twice in all");
    assert_eq!(reads("public.tkey"), 3000, "other tables are not read again");
    assert!(!state.join("again.request").exists() && !state.join("again.request.taken").exists(), "the request was taken");

    // A running pipeline, under a writer: the tables are read again within
    // seconds, and every change is still delivered.
    let log = state.join("running.log");
    let mut running = Running(spawn_riffle(&a, None, &log));
    wait_for("the pipeline to stream", 30, || log_count(&log, "streaming started") >= 1).await;
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), 20_000, stop.clone()));
    riffle_ok(&["snapshot", "--name", "again", "--state", s, "--tables", "public.t*", "--tables", "public.uniq"]);
    wait_for("the tables read again", 60, || log_count(&log, "snapshotting the table again") == 2).await;
    wait_for("the snapshot to be saved done", 60, || {
        let status = riffle_ok(&["status", "--state", s, "--json"]);
        serde_json::from_slice::<Json>(&status.stdout).unwrap()[0]["snapshot"] == "done"
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    signal(&running.0, "TERM");
    assert!(running.0.wait().unwrap().success());
    run_to_now(&a).await;
    assert!(reads("public.tkey") >= 6000 && reads("public.uniq") == 6000, "tkey and uniq read twice");
    assert_eq!(reads("public.comp"), 6000 + 6000 - 857, "comp is not read again");
    // Everything replays to the source: reads again are upserts.
    assert_exact(&client, &out).await;

    // An unknown pipeline is refused clearly.
    let unknown = riffle(&["snapshot", "--name", "nope", "--state", s, "--tables", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no pipeline \"nope\""), "{}", stderr(&unknown));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_during_its_snapshot_ends_its_snapshot_and_the_others_go_on() {
    let db = "it_snap_dropped";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE a (id bigint PRIMARY KEY, pad text);
             INSERT INTO a SELECT g, repeat('a', 50) FROM generate_series(1, 400000) g;
             CREATE TABLE b (id int PRIMARY KEY);
             INSERT INTO b SELECT generate_series(1, 1000);
             CREATE TABLE c (id int PRIMARY KEY);
             INSERT INTO c SELECT generate_series(1, 10);
             ANALYZE;",
        )
        .await
        .unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-dropped-out"), temp_dir("snap-dropped-state"));
    let mut a = args(&url, &out, &state, &["--snapshot-workers", "1", "--snapshot-chunk-rows", "1000"]);
    a.extend(["--until", "now"]);
    let log = state.join("run.log");
    let mut child = Running(spawn_riffle(&a, None, &log));
    // One worker reads a's first key range (100,000 rows) before b: freeze
    // riffle early in it (the worker runs at most a few queues ahead of
    // what is committed), drop b, and let it go on. Should the worker have
    // reached b after all, its lock makes the drop time out, not hang.
    let a_rows = || plan_rows(&state, "public.a");
    freeze_when(&child.0, "the snapshot of a", 60, || a_rows() >= 2000).await;
    assert!(a_rows() < 100_000, "a's first range is still being read");
    let dropped = client.batch_execute("SET lock_timeout = '10s'; DROP TABLE b").await;
    signal(&child.0, "CONT");
    dropped.expect("dropping b while riffle reads a");
    ends_saying(&mut child.0, &log, "table dropped during its snapshot").await;
    let reads = |t: &str| read_jsonl(&out, t).iter().filter(|e| e["op"] == "r").count();
    assert_eq!((reads("public.a"), reads("public.b"), reads("public.c")), (400_000, 0, 10));
    let status = riffle_ok(&["status", "--state", state.to_str().unwrap(), "--json"]);
    assert_eq!(serde_json::from_slice::<Json>(&status.stdout).unwrap()[0]["snapshot"], "done");
}

/// Events of a table without a primary key are keyed by a unique index
/// over NOT NULL columns, in its snapshot and in its stream alike: the
/// replica identity index first, else the first by name (a deferrable one
/// too, as a snapshot may chunk by it; not one over a generated column,
/// which riffle does not copy); a primary key by its key columns, not its
/// INCLUDE ones; no such index, no key.
#[tokio::test(flavor = "multi_thread")]
async fn events_of_a_table_without_a_primary_key_are_keyed_by_a_unique_index() {
    let db = "it_snap_keys";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE ident (a int NOT NULL, b int NOT NULL, v int);
             CREATE UNIQUE INDEX a_first ON ident (a);
             CREATE UNIQUE INDEX b_ident ON ident (b);
             ALTER TABLE ident REPLICA IDENTITY USING INDEX b_ident;
             CREATE TABLE dfr (id int NOT NULL, v int, CONSTRAINT dfr_id UNIQUE (id) DEFERRABLE);
             ALTER TABLE dfr REPLICA IDENTITY FULL;
             CREATE TABLE gen (a int NOT NULL, z int NOT NULL, g int NOT NULL GENERATED ALWAYS AS (a * 2) STORED);
             CREATE UNIQUE INDEX a_ag ON gen (a, g);
             CREATE UNIQUE INDEX b_z ON gen (z);
             ALTER TABLE gen REPLICA IDENTITY FULL;
             CREATE TABLE inc (id int, v int, PRIMARY KEY (id) INCLUDE (v));
             CREATE TABLE nul (id int, v int);
             CREATE UNIQUE INDEX nul_id ON nul (id);
             ALTER TABLE nul REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    let insert = |n: i32| {
        format!(
            "INSERT INTO ident VALUES ({n}, {n} + 100, 0); INSERT INTO dfr VALUES ({n}, 0); INSERT INTO gen (a, z) VALUES ({n}, {n} + 100);
             INSERT INTO inc VALUES ({n}, 0); INSERT INTO nul VALUES ({n}, 0);"
        )
    };
    client.batch_execute(&insert(1)).await.unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir("snap-keys-out"), temp_dir("snap-keys-state"));
    let a = args(&url, &out, &state, &[]);
    run_to_now(&a).await;
    client.batch_execute(&insert(2)).await.unwrap();
    run_to_now(&a).await;
    let want = [("ident", vec!["b"]), ("dfr", vec!["id"]), ("gen", vec!["z"]), ("inc", vec!["id"]), ("nul", vec![])];
    for (table, key) in want {
        let events = read_jsonl(&out, &format!("public.{table}"));
        let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
        assert_eq!(ops, ["r", "c"], "{table}: its snapshot read, then its streamed insert");
        for e in &events {
            let expected: Json =
                if key.is_empty() { Json::Null } else { key.iter().map(|k| (k.to_string(), e["after"][*k].clone())).collect() };
            assert_eq!(e["key"], expected, "{table}: the key of its {} event", e["op"]);
        }
    }
}
