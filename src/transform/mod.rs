//! Per-table transforms between the source and the sinks: keep or drop
//! columns, mask values, filter rows, route tables to sinks. They run on
//! every event, snapshot and stream alike, so both see the same rules.
//!
//! The first `[[tables]]` rule whose `match` glob fits a table applies to
//! it; a table no rule matches passes unchanged to every sink.

pub mod enrich;
pub mod filter;

use riffle_core::{ChangeEvent, Op};
use riffle_core::{Column, DataType, SinkError, TableId, TableSchema, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

/// How a masked column is hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Replaced by `****`.
    Redact,
    /// Replaced by the hex SHA-256 of salt + value: equal values stay equal,
    /// so joins on the column still work.
    Hash,
}

/// One `[[tables]]` rule, validated.
#[derive(Debug, Clone)]
pub struct TableRule {
    pub pattern: String,
    pub columns: Option<Vec<String>>,
    pub exclude_columns: Vec<String>,
    pub masks: Vec<(String, Mask)>,
    pub filter: Option<(String, filter::Expr)>,
    /// Indexes of the sinks this table goes to; `None` means all.
    pub sinks: Option<Vec<usize>>,
    /// Columns joined from a reference table.
    pub enrich: Option<enrich::Enrich>,
}

/// What happens to one table (one schema version of it).
struct Plan {
    /// The schema version the plan was built for.
    source: Arc<TableSchema>,
    output: Arc<TableSchema>,
    keep: Vec<usize>,
    masks: Vec<Option<Mask>>,
    filter: Option<filter::Bound>,
    sinks: Option<Vec<usize>>,
    identity: bool,
    /// The enrichment and the source columns of its join key.
    enrich: Option<(enrich::Enrich, Vec<usize>)>,
    /// The enrichment columns were typed from the reference table's schema
    /// (else as text: the reference table was not seen yet).
    typed: bool,
}

pub struct Transformer {
    rules: Vec<TableRule>,
    salt: String,
    /// One plan per table, for its latest schema version: bounded by the
    /// number of tables, however often a source hands out a new `Arc` of
    /// the same schema (MySQL: one per table map event).
    plans: HashMap<TableId, Plan>,
    /// The reference tables' copies, by table.
    refs: HashMap<TableId, enrich::Reference>,
    /// Events whose join key found no reference row, by enriched table,
    /// since the last [`Transformer::take_misses`].
    misses: HashMap<TableId, u64>,
}

/// One copy per reference table the rules enrich from, each keeping the
/// columns of every rule that joins it.
fn references(rules: &[TableRule]) -> Result<HashMap<TableId, enrich::Reference>, String> {
    let mut refs: HashMap<TableId, enrich::Reference> = HashMap::new();
    for e in rules.iter().filter_map(|r| r.enrich.as_ref()) {
        match refs.get_mut(&e.from) {
            Some(r) => r.widen(e)?,
            None => {
                refs.insert(e.from.clone(), enrich::Reference::new(e));
            }
        }
    }
    Ok(refs)
}

/// An event after the transforms: where it goes.
pub struct Routed {
    pub event: Option<ChangeEvent>,
    pub sinks: Option<Vec<usize>>,
}

pub(crate) fn matches(pattern: &str, table: &str) -> bool {
    riffle_core::glob_match(&normalized(pattern), table)
}

/// A rule's pattern over `schema.table`: one without a schema is in `public`.
fn normalized(pattern: &str) -> String {
    if pattern.contains('.') {
        pattern.to_string()
    } else {
        format!("public.{pattern}")
    }
}

impl Transformer {
    pub fn new(rules: Vec<TableRule>, salt: String) -> Self {
        // Checked by [`Transformer::check`] when the configuration is read.
        let refs = references(&rules).expect("enrich rules checked");
        Transformer { rules, salt, plans: HashMap::new(), refs, misses: HashMap::new() }
    }

    /// Rules that cannot work together (two joins on one reference table by
    /// different keys), as the configuration error to show.
    pub fn check(rules: &[TableRule]) -> Result<(), String> {
        references(rules).map(|_| ())
    }

