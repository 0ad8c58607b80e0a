//! MariaDB: snapshot + binlog consistency under a concurrent writer, kill -9
//! and restart, DDL mid-stream, and bad input.

use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

async fn table_rows(conn: &mut mysql_async::Conn, table: &str) -> BTreeMap<i64, serde_json::Value> {
    let rows: Vec<(i64, i64, Option<String>)> = conn.query(format!("SELECT id, v, note FROM {table}")).await.unwrap();
    rows.into_iter().map(|(id, v, note)| (id, json!({"id": id, "v": v, "note": note}))).collect()
}

async fn writer(db: &'static str, stop: Arc<AtomicBool>) -> u64 {
    let mut conn = my_fresh_conn(db).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = (n as i64 * 7919) % 5000 + 1;
        conn.query_drop(format!(
            "START TRANSACTION; INSERT INTO acct VALUES ({}, {n}, 'w{n}'); UPDATE acct SET v = v + 1, note = 'u{n}' WHERE id = {k}; \
             DELETE FROM acct WHERE id = {}; COMMIT;",
            1_000_000 + n,
            (k * 13) % 5000 + 1
        ))
        .await
        .unwrap();
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_binlog_under_concurrent_writes_reproduces_the_table() {
    let db = "it_my_consistency";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE acct (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, note VARCHAR(50))").await.unwrap();
    conn.query_drop("INSERT INTO acct SELECT seq, seq, REPEAT('x', 40) FROM seq_1_to_5000").await.unwrap();
    let (out, state) = (temp_dir("my-cons-out"), temp_dir("my-cons-state"));
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(db, stop.clone()));
    wait_for_async("the writer's first 20 transactions", 30, async || {
        let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM acct WHERE id >= 1000000").await.unwrap();
        n.unwrap_or(0) >= 20
    })
    .await;
    let url = my_url(db);
    let args: Vec<String> = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "acct",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "200ms",
        "--until",
        "now",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a = args.clone();
    tokio::task::spawn_blocking(move || riffle_ok(&a.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(w.await.unwrap() > 20);
    riffle_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let events = read_jsonl(&out, &format!("{db}.acct"));
    let snapshot = events.iter().filter(|e| e["op"] == "r").count();
    assert!(snapshot > 0 && snapshot < events.len());
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions strictly increase: nothing duplicated");
    assert_eq!(replay(&events, "id"), table_rows(&mut conn, "acct").await);
}

/// Batch `b` of changes: 100 inserts, updates of every 7th row so far, 10 deletes.
fn change(b: i64) -> String {
    format!(
        "INSERT INTO acct SELECT seq, 0, 'n' FROM seq_{}_to_{}; UPDATE acct SET v = v + 1 WHERE id % 7 = 0; DELETE FROM acct WHERE id % 10 = 3;",
        b * 100 + 1,
        b * 100 + 100
    )
}

/// (op, GTID, ids) identifies a change printed on stdout; the value is its position.
fn by_change(stdout_file: &std::path::Path) -> HashMap<String, String> {
    std::fs::read_to_string(stdout_file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| {
            (format!("{}|{}|{}|{}", e["op"], e["source"]["gtid"], e["after"]["id"], e["before"]["id"]), e["source"]["position"].to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_binlog_then_restart_loses_nothing() {
    let db = "it_my_crash";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE acct (id BIGINT PRIMARY KEY, v BIGINT NOT NULL, note VARCHAR(50))").await.unwrap();
    let (out, state) = (temp_dir("my-crash-out"), temp_dir("my-crash-state"));
    let url = my_url(db);
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let args = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "acct",
        "--sink",
        &o,
        "--state",
        &s,
        "--commit-interval",
        "100ms",
        "--max-file-rows",
        "50",
    ];
    riffle_ok(&[&args[..], &["--until", "now"]].concat());
    // A second sink on stdout (at-least-once) shows what a restart replays.
    let stdout1 = state.join("run1.jsonl");
    let with_stdout = [&args[..], &["--sink", "-"]].concat();
    let mut child = spawn_riffle(&with_stdout, Some(&stdout1), &state.join("run1.log"));
    for b in 0..20 {
        conn.query_drop(change(b)).await.unwrap();
    }
    // Let some commits land.
    wait_for("committed files", 30, || data_files(&out, &format!("{db}.acct")).len() > 2).await;
    // Kill without warning mid-stream, once there is something to replay:
    // stdout is flushed at each commit and, between commits, whenever its
    // buffer fills, so riffle is frozen until stdout holds a change no
    // committed file holds yet. The saved position is behind such a change
    // (it is saved after the files are renamed): the restart must print it
    // again.
    let mut next = 20;
    let mut uncommitted = Vec::new();
    kill_9_when(&mut child, "printed changes not yet committed", 60, async || {
        let committed: HashSet<String> =
            read_jsonl(&out, &format!("{db}.acct")).iter().map(|e| e["source"]["position"].to_string()).collect();
        uncommitted = by_change(&stdout1).into_iter().filter(|(_, pos)| !committed.contains(pos)).map(|(k, _)| k).collect();
        if uncommitted.is_empty() {
            // Not yet: another batch for riffle to read when it runs on.
            conn.query_drop(change(next)).await.unwrap();
            next += 1;
        }
        !uncommitted.is_empty()
    })
    .await;
    for b in next..next + 19 {
        conn.query_drop(change(b)).await.unwrap();
    }
    let stdout2 = state.join("run2.jsonl");
    let second =
        riffle_cmd(&[&with_stdout[..], &["--until", "now"]].concat()).stdout(std::fs::File::create(&stdout2).unwrap()).output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));
    let events = read_jsonl(&out, &format!("{db}.acct"));
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "each change once, in order");
    // A change printed by both runs (a replay) carries the same position both times.
    let (p1, p2) = (by_change(&stdout1), by_change(&stdout2));
    assert!(!uncommitted.is_empty());
    for k in &uncommitted {
        assert_eq!(p2.get(k), Some(&p1[k]), "change {k} was printed but not committed at the kill: the restart prints it again");
    }
    for (k, pos) in &p2 {
        if let Some(first) = p1.get(k) {
            assert_eq!(first, pos, "replayed change {k} moved");
        }
    }
    assert_eq!(replay(&events, "id"), table_rows(&mut conn, "acct").await);
    assert!(temp_files(&out).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn ddl_mid_stream_keeps_rows_decoding_right() {
    let db = "it_my_ddl";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, a INT, b VARCHAR(10))").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1, 10, 'x')").await.unwrap();
    let (out, state) = (temp_dir("my-ddl-out"), temp_dir("my-ddl-state"));
    let url = my_url(db);
    let args = replicate_args(&url, "t", &out, &state, &["--until", "now"]);
    riffle_ok(&args);
    // Every DDL lands in the binlog before riffle reads it: the rows before
    // each one must still decode with the columns they were written with.
    conn.query_drop("INSERT INTO t VALUES (2, 20, 'y')").await.unwrap();
    conn.query_drop("ALTER TABLE t ADD COLUMN c DATE").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (3, 30, 'z', '2024-01-02')").await.unwrap();
    conn.query_drop("ALTER TABLE t DROP COLUMN b").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (4, 40, '2024-01-03')").await.unwrap();
    conn.query_drop("ALTER TABLE t RENAME COLUMN a TO amount").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (5, 50, NULL)").await.unwrap();
    conn.query_drop("ALTER TABLE t MODIFY amount VARCHAR(20)").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (6, 'sixty', '2024-01-04')").await.unwrap();
    // An ENUM whose labels move: old rows keep the label they were written with.
    conn.query_drop("ALTER TABLE t ADD COLUMN s ENUM('new', 'paid')").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (7, 'seventy', NULL, 'paid')").await.unwrap();
    conn.query_drop("ALTER TABLE t MODIFY s ENUM('new', 'pending', 'paid')").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (8, 'eighty', NULL, 'pending')").await.unwrap();
    riffle_ok(&args);
    let events = read_jsonl(&out, &format!("{db}.t"));
    let afters: Vec<serde_json::Value> = events.iter().map(|e| e["after"].clone()).collect();
    assert_eq!(
        afters,
        vec![
            json!({"id": 1, "a": 10, "b": "x"}),
            json!({"id": 2, "a": 20, "b": "y"}),
            json!({"id": 3, "a": 30, "b": "z", "c": "2024-01-02"}),
            json!({"id": 4, "a": 40, "c": "2024-01-03"}),
            json!({"id": 5, "amount": 50, "c": null}),
            json!({"id": 6, "amount": "sixty", "c": "2024-01-04"}),
            json!({"id": 7, "amount": "seventy", "c": null, "s": "paid"}),
            json!({"id": 8, "amount": "eighty", "c": null, "s": "pending"}),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn misconfigured_servers_and_bad_logins_are_explained() {
    let out = temp_dir("my-errors-out");
    let state = temp_dir("my-errors-state");
    let (o, s) = (out.to_str().unwrap(), state.to_str().unwrap());
    // No binary log, statement format, minimal images: all reported at once.
    let nocdc = std::env::var("RIFFLE_TEST_MARIADB_NOCDC_URL").expect("run scripts/test.sh");
    let base = nocdc.rsplit_once('/').unwrap().0.to_string();
    let mut admin = mysql_async::Conn::from_url(&format!("{}/mysql", base.replacen("mariadb://", "mysql://", 1))).await.unwrap();
    admin.query_drop("CREATE DATABASE IF NOT EXISTS it_nocdc").await.unwrap();
    admin.query_drop("CREATE TABLE IF NOT EXISTS it_nocdc.t (id INT PRIMARY KEY)").await.unwrap();
    admin.query_drop("SET GLOBAL binlog_expire_logs_seconds = 60").await.unwrap();
    let db_url = format!("{base}/it_nocdc");
    let bad = riffle(&["replicate", "--source", &db_url, "--tables", "t", "--sink", o, "--state", s, "--max-retries", "0"]);
    let err = stderr(&bad);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    for needle in [
        "log_bin: expected ON, found OFF",
        "binlog_format: expected ROW, found STATEMENT",
        "binlog_row_image: expected FULL, found MINIMAL",
        "fix:",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    // Wrong password.
    let wrong = my_url("mysql").replacen(":riffle-test-pw@", ":nope@", 1);
    let denied = riffle(&["sync", "--source", &wrong, "--tables", "mysql.db", "--sink", o]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("rejected the login") && !stderr(&denied).contains("nope"), "{}", stderr(&denied));
    // A user without replication privileges.
    let mut conn = my_fresh_db("it_my_errors").await;
    conn.query_drop(
        "CREATE TABLE t (id INT PRIMARY KEY);
         CREATE TABLE u (id INT NOT NULL, n INT NULL, UNIQUE KEY (n), UNIQUE KEY (id));
         CREATE TABLE n (id INT NULL, UNIQUE KEY (id))",
    )
    .await
    .unwrap();
    conn.query_drop("DROP USER IF EXISTS 'noreplic'@'127.0.0.1'").await.unwrap();
    conn.query_drop("CREATE USER 'noreplic'@'127.0.0.1' IDENTIFIED BY 'pw'").await.unwrap();
    conn.query_drop("GRANT SELECT ON it_my_errors.* TO 'noreplic'@'127.0.0.1'").await.unwrap();
    let weak = my_url("it_my_errors").replacen("riffle:riffle-test-pw@", "noreplic:pw@", 1);
    let refused = riffle(&["replicate", "--source", &weak, "--tables", "t", "--sink", o, "--state", s, "--max-retries", "0"]);
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("expected REPLICATION SLAVE") && err.contains("GRANT REPLICATION SLAVE ON *.* TO 'noreplic'@'%';"), "{err}");
    // A table that does not exist.
    let missing = riffle(&["sync", "--source", &my_url("it_my_errors"), "--tables", "nope", "--sink", o]);
    assert!(stderr(&missing).contains("table does not exist: it_my_errors.nope"), "{}", stderr(&missing));
    // `riffle check` lists the same problems and exits 1; a good setup exits 0.
    let check = riffle(&["check", "--source", &db_url, "--tables", "t", "--sink", o]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stdout).contains("FAIL  binlog_format: expected ROW, found STATEMENT"));
    let good = riffle(&["check", "--source", &my_url("it_my_errors"), "--tables", "*", "--sink", o]);
    let said = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success(), "{said}");
    // Which columns key each table's events: the primary key, else the
    // unique index over NOT NULL columns the server reports in its place.
    assert!(said.contains("table it_my_errors.t: primary key,"), "{said}");
    assert!(said.contains("table it_my_errors.u: no primary key: events keyed by its unique index over NOT NULL columns,"), "{said}");
    assert!(said.contains("table it_my_errors.n: no primary key or unique index over NOT NULL columns (events carry no key),"), "{said}");
    conn.query_drop("INSERT INTO u VALUES (7, NULL); INSERT INTO n VALUES (NULL)").await.unwrap();
    let keys = temp_dir("my-keys");
    riffle_ok(&["sync", "--source", &my_url("it_my_errors"), "--tables", "u", "--tables", "n", "--sink", keys.to_str().unwrap()]);
    assert_eq!(read_jsonl(&keys, "it_my_errors.u")[0]["key"], serde_json::json!({ "id": 7 }));
    assert_eq!(read_jsonl(&keys, "it_my_errors.n")[0]["key"], serde_json::Value::Null);
}

/// Edits the saved offset of the only pipeline in `state`.
fn edit_offset(state: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = std::fs::read_dir(state).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|e| e == "json")).unwrap();
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut saved["offset"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&saved).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_by_gtid_and_a_purged_position() {
    let db = "it_my_resume";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (1, 1)").await.unwrap();
    let (out, state) = (temp_dir("my-resume-out"), temp_dir("my-resume-state"));
    let url = my_url(db);
    let args = replicate_args(&url, "t", &out, &state, &["--until", "now", "--max-retries", "0"]);
    riffle_ok(&args);
    // A transaction in a second replication domain: the saved position
    // keeps one GTID per domain.
    conn.query_drop("SET SESSION gtid_domain_id = 7").await.unwrap();
    conn.query_drop("INSERT INTO t VALUES (2, 2)").await.unwrap();
    conn.query_drop("SET SESSION gtid_domain_id = 0").await.unwrap();
    riffle_ok(&args);
    edit_offset(&state, |o| {
        let g = o["gtid"].as_str().unwrap().to_string();
        assert!(g.split(',').any(|p| p.starts_with("0-1-")) && g.split(',').any(|p| p.starts_with("7-1-")), "{g}");
    });
    conn.query_drop("INSERT INTO t VALUES (3, 3)").await.unwrap();
    // As after a failover: the saved file does not exist on this server, the
    // GTID does. MariaDB resumes by GTID.
    // The saved file is not on this server (as after a failover): with a
    // GTID, MariaDB resumes by GTID.
    edit_offset(&state, |o| {
        assert!(o["gtid"].as_str().is_some(), "a GTID is saved with the position: {o}");
        o["file"] = json!("mariadb-bin.000000");
        o["pos"] = json!(4);
    });
    let resumed = riffle_ok(&args);
    assert!(stderr(&resumed).contains("streaming started gtid="), "{}", stderr(&resumed));
    let events = read_jsonl(&out, &format!("{db}.t"));
    let ops: Vec<(&str, i64)> = events.iter().map(|e| (e["op"].as_str().unwrap(), e["after"]["id"].as_i64().unwrap())).collect();
    assert_eq!(ops, [("r", 1), ("c", 2), ("c", 3)]);
    // `riffle status` with the source: the saved file is on the server, nothing behind.
    let status = riffle_ok(&["status", "--state", state.to_str().unwrap(), "--source", &url, "--json"]);
    let saved: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(saved[0]["binlog"]["saved_file_on_server"], true, "{saved}");
    // A failover to a server whose binlog numbering is behind the saved
    // position: positions would go backwards, so riffle stops and says why.
    edit_offset(&state, |o| o["file"] = json!("mariadb-bin.999999"));
    let behind = riffle(&args);
    assert_eq!(behind.status.code(), Some(1));
    assert!(stderr(&behind).contains("numbered below the saved mariadb-bin.999999"), "{}", stderr(&behind));
    // A position whose binlog is gone (no GTID to fall back on): a definite
    // error that says so and how to recover, never a silent skip.
    edit_offset(&state, |o| {
        o["gtid"] = serde_json::Value::Null;
        o["file"] = json!("mariadb-bin.000000");
    });
    let purged = riffle(&args);
    let err = stderr(&purged);
    assert_eq!(purged.status.code(), Some(1), "{err}");
    assert!(err.contains("was purged") && err.contains("take a new snapshot"), "{err}");
    let status = riffle_ok(&["status", "--state", state.to_str().unwrap(), "--source", &url]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("NO LONGER on the server"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_table_is_read_in_key_chunks_without_gaps() {
    let db = "it_my_chunks";
    let mut conn = my_fresh_db(db).await;
    // More rows than three chunks of 100,000, with gaps in the key.
    conn.query_drop("CREATE TABLE big (id BIGINT PRIMARY KEY, v INT)").await.unwrap();
    conn.query_drop("INSERT INTO big SELECT seq * 3, seq FROM seq_1_to_250000").await.unwrap();
    let out = temp_dir("my-chunks-out");
    riffle_ok(&["sync", "--source", &my_url(db), "--tables", "big", "--sink", out.to_str().unwrap(), "--format", "csv", "--no-metadata"]);
    let (header, rows) = read_csv(&out, &format!("{db}.big"));
    assert_eq!(header, ["id", "v"]);
    let mut ids: Vec<i64> = rows.iter().map(|r| r[0].as_deref().unwrap().parse().unwrap()).collect();
    assert_eq!(ids.len(), 250_000);
    // Several workers read key ranges at once: rows come in chunk order.
    ids.sort_unstable();
    assert!(ids.iter().enumerate().all(|(i, id)| *id == (i as i64 + 1) * 3), "every row once");
}

#[tokio::test(flavor = "multi_thread")]
async fn savepoints_stay_inside_their_transaction() {
    let db = "it_my_savepoint";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("my-sp-out"), temp_dir("my-sp-state"));
    let url = my_url(db);
    let args = replicate_args(&url, "t", &out, &state, &["--until", "now"]);
    riffle_ok(&args);
    // What ORMs' nested transactions write.
    conn.query_drop("START TRANSACTION; INSERT INTO t VALUES (1); SAVEPOINT s1; INSERT INTO t VALUES (2); RELEASE SAVEPOINT s1; COMMIT;")
        .await
        .unwrap();
    riffle_ok(&args);
    let events = read_jsonl(&out, &format!("{db}.t"));
    assert_eq!(events.len(), 2);
    // One transaction: the same start position and GTID, numbered 1 and 2.
    assert_eq!(events[0]["source"]["pos"], events[1]["source"]["pos"]);
    assert_eq!(events[0]["source"]["gtid"], events[1]["source"]["gtid"]);
    let seqs: Vec<&str> = events.iter().map(|e| &e["source"]["position"].as_str().unwrap()[20..]).collect();
    assert_eq!(seqs, ["x0000000001", "x0000000002"]);
}
