//! A walsender client: startup with `replication=database`, password, MD5 and
//! SCRAM-SHA-256 authentication, simple queries (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`), and the `CopyBoth` stream of
//! `START_REPLICATION` with standby status updates.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use riffle_core::Lsn;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::cursor::{Cursor, MAX_MESSAGE};
use super::PG_EPOCH_OFFSET_US;
use crate::connect::ConnectParams;
use crate::error::PgError;

/// A backend message: its tag and body.
struct Message {
    tag: u8,
    body: Bytes,
}

/// What the walsender sends during `START_REPLICATION`.
#[derive(Debug)]
pub enum ReplicationMessage {
    /// WAL data: a pgoutput message that starts at `start`.
    XLogData { start: Lsn, wal_end: Lsn, data: Bytes },
    /// The server's position and whether it wants an answer now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// The connection: plain TCP or TLS over it.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

pub struct ReplicationClient {
    stream: Box<dyn Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    /// The walsender's process id (BackendKeyData), to end it ourselves
    /// if this connection dies without the server noticing.
    backend_pid: Option<i32>,
}

impl ReplicationClient {
    /// Connects and authenticates a replication connection to `params.dbname`.
    pub async fn connect(params: &ConnectParams) -> Result<Self, PgError> {
        let addr = format!("{}:{}", params.host, params.port);
        let stream = tokio::time::timeout(params.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| PgError::ConnectTimeout { addr: addr.clone(), after: params.connect_timeout })?
            .map_err(PgError::io(format!("connecting to postgres at {addr}")))?;
        stream.set_nodelay(true).ok();
        // TLS and login within the connect timeout too: a server that
        // stalls mid-handshake must not hang riffle.
        let login = async {
            let stream = Self::negotiate_tls(stream, params).await?;
            let mut client =
                ReplicationClient { stream, read_buf: BytesMut::with_capacity(1 << 16), write_buf: BytesMut::new(), backend_pid: None };
            client.startup(params).await?;
            Ok::<_, PgError>(client)
        };
        tokio::time::timeout(params.connect_timeout, login)
            .await
            .map_err(|_| PgError::LoginTimeout { addr, after: params.connect_timeout })?
    }

    /// `SSLRequest`, then the TLS handshake when the server agrees (and
    /// `sslmode` is not `disable`).
    async fn negotiate_tls(mut stream: TcpStream, params: &ConnectParams) -> Result<Box<dyn Stream>, PgError> {
        use crate::tls::SslMode;
        if params.sslmode == SslMode::Disable {
            return Ok(Box::new(stream));
        }
        let at = params.redacted();
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        stream.write_all(&request).await.map_err(PgError::io(format!("postgres at {at}: TLS request")))?;
        let answer = stream.read_u8().await.map_err(PgError::io(format!("postgres at {at}: TLS request")))?;
        match answer {
            b'S' => {
                let config = crate::tls::client_config(params.sslmode, params.sslrootcert.as_ref())?;
                let name = crate::tls::server_name(&params.host)?;
                let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| {
                    crate::connect::tls_error(&e.to_string(), params, e)
                        .unwrap_or_else(|e| PgError::Io { what: format!("postgres at {at}: TLS handshake"), source: e })
                })?;
                Ok(Box::new(tls))
            }
            b'N' if !params.sslmode.required() => Ok(Box::new(stream)),
            b'N' => Err(PgError::TlsRefused { at, mode: params.sslmode }),
            answer => Err(PgError::NotPostgres { at, answer }),
        }
    }

