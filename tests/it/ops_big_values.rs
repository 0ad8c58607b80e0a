//! A 200 MB value goes through the snapshot and the stream whole: the
//! replication client, COPY reader, decoders and file sink take a value as
//! large as Postgres sends without refusing or cutting it.

use crate::support::*;

const MB: usize = 1 << 20;

#[tokio::test(flavor = "multi_thread")]
async fn a_200_mb_value_goes_through_snapshot_and_stream_whole() {
    let db = "it_big_value";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE h (id int PRIMARY KEY, big text)").await.unwrap();
    client.batch_execute(&format!("INSERT INTO h VALUES (1, repeat('a', {}))", 200 * MB)).await.unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir("big-value-out"), temp_dir("big-value-state"));
    let args = replicate_args(&url, "h", &out, &state, &["--until", "now"]);
    riffle_ok(&args);
    client.batch_execute(&format!("INSERT INTO h VALUES (2, repeat('b', {}))", 200 * MB)).await.unwrap();
    riffle_ok(&args);
    let events = read_jsonl(&out, "public.h");
    let got: Vec<(String, i64, usize, bool)> = events
        .iter()
        .map(|e| {
            let big = e["after"]["big"].as_str().unwrap();
            let first = big.chars().next().unwrap();
            (e["op"].as_str().unwrap().to_string(), e["after"]["id"].as_i64().unwrap(), big.len(), big.chars().all(|c| c == first))
        })
        .collect();
    assert_eq!(got, vec![("r".to_string(), 1, 200 * MB, true), ("c".to_string(), 2, 200 * MB, true)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2000_table_snapshot_holds_a_bounded_number_of_files_open() {
    let db = "it_many_tables";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..2000 LOOP
               EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text); INSERT INTO t%s VALUES (%s, ''x'')', i, i, i);
             END LOOP; END $$",
        )
        .await
        .unwrap();
    let url = db_url(db);
    let (out, state) = (temp_dir("many-tables-out"), temp_dir("many-tables-state"));
    let args = replicate_args(&url, "public.*", &out, &state, &["--until", "now"]);
    // 256 file handles for riffle: far fewer than the tables.
    let run = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n 256 && exec {} \"$@\"", env!("CARGO_BIN_EXE_riffle")))
        .arg("riffle")
        .args(&args)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let mut ids = Vec::new();
    for i in 1..=2000 {
        let events = read_jsonl(&out, &format!("public.t{i}"));
        assert_eq!(events.len(), 1, "t{i}");
        ids.push(events[0]["after"]["id"].as_i64().unwrap());
    }
    assert_eq!(ids, (1..=2000).collect::<Vec<i64>>());
}
