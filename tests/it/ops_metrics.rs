//! The metrics endpoint serves the documented series with the right counts
//! after a known workload, and the health check answers.

use crate::support::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_a_known_workload() {
    let db = "it_metrics";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE m (id int PRIMARY KEY, v int); INSERT INTO m SELECT g, 0 FROM generate_series(1, 5) g;")
        .await
        .unwrap();
    let (out, state) = (temp_dir("metrics-out"), temp_dir("metrics-state"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "replicate",
        "--source",
        &db_url(db),
        "--tables",
        "m",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "100ms",
        "--metrics-addr",
        &addr,
        "--filter",
        "m: v >= 0",
    ];
    let mut child = Running(spawn_riffle(&args, None, &state.join("riffle.log")));
    let snapshot_series = "riffle_snapshot_rows_total{table=\"public.m\"}";
    wait_for("the snapshot in the metrics", 30, || http_get(port, "/metrics").and_then(|(_, b)| metric(&b, snapshot_series)) == Some(5.0))
        .await;
    client
        .batch_execute("INSERT INTO m VALUES (6, 0), (7, 0), (8, -1); UPDATE m SET v = 1 WHERE id IN (1, 2); DELETE FROM m WHERE id = 5;")
        .await
        .unwrap();
    let c_series = "riffle_events_total{table=\"public.m\",sink=\"sink0\",op=\"c\"}";
    wait_for("the changes in the metrics", 30, || http_get(port, "/metrics").and_then(|(_, b)| metric(&b, c_series)) == Some(2.0)).await;
    // Let the commit land.
    wait_for("a caught-up commit", 30, || {
        http_get(port, "/metrics").is_some_and(|(_, b)| {
            metric(&b, "riffle_lag_seconds") == Some(0.0)
                && metric(&b, "riffle_events_total{table=\"public.m\",sink=\"sink0\",op=\"d\"}") == Some(1.0)
        })
    })
    .await;
    let (status, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let expect = [
        ("riffle_events_total{table=\"public.m\",sink=\"sink0\",op=\"r\"}", 5.0),
        (c_series, 2.0),
        ("riffle_events_total{table=\"public.m\",sink=\"sink0\",op=\"u\"}", 2.0),
        ("riffle_events_total{table=\"public.m\",sink=\"sink0\",op=\"d\"}", 1.0),
        ("riffle_filtered_events_total{table=\"public.m\"}", 1.0),
        (snapshot_series, 5.0),
        ("riffle_snapshot_done", 1.0),
        ("riffle_errors_total{kind=\"transient\"}", 0.0),
        ("riffle_retries_total", 0.0),
        ("riffle_healthy", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(metric(&body, series), Some(value), "{series} in:\n{body}");
    }
    assert!(metric(&body, "riffle_commits_total").unwrap() >= 2.0);
    // The bytes of the files the sink wrote, counted per table.
    let on_disk: u64 = data_files(&out, "public.m").iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert_eq!(metric(&body, "riffle_sink_bytes_total{table=\"public.m\",sink=\"sink0\"}"), Some(on_disk as f64));
    assert!(metric(&body, "riffle_committed_position").unwrap() > 0.0);
    for family in ["riffle_lag_bytes", "riffle_source_position", "riffle_last_commit_timestamp_seconds", "riffle_snapshot_rows_estimated"] {
        assert!(body.contains(&format!("# TYPE {family} ")), "{family} missing");
    }
    let (status, health) = http_get(port, "/health").unwrap();
    assert_eq!((status, health.as_str()), (200, "ok\n"));
    assert_eq!(http_get(port, "/nope").unwrap().0, 404);
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_turns_unhealthy_when_the_stream_stalls() {
    let db = "it_stall";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE s (id int PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("stall-out"), temp_dir("stall-state"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // No heartbeat, a quiet table: the server's own keepalives come every 30 s.
    let args = [
        "replicate",
        "--source",
        &db_url(db),
        "--tables",
        "s",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--metrics-addr",
        &addr,
        "--heartbeat-interval",
        "0s",
        "--stall-timeout",
        "2s",
    ];
    let mut child = Running(spawn_riffle(&args, None, &state.join("riffle.log")));
    wait_for("a healthy stream", 30, || http_get(port, "/health").is_some_and(|(s, _)| s == 200)).await;
    // Any WAL on the server, even other databases' (other tests), reaches
    // the walsender and keeps the stream talking: the stall shows once the
    // server is quiet for 2 s, which may wait for other tests to finish.
    wait_for("the stall to show", 180, || {
        http_get(port, "/health").is_some_and(|(s, b)| s == 503 && b.contains("no message from the source"))
    })
    .await;
    let (_, body) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&body, "riffle_healthy"), Some(0.0));
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success());
}
