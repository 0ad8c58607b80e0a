//! The source restarted mid-stream: riffle reconnects and continues with no
//! loss. A heartbeat advances an idle slot's confirmed position.

use crate::support::*;

fn restart_url(db: &str) -> String {
    let admin = std::env::var("RIFFLE_TEST_PG_RESTART_URL").expect("RIFFLE_TEST_PG_RESTART_URL: run scripts/test.sh");
    format!("{}/{db}", admin.rsplit_once('/').unwrap().0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_restart_mid_stream_loses_nothing() {
    let admin = connect(&std::env::var("RIFFLE_TEST_PG_RESTART_URL").unwrap()).await;
    let db = "it_restart";
    admin.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap();
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.unwrap();
    admin.batch_execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    drop(admin);
    let url = restart_url(db);
    let client = connect(&url).await;
    client.batch_execute("CREATE TABLE r (id int PRIMARY KEY, v int)").await.unwrap();
    let (out, state) = (temp_dir("restart-out"), temp_dir("restart-state"));
    let (o, s) = (out.to_str().unwrap().to_string(), state.to_str().unwrap().to_string());
    let args =
        ["replicate", "--source", &url, "--tables", "r", "--sink", &o, "--state", &s, "--commit-interval", "100ms", "--max-retries", "30"];
    let log = state.join("riffle.log");
    let mut child = spawn_riffle(&args, None, &log);
    wait_for("the snapshot", 30, || {
        std::fs::read_to_string(state.join("riffle_it_restart_fff2a1ee.json")).is_ok() || log_has(&log, "streaming started")
    })
    .await;
    client.batch_execute("INSERT INTO r SELECT g, 1 FROM generate_series(1, 100) g").await.unwrap();
    wait_for("the first batch", 30, || read_jsonl(&out, "public.r").len() == 100).await;

    let cmd = std::env::var("RIFFLE_TEST_PG_RESTART_CMD").unwrap();
    // The restarted server inherits the command's stdout/stderr: don't capture them.
    let restarted = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(restarted.success(), "{cmd} failed");
    let client = connect(&url).await;
    client.batch_execute("INSERT INTO r SELECT g, 2 FROM generate_series(101, 200) g; UPDATE r SET v = 3 WHERE id <= 10;").await.unwrap();
    wait_for("the changes after the restart", 60, || read_jsonl(&out, "public.r").len() == 210).await;
    assert!(log_has(&log, "transient error, retrying"), "the restart was noticed and retried");
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    let events = read_jsonl(&out, "public.r");
    assert_eq!(replay(&events, "id"), table_as_json(&client, "r", "id").await);
}

fn log_has(log: &std::path::Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_advances_an_idle_slot() {
    let db = "it_heartbeat";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE idle (id int PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("hb-out"), temp_dir("hb-state"));
    let args = [
        "replicate",
        "--source",
        &db_url(db),
        "--tables",
        "idle",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--name",
        "it_heartbeat_pipe",
        "--commit-interval",
        "100ms",
        "--heartbeat-interval",
        "1s",
    ];
    let log = state.join("riffle.log");
    let mut child = spawn_riffle(&args, None, &log);
    wait_for("streaming", 30, || log_has(&log, "streaming started")).await;
    // WAL written elsewhere on the server; the pipeline's own table stays idle.
    let other = fresh_db("it_heartbeat_other").await;
    other.batch_execute("CREATE TABLE busy AS SELECT g FROM generate_series(1, 10000) g").await.unwrap();
    let target: String = other.query_one("SELECT pg_current_wal_lsn()::text", &[]).await.unwrap().get(0);
    let admin = connect(&admin_url()).await;
    let mut advanced = false;
    for _ in 0..150 {
        let row = admin
            .query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'it_heartbeat_pipe'",
                &[&target],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            advanced = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(advanced, "the idle slot's confirmed_flush_lsn passed {target} within 15 s (server keepalives alone come every 30 s)");
    assert!(read_jsonl(&out, "public.idle").is_empty());
}
