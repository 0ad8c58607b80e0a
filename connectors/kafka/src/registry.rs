//! A Confluent Schema Registry client: registers a subject's schema over the
//! REST API and returns its id for the wire format
//! (`0x00`, 4-byte big-endian schema id, Avro datum).
//!
//! `POST /subjects/{subject}/versions` returns the id of an identical schema
//! already registered, or registers a new version when the subject's
//! compatibility rule allows it (HTTP 409 when it does not).

use riffle_core::SinkError;
use std::collections::HashMap;
use std::time::Duration;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// A registry riffle cannot use: a bad URL, or one that does not answer as
/// a registry should. (Registering a schema reports a classified
/// [`SinkError`]: a refused schema is definite, a registry down transient.)
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `shown` is the URL without its password.
    #[error("schema registry URL {shown:?} is not a URL")]
    Url {
        shown: String,
        #[source]
        source: url::ParseError,
    },
    #[error("schema registry URL {shown:?}: expected http:// or https://")]
    Scheme { shown: String },
    #[error("schema registry client")]
    Client(#[source] reqwest::Error),
    #[error("cannot reach the schema registry {at}")]
    Unreachable {
        at: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the schema registry {at} answered GET /subjects with HTTP {status}: {body}")]
    Refused { at: String, status: reqwest::StatusCode, body: String },
}

pub struct Registry {
    base: url::Url,
    client: reqwest::Client,
    /// `user:password` for basic auth, as Confluent's `basic.auth.user.info`.
    auth: Option<(String, String)>,
    ids: HashMap<(String, String), u32>,
}

impl Registry {
    /// `url` may carry `user:password@` for basic auth.
    pub fn new(url: &str) -> Result<Registry, RegistryError> {
        let shown = riffle_core::url::redact_url(url);
        let mut base = url::Url::parse(url).map_err(|source| RegistryError::Url { shown: shown.clone(), source })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(RegistryError::Scheme { shown });
        }
        let auth = (!base.username().is_empty()).then(|| {
            let user = riffle_core::url::percent_decode(base.username());
            let pass = riffle_core::url::percent_decode(base.password().unwrap_or(""));
            (user, pass)
        });
        let _ = base.set_username("");
        let _ = base.set_password(None);
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(RegistryError::Client)?;
        Ok(Registry { base, client, auth, ids: HashMap::new() })
    }

    /// The registry's address without credentials, for messages.
    pub fn describe(&self) -> String {
        self.base.to_string()
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.base.join(path).expect("registry paths are relative");
        let mut req = self.client.request(method, url).header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        req
    }

    /// The id of `schema` under `subject`, registering it when new.
    pub fn register(&mut self, subject: &str, schema: &str) -> Result<u32, SinkError> {
        if let Some(id) = self.ids.get(&(subject.to_string(), schema.to_string())) {
            return Ok(*id);
        }
        let body = serde_json::json!({ "schema": schema }).to_string();
        let path = format!("subjects/{}/versions", encode_segment(subject));
        let req = self.request(reqwest::Method::POST, &path).header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE).body(body);
        let where_ = self.describe();
        let (status, text) = riffle_core::block_on(async move {
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        })
        .map_err(|e| SinkError::transient(format!("schema registry {where_}: registering subject {subject} failed: {e}")))?;
        let id = match status.as_u16() {
            200 => serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["id"].as_u64()).ok_or_else(|| {
                SinkError::definite(format!("schema registry {where_}: expected {{\"id\": N}} for subject {subject}, found {text:?}"))
            })? as u32,
            409 => {
                return Err(SinkError::definite(format!(
                    "schema registry {where_} refused the new schema of subject {subject} as incompatible with its earlier versions \
                     ({text}); the table's change is not allowed by the subject's compatibility level: change the level \
                     (PUT /config/{subject}), or write the table to a new topic with a [[tables]] topic rule"
                )))
            }
            401 | 403 => {
                return Err(SinkError::definite(format!(
                    "schema registry {where_} refused riffle's credentials (HTTP {status}: {text}); \
                     give user:password in schema_registry = \"https://user:password@host/\""
                )))
            }
            422 => {
                return Err(SinkError::definite(format!(
                    "schema registry {where_} says the schema of subject {subject} is invalid: {text}"
                )))
            }
            s if s >= 500 => {
                return Err(SinkError::transient(format!("schema registry {where_}: HTTP {status} for subject {subject}: {text}")))
            }
            _ => return Err(SinkError::definite(format!("schema registry {where_}: HTTP {status} for subject {subject}: {text}"))),
        };
        self.ids.insert((subject.to_string(), schema.to_string()), id);
        Ok(id)
    }

    /// The schema registered under `id` (`GET /schemas/ids/{id}`), as text.
    pub fn schema_by_id(&self, id: u32) -> Result<String, SinkError> {
        let req = self.request(reqwest::Method::GET, &format!("schemas/ids/{id}"));
        let where_ = self.describe();
        let (status, text) = riffle_core::block_on(async move {
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        })
        .map_err(|e| SinkError::transient(format!("schema registry {where_}: reading schema {id} failed: {e}")))?;
        match status.as_u16() {
            200 => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["schema"].as_str().map(str::to_string))
                .ok_or_else(|| SinkError::definite(format!("schema registry {where_}: expected {{\"schema\": …}} for id {id}, found {text:?}"))),
            404 => Err(SinkError::definite(format!(
                "schema registry {where_} has no schema {id}: the message was written with another registry; give that one in ?schema_registry="
            ))),
            s if s >= 500 => Err(SinkError::transient(format!("schema registry {where_}: HTTP {status} for schema {id}: {text}"))),
            _ => Err(SinkError::definite(format!("schema registry {where_}: HTTP {status} for schema {id}: {text}"))),
        }
    }

    /// Reads `GET /subjects`: the registry answers and accepts the credentials.
    pub fn ping(&self) -> Result<(), RegistryError> {
        let req = self.request(reqwest::Method::GET, "subjects");
        let (status, text) = riffle_core::block_on(async move {
            let resp = req.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        })
        .map_err(|source| RegistryError::Unreachable { at: self.describe(), source })?;
        if status.is_success() {
            Ok(())
        } else {
            Err(RegistryError::Refused { at: self.describe(), status, body: text })
        }
    }
}

fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