    /// The tables the rules speak of, as globs over `schema.table`: what
    /// [`Transformer::preflight`] needs the columns of.
    pub fn tables_named(rules: &[TableRule]) -> Vec<String> {
        let mut out: Vec<String> = rules.iter().map(|r| normalized(&r.pattern)).collect();
        out.extend(rules.iter().filter_map(|r| r.enrich.as_ref().map(|e| e.from.to_string())));
        out.sort();
        out.dedup();
        out
    }

    /// Checks the rules against the source's tables before anything runs
    /// (`tables`: each table's column names, as the source lists them): the
    /// errors a table's first event would meet (a column a rule names that
    /// the table lacks, an enrichment's reference columns), sooner, and a
    /// reference table the source does not have. Returns the rule patterns
    /// that match none of the tables (they may be created later).
    pub fn preflight(rules: &[TableRule], tables: &[(TableId, Vec<String>)]) -> Result<Vec<String>, SinkError> {
        // Its own transformer: the stand-in schemas (names, no types) must
        // not stay in the one that runs.
        let mut t = Transformer::new(rules.to_vec(), String::new());
        let schemas: Vec<Arc<TableSchema>> = tables
            .iter()
            .map(|(id, names)| {
                let columns = names
                    .iter()
                    .map(|n| Column {
                        name: n.clone(),
                        source_type: "?".into(),
                        data_type: DataType::String,
                        nullable: true,
                        labels: Vec::new(),
                    })
                    .collect();
                Arc::new(TableSchema { id: id.clone(), columns, key: Vec::new(), full_before_image: false })
            })
            .collect();
        for (from, r) in &mut t.refs {
            let Some(schema) = schemas.iter().find(|s| s.id == *from) else {
                return Err(SinkError::definite(format!(
                    "enrich from {from}: the source has no such table among the pipeline's tables; check enrich.from and [source] tables"
                )));
            };
            r.learn(schema)?;
        }
        for schema in &schemas {
            t.build(schema)?;
        }
        let names: Vec<String> = schemas.iter().map(|s| s.id.to_string()).collect();
        Ok(rules.iter().filter(|r| !names.iter().any(|n| matches(&r.pattern, n))).map(|r| r.pattern.clone()).collect())
    }

    /// Rebuilds a reference table's copy with `ev`, an event an earlier run
    /// delivered, read again for this ([`riffle_core::SourceItem::Reference`]);
    /// the copy counts as loaded.
    pub fn reload(&mut self, ev: &ChangeEvent) -> Result<(), SinkError> {
        if let Some(r) = self.refs.get_mut(&ev.table.id) {
            r.apply(ev)?;
            r.loaded += 1;
        }
        Ok(())
    }

    /// The reference tables whose copy this process has not loaded yet
    /// (none read since it started), as `schema.table`.
    pub fn unloaded_references(&self) -> Vec<String> {
        let mut out: Vec<String> = self.refs.iter().filter(|(_, r)| r.loaded == 0).map(|(t, _)| t.to_string()).collect();
        out.sort();
        out
    }

    /// The reference tables, as `schema.table` (a snapshot reads them first).
    pub fn references(&self) -> Vec<String> {
        let mut out: Vec<String> = self.refs.keys().map(TableId::to_string).collect();
        out.sort();
        out
    }

