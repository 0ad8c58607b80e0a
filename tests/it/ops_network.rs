//! Network faults between riffle and each server (its source, a Kafka
//! broker, an S3 store): a path that starts dropping packets silently (no
//! reset, no close) must be noticed within the deadlines and the work
//! resumed over a new connection, losing and duplicating nothing; so must a
//! reset and a half-closed connection. Without deadlines riffle waits on a
//! dead socket for as long as the kernel keeps it (many minutes). Bytes that
//! arrive garbled are refused with an error that says what and where, and
//! the next run loses nothing.

use crate::kafka_support::{read_topic, unique, Msg, PrivateBroker};
use crate::net_proxy::Proxy;
use crate::objects_support::{committed_events, s3_env, s3_store, s3_url, S3_GATE};
use crate::support::*;
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::path::Path;

/// `url` with its `host:port` pointed at the proxy.
fn through(url: &str, proxy: &Proxy) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth, path) = rest.split_once('/').unwrap();
    let (creds, _) = auth.rsplit_once('@').unwrap();
    format!("{scheme}://{creds}@127.0.0.1:{}/{path}", proxy.port)
}

/// The port of a `…@127.0.0.1:PORT/…` URL.
fn port_of(url: &str) -> u16 {
    url.split_once("@127.0.0.1:").unwrap().1.split('/').next().unwrap().parse().unwrap()
}

/// Runs riffle with `args` while `proxy` garbles row 200 of `table` (of
/// 300): it must exit 1 saying `expected`, with none of `values` in its log
/// and no row from 200 on committed. Returns the events it committed.
fn refused_while_garbled(proxy: &Proxy, args: &[String], out: &Path, table: &str, expected: &str, values: &[&str]) -> Vec<Json> {
    let refused = riffle(args);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(proxy.garbled() >= 1, "the proxy garbled nothing: {stderr}");
    assert_eq!(refused.status.code(), Some(1), "a definite error: {stderr}");
    assert!(stderr.contains(expected), "{expected:?} in: {stderr}");
    assert!(!values.iter().any(|v| stderr.contains(v)), "row values in the log: {stderr}");
    let committed = read_jsonl(out, table);
    let before: Vec<i64> = committed.iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect();
    assert!(before.iter().all(|&id| id < 200), "rows past the garbled one committed: {before:?}");
    committed
}

/// Rows 1 to 300, each read once.
fn assert_every_row_once(events: &[Json]) {
    let mut ids: Vec<i64> = events.iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=300).collect::<Vec<_>>(), "every row once");
}

/// Streams `table` through `proxy`, cuts the connections after ten rows
/// (`cut`), inserts ten more, and checks all twenty arrive once, over new
/// connections; the log says what noticed the cut (`evidence`).
async fn survives_a_cut(
    proxy: &Proxy,
    cut: impl Fn(&Proxy),
    evidence: &str,
    source: &str,
    table: &str,
    name: &str,
    insert: impl AsyncFn(i64, i64),
) {
    let (out, state) = (temp_dir(&format!("{name}-out")), temp_dir(&format!("{name}-state")));
    let log = state.join("riffle.log");
    let args = replicate_args(source, table, &out, &state, &["--commit-interval", "200ms", "--name", name, "--max-retries", "20"]);
    let mut child = Running(spawn_riffle(&args, None, &log));
    // Cut only established streams (a cut during a connect is a connect
    // timeout, another path).
    wait_for("the stream to start", 60, || log_count(&log, "streaming started") == 1).await;
    insert(1, 10).await;
    wait_for("the first rows", 60, || row_ids(&out, table).0.len() == 10).await;
    cut(proxy);
    insert(11, 20).await;
    wait_for("the rows after the cut, over new connections", 150, || row_ids(&out, table).0.len() == 20).await;
    let (ids, events) = row_ids(&out, table);
    assert_eq!(ids, (1..=20).collect::<BTreeSet<_>>());
    assert_eq!(events, 20, "each change once");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(evidence), "{evidence:?} in the log: {text}");
    assert!(log_count(&log, "streaming started") >= 2, "a new stream: {text}");
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
}

