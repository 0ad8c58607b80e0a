//! Lookup enrichment: columns of a reference table joined onto each event
//! of another, from a copy of the reference table held in memory.
//!
//! ```toml
//! [[tables]]
//! match = "shop.orders"
//! enrich = { from = "shop.products", on = { product_id = "id" }, columns = ["description", "brand", "price"] }
//! ```
//!
//! - The reference table is captured by the same pipeline (it must be in
//!   the selection): its snapshot reads fill the copy (a database source
//!   puts reference tables first in its snapshot plan), and its changes keep it
//!   current, in stream order. So an event is enriched with the reference
//!   row **as of its own position in the stream**: a product renamed after
//!   an order changes the orders that follow, not the ones before. (With one
//!   snapshot worker the reference table is read whole first; with several,
//!   other tables' chunks may be read beside it and miss rows not read yet.)
//! - Both images (`before`, `after`) get the columns, after the table's own
//!   columns (`prefix` in front of their names, default none). No matching
//!   reference row: the columns are null and
//!   `riffle_enrich_misses_total{table}` counts it; never an error.
//! - The copy holds at most `max_rows` rows (default 1,000,000) of the
//!   chosen columns; a reference table past that stops the pipeline with an
//!   error saying so (raise `max_rows`, or enrich downstream).
//! - After a restart the copy is gone: a database source reads the
//!   reference tables again while streaming (an incremental snapshot, the
//!   reads marked `incremental`), and events that pass before a reference
//!   row is read again miss it (nulls, counted).

use riffle_core::{ChangeEvent, Column, Op, SinkError, TableId, TableSchema, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// One `enrich` setting, validated against the configuration.
#[derive(Debug, Clone)]
pub struct Enrich {
    pub from: TableId,
    /// (column of the enriched table, column of the reference table).
    pub on: Vec<(String, String)>,
    pub columns: Vec<String>,
    pub prefix: String,
    pub max_rows: usize,
}

pub const DEFAULT_MAX_ROWS: usize = 1_000_000;

/// The key of `row` at `idx`; `None` when a part is NULL or was not sent.
fn key_of(row: &[Value], idx: &[usize]) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    for &i in idx {
        match row.get(i)? {
            Value::Null | Value::Unavailable => return None,
            // A value's canonical text (the masks' too): `5`, `'5'` and a decimal `5` match.
            v => {
                super::canonical(v, &mut key);
                key.push(0);
            }
        }
    }
    Some(key)
}

/// The copy of one reference table.
pub struct Reference {
    /// Reference column names of the key, in the `on` order of the first rule.
    key_columns: Vec<String>,
    /// The columns kept, by name.
    columns: Vec<String>,
    max_rows: usize,
    /// The reference table's schema as last seen (the enrichment columns'
    /// types come from it).
    pub schema: Option<Arc<TableSchema>>,
    /// Indexes into `schema` of the key columns and the kept columns.
    key_idx: Vec<usize>,
    col_idx: Vec<usize>,
    rows: HashMap<Vec<u8>, Vec<Value>>,
    /// Rows read since this process started (0: never loaded).
    pub loaded: u64,
}

impl Reference {
    pub fn new(e: &Enrich) -> Reference {
        Reference {
            key_columns: e.on.iter().map(|(_, r)| r.clone()).collect(),
            columns: e.columns.clone(),
            max_rows: e.max_rows,
            schema: None,
            key_idx: Vec::new(),
            col_idx: Vec::new(),
            rows: HashMap::new(),
            loaded: 0,
        }
    }

    /// Another rule enriching from the same table: the copy keeps the
    /// union of the columns and the larger bound.
    pub fn widen(&mut self, e: &Enrich) -> Result<(), String> {
        let key: Vec<String> = e.on.iter().map(|(_, r)| r.clone()).collect();
        if key != self.key_columns {
            return Err(format!(
                "two enrich rules join {} on different columns ({} and {}); use the same reference key",
                e.from,
                self.key_columns.join(", "),
                key.join(", ")
            ));
        }
        for c in &e.columns {
            if !self.columns.contains(c) {
                self.columns.push(c.clone());
            }
        }
        self.max_rows = self.max_rows.max(e.max_rows);
        Ok(())
    }

