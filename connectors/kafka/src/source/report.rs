//! What the Kafka source tells `riffle check` and `riffle status`: the
//! brokers reachable, the topics `?topics=` selects, the schema registry
//! answering (when one is set), and each pipeline's lag
//! per partition (end offset minus its saved next offset).

use super::{end_offsets, selected_partitions, split_key, KafkaSourceOptions};
use riffle_core::{Check, Offset, Problem, Report, SavedPipeline, SourceError, SourceSpec, StatusReport};
use std::collections::BTreeMap;

/// Every check of `riffle check` for a Kafka source.
pub async fn check(spec: &SourceSpec) -> Result<Report, SourceError> {
    let opts = KafkaSourceOptions::from_url(&spec.url, &spec.name)?;
    let heading = format!("source kafka://{}", opts.brokers);
    tokio::task::spawn_blocking(move || {
        let mut report = Report { heading, checks: Vec::new() };
        let consumer = match opts.consumer() {
            Ok(c) => c,
            Err(e) => {
                report.checks.push(Check::error("brokers", &e));
                return report;
            }
        };
        match selected_partitions(&consumer, &opts) {
            Err(e) => report.checks.push(Check::error("brokers", &e)),
            Ok(parts) => {
                report.checks.push(Check::passed("brokers", format!("{} answered", opts.brokers)));
                let mut topics: BTreeMap<&str, usize> = BTreeMap::new();
                for (t, _) in &parts {
                    *topics.entry(t).or_default() += 1;
                }
                if topics.is_empty() {
                    report.checks.push(Check::from(Problem {
                        setting: "topics".into(),
                        expected: format!("topics matching {}", opts.topics.join(",")),
                        found: "none".into(),
                        fix: "check ?topics= (globs, e.g. shop.inventory.*), or start the pipeline that writes them first".into(),
                    }));
                }
                for (t, n) in topics {
                    report.checks.push(Check::passed(format!("topic {t}"), format!("{n} partition(s)")));
                }
            }
        }
        if let Some(url) = &opts.schema_registry {
            let answered = crate::registry::Registry::new(url).and_then(|r| r.ping().map(|()| r.describe()));
            report.checks.push(match answered {
                Ok(at) => Check::passed("schema registry", format!("{at} answered")),
                Err(e) => Check::from(Problem {
                    setting: "schema_registry".into(),
                    expected: "a schema registry that answers GET /subjects (Avro messages' schemas are read there)".into(),
                    found: riffle_core::error::chain(&e),
                    fix: "check ?schema_registry= (its URL and credentials) and that the registry runs".into(),
                }),
            });
        }
        report
    })
    .await
    .map_err(|e| SourceError::transient(format!("riffle check: {e}")))
}

/// For each pipeline: the messages after its saved offsets, per partition.
pub async fn status(url: &str, pipelines: &[SavedPipeline]) -> Result<Vec<StatusReport>, SourceError> {
    let opts = KafkaSourceOptions::from_url(url, "status")?;
    let pipelines = pipelines.to_vec();
    tokio::task::spawn_blocking(move || {
        let consumer = opts.consumer()?;
        let mut out = Vec::new();
        for p in &pipelines {
            let Some(Offset::Kafka { next, .. }) = &p.offset else {
                out.push(StatusReport { key: "kafka", json: serde_json::Value::Null, lines: Vec::new() });
                continue;
            };
            let ends = end_offsets(&consumer, &opts, &next.keys().cloned().collect::<Vec<_>>())?;
            let mut lag = serde_json::Map::new();
            let mut total = 0i64;
            for (k, n) in next {
                let behind = ends.get(k).map_or(0, |end| (end - n).max(0));
                total += behind;
                lag.insert(k.clone(), serde_json::json!(behind));
            }
            let partitions = next.keys().filter(|k| split_key(k).is_some()).count();
            out.push(StatusReport {
                key: "kafka",
                json: serde_json::json!({ "lag_messages": total, "partitions": lag }),
                lines: vec![("kafka", format!("{total} message(s) behind over {partitions} partition(s)"))],
            });
        }
        Ok(out)
    })
    .await
    .map_err(|e| SourceError::transient(format!("riffle status: {e}")))?
}
