//! Decoder for the `pgoutput` plugin's messages, protocol version 1
//! (<https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html>).

use super::cursor::Cursor;
use crate::error::PgError;
use bytes::Bytes;
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

/// A tuple: its column count, then each column's kind and value.
fn tuple(c: &mut Cursor) -> Result<Vec<TupleValue>, PgError> {
    let n = c.i16()?;
    // Each column takes at least its kind byte.
    let n = c.count(n.into(), 1)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        match c.u8()? {
            b'n' => values.push(TupleValue::Null),
            b'u' => values.push(TupleValue::UnchangedToast),
            b't' => {
                let len = c.i32()?;
                values.push(TupleValue::Text(c.bytes_signed(len)?));
            }
            // A protocol byte, not row data.
            other => return Err(c.malformed(format_args!("tuple column kind {other:#04x}"))),
        }
    }
    Ok(values)
}

/// Decodes one pgoutput message. Anything malformed is a
/// [`PgError::Malformed`]; no input panics.
pub fn decode(buf: Bytes) -> Result<Message, PgError> {
    let mut c = Cursor::new(buf, "pgoutput message");
    let tag = c.u8()?;
    let msg = match tag {
        b'B' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Begin");
            Message::Begin { final_lsn: Lsn(c.u64()?), commit_ts_us: c.i64()?, xid: c.u32()? }
        }
        b'C' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Commit");
            let _flags = c.u8()?;
            Message::Commit { commit_lsn: Lsn(c.u64()?), end_lsn: Lsn(c.u64()?), commit_ts_us: c.i64()? }
        }
        b'R' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Relation");
            let oid = c.u32()?;
            let namespace = c.cstring()?;
            let name = c.cstring()?;
            let replica_identity = c.u8()?;
            let n = c.i16()?;
            // Flags, a name's NUL, type OID and modifier: 10 bytes at least.
            let n = c.count(n.into(), 10)?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let key = c.u8()? & 1 == 1;
                let name = c.cstring()?;
                columns.push(RelationColumn { key, name, type_oid: c.u32()?, type_modifier: c.i32()? });
            }
            Message::Relation { oid, namespace, name, replica_identity, columns }
        }
        b'I' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Insert");
            let oid = c.u32()?;
            let _n = c.u8()?;
            Message::Insert { oid, new: tuple(&mut c)? }
        }
        b'U' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Update");
            let oid = c.u32()?;
            let mut kind = c.u8()?;
            let mut old = None;
            if kind == b'K' || kind == b'O' {
                old = Some((kind, tuple(&mut c)?));
                kind = c.u8()?;
            }
            if kind != b'N' {
                return Err(c.malformed("no new tuple"));
            }
            Message::Update { oid, old, new: tuple(&mut c)? }
        }
        b'D' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Delete");
            let oid = c.u32()?;
            let kind = c.u8()?;
            Message::Delete { oid, old: (kind, tuple(&mut c)?) }
        }
        b'T' => {
            let mut c = Cursor::new(c.rest(), "pgoutput Truncate");
            let n = c.u32()?;
            let options = c.u8()?;
            let n = c.count(n.into(), 4)?;
            let oids = (0..n).map(|_| c.u32()).collect::<Result<_, _>>()?;
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

    #[test]
    fn impossible_counts_and_lengths_are_errors_not_panics() {
        let msg = |bytes: &[u8]| decode(Bytes::copy_from_slice(bytes));
        // Insert with a negative column count (once a capacity overflow).
        assert!(msg(b"I\0\0\0\x01N\xff\xff").is_err());
        // More columns than bytes left.
        assert!(msg(b"I\0\0\0\x01N\x7f\xffn").is_err());
        // A negative value length.
        assert!(msg(b"I\0\0\0\x01N\0\x01t\xff\xff\xff\xff").is_err());
        // Relation: negative column count, a name without its NUL.
        assert!(msg(b"R\0\0\0\x01public\0t\0d\xff\xff").is_err());
        assert!(msg(b"R\0\0\0\x01public\0t\0d\0\x01\x01col").is_err());
        assert!(msg(b"R\0\0\0\x01public").is_err());
        // Truncate of 4 billion relations in 5 bytes.
        assert!(msg(b"T\xff\xff\xff\xff\0\0\0\0\x01").is_err());
        // Update with an old tuple and nothing after it; every prefix of a
        // short Begin and Commit.
        assert!(msg(b"U\0\0\0\x01K\0\0").is_err());
        for n in 0..21 {
            assert!(msg(&b"B\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\0\x03"[..n]).is_err(), "{n}");
        }
        assert!(msg(b"C\0").is_err());
        assert!(msg(b"").is_err());
        // No row data in the error.
        let e = msg(b"I\0\0\0\x01N\0\x02t\0\0\0\x06secretx").unwrap_err().to_string();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn a_relation_and_a_truncate_decode() {
        let rel = decode(Bytes::from_static(b"R\0\0\x40\0public\0t\0d\0\x01\x01id\0\0\0\0\x17\xff\xff\xff\xff")).unwrap();
        assert_eq!(
            rel,
            Message::Relation {
                oid: 16384,
                namespace: "public".into(),
                name: "t".into(),
                replica_identity: b'd',
                columns: vec![RelationColumn { key: true, name: "id".into(), type_oid: 23, type_modifier: -1 }],
            }
        );
        let t = decode(Bytes::from_static(b"T\0\0\0\x02\x03\0\0\0\x01\0\0\0\x02")).unwrap();
        assert_eq!(t, Message::Truncate { oids: vec![1, 2], cascade: true, restart_identity: true });
    }
}
