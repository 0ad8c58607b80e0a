//! Kafka as a source: change events read from topics written by riffle or
//! by Debezium, delivered to any sink with the pipeline's table rules.
//!
//! - **Which topics**: `?topics=GLOB[,GLOB]` (required), matched against
//!   the cluster's topics when the run starts and again every
//!   [`REFRESH`]: a topic or partition created later is read from its
//!   start. riffle assigns itself every partition (no consumer-group
//!   membership, so no rebalance ever moves one away mid-transaction): the
//!   pipeline's lease already makes it the only reader.
//! - **Where it starts**: from the pipeline's saved offset (the next offset
//!   of every partition); on a first run from the group's committed
//!   offsets (`?group=`, default `riffle-<pipeline>`), else from each
//!   partition's start (`?start=earliest`, the default) or end
//!   (`start=latest`). An offset retention already deleted is an error,
//!   never a silent skip.
//! - **Delivery**: every batch ends on a checkpoint holding the next
//!   offset of every partition; offsets are committed to the group only
//!   once the pipeline reports them durable in every sink (`durable`), so
//!   the group's offsets and `kafka-consumer-groups --describe` show what
//!   is safely written. Positions are `(partition, offset)` lanes
//!   ([`riffle_core::KafkaPosition`]): file sinks keep what they committed
//!   per partition and skip replays, so their output holds each message once.
//! - **`--until now`**: the partitions' end offsets when the run starts;
//!   the run ends once every partition is read up to its end.
//! - **Enrichment after a restart**: the pipeline's copy of a reference
//!   table lives in memory. The saved offsets record which tables each
//!   partition carried; a run that resumes reads the partitions that carried
//!   a reference table again, from their start up to the saved offsets, and
//!   hands those events on as [`SourceItem::Reference`] (they rebuild the
//!   copy and go to no sink) before it reads on.
//! - **Values**: [`decode`] (the envelope, Connect schemas, Debezium's and
//!   riffle's value forms).

mod avro;
pub mod decode;
pub mod report;

use crate::sink::kafka_error;
use decode::{Decoded, Decoder};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::TopicPartitionList;
use riffle_core::source::{RunEnd, SourceStats};
use riffle_core::{
    glob_match, kafka_lane, KafkaPosition, Offset, Position, Source, SourceError, SourceItem, SourceSpec, StartMode, TableSchema, Until,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often the cluster's topics are listed again for new matches.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Messages per batch (besides [`riffle_core::source::BATCH_BYTES`]).
const BATCH_MESSAGES: usize = 2000;

/// Where a partition without a saved or committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// The source URL's settings.
#[derive(Clone)]
pub struct KafkaSourceOptions {
    pub brokers: String,
    /// Topic globs.
    pub topics: Vec<String>,
    pub group: String,
    pub start: StartAt,
    /// The schema registry Avro messages' schemas are read from.
    pub schema_registry: Option<String>,
    /// librdkafka settings passed through (`kafka.<name>=…`: security).
    pub properties: Vec<(String, String)>,
}

impl std::fmt::Debug for KafkaSourceOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.properties.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("KafkaSourceOptions")
            .field("brokers", &self.brokers)
            .field("topics", &self.topics)
            .field("group", &self.group)
            .field("start", &self.start)
            .field("schema_registry", &self.schema_registry.as_deref().map(riffle_core::url::redact_url))
            .field("properties", &names)
            .finish()
    }
}