    async fn startup(&mut self, params: &ConnectParams) -> Result<(), PgError> {
        // The walsender formats values with these settings; the snapshot
        // session sets the same, so both paths produce identical text.
        let options = crate::SESSION_OPTIONS;
        let startup = [
            ("user", params.user.as_str()),
            ("database", params.dbname.as_str()),
            ("replication", "database"),
            ("application_name", "riffle"),
            ("options", options),
        ];
        frontend::startup_message(startup.iter().copied(), &mut self.write_buf).map_err(PgError::io("encoding startup"))?;
        self.flush().await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'R' => match auth_request(msg.body)? {
                    Auth::Ok => {}
                    Auth::Cleartext => {
                        let pw = params.password_for_auth()?;
                        frontend::password_message(pw.as_bytes(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                        self.flush().await?;
                    }
                    Auth::Md5(salt) => {
                        let pw = params.password_for_auth()?;
                        let hash = postgres_protocol::authentication::md5_hash(params.user.as_bytes(), pw.as_bytes(), salt);
                        frontend::password_message(hash.as_bytes(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                        self.flush().await?;
                    }
                    Auth::Sasl(mechanisms) => {
                        if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                            return Err(PgError::SaslMechanisms { mechanisms });
                        }
                        let pw = params.password_for_auth()?;
                        let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                        frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                        self.flush().await?;
                        scram = Some(s);
                    }
                    Auth::SaslContinue(data) => {
                        let s = scram.as_mut().ok_or_else(|| PgError::Unexpected("postgres sent SASLContinue before SASL".into()))?;
                        scram_iterations(&data)?;
                        s.update(&data).map_err(PgError::Scram)?;
                        frontend::sasl_response(s.message(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                        self.flush().await?;
                    }
                    Auth::SaslFinal(data) => {
                        let s = scram.as_mut().ok_or_else(|| PgError::Unexpected("postgres sent SASLFinal before SASL".into()))?;
                        s.finish(&data).map_err(PgError::ScramProof)?;
                    }
                    Auth::Other(method) => return Err(PgError::AuthMethod { method }),
                },
                b'E' => return Err(crate::connect::classify_server_error(&parse_error_fields(&msg.body), params)),
                b'Z' => return Ok(()),
                b'K' if msg.body.len() >= 4 => {
                    self.backend_pid = Some(i32::from_be_bytes([msg.body[0], msg.body[1], msg.body[2], msg.body[3]]));
                }
                // ParameterStatus, NoticeResponse.
                _ => {}
            }
        }
    }

    /// The walsender's process id, when the server said it.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Runs a simple query and returns its rows as text (NULL as `None`).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        frontend::query(sql, &mut self.write_buf).map_err(PgError::io("encoding query"))?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'D' => rows.push(data_row(msg.body)?),
                b'E' => error = Some(parse_error_fields(&msg.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(source) => Err(PgError::Command { what: sql.to_string(), source }),
            None => Ok(rows),
        }
    }

    /// Sends `START_REPLICATION` and waits for the server to enter CopyBoth.
    pub async fn start_replication(&mut self, slot: &str, start: Lsn, publication: &str) -> Result<(), PgError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (\"proto_version\" '1', \"publication_names\" {})",
            crate::quote_ident(slot),
            crate::quote_literal(&crate::quote_ident(publication))
        );
        frontend::query(&sql, &mut self.write_buf).map_err(PgError::io("encoding query"))?;
        self.flush().await?;
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'W' => return Ok(()),
                b'E' => {
                    let what = format!("starting replication from slot {slot:?} at {start}");
                    return Err(PgError::Command { what, source: parse_error_fields(&msg.body) });
                }
                _ => {}
            }
        }
    }

    /// The next message of the replication stream; `None` when the server
    /// ended the stream.
    pub async fn next(&mut self) -> Result<Option<ReplicationMessage>, PgError> {
        loop {
            let msg = self.read_message().await?;
            match msg.tag {
                b'd' => {
                    if let Some(m) = copy_data(msg.body)? {
                        return Ok(Some(m));
                    }
                }
                b'c' => return Ok(None),
                b'E' => return Err(PgError::Stream(parse_error_fields(&msg.body))),
                _ => {}
            }
        }
    }

    /// Tells the server what riffle has written and made durable: the slot's
    /// confirmed flush LSN moves to `flushed`.
    /// Reports the positions; `ping` asks the server to answer at once (a
    /// keepalive), which tells a quiet connection from a dead one.
    pub async fn send_status(&mut self, written: Lsn, flushed: Lsn, ping: bool) -> Result<(), PgError> {
        let now_us = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as i64 - PG_EPOCH_OFFSET_US;
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(flushed.0);
        payload.put_i64(now_us);
        payload.put_u8(u8::from(ping));
        let data = frontend::CopyData::new(payload.freeze()).map_err(PgError::io("encoding status"))?;
        data.write(&mut self.write_buf);
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), PgError> {
        self.stream.write_all(&self.write_buf).await.map_err(PgError::io("writing to postgres"))?;
        self.write_buf.clear();
        Ok(())
    }

