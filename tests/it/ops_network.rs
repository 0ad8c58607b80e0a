//! Network faults: a path between riffle and its source that starts
//! dropping packets silently (no reset, no close) must be noticed within the
//! streams' deadlines and the stream resumed over a new connection, losing
//! and duplicating nothing. Without deadlines riffle waits on the dead
//! socket for as long as the kernel keeps it (many minutes).

use crate::net_proxy::Proxy;
use crate::support::*;
use std::collections::BTreeSet;

/// `url` with its `host:port` pointed at the proxy.
fn through(url: &str, proxy: &Proxy) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, path) = rest.split_once('/').unwrap();
    let (creds, _) = auth.rsplit_once('@').unwrap();
    format!("{scheme}://{creds}@127.0.0.1:{}/{path}", proxy.port)
}

/// Streams `table` through `proxy`, blackholes the connections after ten
/// rows, inserts ten more, and checks all twenty arrive once, over new
/// connections, because a deadline noticed the dead ones.
async fn survives_a_blackholed_path(proxy: &Proxy, source: &str, table: &str, name: &str, insert: impl AsyncFn(i64, i64)) {
    let (out, state) = (temp_dir(&format!("{name}-out")), temp_dir(&format!("{name}-state")));
    let log = state.join("riffle.log");
    let args = replicate_args(source, table, &out, &state, &["--commit-interval", "200ms", "--name", name, "--max-retries", "20"]);
    let mut child = Running(spawn_riffle(&args, None, &log));
    // Cut only established streams (a cut during a connect is a connect
    // timeout, another path).
    wait_for("the stream to start", 60, || log_count(&log, "streaming started") == 1).await;
    insert(1, 10).await;
    wait_for("the first rows", 60, || row_ids(&out, table).0.len() == 10).await;
    proxy.blackhole();
    insert(11, 20).await;
    wait_for("the rows after the cut, over new connections", 150, || row_ids(&out, table).0.len() == 20).await;
    let (ids, events) = row_ids(&out, table);
    assert_eq!(ids, (1..=20).collect::<BTreeSet<_>>());
    assert_eq!(events, 20, "each change once");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("the connection is presumed dead"), "a deadline noticed the dead path: {text}");
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dropped_postgres_connection_is_noticed_and_resumed() {
    let db = "it_net_pg";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    let port: u16 = test_env("RIFFLE_TEST_PG_PORT").parse().unwrap();
    let proxy = Proxy::start(port).await;
    let insert = async |from: i64, to: i64| {
        client.execute("INSERT INTO t SELECT g FROM generate_series($1::int8, $2::int8) g", &[&from, &to]).await.unwrap();
    };
    survives_a_blackholed_path(&proxy, &through(&db_url(db), &proxy), "public.t", "it_net_pg", insert).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dropped_mariadb_connection_is_noticed_and_resumed() {
    use mysql_async::prelude::Queryable;
    let db = "it_net_my";
    let conn = tokio::sync::Mutex::new(my_fresh_db(db).await);
    conn.lock().await.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY)").await.unwrap();
    let url = my_url(db);
    let port: u16 = url.split_once("@127.0.0.1:").unwrap().1.split('/').next().unwrap().parse().unwrap();
    let proxy = Proxy::start(port).await;
    let insert = async |from: i64, to: i64| {
        let values: Vec<String> = (from..=to).map(|i| format!("({i})")).collect();
        conn.lock().await.query_drop(format!("INSERT INTO t VALUES {}", values.join(","))).await.unwrap();
    };
    survives_a_blackholed_path(&proxy, &through(&url, &proxy), &format!("{db}.t"), "it_net_my", insert).await;
}
