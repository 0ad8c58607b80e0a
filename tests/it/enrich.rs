//! Lookup enrichment against a real Postgres: reference columns joined
//! onto each event with the reference row as of the event's position, the
//! reference table read first in the snapshot, a miss counted (null, not an
//! error), the reference table read again after a restart, and bad
//! settings refused before anything runs.

use crate::support::*;
use serde_json::json;

const SETUP: &str = "
    CREATE TABLE products (id int PRIMARY KEY, description text, brand text, price numeric(10,2));
    CREATE TABLE orders (id int PRIMARY KEY, product_id int, location_id int, qty int);
    ALTER TABLE orders REPLICA IDENTITY FULL;
    INSERT INTO products VALUES (1, 'kettle', 'acme', 25.00), (2, 'toaster', 'zeta', 40.50), (3, 'mug', 'acme', 4.99);
    INSERT INTO orders VALUES (1, 1, 10, 2), (2, 2, 20, 1), (3, 3, 10, 6), (4, 99, 10, 1);";

fn config(dir: &std::path::Path, db: &str, enrich: &str, tables: &str) -> std::path::PathBuf {
    let path = dir.join("pipeline.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "{db}"
commit_interval = "100ms"
# Several workers and one-row chunks: products' chunks would interleave with
# orders' if the reference table were not read in a phase of its own.
snapshot_workers = 4
snapshot_chunk_rows = 1
[source]
url = "{url}"
tables = [{tables}]
[[sinks]]
url = "{out}"
format = "jsonl"
[[tables]]
match = "public.orders"
enrich = {enrich}
"#,
            url = db_url(db),
            out = dir.join("out").display()
        ),
    )
    .unwrap();
    path
}

const ENRICH: &str = r#"{ from = "public.products", on = { product_id = "id" }, columns = ["description", "brand", "price"] }"#;

