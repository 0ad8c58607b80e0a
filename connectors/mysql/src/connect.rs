//! `mysql://` and `mariadb://` URLs, and connecting (errors and their fixes
//! in [`crate::error`]).

use crate::error::MyError;
use std::time::Duration;

/// Where and how to connect.
#[derive(Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// The default database: a `--tables` pattern without a dot means a
    /// table in it.
    pub database: String,
    /// The replica server id riffle registers with; must be unique among
    /// the server's replicas.
    pub server_id: u32,
    pub connect_timeout: Duration,
    pub ssl_mode: MySslMode,
    /// `ssl-ca`: the CA for the verifying modes.
    pub ssl_ca: Option<std::path::PathBuf>,
}

/// MySQL's `--ssl-mode`, less PREFERRED (the driver cannot fall back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MySslMode {
    Disabled,
    /// TLS, the certificate not checked.
    Required,
    /// As `VerifyCa`, and the certificate names the host.
    VerifyIdentity,
}

impl std::fmt::Debug for ConnectParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl ConnectParams {
    /// Parses `mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?server_id=N]`
    /// (`mariadb://` too); the password may come from `MYSQL_PWD`.
    pub fn from_url(raw: &str, default_server_id: u32) -> Result<Self, MyError> {
        let bad = |why: &str| MyError::Url { url: redact_url(raw), why: why.to_string() };
        let url = url::Url::parse(raw).map_err(|source| MyError::UrlSyntax { url: redact_url(raw), source })?;
        if url.scheme() != "mysql" && url.scheme() != "mariadb" {
            return Err(bad(&format!("the scheme is {:?}", url.scheme())));
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(|| bad("the host is missing"))?.to_string();
        let user = percent_decode(url.username());
        if user.is_empty() {
            return Err(bad("the user is missing"));
        }
        let password = url.password().map(percent_decode).or_else(|| std::env::var("MYSQL_PWD").ok());
        let database = percent_decode(url.path().trim_start_matches('/'));
        if database.is_empty() {
            return Err(bad("the database name is missing"));
        }
        let mut server_id = default_server_id;
        let mut connect_timeout = Duration::from_secs(10);
        let mut ssl_mode = MySslMode::Disabled;
        let mut ssl_ca = None;
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "ssl-mode" | "ssl_mode" | "sslmode" => {
                    ssl_mode = match v.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" | "disable" => MySslMode::Disabled,
                        "required" | "require" => MySslMode::Required,
                        "verify_ca" => {
                            return Err(bad("ssl-mode=verify_ca is not supported: the MySQL driver riffle uses cannot skip only the \
                                            host-name check; use verify_identity with ssl-ca (the certificate must name the host), \
                                            or required"))
                        }
                        "verify_identity" | "verify_full" => MySslMode::VerifyIdentity,
                        "preferred" | "prefer" => {
                            return Err(bad("ssl-mode=preferred is not supported (the driver cannot fall back to plain text): \
                                            use ssl-mode=required, or disabled"))
                        }
                        other => return Err(bad(&format!("ssl-mode={other}: expected disabled, required, verify_ca or verify_identity"))),
                    }
                }
                "ssl-ca" | "ssl_ca" | "sslrootcert" => ssl_ca = Some(std::path::PathBuf::from(v.as_ref())),
                "server_id" => server_id = v.parse().map_err(|_| bad(&format!("server_id={v} is not a number")))?,
                "connect_timeout" => {
                    connect_timeout =
                        Duration::from_secs(v.parse().map_err(|_| bad(&format!("connect_timeout={v} is not a number of seconds")))?)
                }
                other => return Err(bad(&format!("unknown parameter {other:?} (known: server_id, connect_timeout, ssl-mode, ssl-ca)"))),
            }
        }
        if ssl_mode == MySslMode::VerifyIdentity {
            match &ssl_ca {
                Some(p) if !p.is_file() => return Err(bad(&format!("ssl-ca={}: no such file", p.display()))),
                _ => {}
            }
        }
        Ok(ConnectParams { host, port: url.port().unwrap_or(3306), user, password, database, server_id, connect_timeout, ssl_mode, ssl_ca })
    }

    pub fn redacted(&self) -> String {
        format!("mysql://{}@{}:{}/{}", self.user, self.host, self.port, self.database)
    }

    pub fn opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(Some(self.database.clone()))
            .prefer_socket(false)
            .init(vec!["SET NAMES utf8mb4", "SET SESSION time_zone = '+00:00'"])
            .ssl_opts(self.ssl_opts())
            .into()
    }

    fn ssl_opts(&self) -> Option<mysql_async::SslOpts> {
        let roots = || match &self.ssl_ca {
            Some(p) => vec![p.clone().into()],
            None => Vec::new(),
        };
        match self.ssl_mode {
            MySslMode::Disabled => None,
            MySslMode::Required => Some(mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true)),
            // With ssl-ca, only that CA is trusted (not the public web roots
            // too); without it, the public roots are.
            MySslMode::VerifyIdentity => {
                Some(mysql_async::SslOpts::default().with_root_certs(roots()).with_disable_built_in_roots(self.ssl_ca.is_some()))
            }
        }
    }

    pub async fn connect(&self) -> Result<mysql_async::Conn, MyError> {
        let attempt = mysql_async::Conn::new(self.opts());
        match tokio::time::timeout(self.connect_timeout, attempt).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(MyError::connection(self, e)),
            Err(_) => Err(MyError::ConnectTimeout { at: self.redacted(), after: self.connect_timeout }),
        }
    }
}

use riffle_core::url::percent_decode;
pub use riffle_core::url::redact_url;

/// Server errors that mean "try again": too many connections, lock wait
/// timeout, deadlock, server shutting down, connection or query killed,
/// idle connection closed.
pub fn is_transient_code(code: u16) -> bool {
    matches!(code, 1040 | 1053 | 1205 | 1213 | 1317 | 1927 | 3169 | 4031)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_hides_passwords() {
        let p = ConnectParams::from_url("mariadb://riffle:p%40ss@db:3307/shop?server_id=77", 1).unwrap();
        assert_eq!((p.host.as_str(), p.port, p.user.as_str(), p.database.as_str(), p.server_id), ("db", 3307, "riffle", "shop", 77));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert!(!format!("{p:?}").contains("p@ss"));
        assert!(ConnectParams::from_url("mysql://u@h", 1).unwrap_err().to_string().contains("database name is missing"));
        assert!(ConnectParams::from_url("mysql://u@h/db?ssl=1", 1).unwrap_err().to_string().contains("unknown parameter"));
        let p = ConnectParams::from_url("mysql://u@h/db?ssl-mode=REQUIRED", 1).unwrap();
        assert_eq!(p.ssl_mode, MySslMode::Required);
        assert!(ConnectParams::from_url("mysql://u@h/db?ssl-mode=preferred", 1).unwrap_err().to_string().contains("use ssl-mode=required"));
        assert!(ConnectParams::from_url("mysql://u@h/db?ssl-mode=verify_ca", 1).unwrap_err().to_string().contains("use verify_identity"));
    }
}
