//! Object-store helpers: clients for the test S3 (SeaweedFS) and Azure
//! (Azurite) servers, listing and reading back what riffle wrote, and
//! decoding Parquet and Avro files with the `parquet` and `apache-avro`
//! readers.

#![allow(dead_code)]

use crate::support::test_env;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;

/// Tests that stop the S3 gateway take this for writing; the others that
/// use S3 take it for reading, so an outage never hits them.
pub static S3_GATE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub fn s3_bucket() -> String {
    test_env("RIFFLE_TEST_S3_BUCKET")
}

/// The variables riffle reads for S3, as AWS tools do.
pub fn s3_env() -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), test_env("RIFFLE_TEST_S3_ACCESS_KEY")),
        ("AWS_SECRET_ACCESS_KEY".into(), test_env("RIFFLE_TEST_S3_SECRET_KEY")),
        ("AWS_REGION".into(), test_env("RIFFLE_TEST_S3_REGION")),
        ("AWS_ENDPOINT_URL".into(), test_env("RIFFLE_TEST_S3_ENDPOINT")),
    ]
}

/// `s3://bucket/prefix` (credentials and endpoint from [`s3_env`]).
pub fn s3_url(prefix: &str) -> String {
    format!("s3://{}/{prefix}", s3_bucket())
}

pub fn s3_store() -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(s3_bucket())
            .with_endpoint(test_env("RIFFLE_TEST_S3_ENDPOINT"))
            .with_allow_http(true)
            .with_region(test_env("RIFFLE_TEST_S3_REGION"))
            .with_access_key_id(test_env("RIFFLE_TEST_S3_ACCESS_KEY"))
            .with_secret_access_key(test_env("RIFFLE_TEST_S3_SECRET_KEY"))
            .build()
            .unwrap(),
    )
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `az://container/prefix?endpoint=…&account_name=…&access_key=…`: Azure
/// options in the URL's query.
pub fn azure_url(prefix: &str) -> String {
    format!(
        "az://{}/{prefix}?endpoint={}&account_name={}&access_key={}",
        test_env("RIFFLE_TEST_AZURE_CONTAINER"),
        pct(&test_env("RIFFLE_TEST_AZURE_ENDPOINT")),
        test_env("RIFFLE_TEST_AZURE_ACCOUNT"),
        pct(&test_env("RIFFLE_TEST_AZURE_KEY"))
    )
}

pub fn azure_store() -> Arc<dyn ObjectStore> {
    Arc::new(
        object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(test_env("RIFFLE_TEST_AZURE_ACCOUNT"))
            .with_access_key(test_env("RIFFLE_TEST_AZURE_KEY"))
            .with_container_name(test_env("RIFFLE_TEST_AZURE_CONTAINER"))
            .with_endpoint(test_env("RIFFLE_TEST_AZURE_ENDPOINT"))
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

/// Every object under `prefix`, in key order, with its bytes.
pub async fn objects(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<(String, bytes::Bytes)> {
    let p = ObjPath::from(prefix);
    let mut metas: Vec<_> = store.list(Some(&p)).try_collect().await.unwrap();
    metas.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes));
    }
    out
}

/// The data files of `table` under `root` (not riffle's own `_riffle/`), with an extension.
pub async fn data_objects(store: &Arc<dyn ObjectStore>, root: &str, table: &str, ext: &str) -> Vec<(String, bytes::Bytes)> {
    objects(store, &format!("{root}/{table}")).await.into_iter().filter(|(k, _)| k.ends_with(&format!(".{ext}"))).collect()
}

/// Runs `sh -c CMD` (the server script's stop/start commands).
pub fn sh(cmd: &str) {
    let status = std::process::Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(status.success(), "{cmd} failed: {status}");
}

/// The record batches of a Parquet file.
pub fn parquet_batches(bytes: bytes::Bytes) -> Vec<arrow_array::RecordBatch> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
    reader.map(|b| b.unwrap()).collect()
}

/// The records of an Avro container file, and its schema.
pub fn avro_records(bytes: &[u8]) -> (apache_avro::Schema, Vec<apache_avro::types::Value>) {
    let reader = apache_avro::Reader::new(bytes).unwrap();
    let schema = reader.writer_schema().clone();
    (schema, reader.map(|r| r.unwrap()).collect())
}

/// Every event in the final (committed) JSON-lines objects of `table`.
pub async fn committed_events(store: &std::sync::Arc<dyn object_store::ObjectStore>, root: &str, table: &str) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for (key, bytes) in data_objects(store, root, table, "jsonl").await {
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.ends_with('\n'), "{key} is torn");
        events.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{key}: {e}"))));
    }
    events
}
