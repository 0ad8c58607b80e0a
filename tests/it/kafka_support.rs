//! Kafka helpers: reading topics back with an rdkafka consumer, a private
//! broker a test may stop and restart, and a small Schema Registry.
//!
//! **The Schema Registry here is a stand-in written for these tests** (no
//! registry server can run on this machine): it implements the documented
//! REST endpoints riffle uses (`POST /subjects/{subject}/versions`,
//! `GET /subjects`, `GET /schemas/ids/{id}`) and enforces BACKWARD
//! compatibility with the `apache-avro` crate's schema-compatibility check,
//! the registry's default rule.

#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::TopicPartitionList;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub fn brokers() -> String {
    crate::support::test_env("RIFFLE_TEST_KAFKA_BROKERS")
}

/// A name unique to this run, so topics of earlier runs on the same broker
/// never mix in.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}_{}_{}", std::process::id(), nanos % 100_000)
}

/// One message as read back.
#[derive(Debug, Clone)]
pub struct Msg {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    pub partition: i32,
}

impl Msg {
    pub fn key_json(&self) -> serde_json::Value {
        self.key.as_ref().map(|k| serde_json::from_slice(k).unwrap()).unwrap_or(serde_json::Value::Null)
    }
    pub fn value_json(&self) -> serde_json::Value {
        self.value.as_ref().map(|v| serde_json::from_slice(v).unwrap()).unwrap_or(serde_json::Value::Null)
    }
}

