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
                b'R' => {
                    let mut body = msg.body;
                    let code = body.get_i32();
                    match code {
                        0 => {}
                        3 => {
                            let pw = params.password_for_auth()?;
                            frontend::password_message(pw.as_bytes(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                            self.flush().await?;
                        }
                        5 => {
                            let pw = params.password_for_auth()?;
                            let salt = [body[0], body[1], body[2], body[3]];
                            let hash = postgres_protocol::authentication::md5_hash(params.user.as_bytes(), pw.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                            self.flush().await?;
                        }
                        10 => {
                            let mechanisms: Vec<&[u8]> = body.split(|b| *b == 0).filter(|m| !m.is_empty()).collect();
                            if !mechanisms.iter().any(|m| *m == b"SCRAM-SHA-256") {
                                return Err(PgError::SaslMechanisms {
                                    mechanisms: mechanisms.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect(),
                                });
                            }
                            let pw = params.password_for_auth()?;
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut self.write_buf)
                                .map_err(PgError::io("auth"))?;
                            self.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| PgError::Unexpected("postgres sent SASLContinue before SASL".into()))?;
                            s.update(&body).map_err(PgError::Scram)?;
                            frontend::sasl_response(s.message(), &mut self.write_buf).map_err(PgError::io("auth"))?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| PgError::Unexpected("postgres sent SASLFinal before SASL".into()))?;
                            s.finish(&body).map_err(PgError::ScramProof)?;
                        }
                        method => return Err(PgError::AuthMethod { method }),
                    }
                }
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
                b'D' => {
                    let mut body = msg.body;
                    let n = body.get_i16();
                    let mut row = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        let len = body.get_i32();
                        if len < 0 {
                            row.push(None);
                        } else {
                            let v = body.split_to(len as usize);
                            row.push(Some(String::from_utf8_lossy(&v).into_owned()));
                        }
                    }
                    rows.push(row);
                }
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
                    let mut body = msg.body;
                    if body.is_empty() {
                        continue;
                    }
                    match body.get_u8() {
                        b'w' => {
                            let start = Lsn(body.get_u64());
                            let wal_end = Lsn(body.get_u64());
                            let _send_time = body.get_i64();
                            return Ok(Some(ReplicationMessage::XLogData { start, wal_end, data: body }));
                        }
                        b'k' => {
                            let wal_end = Lsn(body.get_u64());
                            let _send_time = body.get_i64();
                            let reply_requested = body.get_u8() == 1;
                            return Ok(Some(ReplicationMessage::Keepalive { wal_end, reply_requested }));
                        }
                        _ => continue,
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
            if self.read_buf.len() >= 5 {
                let len = i32::from_be_bytes([self.read_buf[1], self.read_buf[2], self.read_buf[3], self.read_buf[4]]) as usize;
                if self.read_buf.len() > len {
                    let mut frame = self.read_buf.split_to(len + 1);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(Message { tag, body: frame.freeze() });
                }
                self.read_buf.reserve(len + 1 - self.read_buf.len());
            }
            let n = self.stream.read_buf(&mut self.read_buf).await.map_err(PgError::io("reading from postgres"))?;
            if n == 0 {
                return Err(PgError::ConnectionClosed);
            }
        }
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
