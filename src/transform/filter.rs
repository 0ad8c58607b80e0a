//! Row filters: a small predicate language over a table's columns,
//! evaluated by riffle itself so the snapshot and the stream apply it the
//! same way.
//!
//! ```text
//! location_id = 10
//! status IN ('paid', 'shipped') AND amount >= 100.5
//! deleted_at IS NULL OR NOT (region <> 'eu')
//! ```
//!
//! Comparisons: `=`, `!=`/`<>`, `<`, `<=`, `>`, `>=`, `IN (…)`, `NOT IN (…)`,
//! `IS [NOT] NULL`; combined with `AND`, `OR`, `NOT` and parentheses.
//! Literals: numbers, 'strings' (`''` for a quote), `true`, `false`. A
//! comparison with a NULL column is false (as in SQL's WHERE). A column the
//! source did not send (a key-only before image) makes the comparison
//! unknown, and an unknown row passes: riffle never drops a change it cannot
//! judge.

use riffle_core::{TableSchema, Value};
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Num(f64),
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed predicate; columns are still names.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp(String, CmpOp, Lit),
    In(String, Vec<Lit>, bool),
    IsNull(String, bool),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Num(f64),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

/// A predicate that does not parse, or names a column the table does not
/// have: the message says what was expected and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

fn tokenize(s: &str) -> Result<Vec<Tok>, FilterError> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push(Tok::LParen);
                i += 1
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1
            }
            b',' => {
                out.push(Tok::Comma);
                i += 1
            }
            b'=' => {
                out.push(Tok::Op("="));
                i += 1
            }
            b'!' if b.get(i + 1) == Some(&b'=') => {
                out.push(Tok::Op("!="));
                i += 2
            }
            b'<' | b'>' => {
                let two = b.get(i + 1).copied();
                let op = match (c, two) {
                    (b'<', Some(b'=')) => "<=",
                    (b'<', Some(b'>')) => "!=",
                    (b'>', Some(b'=')) => ">=",
                    (b'<', _) => "<",
                    _ => ">",
                };
                i += if op.len() == 2 { 2 } else { 1 };
                out.push(Tok::Op(op));
            }
            b'\'' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match b.get(i) {
                        Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                            v.push('\'');
                            i += 2
                        }
                        Some(b'\'') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            let ch = s[i..].chars().next().expect("in bounds");
                            v.push(ch);
                            i += ch.len_utf8();
                        }
                        None => return Err(FilterError("unterminated string literal".into())),
                    }
                }
                out.push(Tok::Str(v));
            }
            b'"' => {
                let end = s[i + 1..].find('"').ok_or_else(|| FilterError("unterminated quoted column name".into()))?;
                out.push(Tok::Ident(s[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'0'..=b'9' | b'-' | b'.' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_digit() || matches!(b[i], b'.' | b'e' | b'E' | b'+' | b'-')) {
                    i += 1;
                }
                let text = &s[start..i];
                out.push(Tok::Num(text.parse().map_err(|_| FilterError(format!("bad number {text:?}")))?));
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].to_string()));
            }
            _ => return Err(FilterError(format!("unexpected character {:?}", s[i..].chars().next().unwrap_or(' ')))),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn keyword(&mut self, kw: &str) -> bool {
        if let Some(Tok::Ident(w)) = self.peek() {
            if w.eq_ignore_ascii_case(kw) {
                self.pos += 1;
                return true;
            }
        }
        false
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(FilterError("expected )".into()));
            }
            self.pos += 1;
            return Ok(e);
        }
        self.comparison()
    }

    fn literal(&mut self) -> Result<Lit, FilterError> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        match t {
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            other => Err(FilterError(format!("expected a number, 'string', true or false, found {other:?}"))),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let column = match self.toks.get(self.pos).cloned() {
            Some(Tok::Ident(c)) => c,
            other => return Err(FilterError(format!("expected a column name, found {other:?}"))),
        };
        self.pos += 1;
        if self.keyword("is") {
            let negated = self.keyword("not");
            if !self.keyword("null") {
                return Err(FilterError("expected NULL after IS".into()));
            }
            return Ok(Expr::IsNull(column, !negated));
        }
        let negated = self.keyword("not");
        if self.keyword("in") {
            if self.peek() != Some(&Tok::LParen) {
                return Err(FilterError("expected ( after IN".into()));
            }
            self.pos += 1;
            let mut items = vec![self.literal()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                items.push(self.literal()?);
            }
            if self.peek() != Some(&Tok::RParen) {
                return Err(FilterError("expected ) to close IN".into()));
            }
            self.pos += 1;
            return Ok(Expr::In(column, items, negated));
        }
        if negated {
            return Err(FilterError("expected IN after NOT".into()));
        }
        let op = match self.toks.get(self.pos) {
            Some(Tok::Op(o)) => match *o {
                "=" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            },
            other => return Err(FilterError(format!("expected a comparison after {column}, found {other:?}"))),
        };
        self.pos += 1;
        Ok(Expr::Cmp(column, op, self.literal()?))
    }
}

/// Parses a predicate.
pub fn parse(s: &str) -> Result<Expr, FilterError> {
    let mut p = Parser { toks: tokenize(s)?, pos: 0 };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(FilterError(format!("unexpected {:?} after the predicate", p.toks[p.pos])));
    }
    Ok(e)
}

