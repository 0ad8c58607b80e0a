//! Every common Postgres type round-trips, exactly, through the snapshot
//! (COPY) and through the stream (pgoutput), in JSON lines and in CSV.

use crate::support::*;
use serde_json::json;

pub(crate) const CREATE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE TABLE types (
    id int PRIMARY KEY,
    c_small smallint, c_int int, c_big bigint,
    c_num numeric, c_num_scaled numeric(12,4),
    c_real real, c_double double precision,
    c_bool boolean,
    c_text text, c_varchar varchar(20), c_char char(3),
    c_bytea bytea,
    c_date date, c_time time, c_timetz timetz, c_ts timestamp, c_tstz timestamptz, c_interval interval,
    c_uuid uuid, c_json json, c_jsonb jsonb,
    c_int_arr int[], c_text_arr text[], c_int_matrix int[][],
    c_mood mood, c_inet inet, c_cidr cidr, c_mac macaddr,
    c_point point
);
"#;

/// Three rows of edge values; `{id}` is replaced so the same rows can be
/// inserted before the snapshot and again while streaming.
const ROWS: &str = r#"
INSERT INTO types VALUES
({a}, 32767, 2147483647, 9223372036854775807,
 12345678901234567890123456789012345678, 12345678.1234,
 3.4028235e38, 1.7976931348623157e308,
 true,
 E'h\u00e9llo "w\u00f6rld", tab\t newline\n \U0001F389 back\\slash', 'comma,here', 'ab',
 '\x00ff10'::bytea,
 '2024-02-29', '23:59:59.999999', '12:00:00.5+05:30', '2024-01-01 00:00:00.000001', '2024-06-30 23:59:59.123456+02', '1 year 2 mons 3 days 04:05:06.789',
 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": {"b": [1, 2, {"c": null}]}, "big": 123456789012345678901234567890}', '{"nested": {"deep": [1, "x", true]}}',
 '{}', '{"a,b",NULL,"q\"t","NULL"}', '{{1,2},{3,4}}',
 'happy', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
 '(1.5,2)'),
({b}, -32768, -2147483648, -9223372036854775808,
 'NaN', -0.0001,
 'NaN', '-Infinity',
 false,
 '', '', '',
 ''::bytea,
 '0001-01-01', '00:00:00', '00:00:00-12', '1970-01-01 00:00:00', 'infinity', '-1 days -00:00:00.000001',
 '00000000-0000-0000-0000-000000000000', '[]', '{}',
 '{NULL}', '{}', '{}',
 'sad', '::1', '::/0', '00:00:00:00:00:00',
 '(0,0)'),
