//! Every MySQL/MariaDB type round-trips, exactly, through the snapshot (the
//! text protocol) and through the binlog (row images).

use crate::support::*;
use base64::Engine;
use mysql_async::prelude::Queryable;
use serde_json::json;

const CREATE: &str = "CREATE TABLE types (
  id INT PRIMARY KEY,
  c_tiny TINYINT, c_tiny_u TINYINT UNSIGNED, c_small SMALLINT, c_small_u SMALLINT UNSIGNED,
  c_medium MEDIUMINT, c_medium_u MEDIUMINT UNSIGNED, c_int INT, c_int_u INT UNSIGNED,
  c_big BIGINT, c_big_u BIGINT UNSIGNED,
  c_dec DECIMAL(65,30), c_dec2 DECIMAL(10,2),
  c_float FLOAT, c_double DOUBLE,
  c_bit1 BIT(1), c_bit BIT(12), c_bool BOOL,
  c_enum ENUM('sad','happy'), c_set SET('a','b','c'),
  c_date DATE, c_time TIME(6), c_dt DATETIME(6), c_ts TIMESTAMP(6) NULL, c_year YEAR,
  c_char CHAR(5), c_varchar VARCHAR(50), c_text TEXT, c_latin VARCHAR(20) CHARACTER SET latin1,
  c_bin BINARY(4), c_varbin VARBINARY(10), c_blob BLOB,
  c_json JSON, c_geo GEOMETRY
)";

