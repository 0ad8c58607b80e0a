//! The streaming-first demo (`schemas/examples/streaming-first/`), its four
//! pipeline files unchanged, against the real servers: MariaDB → Kafka
//! (enriched JSON with before images) → CSV files, the orders of location
//! 10 as Avro (S3 standing in for HDFS, which cannot run here), and every
//! order as JSON lines in Azure (Azurite).

use crate::kafka_support::*;
use crate::objects_support::*;
use crate::support::*;
use mysql_async::prelude::Queryable;
use serde_json::json;

fn example(file: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples/streaming-first").join(file).display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_first_demo_runs_end_to_end() {
    let mut conn = my_fresh_db("shop").await;
    conn.query_drop(
        "CREATE TABLE products (id int PRIMARY KEY, description varchar(50), brand varchar(20), price decimal(8,2));
         CREATE TABLE orders (id int PRIMARY KEY, product_id int, location_id int, qty int);
         INSERT INTO products VALUES (1, 'kettle', 'acme', 25.00), (2, 'toaster', 'zeta', 40.50);
         INSERT INTO orders VALUES (1, 1, 10, 2), (2, 2, 20, 1), (3, 2, 10, 3);",
    )
    .await
    .unwrap();
    let dir = temp_dir("demo");
    let prefix = unique("demo");
    let lake = format!("demo-{prefix}");
    let mut env: Vec<(String, String)> = s3_env();
    env.extend([
        ("DEMO_MARIADB_URL".to_string(), my_url("shop")),
        ("DEMO_KAFKA".into(), brokers()),
        ("DEMO_TOPIC_PREFIX".into(), prefix.clone()),
        ("DEMO_CSV_DIR".into(), dir.join("csv").display().to_string()),
        ("DEMO_LAKE_URL".into(), s3_url(&lake)),
        ("DEMO_AZURE_URL".into(), azure_url(&lake)),
    ]);
    let run = |file: &str| {
        let state = dir.join("state");
        let args = ["replicate", "--config", &example(file), "--state", state.to_str().unwrap(), "--until", "now"];
        let out = riffle_cmd(&args).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).output().unwrap();
        assert!(out.status.success(), "{file}: {}", stderr(&out));
    };
    run("1-mariadb-to-kafka.toml");
    // A product changes, then new orders come: they carry the new price.
    conn.query_drop("UPDATE products SET price = 27.50 WHERE id = 1; INSERT INTO orders VALUES (4, 1, 10, 1), (5, 1, 30, 5)")
        .await
        .unwrap();
    run("1-mariadb-to-kafka.toml");
    for file in ["2-kafka-to-csv.toml", "3-kafka-to-hdfs.toml", "4-kafka-to-azure.toml"] {
        run(file);
    }

    // CSV: every order, with its product.
    let (header, rows) = read_csv(&dir.join("csv"), "shop.orders");
    let at = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
    let mut got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            let cell = |n: &str| r[at(n)].clone().unwrap_or_default();
            (cell("id"), cell("location_id"), cell("description"), cell("price"))
        })
        .collect();
    got.sort();
    let want = [
        ("1", "10", "kettle", "25.00"),
        ("2", "20", "toaster", "40.50"),
        ("3", "10", "toaster", "40.50"),
        ("4", "10", "kettle", "27.50"),
        ("5", "30", "kettle", "27.50"),
    ];
    assert_eq!(got, want.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into())).to_vec());

    // The lake (HDFS's stand-in): location 10 only, as Avro.
    let files = data_objects(&s3_store(), &lake, "shop.orders", "avro").await;
    let mut ids: Vec<i64> = Vec::new();
    for (_, bytes) in files {
        for rec in avro_records(&bytes).1 {
            let after = unwrap_union(field(&rec, "after")).expect("an after image");
            assert_eq!(field(&after, "location_id"), apache_avro::types::Value::Union(1, Box::new(apache_avro::types::Value::Int(10))));
            if let apache_avro::types::Value::Union(_, id) = field(&after, "id") {
                if let apache_avro::types::Value::Int(id) = *id {
                    ids.push(i64::from(id));
                }
            }
        }
    }
    ids.sort();
    assert_eq!(ids, [1, 3, 4], "the orders of location 10");

    // Azure: every order as JSON lines, enriched.
    let events = committed_events(&azure_store(), &lake, "shop.orders").await;
    let rows = replay(&events, "id");
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[&5],
        json!({"id": 5, "product_id": 1, "location_id": 30, "qty": 5, "description": "kettle", "brand": "acme", "price": "27.50"})
    );
    let _ = conn.disconnect().await;
}