async fn survives_a_blackholed_path(proxy: &Proxy, source: &str, table: &str, name: &str, insert: impl AsyncFn(i64, i64)) {
    survives_a_cut(proxy, Proxy::blackhole, "the connection is presumed dead", source, table, name, insert).await;
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
    let proxy = Proxy::start(port_of(&url)).await;
    let insert = async |from: i64, to: i64| {
        let values: Vec<String> = (from..=to).map(|i| format!("({i})")).collect();
        conn.lock().await.query_drop(format!("INSERT INTO t VALUES {}", values.join(","))).await.unwrap();
    };
    survives_a_blackholed_path(&proxy, &through(&url, &proxy), &format!("{db}.t"), "it_net_my", insert).await;
}

/// A snapshot row whose bytes arrive garbled (a value's length marker made
/// 0xFF, which starts none) stops the pipeline with an error that says what
/// was wrong and where, without the row's values; once the bytes arrive
/// whole, the next run reads what is left and the output is the table, each
/// row once, at positions that increase although the idle server gives
/// every read the same binlog position.
#[tokio::test(flavor = "multi_thread")]
async fn a_garbled_mariadb_snapshot_row_is_refused_clearly_and_nothing_is_lost() {
    use mysql_async::prelude::Queryable;
    let db = "it_net_garble";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20) NOT NULL)").await.unwrap();
    // 300 rows; row 200's value is the one garbled: eight bytes, so its
    // length marker is 0x08.
    let values: Vec<String> =
        (1..=300).map(|i| if i == 200 { format!("({i}, 'QQQQQQQQ')") } else { format!("({i}, 'row-{i}')") }).collect();
    conn.query_drop(format!("INSERT INTO t VALUES {}", values.join(","))).await.unwrap();
    let url = my_url(db);
    let proxy = Proxy::start(port_of(&url)).await;
    proxy.garble(b"\x08QQQQQQQQ", b"\xffQQQQQQQQ");
    let (out, state) = (temp_dir("garble-out"), temp_dir("garble-state"));
    let table = format!("{db}.t");
    // Chunks of 50 rows: each chunk's rows arrive in one read, so the proxy
    // sees the whole value it garbles.
    let args = replicate_args(
        &through(&url, &proxy),
        &table,
        &out,
        &state,
        &["--name", "it_net_garble", "--snapshot-workers", "1", "--snapshot-chunk-rows", "50", "--until", "now"],
    );
    let expected = format!(
        "the server sent a row of {table} riffle cannot read: a value starts with byte 0xFF, which starts no length (column 2 of 2, v)"
    );
    let committed = refused_while_garbled(&proxy, &args, &out, &table, &expected, &["QQQQQQQQ", "row-1"]);
    // The binlog position of the first run's read (`000001.000123.s…`).
    let point = |e: &serde_json::Value| e["source"]["position"].as_str().unwrap().rsplit_once('.').unwrap().0.to_string();

    proxy.ungarble();
    // The rest in rounds of one chunk each. The server writes nothing
    // meanwhile, so every round's consistent read sits at the same binlog
    // position as the first run's: their rows are numbered after the rows
    // read there before (a position used twice is refused by the sink).
    let mut again = args.clone();
    again.extend(["--snapshot-round".into(), "1ms".into()]);
    let resumed = riffle_ok(&again);
    let log = String::from_utf8_lossy(&resumed.stderr);
    assert!(log.matches("snapshot round: streaming up to").count() >= 2, "one round for each chunk left: {log}");
    let events = read_jsonl(&out, &table);
    // Other tests share the server; when none wrote meanwhile, the resumed
    // rounds sat where the first run read, and said so.
    if committed.first().map(point) == events.last().map(point) {
        assert!(log.contains("no write since an earlier read at this binlog position"), "{log}");
    }
    assert_every_row_once(&events);
    let positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions increase: {positions:?}");
    let replayed = replay(&events, "id");
    assert_eq!(replayed[&200]["v"], "QQQQQQQQ");
    assert!(replayed.iter().all(|(id, row)| *id == 200 || row["v"] == format!("row-{id}")));
}