    /// Learns the reference table's schema (each new version).
    pub(super) fn learn(&mut self, schema: &Arc<TableSchema>) -> Result<(), SinkError> {
        if self.schema.as_ref().is_some_and(|s| Arc::ptr_eq(s, schema) || **s == **schema) {
            return Ok(());
        }
        let find = |c: &String| {
            schema.column_index(c).ok_or_else(|| {
                let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
                SinkError::definite(format!(
                    "enrich from {}: the reference table has no column {c:?} (columns: {})",
                    schema.id,
                    names.join(", ")
                ))
            })
        };
        let key_idx = self.key_columns.iter().map(find).collect::<Result<Vec<_>, _>>()?;
        let col_idx = self.columns.iter().map(find).collect::<Result<Vec<_>, _>>()?;
        // The rows held are in `columns` order, whatever the schema's.
        self.key_idx = key_idx;
        self.col_idx = col_idx;
        self.schema = Some(schema.clone());
        Ok(())
    }

    /// Keeps the copy current with one event of the reference table.
    pub fn apply(&mut self, ev: &ChangeEvent) -> Result<(), SinkError> {
        self.learn(&ev.table)?;
        match ev.op {
            Op::Truncate => self.rows.clear(),
            Op::Delete => {
                if let Some(k) = ev.before.as_deref().and_then(|b| key_of(b, &self.key_idx)) {
                    self.rows.remove(&k);
                }
            }
            Op::Read | Op::Create | Op::Update => {
                let Some(after) = ev.after.as_deref() else { return Ok(()) };
                let Some(key) = key_of(after, &self.key_idx) else { return Ok(()) };
                // A key change: the old key's row is gone.
                if let Some(old) = ev.before.as_deref().and_then(|b| key_of(b, &self.key_idx)) {
                    if old != key {
                        self.rows.remove(&old);
                    }
                }
                let previous = self.rows.remove(&key);
                let row: Vec<Value> = self
                    .col_idx
                    .iter()
                    .enumerate()
                    .map(|(n, &i)| match (&after[i], &previous) {
                        // Not sent (an unchanged TOASTed value): the copy's.
                        (Value::Unavailable, Some(p)) => p[n].clone(),
                        (v, _) => v.clone(),
                    })
                    .collect();
                if self.rows.len() >= self.max_rows {
                    return Err(SinkError::definite(format!(
                        "enrich from {}: the reference table holds more than max_rows = {} rows, the bound of its copy in memory; \
                         raise enrich.max_rows (each row costs about the size of its kept columns), or join downstream",
                        ev.table.id, self.max_rows
                    )));
                }
                if ev.op == Op::Read {
                    self.loaded += 1;
                }
                self.rows.insert(key, row);
            }
        }
        Ok(())
    }

    /// The columns the enrichment adds, typed from the reference schema
    /// (text until the reference table has been seen).
    pub fn output_columns(&self, e: &Enrich) -> Vec<Column> {
        e.columns
            .iter()
            .map(|c| {
                let source = self.schema.as_ref().and_then(|s| s.column_index(c).map(|i| s.columns[i].clone()));
                let mut col = source.unwrap_or_else(|| Column {
                    name: c.clone(),
                    source_type: "text".into(),
                    data_type: riffle_core::DataType::String,
                    nullable: true,
                    labels: Vec::new(),
                });
                col.name = format!("{}{c}", e.prefix);
                col.nullable = true;
                col
            })
            .collect()
    }

