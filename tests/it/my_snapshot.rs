//! Chunked, resumable MariaDB snapshots: `kill -9` in the middle of the
//! snapshot while a writer inserts, updates, deletes and changes keys; the
//! next run reads only the chunks left, and the output replays to the
//! source tables exactly (composite keys, text keys with quotes,
//! backslashes and tabs, UUID keys, a unique NOT NULL index for a key, an
//! empty table, and tables without a key, read whole: none, or a unique
//! index with NULLs).

use crate::snapshot_support::{assert_replays, ends_saying, freeze_when, kill_9_at_shares, plan_key, plan_rows};
use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The tables, each with its key columns and the JSON_OBJECT that prints a
/// row as riffle's JSON lines do.
const TABLES: [(&str, &[&str], &str); 8] = [
    ("big", &["id"], "JSON_OBJECT('id', id, 'v', v, 'note', note)"),
    ("comp", &["a", "b"], "JSON_OBJECT('a', a, 'b', b, 'v', v)"),
    ("tkey", &["k"], "JSON_OBJECT('k', k, 'v', v)"),
    ("ukey", &["u"], "JSON_OBJECT('u', u, 'v', v)"),
    // No primary key: its unique NOT NULL index keys the events (the
    // server reports it as the primary key, and Debezium keys it so too).
    ("uniq", &["id"], "JSON_OBJECT('id', id, 'v', v)"),
    ("nullu", &[], "JSON_OBJECT('id', id, 'v', v)"),
    ("nokey", &[], "JSON_OBJECT('x', x, 'y', y)"),
    ("empty", &["id"], "JSON_OBJECT('id', id)"),
];

const BIG: i64 = 120_000;