impl KafkaSourceOptions {
    /// Parses `kafka://host:port[,host:port]?topics=GLOB[,GLOB][&group=NAME][&start=earliest|latest][&schema_registry=URL][&kafka.<setting>=…]`.
    pub fn from_url(url: &str, pipeline: &str) -> Result<KafkaSourceOptions, SourceError> {
        let shown = riffle_core::url::redact_url(url);
        let bad = |what: String| SourceError::definite(format!("source {shown}: {what}"));
        let (hosts, query) = crate::options::split_url(url)
            .ok_or_else(|| bad("expected kafka://host:port[,host:port], with a port for every broker".into()))?;
        let mut opts = KafkaSourceOptions {
            brokers: hosts.to_string(),
            topics: Vec::new(),
            group: format!("riffle-{pipeline}"),
            start: StartAt::Earliest,
            schema_registry: None,
            properties: Vec::new(),
        };
        for (k, v) in riffle_core::url::query_pairs(query) {
            match k.as_str() {
                "topics" => opts.topics = v.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect(),
                "group" if !v.is_empty() => opts.group = v,
                "schema_registry" | "schema.registry.url" if !v.is_empty() => opts.schema_registry = Some(v),
                "start" => {
                    opts.start = match v.as_str() {
                        "earliest" => StartAt::Earliest,
                        "latest" => StartAt::Latest,
                        _ => return Err(bad(format!("start: expected earliest or latest, found {v:?}"))),
                    }
                }
                _ => match k.strip_prefix("kafka.") {
                    Some("group.id" | "enable.auto.commit" | "auto.offset.reset" | "enable.auto.offset.store" | "bootstrap.servers") => {
                        return Err(bad(format!("{k}: set by riffle (use ?group= and ?start=)")))
                    }
                    Some(name) => opts.properties.push((name.to_string(), v)),
                    None => {
                        return Err(bad(format!(
                        "unknown Kafka source option {k:?}; expected topics, group, start, schema_registry or kafka.<librdkafka setting>"
                    )))
                    }
                },
            }
        }
        if opts.topics.is_empty() {
            return Err(bad("expected ?topics=GLOB[,GLOB] naming the topics to read (e.g. ?topics=shop.inventory.*)".into()));
        }
        Ok(opts)
    }

    fn topic_selected(&self, topic: &str) -> bool {
        !topic.starts_with("__") && self.topics.iter().any(|g| glob_match(g, topic))
    }

    fn consumer(&self) -> Result<KafkaConsumer, SourceError> {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("client.id", format!("riffle-{}", self.group))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A saved offset that retention deleted is an error, not a skip.
            .set("auto.offset.reset", "error")
            .set("enable.partition.eof", "true")
            .set("socket.timeout.ms", "30000")
            .set("log_level", "4");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c.create_with_context(Quiet).map_err(|e| source_error("connecting", &self.brokers, &e))
    }
}

/// librdkafka's reports, without the end-of-partition notices
/// `enable.partition.eof` asks for (they arrive as errors).
struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::warn!(error = %error, reason, "librdkafka");
        }
    }
}

impl ConsumerContext for Quiet {}

type KafkaConsumer = StreamConsumer<Quiet>;

fn source_error(what: &str, brokers: &str, e: &KafkaError) -> SourceError {
    let sink = kafka_error(what, brokers, e);
    match sink.kind() {
        riffle_core::ErrorKind::Definite => SourceError::definite(sink.to_string()),
        _ => SourceError::transient(sink.to_string()),
    }
}

/// The tables (`schema.table`) each partition carried events of, by
/// `topic/partition` (saved in [`Offset::Kafka`]).
type Seen = BTreeMap<String, BTreeSet<String>>;

