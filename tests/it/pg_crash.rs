//! `kill -9` in the middle of the stream or of the snapshot: nothing lost,
//! nothing duplicated in the files, replays carry their first position, and
//! no partial file is ever visible under a final name.

use crate::support::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;

fn positions_by_change(stdout_file: &Path) -> HashMap<(String, String, String), String> {
    // (op, txId, total_order) identifies a change; the value is its position.
    let text = std::fs::read_to_string(stdout_file).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["op"] != "r")
        .map(|e| {
            (
                (e["op"].to_string(), e["source"]["txId"].to_string(), e["transaction"]["total_order"].to_string()),
                e["source"]["position"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Batch `n` of changes: 100 inserts, updates of every 7th row so far, 10 deletes.
fn change(batch: i32) -> String {
    format!(
        "BEGIN; INSERT INTO items SELECT g, 0 FROM generate_series({0} * 100 + 1, {0} * 100 + 100) g; \
         UPDATE items SET v = v + 1 WHERE id % 7 = 0; DELETE FROM items WHERE id % 10 = 3; COMMIT;",
        batch
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_stream_then_restart_loses_and_duplicates_nothing() {
    let db = "it_crash_stream";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL)").await.unwrap();
    let url = db_url(db);
    let out = temp_dir("crash-stream-out");
    let state = temp_dir("crash-stream-state");
    let stdout1 = state.join("run1.jsonl");
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let args = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "items",
        "--sink",
        &o,
        "--sink",
        "-",
        "--state",
        &s,
        "--commit-interval",
        "100ms",
        "--max-file-rows",
        "50",
    ];
    // Take the (empty) snapshot first, then stream in the background.
    riffle_ok(&[&args[..], &["--until", "now"]].concat());
    let mut child = spawn_riffle(&args, Some(&stdout1), &state.join("run1.log"));
    for batch in 0..20 {
        client.batch_execute(&change(batch)).await.unwrap();
    }
    // Let some commits land.
    wait_for("committed files", 30, || data_files(&out, "public.items").len() > 2).await;
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
            read_jsonl(&out, "public.items").iter().map(|e| e["source"]["position"].as_str().unwrap().to_string()).collect();
        uncommitted = positions_by_change(&stdout1).into_iter().filter(|(_, pos)| !committed.contains(pos)).map(|(k, _)| k).collect();
        if uncommitted.is_empty() {
            // Not yet: another batch for riffle to read when it runs on.
            client.batch_execute(&change(next)).await.unwrap();
            next += 1;
        }
        !uncommitted.is_empty()
    })
    .await;
    let committed_files = data_files(&out, "public.items").len();
    for batch in next..next + 19 {
        client.batch_execute(&change(batch)).await.unwrap();
    }
    assert!(committed_files > 2);
    let stdout2 = state.join("run2.jsonl");
    let second = riffle_cmd(&[&args[..], &["--until", "now"]].concat()).stdout(std::fs::File::create(&stdout2).unwrap()).output().unwrap();
    assert!(second.status.success(), "{}", stderr(&second));

    let events = read_jsonl(&out, "public.items");
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "the files hold each change once, in order");
    assert_eq!(replay(&events, "id"), table_as_json(&client, "items", "id").await, "nothing lost");
    assert!(temp_files(&out).is_empty(), "no temporary file left: {:?}", temp_files(&out));

    // Replays on stdout (at-least-once) carry the position they had the first time.
    let (p1, p2) = (positions_by_change(&stdout1), positions_by_change(&stdout2));
    assert!(!uncommitted.is_empty());
    for k in &uncommitted {
        assert_eq!(p2.get(k), Some(&p1[k]), "change {k:?} was printed but not committed at the kill: the restart prints it again");
    }
    let replayed: Vec<_> = p2.iter().filter(|(k, _)| p1.contains_key(*k)).collect();
    for (k, pos) in &replayed {
        assert_eq!(&p1[*k], *pos, "replayed change {k:?} moved");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_snapshot_leaves_nothing_visible_and_restarts_clean() {
    let db = "it_crash_snapshot";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE big (id bigint PRIMARY KEY, pad text); INSERT INTO big SELECT g, repeat('p', 100) FROM generate_series(1, 300000) g;")
        .await
        .unwrap();
    let url = db_url(db);
    let out = temp_dir("crash-snap-out");
    let state = temp_dir("crash-snap-state");
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    // No chunk is committed before the kill (an hour between commits): the
    // snapshot has nothing to resume from and starts over.
    let args = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "big",
        "--sink",
        &o,
        "--state",
        &s,
        "--max-file-rows",
        "10000",
        "--until",
        "now",
        "--commit-interval",
        "1h",
    ];
    let mut child = spawn_riffle(&args, None, &state.join("run1.log"));
    wait_for("a rolled temporary file", 60, || temp_files(&out).len() >= 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(data_files(&out, "public.big").is_empty(), "an interrupted snapshot must not look complete");

    client.batch_execute("INSERT INTO big VALUES (300001, 'late')").await.unwrap();
    let rerun = riffle_ok(&args);
    assert!(stderr(&rerun).contains("interrupted snapshot"), "{}", stderr(&rerun));
    let events = read_jsonl(&out, "public.big");
    assert_eq!(events.len(), 300_001);
    assert!(events.iter().all(|e| e["op"] == "r"));
    assert!(temp_files(&out).is_empty());
    let admin = connect(&admin_url()).await;
    let slots: i64 = admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 1, "the interrupted snapshot's slot was replaced, not leaked");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_and_saves_the_position() {
    let db = "it_sigterm";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let url = db_url(db);
    let out = temp_dir("sigterm-out");
    let state = temp_dir("sigterm-state");
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args =
        ["replicate", "--source", &url, "--tables", "t", "--sink", &o, "--state", &s, "--commit-interval", "1h", "--metrics-addr", &addr];
    let log = temp_dir("sigterm-log").join("riffle.log");
    let mut child = spawn_riffle(&args, None, &log);
    let saved_done = || {
        std::fs::read_dir(&state)
            .into_iter()
            .flatten()
            .flatten()
            .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("\"snapshot\": \"done\"")))
    };
    wait_for("the snapshot to commit", 30, saved_done).await;
    client.batch_execute("INSERT INTO t SELECT generate_series(1, 10)").await.unwrap();
    // The commit interval is an hour: only the graceful stop can commit these.
    // Stop once riffle has written them to the sink (uncommitted).
    let inserts = "riffle_events_total{table=\"public.t\",sink=\"sink0\",op=\"c\"}";
    wait_for("the inserts in the metrics", 30, || http_get(port, "/metrics").and_then(|(_, b)| metric(&b, inserts)) == Some(10.0)).await;
    assert!(read_jsonl(&out, "public.t").is_empty(), "nothing is committed before the stop");
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "SIGTERM must exit 0, got {exit}");
    let events = read_jsonl(&out, "public.t");
    assert_eq!(events.iter().filter(|e| e["op"] == "c").count(), 10, "the inserts were flushed on stop");
    let status = riffle_ok(&["status", "--state", &s, "--json"]);
    let saved: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(saved[0]["events"], 10);
    assert_eq!(saved[0]["snapshot"], "done");
}
