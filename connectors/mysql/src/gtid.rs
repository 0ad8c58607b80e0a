//! GTID positions: what a resume hands the server.
//!
//! - MariaDB: the GTID *position*, one `domain-server-seq` per replication
//!   domain (the form of `gtid_binlog_pos` and `@slave_connect_state`).
//! - MySQL: the *executed set*, `uuid:1-5:7-9,uuid2:1-3` (the form of
//!   `gtid_executed`, sent with `COM_BINLOG_DUMP_GTID`).

use std::collections::BTreeMap;

/// A position riffle keeps up to date as transactions commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracker {
    None,
    MariaDb(BTreeMap<u32, (u32, u64)>),
    MySql(BTreeMap<String, Vec<(u64, u64)>>),
}

impl Tracker {
    /// Parses a saved position; `mariadb` picks the form.
    pub fn parse(saved: Option<&str>, mariadb: bool) -> Tracker {
        let Some(text) = saved.filter(|s| !s.trim().is_empty()) else {
            return if mariadb { Tracker::MariaDb(BTreeMap::new()) } else { Tracker::MySql(BTreeMap::new()) };
        };
        if mariadb {
            let mut map = BTreeMap::new();
            for part in text.split(',') {
                let mut f = part.trim().split('-');
                if let (Some(d), Some(s), Some(n)) = (f.next(), f.next(), f.next()) {
                    if let (Ok(d), Ok(s), Ok(n)) = (d.parse(), s.parse(), n.parse()) {
                        map.insert(d, (s, n));
                    }
                }
            }
            Tracker::MariaDb(map)
        } else {
            let mut set: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
            for sid in text.split(',') {
                let mut parts = sid.trim().split(':');
                let Some(uuid) = parts.next().map(|u| u.trim().to_lowercase()) else { continue };
                for interval in parts {
                    let (a, b) = interval.split_once('-').unwrap_or((interval, interval));
                    if let (Ok(a), Ok(b)) = (a.trim().parse(), b.trim().parse()) {
                        set.entry(uuid.clone()).or_default().push((a, b));
                    }
                }
            }
            for intervals in set.values_mut() {
                normalize(intervals);
            }
            Tracker::MySql(set)
        }
    }

    /// Records a committed MariaDB transaction.
    pub fn mariadb(&mut self, domain: u32, server: u32, seq: u64) {
        if let Tracker::MariaDb(map) = self {
            map.insert(domain, (server, seq));
        }
    }

    /// Records a committed MySQL transaction.
    pub fn mysql(&mut self, uuid: &str, gno: u64) {
        if let Tracker::MySql(set) = self {
            let intervals = set.entry(uuid.to_lowercase()).or_default();
            intervals.push((gno, gno));
            normalize(intervals);
        }
    }

    /// The position as the server writes it; `None` when empty.
    pub fn position(&self) -> Option<String> {
        let text = match self {
            Tracker::None => return None,
            Tracker::MariaDb(map) => map.iter().map(|(d, (s, n))| format!("{d}-{s}-{n}")).collect::<Vec<_>>().join(","),
            Tracker::MySql(set) => set
                .iter()
                .map(|(uuid, iv)| {
                    let parts: Vec<String> = iv.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
                    format!("{uuid}:{}", parts.join(":"))
                })
                .collect::<Vec<_>>()
                .join(","),
        };
        (!text.is_empty()).then_some(text)
    }
}

/// Sorts and merges touching or overlapping intervals.
fn normalize(intervals: &mut Vec<(u64, u64)>) {
    intervals.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(intervals.len());
    for &(a, b) in intervals.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    *intervals = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_positions_keep_one_gtid_per_domain() {
        let mut t = Tracker::parse(Some("0-1-10,1-2-5"), true);
        t.mariadb(0, 1, 11);
        t.mariadb(2, 3, 1);
        assert_eq!(t.position().as_deref(), Some("0-1-11,1-2-5,2-3-1"));
        assert_eq!(Tracker::parse(None, true).position(), None);
    }

    #[test]
    fn mysql_sets_merge_intervals() {
        let uuid = "3E11FA47-71CA-11E1-9E33-C80AA9429562";
        let mut t = Tracker::parse(Some(&format!("{uuid}:1-5:7-9")), false);
        t.mysql(uuid, 6);
        t.mysql(uuid, 10);
        t.mysql("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", 1);
        assert_eq!(t.position().as_deref(), Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-10,aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee:1"));
    }
}