fn rows_sql(a: i32, b: i32, c: i32) -> String {
    format!(
        "INSERT INTO types VALUES
        ({a}, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807, 18446744073709551615,
         '12345678901234567890123456789012345.123456789012345678901234567890', 12345678.90, 1.234567, 1.7976931348623157e308,
         b'1', b'101010101010', TRUE, 'happy', 'a,c',
         '2024-02-29', '838:59:59.999999', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155,
         'ab', 'h\u{e9}llo \u{1F389} w\u{f6}rld, \"q\"', 'multi\\nline\\ttab', 'caf\u{e9}',
         0x00FF1020, 0x00, 0xDEADBEEF, '{{\"a\": [1, 2, {{\"b\": null}}]}}', ST_GeomFromText('POINT(1 2)')),
        ({b}, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
         '-0.000000000000000000000000000001', -0.01, -1.5, -2.2250738585072014e-308,
         b'0', b'0', FALSE, 'sad', '',
         '0000-00-00', '-838:59:59.000000', '0000-00-00 00:00:00', '1970-01-01 00:00:01', 1901,
         '', '', '', '',
         0x00000000, '', '', '[]', ST_GeomFromText('LINESTRING(0 0,1 1)')),
        ({c}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
}

/// Asserts two rows are equal, naming the columns that differ.
fn assert_row(got: &serde_json::Value, want: &serde_json::Value, what: &str) {
    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
    let differ: Vec<String> = w
        .iter()
        .filter(|(k, v)| g.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: got {:?}, want {v:?}", g.get(k)))
        .chain(g.keys().filter(|k| !w.contains_key(*k)).map(|k| format!("{k}: unexpected")))
        .collect();
    assert!(differ.is_empty(), "{what}: {}", differ.join("; "));
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn expected(id: i64, geo: &[Vec<u8>; 2]) -> serde_json::Value {
    match id % 100 {
        1 => json!({
            "id": id, "c_tiny": 127, "c_tiny_u": 255, "c_small": 32767, "c_small_u": 65535, "c_medium": 8388607, "c_medium_u": 16777215,
            "c_int": 2147483647, "c_int_u": 4294967295u64, "c_big": 9223372036854775807i64, "c_big_u": 18446744073709551615u64,
            "c_dec": "12345678901234567890123456789012345.123456789012345678901234567890", "c_dec2": "12345678.90",
            "c_float": 1.234567, "c_double": 1.7976931348623157e308,
            "c_bit1": true, "c_bit": b64(&[0x0a, 0xaa]), "c_bool": 1, "c_enum": "happy", "c_set": "a,c",
            "c_date": "2024-02-29", "c_time": "838:59:59.999999", "c_dt": "9999-12-31T23:59:59.999999", "c_ts": "2038-01-19T03:14:07.999999Z",
            "c_year": 2155, "c_char": "ab", "c_varchar": "h\u{e9}llo \u{1F389} w\u{f6}rld, \"q\"", "c_text": "multi\nline\ttab", "c_latin": "caf\u{e9}",
            "c_bin": b64(&[0, 0xff, 0x10, 0x20]), "c_varbin": b64(&[0]), "c_blob": b64(&[0xde, 0xad, 0xbe, 0xef]),
            "c_json": "{\"a\": [1, 2, {\"b\": null}]}", "c_geo": b64(&geo[0])
        }),
        2 => json!({
            "id": id, "c_tiny": -128, "c_tiny_u": 0, "c_small": -32768, "c_small_u": 0, "c_medium": -8388608, "c_medium_u": 0,
            "c_int": -2147483648i64, "c_int_u": 0, "c_big": -9223372036854775808i64, "c_big_u": 0,
            "c_dec": "-0.000000000000000000000000000001", "c_dec2": "-0.01",
            "c_float": -1.5, "c_double": -2.2250738585072014e-308,
            "c_bit1": false, "c_bit": b64(&[0, 0]), "c_bool": 0, "c_enum": "sad", "c_set": "",
            "c_date": "0000-00-00", "c_time": "-838:59:59.000000", "c_dt": "0000-00-00T00:00:00.000000", "c_ts": "1970-01-01T00:00:01.000000Z",
            "c_year": 1901, "c_char": "", "c_varchar": "", "c_text": "", "c_latin": "",
            "c_bin": b64(&[0, 0, 0, 0]), "c_varbin": "", "c_blob": "",
            "c_json": "[]", "c_geo": b64(&geo[1])
        }),
        _ => {
            let mut v = expected(1, geo);
            for (k, val) in v.as_object_mut().unwrap().iter_mut() {
                *val = if k == "id" { json!(id) } else { serde_json::Value::Null };
            }
            v
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_through_snapshot_and_binlog() {
    let db = "it_my_types";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop(CREATE).await.unwrap();
    conn.query_drop(rows_sql(1, 2, 3)).await.unwrap();
    // The server's own bytes for the geometry values (MySQL's internal form: SRID + WKB).
    let geo: Vec<Vec<u8>> = conn.query("SELECT c_geo FROM types WHERE id IN (1, 2) ORDER BY id").await.unwrap();
    let geo: [Vec<u8>; 2] = [geo[0].clone(), geo[1].clone()];
    let (out, state) = (temp_dir("my-types-out"), temp_dir("my-types-state"));
    let args = [
        "replicate",
        "--source",
        &my_url(db),
        "--tables",
        "types",
        "--sink",
        out.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--until",
        "now",
    ];
    riffle_ok(&args);
    conn.query_drop(rows_sql(101, 102, 103)).await.unwrap();
    conn.query_drop("UPDATE types SET c_varchar = 'changed' WHERE id = 101").await.unwrap();
    conn.query_drop("DELETE FROM types WHERE id = 102").await.unwrap();
    riffle_ok(&args);

    let events = read_jsonl(&out, "it_my_types.types");
    assert_eq!(events.len(), 8, "{events:#?}");
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "r", "c", "c", "c", "u", "d"]);
    for e in &events[..6] {
        let id = e["after"]["id"].as_i64().unwrap();
        assert_row(&e["after"], &expected(id, &geo), &format!("row {id} ({})", e["op"]));
    }
    // Updates and deletes carry the whole before image (binlog_row_image=FULL).
    assert_row(&events[6]["before"], &expected(101, &geo), "before of 101");
    let mut changed = expected(101, &geo);
    changed["c_varchar"] = json!("changed");
    assert_row(&events[6]["after"], &changed, "after of 101");
    assert_eq!(events[6]["before_image"], "full");
    assert_row(&events[7]["before"], &expected(102, &geo), "before of 102");
    assert_eq!(events[7]["source"]["connector"], "mariadb");
    assert!(events[7]["source"]["gtid"].as_str().is_some_and(|g| g.starts_with("0-1-")), "{}", events[7]["source"]);
    assert_eq!(events[7]["key"], json!({"id": 102}));
}

/// MariaDB's UUID, INET6 and INET4 columns: the snapshot reads their text,
/// the binlog their bytes (trailing zero bytes dropped); both must give the
/// text the server prints, including as chunk keys (a UUID primary key,
/// three rows a chunk) and in before images.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_uuid_inet6_and_inet4_read_alike_from_snapshot_and_binlog() {
    const UUIDS: [&str; 14] = [
        "123e4567-e89b-12d3-a456-426614174000",
        "6ccd780c-baba-1026-9564-5b8c656024db",
        "f81d4fae-7dec-41d0-a765-00a0c91e6bf6",
        "00000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-0000000000ff",
        "017f22e2-79b0-7cc3-98c4-dc0c0c07398f",
        "11223344-5566-7788-c999-aabbccddeeff",
        "a0000000-0000-1000-8000-000000000000",
        "a0000000-0000-4000-8000-000000000001",
        "ffffffff-ffff-4fff-bfff-ffffffffffff",
        "00000001-0000-0000-0000-000000000000",
        "5a0e6cf4-3c4e-11ee-be56-0242ac120002",
        "5a0e6cf4-3c4e-11ee-be56-0242ac120003",
        "01890a5d-ac96-774b-bcce-b302099a8057",
    ];
    const INET6: [&str; 14] = [
        "::",
        "::1",
        "::1.2.3.4",
        "::ffff:1.2.3.4",
        "2001:db8:0:1:1:1:1:1",
        "2001:db8::",
        "1:0:0:1:0:0:0:1",
        "fe80::1:0:0:1",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "0:0:0:0:0:1:0:0",
        "1::",
        "1:2:3:4:5:6:7:8",
        "::ffff:0.0.0.0",
        "::0.1.0.0",
    ];
    const INET4: [&str; 5] = ["0.0.0.0", "255.255.255.255", "10.0.0.1", "1.0.0.0", "192.168.0.0"];
    let db = "it_my_fixed_binary";
    let mut conn = my_fresh_db(db).await;
    conn.query_drop("CREATE TABLE addr (u UUID PRIMARY KEY, i6 INET6, i4 INET4, n INT NOT NULL)").await.unwrap();
    let insert = |rows: std::ops::Range<usize>| {
        let values: Vec<String> = rows
            .map(|n| {
                let i4 = if n % 6 == 5 { "NULL".to_string() } else { format!("'{}'", INET4[n % INET4.len()]) };
                format!("('{}', '{}', {i4}, {n})", UUIDS[n], INET6[n])
            })
            .collect();
        format!("INSERT INTO addr VALUES {}", values.join(", "))
    };
    conn.query_drop(insert(0..7)).await.unwrap();
    let (out, state) = (temp_dir("my-fixed-out"), temp_dir("my-fixed-state"));
    let args = replicate_args(&my_url(db), "addr", &out, &state, &["--snapshot-chunk-rows", "3", "--until", "now"]);
    let first = riffle_ok(&args);
    assert!(!stderr(&first).contains("read whole"), "a UUID key bounds chunks: {}", stderr(&first));
    conn.query_drop(insert(7..14)).await.unwrap();
    // The server's text of every row, by n, before the changes below.
    let rows: Vec<(i32, String, Option<String>, Option<String>)> =
        conn.query("SELECT n, CAST(u AS CHAR), CAST(i6 AS CHAR), CAST(i4 AS CHAR) FROM addr").await.unwrap();
    let text: std::collections::BTreeMap<i64, serde_json::Value> =
        rows.into_iter().map(|(n, u, i6, i4)| (i64::from(n), json!({"u": u, "i6": i6, "i4": i4, "n": n}))).collect();
    assert_eq!(text[&4]["u"], UUIDS[4], "the server prints what was inserted");
    conn.query_drop("UPDATE addr SET i6 = '::ffff:9.9.9.9', u = '00000000-0000-0000-0000-0000000000fe' WHERE n = 0").await.unwrap();
    conn.query_drop("DELETE FROM addr WHERE n IN (3, 13)").await.unwrap();
    riffle_ok(&args);

    let events = read_jsonl(&out, &format!("{db}.addr"));
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "r").count(), 7, "{ops:?}");
    assert_eq!(ops.iter().filter(|o| **o == "c").count(), 7, "{ops:?}");
    for e in events.iter().filter(|e| matches!(e["op"].as_str(), Some("r" | "c"))) {
        let n = e["after"]["n"].as_i64().unwrap();
        assert_row(&e["after"], &text[&n], &format!("row {n} ({})", e["op"]));
    }
    let update = events.iter().find(|e| e["op"] == "u").expect("the update");
    assert_row(&update["before"], &text[&0], "before of the update");
    let mut after = text[&0].clone();
    after["i6"] = json!("::ffff:9.9.9.9");
    after["u"] = json!("00000000-0000-0000-0000-0000000000fe");
    assert_row(&update["after"], &after, "after of the update");
    let deletes: Vec<&serde_json::Value> = events.iter().filter(|e| e["op"] == "d").map(|e| &e["before"]).collect();
    assert_eq!(deletes.len(), 2);
    for before in deletes {
        let n = before["n"].as_i64().unwrap();
        assert_row(before, &text[&n], &format!("before of the delete of {n}"));
    }
}

/// Text in every character set riffle decodes from the binlog (every
/// single-byte set the server has, each holding all 256 bytes; every East
/// Asian set, each holding every character the server has for it; UTF-16,
/// UTF-16LE, UCS-2 and UTF-32, astral characters and `CHAR` padding
/// included) reads the same from the snapshot and from the binlog, in
/// after and before images: the server's own text.
#[tokio::test(flavor = "multi_thread")]
async fn every_decodable_character_set_reads_alike_from_snapshot_and_binlog() {
    let db = "it_my_charsets";
    let mut conn = my_fresh_db(db).await;
    let single: Vec<String> = conn
        .query("SELECT CHARACTER_SET_NAME FROM information_schema.CHARACTER_SETS WHERE MAXLEN = 1 AND CHARACTER_SET_NAME <> 'binary' ORDER BY 1")
        .await
        .unwrap();
    assert!(single.len() >= 20 && single.iter().any(|c| c == "cp1251"), "{single:?}");
    let all: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let unicode = "h\u{e9}llo \u{20ac}\u{416}\u{4e2d} \u{1F389}";
    let bmp = "h\u{e9}llo \u{20ac}\u{416}\u{4e2d}";
    // (column, definition, value)
    let mut columns: Vec<(String, String, String)> = single
        .iter()
        .map(|cs| (format!("c_{cs}"), format!("VARCHAR(300) CHARACTER SET {cs}"), format!("CONVERT(UNHEX('{all}') USING {cs})")))
        .collect();
    for (name, def, value) in [
        ("u_utf16", "VARCHAR(40) CHARACTER SET utf16", unicode),
        ("u_utf16le", "VARCHAR(40) CHARACTER SET utf16le", unicode),
        ("u_utf32", "VARCHAR(40) CHARACTER SET utf32", unicode),
        ("u_ucs2", "VARCHAR(40) CHARACTER SET ucs2", bmp),
        ("p_ucs2", "CHAR(4) CHARACTER SET ucs2", "\u{e9}"),
        ("p_utf32", "CHAR(4) CHARACTER SET utf32", "z"),
    ] {
        columns.push((name.into(), def.into(), format!("'{value}'")));
    }
    // The East Asian sets: every character the server has for them (each
    // two-byte sequence, and EUC-JP's 0x8F three-byte ones, it converts to
    // one character), after the ASCII bytes.
    let multi: Vec<(String, u64)> = conn
        .query("SELECT CHARACTER_SET_NAME, MAXLEN FROM information_schema.CHARACTER_SETS WHERE MAXLEN IN (2, 3) AND CHARACTER_SET_NAME NOT IN ('ucs2', 'utf8mb3') ORDER BY 1")
        .await
        .unwrap();
    assert!(multi.iter().any(|(c, _)| c == "gbk") && multi.iter().any(|(c, _)| c == "ujis"), "{multi:?}");
    let ascii: String = (0x20..0x7fu8).map(|b| format!("{b:02X}")).collect();
    for (cs, maxlen) in &multi {
        let mut hex = ascii.clone();
        for prefix in if *maxlen == 3 { vec!["", "8F"] } else { vec![""] } {
            let valid: Option<String> = conn
                .query_first(format!(
                    "WITH RECURSIVE b (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n < 255) \
                     SELECT GROUP_CONCAT(h ORDER BY h SEPARATOR '') FROM ( \
                       SELECT CONCAT('{prefix}', LPAD(HEX(hi.n), 2, '0'), LPAD(HEX(lo.n), 2, '0')) AS h FROM b hi, b lo WHERE hi.n >= 128) t \
                     WHERE CHAR_LENGTH(CONVERT(UNHEX(h) USING {cs})) = 1 AND CONVERT(UNHEX(h) USING {cs}) <> '?'"
                ))
                .await
                .unwrap()
                .flatten();
            hex.push_str(&valid.unwrap());
        }
        assert!(hex.len() > 10_000, "{cs}: {} hex digits", hex.len());
        columns.push((format!("m_{cs}"), format!("MEDIUMTEXT CHARACTER SET {cs}"), format!("CONVERT(UNHEX('{hex}') USING {cs})")));
    }
    let defs: Vec<String> = columns.iter().map(|(n, d, _)| format!("{n} {d}")).collect();
    conn.query_drop(format!("CREATE TABLE cs (id INT PRIMARY KEY, {})", defs.join(", "))).await.unwrap();
    let insert = |id: i32| {
        let names: Vec<&str> = columns.iter().map(|(n, _, _)| n.as_str()).collect();
        let values: Vec<&str> = columns.iter().map(|(_, _, v)| v.as_str()).collect();
        format!("INSERT INTO cs (id, {}) VALUES ({id}, {})", names.join(", "), values.join(", "))
    };
    conn.query_drop(insert(1)).await.unwrap();
    let (out, state) = (temp_dir("my-cs-out"), temp_dir("my-cs-state"));
    let args = replicate_args(&my_url(db), "cs", &out, &state, &["--until", "now"]);
    riffle_ok(&args);
    conn.query_drop(insert(2)).await.unwrap();
    conn.query_drop("UPDATE cs SET id = 3 WHERE id = 1").await.unwrap();
    riffle_ok(&args);

    // The server's text of each row, by id.
    let object: Vec<String> = std::iter::once("'id', id".to_string())
        .chain(columns.iter().map(|(n, _, _)| format!("'{n}', CONVERT({n} USING utf8mb4)")))
        .collect();
    let rows: Vec<String> = conn.query(format!("SELECT JSON_OBJECT({}) FROM cs ORDER BY id", object.join(", "))).await.unwrap();
    let text: Vec<serde_json::Value> = rows.iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_eq!(text[0]["u_utf32"], unicode, "the server holds what was inserted");
    let with_id = |id: i64| {
        let mut row = text[0].clone();
        row["id"] = json!(id);
        row
    };
    let events = read_jsonl(&out, &format!("{db}.cs"));
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "c", "u"]);
    assert_row(&events[0]["after"], &with_id(1), "the snapshot");
    assert_row(&events[1]["after"], &with_id(2), "an insert");
    assert_row(&events[2]["before"], &with_id(1), "an update's before image");
    assert_row(&events[2]["after"], &with_id(3), "an update's after image");
}
