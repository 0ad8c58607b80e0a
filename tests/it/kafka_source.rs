//! Kafka as a source, against the real broker: topics written by riffle
//! (both value encodings, with and without Connect schemas) and by the real
//! Debezium (its golden messages) read back into files that equal what the
//! database itself gives; a crash between the sinks' commit and the saved
//! state, and `kill -9` mid-stream, leave every message in the files once;
//! the consumer group's offsets follow what is durable.

use crate::kafka_support::*;
use crate::net_proxy::Proxy;
use crate::support::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

type Row = (String, BTreeMap<String, Option<String>>);

/// The CSV rows of `table` as (op, table columns), sorted; `skip` columns left out.
fn csv_rows(dir: &Path, table: &str, skip: &[&str]) -> Vec<Row> {
    let (header, rows) = read_csv(dir, table);
    let op = header.iter().position(|h| h == "__op").expect("an __op column");
    let mut out: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            let cols = header
                .iter()
                .zip(&r)
                .filter(|(h, _)| !h.starts_with("__") && !skip.contains(&h.as_str()))
                .map(|(h, v)| (h.clone(), v.clone()))
                .collect();
            (r[op].clone().unwrap_or_default(), cols)
        })
        .collect();
    out.sort();
    out
}

fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `riffle replicate --until now` from a Kafka source into `out`.
fn drain(source: &str, name: &str, out: &Path, format: &str, state: &Path) -> std::process::Output {
    riffle_ok(&[
        "replicate",
        "--source",
        source,
        "--name",
        name,
        "--sink",
        out.to_str().unwrap(),
        "--format",
        format,
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "200ms",
        "--until",
        "now",
    ])
}