/// Every message of `topic` (all partitions, from the beginning) until
/// `want` are read or `secs` pass. Partitions are read in order.
pub fn read_topic(brokers: &str, topic: &str, want: usize, secs: u64) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("it"))
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let partitions = loop {
        match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            Ok(md) => {
                let n = md.topics().iter().find(|t| t.name() == topic && t.error().is_none()).map_or(0, |t| t.partitions().len());
                if n > 0 {
                    break n as i32;
                }
            }
            Err(_) if Instant::now() < deadline => {}
            Err(e) => panic!("metadata of {topic}: {e}"),
        }
        if Instant::now() >= deadline {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect()
                    })
                    .unwrap_or_default();
                out.push(Msg {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    partition: m.partition(),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// A broker of the test's own, on its own port, that it may stop and start.
pub struct PrivateBroker {
    pub port: u16,
    /// The port clients are told to connect to (a proxy's), if not `port`.
    advertised: Option<u16>,
    /// Kept in the test S3 bucket under this cluster id (else in memory).
    cluster: Option<String>,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start(port: u16) -> PrivateBroker {
        let mut b = PrivateBroker { port, advertised: None, cluster: None, child: None };
        b.restart();
        b
    }

    /// A broker that keeps its topics in the test S3 bucket, under a
    /// cluster id of its own: they survive [`PrivateBroker::kill`] and a
    /// restart, as a real broker's do.
    pub fn start_persistent(port: u16) -> PrivateBroker {
        let mut b = PrivateBroker { port, advertised: None, cluster: Some(unique("it_cluster")), child: None };
        b.restart();
        b
    }

    /// A broker that tells its clients to connect to `advertised` (a proxy
    /// in front of it), so every connection goes through there.
    pub fn start_advertising(port: u16, advertised: u16) -> PrivateBroker {
        let mut b = PrivateBroker { port, advertised: Some(advertised), cluster: None, child: None };
        b.restart();
        b
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let bin = crate::support::test_env("RIFFLE_TEST_TANSU_BIN");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let mut cmd = Command::new(bin);
        cmd.args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised]);
        match &self.cluster {
            None => cmd.args(["--storage-engine", "memory://tansu/"]),
            Some(cluster) => {
                let env = crate::support::test_env;
                cmd.args(["--storage-engine", &format!("s3://{}/", env("RIFFLE_TEST_S3_BUCKET")), "--cluster-id", cluster])
                    .env("AWS_ENDPOINT", env("RIFFLE_TEST_S3_ENDPOINT"))
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_DEFAULT_REGION", env("RIFFLE_TEST_S3_REGION"))
                    .env("AWS_ACCESS_KEY_ID", env("RIFFLE_TEST_S3_ACCESS_KEY"))
                    .env("AWS_SECRET_ACCESS_KEY", env("RIFFLE_TEST_S3_SECRET_KEY"))
            }
        };
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {}", self.port);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: the broker is gone at once.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The stand-in Schema Registry's state.
#[derive(Default)]
pub struct RegistryState {
    /// id → schema text.
    pub schemas: Vec<String>,
    /// subject → ids of its versions, oldest first.
    pub subjects: HashMap<String, Vec<u32>>,
    pub refused: Vec<String>,
}

impl RegistryState {
    pub fn schema(&self, id: u32) -> apache_avro::Schema {
        apache_avro::Schema::parse_str(&self.schemas[id as usize - 1]).unwrap()
    }

    fn register(&mut self, subject: &str, text: &str) -> (u16, String) {
        let schema = match apache_avro::Schema::parse_str(text) {
            Ok(s) => s,
            Err(e) => return (422, format!("{{\"error_code\":42201,\"message\":\"invalid schema: {e}\"}}")),
        };
        let versions = self.subjects.entry(subject.to_string()).or_default();
        for &id in versions.iter() {
            if apache_avro::Schema::parse_str(&self.schemas[id as usize - 1]).unwrap().canonical_form() == schema.canonical_form() {
                return (200, format!("{{\"id\":{id}}}"));
            }
        }
        if let Some(&latest) = versions.last() {
            // BACKWARD: the new schema reads data written with the latest.
            // apache-avro 0.21's checker refuses even identical unions of a
            // decimal, so logical types are compared as their underlying types.
            let old = underlying(&self.schemas[latest as usize - 1]);
            if let Err(e) = apache_avro::schema_compatibility::SchemaCompatibility::can_read(&old, &underlying(text)) {
                self.refused.push(subject.to_string());
                return (409, serde_json::json!({"error_code": 409, "message": format!("incompatible: {e}")}).to_string());
            }
        }
        self.schemas.push(text.to_string());
        let id = self.schemas.len() as u32;
        self.subjects.get_mut(subject).unwrap().push(id);
        (200, format!("{{\"id\":{id}}}"))
    }
}

/// The schema with every logical type replaced by its underlying type.
fn underlying(text: &str) -> apache_avro::Schema {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if m.contains_key("logicalType") {
                    *v = m["type"].clone();
                    return;
                }
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    strip(&mut v);
    apache_avro::Schema::parse(&v).unwrap()
}

/// Starts the stand-in registry on a free loopback port; returns its URL.
pub async fn start_registry() -> (String, Arc<Mutex<RegistryState>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let state = Arc::new(Mutex::new(RegistryState::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let state = shared.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).await.unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap();
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let (status, reply) = {
                        let mut st = state.lock().unwrap();
                        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
                        match (method.as_str(), segs.as_slice()) {
                            ("POST", ["subjects", subject, "versions"]) => {
                                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                                st.register(subject, v["schema"].as_str().unwrap())
                            }
                            ("GET", ["subjects"]) => (200, serde_json::to_string(&st.subjects.keys().collect::<Vec<_>>()).unwrap()),
                            ("GET", ["schemas", "ids", id]) => {
                                let id: usize = id.parse().unwrap();
                                (200, serde_json::json!({"schema": st.schemas[id - 1]}).to_string())
                            }
                            _ => (404, "{\"error_code\":404,\"message\":\"not found\"}".to_string()),
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\n\r\n",
                        reply.len()
                    );
                    if write.write_all(head.as_bytes()).await.is_err() || write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, state)
}

/// Decodes a Confluent wire-format message: magic 0, schema id, datum.
pub fn decode_confluent(bytes: &[u8], registry: &Mutex<RegistryState>) -> (u32, apache_avro::types::Value) {
    assert_eq!(bytes[0], 0, "magic byte");
    let id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    let schema = registry.lock().unwrap().schema(id);
    let value = apache_avro::from_avro_datum(&schema, &mut &bytes[5..], None).unwrap();
    (id, value)
}

/// A record's field.
pub fn field(rec: &apache_avro::types::Value, name: &str) -> apache_avro::types::Value {
    let apache_avro::types::Value::Record(fields) = rec else { panic!("not a record: {rec:?}") };
    fields.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no field {name} in {rec:?}")).1.clone()
}

/// The value inside a `["null", T]` union (None for null).
pub fn unwrap_union(v: apache_avro::types::Value) -> Option<apache_avro::types::Value> {
    match v {
        apache_avro::types::Value::Union(0, _) => None,
        apache_avro::types::Value::Union(_, inner) => Some(*inner),
        other => Some(other),
    }
}
