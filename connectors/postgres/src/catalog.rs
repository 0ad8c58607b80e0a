//! Catalog work on a regular session: which tables a selection means, what
//! their columns and keys are, and the publication and slot riffle owns.

use crate::error::{Col, PgError};
use crate::quote_ident;
use crate::types::TypeCache;
use riffle_core::{Column, TableId, TableSchema};
use tokio_postgres::Client;

/// A table the selection resolved to.
#[derive(Debug, Clone)]
pub struct SelectedTable {
    pub id: TableId,
    pub oid: u32,
    pub estimated_rows: u64,
    /// `d` default (primary key), `f` full, `i` index, `n` nothing.
    pub replica_identity: u8,
    pub has_primary_key: bool,
    /// A partitioned table's root: copied through a query, published via the root.
    pub partitioned: bool,
    /// Unlogged tables are not in the WAL, so they cannot be replicated.
    pub unlogged: bool,
}

impl SelectedTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.id.schema), quote_ident(&self.id.name))
    }
}

/// A failed catalog read: a missing privilege says which grant fixes it.
fn query_err(what: &str, e: tokio_postgres::Error) -> PgError {
    PgError::query(what, e, || {
        "grant riffle's user SELECT on the selected tables (GRANT SELECT ON ALL TABLES IN SCHEMA … TO …)".to_string()
    })
}

pub use riffle_core::glob_match;

/// Resolves `schema.table` globs (a pattern without a dot means the
/// `public` schema) to tables, sorted by name. A pattern that matches
/// nothing is an error: a typo must not silently replicate nothing.
pub async fn resolve_tables(client: &Client, patterns: &[String], exclude: &[String]) -> Result<Vec<SelectedTable>, PgError> {
    select(&list_tables(client).await?, patterns, exclude, true)
}

/// [`resolve_tables`] for a selection made earlier: a pattern that matches
/// nothing any more (its table was dropped) is no error.
pub async fn resolve_tables_lenient(client: &Client, patterns: &[String], exclude: &[String]) -> Result<Vec<SelectedTable>, PgError> {
    select(&list_tables(client).await?, patterns, exclude, false)
}

async fn list_tables(client: &Client) -> Result<Vec<SelectedTable>, PgError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, greatest(c.reltuples, 0)::float8, c.relreplident::text, \
                    EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary), \
                    c.relkind = 'p', c.relpersistence = 'u' \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' \
             ORDER BY 2, 3",
            &[],
        )
        .await
        .map_err(|e| query_err("listing tables", e))?;
    rows.iter()
        .map(|r| {
            Ok(SelectedTable {
                oid: r.col(0)?,
                id: TableId::new(r.col::<String>(1)?, r.col::<String>(2)?),
                estimated_rows: r.col::<f64>(3)? as u64,
                replica_identity: r.col::<String>(4)?.bytes().next().unwrap_or(b'd'),
                has_primary_key: r.col(5)?,
                partitioned: r.col(6)?,
                unlogged: r.col(7)?,
            })
        })
        .collect()
}

fn select(all: &[SelectedTable], patterns: &[String], exclude: &[String], strict: bool) -> Result<Vec<SelectedTable>, PgError> {
    let qualify = |p: &str| if p.contains('.') { p.to_string() } else { format!("public.{p}") };
    let mut selected = Vec::new();
    for pattern in patterns {
        let pattern = qualify(pattern);
        let matched: Vec<&SelectedTable> = all.iter().filter(|t| glob_match(&pattern, &t.id.to_string())).collect();
        if matched.is_empty() && strict {
            let examples = all.iter().take(5).map(|t| t.id.to_string()).collect();
            return Err(PgError::NoSuchTable { pattern, examples });
        }
        for t in matched {
            if !selected.iter().any(|s: &SelectedTable| s.oid == t.oid) {
                selected.push(t.clone());
            }
        }
    }
    selected.retain(|t| !exclude.iter().any(|x| glob_match(&qualify(x), &t.id.to_string())));
    selected.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(selected)
}