/// `topic/partition`, the key of a partition in [`Offset::Kafka`].
fn partition_key(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

fn split_key(key: &str) -> Option<(&str, i32)> {
    let (topic, p) = key.rsplit_once('/')?;
    Some((topic, p.parse().ok()?))
}

/// Reads change events from Kafka topics.
pub struct KafkaSource {
    opts: KafkaSourceOptions,
    tables: Vec<String>,
    exclude: Vec<String>,
    start: StartMode,
    until: Until,
    /// `--until now` as resolved by the first run: the end offsets then.
    ends: Option<BTreeMap<String, i64>>,
    stats: Arc<SourceStats>,
    decoder: Decoder,
    /// The last run's consumer and the pipeline's durable offsets.
    last_run: Option<(Arc<KafkaConsumer>, watch::Receiver<Option<Offset>>)>,
    /// Enrichment reference tables ([`SourceSpec::read_first`]).
    references: Vec<String>,
    /// Reference tables whose events the next run reads again first.
    reload: Vec<String>,
}

/// The group gets the offsets the pipeline made durable last (the end of
/// an `--until now` run, committed after the source returned).
impl Drop for KafkaSource {
    fn drop(&mut self) {
        if let Some((consumer, durable)) = self.last_run.take() {
            if let Some(Offset::Kafka { next, .. }) = durable.borrow().clone() {
                self.commit_group(&consumer, &next, CommitMode::Sync);
            }
        }
    }
}

impl KafkaSource {
    pub fn new(spec: &SourceSpec) -> Result<KafkaSource, SourceError> {
        let opts = KafkaSourceOptions::from_url(&spec.url, &spec.name)?;
        let decoder = match &opts.schema_registry {
            Some(url) => Decoder::with_registry(
                crate::registry::Registry::new(url).map_err(|e| SourceError::definite(format!("source: schema_registry: {e}")))?,
            ),
            None => Decoder::default(),
        };
        Ok(KafkaSource {
            opts,
            tables: spec.tables.clone(),
            exclude: spec.exclude.clone(),
            start: StartMode::Snapshot,
            until: Until::Never,
            ends: None,
            stats: Arc::default(),
            decoder,
            last_run: None,
            references: spec.read_first.clone(),
            reload: Vec::new(),
        })
    }

    pub fn options(&self) -> &KafkaSourceOptions {
        &self.opts
    }

    fn table_selected(&self, table: &riffle_core::TableId) -> bool {
        let name = table.to_string();
        (self.tables.is_empty() || self.tables.iter().any(|g| glob_match(g, &name))) && !self.exclude.iter().any(|g| glob_match(g, &name))
    }
}

/// The partitions of the selected topics, as the cluster lists them now.
fn selected_partitions(consumer: &KafkaConsumer, opts: &KafkaSourceOptions) -> Result<Vec<(String, i32)>, SourceError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).map_err(|e| source_error("listing topics", &opts.brokers, &e))?;
    let mut out = Vec::new();
    for t in metadata.topics() {
        if t.error().is_none() && opts.topic_selected(t.name()) {
            out.extend(t.partitions().iter().map(|p| (t.name().to_string(), p.id())));
        }
    }
    out.sort();
    Ok(out)
}

/// Where each new partition starts: the group's committed offset, else
/// its first or next offset as `start` says.
fn starting_offsets(
    consumer: &KafkaConsumer,
    opts: &KafkaSourceOptions,
    partitions: &[(String, i32)],
    use_group: bool,
    start: StartAt,
) -> Result<BTreeMap<String, i64>, SourceError> {
    let mut out = BTreeMap::new();
    let mut committed = BTreeMap::new();
    if use_group && !partitions.is_empty() {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .map_err(|e| source_error("reading the group's offsets", &opts.brokers, &e))?;
        for e in got.elements() {
            if let rdkafka::Offset::Offset(n) = e.offset() {
                committed.insert(partition_key(e.topic(), e.partition()), n);
            }
        }
    }
    for (t, p) in partitions {
        let key = partition_key(t, *p);
        let at = match committed.get(&key) {
            Some(&n) => n,
            None => {
                let (low, high) = consumer
                    .fetch_watermarks(t, *p, Duration::from_secs(10))
                    .map_err(|e| source_error("reading offsets", &opts.brokers, &e))?;
                match start {
                    StartAt::Earliest => low,
                    StartAt::Latest => high,
                }
            }
        };
        out.insert(key, at);
    }
    Ok(out)
}

fn assignment(next: &BTreeMap<String, i64>, brokers: &str) -> Result<TopicPartitionList, SourceError> {
    let mut tpl = TopicPartitionList::new();
    for (key, &at) in next {
        let (t, p) =
            split_key(key).ok_or_else(|| SourceError::definite(format!("a saved Kafka offset for {key:?}, not topic/partition")))?;
        tpl.add_partition_offset(t, p, rdkafka::Offset::Offset(at)).map_err(|e| source_error("assigning partitions", brokers, &e))?;
    }
    Ok(tpl)
}

