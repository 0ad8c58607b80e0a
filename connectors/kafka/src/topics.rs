//! Topics: naming a table's topic (the prefix, `[[tables]] topic` routes,
//! Kafka's legal characters) and creating missing topics through the admin
//! API, once per topic per sink.

use crate::sink::{kafka_error, KafkaSink};
use crate::KafkaOptions;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::Producer;
use riffle_core::{SinkError, TableId};
use std::time::Duration;

impl KafkaOptions {
    /// The topic a table's events go to.
    pub fn topic_for(&self, table: &TableId, db: &str) -> String {
        let template = self
            .topic_routes
            .iter()
            .find(|(glob, _)| riffle_core::glob_match(glob, &table.to_string()))
            .map(|(_, t)| t.as_str())
            .unwrap_or("{prefix}.{schema}.{table}");
        let name = template
            .replace("{prefix}", &self.topic_prefix)
            .replace("{db}", db)
            .replace("{schema}", &table.schema)
            .replace("{table}", &table.name);
        legal_topic(&name)
    }
}

/// Kafka topic names hold `[a-zA-Z0-9._-]`, at most 249 characters; other
/// characters become `_` (as Debezium does).
pub fn legal_topic(name: &str) -> String {
    let mut s: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    s.truncate(249);
    s
}

impl KafkaSink {
    /// Creates `topic` when it does not exist.
    pub(crate) fn ensure_topic(&mut self, topic: &str) -> Result<(), SinkError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        let brokers = self.opts.brokers.clone();
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .map_err(|e| kafka_error(&format!("reading the metadata of topic {topic}"), &brokers, &e))?;
        let exists = md.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !exists {
            if !self.opts.create_topics {
                return Err(SinkError::definite(format!(
                    "Kafka {brokers}: topic {topic} does not exist and create_topics is false; create it, or let riffle create it"
                )));
            }
            let mut new = NewTopic::new(topic, self.opts.partitions, TopicReplication::Fixed(self.opts.replication_factor));
            for (k, v) in &self.opts.topic_config {
                new = new.set(k, v);
            }
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let results = riffle_core::block_on(self.admin.create_topics([&new], &opts))
                .map_err(|e| kafka_error(&format!("creating topic {topic}"), &brokers, &e))?;
            for r in results {
                match r {
                    Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        let e = KafkaError::AdminOp(code);
                        let fix = match code {
                            RDKafkaErrorCode::TopicAuthorizationFailed | RDKafkaErrorCode::ClusterAuthorizationFailed => {
                                "riffle's principal may not create topics: create the topic yourself (riffle then writes to it), or grant CREATE"
                            }
                            RDKafkaErrorCode::InvalidReplicationFactor | RDKafkaErrorCode::InvalidPartitions => {
                                "set partitions / replication_factor on the sink to values the cluster accepts"
                            }
                            _ => "create the topic yourself, or fix the topic settings of the sink",
                        };
                        return Err(SinkError::definite(format!(
                            "Kafka {brokers}: the broker refused to create topic {name} ({} partition(s), replication factor {}): {e}; {fix}",
                            self.opts.partitions, self.opts.replication_factor
                        )));
                    }
                }
            }
            tracing::info!(topic, partitions = self.opts.partitions, "created Kafka topic");
        }
        self.topics.insert(topic.to_string());
        Ok(())
    }
}