    /// Join misses since the last call, by enriched table.
    pub fn take_misses(&mut self) -> HashMap<TableId, u64> {
        std::mem::take(&mut self.misses)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn plan(&mut self, schema: &Arc<TableSchema>) -> Result<&Plan, SinkError> {
        let refs = &self.refs;
        let current = self.plans.get(&schema.id).is_some_and(|p| {
            let typed = p.typed || p.enrich.as_ref().is_none_or(|(e, _)| refs.get(&e.from).is_none_or(|r| r.schema.is_none()));
            (Arc::ptr_eq(&p.source, schema) || *p.source == **schema) && typed
        });
        if !current {
            let plan = self.build(schema)?;
            self.plans.insert(schema.id.clone(), plan);
        }
        Ok(&self.plans[&schema.id])
    }

    fn build(&self, schema: &Arc<TableSchema>) -> Result<Plan, SinkError> {
        let name = schema.id.to_string();
        let Some(rule) = self.rules.iter().find(|r| matches(&r.pattern, &name)) else {
            return Ok(Plan {
                source: schema.clone(),
                output: schema.clone(),
                keep: (0..schema.columns.len()).collect(),
                masks: vec![None; schema.columns.len()],
                filter: None,
                sinks: None,
                identity: true,
                enrich: None,
                typed: true,
            });
        };
        let err = |what: String| SinkError::definite(format!("tables rule {:?} for {name}: {what}", rule.pattern));
        let known = |c: &String| -> Result<(), SinkError> {
            if schema.column_index(c).is_none() {
                let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
                return Err(err(format!("column {c:?} does not exist (columns: {})", names.join(", "))));
            }
            Ok(())
        };
        let join = rule.enrich.iter().flat_map(|e| e.on.iter().map(|(local, _)| local));
        for c in rule.columns.iter().flatten().chain(&rule.exclude_columns).chain(rule.masks.iter().map(|(c, _)| c)).chain(join) {
            known(c)?;
        }
        let keep: Vec<usize> = (0..schema.columns.len())
            .filter(|&i| {
                let n = &schema.columns[i].name;
                rule.columns.as_ref().is_none_or(|cols| cols.contains(n)) && !rule.exclude_columns.contains(n)
            })
            .collect();
        let masks: Vec<Option<Mask>> =
            keep.iter().map(|&i| rule.masks.iter().find(|(c, _)| *c == schema.columns[i].name).map(|(_, m)| *m)).collect();
        let mut columns: Vec<Column> = keep
            .iter()
            .zip(&masks)
            .map(|(&i, m)| {
                let mut c = schema.columns[i].clone();
                if let Some(m) = m {
                    c.source_type = format!("{} masked ({})", c.source_type, if *m == Mask::Hash { "sha-256" } else { "redacted" });
                    c.data_type = DataType::String;
                }
                c
            })
            .collect();
        let key = schema.key.iter().filter_map(|k| keep.iter().position(|i| i == k)).collect();
        let mut typed = true;
        let enrich = match &rule.enrich {
            Some(e) => {
                let reference = &self.refs[&e.from];
                typed = reference.schema.is_some();
                let added = reference.output_columns(e);
                if let Some(clash) = added.iter().find(|a| columns.iter().any(|c| c.name == a.name)) {
                    return Err(err(format!(
                        "enrich: the table already has a column {:?}; set enrich.prefix (e.g. prefix = \"product_\")",
                        clash.name
                    )));
                }
                columns.extend(added);
                let local = e.on.iter().map(|(l, _)| schema.column_index(l).expect("checked above")).collect();
                Some((e.clone(), local))
            }
            None => None,
        };
        let filter = match &rule.filter {
            Some((_, e)) => Some(filter::bind(e, schema).map_err(|e| err(format!("filter: {e}")))?),
            None => None,
        };
        let output = Arc::new(TableSchema { id: schema.id.clone(), columns, key, full_before_image: schema.full_before_image });
        Ok(Plan { source: schema.clone(), output, keep, masks, filter, sinks: rule.sinks.clone(), identity: false, enrich, typed })
    }

    /// Applies the table's rule: `event` is `None` when the filter drops it.
    pub fn apply(&mut self, ev: ChangeEvent) -> Result<Routed, SinkError> {
        if let Some(r) = self.refs.get_mut(&ev.table.id) {
            r.apply(&ev)?;
        }
        let salt = self.salt.clone();
        self.plan(&ev.table)?;
        let plan = &self.plans[&ev.table.id];
        if plan.identity {
            return Ok(Routed { event: Some(ev), sinks: None });
        }
        if let Some(f) = &plan.filter {
            let judged = match ev.op {
                Op::Read | Op::Create | Op::Update => ev.after.as_deref().and_then(|r| filter::eval(f, r)),
                Op::Delete => ev.before.as_deref().and_then(|r| filter::eval(f, r)),
                Op::Truncate => None,
            };
            if judged == Some(false) {
                return Ok(Routed { event: None, sinks: plan.sinks.clone() });
            }
        }
        let mut missed = false;
        let mut project = |row: Vec<Value>| -> Vec<Value> {
            let mut out: Vec<Value> = plan
                .keep
                .iter()
                .zip(&plan.masks)
                .map(|(&i, m)| match m {
                    Some(mask) => mask_value(&row[i], *mask, &salt),
                    None => row[i].clone(),
                })
                .collect();
            if let Some((e, local)) = &plan.enrich {
                missed |= self.refs[&e.from].lookup(&row, local, &e.columns, &mut out);
            }
            out
        };
        let (before, after) = (ev.before.map(&mut project), ev.after.map(&mut project));
        if missed {
            *self.misses.entry(ev.table.id.clone()).or_default() += 1;
        }
        let plan = &self.plans[&ev.table.id];
        let event = ChangeEvent {
            op: ev.op,
            table: plan.output.clone(),
            before,
            after,
            before_image: ev.before_image,
            source: ev.source,
            position: ev.position,
            ts_ms: ev.ts_ms,
        };
        Ok(Routed { event: Some(event), sinks: plan.sinks.clone() })
    }
}

/// A value's text for hashing and matching: text-like values as written,
/// bytes raw, the rest as JSON.
fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Text(s) | Value::Decimal(s) | Value::Json(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => out.extend_from_slice(b),
        other => riffle_formats::value::write_json(other, out),
    }
}