/// Reads a table's columns, key and replica identity.
pub async fn load_schema(client: &Client, types: &mut TypeCache, oid: u32) -> Result<TableSchema, PgError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.relreplident::text, a.attname::text, a.atttypid, a.atttypmod, \
                    format_type(a.atttypid, a.atttypmod), a.attnotnull \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' \
             WHERE c.oid = $1 ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| query_err("reading table columns", e))?;
    let first = rows.first().ok_or(PgError::TableGone { oid })?;
    let id = TableId::new(first.col::<String>(0)?, first.col::<String>(1)?);
    let full = first.col::<String>(2)? == "f";
    let oids: Vec<u32> = rows.iter().map(|r| r.col(4)).collect::<Result<_, _>>()?;
    types.load(client, &oids).await?;
    let key_names = key_columns(client, oid).await?;
    let mut columns = Vec::with_capacity(rows.len());
    let mut key = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        columns.push(Column {
            name: r.col(3)?,
            data_type: types.data_type(r.col(4)?, r.col(5)?),
            source_type: r.col(6)?,
            nullable: !r.col::<bool>(7)?,
            labels: types.labels(r.col(4)?),
        });
        if key_names.contains(&columns[i].name) {
            key.push(i);
        }
    }
    Ok(TableSchema { id, columns, key, full_before_image: full })
}

/// The names of the columns that key a table's events, from the current
/// catalog: its primary key; without one, its replica identity index
/// (`REPLICA IDENTITY USING INDEX`), else its first unique index by name
/// over NOT NULL columns (valid, not partial, no expressions, no generated
/// column, which riffle does not copy), as Debezium keys a table without a
/// primary key by a unique key. Every index a snapshot may chunk a table
/// by ([`crate::chunked::chunk_key`]) qualifies, so a table read in key
/// ranges always has an event key. Only an index's key columns (not its
/// `INCLUDE` ones). Empty: none.
pub async fn key_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM \
               (SELECT i.indrelid, (i.indkey::int2[])[0:i.indnkeyatts - 1] AS cols \
                FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                WHERE i.indrelid = $1 AND (i.indisprimary OR (i.indisunique AND i.indisvalid \
                  AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT EXISTS (SELECT 1 FROM pg_attribute n \
                    WHERE n.attrelid = i.indrelid AND n.attnum = ANY((i.indkey::int2[])[0:i.indnkeyatts - 1]) \
                      AND (NOT n.attnotnull OR n.attgenerated <> '')))) \
                ORDER BY i.indisprimary DESC, i.indisreplident DESC, ic.relname LIMIT 1) k \
             JOIN pg_attribute a ON a.attrelid = k.indrelid AND a.attnum = ANY(k.cols)",
            &[&oid],
        )
        .await
        .map_err(|e| query_err("reading the table's key", e))?;
    rows.iter().map(|r| r.col(0)).collect()
}

/// The columns of table `oid` declared NOT NULL (as the catalog says now).
pub async fn not_null_columns(client: &Client, oid: u32) -> Result<Vec<String>, PgError> {
    let rows = client
        .query("SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attnotnull", &[&oid])
        .await
        .map_err(|e| query_err("reading the table's NOT NULL columns", e))?;
    rows.iter().map(|r| r.col(0)).collect()
}

/// The tables a publication publishes, `schema.table`, sorted.
pub async fn publication_tables(client: &Client, name: &str) -> Result<Vec<String>, PgError> {
    let rows = client
        .query("SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1", &[&name])
        .await
        .map_err(|e| query_err("reading publications", e))?;
    rows.iter().map(|r| r.col(0)).collect()
}