    async fn read_message(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(msg) = take_message(&mut self.read_buf)? {
                return Ok(msg);
            }
            // Room for the whole message at once (bounded by frame_len).
            if let Some(len) = frame_len(&self.read_buf)? {
                self.read_buf.reserve(len.saturating_sub(self.read_buf.len()));
            }
            let n = self.stream.read_buf(&mut self.read_buf).await.map_err(PgError::io("reading from postgres"))?;
            if n == 0 {
                return Err(PgError::ConnectionClosed);
            }
        }
    }
}

/// The length of the message at the start of `buf`, its tag included, once
/// its header is in. A length below 4 (it counts itself) or above
/// [`MAX_MESSAGE`] is not Postgres speaking.
fn frame_len(buf: &[u8]) -> Result<Option<usize>, PgError> {
    let Some(&[_, a, b, c, d]) = buf.get(..5) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    match usize::try_from(len) {
        Ok(n) if (4..=MAX_MESSAGE + 4).contains(&n) => Ok(Some(n + 1)),
        _ => Err(PgError::Malformed { what: format!("a message (tag {:#04x}) of length {len}", buf[0]) }),
    }
}

/// Splits the first whole message off `buf`; `None` until it has arrived.
fn take_message(buf: &mut BytesMut) -> Result<Option<Message>, PgError> {
    match frame_len(buf)? {
        Some(len) if buf.len() >= len => {
            let mut frame = buf.split_to(len);
            let tag = frame[0];
            frame.advance(5);
            Ok(Some(Message { tag, body: frame.freeze() }))
        }
        _ => Ok(None),
    }
}

/// An authentication request (`R`).
#[derive(Debug)]
enum Auth {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    /// The SASL mechanisms the server offers.
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    Other(i32),
}

fn auth_request(body: Bytes) -> Result<Auth, PgError> {
    let mut c = Cursor::new(body, "authentication request");
    Ok(match c.i32()? {
        0 => Auth::Ok,
        3 => Auth::Cleartext,
        5 => {
            let salt = c.bytes(4)?;
            Auth::Md5([salt[0], salt[1], salt[2], salt[3]])
        }
        10 => Auth::Sasl(c.rest().split(|b| *b == 0).filter(|m| !m.is_empty()).map(|m| String::from_utf8_lossy(m).into_owned()).collect()),
        11 => Auth::SaslContinue(c.rest()),
        12 => Auth::SaslFinal(c.rest()),
        method => Auth::Other(method),
    })
}

/// A DataRow (`D`) of a simple query, as text (NULL as `None`).
fn data_row(body: Bytes) -> Result<Vec<Option<String>>, PgError> {
    let mut c = Cursor::new(body, "DataRow");
    let n = c.i16()?;
    // Each column takes at least its length.
    let n = c.count(n.into(), 4)?;
    let mut row = Vec::with_capacity(n);
    for _ in 0..n {
        let len = c.i32()?;
        row.push(if len < 0 { None } else { Some(String::from_utf8_lossy(&c.bytes_signed(len)?).into_owned()) });
    }
    Ok(row)
}

/// A CopyData (`d`) of the replication stream: XLogData or a keepalive;
/// `None` for an empty or unknown one (skipped).
fn copy_data(body: Bytes) -> Result<Option<ReplicationMessage>, PgError> {
    let mut c = Cursor::new(body, "replication CopyData");
    if c.remaining() == 0 {
        return Ok(None);
    }
    Ok(match c.u8()? {
        b'w' => {
            let mut c = Cursor::new(c.rest(), "XLogData");
            let start = Lsn(c.u64()?);
            let wal_end = Lsn(c.u64()?);
            let _send_time = c.i64()?;
            Some(ReplicationMessage::XLogData { start, wal_end, data: c.rest() })
        }
        b'k' => {
            let mut c = Cursor::new(c.rest(), "primary keepalive");
            let wal_end = Lsn(c.u64()?);
            let _send_time = c.i64()?;
            let reply_requested = c.u8()? == 1;
            Some(ReplicationMessage::Keepalive { wal_end, reply_requested })
        }
        _ => None,
    })
}

