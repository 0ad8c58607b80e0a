//! Connection settings from a `postgres://` URL, and the errors a connection
//! attempt can end in, each with its fix.

use crate::error::PgError;
use crate::replication::client::ServerError;
use crate::tls::SslMode;
use riffle_core::error::Cause;
use std::time::Duration;

/// Where and how to connect, parsed from `postgres://user:pass@host:port/db`.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub connect_timeout: Duration,
    pub sslmode: SslMode,
    pub sslrootcert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ConnectParams {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl ConnectParams {
    /// Parses a `postgres://` or `postgresql://` URL. The password may come
    /// from the URL or from `PGPASSWORD`; `sslmode` and `sslrootcert` as
    /// libpq's (default `prefer`; `PGSSLMODE`, `PGSSLROOTCERT` too).
    pub fn from_url(raw: &str) -> Result<Self, PgError> {
        let bad = |why: &str| PgError::InvalidUrl { url: redact_url(raw), why: why.to_string() };
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(bad(&format!("the scheme is {:?}", url.scheme())));
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("the host is missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let user = percent_decode(url.username());
        let user = if user.is_empty() { std::env::var("PGUSER").unwrap_or_else(|_| "postgres".into()) } else { user };
        let password = url.password().map(percent_decode).or_else(|| std::env::var("PGPASSWORD").ok());
        let dbname = percent_decode(url.path().trim_start_matches('/'));
        if dbname.is_empty() {
            return Err(bad("the database name is missing"));
        }
        let mut connect_timeout = Duration::from_secs(10);
        let parse_mode = |v: &str| {
            SslMode::parse(v)
                .ok_or_else(|| bad(&format!("sslmode={v}: expected disable, allow, prefer, require, verify-ca or verify-full")))
        };
        let mut sslmode = match std::env::var("PGSSLMODE") {
            Ok(v) => parse_mode(&v)?,
            Err(_) => SslMode::Prefer,
        };
        let mut sslrootcert = std::env::var_os("PGSSLROOTCERT").map(std::path::PathBuf::from);
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = parse_mode(&v)?,
                "sslrootcert" => sslrootcert = Some(std::path::PathBuf::from(v.as_ref())),
                "sslcert" | "sslkey" => {
                    return Err(bad(&format!(
                        "{k}: client certificates are not supported yet; authenticate with a password (scram-sha-256)"
                    )))
                }
                "connect_timeout" => {
                    let secs: u64 = v.parse().map_err(|_| bad(&format!("connect_timeout={v} is not a number of seconds")))?;
                    connect_timeout = Duration::from_secs(secs.max(1));
                }
                "application_name" => {}
                other => return Err(bad(&format!("unknown parameter {other:?} (known: sslmode, sslrootcert, connect_timeout)"))),
            }
        }
        Ok(ConnectParams { host, port: url.port().unwrap_or(5432), user, password, dbname, connect_timeout, sslmode, sslrootcert })
    }

    pub fn redacted(&self) -> String {
        format!("postgres://{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    pub(crate) fn password_for_auth(&self) -> Result<&str, PgError> {
        self.password.as_deref().ok_or_else(|| PgError::NoPassword { user: self.user.clone() })
    }

    pub fn tokio_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host).port(self.port).user(&self.user).dbname(&self.dbname);
        c.application_name("riffle").connect_timeout(self.connect_timeout);
        c.options(crate::SESSION_OPTIONS);
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.ssl_mode(match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        c
    }

    /// Opens a regular (non-replication) session for catalog work and the
    /// snapshot.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, PgError> {
        let config = self.tokio_config();
        let client = if self.sslmode == SslMode::Disable {
            let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| classify_pg_error(e, self))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "postgres connection ended");
                }
            });
            client
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
                (*crate::tls::client_config(self.sslmode, self.sslrootcert.as_ref())?).clone(),
            );
            let (client, conn) = config.connect(tls).await.map_err(|e| classify_pg_error(e, self))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "postgres connection ended");
                }
            });
            client
        };
        Ok(client)
    }
}