    /// Appends to `out` the enrichment of `row`, whose join key is at
    /// `idx`: the reference row's chosen columns; nulls when no row
    /// matches or the key is NULL; values not sent when the key was not
    /// sent (a key-only before image). Says whether a key found no row.
    pub fn lookup(&self, row: &[Value], idx: &[usize], columns: &[String], out: &mut Vec<Value>) -> bool {
        if idx.iter().any(|&i| row.get(i).is_none_or(|v| *v == Value::Unavailable)) {
            out.extend(columns.iter().map(|_| Value::Unavailable));
            return false;
        }
        let key = key_of(row, idx);
        let found = key.as_ref().and_then(|k| self.rows.get(k));
        for c in columns {
            let at = self.columns.iter().position(|x| x == c).expect("the copy keeps every rule's columns");
            out.push(found.map_or(Value::Null, |r| r[at].clone()));
        }
        key.is_some() && found.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::{DataType, Position};

    fn table(name: &str, cols: &[&str]) -> Arc<TableSchema> {
        Arc::new(TableSchema {
            id: TableId::new("shop", name),
            columns: cols
                .iter()
                .map(|c| Column {
                    name: c.to_string(),
                    source_type: "int".into(),
                    data_type: DataType::Int64,
                    nullable: true,
                    labels: vec![],
                })
                .collect(),
            key: vec![0],
            full_before_image: true,
        })
    }

    fn ev(t: &Arc<TableSchema>, op: Op, before: Option<Vec<Value>>, after: Option<Vec<Value>>) -> ChangeEvent {
        ChangeEvent {
            op,
            table: t.clone(),
            before,
            after,
            before_image: riffle_core::BeforeImage::Full,
            source: riffle_core::SourceInfo {
                connector: "postgresql",
                name: Arc::from("p"),
                db: Arc::from("d"),
                tx_id: None,
                ts_ms: 0,
                ts_us: 0,
                lsn: None,
                binlog: None,
                snapshot: riffle_core::SnapshotMark::False,
            },
            position: Position::Kafka(riffle_core::KafkaPosition { lane: 0, offset: 0 }),
            ts_ms: 0,
        }
    }

    #[test]
    fn the_copy_follows_inserts_updates_key_changes_deletes_and_truncates() {
        let e = Enrich {
            from: TableId::new("shop", "products"),
            on: vec![("product_id".into(), "id".into())],
            columns: vec!["price".into()],
            prefix: String::new(),
            max_rows: 2,
        };
        let products = table("products", &["id", "price"]);
        let mut r = Reference::new(&e);
        let look = |r: &Reference, id: i64| {
            let mut out = Vec::new();
            let missed = r.lookup(&[Value::Int(id)], &[0], &e.columns, &mut out);
            (out[0].clone(), missed)
        };
        r.apply(&ev(&products, Op::Read, None, Some(vec![Value::Int(1), Value::Int(10)]))).unwrap();
        assert_eq!(look(&r, 1), (Value::Int(10), false));
        assert_eq!(look(&r, 2), (Value::Null, true), "no match: null, counted");
        let both = |id, price| Some(vec![Value::Int(id), Value::Int(price)]);
        r.apply(&ev(&products, Op::Update, both(1, 10), Some(vec![Value::Int(1), Value::Unavailable]))).unwrap();
        assert_eq!(look(&r, 1), (Value::Int(10), false), "a value not sent keeps the copy's");
        r.apply(&ev(&products, Op::Update, both(1, 10), both(3, 30))).unwrap();
        assert_eq!((look(&r, 1).1, look(&r, 3).0), (true, Value::Int(30)), "a key change moves the row");
        r.apply(&ev(&products, Op::Create, None, both(4, 40))).unwrap();
        let err = r.apply(&ev(&products, Op::Create, None, both(5, 50))).unwrap_err().to_string();
        assert!(err.contains("more than max_rows = 2"), "{err}");
        r.apply(&ev(&products, Op::Delete, both(3, 30), None)).unwrap();
        assert!(look(&r, 3).1);
        r.apply(&ev(&products, Op::Truncate, None, None)).unwrap();
        assert!(look(&r, 4).1);
        let mut out = Vec::new();
        assert!(!r.lookup(&[Value::Unavailable], &[0], &e.columns, &mut out) && out == [Value::Unavailable], "a key not sent");
        out.clear();
        assert!(!r.lookup(&[Value::Null], &[0], &e.columns, &mut out) && out == [Value::Null], "a NULL key is no miss");
        let mut bad = Reference::new(&Enrich { columns: vec!["brand".into()], ..e.clone() });
        let err = bad.apply(&ev(&products, Op::Read, None, both(1, 1))).unwrap_err().to_string();
        assert!(err.contains("no column \"brand\" (columns: id, price)"), "{err}");
    }
}
