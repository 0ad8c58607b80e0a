//! Checked reads from a message the server sent: every read that runs past
//! the end, and every count or length that cannot fit in what is left, is a
//! [`PgError::Malformed`] rather than a panic or a huge allocation.

use crate::error::PgError;
use bytes::{Buf, Bytes};

/// The largest message riffle accepts, tag and length excluded. Postgres
/// never sends more in one message (its buffers stop at 1 GB), so anything
/// larger is not Postgres speaking.
pub(crate) const MAX_MESSAGE: usize = 1 << 30;

/// A message body being read front to back; `what` names the message in
/// errors (never its content: it may hold row values).
pub(crate) struct Cursor {
    buf: Bytes,
    what: &'static str,
}

impl Cursor {
    pub(crate) fn new(buf: Bytes, what: &'static str) -> Self {
        Cursor { buf, what }
    }

    /// An error about this message; `why` must not carry row values.
    pub(crate) fn malformed(&self, why: impl std::fmt::Display) -> PgError {
        PgError::Malformed { what: format!("{}: {why}", self.what) }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), PgError> {
        if self.buf.len() < n {
            Err(self.malformed(format_args!("{n} more bytes expected, {} left", self.buf.len())))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, PgError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn i16(&mut self) -> Result<i16, PgError> {
        self.need(2)?;
        Ok(self.buf.get_i16())
    }

    pub(crate) fn i32(&mut self) -> Result<i32, PgError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, PgError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self) -> Result<u64, PgError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn i64(&mut self) -> Result<i64, PgError> {
        self.need(8)?;
        Ok(self.buf.get_i64())
    }

    /// The next `n` bytes, without copying.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<Bytes, PgError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// The next `len` bytes, `len` as the server sent it (negative is
    /// malformed).
    pub(crate) fn bytes_signed(&mut self, len: i32) -> Result<Bytes, PgError> {
        let n = usize::try_from(len).map_err(|_| self.malformed(format_args!("length {len}")))?;
        self.bytes(n)
    }

    /// A NUL-terminated string (invalid UTF-8 replaced).
    pub(crate) fn cstring(&mut self) -> Result<String, PgError> {
        let end = self.buf.iter().position(|b| *b == 0).ok_or_else(|| self.malformed("unterminated string"))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.advance(end + 1);
        Ok(s)
    }

    /// `n` items, each taking at least `each` bytes of what is left: a
    /// negative count, or one the rest cannot hold, is malformed, so a
    /// `Vec::with_capacity(count)` stays bounded by the message's size.
    pub(crate) fn count(&self, n: i64, each: usize) -> Result<usize, PgError> {
        usize::try_from(n)
            .ok()
            .filter(|n| n.checked_mul(each).is_some_and(|size| size <= self.buf.len()))
            .ok_or_else(|| self.malformed(format_args!("count {n} with {} bytes left", self.buf.len())))
    }

    /// Everything left.
    pub(crate) fn rest(self) -> Bytes {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_and_impossible_counts_are_errors() {
        let mut c = Cursor::new(Bytes::from_static(&[0, 1, 2]), "test");
        assert!(c.i32().is_err());
        assert_eq!(c.i16().unwrap(), 1);
        assert!(c.u64().is_err());
        assert!(c.count(-1, 1).is_err());
        assert!(c.count(2, 1).is_err());
        assert_eq!(c.count(1, 1).unwrap(), 1);
        assert!(c.count(i64::MAX, usize::MAX).is_err());
        assert!(c.bytes_signed(-1).is_err());
        assert!(c.cstring().is_err());
        assert_eq!(c.u8().unwrap(), 2);
        assert!(c.u8().is_err());
        let e = Cursor::new(Bytes::new(), "Begin").u8().unwrap_err();
        assert_eq!(e.to_string(), "malformed message from postgres: Begin: 1 more bytes expected, 0 left; this is a bug in riffle or an unsupported server version");
    }
}