/// Adds `added` to the publication (those it does not publish yet) and
/// removes `removed` (`schema.table`) from it.
pub async fn alter_publication(client: &Client, name: &str, added: &[SelectedTable], removed: &[String]) -> Result<(), PgError> {
    let published = publication_tables(client, name).await?;
    let add: Vec<String> = added.iter().filter(|t| !published.contains(&t.id.to_string())).map(SelectedTable::qualified).collect();
    let mut statements = Vec::new();
    if !add.is_empty() {
        statements.push(format!("ALTER PUBLICATION {} ADD TABLE {}", quote_ident(name), add.join(", ")));
    }
    let drop: Vec<String> = removed
        .iter()
        .filter(|t| published.contains(t))
        .map(|t| {
            let (schema, table) = t.split_once('.').unwrap_or(("public", t));
            format!("{}.{}", quote_ident(schema), quote_ident(table))
        })
        .collect();
    if !drop.is_empty() {
        statements.push(format!("ALTER PUBLICATION {} DROP TABLE {}", quote_ident(name), drop.join(", ")));
    }
    for sql in statements {
        client.batch_execute(&sql).await.map_err(|e| {
            PgError::query(format!("changing publication {name:?}"), e, || {
                format!("riffle's user must own the tables (or be superuser), or run it yourself: {sql};")
            })
        })?;
        tracing::info!(publication = name, "{sql}");
    }
    Ok(())
}

/// Creates the publication for `tables` if it is missing; an existing one
/// must publish exactly those tables.
pub async fn ensure_publication(client: &Client, name: &str, tables: &[SelectedTable]) -> Result<(), PgError> {
    let have = publication_tables(client, name).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(|e| query_err("reading publications", e))?
        .is_some();
    let wanted: Vec<String> = tables.iter().map(|t| t.id.to_string()).collect();
    if exists {
        let mut want_sorted = wanted.clone();
        want_sorted.sort();
        if have != want_sorted {
            return Err(PgError::PublicationMismatch { name: name.to_string(), have, wanted: want_sorted });
        }
        return Ok(());
    }
    let list: Vec<String> = tables.iter().map(SelectedTable::qualified).collect();
    // Changes to partitions are published under their root's name, the
    // table the user selected.
    let sql = format!("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)", quote_ident(name), list.join(", "));
    client.batch_execute(&sql).await.map_err(|e| {
        PgError::query(format!("creating publication {name:?}"), e, || {
            format!("riffle's user must own the tables (or be superuser), or create it once yourself: {sql};")
        })
    })?;
    tracing::info!(publication = name, tables = tables.len(), "created publication");
    Ok(())
}

/// What `pg_replication_slots` says of a slot.
#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub active: bool,
    /// The walsender reading the slot, when it is active.
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<String>,
    pub retained_bytes: Option<i64>,
}

pub async fn slot_info(client: &Client, name: &str) -> Result<Option<SlotInfo>, PgError> {
    let row = client
        .query_opt(
            "SELECT database::text, plugin::text, active, confirmed_flush_lsn::text, \
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - restart_lsn)::int8, \
                    active_pid \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| query_err("reading replication slots", e))?;
    row.map(|r| {
        Ok(SlotInfo {
            database: r.col(0)?,
            plugin: r.col(1)?,
            active: r.col(2)?,
            confirmed_flush: r.col(3)?,
            retained_bytes: r.col(4)?,
            active_pid: r.col(5)?,
        })
    })
    .transpose()
}

/// The server's current WAL position (the `--until now` target).
pub async fn current_lsn(client: &Client) -> Result<riffle_core::Lsn, PgError> {
    let row = client
        .query_one("SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text", &[])
        .await
        .map_err(|e| query_err("reading the current WAL position", e))?;
    row.col::<String>(0)?.parse().map_err(|source| PgError::ServerLsn { what: "the server's current WAL position", source })
}

pub async fn drop_slot(client: &Client, name: &str) -> Result<(), PgError> {
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .await
        .map_err(|e| query_err(&format!("dropping replication slot {name:?}"), e))?;
    Ok(())
}