/// The last event of each order, by id.
fn orders(dir: &std::path::Path) -> std::collections::BTreeMap<i64, serde_json::Value> {
    replay(&read_jsonl(&dir.join("out"), "public.orders"), "id")
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_joined_with_the_reference_row_as_of_their_position() {
    let db = "it_enrich";
    let client = fresh_db(db).await;
    client.batch_execute(SETUP).await.unwrap();
    let dir = temp_dir("enrich");
    let cfg = config(&dir, db, ENRICH, r#""public.orders", "public.products""#);
    let port = free_port();
    let state = dir.join("state");
    let args = [
        "replicate",
        "--config",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
    ];
    let mut child = Running(spawn_riffle(&args, None, &dir.join("riffle.log")));
    wait_for("the snapshot of orders", 60, || orders(&dir).len() == 4).await;
    // Read before products in name order, orders still found their products: the reference table is read first.
    let o = orders(&dir);
    assert_eq!(
        o[&1],
        json!({"id": 1, "product_id": 1, "location_id": 10, "qty": 2, "description": "kettle", "brand": "acme", "price": "25.00"})
    );
    assert_eq!(o[&2]["description"], "toaster");
    assert_eq!(o[&3]["description"], "mug");
    assert_eq!((&o[&4]["description"], &o[&4]["price"]), (&json!(null), &json!(null)), "no such product: nulls, not an error");

    // The product changes; orders after the change see it, those before keep what they had.
    client.batch_execute("UPDATE products SET price = 27.50, description = 'kettle v2' WHERE id = 1").await.unwrap();
    client.batch_execute("INSERT INTO orders VALUES (5, 1, 20, 1); UPDATE orders SET qty = 3 WHERE id = 3").await.unwrap();
    wait_for("the new order", 30, || orders(&dir).contains_key(&5)).await;
    wait_for("the order update", 30, || orders(&dir)[&3]["qty"] == 3).await;
    let o = orders(&dir);
    assert_eq!((&o[&5]["description"], &o[&5]["price"]), (&json!("kettle v2"), &json!("27.50")));
    assert_eq!(o[&1]["price"], "25.00", "an order written before the change keeps the price of its time");
    let events = read_jsonl(&dir.join("out"), "public.orders");
    let update = events.iter().find(|e| e["op"] == "u").unwrap();
    assert_eq!((&update["before"]["brand"], &update["after"]["brand"]), (&json!("acme"), &json!("acme")), "both images are enriched");
    let body = http_get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
    assert_eq!(metric(&body, r#"riffle_enrich_misses_total{table="public.orders"}"#), Some(1.0), "{body}");
    signal(&child.0, "TERM");
    child.0.wait().unwrap();

    // A restart has no copy: the reference table is read again while streaming.
    client.batch_execute("INSERT INTO orders VALUES (6, 2, 10, 1)").await.unwrap();
    let before = read_jsonl(&dir.join("out"), "public.products").len();
    let mut until = args.to_vec();
    until.extend(["--until", "now"]);
    riffle_ok(&until);
    let products = read_jsonl(&dir.join("out"), "public.products");
    assert_eq!(products[before..].iter().filter(|e| e["op"] == "r").count(), 3, "the products read again after the restart");
    assert!(orders(&dir).contains_key(&6));
}

/// Refused before anything ran: no slot made, no sink written.
async fn nothing_ran(client: &tokio_postgres::Client, db: &str, dir: &std::path::Path, out: &std::process::Output) {
    assert!(!out.status.success());
    let slots: i64 = client.query_one("SELECT count(*) FROM pg_replication_slots WHERE database = $1", &[&db]).await.unwrap().get(0);
    assert_eq!(slots, 0, "no slot was made: {}", stderr(out));
    assert!(!dir.join("out").exists(), "nothing was written: {}", stderr(out));
}

#[tokio::test(flavor = "multi_thread")]
async fn enrichment_settings_that_cannot_work_are_refused_with_the_field() {
    let db = "it_enrich_bad";
    let client = fresh_db(db).await;
    client.batch_execute(SETUP).await.unwrap();
    let dir = temp_dir("enrich-bad");
    let run = |cfg: &std::path::Path| {
        riffle(&["replicate", "--config", cfg.to_str().unwrap(), "--state", dir.join("state").to_str().unwrap(), "--until", "now"])
    };
    // The reference table is not captured: refused before connecting.
    let out = run(&config(&dir, db, ENRICH, r#""public.orders""#));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("tables[0].enrich.from: public.products is not in the pipeline's selection (tables: public.orders)"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("out").exists(), "nothing ran");
    // A column the reference table does not have.
    let bad = r#"{ from = "public.products", on = { product_id = "id" }, columns = ["colour"] }"#;
    let out = run(&config(&dir, db, bad, r#""public.orders", "public.products""#));
    nothing_ran(&client, db, &dir, &out).await;
    assert!(
        stderr(&out).contains(r#"the reference table has no column "colour" (columns: id, description, brand, price)"#),
        "{}",
        stderr(&out)
    );
    // A join column the enriched table does not have.
    let bad = r#"{ from = "public.products", on = { sku = "id" }, columns = ["brand"] }"#;
    let out = run(&config(&dir, db, bad, r#""public.orders", "public.products""#));
    nothing_ran(&client, db, &dir, &out).await;
    assert!(stderr(&out).contains(r#"column "sku" does not exist"#), "{}", stderr(&out));
    // A reference table the selection's glob would take, but the database lacks.
    let bad = r#"{ from = "public.prodcts", on = { product_id = "id" }, columns = ["brand"] }"#;
    let out = run(&config(&dir, db, bad, r#""public.*""#));
    nothing_ran(&client, db, &dir, &out).await;
    assert!(stderr(&out).contains("enrich from public.prodcts: the source has no such table"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_that_matches_no_table_is_a_warning() {
    let db = "it_enrich_nomatch";
    let client = fresh_db(db).await;
    client.batch_execute(SETUP).await.unwrap();
    let dir = temp_dir("enrich-nomatch");
    let cfg = config(&dir, db, ENRICH, r#""public.orders", "public.products""#);
    let text = std::fs::read_to_string(&cfg).unwrap() + "[[tables]]\nmatch = \"public.ordres\"\ncolumns = [\"id\"]\n";
    std::fs::write(&cfg, text).unwrap();
    let out =
        riffle_ok(&["replicate", "--config", cfg.to_str().unwrap(), "--state", dir.join("state").to_str().unwrap(), "--until", "now"]);
    assert!(
        stderr(&out).contains("a [[tables]] rule matches none of the source's tables (yet)") && stderr(&out).contains("public.ordres"),
        "{}",
        stderr(&out)
    );
    assert_eq!(orders(&dir).len(), 4, "the pipeline ran");
}

/// A Kafka source keeps no copy of a reference table across processes: a
/// run that resumes reads the reference topic's events again, up to its
/// saved offsets, before it reads on. Those events rebuild the copy and go
/// to no sink.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_source_rebuilds_the_reference_copy_after_a_restart() {
    let db = "it_enrich_kafka";
    let client = fresh_db(db).await;
    client.batch_execute(SETUP).await.unwrap();
    let dir = temp_dir("enrich-kafka");
    let prefix = crate::kafka_support::unique("enk");
    let brokers = crate::kafka_support::brokers();
    let to_kafka = dir.join("to-kafka.toml");
    std::fs::write(
        &to_kafka,
        format!(
            r#"name = "{prefix}_in"
commit_interval = "100ms"
[source]
url = "{url}"
tables = ["public.orders", "public.products"]
[[sinks]]
url = "kafka://{brokers}"
topic_prefix = "{prefix}"
# Connect schemas: the prices come back as decimals.
schemas_enable = true
"#,
            url = db_url(db)
        ),
    )
    .unwrap();
    let from_kafka = dir.join("from-kafka.toml");
    std::fs::write(
        &from_kafka,
        format!(
            r#"name = "{prefix}_out"
commit_interval = "100ms"
[source]
url = "kafka://{brokers}?topics={prefix}.*"
[[sinks]]
url = "{out}"
format = "jsonl"
[[tables]]
match = "public.orders"
enrich = {ENRICH}
"#,
            out = dir.join("out").display()
        ),
    )
    .unwrap();
    let run = |cfg: &std::path::Path| {
        riffle_ok(&["replicate", "--config", cfg.to_str().unwrap(), "--state", dir.join("state").to_str().unwrap(), "--until", "now"])
    };
    run(&to_kafka);
    run(&from_kafka);
    // The products' partition is read before the orders' one.
    let o = orders(&dir);
    let described: Vec<&serde_json::Value> = (1..=4).map(|id| &o[&id]["description"]).collect();
    assert_eq!(described, [&json!("kettle"), &json!("toaster"), &json!("mug"), &json!(null)]);
    let products = read_jsonl(&dir.join("out"), "public.products").len();
    assert_eq!(products, 3);

    // A new order of a product that did not change since: only the copy
    // rebuilt from the topic can enrich it in the next process.
    client.batch_execute("INSERT INTO orders VALUES (5, 2, 10, 1)").await.unwrap();
    run(&to_kafka);
    let second = run(&from_kafka);
    let o = orders(&dir);
    assert_eq!(
        (&o[&5]["description"], &o[&5]["brand"], &o[&5]["price"]),
        (&json!("toaster"), &json!("zeta"), &json!("40.50")),
        "{}",
        stderr(&second)
    );
    assert!(stderr(&second).contains("reading the reference tables' events again"), "{}", stderr(&second));
    assert_eq!(read_jsonl(&dir.join("out"), "public.products").len(), products, "the events read again go to no sink");
    assert_eq!(read_jsonl(&dir.join("out"), "public.orders").len(), 5, "each order once");
}
