//! A file sink as configured: where it writes (a local directory or an
//! object-store prefix) and its options, from the URL's query
//! (`s3://bucket/cdc?region=eu-west-1&partition_by=hour`) or a
//! `[[sinks]]` table's fields.

use crate::object::{split_url, Partitioning};

/// URL schemes of the object stores (besides `file://` and plain paths).
pub const STORE_SCHEMES: [&str; 10] = ["s3", "s3a", "az", "azure", "abfs", "abfss", "gs", "gcs", "hdfs", "viewfs"];

/// An option the sink does not take, or a value it cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{key}: expected {expected}, found {found:?}")]
pub struct OptionError {
    pub key: String,
    pub expected: String,
    pub found: String,
}

/// A file sink's settings.
#[derive(Clone, PartialEq, Eq)]
pub struct FileSinkOptions {
    /// `file:///absolute/dir`, or the store URL without its query.
    pub url: String,
    /// object_store configuration keys (`endpoint`, `region`, …).
    pub store: Vec<(String, String)>,
    /// Hive-style time partitions of change files.
    pub partitioning: Partitioning,
    /// Avro and Parquet compression.
    pub compression: Option<String>,
}

/// Shown with the store options' names only: their values hold keys.
impl std::fmt::Debug for FileSinkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.store.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FileSinkOptions")
            .field("url", &self.url)
            .field("store", &names)
            .field("partitioning", &self.partitioning)
            .field("compression", &self.compression)
            .finish()
    }
}

impl FileSinkOptions {
    /// Does this URL name a file sink? (`file://`, an object store, or a
    /// plain path, which is a local directory.)
    pub fn accepts(url: &str) -> bool {
        match url.split_once("://") {
            Some((scheme, _)) => scheme == "file" || STORE_SCHEMES.contains(&scheme),
            None => !url.is_empty() && url != "-",
        }
    }

    /// From a sink URL: `file:///dir`, a plain path (made absolute), or an
    /// object-store URL with options in its query.
    pub fn from_url(url: &str) -> Result<Self, OptionError> {
        let bad = |expected: &str| OptionError { key: "url".into(), expected: expected.into(), found: url.into() };
        let (base, options) = split_url(url);
        let local = match base.strip_prefix("file://") {
            Some(path) if !path.starts_with('/') => {
                return Err(bad("an absolute file URL: write file:///absolute/path or a plain path"));
            }
            Some(path) => Some(path.to_string()),
            // A plain path is taken whole (it may hold a `?`).
            None if !url.contains("://") => return FileSinkOptions::from_path(url).map_err(|_| bad("a directory path")),
            None => None,
        };
        let mut opts = match local {
            Some(path) => FileSinkOptions::from_path(&path).map_err(|_| bad("a directory path"))?,
            None => FileSinkOptions::local(base),
        };
        for (k, v) in options {
            opts.set(&k, &v)?;
        }
        Ok(opts)
    }

    fn from_path(path: &str) -> std::io::Result<Self> {
        let abs = std::path::absolute(path)?;
        Ok(FileSinkOptions::local(format!("file://{}", abs.display())))
    }

    fn local(url: String) -> Self {
        FileSinkOptions { url, store: Vec::new(), partitioning: Partitioning::None, compression: None }
    }

    /// Where the sink's commit manifest lives, spelled one way: two sinks
    /// with the same root would share (and clobber) it. `a/./b/../c` is
    /// `a/c` here (lexically; the directory itself is opened as given).
    pub fn manifest_root(&self) -> String {
        let Some(dir) = self.local_dir() else { return self.url.trim_end_matches('/').to_string() };
        let mut normal = std::path::PathBuf::new();
        for c in dir.components() {
            match c {
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                std::path::Component::CurDir => {}
                c => normal.push(c),
            }
        }
        format!("file://{}", normal.display())
    }

    /// A directory on this machine rather than an object store.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.url.strip_prefix("file://").map(std::path::Path::new)
    }

    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionError> {
        let err = |expected: &str| OptionError { key: key.into(), expected: expected.into(), found: value.into() };
        match key {
            "partition_by" => self.partitioning = Partitioning::parse(value).ok_or_else(|| err("none, day or hour"))?,
            "compression" => self.compression = Some(value.to_string()),
            _ if self.local_dir().is_some() => {
                return Err(OptionError {
                    key: key.into(),
                    expected: "partition_by or compression (a local directory takes no store options)".into(),
                    found: key.into(),
                })
            }
            // Checked against the store's own keys when it is built.
            _ => self.store.push((key.to_string(), value.to_string())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_become_absolute_file_urls_and_stores_keep_their_options() {
        let o = FileSinkOptions::from_url("/data/./cdc/../out").unwrap();
        assert_eq!(o.manifest_root(), "file:///data/out");
        assert_eq!(FileSinkOptions::from_url("file:///data/out/").unwrap().manifest_root(), "file:///data/out");
        assert!(o.local_dir().is_some_and(|d| d.is_absolute()));
        assert!(FileSinkOptions::from_url("file://relative").is_err());
        let s = FileSinkOptions::from_url("s3://b/p?region=eu-west-1&partition_by=hour&compression=zstd").unwrap();
        assert_eq!((s.url.as_str(), s.partitioning, s.compression.as_deref()), ("s3://b/p", Partitioning::Hour, Some("zstd")));
        assert_eq!(s.store, [("region".to_string(), "eu-west-1".to_string())]);
        let err = FileSinkOptions::from_url("s3://b/p?partition_by=week").unwrap_err();
        assert_eq!(err.to_string(), "partition_by: expected none, day or hour, found \"week\"");
        assert!(FileSinkOptions::from_url("./out").unwrap().set("region", "x").is_err());
        let d = FileSinkOptions::from_url("file:///data/out?partition_by=day").unwrap();
        assert_eq!((d.url.as_str(), d.partitioning), ("file:///data/out", Partitioning::Day));
        assert!(FileSinkOptions::accepts("./out") && FileSinkOptions::accepts("gs://b") && !FileSinkOptions::accepts("kafka://h:1"));
    }
}
