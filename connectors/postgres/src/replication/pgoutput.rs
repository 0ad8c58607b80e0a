//! Decoder for the `pgoutput` plugin's messages, protocol version 1
//! (<https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>).

use crate::error::PgError;
use bytes::{Buf, Bytes};
use riffle_core::Lsn;

/// One column of a tuple as pgoutput sends it.
#[derive(Debug, Clone, PartialEq)]
pub enum TupleValue {
    Null,
    /// An unchanged TOASTed value the server did not send.
    UnchangedToast,
    Text(Bytes),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RelationColumn {
    /// Part of the replica identity key.
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        commit_ts_us: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts_us: i64,
    },
    Relation {
        oid: u32,
        namespace: String,
        name: String,
        replica_identity: u8,
        columns: Vec<RelationColumn>,
    },
    Insert {
        oid: u32,
        new: Vec<TupleValue>,
    },
    /// `old` is the key (`K`) or the whole old row (`O`) when sent.
    Update {
        oid: u32,
        old: Option<(u8, Vec<TupleValue>)>,
        new: Vec<TupleValue>,
    },
    Delete {
        oid: u32,
        old: (u8, Vec<TupleValue>),
    },
    Truncate {
        oids: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Origin, Type and logical-decoding messages: nothing riffle acts on.
    Other(u8),
}

fn malformed(what: &str) -> PgError {
    PgError::Malformed { what: what.to_string() }
}

fn need(buf: &Bytes, n: usize, what: &str) -> Result<(), PgError> {
    if buf.remaining() < n {
        Err(malformed(what))
    } else {
        Ok(())
    }
}

fn cstring(buf: &mut Bytes) -> Result<String, PgError> {
    let end = buf.iter().position(|b| *b == 0).ok_or_else(|| malformed("unterminated string"))?;
    let s = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.advance(end + 1);
    Ok(s)
}

fn tuple(buf: &mut Bytes) -> Result<Vec<TupleValue>, PgError> {
    need(buf, 2, "tuple header")?;
    let n = buf.get_i16() as usize;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        need(buf, 1, "tuple column kind")?;
        match buf.get_u8() {
            b'n' => values.push(TupleValue::Null),
            b'u' => values.push(TupleValue::UnchangedToast),
            b't' => {
                need(buf, 4, "tuple column length")?;
                let len = buf.get_i32() as usize;
                need(buf, len, "tuple column data")?;
                values.push(TupleValue::Text(buf.split_to(len)));
            }
            other => return Err(malformed(&format!("tuple column kind {:?}", other as char))),
        }
    }
    Ok(values)
}

/// Decodes one pgoutput message.
pub fn decode(mut buf: Bytes) -> Result<Message, PgError> {
    need(&buf, 1, "empty message")?;
    let tag = buf.get_u8();
    let msg = match tag {
        b'B' => {
            need(&buf, 20, "begin")?;
            Message::Begin { final_lsn: Lsn(buf.get_u64()), commit_ts_us: buf.get_i64(), xid: buf.get_u32() }
        }
        b'C' => {
            need(&buf, 25, "commit")?;
            let _flags = buf.get_u8();
            Message::Commit { commit_lsn: Lsn(buf.get_u64()), end_lsn: Lsn(buf.get_u64()), commit_ts_us: buf.get_i64() }
        }
        b'R' => {
            need(&buf, 4, "relation")?;
            let oid = buf.get_u32();
            let namespace = cstring(&mut buf)?;
            let name = cstring(&mut buf)?;
            need(&buf, 3, "relation")?;
            let replica_identity = buf.get_u8();
            let n = buf.get_i16() as usize;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                need(&buf, 1, "relation column")?;
                let key = buf.get_u8() & 1 == 1;
                let name = cstring(&mut buf)?;
                need(&buf, 8, "relation column type")?;
                columns.push(RelationColumn { key, name, type_oid: buf.get_u32(), type_modifier: buf.get_i32() });
            }
            Message::Relation { oid, namespace, name, replica_identity, columns }
        }
        b'I' => {
            need(&buf, 5, "insert")?;
            let oid = buf.get_u32();
            let _n = buf.get_u8();
            Message::Insert { oid, new: tuple(&mut buf)? }
        }
        b'U' => {
            need(&buf, 5, "update")?;
            let oid = buf.get_u32();
            let mut kind = buf.get_u8();
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, tuple(&mut buf)?));
                need(&buf, 1, "update new tuple")?;
                kind = buf.get_u8();
            }
            if kind != b'N' {
                return Err(malformed("update without new tuple"));
            }
            Message::Update { oid, old, new: tuple(&mut buf)? }
        }
        b'D' => {
            need(&buf, 5, "delete")?;
            let oid = buf.get_u32();
            let kind = buf.get_u8();
            Message::Delete { oid, old: (kind, tuple(&mut buf)?) }
        }
        b'T' => {
            need(&buf, 5, "truncate")?;
            let n = buf.get_u32() as usize;
            let options = buf.get_u8();
            need(&buf, 4 * n, "truncate relations")?;
            let oids = (0..n).map(|_| buf.get_u32()).collect();
            Message::Truncate { oids, cascade: options & 1 != 0, restart_identity: options & 2 != 0 }
        }
        other => Message::Other(other),
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    #[test]
    fn decodes_an_update_with_old_row_and_unchanged_toast() {
        let mut b = BytesMut::new();
        b.put_u8(b'U');
        b.put_u32(16384);
        b.put_u8(b'O');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_slice(b"1");
        b.put_u8(b'n');
        b.put_u8(b'N');
        b.put_i16(2);
        b.put_u8(b't');
        b.put_i32(1);
        b.put_slice(b"2");
        b.put_u8(b'u');
        let msg = decode(b.freeze()).unwrap();
        assert_eq!(
            msg,
            Message::Update {
                oid: 16384,
                old: Some((b'O', vec![TupleValue::Text(Bytes::from_static(b"1")), TupleValue::Null])),
                new: vec![TupleValue::Text(Bytes::from_static(b"2")), TupleValue::UnchangedToast],
            }
        );
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let mut b = BytesMut::new();
        b.put_u8(b'I');
        b.put_u32(1);
        b.put_u8(b'N');
        b.put_i16(3);
        b.put_u8(b't');
        b.put_i32(100);
        assert!(decode(b.freeze()).is_err());
    }
}
