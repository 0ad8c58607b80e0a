//! Where objects live: [`Target`] (a store and the prefix riffle writes
//! under), built from a sink URL by [`open_target`] for the clouds'
//! object stores, local directories and HDFS; the few reads and writes
//! riffle makes outside the sink's uploads; and the mapping of store errors
//! to definite or transient failures with a hint at the fix.

use object_store::path::Path as ObjPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use riffle_core::{block_on, SinkError};
use std::sync::Arc;

/// A store URL as given (`gcs://…?endpoint=…`): the URL without its query,
/// with the scheme aliases spelled as object_store knows them, and the
/// query's options.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let base = base.replacen("gcs://", "gs://", 1).replacen("azure://", "az://", 1);
    (base, riffle_core::url::query_pairs(query))
}

/// An object store and the prefix riffle writes under, from a sink URL.
#[derive(Clone)]
pub struct Target {
    pub store: Arc<dyn ObjectStore>,
    pub root: ObjPath,
    /// The URL without credentials or options, for messages.
    pub shown: String,
    /// The directory, when the store is the local disk.
    pub local: Option<std::path::PathBuf>,
}

pub(super) fn object_error(what: &str, shown: &str, e: object_store::Error) -> SinkError {
    use object_store::Error as E;
    let text = e.to_string();
    match e {
        E::NotFound { .. } => SinkError::definite(format!(
            "{shown}: {what}: not found ({text}); the bucket or container must exist: create it, or fix the URL"
        )),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            let creds = ["SignatureDoesNotMatch", "InvalidAccessKeyId", "AuthenticationFailed", "InvalidAuthenticationInfo", "AccessKeyId"]
                .iter()
                .any(|w| text.contains(w));
            SinkError::definite(if creds {
                format!("{shown}: {what}: the store refused the credentials ({text}); check the access key and secret (AWS_*/AZURE_* variables or the sink's options)")
            } else {
                format!("{shown}: {what}: permission denied ({text}); riffle's identity needs write, list and delete access under the sink's prefix")
            })
        }
        E::UnknownConfigurationKey { .. } | E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } => {
            SinkError::definite(format!("{shown}: {what}: {text}"))
        }
        _ => SinkError::transient(format!("{shown}: {what}: {text}")),
    }
}

/// Builds the store for `url` (`s3://bucket/prefix`, `az://container/prefix`,
/// `abfss://container@account.dfs.core.windows.net/prefix`, `gs://bucket/prefix`,
/// `file:///dir`). Credentials come the way each cloud's tools read them
/// (`AWS_*`, `AZURE_*`, `GOOGLE_*` environment variables) and from
/// `options`, object_store's configuration keys (`endpoint`, `region`,
/// `access_key_id`, `account_name`, `use_emulator`, `allow_http`, …).
pub fn open_target(url: &str, options: &[(String, String)]) -> Result<Target, SinkError> {
    use object_store::{aws, azure, gcp, ObjectStoreScheme};
    use std::str::FromStr;
    let parsed = url::Url::parse(url).map_err(|e| SinkError::definite(format!("{url:?} is not a URL ({e})")))?;
    if matches!(parsed.scheme(), "hdfs" | "viewfs") {
        return open_hdfs(&parsed, options);
    }
    let (scheme, path) = ObjectStoreScheme::parse(&parsed).map_err(|e| SinkError::definite(format!("{url:?}: {e}")))?;
    let shown = format!("{}://{}{}", parsed.scheme(), parsed.host_str().unwrap_or(""), parsed.path());
    let allow_http = |v: &str| v.starts_with("http://");
    let bad_key = |k: &str, e: object_store::Error| SinkError::definite(format!("{shown}: option {k:?}: {e}"));
    let retry = object_store::RetryConfig { max_retries: 8, retry_timeout: std::time::Duration::from_secs(60), ..Default::default() };
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::Local => {
            std::fs::create_dir_all(parsed.path()).map_err(|e| SinkError::io(format!("{shown}: creating {}", parsed.path()), e))?;
            let fs = object_store::local::LocalFileSystem::new_with_prefix(parsed.path())
                .map_err(|e| SinkError::definite(format!("{shown}: {e}")))?
                .with_fsync(true);
            return Ok(Target {
                store: Arc::new(fs),
                root: ObjPath::default(),
                shown: format!("file://{}", parsed.path()),
                local: Some(parsed.path().into()),
            });
        }
        ObjectStoreScheme::AmazonS3 => {
            let mut b = aws::AmazonS3Builder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                if k == "allow_http" {
                    b = b.with_allow_http(v == "true");
                    continue;
                }
                let key = aws::AmazonS3ConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                if matches!(key, aws::AmazonS3ConfigKey::Endpoint) && allow_http(v) {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, v);
            }
            if std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).is_ok_and(|v| allow_http(&v)) {
                b = b.with_allow_http(true);
            }
            Arc::new(b.build().map_err(|e| SinkError::definite(format!("{shown}: {e}")))?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut b = azure::MicrosoftAzureBuilder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                if k == "allow_http" {
                    b = b.with_allow_http(v == "true");
                    continue;
                }
                let key = azure::AzureConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                if matches!(key, azure::AzureConfigKey::Endpoint) && allow_http(v) {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| SinkError::definite(format!("{shown}: {e}")))?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut b = gcp::GoogleCloudStorageBuilder::from_env().with_url(url).with_retry(retry);
            for (k, v) in options {
                let key = gcp::GoogleConfigKey::from_str(k).map_err(|e| bad_key(k, e))?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(|e| SinkError::definite(format!("{shown}: {e}")))?)
        }
        _ => return Err(SinkError::definite(format!("{shown}: expected s3://, az://, abfss://, gs:// or file://"))),
    };
    Ok(Target { store, root: path, shown, local: None })
}

