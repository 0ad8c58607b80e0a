//! Tables, columns and keys from `information_schema`.

use crate::error::MyError;
use crate::types::{column_type, MyColumn, SingleByte, KNOWN_CHARSETS};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use riffle_core::{TableId, TableSchema};
use std::sync::Arc;

/// A table the selection resolved to.
#[derive(Debug, Clone)]
pub struct SelectedTable {
    pub id: TableId,
    pub estimated_rows: u64,
    pub has_primary_key: bool,
}

impl SelectedTable {
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.id.schema), quote_ident(&self.id.name))
    }
}

pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// `*` and `?` globs over `database.table`; no dot means the URL's database.
pub async fn resolve_tables(
    conn: &mut Conn,
    default_db: &str,
    patterns: &[String],
    exclude: &[String],
) -> Result<Vec<SelectedTable>, MyError> {
    select(conn, default_db, patterns, exclude, true).await
}

/// [`resolve_tables`] for a selection made earlier: a pattern that matches
/// nothing any more (its table was dropped) is no error.
pub async fn resolve_tables_lenient(
    conn: &mut Conn,
    default_db: &str,
    patterns: &[String],
    exclude: &[String],
) -> Result<Vec<SelectedTable>, MyError> {
    select(conn, default_db, patterns, exclude, false).await
}

async fn select(
    conn: &mut Conn,
    default_db: &str,
    patterns: &[String],
    exclude: &[String],
    strict: bool,
) -> Result<Vec<SelectedTable>, MyError> {
    let rows: Vec<(String, String, Option<u64>, i64)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_ROWS, \
                    (SELECT COUNT(*) FROM information_schema.TABLE_CONSTRAINTS c \
                     WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY') \
             FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY 1, 2",
        )
        .await
        .map_err(|e| MyError::query("listing tables", e))?;
    let all: Vec<SelectedTable> = rows
        .into_iter()
        .map(|(s, t, n, pk)| SelectedTable { id: TableId::new(s, t), estimated_rows: n.unwrap_or(0), has_primary_key: pk > 0 })
        .collect();
    let qualify = |p: &str| if p.contains('.') { p.to_string() } else { format!("{default_db}.{p}") };
    let mut selected: Vec<SelectedTable> = Vec::new();
    for pattern in patterns {
        let pattern = qualify(pattern);
        let matched: Vec<&SelectedTable> = all.iter().filter(|t| riffle_core::glob_match(&pattern, &t.id.to_string())).collect();
        if matched.is_empty() && strict {
            let glob = pattern.contains(['*', '?']);
            let examples = all.iter().take(5).map(|t| t.id.to_string()).collect();
            return Err(MyError::NoSuchTable { pattern, glob, examples });
        }
        for t in matched {
            if !selected.iter().any(|s| s.id == t.id) {
                selected.push(t.clone());
            }
        }
    }
    selected.retain(|t| !exclude.iter().any(|x| riffle_core::glob_match(&qualify(x), &t.id.to_string())));
    selected.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(selected)
}

/// A table's columns as the catalog describes them now.
pub async fn load_columns(conn: &mut Conn, id: &TableId) -> Result<Vec<MyColumn>, MyError> {
    let rows: Vec<mysql_async::Row> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY, NUMERIC_PRECISION, NUMERIC_SCALE, \
                    DATETIME_PRECISION, CHARACTER_SET_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&id.schema, &id.name),
        )
        .await
        .map_err(|e| MyError::query(format!("reading the columns of {id}"), e))?;
    if rows.is_empty() {
        return Err(MyError::TableGone { table: id.clone() });
    }
    let text = |r: &mysql_async::Row, i: usize| -> Option<String> { r.get_opt::<Option<String>, _>(i).and_then(|v| v.ok()).flatten() };
    let num =
        |r: &mysql_async::Row, i: usize| -> Option<u32> { r.get_opt::<Option<u64>, _>(i).and_then(|v| v.ok()).flatten().map(|v| v as u32) };
    let mut columns: Vec<MyColumn> = rows
        .iter()
        .map(|r| {
            let data_type = text(r, 1).unwrap_or_default().to_lowercase();
            let col_type = text(r, 2).unwrap_or_default();
            column_type(
                text(r, 0).unwrap_or_default(),
                &data_type,
                &col_type,
                text(r, 3).as_deref() == Some("YES"),
                text(r, 4).as_deref() == Some("PRI"),
                num(r, 5),
                num(r, 6),
                num(r, 7),
                text(r, 8),
            )
        })
        .collect();
    let mut tables: Vec<(String, Option<Arc<SingleByte>>)> = Vec::new();
    for c in &mut columns {
        let Some(cs) = c.charset.clone().filter(|cs| !KNOWN_CHARSETS.contains(&cs.as_str())) else { continue };
        if !tables.iter().any(|(name, _)| *name == cs) {
            let table = single_byte(conn, &cs).await?;
            tables.push((cs.clone(), table));
        }
        c.single_byte = tables.iter().find(|(name, _)| *name == cs).and_then(|(_, t)| t.clone());
    }
    Ok(columns)
}

/// What the server makes of each of the 256 bytes in character set `cs`,
/// converted to utf8mb4, when `cs` is a single-byte set (`None` for a
/// multi-byte one, which riffle does not decode).
async fn single_byte(conn: &mut Conn, cs: &str) -> Result<Option<Arc<SingleByte>>, MyError> {
    let what = || format!("reading character set {cs}");
    let maxlen: Option<u64> = conn
        .exec_first("SELECT MAXLEN FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = ?", (cs,))
        .await
        .map_err(|e| MyError::query(what(), e))?;
    // A name from the catalog, checked before it is spelled into SQL.
    if maxlen != Some(1) || !cs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Ok(None);
    }
    let all: String = (0..=255u8).map(|b| format!("{b:02X}")).collect();
    let text: Option<String> =
        conn.exec_first(format!("SELECT CONVERT(UNHEX(?) USING {cs})"), (all,)).await.map_err(|e| MyError::query(what(), e))?;
    let chars: Vec<char> = text.unwrap_or_default().chars().collect();
    let table = <[char; 256]>::try_from(chars).map_err(|chars| {
        MyError::Unexpected(format!("character set {cs}: the server converted its 256 bytes to {} characters", chars.len()))
    })?;
    Ok(Some(Arc::new(SingleByte(table))))
}

/// The table's schema for events, with the primary key.
pub fn schema_of(id: &TableId, columns: &[MyColumn]) -> TableSchema {
    TableSchema {
        id: id.clone(),
        columns: columns.iter().map(|c| c.column.clone()).collect(),
        key: columns.iter().enumerate().filter(|(_, c)| c.primary_key).map(|(i, _)| i).collect(),
        // The binlog carries whole before images when binlog_row_image=FULL,
        // which riffle requires.
        full_before_image: true,
    }
}
