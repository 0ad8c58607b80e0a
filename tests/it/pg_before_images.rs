//! Before images with and without REPLICA IDENTITY FULL, unchanged TOAST
//! values, truncates, and tables without a primary key.

use crate::support::*;
use serde_json::json;

/// A value big enough, and random enough, to be stored out of line (TOAST).
const BIG: &str = "(SELECT string_agg(md5(g::text), '') FROM generate_series(1, 400) g)";

#[tokio::test(flavor = "multi_thread")]
async fn before_images_toast_and_truncate() {
    let db = "it_before";
    let client = fresh_db(db).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE keyed (id int PRIMARY KEY, n int, big text);
             CREATE TABLE full_img (id int PRIMARY KEY, n int, big text);
             ALTER TABLE full_img REPLICA IDENTITY FULL;
             INSERT INTO keyed VALUES (1, 1, {BIG}), (2, 2, 'small');
             INSERT INTO full_img VALUES (1, 1, {BIG}), (2, 2, 'small');"
        ))
        .await
        .unwrap();
    let big: String = client.query_one(&format!("SELECT {BIG}"), &[]).await.unwrap().get(0);
    let url = db_url(db);
    let (out, csv_out, state) = (temp_dir("before-out"), temp_dir("before-csv"), temp_dir("before-state"));
    let args = |until: bool| {
        let mut a: Vec<String> = ["replicate", "--source", &url, "--tables", "public.keyed", "--tables", "public.full_img", "--state"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(state.to_str().unwrap().into());
        a.extend(["--sink".into(), out.to_str().unwrap().into()]);
        if until {
            a.extend(["--until".into(), "now".into()]);
        }
        a
    };
    let run = |a: Vec<String>| riffle_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    run(args(true));
    client
        .batch_execute(
            "UPDATE keyed SET n = 10 WHERE id = 1; UPDATE full_img SET n = 10 WHERE id = 1;
             UPDATE keyed SET id = 20 WHERE id = 2;
             DELETE FROM keyed WHERE id = 1; DELETE FROM full_img WHERE id = 2;
             TRUNCATE full_img;",
        )
        .await
        .unwrap();
    run(args(true));

    let keyed: Vec<_> = read_jsonl(&out, "public.keyed").into_iter().filter(|e| e["op"] != "r").collect();
    let full: Vec<_> = read_jsonl(&out, "public.full_img").into_iter().filter(|e| e["op"] != "r").collect();
    assert_eq!(keyed.len(), 3, "{keyed:#?}");
    assert_eq!(full.len(), 3, "{full:#?}");

    // Default identity: the before image is the key only; the unchanged
    // TOASTed column is absent from `after` (not sent), never null.
    assert_eq!(keyed[0]["op"], "u");
    assert_eq!(keyed[0]["before_image"], "key");
    assert_eq!(keyed[0]["before"], json!({"id": 1}));
    assert_eq!(keyed[0]["after"], json!({"id": 1, "n": 10}));
    // A key change sends the old key.
    assert_eq!(keyed[1]["before"], json!({"id": 2}));
    assert_eq!(keyed[1]["after"], json!({"id": 20, "n": 2, "big": "small"}));
    assert_eq!(keyed[2]["op"], "d");
    assert_eq!(keyed[2]["before"], json!({"id": 1}));
    assert_eq!(keyed[2]["after"], serde_json::Value::Null);

    // FULL: whole before images, and the unchanged TOAST value is known.
    assert_eq!(full[0]["before_image"], "full");
    assert_eq!(full[0]["before"], json!({"id": 1, "n": 1, "big": big}));
    assert_eq!(full[0]["after"], json!({"id": 1, "n": 10, "big": big}));
    assert_eq!(full[1]["op"], "d");
    assert_eq!(full[1]["before"], json!({"id": 2, "n": 2, "big": "small"}));
    assert_eq!(full[2]["op"], "t");
    assert_eq!(full[2]["before"], serde_json::Value::Null);

    // CSV marks the unavailable value instead of writing NULL.
    let mut a = args(true);
    let pos = a.iter().position(|x| x == out.to_str().unwrap()).unwrap();
    a[pos] = csv_out.to_str().unwrap().into();
    a.extend(["--format".into(), "csv".into(), "--name".into(), "before_csv".into()]);
    let state2 = temp_dir("before-state-csv");
    let spos = a.iter().position(|x| x == state.to_str().unwrap()).unwrap();
    a[spos] = state2.to_str().unwrap().into();
    run(a.clone());
    client
        .batch_execute("UPDATE keyed SET n = 11 WHERE id = 20; INSERT INTO keyed VALUES (5, 5, 'x'); UPDATE keyed SET n = 6 WHERE id = 5;")
        .await
        .unwrap();
    client.batch_execute(&format!("INSERT INTO keyed VALUES (7, 7, {BIG}); UPDATE keyed SET n = 8 WHERE id = 7;")).await.unwrap();
    run(a);
    let (header, rows) = read_csv(&csv_out, "public.keyed");
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let last = rows.last().unwrap();
    assert_eq!(last[col("__op")].as_deref(), Some("u"));
    assert_eq!(last[col("id")].as_deref(), Some("7"));
    assert_eq!(last[col("big")], None);
    assert_eq!(last[col("__unavailable")].as_deref(), Some("big"));
    assert_eq!(last[col("__before_image")].as_deref(), Some("key"));
    assert_eq!(last[col("__before")].as_deref(), Some("{\"id\":7}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_without_a_primary_key() {
    let db = "it_nokey";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE logs (msg text, n int); ALTER TABLE logs REPLICA IDENTITY FULL; INSERT INTO logs VALUES ('a', 1);
             CREATE TABLE bare (msg text);",
        )
        .await
        .unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir("nokey-out"), temp_dir("nokey-state"));
    let (o, s) = (out.to_str().unwrap(), state.to_str().unwrap());

    // Without a key or REPLICA IDENTITY FULL: refused before anything starts.
    let refused = riffle(&["replicate", "--source", &url, "--tables", "bare", "--sink", o, "--state", s, "--until", "now"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = stderr(&refused);
    assert!(err.contains("public.bare") && err.contains("REPLICA IDENTITY FULL") && err.contains("primary key"), "{err}");
    let admin = connect(&admin_url()).await;
    let slots: i64 = admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0, "nothing was created on the server");
    // The source table still accepts updates (it was not published).
    client.batch_execute("INSERT INTO bare VALUES ('x'); UPDATE bare SET msg = 'y'").await.unwrap();

    // With REPLICA IDENTITY FULL it replicates; events have no key.
    riffle_ok(&["replicate", "--source", &url, "--tables", "logs", "--sink", o, "--state", s, "--until", "now"]);
    client.batch_execute("UPDATE logs SET n = 2; DELETE FROM logs;").await.unwrap();
    riffle_ok(&["replicate", "--source", &url, "--tables", "logs", "--sink", o, "--state", s, "--until", "now"]);
    let events = read_jsonl(&out, "public.logs");
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "u", "d"]);
    assert!(events.iter().all(|e| e["key"].is_null()));
    assert_eq!(events[1]["before"], json!({"msg": "a", "n": 1}));
    assert_eq!(events[2]["before"], json!({"msg": "a", "n": 2}));
}