({c}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
 NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
"#;

pub(crate) fn rows_sql(a: i32, b: i32, c: i32) -> String {
    ROWS.replace("{a}", &a.to_string()).replace("{b}", &b.to_string()).replace("{c}", &c.to_string())
}

/// [`rows_sql`] with the two-dimensional array made one-dimensional: Avro
/// holds an array of the element type only (the sink refuses more,
/// naming the column).
pub(crate) fn rows_sql_for_avro(a: i32, b: i32, c: i32) -> String {
    rows_sql(a, b, c).replace("'{{1,2},{3,4}}'", "'{1,2}'")
}

/// The `after` image riffle must produce for each of the three rows.
fn expected_json(id: i64) -> serde_json::Value {
    match id % 100 {
        1 => json!({
            "id": id, "c_small": 32767, "c_int": 2147483647, "c_big": 9223372036854775807i64,
            "c_num": "12345678901234567890123456789012345678", "c_num_scaled": "12345678.1234",
            "c_real": 3.4028235e38, "c_double": 1.7976931348623157e308,
            "c_bool": true,
            "c_text": "h\u{e9}llo \"w\u{f6}rld\", tab\t newline\n \u{1F389} back\\slash", "c_varchar": "comma,here", "c_char": "ab ",
            "c_bytea": "AP8Q",
            "c_date": "2024-02-29", "c_time": "23:59:59.999999", "c_timetz": "12:00:00.5+05:30",
            "c_ts": "2024-01-01T00:00:00.000001", "c_tstz": "2024-06-30T21:59:59.123456Z", "c_interval": "P1Y2M3DT4H5M6.789S",
            "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "c_json": "{\"a\": {\"b\": [1, 2, {\"c\": null}]}, \"big\": 123456789012345678901234567890}",
            "c_jsonb": "{\"nested\": {\"deep\": [1, \"x\", true]}}",
            "c_int_arr": [], "c_text_arr": ["a,b", null, "q\"t", "NULL"], "c_int_matrix": [[1, 2], [3, 4]],
            "c_mood": "happy", "c_inet": "192.168.0.1/24", "c_cidr": "10.0.0.0/8", "c_mac": "08:00:2b:01:02:03",
            "c_point": "(1.5,2)"
        }),
        2 => json!({
            "id": id, "c_small": -32768, "c_int": -2147483648, "c_big": -9223372036854775808i64,
            "c_num": "NaN", "c_num_scaled": "-0.0001",
            "c_real": "NaN", "c_double": "-Infinity",
            "c_bool": false,
            "c_text": "", "c_varchar": "", "c_char": "   ",
            "c_bytea": "",
            "c_date": "0001-01-01", "c_time": "00:00:00", "c_timetz": "00:00:00-12",
            "c_ts": "1970-01-01T00:00:00", "c_tstz": "infinity", "c_interval": "P-1DT-0.000001S",
            "c_uuid": "00000000-0000-0000-0000-000000000000", "c_json": "[]", "c_jsonb": "{}",
            "c_int_arr": [null], "c_text_arr": [], "c_int_matrix": [],
            "c_mood": "sad", "c_inet": "::1", "c_cidr": "::/0", "c_mac": "00:00:00:00:00:00",
            "c_point": "(0,0)"
        }),
        _ => {
            let mut v = expected_json(1);
            for (k, val) in v.as_object_mut().unwrap().iter_mut() {
                *val = if k == "id" { json!(id) } else { serde_json::Value::Null };
            }
            v
        }
    }
}

/// The CSV cells riffle must produce: JSON strings unquoted, numbers as
/// written, arrays as JSON text, bytes as base64, NULL as an empty unquoted
/// cell (None) and the empty string as `""` (Some("")).
fn expected_csv(id: i64, header: &[String]) -> Vec<Option<String>> {
    let v = expected_json(id);
    header
        .iter()
        .filter(|h| !h.starts_with("__"))
        .map(|h| match &v[h.as_str()] {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect()
}

fn check_jsonl(events: &[serde_json::Value], op: &str, ids: [i64; 3]) {
    assert_eq!(events.len(), 3, "{events:#?}");
    for (e, id) in events.iter().zip(ids) {
        assert_eq!(e["op"], op);
        assert_eq!(e["after"], expected_json(id), "row {id}");
        assert_eq!(e["source"]["table"], "types");
        assert_eq!(e["key"], json!({ "id": id }));
    }
}

fn check_csv(dir: &std::path::Path, op: &str, ids: [i64; 3]) {
    let (header, rows) = read_csv(dir, "public.types");
    assert_eq!(header.iter().filter(|h| !h.starts_with("__")).count(), 30);
    assert_eq!(rows.len(), 3);
    let op_col = header.iter().position(|h| h == "__op").unwrap();
    for (row, id) in rows.iter().zip(ids) {
        let data: Vec<Option<String>> = row.iter().zip(&header).filter(|(_, h)| !h.starts_with("__")).map(|(c, _)| c.clone()).collect();
        // Floats: compare as numbers (3.4028235e38 may print as 3.4028235e38 or 340282350000000000000000000000000000000).
        let expected = expected_csv(id, &header);
        for ((got, want), name) in data.iter().zip(&expected).zip(header.iter()) {
            if (name == "c_real" || name == "c_double") && got != want {
                let (g, w) = (got.as_deref().map(str::parse::<f64>), want.as_deref().map(str::parse::<f64>));
                match (g, w) {
                    (Some(Ok(g)), Some(Ok(w))) => assert_eq!(g, w, "row {id} column {name}"),
                    _ => assert_eq!(got, want, "row {id} column {name}"),
                }
            } else {
                assert_eq!(got, want, "row {id} column {name}");
            }
        }
        assert_eq!(row[op_col].as_deref(), Some(op));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_through_snapshot_and_stream() {
    let db = "it_types";
    let client = fresh_db(db).await;
    client.batch_execute(CREATE).await.unwrap();
    client.batch_execute(&rows_sql(1, 2, 3)).await.unwrap();
    let url = db_url(db);
    let json_dir = temp_dir("types-jsonl");
    let csv_dir = temp_dir("types-csv");
    let state = temp_dir("types-state");
    let (jd, cd, st) = (json_dir.to_str().unwrap(), csv_dir.to_str().unwrap(), state.to_str().unwrap());

    // Snapshot: one pipeline writing both formats.
    let cfg = state.join("pipeline.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"types\"\ncommit_interval = \"100ms\"\n[source]\nurl = \"{url}\"\ntables = [\"public.types\"]\n\
             [[sinks]]\nurl = \"{jd}\"\nformat = \"jsonl\"\n[[sinks]]\nurl = \"file://{cd}\"\nformat = \"csv\"\n[state]\ndir = \"{st}\"\n"
        ),
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    riffle_ok(&["replicate", "--config", cfg, "--until", "now"]);
    check_jsonl(&read_jsonl(&json_dir, "public.types"), "r", [1, 2, 3]);
    check_csv(&csv_dir, "r", [1, 2, 3]);

    // Stream: the same values inserted after the snapshot.
    client.batch_execute(&rows_sql(101, 102, 103)).await.unwrap();
    riffle_ok(&["replicate", "--config", cfg, "--until", "now"]);
    let events = read_jsonl(&json_dir, "public.types");
    check_jsonl(&events[3..], "c", [101, 102, 103]);
    for e in &events[3..] {
        assert_eq!(e["source"]["snapshot"], "false");
        assert!(e["source"]["txId"].as_u64().is_some());
        assert_eq!(e["transaction"]["id"], e["source"]["txId"].to_string());
    }
    // Only the streamed rows: drop the snapshot files from the CSV side.
    for f in data_files(&csv_dir, "public.types") {
        if f.file_name().unwrap().to_string_lossy().contains(".s") {
            std::fs::remove_file(f).unwrap();
        }
    }
    check_csv(&csv_dir, "c", [101, 102, 103]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_without_metadata_is_a_plain_copy() {
    let db = "it_types_plain";
    let client = fresh_db(db).await;
    client.batch_execute(CREATE).await.unwrap();
    client.batch_execute(&rows_sql(1, 2, 3)).await.unwrap();
    let out = temp_dir("types-plain");
    riffle_ok(&["sync", "--source", &db_url(db), "--tables", "types", "--sink", out.to_str().unwrap(), "--format", "csv", "--no-metadata"]);
    let (header, rows) = read_csv(&out, "public.types");
    assert!(!header.iter().any(|h| h.starts_with("__")), "{header:?}");
    assert_eq!(header.len(), 30);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2][1..].iter().filter(|c| c.is_some()).count(), 0, "the all-NULL row has only empty unquoted cells");
    // A sync leaves no slot and no publication behind.
    let admin = connect(&admin_url()).await;
    let slots: i64 = admin.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0);
}