/// The same for Postgres: a snapshot value garbled on the wire into text
/// that is not UTF-8 stops the run with an error naming the table and the
/// column, never the value; the next run reads what is left and the output
/// is the table, each row once.
#[tokio::test(flavor = "multi_thread")]
async fn a_garbled_postgres_snapshot_value_is_refused_clearly_and_nothing_is_lost() {
    let db = "it_net_pg_garble";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL);
             INSERT INTO t SELECT g, CASE WHEN g = 200 THEN 'QQQQQQQQ' ELSE 'row-' || g END FROM generate_series(1, 300) g",
        )
        .await
        .unwrap();
    let port: u16 = test_env("RIFFLE_TEST_PG_PORT").parse().unwrap();
    let proxy = Proxy::start(port).await;
    // Clear text on the wire, so the proxy sees the COPY rows.
    proxy.garble(b"QQQQQQQQ", b"QQ\xffQQQQQ");
    let (out, state) = (temp_dir("pg-garble-out"), temp_dir("pg-garble-state"));
    // Chunks of 50 rows: each chunk's COPY arrives in one read.
    let args = replicate_args(
        &format!("{}?sslmode=disable", through(&db_url(db), &proxy)),
        "public.t",
        &out,
        &state,
        &["--name", "it_net_pg_garble", "--snapshot-workers", "1", "--snapshot-chunk-rows", "50", "--until", "now"],
    );
    let expected = "cannot read column v of public.t from its COPY: COPY returned text that is not UTF-8";
    refused_while_garbled(&proxy, &args, &out, "public.t", expected, &["QQ", "row-1"]);

    proxy.ungarble();
    riffle_ok(&args);
    let events = read_jsonl(&out, "public.t");
    assert_every_row_once(&events);
    let replayed = replay(&events, "id");
    assert_eq!(replayed, table_as_json(&client, "t", "id").await);
}

/// A Postgres table and an insert of ids `from..=to` into it.
async fn pg_table(db: &str) -> tokio_postgres::Client {
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.unwrap();
    client
}