impl Source for KafkaSource {
    fn prepare(&mut self, start: StartMode, until: Until) -> Result<(), SourceError> {
        // A changed `--tables` only filters differently: the topics are read
        // on from the same offsets. Tables requested again can only be
        // reference tables whose copy the pipeline lost (a restart).
        self.reload.clear();
        let start = match start {
            StartMode::ResumeChunks { offset: offset @ Offset::Kafka { .. }, progress, .. }
                if progress.tables.iter().all(|t| t.is_done()) =>
            {
                if let Some(t) = progress.requested.iter().find(|t| !self.references.contains(t)) {
                    return Err(SourceError::definite(format!(
                        "{t} was asked to be read again (riffle snapshot), but a Kafka source has no snapshot: its topics hold \
                         what there is. Start a pipeline under another --name to read them from their start"
                    )));
                }
                self.reload = progress.requested;
                StartMode::Resume(offset)
            }
            other => other,
        };
        match &start {
            StartMode::Verify => {
                return Err(SourceError::definite(
                    "riffle verify compares a database with a sink; a Kafka source has no consistent read to compare with \
                     (verify the pipeline that wrote the topics)",
                ))
            }
            StartMode::ResumeSnapshot(_) | StartMode::ResumeChunks { .. } => {
                return Err(SourceError::definite(
                    "this pipeline's saved state is a database snapshot's; a Kafka source cannot resume it: use another --name",
                ))
            }
            StartMode::Resume(o) if !matches!(o, Offset::Kafka { .. }) => {
                return Err(SourceError::definite(format!(
                    "this pipeline's saved position ({o}) is a database's, not Kafka offsets: use another --name for a Kafka source"
                )))
            }
            _ => {}
        }
        if let Until::At(_) = until {
            return Err(SourceError::definite("--until: a Kafka source stops at `now` (the end offsets when it starts)"));
        }
        if until != self.until {
            self.ends = None;
        }
        self.start = start;
        self.until = until;
        Ok(())
    }

    fn stats(&self) -> Arc<SourceStats> {
        self.stats.clone()
    }