async fn writer(db: &'static str, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = my_fresh_conn(db).await;
    let mut n = 0i64;
    while !stop.load(Ordering::Relaxed) {
        let k = (n * 7919) % BIG + 1;
        conn.query_drop(format!(
            "START TRANSACTION;
             INSERT INTO big VALUES ({new}, {n}, 'w');
             UPDATE big SET v = v + 1, note = 'u{n}' WHERE id = {k};
             DELETE FROM big WHERE id = {del};
             UPDATE big SET id = id + 100000000 WHERE id = {moved};
             UPDATE comp SET v = v + 1 WHERE a = {a} AND b = 'k{b}';
             DELETE FROM tkey WHERE v = {t};
             INSERT INTO tkey VALUES (CONCAT('w{n} \\' \\\\ ', CHAR(9), 'é'), {n});
             UPDATE ukey SET v = -v WHERE v = {t};
             UPDATE uniq SET id = id + 1000000 WHERE id = {t};
             INSERT INTO uniq VALUES ({new}, {n});
             INSERT INTO nullu VALUES (NULL, {n});
             INSERT INTO nokey VALUES ({n}, 'w');
             COMMIT;",
            new = 50_000_000 + n,
            del = (k * 13) % BIG + 1,
            moved = (k * 17) % BIG + 1,
            a = n % 7,
            b = n % 5000 + 1,
            t = n % 3000 + 1,
        ))
        .await
        .unwrap();
        n += 1;
    }
    n as u64
}

async fn source_rows(conn: &mut mysql_async::Conn, table: &str, object: &str) -> Vec<String> {
    let rows: Vec<String> = conn.query(format!("SELECT {object} FROM {table}")).await.unwrap();
    let mut rows: Vec<String> = rows.iter().map(|r| serde_json::from_str::<Json>(r).unwrap().to_string()).collect();
    rows.sort();
    rows
}

/// Replaying each table's output in `out` gives the table as it is now
/// ([`assert_replays`]).
async fn replays_to_the_tables(conn: &mut mysql_async::Conn, out: &std::path::Path, db: &str) {
    for (table, key, object) in TABLES {
        let events = read_jsonl(out, &format!("{db}.{table}"));
        assert_replays(&format!("{db}.{table}"), &events, key, &source_rows(conn, table, object).await);
    }
}

/// A fresh database `db` with [`TABLES`], and an admin connection to it.
async fn fresh_tables(db: &str) -> mysql_async::Conn {
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(format!(
        "CREATE TABLE big (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, note VARCHAR(50));
         INSERT INTO big SELECT seq, seq, REPEAT('x', 40) FROM seq_1_to_{BIG};
         CREATE TABLE comp (a INT, b VARCHAR(20), v INT, PRIMARY KEY (b, a));
         INSERT INTO comp SELECT seq % 7, CONCAT('k', seq), seq FROM seq_1_to_5000;
         CREATE TABLE tkey (k VARCHAR(40) PRIMARY KEY, v INT);
         INSERT INTO tkey SELECT CONCAT('key ', seq, ' \\' \\\\ ', CHAR(9), 'é'), seq FROM seq_1_to_3000;
         CREATE TABLE ukey (u UUID PRIMARY KEY, v INT);
         INSERT INTO ukey SELECT UUID(), seq FROM seq_1_to_3000;
         CREATE TABLE uniq (id INT NOT NULL, v INT, UNIQUE KEY uniq_id (id));
         INSERT INTO uniq SELECT seq, seq FROM seq_1_to_9000;
         CREATE TABLE nullu (id INT NULL, v INT, UNIQUE KEY nullu_id (id));
         INSERT INTO nullu SELECT IF(seq % 3 = 0, NULL, seq), seq FROM seq_1_to_3000;
         CREATE TABLE empty (id INT PRIMARY KEY);
         CREATE TABLE nokey (x INT, y VARCHAR(10));
         INSERT INTO nokey SELECT seq % 100, 'n' FROM seq_1_to_2000;"
    ))
    .await
    .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_twice_mid_snapshot_resumes_with_only_the_chunks_left() {
    let db = "it_my_snap_resume";
    let mut conn = fresh_tables(db).await;
    let url = my_url(db);
    let (out, state) = (temp_dir("my-snap-out"), temp_dir("my-snap-state"));
    // Short rounds: the rest of the snapshot is read in several.
    let extra = ["--commit-interval", "100ms", "--snapshot-chunk-rows", "2000", "--snapshot-round", "100ms"];
    let args = replicate_args(&url, "*", &out, &state, &extra);
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db, stop.clone()));
    // Killed twice: in the first snapshot, then in the rounds of the next run.
    let at_kill = kill_9_at_shares(&args, &state, BIG as u64, &[0.25, 0.6]).await[0];
    let mut until = args.clone();
    until.extend(["--until".into(), "now".into()]);
    let rerun = tokio::task::spawn_blocking({
        let until = until.clone();
        move || riffle_ok(&until)
    })
    .await
    .unwrap();
    assert!(stderr(&rerun).contains("snapshot round"), "{}", stderr(&rerun));
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    riffle_ok(&until);

    replays_to_the_tables(&mut conn, &out, db).await;
    // Two snapshot points; the rows committed before the kill were not read again.
    let events = read_jsonl(&out, &format!("{db}.big"));
    let mut points: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = HashSet::new();
    for e in events.iter().filter(|e| e["op"] == "r") {
        let p = e["source"]["position"].as_str().unwrap();
        *points.entry(p[..p.rfind('.').unwrap()].to_string()).or_default() += 1;
        let id = e["after"]["id"].as_i64().unwrap();
        assert!(ids.insert(id), "row {id} was read twice: a committed chunk was read again");
    }
    // The same for the table chunked by its unique index (no key moves a
    // row back below a bound already read).
    let mut ids = HashSet::new();
    for e in read_jsonl(&out, &format!("{db}.uniq")).iter().filter(|e| e["op"] == "r") {
        let id = e["after"]["id"].as_i64().unwrap();
        assert!(ids.insert(id), "uniq: row {id} was read twice: a committed chunk was read again");
    }
    let rounds = stderr(&rerun).lines().filter(|l| l.contains("snapshot round")).count();
    assert!(rounds >= 2, "the rest is read in rounds: {rounds}");
    assert!(points.len() >= 3, "big was read at the first run's point and in several rounds: {points:?}");
    assert!(*points.values().next().unwrap() >= at_kill, "what the first run committed is kept: {points:?}, {at_kill} at the kill");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_dropped_during_its_snapshot_ends_its_snapshot_and_the_others_go_on() {
    let db = "it_my_snap_dropped";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(
        "CREATE TABLE a (id BIGINT PRIMARY KEY, pad VARCHAR(60));
         INSERT INTO a SELECT seq, REPEAT('a', 50) FROM seq_1_to_200000;
         CREATE TABLE b (id INT PRIMARY KEY);
         INSERT INTO b SELECT seq FROM seq_1_to_1000;
         CREATE TABLE c (id INT PRIMARY KEY);
         INSERT INTO c SELECT seq FROM seq_1_to_10;",
    )
    .await
    .unwrap();
    let url = my_url(db);
    let (out, state) = (temp_dir("my-snap-dropped-out"), temp_dir("my-snap-dropped-state"));
    let (o, s) = (out.to_str().unwrap(), state.to_str().unwrap());
    let a = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "*",
        "--sink",
        o,
        "--state",
        s,
        "--commit-interval",
        "100ms",
        "--snapshot-chunk-rows",
        "1000",
        // One worker, so b is read after a (a table a worker has read is
        // held by its transaction's metadata lock until the snapshot ends).
        "--snapshot-workers",
        "1",
        "--until",
        "now",
    ];
    let log = state.join("run.log");
    let mut child = Running(spawn_riffle(&a, None, &log));
    // Tables are read one after the other: freeze riffle inside a, drop b,
    // and let it go on.
    let a_rows = || plan_rows(&state, ".a");
    freeze_when(&child.0, "the snapshot of a", 60, || a_rows() >= 2000).await;
    assert!(a_rows() < 200_000, "a is still being read");
    // Should riffle have reached b after all, its lock makes the drop time
    // out, not hang behind the frozen process.
    let dropped = conn.query_drop("SET SESSION lock_wait_timeout = 10; DROP TABLE b").await;
    signal(&child.0, "CONT");
    dropped.expect("dropping b while riffle reads a");
    ends_saying(&mut child.0, &log, "table dropped during its snapshot").await;
    let reads = |t: &str| read_jsonl(&out, &format!("{db}.{t}")).iter().filter(|e| e["op"] == "r").count();
    assert_eq!((reads("a"), reads("b"), reads("c")), (200_000, 0, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_added_or_asked_for_again_are_snapshotted_while_the_others_stream() {
    let db = "it_my_snap_added";
    let mut conn = fresh_tables(db).await;
    let url = my_url(db);
    let (out, state) = (temp_dir("my-added-out"), temp_dir("my-added-state"));
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let run = |tables: &[&str]| {
        let mut a: Vec<String> =
            ["replicate", "--source", &url, "--sink", &o, "--state", &s, "--name", "added", "--commit-interval", "100ms"]
                .iter()
                .map(|x| x.to_string())
                .collect();
        for t in tables {
            a.extend(["--tables".to_string(), t.to_string()]);
        }
        a.extend(["--snapshot-chunk-rows".into(), "1000".into(), "--until".into(), "now".into()]);
        tokio::task::spawn_blocking(move || stderr(&riffle_ok(&a)))
    };
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db, stop.clone()));
    run(&["big"]).await.unwrap();
    assert!(read_jsonl(&out, &format!("{db}.comp")).is_empty(), "comp is not selected yet");
    let log = run(&["big", "comp", "tkey", "ukey", "uniq", "nullu", "nokey", "empty"]).await.unwrap();
    assert!(log.contains("table added to the selection"), "{log}");
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    // comp again, after a delete the new read must not hide.
    riffle_ok(&["snapshot", "--name", "added", "--state", &s, "--tables", "comp"]);
    conn.query_drop("DELETE FROM comp WHERE a = 4").await.unwrap();
    let log = run(&["big", "comp", "tkey", "ukey", "uniq", "nullu", "nokey", "empty"]).await.unwrap();
    assert!(log.contains("snapshotting the table again"), "{log}");
    replays_to_the_tables(&mut conn, &out, db).await;
    let comp = read_jsonl(&out, &format!("{db}.comp"));
    assert_eq!(comp.iter().filter(|e| e["op"] == "d").count(), 714, "comp's deletes are delivered");
    let big_points: HashSet<String> = read_jsonl(&out, &format!("{db}.big"))
        .iter()
        .filter(|e| e["op"] == "r")
        .map(|e| e["source"]["position"].as_str().unwrap().rsplit_once('.').unwrap().0.to_string())
        .collect();
    assert_eq!(big_points.len(), 1, "big was never read again: {big_points:?}");
}

/// Three workers read one consistent snapshot without a lock (their
/// MariaDB snapshots agree on one binlog position), a large table split
/// between them, while a writer inserts, updates, deletes and changes keys
/// once they have started: replaying the output gives the tables exactly,
/// every row is read once, and the snapshot's rows sit at one position.
#[tokio::test(flavor = "multi_thread")]
async fn parallel_workers_read_one_snapshot_while_a_writer_changes_the_tables() {
    let db = "it_my_snap_parallel";
    let mut conn = fresh_tables(db).await;
    let url = my_url(db);
    let (out, state) = (temp_dir("my-snap-par-out"), temp_dir("my-snap-par-state"));
    let log = state.join("run1.log");
    let extra = ["--commit-interval", "100ms", "--snapshot-chunk-rows", "4000", "--snapshot-workers", "3"];
    let args = replicate_args(&url, "*", &out, &state, &extra);
    let mut child = spawn_riffle(&args, None, &log);
    wait_for("the snapshot workers to start", 60, || log_count(&log, "snapshot plan") > 0).await;
    let plan = std::fs::read_to_string(&log).unwrap();
    let plan = plan.lines().find(|l| l.contains("snapshot plan")).unwrap().to_string();
    assert!(plan.contains("workers=3"), "three workers agreed on one snapshot: {plan}");
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db, stop.clone()));
    wait_for("the snapshot to end", 120, || log_count(&log, "table copied") >= TABLES.len()).await;
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 0);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let mut until = args.clone();
    until.extend(["--until".into(), "now".into()]);
    riffle_ok(&until);

    for (table, _, _) in TABLES {
        let reads: Vec<Json> = read_jsonl(&out, &format!("{db}.{table}")).into_iter().filter(|e| e["op"] == "r").collect();
        let points: HashSet<&str> = reads.iter().map(|e| e["source"]["position"].as_str().unwrap().rsplit_once('.').unwrap().0).collect();
        assert_eq!(points.len(), usize::from(!reads.is_empty()), "{table}: one snapshot point");
    }
    replays_to_the_tables(&mut conn, &out, db).await;
    // Chunked by its unique NOT NULL index; the one whose index allows
    // NULLs (which no bound would find) read whole, as the keyless one.
    let whole: Vec<String> =
        std::fs::read_to_string(&log).unwrap().lines().filter(|l| l.contains("read whole")).map(String::from).collect();
    assert!(whole.iter().any(|l| l.contains(".nullu")) && whole.iter().any(|l| l.contains(".nokey")), "{whole:?}");
    assert!(!whole.iter().any(|l| l.contains(".uniq")), "{whole:?}");
    let big: Vec<i64> =
        read_jsonl(&out, &format!("{db}.big")).iter().filter(|e| e["op"] == "r").map(|e| e["after"]["id"].as_i64().unwrap()).collect();
    assert_eq!(big.len(), BIG as usize, "every row of big read once");
    assert_eq!(big.iter().collect::<HashSet<_>>().len(), big.len(), "no row read twice");
}

