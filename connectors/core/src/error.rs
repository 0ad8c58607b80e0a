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

/// What an error says: a message (with what failed underneath, when the
/// message does not already say it), or a connector's own typed error shown
/// as itself, its source chain included.
#[derive(Debug)]
enum Body {
    Message { message: String, cause: Option<Cause> },
    Typed(Cause),
}

impl Body {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Body::Message { cause, .. } => cause.as_deref().map(|c| c as &(dyn std::error::Error + 'static)),
            Body::Typed(e) => e.source(),
        }
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Message { message, .. } => f.write_str(message),
            Body::Typed(e) => e.fmt(f),
        }
    }
}

/// `SourceError` and `SinkError`: the same shape, told apart by type so a
/// function says which side it reports for.
macro_rules! classified_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            kind: ErrorKind,
            body: Body,
        }

        impl $name {
            pub fn transient(message: impl Into<String>) -> Self {
                $name { kind: ErrorKind::Transient, body: Body::Message { message: message.into(), cause: None } }
            }

            pub fn definite(message: impl Into<String>) -> Self {
                $name { kind: ErrorKind::Definite, body: Body::Message { message: message.into(), cause: None } }
            }

            /// `message`, caused by `cause` (printed after it in `{:#}`).
            pub fn caused(kind: ErrorKind, message: impl Into<String>, cause: impl Into<Cause>) -> Self {
                $name { kind, body: Body::Message { message: message.into(), cause: Some(cause.into()) } }
            }

            /// A connector's own typed error, of the kind it says it is.
            pub fn typed(kind: ErrorKind, error: impl Into<Cause>) -> Self {
                $name { kind, body: Body::Typed(error.into()) }
            }

            pub fn kind(&self) -> ErrorKind {
                self.kind
            }

            /// The whole message, causes included: `a: b: c`.
            pub fn chain(&self) -> String {
                chain(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.body.fmt(f)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.body.source()
            }
        }
    };
}

classified_error!(
    /// An error from a source connector.
    SourceError
);

classified_error!(
    /// An error from a sink connector.
    SinkError
);

/// An error and its causes on one line, `a: b: c`, for the places that
/// print one error (a `riffle check` line, a log field).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(c) = next {
        out.push_str(": ");
        out.push_str(&c.to_string());
        next = c.source();
    }
    out
}

impl SinkError {
    /// An I/O error: a full disk or a missing permission will not fix itself,
    /// so it is definite; an interrupted call is transient.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::Interrupted | K::TimedOut | K::WouldBlock => ErrorKind::Transient,
            _ => ErrorKind::Definite,
        };
        let hint = io_hint(&err);
        SinkError { kind, body: Body::Message { message: format!("{context}: {err}{hint}"), cause: None } }
    }
}

/// The fix for a local disk's error, to follow its message (empty when
/// there is nothing to say).
pub fn io_hint(err: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match err.kind() {
        K::StorageFull => "; free some space on that disk or point the sink elsewhere, then run riffle again (nothing was committed past the saved position)",
        K::PermissionDenied => "; give the user running riffle write access to that directory",
        // EIO, from a write or an fsync: the kernel may have dropped the
        // pages it could not write, so nothing of this run is trusted.
        _ if err.raw_os_error() == Some(5) => {
            "; the disk failed to write (check the device: dmesg, SMART), then run riffle again: it writes again everything after the last saved position"
        }
        _ => "",
    }
}