    async fn run(
        &mut self,
        out: mpsc::Sender<Vec<SourceItem>>,
        mut durable: watch::Receiver<Option<Offset>>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<RunEnd, SourceError> {
        let opts = self.opts.clone();
        let consumer = Arc::new(opts.consumer()?);
        // Kept past the run: the last durable offsets go to the group when the source is dropped.
        self.last_run = Some((consumer.clone(), durable.clone()));
        let copy = self.start == StartMode::Copy;
        let (saved, mut seen, use_group) = match &self.start {
            StartMode::Resume(Offset::Kafka { next, tables }) => (next.clone(), tables.clone(), false),
            _ => (BTreeMap::new(), Seen::new(), !copy),
        };
        if !self.reload.is_empty() {
            if !self.read_references_again(&saved, &seen, &out, &mut stop).await? {
                return Ok(RunEnd::Stopped);
            }
            self.reload.clear();
        }
        let start = if copy { StartAt::Earliest } else { opts.start };
        // The matching partitions, and where those without a saved offset start.
        let (listed, found) = {
            let (c, o, known) = (consumer.clone(), opts.clone(), saved.keys().cloned().collect::<BTreeSet<_>>());
            tokio::task::spawn_blocking(move || {
                let listed = selected_partitions(&c, &o)?;
                let fresh: Vec<(String, i32)> = listed.iter().filter(|(t, p)| !known.contains(&partition_key(t, *p))).cloned().collect();
                Ok::<_, SourceError>((listed.len(), starting_offsets(&c, &o, &fresh, use_group, start)?))
            })
            .await
            .map_err(join_error)??
        };
        let mut next = saved.clone();
        next.extend(found);
        if listed == 0 && saved.is_empty() {
            tracing::warn!(topics = ?opts.topics, "no topic matches ?topics= yet; riffle looks again every {} s", REFRESH.as_secs());
        }
        // `--until now` (and a sync): each partition's end offset as of the first run.
        let ends = if self.until == Until::Now || copy {
            if self.ends.is_none() {
                let (c, o, parts) = (consumer.clone(), opts.clone(), next.keys().cloned().collect::<Vec<_>>());
                let ends = tokio::task::spawn_blocking(move || end_offsets(&c, &o, &parts)).await.map_err(join_error)??;
                self.ends = Some(ends);
            }
            self.ends.clone()
        } else {
            None
        };
        // The partitions of enrichment reference tables first, up to their
        // end as of now; the others are assigned after them, so the rows
        // joined to them find them.
        let mut held = self.references_first(&consumer, &next, &seen).await?;
        let assigned: BTreeMap<String, i64> = match &held {
            Some(ends) => next.iter().filter(|(k, _)| ends.contains_key(*k)).map(|(k, n)| (k.clone(), *n)).collect(),
            None => next.clone(),
        };
        consumer.assign(&assignment(&assigned, &opts.brokers)?).map_err(|e| source_error("assigning partitions", &opts.brokers, &e))?;
        tracing::info!(partitions = next.len(), group = %opts.group, "reading Kafka");

        // A partition is read to its end once its next offset reached the
        // end offset and the consumer said it is at the partition's end
        // since its last message: some brokers (tansu 0.6) answer a
        // ListOffsets request with the last record batch's base offset + 1,
        // short of the true end, and the fetch's end of partition is what
        // is right there.
        let mut at_end: BTreeSet<String> = BTreeSet::new();
        let reached = |next: &BTreeMap<String, i64>, at_end: &BTreeSet<String>| {
            ends.as_ref().is_some_and(|ends| ends.iter().all(|(k, end)| next.get(k).is_some_and(|n| n >= end) && at_end.contains(k)))
        };
        let mut items: Vec<SourceItem> = Vec::new();
        let (mut bytes, mut unsent) = (0usize, false);
        let mut noted = Noted::default();
        let mut refreshed = Instant::now();
        // The pipeline dropped its durable sender: no more group commits.
        let mut durable_open = true;
        loop {
            if let Some(first) = held.as_ref().filter(|e| e.iter().all(|(k, end)| next[k] >= *end || at_end.contains(k))) {
                let rest: BTreeMap<String, i64> =
                    next.iter().filter(|(k, _)| !first.contains_key(*k)).map(|(k, n)| (k.clone(), *n)).collect();
                let tpl = assignment(&rest, &opts.brokers)?;
                consumer.incremental_assign(&tpl).map_err(|e| source_error("assigning partitions", &opts.brokers, &e))?;
                tracing::info!(partitions = rest.len(), "the reference tables' partitions are read; reading the others");
                held = None;
            }
            if ends.is_some() && reached(&next, &at_end) {
                hand_on(&out, &mut items, &next, &seen).await?;
                // The pipeline commits this last checkpoint once the source
                // returned; the group gets it when the source is dropped.
                return Ok(if copy { RunEnd::SnapshotComplete } else { RunEnd::ReachedUntil });
            }
            let flush = unsent && (items.len() >= BATCH_MESSAGES || bytes >= riffle_core::source::BATCH_BYTES);
            if flush {
                hand_on(&out, &mut items, &next, &seen).await?;
                (bytes, unsent) = (0, false);
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        if unsent {
                            let _ = hand_on(&out, &mut items, &next, &seen).await;
                        }
                        return Ok(RunEnd::Stopped);
                    }
                }
                changed = durable.changed(), if durable_open => {
                    if changed.is_err() {
                        durable_open = false;
                    } else if let Some(Offset::Kafka { next: safe, .. }) = durable.borrow_and_update().clone() {
                        self.commit_group(&consumer, &safe, CommitMode::Async);
                    }
                }
                got = tokio::time::timeout(Duration::from_millis(20), consumer.recv()) => match got {
                    // Quiet: hand on what was read.
                    Err(_) => {
                        if unsent {
                            hand_on(&out, &mut items, &next, &seen).await?;
                            (bytes, unsent) = (0, false);
                        }
                        if refreshed.elapsed() >= REFRESH {
                            refreshed = Instant::now();
                            self.add_new_partitions(&consumer, &mut next).await?;
                            self.update_stats(&consumer, &next).await;
                        }
                    }
                    // At a partition's end (the error names its number, not
                    // its topic: every partition of that number is taken as
                    // at its end; a message from one clears it again).
                    Ok(Err(KafkaError::PartitionEOF(p))) => {
                        at_end.extend(next.keys().filter(|k| split_key(k).is_some_and(|(_, q)| q == p)).cloned());
                    }
                    Ok(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::OffsetOutOfRange) => {
                        return Err(SourceError::definite(format!(
                            "Kafka {}: {e}: the next message riffle has to read was deleted by the topic's retention; those changes \
                             are lost to this pipeline. Start it again under another --name (it reads each partition from its start)",
                            opts.brokers
                        )));
                    }
                    Ok(Err(e)) => return Err(source_error("reading", &opts.brokers, &e)),
                    Ok(Ok(msg)) => {
                        let (key, offset) = (partition_key(msg.topic(), msg.partition()), msg.offset());
                        // A message from before the assignment's offset (a
                        // fetch that was under way) is not this run's.
                        if next.get(&key).is_some_and(|n| offset < *n) {
                            continue;
                        }
                        let decoded = self.decode(&msg)?;
                        bytes += msg.payload().map_or(0, <[u8]>::len);
                        drop(msg);
                        at_end.remove(&key);
                        if let Decoded::Event(ev) = decoded {
                            noted.note(&mut seen, &key, &ev.table);
                            if self.table_selected(&ev.table.id) {
                                items.push(SourceItem::Event(ev));
                            }
                        }
                        next.insert(key, offset + 1);
                        unsent = true;
                    }
                }
            }
        }
    }
}