/// Feeds `data` through everything above as if a server had sent it:
/// framing, then each message as login, a simple query and the stream read
/// it. For the fuzz targets ([`crate::fuzzing`]).
pub(crate) fn fuzz(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(msg)) = take_message(&mut buf) {
        // Every decoder sees every message, whatever its tag.
        let _ = parse_error_fields(&msg.body);
        let _ = data_row(msg.body.clone());
        if let Ok(Auth::SaslContinue(data) | Auth::SaslFinal(data)) = auth_request(msg.body.clone()) {
            // The SCRAM exchange parses what the server sends too (with
            // few iterations: each costs a hash).
            if scram_iterations(&data).is_ok_and(|i| i.is_none_or(|i| i <= 16)) {
                let mut s = ScramSha256::new(b"password", ChannelBinding::unsupported());
                if s.update(&data).is_ok() {
                    let _ = s.finish(&data);
                }
            }
        }
        if let Ok(Some(ReplicationMessage::XLogData { data, .. })) = copy_data(msg.body) {
            let _ = super::pgoutput::decode(data);
        }
    }
}

/// The most PBKDF2 iterations riffle computes for a SCRAM login (Postgres
/// uses 4096 unless `scram_iterations` says otherwise): the hash runs on
/// riffle's threads, where no timeout can stop it, so a server (or whoever
/// sits between it and riffle before TLS) must not ask for billions.
const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// The iteration count (`i=`) of a SCRAM server-first message, if it has
/// one; more than [`MAX_SCRAM_ITERATIONS`] is refused.
fn scram_iterations(server_first: &[u8]) -> Result<Option<u32>, PgError> {
    let Some(i) = server_first.split(|b| *b == b',').find_map(|attr| attr.strip_prefix(b"i=")) else {
        return Ok(None);
    };
    // Unparseable counts are the SCRAM library's to reject.
    match std::str::from_utf8(i).ok().and_then(|i| i.parse::<u64>().ok()) {
        Some(n) if n > u64::from(MAX_SCRAM_ITERATIONS) => {
            Err(PgError::Unexpected(format!("postgres asked for {n} SCRAM iterations; riffle computes at most {MAX_SCRAM_ITERATIONS}")))
        }
        n => Ok(n.map(|n| n as u32)),
    }
}

/// The fields of an ErrorResponse riffle uses; shown as its message.
#[derive(Debug, Default, thiserror::Error)]
#[error("{message}")]
pub struct ServerError {
    pub code: String,
    pub message: String,
}