/// A table chunked by a unique index keeps that key across an interrupted
/// snapshot even when an index the planner would pick first becomes
/// usable: the saved ranges are in its order. (An ignored index, which the
/// optimizer cannot walk, is no chunk key.) Rows of the ranges not read yet
/// that change before the resumed read show as their change, then as a
/// read, both under the key the server reports for the table (no primary
/// key: its first unique index over NOT NULL columns), so a consumer
/// applying them by key ends with the table.
#[tokio::test(flavor = "multi_thread")]
async fn a_unique_index_usable_mid_snapshot_does_not_change_the_chunk_key() {
    let db = "it_my_snap_keep_key";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(format!(
        "CREATE TABLE big (a INT NOT NULL, b INT NOT NULL, c INT NOT NULL, UNIQUE KEY m_ab (a, b), UNIQUE KEY k_c (c) IGNORED);
         INSERT INTO big SELECT seq, seq % 10, seq FROM seq_1_to_{BIG};"
    ))
    .await
    .unwrap();
    let url = my_url(db);
    let (out, state) = (temp_dir("my-keep-key-out"), temp_dir("my-keep-key-state"));
    let extra = ["--commit-interval", "100ms", "--snapshot-chunk-rows", "2000"];
    let mut args = replicate_args(&url, "big", &out, &state, &extra);
    kill_9_at_shares(&args, &state, BIG as u64, &[0.3]).await;
    assert_eq!(plan_key(&state, ".big"), ["a", "b"], "the ignored index is no chunk key");
    // One column: planned afresh, it would be chosen over (a, b).
    conn.query_drop("ALTER TABLE big ALTER INDEX k_c NOT IGNORED").await.unwrap();
    // Changes in the ranges left, before the resumed run reads them.
    conn.query_drop(format!("INSERT INTO big VALUES ({new}, 0, {new}); UPDATE big SET c = -c WHERE a = {BIG}", new = BIG + 1))
        .await
        .unwrap();
    args.extend(["--until".into(), "now".into()]);
    let log = stderr(&tokio::task::spawn_blocking(move || riffle_ok(&args)).await.unwrap());
    assert!(log.contains("snapshot round"), "{log}");
    let events = read_jsonl(&out, &format!("{db}.big"));
    let a: Vec<i64> = events.iter().filter(|e| e["op"] == "r").map(|e| e["after"]["a"].as_i64().unwrap()).collect();
    assert_eq!(a.len(), BIG as usize + 1, "every row read once");
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), a.len(), "no row read twice");
    let of = |row: i64| -> Vec<(String, Json)> {
        events.iter().filter(|e| e["after"]["a"] == row).map(|e| (e["op"].as_str().unwrap().to_string(), e["key"].clone())).collect()
    };
    let key = |a: i64, b: i64| serde_json::json!({ "a": a, "b": b });
    assert_eq!(of(BIG + 1), [("c".into(), key(BIG + 1, 0)), ("r".into(), key(BIG + 1, 0))], "the insert, then its read");
    assert_eq!(of(BIG), [("u".into(), key(BIG, BIG % 10)), ("r".into(), key(BIG, BIG % 10))], "the update, then the row's read");
    let rows = source_rows(&mut conn, "big", "JSON_OBJECT('a', a, 'b', b, 'c', c)").await;
    assert_replays("big", &events, &["a", "b"], &rows);
}