use riffle_core::url::percent_decode;
pub use riffle_core::url::redact_url;

/// Turns a server's error at connection time into the error with its fix.
pub(crate) fn classify_server_error(e: &ServerError, p: &ConnectParams) -> PgError {
    classify(&e.code, &e.message, p)
}

/// A login the server refused, by SQLSTATE.
fn classify(code: &str, message: &str, p: &ConnectParams) -> PgError {
    let (at, message) = (p.redacted(), message.to_string());
    match code {
        "28P01" => PgError::PasswordRejected { at, user: p.user.clone(), message },
        "28000" if message.contains("no encryption") => PgError::TlsOnlyUser { at, user: p.user.clone(), message },
        "28000" => PgError::LoginRefused { at, message },
        "3D000" => PgError::NoSuchDatabase { at, message },
        "42501" => PgError::NoReplicationPrivilege { at, user: p.user.clone(), message },
        "57P03" | "53300" | "57P01" | "57P02" => PgError::Unavailable { at, code: code.to_string(), message },
        _ => PgError::ConnectRefused { at, code: code.to_string(), message },
    }
}

/// Classifies a tokio-postgres error at connection time: server errors by
/// SQLSTATE, TLS failures as such, the rest (refused, reset, timed out) as
/// [`PgError::Unreachable`].
pub fn classify_pg_error(e: tokio_postgres::Error, p: &ConnectParams) -> PgError {
    if let Some(db) = e.as_db_error() {
        return classify(db.code().code(), db.message(), p);
    }
    let shown = riffle_core::error::chain(&e);
    tls_error(&shown, p, e).unwrap_or_else(|source| PgError::Unreachable { at: p.redacted(), source: crate::error::DriverError(source) })
}

/// TLS failures are definite: retrying does not change a certificate.
/// `shown` is `cause` as text; `Err(cause)` when it is not about TLS.
pub(crate) fn tls_error<E: Into<Cause>>(shown: &str, p: &ConnectParams, cause: E) -> Result<PgError, E> {
    if shown.contains("does not support TLS") || shown.contains("server refused TLS") {
        return Ok(PgError::TlsRefused { at: p.redacted(), mode: p.sslmode });
    }
    if shown.contains("certificate") || shown.contains("Certificate") {
        return Ok(PgError::Certificate { at: p.redacted(), mode: p.sslmode, source: cause.into() });
    }
    Err(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url_and_never_shows_the_password() {
        let p = ConnectParams::from_url("postgres://app:s%40cret@db.example:6543/shop?sslmode=disable").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.user.as_str(), p.dbname.as_str()), ("db.example", 6543, "app", "shop"));
        assert_eq!(p.password.as_deref(), Some("s@cret"));
        assert!(!format!("{p:?}").contains("s@cret"));
        assert!(!redact_url("postgres://app:secret@h/db").contains("secret"));
    }

    #[test]
    fn rejects_urls_with_a_reason() {
        let err = ConnectParams::from_url("postgres://app@host").unwrap_err().to_string();
        assert!(err.contains("database name is missing"), "{err}");
        let err = ConnectParams::from_url("mysql://app@host/db").unwrap_err().to_string();
        assert!(err.contains("scheme"), "{err}");
        let err = ConnectParams::from_url("postgres://app@host/db?sslmode=sometimes").unwrap_err().to_string();
        assert!(err.contains("sslmode=sometimes: expected disable"), "{err}");
        let p = ConnectParams::from_url("postgres://app@host/db?sslmode=verify-full&sslrootcert=/etc/ca.pem").unwrap();
        assert_eq!((p.sslmode, p.sslrootcert.as_deref()), (SslMode::VerifyFull, Some(std::path::Path::new("/etc/ca.pem"))));
    }
}