fn parse_error_fields(body: &[u8]) -> ServerError {
    let mut err = ServerError::default();
    for field in body.split(|b| *b == 0) {
        if let Some((&kind, value)) = field.split_first() {
            let value = String::from_utf8_lossy(value).into_owned();
            match kind {
                b'C' => err.code = value,
                b'M' => err.message = value,
                _ => {}
            }
        }
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn messages_are_framed_across_reads() {
        let mut wire = frame(b'Z', b"I");
        wire.extend(frame(b'c', b""));
        let mut buf = BytesMut::from(&wire[..3]);
        assert!(take_message(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&wire[3..]);
        let m = take_message(&mut buf).unwrap().unwrap();
        assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));
        let m = take_message(&mut buf).unwrap().unwrap();
        assert_eq!((m.tag, m.body.len()), (b'c', 0));
        assert!(take_message(&mut buf).unwrap().is_none());
    }

    #[test]
    fn impossible_message_lengths_are_errors() {
        for len in [0i32, 3, -1, i32::MIN, (MAX_MESSAGE + 5) as i32, i32::MAX] {
            let mut buf = BytesMut::from(&[b'd'][..]);
            buf.extend_from_slice(&len.to_be_bytes());
            assert!(take_message(&mut buf).is_err(), "{len}");
            assert!(frame_len(&buf).is_err(), "{len}");
        }
        // The largest allowed length waits for the data, without allocating it.
        let mut buf = BytesMut::from(&[b'd'][..]);
        buf.extend_from_slice(&((MAX_MESSAGE + 4) as i32).to_be_bytes());
        assert!(take_message(&mut buf).unwrap().is_none());
    }

    #[test]
    fn short_authentication_requests_are_errors() {
        assert!(auth_request(Bytes::new()).is_err());
        assert!(auth_request(Bytes::from_static(&[0, 0])).is_err());
        // MD5 without its salt.
        assert!(auth_request(Bytes::from_static(&[0, 0, 0, 5, 1, 2])).is_err());
        assert!(matches!(auth_request(Bytes::from_static(&[0, 0, 0, 5, 1, 2, 3, 4])).unwrap(), Auth::Md5([1, 2, 3, 4])));
        let sasl = auth_request(Bytes::from_static(b"\0\0\0\x0aSCRAM-SHA-256\0\0")).unwrap();
        assert!(matches!(sasl, Auth::Sasl(m) if m == ["SCRAM-SHA-256"]));
    }

    #[test]
    fn scram_iteration_counts_are_bounded() {
        assert_eq!(scram_iterations(b"r=abc,s=c2FsdA==,i=4096").unwrap(), Some(4096));
        assert_eq!(scram_iterations(b"r=abc,s=c2FsdA==").unwrap(), None);
        assert!(scram_iterations(b"r=abc,s=c2FsdA==,i=4294967295").is_err());
        assert!(scram_iterations(b"r=abc,s=c2FsdA==,i=99999999999999999999").unwrap().is_none());
    }

    #[test]
    fn short_copy_data_is_an_error() {
        assert!(copy_data(Bytes::new()).unwrap().is_none());
        assert!(copy_data(Bytes::from_static(b"x")).unwrap().is_none());
        assert!(copy_data(Bytes::from_static(b"w")).is_err());
        assert!(copy_data(Bytes::from_static(b"w\0\0\0\0\0\0\0\x01\0\0")).is_err());
        assert!(copy_data(Bytes::from_static(b"k\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\0")).is_err());
        let mut k = b"k".to_vec();
        k.extend(7u64.to_be_bytes());
        k.extend(0i64.to_be_bytes());
        k.push(1);
        assert!(matches!(
            copy_data(Bytes::from(k)).unwrap(),
            Some(ReplicationMessage::Keepalive { wal_end: Lsn(7), reply_requested: true })
        ));
        let mut w = b"w".to_vec();
        w.extend(1u64.to_be_bytes());
        w.extend(2u64.to_be_bytes());
        w.extend(0i64.to_be_bytes());
        w.extend(b"B");
        assert!(matches!(
            copy_data(Bytes::from(w)).unwrap(),
            Some(ReplicationMessage::XLogData { start: Lsn(1), wal_end: Lsn(2), data }) if &data[..] == b"B"
        ));
    }

    #[test]
    fn truncated_data_rows_are_errors() {
        let row = data_row(Bytes::from_static(b"\0\x02\0\0\0\x01a\xff\xff\xff\xff")).unwrap();
        assert_eq!(row, vec![Some("a".to_string()), None]);
        assert!(data_row(Bytes::new()).is_err());
        // More columns than bytes, a negative count, a value past the end.
        assert!(data_row(Bytes::from_static(b"\x7f\xff")).is_err());
        assert!(data_row(Bytes::from_static(b"\xff\xff\0\0\0\0")).is_err());
        assert!(data_row(Bytes::from_static(b"\0\x01\0\0\0\x09abc")).is_err());
        assert!(data_row(Bytes::from_static(b"\0\x02\0\0\0\x01a")).is_err());
    }

    #[test]
    fn error_fields_without_terminators_still_parse() {
        let e = parse_error_fields(b"SERROR\0C42704\0Mslot \"s\" does not exist");
        assert_eq!((e.code.as_str(), e.message.as_str()), ("42704", "slot \"s\" does not exist"));
        let _ = parse_error_fields(b"\0\0M");
        // Framing and every decoder on garbage: no panic.
        fuzz(b"d\0\0\0\x05wR\0\0\0\x08\0\0\0\x05D\0\0\0\x06\xff\xffd\0\0\0\x01");
    }
}
