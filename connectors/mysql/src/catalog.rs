//! Tables, columns and keys from `information_schema`.

use crate::error::MyError;
use crate::types::{column_type, MyColumn, ServerCharset, KNOWN_CHARSETS};
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
    /// Its events carry a key: the primary key, or without one the unique
    /// index over NOT NULL columns the server reports as the primary key
    /// (`COLUMN_KEY = 'PRI'`), as Debezium keys such a table too.
    pub keyed: bool,
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
    // STATISTICS and COLUMNS, not TABLE_CONSTRAINTS: a user with only
    // SELECT on the tables sees no row of the latter on MariaDB.
    let rows: Vec<(String, String, Option<u64>, i64, i64)> = conn
        .query(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME, t.TABLE_ROWS, \
                    (SELECT COUNT(*) FROM information_schema.STATISTICS c \
                     WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.INDEX_NAME = 'PRIMARY'), \
                    (SELECT COUNT(*) FROM information_schema.COLUMNS k \
                     WHERE k.TABLE_SCHEMA = t.TABLE_SCHEMA AND k.TABLE_NAME = t.TABLE_NAME AND k.COLUMN_KEY = 'PRI') \
             FROM information_schema.TABLES t \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY 1, 2",
        )
        .await
        .map_err(|e| MyError::query("listing tables", e))?;
    let all: Vec<SelectedTable> = rows
        .into_iter()
        .map(|(s, t, n, pk, keyed)| SelectedTable {
            id: TableId::new(s, t),
            estimated_rows: n.unwrap_or(0),
            has_primary_key: pk > 0,
            keyed: keyed > 0,
        })
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
    for c in &mut columns {
        let Some(cs) = c.charset.clone().filter(|cs| !KNOWN_CHARSETS.contains(&cs.as_str())) else { continue };
        let known = SERVER_CHARSETS.lock().unwrap_or_else(|e| e.into_inner()).get(&cs).cloned();
        c.server_charset = match known {
            Some(table) => table,
            None => {
                let table = server_charset(conn, &cs).await?;
                SERVER_CHARSETS.lock().unwrap_or_else(|e| e.into_inner()).insert(cs, table.clone());
                table
            }
        };
    }
    Ok(columns)
}

/// The character sets' tables read from the server, by name: read once per
/// process (a two-byte set's table is 65,536 rows), since a process reads
/// one source.
static SERVER_CHARSETS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, Option<Arc<ServerCharset>>>>> =
    std::sync::LazyLock::new(Default::default);

/// What the server makes of each byte, and of each two-byte sequence, in
/// character set `cs` (and, for EUC-JP's sets, of each `0x8F b1 b2`),
/// converted to utf8mb4, for a set of characters of at most 3 bytes;
/// `None` for a longer one (gb18030), which riffle does not decode. A byte
/// whose conversion is not one character other than `?` starts a longer
/// sequence.
async fn server_charset(conn: &mut Conn, cs: &str) -> Result<Option<Arc<ServerCharset>>, MyError> {
    let what = || format!("reading character set {cs}");
    let maxlen: Option<u64> = conn
        .exec_first("SELECT MAXLEN FROM information_schema.CHARACTER_SETS WHERE CHARACTER_SET_NAME = ?", (cs,))
        .await
        .map_err(|e| MyError::query(what(), e))?;
    // A name from the catalog, checked before it is spelled into SQL.
    let Some(maxlen) = maxlen.filter(|m| (1..=3).contains(m)) else { return Ok(None) };
    if !cs.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Ok(None);
    }
    // Every byte, or every two bytes after `prefix`: one row each, by number
    // (a recursive CTE of 256 rows works on MySQL's default recursion limit).
    let convert = async |conn: &mut Conn, prefix: &str, two: bool| -> Result<Vec<(u32, String)>, MyError> {
        let (number, hex) = if two {
            ("hi.n * 256 + lo.n", "CONCAT(LPAD(HEX(hi.n), 2, '0'), LPAD(HEX(lo.n), 2, '0'))")
        } else {
            ("lo.n", "LPAD(HEX(lo.n), 2, '0')")
        };
        let from = if two { "b hi, b lo" } else { "b lo" };
        let sql = format!(
            "WITH RECURSIVE b (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b WHERE n < 255) \
             SELECT {number}, CONVERT(UNHEX(CONCAT('{prefix}', {hex})) USING {cs}) FROM {from}"
        );
        conn.query(sql).await.map_err(|e| MyError::query(what(), e))
    };
    let one = |text: &str| {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => Some(c),
            _ => None,
        }
    };
    let mut single = [None; 256];
    for (n, text) in convert(conn, "", false).await? {
        if let (Some(slot), Some(c)) = (single.get_mut(n as usize), one(&text)) {
            // `?` is what the server makes of a byte it cannot convert alone.
            *slot = (maxlen == 1 || c != '?' || n == 0x3f).then_some(c);
        }
    }
    if maxlen == 1 {
        if single.iter().any(Option::is_none) {
            return Err(MyError::Unexpected(format!(
                "character set {cs}: the server did not convert each of its 256 bytes to one character"
            )));
        }
        return Ok(Some(Arc::new(ServerCharset { single, pairs: Vec::new(), triples: Vec::new() })));
    }
    let table = async |conn: &mut Conn, prefix: &str| -> Result<Vec<char>, MyError> {
        let mut table = vec![char::REPLACEMENT_CHARACTER; 65536];
        for (n, text) in convert(conn, prefix, true).await? {
            if let (Some(slot), Some(c)) = (table.get_mut(n as usize), one(&text)) {
                *slot = c;
            }
        }
        Ok(table)
    };
    let pairs = table(conn, "").await?;
    let triples = if maxlen == 3 && single[0x8f].is_none() { table(conn, "8F").await? } else { Vec::new() };
    Ok(Some(Arc::new(ServerCharset { single, pairs, triples })))
}

/// The table's schema for events, with its key: the primary key, or the
/// unique NOT NULL index the server reports in its place.
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