/// A predicate bound to a table's column positions.
#[derive(Debug, Clone)]
pub enum Bound {
    Cmp(usize, CmpOp, Lit),
    In(usize, Vec<Lit>, bool),
    IsNull(usize, bool),
    And(Box<Bound>, Box<Bound>),
    Or(Box<Bound>, Box<Bound>),
    Not(Box<Bound>),
}

/// Resolves column names against `schema`; an unknown column is an error
/// that lists the table's columns.
pub fn bind(e: &Expr, schema: &TableSchema) -> Result<Bound, FilterError> {
    let col = |name: &str| {
        schema.column_index(name).ok_or_else(|| {
            let names: Vec<&str> = schema.columns.iter().map(|c| c.name.as_str()).collect();
            FilterError(format!("column {name:?} does not exist in {} (columns: {})", schema.id, names.join(", ")))
        })
    };
    Ok(match e {
        Expr::Cmp(c, op, l) => Bound::Cmp(col(c)?, *op, l.clone()),
        Expr::In(c, items, neg) => Bound::In(col(c)?, items.clone(), *neg),
        Expr::IsNull(c, is) => Bound::IsNull(col(c)?, *is),
        Expr::And(a, b) => Bound::And(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::Or(a, b) => Bound::Or(Box::new(bind(a, schema)?), Box::new(bind(b, schema)?)),
        Expr::Not(a) => Bound::Not(Box::new(bind(a, schema)?)),
    })
}

fn compare(v: &Value, lit: &Lit) -> Option<Ordering> {
    let num = |x: f64| match lit {
        Lit::Num(n) => x.partial_cmp(n),
        _ => None,
    };
    match v {
        Value::Int(i) => num(*i as f64),
        Value::UInt(u) => num(*u as f64),
        Value::Float32(f) => num(f64::from(*f)),
        Value::Float64(f) => num(*f),
        Value::Decimal(d) => num(d.parse().ok()?),
        Value::Bool(b) => match lit {
            Lit::Bool(l) => Some(b.cmp(l)),
            _ => None,
        },
        Value::Text(s) | Value::Json(s) => match lit {
            Lit::Str(l) => Some(s.as_str().cmp(l.as_str())),
            Lit::Num(n) => s.parse::<f64>().ok()?.partial_cmp(n),
            Lit::Bool(_) => None,
        },
        _ => None,
    }
}

/// `Some(true/false)`, or `None` when a value the row needs was not sent.
pub fn eval(e: &Bound, row: &[Value]) -> Option<bool> {
    match e {
        Bound::Cmp(i, op, lit) => match &row[*i] {
            Value::Unavailable => None,
            Value::Null => Some(false),
            v => Some(compare(v, lit).is_some_and(|o| match op {
                CmpOp::Eq => o == Ordering::Equal,
                CmpOp::Ne => o != Ordering::Equal,
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
            })),
        },
        Bound::In(i, items, negated) => match &row[*i] {
            Value::Unavailable => None,
            Value::Null => Some(false),
            v => Some(items.iter().any(|l| compare(v, l) == Some(Ordering::Equal)) != *negated),
        },
        Bound::IsNull(i, is) => match &row[*i] {
            Value::Unavailable => None,
            v => Some(v.is_null() == *is),
        },
        Bound::And(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Bound::Or(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Bound::Not(a) => eval(a, row).map(|v| !v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riffle_core::{Column, DataType, TableId};

    fn schema() -> TableSchema {
        let col = |n: &str| Column {
            name: n.into(),
            source_type: String::new(),
            data_type: DataType::String,
            nullable: true,
            labels: Vec::new(),
        };
        TableSchema {
            id: TableId::new("public", "t"),
            columns: vec![col("loc"), col("status"), col("amount")],
            key: vec![],
            full_before_image: false,
        }
    }

    fn check(pred: &str, row: &[Value]) -> Option<bool> {
        eval(&bind(&parse(pred).unwrap(), &schema()).unwrap(), row)
    }

    #[test]
    fn predicates_evaluate_like_sql_where() {
        let row = [Value::Int(10), Value::Text("paid".into()), Value::Decimal("100.50".into())];
        assert_eq!(check("loc = 10", &row), Some(true));
        assert_eq!(check("loc <> 10", &row), Some(false));
        assert_eq!(check("status IN ('paid', 'shipped') AND amount >= 100.5", &row), Some(true));
        assert_eq!(check("status NOT IN ('paid')", &row), Some(false));
        assert_eq!(check("NOT (loc > 5) OR status = 'it''s'", &row), Some(false));
        let nulls = [Value::Null, Value::Unavailable, Value::Null];
        assert_eq!(check("loc = 10", &nulls), Some(false));
        assert_eq!(check("loc IS NULL", &nulls), Some(true));
        assert_eq!(check("status = 'x'", &nulls), None, "a value not sent is unknown");
        assert_eq!(check("status = 'x' AND loc = 1", &nulls), Some(false));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert!(parse("loc = ").unwrap_err().to_string().contains("expected a number"));
        assert!(parse("loc == 1").is_err());
        assert!(parse("status = 'open").unwrap_err().to_string().contains("unterminated"));
        let e = bind(&parse("nope = 1").unwrap(), &schema()).unwrap_err().to_string();
        assert!(e.contains("\"nope\" does not exist in public.t (columns: loc, status, amount)"), "{e}");
    }
}