async fn pg_insert(client: &tokio_postgres::Client, from: i64, to: i64) {
    client.execute("INSERT INTO t SELECT g FROM generate_series($1::int8, $2::int8) g", &[&from, &to]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_postgres_connection_is_resumed() {
    let client = pg_table("it_net_pg_reset").await;
    let proxy = Proxy::start(test_env("RIFFLE_TEST_PG_PORT").parse().unwrap()).await;
    let insert = async |from: i64, to: i64| pg_insert(&client, from, to).await;
    let source = through(&db_url("it_net_pg_reset"), &proxy);
    survives_a_cut(&proxy, Proxy::reset, "transient error, retrying", &source, "public.t", "it_net_pg_reset", insert).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_closed_postgres_connection_is_resumed() {
    let client = pg_table("it_net_pg_half").await;
    let proxy = Proxy::start(test_env("RIFFLE_TEST_PG_PORT").parse().unwrap()).await;
    let insert = async |from: i64, to: i64| pg_insert(&client, from, to).await;
    let source = through(&db_url("it_net_pg_half"), &proxy);
    survives_a_cut(&proxy, Proxy::half_close, "transient error, retrying", &source, "public.t", "it_net_pg_half", insert).await;
}

/// The path to a Kafka broker goes silent mid-stream (the broker advertises
/// the proxy, so every connection goes through it): the producer's request
/// deadline notices, it reconnects, and every change arrives once.
#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dropped_kafka_connection_is_noticed_and_resumed() {
    let client = pg_table("it_net_kafka").await;
    let (proxy_port, broker_port) = (free_port(), free_port());
    let proxy = Proxy::start_on(proxy_port, broker_port).await;
    let _broker = PrivateBroker::start_advertising(broker_port, proxy_port);
    let brokers = format!("127.0.0.1:{proxy_port}");
    let name = unique("knet");
    let state = temp_dir("net-kafka-state");
    let log = state.join("riffle.log");
    let url = db_url("it_net_kafka");
    let sink = format!("kafka://{brokers}");
    let args: Vec<String> = ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &name]
        .map(String::from)
        .into_iter()
        .chain(["--commit-interval".into(), "200ms".into(), "--state".into(), state.display().to_string()])
        .collect();
    let mut child = Running(spawn_riffle(&args, None, &log));
    wait_for("the stream to start", 60, || log_count(&log, "streaming started") == 1).await;
    let topic = format!("{name}.public.t");
    let ids = |msgs: &[Msg]| -> Vec<i64> {
        msgs.iter().filter(|m| m.value.is_some()).map(|m| m.value_json()["after"]["id"].as_i64().unwrap()).collect()
    };
    pg_insert(&client, 1, 10).await;
    assert_eq!(ids(&read_topic(&brokers, &topic, 10, 60)).len(), 10, "log: {}", std::fs::read_to_string(&log).unwrap());
    proxy.blackhole();
    let cut = std::time::Instant::now();
    pg_insert(&client, 11, 20).await;
    // Committed only once the broker acknowledged them: wait for the saved position to pass them.
    let mut got = Vec::new();
    for _ in 0..12 {
        got = ids(&read_topic(&brokers, &topic, 20, 10));
        if got.len() >= 20 {
            break;
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), (1..=20).collect::<BTreeSet<_>>(), "log: {text}");
    assert_eq!(got.len(), 20, "each change once (idempotent producer): {got:?}");
    assert!(cut.elapsed() < std::time::Duration::from_secs(90), "noticed within the socket timeout: {:?}", cut.elapsed());
    assert!(text.contains("Timed out ProduceRequest"), "the request deadline noticed the dead path: {text}");
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
}

/// The path to the S3 store goes silent with requests in flight: the
/// store client's request deadline notices, retries on a new connection,
/// and every change is committed once.
#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dropped_s3_connection_is_noticed_and_resumed() {
    let _gate = S3_GATE.read().await;
    let client = pg_table("it_net_s3").await;
    let endpoint = test_env("RIFFLE_TEST_S3_ENDPOINT");
    let s3_port: u16 = endpoint.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
    let proxy = Proxy::start(s3_port).await;
    let env: Vec<(String, String)> = s3_env()
        .into_iter()
        .map(|(k, v)| if k == "AWS_ENDPOINT_URL" { (k, format!("http://127.0.0.1:{}", proxy.port)) } else { (k, v) })
        .collect();
    let root = unique("s3net");
    let state = temp_dir("net-s3-state");
    let log = state.join("riffle.log");
    let url = db_url("it_net_s3");
    let sink = s3_url(&root);
    let args: Vec<String> = ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &root]
        .map(String::from)
        .into_iter()
        .chain(["--commit-interval".into(), "200ms".into(), "--state".into(), state.display().to_string()])
        .collect();
    let mut cmd = riffle_cmd(&args);
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null());
    let mut child = Running(cmd.spawn().unwrap());
    wait_for("the stream to start", 60, || log_count(&log, "streaming started") == 1).await;
    let store = s3_store();
    let ids = |events: &[serde_json::Value]| -> Vec<i64> { events.iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect() };
    pg_insert(&client, 1, 10).await;
    wait_for_async("the first rows", 60, async || committed_events(&store, &root, "public.t").await.len() == 10).await;
    proxy.blackhole();
    pg_insert(&client, 11, 20).await;
    wait_for_async("the rows after the cut", 150, async || committed_events(&store, &root, "public.t").await.len() >= 20).await;
    let got = ids(&committed_events(&store, &root, "public.t").await);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), (1..=20).collect::<BTreeSet<_>>(), "log: {text}");
    assert_eq!(got.len(), 20, "each change once: {got:?}");
    assert!(text.contains("transport error of kind Timeout"), "the request deadline noticed the dead path: {text}");
    std::process::Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    assert!(child.0.wait().unwrap().success(), "{text}");
}
