//! One writer per pipeline: a second `replicate` is refused and told who
//! runs, a `sync` with the same name cannot write into a running
//! pipeline's directory, and a `--standby` takes over when the holder dies,
//! losing and duplicating nothing.

use crate::support::*;
use std::collections::BTreeSet;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_writer_is_refused_naming_the_first() {
    let db = "it_own_refuse";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("own-refuse-out"), temp_dir("own-refuse-state"));
    let args = replicate_args(&db_url(db), "public.t", &out, &state, &["--name", "it_own_refuse"]);
    let log = state.join("first.log");
    let first = Running(spawn_riffle(&args, None, &log));
    wait_for("the first to stream", 60, || log_count(&log, "streaming started") == 1).await;

    let second = riffle(&args);
    assert_eq!(second.status.code(), Some(1));
    let text = stderr(&second);
    let pid = first.0.id().to_string();
    assert!(text.contains("pipeline it_own_refuse is already running") && text.contains(&format!("pid {pid}")), "{text}");
    assert!(text.contains("--standby"), "{text}");

    // A sync with the same name into the same directory would delete the
    // running pipeline's uncommitted files and overwrite its manifest.
    let sync =
        riffle(&["sync", "--source", &db_url(db), "--tables", "public.t", "--sink", out.to_str().unwrap(), "--name", "it_own_refuse"]);
    assert_eq!(sync.status.code(), Some(1));
    let text = stderr(&sync);
    assert!(text.contains("is being written here by riffle replicate") && text.contains(&format!("pid {pid}")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_takes_over_when_the_holder_dies_losing_nothing() {
    let db = "it_own_standby";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let (out, state) = (temp_dir("own-standby-out"), temp_dir("own-standby-state"));
    let args = replicate_args(&db_url(db), "public.t", &out, &state, &["--name", "it_own_standby", "--commit-interval", "200ms"]);
    let (log1, log2) = (state.join("holder.log"), state.join("standby.log"));
    let mut holder = Running(spawn_riffle(&args, None, &log1));
    wait_for("the holder to stream", 60, || log_count(&log1, "streaming started") == 1).await;
    let standby_args = [&args[..], &["--standby".to_string()]].concat();
    let mut standby = Running(spawn_riffle(&standby_args, None, &log2));
    wait_for("the standby to wait", 30, || log_count(&log2, "standby: waiting for the running pipeline to end") == 1).await;

    client.execute("INSERT INTO t SELECT generate_series(1, 5)", &[]).await.unwrap();
    wait_for("the holder's rows", 60, || row_ids(&out, "public.t").0.len() == 5).await;
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    client.execute("INSERT INTO t SELECT generate_series(6, 10)", &[]).await.unwrap();
    wait_for("the standby to take over and catch up", 60, || row_ids(&out, "public.t").0.len() == 10).await;
    let (got, events) = row_ids(&out, "public.t");
    assert_eq!(got, (1..=10).collect::<BTreeSet<_>>());
    assert_eq!(events, 10, "each change once");
    assert_eq!(log_count(&log2, "standby: the lease is ours"), 1);
    std::process::Command::new("kill").args(["-TERM", &standby.0.id().to_string()]).status().unwrap();
    assert!(standby.0.wait().unwrap().success());
}

/// MariaDB keeps a dead reader's binlog dump registered under its server id
/// for a while; a restart right after `kill -9` must end it as its own (the
/// lease proves the old process is gone) instead of refusing to start. The
/// admin user can list replicas, so the refusal the fix removes is visible.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_restarts_at_once_after_kill_9() {
    use mysql_async::prelude::Queryable;
    let db = "it_own_restart_my";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY)").await.unwrap();
    let url = format!("{}/{db}", my_admin_url().rsplit_once('/').unwrap().0);
    let (out, state) = (temp_dir("own-restart-my-out"), temp_dir("own-restart-my-state"));
    let table = format!("{db}.t");
    let args = replicate_args(&url, &table, &out, &state, &["--name", db, "--commit-interval", "200ms"]);
    let log1 = state.join("first.log");
    let mut first = Running(spawn_riffle(&args, None, &log1));
    wait_for("the first to stream", 60, || log_count(&log1, "streaming started") == 1).await;
    conn.query_drop("INSERT INTO t VALUES (1), (2), (3)").await.unwrap();
    wait_for("the first rows", 60, || row_ids(&out, &table).0.len() == 3).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();

    let log2 = state.join("second.log");
    let mut second = Running(spawn_riffle(&args, None, &log2));
    conn.query_drop("INSERT INTO t VALUES (4), (5)").await.unwrap();
    wait_for("the restart to stream the new rows", 60, || row_ids(&out, &table).0.len() == 5 || second.0.try_wait().unwrap().is_some())
        .await;
    let text = std::fs::read_to_string(&log2).unwrap();
    assert!(second.0.try_wait().unwrap().is_none(), "the restart exited: {text}");
    assert_eq!(row_ids(&out, &table), ((1..=5).collect(), 5), "each change once");
    std::process::Command::new("kill").args(["-TERM", &second.0.id().to_string()]).status().unwrap();
    assert!(second.0.wait().unwrap().success(), "{text}");
}