/// HDFS through the pure-Rust client: `hdfs://namenode:port/path`, or a
/// name service (`hdfs://ns/path`, HA from the Hadoop configuration in
/// `HADOOP_CONF_DIR`); Kerberos as the client supports it (a ticket in the
/// credential cache). `options` are Hadoop configuration keys.
fn open_hdfs(parsed: &url::Url, options: &[(String, String)]) -> Result<Target, SinkError> {
    let host = parsed.host_str().ok_or_else(|| SinkError::definite(format!("{parsed}: expected hdfs://NAMENODE[:PORT]/path")))?;
    let authority = match parsed.port() {
        Some(p) => format!("{}://{host}:{p}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    let shown = format!("{authority}{}", parsed.path());
    let store = hdfs_native_object_store::HdfsObjectStoreBuilder::new()
        .with_url(authority)
        .with_config(options.iter().cloned())
        .build()
        .map_err(|e| SinkError::definite(format!("{shown}: {e}")))?;
    let root = ObjPath::parse(parsed.path().trim_matches('/')).map_err(|e| SinkError::definite(format!("{shown}: {e}")))?;
    Ok(Target { store: Arc::new(store), root, shown, local: None })
}

impl Target {
    pub(super) fn key(&self, rel: &str) -> ObjPath {
        let mut s = self.root.to_string();
        if !s.is_empty() {
            s.push('/');
        }
        s.push_str(rel);
        ObjPath::from(s)
    }

    /// The object at `rel` under the root, if there is one.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, SinkError> {
        Ok(block_on(self.get_versioned(rel))?.map(|(bytes, _)| bytes))
    }

    /// The object at `rel` and its version (for [`Target::put_if`]).
    pub async fn get_versioned(&self, rel: &str) -> Result<Option<(Vec<u8>, UpdateVersion)>, SinkError> {
        let key = self.key(rel);
        match self.store.get_opts(&key, GetOptions::default()).await {
            Ok(r) => {
                let version = UpdateVersion { e_tag: r.meta.e_tag.clone(), version: r.meta.version.clone() };
                let bytes = r.bytes().await.map_err(|e| object_error(&format!("reading {key}"), &self.shown, e))?;
                Ok(Some((bytes.to_vec(), version)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error(&format!("reading {key}"), &self.shown, e)),
        }
    }

    /// Writes `rel` only if it is still at version `expect` (absent, for
    /// `None`): the new version, or `Ok(None)` when another process wrote
    /// it first. A retried request whose first try landed counts as written
    /// (the object then holds exactly `bytes`), so write bytes no other
    /// write repeats. A store without conditional writes is a definite
    /// error that says so.
    pub async fn put_if(&self, rel: &str, bytes: Vec<u8>, expect: Option<UpdateVersion>) -> Result<Option<UpdateVersion>, SinkError> {
        let key = self.key(rel);
        let mode = match expect {
            None => PutMode::Create,
            Some(v) => PutMode::Update(v),
        };
        let opts = PutOptions { mode, ..Default::default() };
        match self.store.put_opts(&key, PutPayload::from(bytes.clone()), opts).await {
            Ok(r) => Ok(Some(UpdateVersion { e_tag: r.e_tag, version: r.version })),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                match self.get_versioned(rel).await? {
                    Some((found, v)) if found == bytes => Ok(Some(v)),
                    _ => Ok(None),
                }
            }
            Err(e @ (object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. })) => {
                Err(SinkError::definite(format!(
                    "{}: writing {key}: this store cannot write conditionally ({e}), which riffle needs to keep a second process out; \
                 keep riffle's state on local disk, or use a store that honours If-Match/If-None-Match",
                    self.shown
                )))
            }
            Err(e) => Err(object_error(&format!("writing {key}"), &self.shown, e)),
        }
    }

    /// Does the store write conditionally? Local directories have locks
    /// instead, HDFS has neither.
    pub fn conditional(&self) -> bool {
        self.local.is_none() && !self.shown.starts_with("hdfs://") && !self.shown.starts_with("viewfs://")
    }

    /// Writes `rel` under the root (whole, or not at all).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), SinkError> {
        let key = self.key(rel);
        block_on(self.store.put(&key, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| object_error(&format!("writing {key}"), &self.shown, e))
    }

    /// Deletes `rel` under the root; a missing object is no error.
    pub fn delete(&self, rel: &str) -> Result<(), SinkError> {
        let key = self.key(rel);
        match block_on(self.store.delete(&key)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(&format!("deleting {key}"), &self.shown, e)),
        }
    }

    /// Every object under the folder `rel` (recursively), as paths relative
    /// to the root.
    pub fn list_under(&self, rel: &str) -> Result<Vec<String>, SinkError> {
        use futures_util::TryStreamExt;
        let prefix = self.key(rel);
        let root = self.root.to_string();
        block_on(async {
            let listed: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| object_error(&format!("listing {prefix}"), &self.shown, e))?;
            Ok(listed
                .into_iter()
                .map(|m| {
                    let full = m.location.to_string();
                    full.strip_prefix(&root).map_or(full.clone(), |r| r.trim_start_matches('/').to_string())
                })
                .collect())
        })
    }

    /// How long ago `rel` was last written, by the store's clock against
    /// this machine's; `None` when there is no such object.
    pub fn age(&self, rel: &str) -> Result<Option<std::time::Duration>, SinkError> {
        let key = self.key(rel);
        match block_on(self.store.head(&key)) {
            Ok(meta) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
                Ok(Some(std::time::Duration::from_millis(now.saturating_sub(meta.last_modified.timestamp_millis()).max(0) as u64)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error(&format!("reading {key}"), &self.shown, e)),
        }
    }

    /// The names of the objects directly under the root.
    pub fn list_names(&self) -> Result<Vec<String>, SinkError> {
        let root = self.root.clone();
        block_on(async {
            let listed = self.store.list_with_delimiter(Some(&root)).await.map_err(|e| object_error("listing", &self.shown, e))?;
            Ok(listed.objects.into_iter().filter_map(|m| m.location.filename().map(str::to_string)).collect())
        })
    }

    /// Writes, reads back the size of, and deletes a probe object: the
    /// bucket exists and riffle may write and delete there.
    pub fn probe(&self) -> Result<String, SinkError> {
        let key = self.key(&format!("_riffle/probe-{}", std::process::id()));
        block_on(async {
            self.store
                .put(&key, PutPayload::from_static(b"riffle"))
                .await
                .map_err(|e| object_error("writing a probe object", &self.shown, e))?;
            self.store.delete(&key).await.map_err(|e| object_error("deleting the probe object", &self.shown, e))?;
            Ok::<_, SinkError>(())
        })?;
        Ok("writable".into())
    }
}