/// Does partition `key` carry events of one of `tables`? As its events
/// said (`seen`); for a partition not read yet, by its topic's name:
/// `<schema>.<table>` or `….<schema>.<table>`, as riffle and Debezium name
/// topics by default.
fn carries(seen: &Seen, key: &str, tables: &[String]) -> bool {
    match seen.get(key) {
        Some(seen) => seen.iter().any(|t| tables.contains(t)),
        None => split_key(key).is_some_and(|(topic, _)| {
            tables.iter().any(|t| topic == t || topic.strip_suffix(t.as_str()).is_some_and(|head| head.ends_with('.')))
        }),
    }
}

/// Hands on what was read, closed by a checkpoint at `next`.
async fn hand_on(
    out: &mpsc::Sender<Vec<SourceItem>>,
    items: &mut Vec<SourceItem>,
    next: &BTreeMap<String, i64>,
    seen: &Seen,
) -> Result<(), SourceError> {
    items.push(SourceItem::Checkpoint(Offset::Kafka { next: next.clone(), tables: seen.clone() }));
    out.send(std::mem::take(items)).await.map_err(|_| SourceError::transient("the pipeline stopped reading"))
}

/// The partition and table last noted in [`Seen`]: a message of the same
/// table in the same partition as the one before costs no lookup.
#[derive(Default)]
struct Noted(Option<(String, Arc<TableSchema>)>);

impl Noted {
    fn note(&mut self, seen: &mut Seen, key: &str, table: &Arc<TableSchema>) {
        if self.0.as_ref().is_some_and(|(k, t)| k == key && Arc::ptr_eq(t, table)) {
            return;
        }
        let name = table.id.to_string();
        if !seen.get(key).is_some_and(|s| s.contains(&name)) {
            seen.entry(key.to_string()).or_default().insert(name);
        }
        self.0 = Some((key.to_string(), table.clone()));
    }
}

fn join_error(e: tokio::task::JoinError) -> SourceError {
    SourceError::transient(format!("a Kafka metadata request failed: {e}"))
}

/// The end offset of each partition now.
fn end_offsets(consumer: &KafkaConsumer, opts: &KafkaSourceOptions, partitions: &[String]) -> Result<BTreeMap<String, i64>, SourceError> {
    let mut ends = BTreeMap::new();
    for key in partitions {
        let Some((t, p)) = split_key(key) else { continue };
        let (_, high) =
            consumer.fetch_watermarks(t, p, Duration::from_secs(10)).map_err(|e| source_error("reading end offsets", &opts.brokers, &e))?;
        ends.insert(key.clone(), high);
    }
    Ok(ends)
}

impl KafkaSource {
    /// Decodes one message; one riffle cannot read stops the pipeline,
    /// saying where it is.
    fn decode(&mut self, msg: &impl Message) -> Result<Decoded, SourceError> {
        let (topic, partition, offset) = (msg.topic(), msg.partition(), msg.offset());
        let position = Position::Kafka(KafkaPosition { lane: kafka_lane(topic, partition), offset: offset.max(0) as u64 });
        self.decoder.decode(topic, msg.key(), msg.payload(), position).map_err(|why| {
            SourceError::definite(format!(
                "Kafka {}: topic {topic} partition {partition} offset {offset}: {why}. riffle reads change events \
                 written by riffle or Debezium (JSON, optionally with Connect schemas, or Avro through a schema registry): \
                 narrow ?topics= to those topics",
                self.opts.brokers
            ))
        })
    }

    /// The end offsets now of the partitions that carry enrichment
    /// reference tables and have messages left to read, when other
    /// partitions are to wait for them; `None` when none are to wait.
    async fn references_first(
        &self,
        consumer: &Arc<KafkaConsumer>,
        next: &BTreeMap<String, i64>,
        seen: &Seen,
    ) -> Result<Option<BTreeMap<String, i64>>, SourceError> {
        let (first, others): (Vec<String>, Vec<String>) = next.keys().cloned().partition(|k| carries(seen, k, &self.references));
        if first.is_empty() || others.is_empty() {
            return Ok(None);
        }
        let (c, o) = (consumer.clone(), self.opts.clone());
        let ends = tokio::task::spawn_blocking(move || end_offsets(&c, &o, &first)).await.map_err(join_error)??;
        let left: BTreeMap<String, i64> = ends.into_iter().filter(|(k, end)| next[k] < *end).collect();
        if left.is_empty() {
            return Ok(None);
        }
        tracing::info!(partitions = ?left.keys().collect::<Vec<_>>(), "reading the enrichment reference tables' partitions first");
        Ok(Some(left))
    }

