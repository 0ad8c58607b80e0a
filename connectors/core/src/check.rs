//! Readiness checks: what `riffle check` prints and what a refused start
//! lists. Every connector reports its checks in this one shape, so the
//! command line prints them without knowing which system they came from.

use std::fmt;

/// A setting or privilege that is not what riffle needs. Every one says the
/// setting, what riffle expected, what it found, and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub expected: String,
    pub found: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: expected {}, found {}; fix: {}", self.setting, self.expected, self.found, self.fix)
    }
}

/// One line of `riffle check`: what was checked, and either what was found
/// (passed) or the problem.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub outcome: Result<String, Problem>,
}

impl Check {
    pub fn passed(name: impl Into<String>, found: impl Into<String>) -> Check {
        Check { name: name.into(), outcome: Ok(found.into()) }
    }

    /// A check that could not run (the server did not answer, the
    /// selection is wrong): printed as the error alone.
    pub fn error(name: impl Into<String>, error: &dyn std::error::Error) -> Check {
        let name = name.into();
        let found = crate::error::chain(error);
        Check { outcome: Err(Problem { setting: name.clone(), expected: String::new(), found, fix: String::new() }), name }
    }
}

impl From<Problem> for Check {
    fn from(p: Problem) -> Check {
        Check { name: p.setting.clone(), outcome: Err(p) }
    }
}

/// What `riffle check` reports about one connector: the checks, under a
/// heading that names the connector without its secrets.
#[derive(Debug, Clone)]
pub struct Report {
    /// `source postgres://riffle:***@db/shop`, `sink s3://bucket/prefix`.
    pub heading: String,
    pub checks: Vec<Check>,
}

/// `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_a_human_wrote_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
