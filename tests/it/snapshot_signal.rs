//! In-band signals (`--signal-table`, Debezium's shape): an insert of
//! `execute-snapshot` into the signal table makes a running pipeline read
//! the named tables again while it streams; the signal table's own rows go
//! to no sink; other tables are not read again; everything still replays to
//! the source.

use crate::support::*;

/// How many snapshot reads (`r`) of `table` the sink holds.
fn reads(out: &std::path::Path, table: &str) -> usize {
    read_jsonl(out, table).iter().filter(|e| e["op"] == "r").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_signal_reads_a_table_again() {
    let db = "it_signal_pg";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, v int); INSERT INTO a SELECT g, g FROM generate_series(1, 500) g;
             CREATE TABLE b (id int PRIMARY KEY); INSERT INTO b SELECT generate_series(1, 300);
             CREATE TABLE riffle_signal (id varchar(42) PRIMARY KEY, type varchar(32) NOT NULL, data varchar(2048))",
        )
        .await
        .unwrap();
    let (out, state) = (temp_dir("signal-pg-out"), temp_dir("signal-pg-state"));
    let args = replicate_args(
        &db_url(db),
        "public.a",
        &out,
        &state,
        &["--tables", "public.b", "--signal-table", "public.riffle_signal", "--commit-interval", "200ms"],
    );
    let log = state.join("riffle.log");
    let mut running = Running(spawn_riffle(&args, None, &log));
    wait_for("the pipeline to stream", 60, || log_count(&log, "streaming started") >= 1).await;
    wait_for("the snapshot committed", 60, || (reads(&out, "public.a"), reads(&out, "public.b")) == (500, 300)).await;
    client.batch_execute("UPDATE a SET v = -v WHERE id <= 10").await.unwrap();
    client
        .batch_execute(
            r#"INSERT INTO riffle_signal VALUES ('s1', 'execute-snapshot', '{"data-collections": ["public.a"], "type": "incremental"}')"#,
        )
        .await
        .unwrap();
    wait_for("a read again", 60, || reads(&out, "public.a") == 1000).await;
    client.batch_execute("DELETE FROM a WHERE id = 1; INSERT INTO b VALUES (301)").await.unwrap();
    wait_for("the changes after it", 60, || read_jsonl(&out, "public.b").len() == 301).await;
    assert_eq!(reads(&out, "public.b"), 300, "b is not read again");
    assert!(data_files(&out, "public.riffle_signal").is_empty(), "the signal table's rows go to no sink");
    assert_eq!(log_count(&log, "signal: reading tables again"), 1);
    signal(&running.0, "TERM");
    assert!(running.0.wait().unwrap().success());
    assert_eq!(replay(&read_jsonl(&out, "public.a"), "id"), table_as_json(&client, "a", "id").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_signal_reads_a_table_again() {
    use mysql_async::prelude::Queryable;
    let db = "it_signal_my";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT); INSERT INTO a SELECT seq, seq FROM seq_1_to_500;
         CREATE TABLE riffle_signal (id VARCHAR(42) PRIMARY KEY, type VARCHAR(32) NOT NULL, data VARCHAR(2048))",
    )
    .await
    .unwrap();
    let (out, state) = (temp_dir("signal-my-out"), temp_dir("signal-my-state"));
    let table = format!("{db}.a");
    let signal_table = format!("{db}.riffle_signal");
    let args = replicate_args(&my_url(db), &table, &out, &state, &["--signal-table", &signal_table, "--commit-interval", "200ms"]);
    let log = state.join("riffle.log");
    let mut running = Running(spawn_riffle(&args, None, &log));
    wait_for("the pipeline to stream", 60, || log_count(&log, "streaming started") >= 1).await;
    wait_for("the snapshot committed", 60, || reads(&out, &table) == 500).await;
    conn.query_drop(format!(r#"INSERT INTO riffle_signal VALUES ('s1', 'execute-snapshot', '{{"data-collections": ["{table}"]}}')"#))
        .await
        .unwrap();
    wait_for("a read again", 60, || reads(&out, &table) == 1000).await;
    assert!(data_files(&out, &signal_table).is_empty(), "the signal table's rows go to no sink");
    signal(&running.0, "TERM");
    assert!(running.0.wait().unwrap().success());
}
