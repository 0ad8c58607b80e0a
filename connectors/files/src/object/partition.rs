//! Hive-style time partitions (`dt=YYYY-MM-DD/[hour=HH/]`) of change files,
//! computed from the commit time in UTC without a date library.

/// Hive-style time partitions of change files, from the commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    None,
    /// `dt=YYYY-MM-DD/`
    Day,
    /// `dt=YYYY-MM-DD/hour=HH/`
    Hour,
}

impl Partitioning {
    pub fn parse(s: &str) -> Option<Partitioning> {
        match s {
            "none" => Some(Partitioning::None),
            "day" | "dt" => Some(Partitioning::Day),
            "hour" => Some(Partitioning::Hour),
            _ => None,
        }
    }

    /// The partition's number: days or hours since the epoch (`i64::MIN`
    /// for no partition), compared per event instead of its folder name.
    pub(super) fn bucket(self, ts_ms: i64) -> i64 {
        match self {
            Partitioning::None => i64::MIN,
            Partitioning::Day => ts_ms.div_euclid(86_400_000),
            Partitioning::Hour => ts_ms.div_euclid(3_600_000),
        }
    }

    pub(super) fn dir(self, ts_ms: i64) -> String {
        if self == Partitioning::None {
            return String::new();
        }
        let days = ts_ms.div_euclid(86_400_000);
        let (y, m, d) = riffle_formats::temporal::civil_from_days(days);
        let hour = ts_ms.rem_euclid(86_400_000) / 3_600_000;
        match self {
            Partitioning::Day => format!("dt={y:04}-{m:02}-{d:02}/"),
            _ => format!("dt={y:04}-{m:02}-{d:02}/hour={hour:02}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_follow_the_commit_time_in_utc() {
        assert_eq!(Partitioning::Hour.dir(0), "dt=1970-01-01/hour=00/");
        assert_eq!(Partitioning::Day.dir(1_700_000_000_000), "dt=2023-11-14/");
        assert_eq!(Partitioning::Hour.dir(1_700_000_000_000), "dt=2023-11-14/hour=22/");
        assert_eq!(Partitioning::Hour.dir(-1), "dt=1969-12-31/hour=23/");
        assert_eq!(Partitioning::None.dir(1_700_000_000_000), "");
    }
}
