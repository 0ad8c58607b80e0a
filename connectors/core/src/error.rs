//! Errors, sorted by what the pipeline should do about them.
//!
//! A *transient* error (a dropped connection, a server restart, a failover) is
//! retried with backoff; a *definite* error (bad configuration, a missing
//! privilege, a purged log) stops riffle with a message that names the
//! setting, what was expected, what was found and the fix.

use std::fmt;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Retry with backoff: the same request may succeed later.
    Transient,
    /// Stop and tell the user: retrying cannot help.
    Definite,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Definite => "definite",
        })
    }
}

/// The error a cause is carried as, so `riffle`'s messages can print the
/// whole chain (`{:#}`) while the pipeline looks only at the kind.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from a source connector.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    pub kind: ErrorKind,
    pub message: String,
    /// What failed underneath, when the message does not already say it.
    #[source]
    pub cause: Option<Cause>,
}

impl SourceError {
    pub fn transient(message: impl Into<String>) -> Self {
        SourceError { kind: ErrorKind::Transient, message: message.into(), cause: None }
    }

    pub fn definite(message: impl Into<String>) -> Self {
        SourceError { kind: ErrorKind::Definite, message: message.into(), cause: None }
    }

    /// `message`, caused by `cause`.
    pub fn caused(kind: ErrorKind, message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        SourceError { kind, message: message.into(), cause: Some(cause.into()) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// An error from a sink connector.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub kind: ErrorKind,
    pub message: String,
    /// What failed underneath, when the message does not already say it.
    #[source]
    pub cause: Option<Cause>,
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        SinkError { kind: ErrorKind::Transient, message: message.into(), cause: None }
    }

    pub fn definite(message: impl Into<String>) -> Self {
        SinkError { kind: ErrorKind::Definite, message: message.into(), cause: None }
    }

    /// `message`, caused by `cause`.
    pub fn caused(kind: ErrorKind, message: impl Into<String>, cause: impl Into<Cause>) -> Self {
        SinkError { kind, message: message.into(), cause: Some(cause.into()) }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// An I/O error: a full disk or a missing permission will not fix itself,
    /// so it is definite; an interrupted call is transient.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::Interrupted | K::TimedOut | K::WouldBlock => ErrorKind::Transient,
            _ => ErrorKind::Definite,
        };
        let hint = match err.kind() {
            K::StorageFull => "; free some space on that disk or point the sink elsewhere, then run riffle again (nothing was committed past the saved position)",
            K::PermissionDenied => "; give the user running riffle write access to that directory",
            _ => "",
        };
        SinkError { kind, message: format!("{context}: {err}{hint}"), cause: None }
    }
}
