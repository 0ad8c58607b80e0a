//! The snapshot and the stream together reproduce the source exactly, even
//! when a writer keeps changing the table while the snapshot runs.

use crate::support::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Inserts, updates and deletes in small transactions until `stop`.
async fn writer(url: String, table: &'static str, stop: Arc<AtomicBool>) -> u64 {
    let client = connect(&url).await;
    let mut n = 0u64;
    let mut next_id = 1_000_000i64;
    while !stop.load(Ordering::Relaxed) {
        let k = (n as i64 * 7919) % 20_000 + 1;
        let sql = format!(
            "BEGIN;
             INSERT INTO {table} (id, v, note) VALUES ({next_id}, {n}, 'w{n}');
             UPDATE {table} SET v = v + 1, note = 'u{n}' WHERE id = {k};
             DELETE FROM {table} WHERE id = {};
             COMMIT;",
            (k * 13) % 20_000 + 1
        );
        client.batch_execute(&sql).await.unwrap();
        next_id += 1;
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_then_stream_under_concurrent_writes_reproduces_the_table() {
    let db = "it_consistency";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE acct (id bigint PRIMARY KEY, v bigint NOT NULL, note text);
             INSERT INTO acct SELECT g, g, repeat('x', 50) FROM generate_series(1, 20000) g;",
        )
        .await
        .unwrap();
    let url = db_url(db);
    let out = temp_dir("consistency-out");
    let state = temp_dir("consistency-state");
    let stop = Arc::new(AtomicBool::new(false));
    let w = tokio::spawn(writer(url.clone(), "acct", stop.clone()));
    // Let the writer get going so the snapshot overlaps it.
    let seen = connect(&url).await;
    wait_for_async("the writer's first 20 transactions", 30, async || {
        let n: i64 = seen.query_one("SELECT count(*) FROM acct WHERE id >= 1000000", &[]).await.unwrap().get(0);
        n >= 20
    })
    .await;
    let args = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "public.acct",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "200ms",
        "--until",
        "now",
    ];
    let first = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        move || riffle_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap();
    assert!(stderr(&first).contains("reached --until"), "{}", stderr(&first));
    stop.store(true, Ordering::Relaxed);
    let writes = w.await.unwrap();
    assert!(writes > 20, "the writer made {writes} transactions");
    // Catch up with what the writer did after the first run's target.
    riffle_ok(&args);

    let events = read_jsonl(&out, "public.acct");
    let snapshot = events.iter().filter(|e| e["op"] == "r").count();
    assert!(snapshot > 0 && snapshot < events.len(), "both snapshot rows and changes are expected");
    // Positions are unique and increasing: nothing duplicated.
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions must strictly increase");
    assert_eq!(replay(&events, "id"), table_as_json(&client, "acct", "id").await, "replaying the output must give the table");
}