    /// Reads again, from their start up to the saved offsets `saved`, the
    /// partitions that carried the tables in `self.reload` ([`carries`]),
    /// one partition at a time (an
    /// end-of-partition names only the partition's number), and hands on
    /// those tables' events as [`SourceItem::Reference`]. Returns false if
    /// asked to stop.
    async fn read_references_again(
        &mut self,
        saved: &BTreeMap<String, i64>,
        seen: &Seen,
        out: &mpsc::Sender<Vec<SourceItem>>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, SourceError> {
        let parts: Vec<(String, i64)> =
            saved.iter().filter(|(k, n)| **n > 0 && carries(seen, k, &self.reload)).map(|(k, n)| (k.clone(), *n)).collect();
        tracing::info!(tables = ?self.reload, partitions = parts.len(), "reading the reference tables' events again for the enrichment copy");
        // Its own consumer: the run's never sees these fetches.
        let consumer = Arc::new(self.opts.consumer()?);
        let mut events = 0u64;
        for (key, saved_next) in parts {
            let Some((topic, partition)) = split_key(&key).map(|(t, p)| (t.to_string(), p)) else { continue };
            let (c, t, brokers) = (consumer.clone(), topic.clone(), self.opts.brokers.clone());
            let (low, _) = tokio::task::spawn_blocking(move || {
                c.fetch_watermarks(&t, partition, Duration::from_secs(10)).map_err(|e| source_error("reading offsets", &brokers, &e))
            })
            .await
            .map_err(join_error)??;
            // Up to the saved offset, or the partition's end if it comes
            // first (its last messages compacted away). Not the end offset
            // the broker lists: tansu 0.6 lists its last batch's base + 1.
            let end = saved_next;
            if low >= end {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            let assigned = tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(low)).and_then(|()| consumer.assign(&tpl));
            assigned.map_err(|e| source_error("assigning partitions", &self.opts.brokers, &e))?;
            let mut items = Vec::new();
            loop {
                let got = tokio::select! {
                    biased;
                    changed = stop.changed() => {
                        if changed.is_err() || *stop.borrow() {
                            return Ok(false);
                        }
                        continue;
                    }
                    got = consumer.recv() => got,
                };
                let msg = match got {
                    Err(KafkaError::PartitionEOF(_)) => break,
                    Err(e) => return Err(source_error("reading a reference table's events again", &self.opts.brokers, &e)),
                    Ok(msg) => msg,
                };
                if msg.topic() != topic || msg.partition() != partition || msg.offset() < low {
                    continue;
                }
                if msg.offset() >= end {
                    break;
                }
                let last = msg.offset() + 1 >= end;
                if let Decoded::Event(ev) = self.decode(&msg)? {
                    if self.reload.contains(&ev.table.id.to_string()) {
                        items.push(SourceItem::Reference(ev));
                        events += 1;
                    }
                }
                if last {
                    break;
                }
                if items.len() >= BATCH_MESSAGES {
                    out.send(std::mem::take(&mut items)).await.map_err(|_| SourceError::transient("the pipeline stopped reading"))?;
                }
            }
            if !items.is_empty() {
                out.send(items).await.map_err(|_| SourceError::transient("the pipeline stopped reading"))?;
            }
        }
        tracing::info!(events, "the enrichment copy is rebuilt; reading on from the saved offsets");
        Ok(true)
    }

    /// Commits `next` to the group: what every sink holds. A failure is
    /// only logged: the pipeline's own state is where a run resumes.
    fn commit_group(&self, consumer: &KafkaConsumer, next: &BTreeMap<String, i64>, mode: CommitMode) {
        let Ok(tpl) = assignment(next, &self.opts.brokers) else { return };
        if let Err(e) = consumer.commit(&tpl, mode) {
            tracing::warn!(group = %self.opts.group, error = %e, "committing offsets to the consumer group failed; they are committed again at the next durable point");
        }
    }

    /// Lag figures: the partitions' end offsets, summed (what
    /// [`Offset::as_number`] counts read).
    async fn update_stats(&self, consumer: &Arc<KafkaConsumer>, next: &BTreeMap<String, i64>) {
        let (c, o, parts) = (consumer.clone(), self.opts.clone(), next.keys().cloned().collect::<Vec<_>>());
        if let Ok(Ok(ends)) = tokio::task::spawn_blocking(move || end_offsets(&c, &o, &parts)).await {
            self.stats.saw(ends.values().map(|&h| h.max(0) as u64).sum());
        }
    }

    /// Topics and partitions created since the run started: assigned from
    /// their start (or the group's offset).
    async fn add_new_partitions(&self, consumer: &Arc<KafkaConsumer>, next: &mut BTreeMap<String, i64>) -> Result<(), SourceError> {
        let (c, o) = (consumer.clone(), self.opts.clone());
        let listed = match tokio::task::spawn_blocking(move || selected_partitions(&c, &o)).await.map_err(join_error)? {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listing topics for new partitions failed; trying again later");
                return Ok(());
            }
        };
        let fresh: Vec<(String, i32)> = listed.into_iter().filter(|(t, p)| !next.contains_key(&partition_key(t, *p))).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let (c, o) = (consumer.clone(), self.opts.clone());
        let found =
            tokio::task::spawn_blocking(move || starting_offsets(&c, &o, &fresh, true, StartAt::Earliest)).await.map_err(join_error)??;
        tracing::info!(partitions = ?found.keys().collect::<Vec<_>>(), "reading new partitions");
        let tpl = assignment(&found, &self.opts.brokers)?;
        consumer.incremental_assign(&tpl).map_err(|e| source_error("assigning new partitions", &self.opts.brokers, &e))?;
        next.extend(found);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_topics_group_and_start() {
        let o = KafkaSourceOptions::from_url("kafka://a:9092,b:9093?topics=shop.*,x&group=g&start=latest&kafka.security.protocol=SSL", "p")
            .unwrap();
        assert_eq!(o.brokers, "a:9092,b:9093");
        assert_eq!(o.topics, vec!["shop.*", "x"]);
        assert_eq!((o.group.as_str(), o.start), ("g", StartAt::Latest));
        assert!(o.topic_selected("shop.orders") && !o.topic_selected("other") && !o.topic_selected("__consumer_offsets"));
        let d = KafkaSourceOptions::from_url("kafka://a:9092?topics=t", "pipe").unwrap();
        assert_eq!((d.group.as_str(), d.start), ("riffle-pipe", StartAt::Earliest));
        let err = |url: &str| KafkaSourceOptions::from_url(url, "p").unwrap_err().to_string();
        assert!(err("kafka://a:9092").contains("expected ?topics=GLOB"), "{}", err("kafka://a:9092"));
        assert!(err("kafka://a?topics=t").contains("with a port for every broker"));
        assert!(err("kafka://a:1?topics=t&start=now").contains("start: expected earliest or latest, found \"now\""));
        assert!(err("kafka://a:1?topics=t&kafka.group.id=x").contains("set by riffle"));
        assert!(err("kafka://a:1?topics=t&bogus=1").contains("unknown Kafka source option \"bogus\""));
        assert_eq!(split_key("a.b/3"), Some(("a.b", 3)));
    }

    #[test]
    fn a_partition_carries_a_table_as_its_events_said_else_by_its_topic_name() {
        let refs = ["shop.products".to_string()];
        let mut seen = Seen::new();
        assert!(carries(&seen, "demo.shop.products/0", &refs));
        assert!(carries(&seen, "shop.products/2", &refs));
        assert!(!carries(&seen, "demo.shop.orders/0", &refs));
        assert!(!carries(&seen, "demo.xshop.products/0", &refs), "a whole name, not a suffix of one");
        seen.insert("renamed/0".into(), BTreeSet::from(["shop.products".to_string()]));
        seen.insert("demo.shop.products/0".into(), BTreeSet::from(["shop.other".to_string()]));
        assert!(carries(&seen, "renamed/0", &refs));
        assert!(!carries(&seen, "demo.shop.products/0", &refs), "the events say otherwise");
    }
}