/// Masks one value. NULL and values the source did not send stay what they are.
pub fn mask_value(v: &Value, mask: Mask, salt: &str) -> Value {
    match v {
        Value::Null | Value::Unavailable => v.clone(),
        _ => match mask {
            Mask::Redact => Value::Text("****".into()),
            Mask::Hash => {
                let mut text = Vec::new();
                canonical(v, &mut text);
                let mut h = Sha256::new();
                h.update(salt.as_bytes());
                h.update(&text);
                Value::Text(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_salted_stable_and_keeps_nulls() {
        let a = mask_value(&Value::Text("alice@example.com".into()), Mask::Hash, "s1");
        // printf 's1alice@example.com' | sha256sum
        assert_eq!(a, Value::Text("bad5c38fcbb367711313f6447be38abd68627396429b68039061ae19979e620b".into()));
        assert_ne!(a, mask_value(&Value::Text("alice@example.com".into()), Mask::Hash, "s2"));
        assert_eq!(mask_value(&Value::Null, Mask::Hash, "s1"), Value::Null);
        assert_eq!(mask_value(&Value::Unavailable, Mask::Redact, "s1"), Value::Unavailable);
        assert_eq!(mask_value(&Value::Int(5), Mask::Redact, "s1"), Value::Text("****".into()));
    }

    #[test]
    fn one_plan_per_table_however_many_copies_of_its_schema_arrive() {
        let rule = TableRule {
            pattern: "public.t".into(),
            columns: None,
            exclude_columns: vec!["secret".into()],
            masks: vec![],
            filter: None,
            sinks: None,
            enrich: None,
        };
        let mut t = Transformer::new(vec![rule], String::new());
        let column = |name: &str| Column {
            name: name.into(),
            source_type: "text".into(),
            data_type: DataType::String,
            nullable: true,
            labels: Vec::new(),
        };
        let schema = TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![column("id"), column("secret")],
            key: vec![0],
            full_before_image: false,
        };
        for _ in 0..1000 {
            // A source may hand out a new Arc of the same schema per event.
            t.plan(&Arc::new(schema.clone())).unwrap();
        }
        assert_eq!(t.plans.len(), 1);
        let mut changed = schema.clone();
        changed.columns.push(column("added"));
        assert_eq!(t.plan(&Arc::new(changed)).unwrap().output.columns.len(), 2, "a new schema version gets a new plan");
        assert_eq!(t.plans.len(), 1);
    }
}
