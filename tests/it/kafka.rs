//! Kafka sink against a real Kafka-protocol broker (tansu): topics, keys,
//! Debezium envelopes in JSON (plain and Kafka Connect-wrapped) and Avro
//! (Confluent wire format, schemas in the stand-in registry of
//! `kafka_support`), tombstones, transaction metadata, a broker killed and
//! restarted mid-stream, and bad input.

use crate::kafka_support::*;
use crate::support::*;
use apache_avro::types::Value as A;
use mysql_async::prelude::Queryable;
use serde_json::json;
use std::collections::BTreeSet;

fn term(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "riffle must exit 0 on SIGTERM, got {status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_changes_reach_table_topics_as_debezium_envelopes_with_riffles_value_forms() {
    let db = "it_kafka_pg";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), seen timestamptz);
             ALTER TABLE items REPLICA IDENTITY FULL;
             INSERT INTO items VALUES (1, 'one', 1.50, '2024-01-02 03:04:05.123456+00'), (2, 'two', 2.00, NULL);",
        )
        .await
        .unwrap();
    let name = unique("kpg");
    let b = brokers();
    // riffle's own value forms (Debezium's are compared with Debezium itself in kafka_debezium.rs).
    let plain = format!("kafka://{b}?transaction_topic={name}.tx&value_encoding=riffle");
    let wrapped = format!("kafka://{b}?topic_prefix={name}_w&schemas.enable=true&value_encoding=riffle");
    let state = temp_dir("kafka-pg-state");
    let url = db_url(db);
    let args = [
        "replicate",
        "--source",
        &url,
        "--tables",
        "public.items",
        "--sink",
        &plain,
        "--sink",
        &wrapped,
        "--name",
        &name,
        "--commit-interval",
        "200ms",
        "--state",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([state.display().to_string()])
    .collect::<Vec<_>>();
    let mut child = spawn_riffle(&args, None, &state.join("riffle.log"));
    let topic = format!("{name}.public.items");
    let snap = read_topic(&b, &topic, 2, 90);
    assert_eq!(snap.len(), 2, "snapshot rows on {topic}; log: {}", std::fs::read_to_string(state.join("riffle.log")).unwrap());
    client.batch_execute("INSERT INTO items VALUES (3, 'three', 3.25, '1999-12-31 23:59:59+00')").await.unwrap();
    client.batch_execute("UPDATE items SET name = 'uno', price = 1.75 WHERE id = 1").await.unwrap();
    client.batch_execute("DELETE FROM items WHERE id = 2").await.unwrap();
    client.batch_execute("UPDATE items SET id = 30 WHERE id = 3").await.unwrap();
    client.batch_execute("TRUNCATE items").await.unwrap();
    // 2 reads, insert, update, delete + tombstone, key change (delete +
    // tombstone + create), truncate.
    let msgs = read_topic(&b, &topic, 10, 60);
    let wrapped_msgs = read_topic(&b, &format!("{name}_w.public.items"), 10, 60);
    let tx = read_topic(&b, &format!("{name}.tx"), 10, 60);
    term(&mut child);
    assert_eq!(msgs.len(), 10, "{msgs:#?}");
    assert!(msgs.iter().all(|m| m.partition == 0));

    let v: Vec<serde_json::Value> = msgs.iter().map(Msg::value_json).collect();
    // Snapshot reads: key, envelope, headers.
    assert_eq!(msgs[0].key_json(), json!({"id": 1}));
    assert_eq!(v[0]["op"], "r");
    assert_eq!(v[0]["before"], json!(null));
    assert_eq!(v[0]["after"], json!({"id": 1, "name": "one", "price": "1.50", "seen": "2024-01-02T03:04:05.123456Z"}));
    assert_eq!(v[0]["source"]["snapshot"], "true");
    assert_eq!((v[0]["source"]["connector"].as_str(), v[0]["source"]["db"].as_str()), (Some("postgresql"), Some(db)));
    assert_eq!((v[0]["source"]["schema"].as_str(), v[0]["source"]["table"].as_str()), (Some("public"), Some("items")));
    assert_eq!(v[0].get("key"), None, "the key travels as the message key");
    assert_eq!(msgs[0].headers["riffle.op"], "r");
    assert_eq!(msgs[0].headers["riffle.position"], v[0]["source"]["position"].as_str().unwrap());
    assert_eq!(v[1]["after"], json!({"id": 2, "name": "two", "price": "2.00", "seen": null}));
    // Insert.
    assert_eq!(msgs[2].key_json(), json!({"id": 3}));
    assert_eq!((v[2]["op"].as_str(), v[2]["source"]["snapshot"].as_str()), (Some("c"), Some("false")));
    assert_eq!(v[2]["after"], json!({"id": 3, "name": "three", "price": "3.25", "seen": "1999-12-31T23:59:59Z"}));
    assert_eq!(v[2]["transaction"]["id"], json!(v[2]["source"]["txId"].as_u64().unwrap().to_string()));
    // Update with the whole before image.
    assert_eq!(msgs[3].key_json(), json!({"id": 1}));
    assert_eq!(v[3]["op"], "u");
    assert_eq!(v[3]["before"], json!({"id": 1, "name": "one", "price": "1.50", "seen": "2024-01-02T03:04:05.123456Z"}));
    assert_eq!(v[3]["after"], json!({"id": 1, "name": "uno", "price": "1.75", "seen": "2024-01-02T03:04:05.123456Z"}));
    // Delete, then its tombstone.
    assert_eq!(msgs[4].key_json(), json!({"id": 2}));
    assert_eq!((v[4]["op"].as_str(), &v[4]["after"]), (Some("d"), &json!(null)));
    assert_eq!(v[4]["before"]["name"], "two");
    assert_eq!(msgs[5].key_json(), json!({"id": 2}));
    assert!(msgs[5].value.is_none(), "a tombstone follows the delete");
    // A primary-key change: delete and tombstone under the old key, create under the new.
    assert_eq!((msgs[6].key_json(), v[6]["op"].as_str()), (json!({"id": 3}), Some("d")));
    assert_eq!(v[6]["before"]["name"], "three");
    assert_eq!((msgs[7].key_json(), msgs[7].value.is_none()), (json!({"id": 3}), true));
    assert_eq!((msgs[8].key_json(), v[8]["op"].as_str()), (json!({"id": 30}), Some("c")));
    assert_eq!((&v[8]["before"], &v[8]["after"]["name"]), (&json!(null), &json!("three")));
    // Truncate: its own event, no key.
    assert!(msgs[9].key.is_none());
    assert_eq!((v[9]["op"].as_str(), &v[9]["before"], &v[9]["after"]), (Some("t"), &json!(null), &json!(null)));
    // Positions never go back.
    let positions: Vec<&str> = [0, 1, 2, 3, 4, 6, 9].iter().map(|&i| v[i]["source"]["position"].as_str().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert_eq!(v[6]["source"]["position"], v[8]["source"]["position"], "the two halves of a key change share its position");

    // Kafka Connect's JsonConverter shape: the same payloads, with schemas.
    assert_eq!(wrapped_msgs.len(), 10);
    for (i, (m, plain)) in wrapped_msgs.iter().zip(&msgs).enumerate() {
        let (wv, wk) = (m.value_json(), m.key_json());
        if plain.value.is_some() {
            let mut expected = v[i].clone();
            // Only the topic-derived names differ between the two sinks.
            expected["source"]["name"] = wv["payload"]["source"]["name"].clone();
            assert_eq!(wv["payload"], expected, "message {i}");
            assert_eq!(wv["schema"]["name"], json!(format!("{name}_w.public.items.Envelope")));
            let fields: Vec<&str> = wv["schema"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
            assert_eq!(fields, ["before", "after", "op", "ts_ms", "source", "transaction", "before_image"]);
            let after = &wv["schema"]["fields"][1];
            assert_eq!(after["fields"][2], json!({"field": "price", "type": "string", "optional": true}));
            assert_eq!(after["fields"][3]["name"], "io.debezium.time.ZonedTimestamp");
        } else {
            assert!(m.value.is_none(), "tombstone {i}");
        }
        if plain.key.is_some() {
            assert_eq!(wk["payload"], plain.key_json());
            assert_eq!(wk["schema"]["fields"], json!([{"field": "id", "type": "int32", "optional": false}]));
        }
    }

    // Transaction metadata: BEGIN and END around each of the five transactions.
    assert_eq!(tx.len(), 10, "{tx:#?}");
    let tv: Vec<serde_json::Value> = tx.iter().map(Msg::value_json).collect();
    for (n, pair) in tv.chunks(2).enumerate() {
        let change = &v[[2, 3, 4, 6, 9][n]];
        let events = if n == 3 { 2 } else { 1 };
        assert_eq!(pair[0]["status"], "BEGIN");
        assert_eq!(pair[1]["status"], "END");
        assert_eq!(pair[0]["id"], change["transaction"]["id"]);
        assert_eq!(pair[1]["id"], change["transaction"]["id"]);
        assert_eq!(pair[1]["event_count"], events);
        assert_eq!(pair[1]["data_collections"], json!([{"data_collection": "public.items", "event_count": events}]));
    }
    assert_eq!(tx[0].key_json(), json!({"id": v[2]["transaction"]["id"]}));
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_changes_in_avro_with_registered_schemas_and_a_new_version_on_ddl() {
    let db = "it_kafka_my";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20), price DECIMAL(10,2), seen DATETIME(6));
         INSERT INTO items VALUES (1, 'one', 1.50, '2024-01-02 03:04:05.123456'), (2, 'two', 2.00, NULL);",
    )
    .await
    .unwrap();
    let (registry, reg) = start_registry().await;
    let name = unique("kmy");
    let b = brokers();
    // riffle's Avro mapping (Debezium's Avro is compared with Debezium itself in kafka_debezium.rs).
    let sink = format!("kafka://{b}?schema_registry={registry}&value_encoding=riffle");
    let state = temp_dir("kafka-my-state");
    let url = my_url(db);
    let args: Vec<String> = ["replicate", "--source", &url, "--tables", &format!("{db}.items"), "--sink", &sink, "--format", "avro"]
        .iter()
        .map(|s| s.to_string())
        .chain(["--name".into(), name.clone(), "--commit-interval".into(), "200ms".into(), "--state".into(), state.display().to_string()])
        .collect();
    let mut child = spawn_riffle(&args, None, &state.join("riffle.log"));
    let topic = format!("{name}.{db}.items");
    let snap = read_topic(&b, &topic, 2, 90);
    assert_eq!(snap.len(), 2, "snapshot rows; log: {}", std::fs::read_to_string(state.join("riffle.log")).unwrap());
    conn.query_drop("INSERT INTO items VALUES (3, 'three', -3.25, '1999-12-31 23:59:59')").await.unwrap();
    conn.query_drop("UPDATE items SET name = 'uno' WHERE id = 1").await.unwrap();
    conn.query_drop("DELETE FROM items WHERE id = 2").await.unwrap();
    conn.query_drop("ALTER TABLE items ADD COLUMN qty INT").await.unwrap();
    conn.query_drop("INSERT INTO items VALUES (4, 'four', 4.00, NULL, 7)").await.unwrap();
    conn.query_drop("TRUNCATE TABLE items").await.unwrap();
    let msgs = read_topic(&b, &topic, 8, 60);
    term(&mut child);
    assert_eq!(msgs.len(), 8, "{msgs:#?}");

    let decoded: Vec<Option<(u32, A)>> = msgs.iter().map(|m| m.value.as_ref().map(|v| decode_confluent(v, &reg))).collect();
    let key = |i: usize| decode_confluent(msgs[i].key.as_ref().unwrap(), &reg).1;
    let after = |i: usize| unwrap_union(field(&decoded[i].as_ref().unwrap().1, "after"));
    let op = |i: usize| field(&decoded[i].as_ref().unwrap().1, "op");
    assert_eq!(field(&key(0), "id"), A::Int(1));
    assert_eq!(op(0), A::String("r".into()));
    let first = after(0).unwrap();
    assert_eq!(unwrap_union(field(&first, "name")), Some(A::String("one".into())));
    let Some(A::Decimal(price)) = unwrap_union(field(&first, "price")) else { panic!("price: {first:?}") };
    assert_eq!(<Vec<u8>>::try_from(price).unwrap(), vec![0x00, 150]);
    // DATETIME(6) has no zone: local-timestamp-micros.
    assert_eq!(unwrap_union(field(&first, "seen")), Some(A::LocalTimestampMicros(1_704_164_645_123_456)));
    assert_eq!(unwrap_union(field(&after(1).unwrap(), "seen")), None);
    // Insert with a negative decimal.
    assert_eq!(op(2), A::String("c".into()));
    let Some(A::Decimal(neg)) = unwrap_union(field(&after(2).unwrap(), "price")) else { panic!() };
    assert_eq!(<Vec<u8>>::try_from(neg).unwrap(), (-325_i16).to_be_bytes().to_vec());
    let source = field(&decoded[2].as_ref().unwrap().1, "source");
    assert_eq!(field(&source, "connector"), A::String("mariadb".into()));
    assert!(matches!(unwrap_union(field(&source, "gtid")), Some(A::String(g)) if g.starts_with("0-1-")));
    // Update, delete and its tombstone.
    assert_eq!(op(3), A::String("u".into()));
    assert_eq!(
        unwrap_union(field(&unwrap_union(field(&decoded[3].as_ref().unwrap().1, "before")).unwrap(), "name")),
        Some(A::String("one".into()))
    );
    assert_eq!(op(4), A::String("d".into()));
    assert_eq!(field(&key(5), "id"), A::Int(2));
    assert!(decoded[5].is_none(), "tombstone");
    // After the DDL: a second, compatible version of the value schema.
    let st = reg.lock().unwrap();
    let versions = st.subjects[&format!("{topic}-value")].clone();
    assert_eq!(versions.len(), 2, "one version before the DDL, one after: {:?}", st.subjects);
    assert!(st.refused.is_empty(), "the registry refused {:?}", st.refused);
    assert_eq!(st.subjects[&format!("{topic}-key")].len(), 1);
    drop(st);
    let (id6, v6) = decoded[6].clone().unwrap();
    assert_eq!(id6, versions[1]);
    assert_eq!(decoded[0].as_ref().unwrap().0, versions[0]);
    assert_eq!(unwrap_union(field(&unwrap_union(field(&v6, "after")).unwrap(), "qty")), Some(A::Int(7)));
    assert_eq!(op(7), A::String("t".into()));
    assert!(msgs[7].key.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_killed_and_restarted_mid_stream_loses_nothing() {
    let db = "it_kafka_restart";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v int)").await.unwrap();
    let mut broker = PrivateBroker::start(59192);
    let name = unique("krs");
    let sink = format!("kafka://{}?kafka.message.timeout.ms=4000", broker.brokers());
    let state = temp_dir("kafka-restart-state");
    let url = db_url(db);
    let args: Vec<String> = ["replicate", "--source", &url, "--tables", "public.t", "--sink", &sink, "--name", &name]
        .iter()
        .map(|s| s.to_string())
        .chain(["--commit-interval".into(), "200ms".into(), "--state".into(), state.display().to_string()])
        .collect();
    let log = state.join("riffle.log");
    let mut child = spawn_riffle(&args, None, &log);
    let topic = format!("{name}.public.t");
    let ids = |msgs: &[Msg]| -> BTreeSet<i64> {
        msgs.iter().filter(|m| m.value.is_some()).map(|m| m.value_json()["after"]["id"].as_i64().unwrap()).collect()
    };
    for i in 1..=50 {
        client.execute("INSERT INTO t VALUES ($1, $1)", &[&i]).await.unwrap();
    }
    let before = read_topic(&broker.brokers(), &topic, 50, 90);
    assert_eq!(ids(&before), (1..=50).collect(), "log: {}", std::fs::read_to_string(&log).unwrap());

    // The broker dies (its memory storage with it) while changes keep coming.
    let retries_before = log_count(&log, "transient error, retrying");
    broker.kill();
    for i in 51..=100 {
        client.execute("INSERT INTO t VALUES ($1, $1)", &[&i]).await.unwrap();
    }
    // Sending them fails (kafka.message.timeout.ms): riffle retries.
    wait_for("riffle to retry the changes the dead broker did not take", 60, || {
        log_count(&log, "transient error, retrying") > retries_before || child.try_wait().unwrap().is_some()
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "riffle must keep retrying while the broker is down: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    broker.restart();
    // riffle resends everything after its saved position: nothing it did not
    // see acknowledged is skipped.
    let mut after = Vec::new();
    for _ in 0..12 {
        after = read_topic(&broker.brokers(), &topic, 50, 10);
        if (51..=100).all(|i| ids(&after).contains(&i)) {
            break;
        }
    }
    term(&mut child);
    let all: BTreeSet<i64> = ids(&before).union(&ids(&after)).copied().collect();
    assert_eq!(all, (1..=100).collect(), "log: {}", std::fs::read_to_string(&log).unwrap());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("retrying") || text.contains("retry"), "the outage shows in the log: {text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_kafka_input_fails_clearly_and_skips_nothing() {
    let db = "it_kafka_bad";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, body text); INSERT INTO t VALUES (1, 'small')").await.unwrap();
    let url = db_url(db);
    let state = temp_dir("kafka-bad-state");
    let run = |sink: &str, name: &str, extra: &[&str]| {
        let mut args: Vec<String> =
            ["replicate", "--source", &url, "--tables", "public.t", "--sink", sink, "--name", name, "--until", "now"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(["--state".to_string(), state.display().to_string(), "--max-retries".into(), "1".into()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        riffle(&args)
    };

    // Nobody listens: a clear error before anything is read (no slot made).
    let out = run("kafka://127.0.0.1:1", &unique("kbad"), &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no Kafka broker at 127.0.0.1:1 answered"), "{err}");
    let slots: i64 = client.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0, "nothing may be read from the source when the sink is not ready");

    // A topic riffle may not create (creation switched off, topic missing).
    // tansu has no authorization (its CreateAcls is a stub), so a broker
    // refusing CreateTopics cannot be staged here; the refusal path maps
    // the broker's error code the same way (`ensure_topic`).
    let name = unique("knotopic");
    let out = run(&format!("kafka://{}?create_topics=false", brokers()), &name, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("topic {name}.public.t does not exist and create_topics is false")), "{err}");

    // A message larger than the limit: a definite error naming the event,
    // and no position saved past it. tansu enforces no size limit (it reads
    // neither message.max.bytes nor max.message.bytes), so the limit here
    // is the producer's `message.max.bytes`, which a real deployment sets to
    // the broker's; a broker's MSG_SIZE_TOO_LARGE takes the same path.
    client.execute("INSERT INTO t VALUES (2, repeat('x', 50000))", &[]).await.unwrap();
    let name = unique("kbig");
    let out = run(&format!("kafka://{}?kafka.message.max.bytes=10000", brokers()), &name, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("larger than the limit"), "{err}");
    assert!(err.contains("position"), "{err}");
    let saved = std::fs::read_to_string(state.join(format!("{name}.json"))).unwrap_or_else(|_| "{}".into());
    let saved: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert!(saved["offset"].is_null(), "no offset may be saved past an event that was not delivered: {saved}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_rule_names_the_topic_and_new_topics_get_the_configured_partitions() {
    let db = "it_kafka_route";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
             INSERT INTO a SELECT generate_series(1, 40); INSERT INTO b VALUES (1);",
        )
        .await
        .unwrap();
    let name = unique("kroute");
    let dir = temp_dir("kafka-route");
    let cfg = dir.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\n[source]\nurl = \"{}\"\ntables = [\"public.*\"]\n\
             [[sinks]]\nurl = \"kafka://{}\"\npartitions = 3\n\
             [[tables]]\nmatch = \"public.a\"\ntopic = \"{{prefix}}.custom.{{table}}\"\n",
            db_url(db),
            brokers()
        ),
    )
    .unwrap();
    riffle_ok(&["replicate", "--config", cfg.to_str().unwrap(), "--until", "now", "--state", dir.join("state").to_str().unwrap()]);
    let b = brokers();
    let routed = read_topic(&b, &format!("{name}.custom.a"), 40, 60);
    let ids: BTreeSet<i64> = routed.iter().map(|m| m.key_json()["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=40).collect());
    let partitions: BTreeSet<i32> = routed.iter().map(|m| m.partition).collect();
    assert!(partitions.len() > 1 && partitions.iter().all(|p| (0..3).contains(p)), "keys spread over the 3 partitions: {partitions:?}");
    assert_eq!(read_topic(&b, &format!("{name}.public.b"), 1, 60).len(), 1, "the default topic for other tables");
}