#[tokio::test(flavor = "multi_thread")]
async fn partitioned_generated_and_unlogged_tables() {
    let db = "it_table_kinds";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE events (id int, region text, qty int, price int, total int GENERATED ALWAYS AS (qty * price) STORED,
                                  PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
             CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
             INSERT INTO events (id, region, qty, price) VALUES (1, 'eu', 2, 5), (2, 'us', 3, 7);
             CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);",
        )
        .await
        .unwrap();
    let (out, state) = (temp_dir("kinds-out"), temp_dir("kinds-state"));
    let (o, s) = (out.to_str().unwrap(), state.to_str().unwrap());
    let url = db_url(db);
    // Unlogged tables are not in the WAL: refused with the fix.
    let refused = riffle(&["replicate", "--source", &url, "--tables", "scratch", "--sink", o, "--state", s]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("UNLOGGED") && stderr(&refused).contains("SET LOGGED"), "{}", stderr(&refused));

    // A partitioned table replicates under its own name, generated columns left out.
    riffle_ok(&["replicate", "--source", &url, "--tables", "events", "--sink", o, "--state", s, "--until", "now"]);
    client
        .batch_execute("INSERT INTO events (id, region, qty, price) VALUES (3, 'eu', 1, 1); UPDATE events SET qty = 10 WHERE id = 2;")
        .await
        .unwrap();
    riffle_ok(&["replicate", "--source", &url, "--tables", "events", "--sink", o, "--state", s, "--until", "now"]);
    let events = read_jsonl(&out, "public.events");
    let got: Vec<(String, serde_json::Value)> =
        events.iter().map(|e| (e["op"].as_str().unwrap().to_string(), e["after"].clone())).collect();
    let mut snapshot: Vec<_> = got[..2].to_vec();
    snapshot.sort_by_key(|(_, a)| a["id"].as_i64());
    assert_eq!(
        snapshot,
        vec![
            ("r".to_string(), json!({"id": 1, "region": "eu", "qty": 2, "price": 5})),
            ("r".to_string(), json!({"id": 2, "region": "us", "qty": 3, "price": 7})),
        ]
    );
    assert_eq!(
        got[2..].to_vec(),
        vec![
            ("c".to_string(), json!({"id": 3, "region": "eu", "qty": 1, "price": 1})),
            ("u".to_string(), json!({"id": 2, "region": "us", "qty": 10, "price": 7})),
        ]
    );
    assert!(data_files(&out, "public.events_eu").is_empty() && data_files(&out, "public.events_us").is_empty());
}