/// The every-type table of `db` (rows 1–3 by `rows`) snapshotted, then
/// changed by `rows` 4–6 and `changes`, by one pipeline writing CSV files
/// (returned) and the Kafka sinks `kafka_sinks` (`[[sinks]]` tables).
async fn types_into_kafka(
    db: &str,
    name: &str,
    dir: &Path,
    rows: impl Fn(i32, i32, i32) -> String,
    changes: &str,
    kafka_sinks: &str,
) -> std::path::PathBuf {
    let client = fresh_db(db).await;
    client.batch_execute(crate::pg_types::CREATE).await.unwrap();
    client.batch_execute(&rows(1, 2, 3)).await.unwrap();
    let out_db = dir.join("from-db");
    let config = dir.join("pipeline.toml");
    write_config(
        &config,
        &format!(
            r#"name = "{name}"
commit_interval = "200ms"
[source]
url = "{url}"
tables = ["public.types"]
[[sinks]]
url = "{out}"
format = "csv"
{kafka_sinks}"#,
            url = db_url(db),
            out = out_db.display()
        ),
    );
    let state = dir.join("state");
    let run = || riffle_ok(&["replicate", "--config", config.to_str().unwrap(), "--state", state.to_str().unwrap(), "--until", "now"]);
    run();
    client.batch_execute(&rows(4, 5, 6)).await.unwrap();
    client.batch_execute(changes).await.unwrap();
    run();
    out_db
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_through_kafka_into_files_equals_postgres_into_files_for_every_type() {
    let b = brokers();
    let name = unique("ksrc");
    let dir = temp_dir("ksrc-types");
    // One pipeline writes the files and both encodings' topics (Debezium's
    // with decimals as strings: a numeric NaN has no precise form); then
    // streamed changes: inserts, an update, a delete.
    let out_db = types_into_kafka(
        "it_ksrc_types",
        &name,
        &dir,
        crate::pg_types::rows_sql,
        "UPDATE types SET c_text = 'changed', c_int = 7 WHERE id = 1; DELETE FROM types WHERE id = 2",
        &format!(
            r#"[[sinks]]
url = "kafka://{b}"
topic_prefix = "{name}_r"
value_encoding = "riffle"
schemas_enable = true
[[sinks]]
url = "kafka://{b}"
topic_prefix = "{name}_d"
schemas_enable = true
"decimal.handling.mode" = "string"
"#
        ),
    )
    .await;
    let want = csv_rows(&out_db, "public.types", &[]);
    assert_eq!(want.len(), 8, "3 reads, 3 inserts, an update, a delete: {want:?}");

    // riffle's own forms with Connect schemas: every column comes back the same.
    let out_r = dir.join("from-kafka-riffle");
    drain(&format!("kafka://{b}?topics={name}_r.public.types"), &format!("{name}_kr"), &out_r, "csv", &dir.join("state-r"));
    assert_eq!(csv_rows(&out_r, "public.types", &[]), want);
    let (h_db, rows_db) = read_csv(&out_db, "public.types");
    let (h_k, rows_k) = read_csv(&out_r, "public.types");
    assert_eq!(h_db, h_k, "the same columns, metadata included");
    let col = |h: &[String], n: &str| h.iter().position(|x| x == n).unwrap();
    let images = |h: &[String], rows: &[Vec<Option<String>>]| {
        let mut v: Vec<_> =
            rows.iter().map(|r| (r[col(h, "id")].clone(), r[col(h, "__op")].clone(), r[col(h, "__before_image")].clone())).collect();
        v.sort();
        v
    };
    assert_eq!(images(&h_k, &rows_k), images(&h_db, &rows_db), "before images as the database said");

    // Debezium's forms: the same values, but for the two Debezium cannot
    // keep (a timetz is turned to UTC, an interval to microseconds).
    let out_d = dir.join("from-kafka-debezium");
    drain(&format!("kafka://{b}?topics={name}_d.public.types"), &format!("{name}_kd"), &out_d, "csv", &dir.join("state-d"));
    let lossy = ["c_timetz", "c_interval"];
    assert_eq!(csv_rows(&out_d, "public.types", &lossy), csv_rows(&out_db, "public.types", &lossy));
}

/// A message's key and value (`None`: a null key, a tombstone).
type Record = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Produces `records` to a new topic of `partitions` (all into partition 0).
fn produce(brokers: &str, topic: &str, partitions: i32, records: &[Record]) {
    let admin: rdkafka::admin::AdminClient<_> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let new = rdkafka::admin::NewTopic::new(topic, partitions, rdkafka::admin::TopicReplication::Fixed(1));
    for r in block_on(admin.create_topics([&new], &rdkafka::admin::AdminOptions::new())).expect("creating the topic") {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => panic!("creating {t}: {e}"),
        }
    }
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    for (k, v) in records {
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(0);
        if let Some(k) = k {
            r = r.key(k.as_slice());
        }
        if let Some(v) = v {
            r = r.payload(v.as_slice());
        }
        producer.send(r).map_err(|(e, _)| e).unwrap();
        // One message per record batch: tansu answers ListOffsets with the
        // last batch's base offset + 1, which is the end only then.
        producer.flush(std::time::Duration::from_secs(30)).unwrap();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Debezium's golden messages for `db` (written by Debezium 3.6 itself),
/// read back with the Kafka source into JSON lines; the JSON lines riffle
/// writes from the same table and changes, read from the database.
async fn golden_read_back(db: &str, source_url: &str, setup: impl AsyncFnOnce(), changes: impl AsyncFnOnce()) -> (Vec<Json>, Vec<Json>) {
    let b = brokers();
    let topic = unique(&format!("dbz_golden_{db}"));
    let records: Vec<_> = crate::kafka_debezium::golden(db, "messages.jsonl")
        .into_iter()
        .filter(|m| m["topic"].as_str().is_some_and(|t| t.ends_with(".dbz.all_types")))
        .map(|m| {
            let bytes = |v: &Json| (!v.is_null()).then(|| serde_json::to_vec(v).unwrap());
            (bytes(&m["key"]), bytes(&m["value"]))
        })
        .collect();
    assert!(records.len() >= 7, "the golden messages: reads, an insert, an update, a delete and its tombstone");
    produce(&b, &topic, 1, &records);
    let dir = temp_dir(&format!("ksrc-debezium-{db}"));
    let from_kafka = dir.join("from-kafka");
    drain(&format!("kafka://{b}?topics={topic}"), &unique("ksrc_dbz"), &from_kafka, "jsonl", &dir.join("state-k"));
    setup().await;
    let from_db = dir.join("from-db");
    let name = unique("ksrc_dbz_db");
    let args = replicate_args(source_url, "dbz.all_types", &from_db, &dir.join("state-db"), &["--name", &name, "--until", "now"]);
    riffle_ok(&args);
    changes().await;
    riffle_ok(&args);
    (read_jsonl(&from_kafka, "dbz.all_types"), read_jsonl(&from_db, "dbz.all_types"))
}

/// The two sides equal, op by op, but for `lossy` columns.
fn same_images(got: &[Json], want: &[Json], lossy: &[&str], connector: &str) {
    let image = |e: &Json, side: &str| {
        let mut m = e[side].as_object().cloned().unwrap_or_default();
        m.retain(|k, _| !lossy.contains(&k.as_str()));
        m
    };
    assert_eq!(got.len(), want.len(), "{got:#?}\n{want:#?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((&g["op"], image(g, "before"), image(g, "after")), (&w["op"], image(w, "before"), image(w, "after")));
        assert_eq!(g["source"]["table"], "all_types");
        assert_eq!(g["source"]["connector"], connector, "the source block of Debezium's event is kept");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn topics_the_real_debezium_wrote_read_back_as_the_database_gives_them() {
    let _one = crate::kafka_debezium::POSTGRES_TABLE.lock().await;
    let client = connect(&admin_url()).await;
    let (got, want) = golden_read_back(
        "postgres",
        &admin_url(),
        async || client.batch_execute(include_str!("../golden/debezium/postgres/setup.sql")).await.unwrap(),
        async || client.batch_execute(include_str!("../golden/debezium/postgres/changes.sql")).await.unwrap(),
    )
    .await;
    client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'ksrc_dbz_db%' AND NOT active",
            &[],
        )
        .await
        .unwrap();
    // Debezium writes a timetz in UTC and intervals as microseconds: those
    // columns cannot come back as Postgres wrote them (docs/kafka-source.md).
    same_images(&got, &want, &["c_timetz", "c_interval", "c_interval_frac"], "postgresql");
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_topics_the_real_debezium_wrote_read_back_as_the_database_gives_them() {
    use mysql_async::prelude::Queryable;
    let _one = crate::kafka_debezium::MARIADB_TABLE.lock().await;
    let conn = tokio::sync::Mutex::new(my_fresh_conn("mysql").await);
    let (got, want) = golden_read_back(
        "mariadb",
        &my_url("dbz"),
        async || conn.lock().await.query_drop(include_str!("../golden/debezium/mariadb/setup.sql")).await.unwrap(),
        async || conn.lock().await.query_drop(include_str!("../golden/debezium/mariadb/changes.sql")).await.unwrap(),
    )
    .await;
    // Debezium's MySQL connector names itself `mysql` (the wheel has no
    // MariaDB connector). Its temporal types do not carry a column's
    // fraction digits, so times come back padded by type, not by the
    // column's fsp; and in bigint.unsigned.handling.mode=long it wraps an
    // unsigned bigint past 2^63-1 (docs/kafka-source.md): the values are the
    // same once both are read alike.
    let alike = |events: &[Json]| -> Vec<Json> {
        let fraction = |s: &str| {
            let (body, z) = s.strip_suffix('Z').map_or((s, ""), |b| (b, "Z"));
            match body.split_once('.') {
                Some((whole, frac)) if frac.trim_end_matches('0').is_empty() => format!("{whole}{z}"),
                Some((whole, frac)) => format!("{whole}.{}{z}", frac.trim_end_matches('0')),
                None => s.to_string(),
            }
        };
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                for side in ["before", "after"] {
                    if let Some(row) = e[side].as_object_mut() {
                        for c in ["c_time", "c_time3", "c_timestamp", "c_datetime", "c_datetime3", "c_datetime6"] {
                            if let Some(t) = row.get(c).and_then(Json::as_str).map(fraction) {
                                row.insert(c.into(), Json::String(t));
                            }
                        }
                        if let Some(n) = row.get("c_bigint_unsigned").and_then(Json::as_i64) {
                            row.insert("c_bigint_unsigned".into(), Json::from(n as u64));
                        }
                    }
                }
                e
            })
            .collect()
    };
    same_images(&alike(&got), &alike(&want), &[], "mysql");
}

/// The committed offsets of `group` on `topic`'s partitions.
fn group_offsets(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer.committed_offsets(tpl, std::time::Duration::from_secs(10)).unwrap();
    got.elements().iter().map(|e| if let rdkafka::Offset::Offset(n) = e.offset() { n } else { -1 }).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_sinks_committed_and_kill_9_mid_stream_leave_each_message_once() {
    let db = "it_ksrc_crash";
    let client = fresh_db(db).await;
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t SELECT g, g FROM generate_series(1, 3000) g")
        .await
        .unwrap();
    let b = brokers();
    let name = unique("kcrash");
    let dir = temp_dir("ksrc-crash");
    // Into three partitions, schema-less JSON (types from the values).
    let pg_state = dir.join("state-pg");
    let to_kafka = [
        "replicate",
        "--source",
        &db_url(db),
        "--tables",
        "public.t",
        "--sink",
        &format!("kafka://{b}?partitions=3&value_encoding=riffle"),
        "--name",
        &name,
        "--state",
        pg_state.to_str().unwrap(),
        "--until",
        "now",
    ];
    riffle_ok(&to_kafka);
    let topic = format!("{name}.public.t");
    let out = dir.join("out");
    let state = dir.join("state");
    let reader = format!("{name}_reader");
    let args: Vec<String> = [
        "replicate",
        "--source",
        &format!("kafka://{b}?topics={topic}"),
        "--name",
        &reader,
        "--sink",
        out.to_str().unwrap(),
        "--format",
        "jsonl",
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "50ms",
        "--max-file-rows",
        "100",
    ]
    .map(String::from)
    .to_vec();
    // Aborted right after the sinks committed, before the state is saved:
    // the next run replays what the files already hold.
    let log = dir.join("crash.log");
    let child = riffle_cmd(&args)
        .env("RIFFLE_FAIL_AT", "pipeline.sinks_committed@1")
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    wait_for("riffle to reach the fail point", 60, || child.0.try_wait().unwrap().is_some()).await;
    let status = child.0.wait().unwrap();
    assert!(
        !status.success() && log_count(&log, "fail point pipeline.sinks_committed reached") == 1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(!read_jsonl(&out, "public.t").is_empty(), "the crash came after some files were committed");

    // More changes while a reader runs; killed mid-stream.
    client
        .batch_execute("INSERT INTO t SELECT g, g FROM generate_series(3001, 6000) g; UPDATE t SET v = -v WHERE id % 10 = 0")
        .await
        .unwrap();
    riffle_ok(&to_kafka);
    let mut child = Running(spawn_riffle(&args, None, &dir.join("kill.log")));
    let before = read_jsonl(&out, "public.t").len();
    kill_9_when(&mut child.0, "the reader to commit files of the new messages", 90, async || {
        read_jsonl(&out, "public.t").len() > before + 300
    })
    .await;
    let mut until = args.clone();
    until.extend(["--until".into(), "now".into()]);
    riffle_ok(&until);

    let events = read_jsonl(&out, "public.t");
    let mut positions: Vec<&str> = events.iter().map(|e| e["source"]["position"].as_str().unwrap()).collect();
    let n = positions.len();
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), n, "a message was written twice");
    assert_eq!(n, 6000 + 600, "every message once: 6000 rows, 600 updates");
    assert!(temp_files(&out).is_empty(), "temporary files left behind");
    // Positions order each partition's messages (and a key's all sit in
    // one partition): replayed in that order, the files give the table.
    let mut ordered: Vec<&serde_json::Value> = events.iter().collect();
    ordered.sort_by_key(|e| e["source"]["position"].as_str().unwrap().to_string());
    let mut by_key: BTreeMap<i64, i64> = BTreeMap::new();
    for e in ordered {
        by_key.insert(e["after"]["id"].as_i64().unwrap(), e["after"]["v"].as_i64().unwrap());
    }
    let rows = client.query("SELECT id, v FROM t", &[]).await.unwrap();
    let table: BTreeMap<i64, i64> = rows.iter().map(|r| (i64::from(r.get::<_, i32>(0)), i64::from(r.get::<_, i32>(1)))).collect();
    assert_eq!(by_key, table);
    // The group's offsets: every message is durable, and they say so.
    let ends: i64 = group_offsets(&b, &format!("riffle-{reader}"), &topic, 3).iter().sum();
    assert_eq!(ends, 6600, "the consumer group's committed offsets are the topic's end");
}

#[test]
fn a_kafka_source_without_topics_or_with_a_database_state_is_refused_clearly() {
    let out = riffle(&["replicate", "--source", "kafka://127.0.0.1:9?group=g", "--sink", "-", "--name", "x"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expected ?topics=GLOB[,GLOB] naming the topics to read"), "{}", stderr(&out));
    let out = riffle(&["replicate", "--source", "kafka://127.0.0.1:9?topics=t", "--sink", "-", "--name", "x", "--until", "0/16B3748"]);
    assert!(!out.status.success() && stderr(&out).contains("a Kafka source stops at `now`"), "{}", stderr(&out));
}

/// Schema-less riffle-style inserts of ids `from..=to` into `public.t`.
fn inserts(from: i64, to: i64) -> Vec<Record> {
    (from..=to)
        .map(|id| {
            let key = serde_json::json!({ "id": id });
            let value = serde_json::json!({"op": "c", "before": null, "after": {"id": id, "v": id * 10},
                "source": {"connector": "postgresql", "name": "p", "db": "d", "schema": "public", "table": "t"}});
            (Some(serde_json::to_vec(&key).unwrap()), Some(serde_json::to_vec(&value).unwrap()))
        })
        .collect()
}

/// Messages 1–100 read by a running pipeline, then `fault` under it, then
/// messages 101–200: the files hold every message once.
async fn reads_on_through(b: &str, name: &str, dir: &str, fault: impl FnOnce()) {
    produce(b, name, 1, &inserts(1, 100));
    let dir = temp_dir(dir);
    let out = dir.join("out");
    let log = dir.join("riffle.log");
    let state = dir.join("state");
    let args = [
        "replicate",
        "--source",
        &format!("kafka://{b}?topics={name}"),
        "--name",
        name,
        "--sink",
        out.to_str().unwrap(),
        "--format",
        "jsonl",
        "--state",
        state.to_str().unwrap(),
        "--commit-interval",
        "100ms",
    ];
    let mut child = Running(spawn_riffle(&args, None, &log));
    let ids = || -> Vec<i64> { read_jsonl(&out, "public.t").iter().map(|e| e["after"]["id"].as_i64().unwrap()).collect() };
    wait_for("the first messages", 60, || ids().len() == 100).await;
    fault();
    produce(b, name, 1, &inserts(101, 200));
    wait_for("the messages after the fault", 120, || ids().len() >= 200).await;
    let mut got = ids();
    got.sort();
    assert_eq!(got, (1..=200).collect::<Vec<_>>(), "each message once; log: {}", std::fs::read_to_string(&log).unwrap());
    signal(&child.0, "TERM");
    assert!(child.0.wait().unwrap().success());
}

/// The path to the broker goes silent under the reading pipeline (the
/// broker advertises a proxy, so every connection goes through it): the
/// consumer's request deadline notices, it reconnects and reads on.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_source_survives_a_silently_dropped_broker_connection() {
    let (proxy_port, broker_port) = (free_port(), free_port());
    let proxy = Proxy::start_on(proxy_port, broker_port).await;
    let _broker = PrivateBroker::start_advertising(broker_port, proxy_port);
    reads_on_through(&format!("127.0.0.1:{proxy_port}"), &unique("knet_src"), "ksrc-net", || proxy.blackhole()).await;
}

/// The broker is killed (`kill -9`) under the reading pipeline and started
/// again on the same storage: riffle reconnects and reads on.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_source_survives_a_broker_restart() {
    let mut broker = PrivateBroker::start_persistent(free_port());
    let b = broker.brokers();
    reads_on_through(&b, &unique("krestart_src"), "ksrc-restart", || {
        broker.kill();
        broker.restart();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_status_know_a_kafka_source() {
    let b = brokers();
    let topic = unique("kstatus");
    produce(&b, &topic, 1, &inserts(1, 10));
    let dir = temp_dir("ksrc-status");
    let state = dir.join("state");
    let source = format!("kafka://{b}?topics={topic}");
    drain(&source, &topic, &dir.join("out"), "jsonl", &state);
    produce(&b, &topic, 1, &inserts(11, 15));
    // Five messages written since the pipeline's saved offsets.
    let status = riffle_ok(&["status", "--state", state.to_str().unwrap(), "--source", &source, "--json"]);
    let saved: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(saved[0]["kafka"]["lag_messages"], 5, "{saved}");
    assert_eq!(saved[0]["kafka"]["partitions"][format!("{topic}/0")], 5, "{saved}");
    let text = riffle_ok(&["status", "--state", state.to_str().unwrap(), "--source", &source]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("5 message(s) behind over 1 partition(s)"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    // check: the brokers answer, the topic matches; a glob that matches nothing is a problem with its fix.
    let check = riffle_ok(&["check", "--source", &source, "--sink", dir.join("out").to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(shown.contains(&format!("topic {topic}")) && shown.contains("1 partition(s)"), "{shown}");
    let none = riffle(&["check", "--source", &format!("kafka://{b}?topics=no_such_topic_*"), "--sink", dir.join("out").to_str().unwrap()]);
    assert!(!none.status.success());
    let shown = String::from_utf8_lossy(&none.stdout);
    assert!(shown.contains("topics matching no_such_topic_*") && shown.contains("check ?topics="), "{shown}");
    // The schema registry, when one is set: answering, or a problem with its fix.
    let (registry, _state) = start_registry().await;
    let with =
        |url: &str| riffle(&["check", "--source", &format!("{source}&schema_registry={url}"), "--sink", dir.join("out").to_str().unwrap()]);
    let good = with(&registry);
    let shown = String::from_utf8_lossy(&good.stdout);
    assert!(good.status.success() && shown.contains("schema registry") && shown.contains("answered"), "{shown}");
    let bad = with(&format!("http://127.0.0.1:{}/", free_port()));
    let shown = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success() && shown.contains("check ?schema_registry="), "{shown}");
    // `riffle snapshot` has nothing to read again in a Kafka pipeline, and says so.
    let again = riffle(&["snapshot", "--name", &topic, "--state", state.to_str().unwrap(), "--tables", "public.t"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("which has no snapshot to read again"), "{}", stderr(&again));
    assert!(!std::fs::read_dir(&state).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains("request")), "no request left");
}

#[tokio::test(flavor = "multi_thread")]
async fn avro_topics_read_back_through_the_schema_registry() {
    let (registry, _state) = start_registry().await;
    let b = brokers();
    let name = unique("ksrc_avro");
    let dir = temp_dir("ksrc-avro");
    // Avro cannot hold a multi-dimensional array in an array of the element
    // type (the sink refuses it, naming the column): one dimension here.
    // Debezium's Avro (Confluent's AvroConverter form; decimals as strings:
    // a numeric NaN has no precise form) and riffle's Avro mapping.
    let out_db = types_into_kafka(
        "it_ksrc_avro",
        &name,
        &dir,
        crate::pg_types::rows_sql_for_avro,
        "UPDATE types SET c_text = 'changed' WHERE id = 1; DELETE FROM types WHERE id = 2",
        &format!(
            r#"[[sinks]]
url = "kafka://{b}"
format = "avro"
schema_registry = "{registry}"
topic_prefix = "{name}_d"
"decimal.handling.mode" = "string"
[[sinks]]
url = "kafka://{b}"
format = "avro"
schema_registry = "{registry}"
topic_prefix = "{name}_r"
value_encoding = "riffle"
"#
        ),
    )
    .await;
    let read = |prefix: &str, out: &Path| {
        let source = format!("kafka://{b}?topics={prefix}.public.types&schema_registry={registry}");
        drain(&source, &format!("{prefix}_reader"), out, "csv", &dir.join(format!("state-{prefix}")));
    };
    let (out_d, out_r) = (dir.join("from-avro-debezium"), dir.join("from-avro-riffle"));
    read(&format!("{name}_d"), &out_d);
    read(&format!("{name}_r"), &out_r);
    // As with Debezium's JSON: a timetz in UTC and an interval in microseconds.
    let lossy = ["c_timetz", "c_interval"];
    assert_eq!(csv_rows(&out_d, "public.types", &lossy), csv_rows(&out_db, "public.types", &lossy));
    // riffle's Avro mapping: an infinite timestamp is the type's largest value (schemas/README.md).
    let lossy = ["c_tstz"];
    assert_eq!(csv_rows(&out_r, "public.types", &lossy), csv_rows(&out_db, "public.types", &lossy));
}
