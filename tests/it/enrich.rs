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
snapshot_workers = 1
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
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(r#"the reference table has no column "colour" (columns: id, description, brand, price)"#),
        "{}",
        stderr(&out)
    );
    // A join column the enriched table does not have.
    let bad = r#"{ from = "public.products", on = { sku = "id" }, columns = ["brand"] }"#;
    let out = run(&config(&dir, db, bad, r#""public.orders", "public.products""#));
    assert!(!out.status.success());
    assert!(stderr(&out).contains(r#"column "sku" does not exist"#), "{}", stderr(&out));
    assert!(read_jsonl(&dir.join("out"), "public.orders").is_empty(), "no order was written without its enrichment");
}
