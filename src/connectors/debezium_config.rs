//! `--debezium-config FILE`: a Debezium Postgres, MySQL or MariaDB
//! connector's configuration (Kafka Connect's REST JSON `{"name", "config"}`,
//! a flat JSON object, or a `.properties` file) read as a riffle pipeline.
//!
//! What maps (docs/debezium-migration.md has the whole table): the
//! connection (`database.*`), the selection (`table.include.list` and the
//! other include/exclude lists, Debezium's regular expressions turned into
//! riffle's globs when they are simple enough, refused otherwise),
//! `column.exclude.list` / `column.include.list` (per-table column rules),
//! `topic.prefix`, the handling modes, `tombstones.on.delete`,
//! `skipped.operations`, `provide.transaction.metadata` (the Kafka sinks'
//! options), `slot.name` (the pipeline's name, which names riffle's slot
//! and publication), `signal.data.collection` (the signal table),
//! `heartbeat.interval.ms`, `database.server.id`. Settings of Kafka Connect
//! or of Debezium's own bookkeeping (converters, offsets, schema history)
//! have no meaning here and are passed over; every other setting riffle
//! does not support is listed in one error, with what to do.

use crate::config::{RawFile, RawSource, RawTable};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A Debezium connector configuration as riffle reads it.
pub struct Translated {
    /// The pipeline file it amounts to.
    pub file: RawFile,
    /// Options of every Kafka sink (Debezium's names), unless the sink's URL sets them.
    pub kafka: Vec<(String, String)>,
}

/// Reads `path`: `.json` (Connect's `{"name","config"}` or a flat object)
/// or `.properties`.
pub fn load(path: &Path) -> Result<Translated> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading Debezium config {}", path.display()))?;
    let props = if path.extension().is_some_and(|e| e == "json") || text.trim_start().starts_with('{') {
        parse_json(&text).map_err(|e| anyhow!("Debezium config {}: {e}", path.display()))?
    } else {
        parse_properties(&text)
    };
    let props = props
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), interpolate(&v).map_err(|e| anyhow!("{k}: {e}"))?)))
        .collect::<Result<BTreeMap<_, _>>>()
        .map_err(|e| anyhow!("Debezium config {}: {e}", path.display()))?;
    translate(&props).map_err(|e| anyhow!("Debezium config {}: {e}", path.display()))
}

/// `${NAME}` and Kafka Connect's `${env:NAME}` from the environment; other
/// config providers (`${file:…}`) are refused.
fn interpolate(value: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').ok_or_else(|| anyhow!("unterminated ${{"))?;
        let reference = &rest[start + 2..start + end];
        let var = reference.strip_prefix("env:").unwrap_or(reference);
        if var.contains(':') {
            bail!("${{{reference}}}: Kafka Connect config providers other than env do not run in riffle; put the value in an environment variable and write ${{env:NAME}}");
        }
        out.push_str(&std::env::var(var).map_err(|_| anyhow!("environment variable {var} is not set"))?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn parse_json(text: &str) -> Result<BTreeMap<String, String>> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| anyhow!("not JSON: {e}"))?;
    let config = v.get("config").filter(|c| c.is_object()).unwrap_or(&v);
    let object = config.as_object().ok_or_else(|| anyhow!("expected a JSON object of settings (or {{\"name\", \"config\"}})"))?;
    let mut out = BTreeMap::new();
    for (k, v) in object {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => continue,
            other => other.to_string(),
        };
        out.insert(k.clone(), text);
    }
    if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
        out.entry("name".into()).or_insert_with(|| name.to_string());
    }
    Ok(out)
}

/// Java `.properties`: `key=value` or `key: value`, `#`/`!` comments,
/// a trailing `\` continues the line.
fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':']).unwrap_or(entry.len());
        let (k, v) = entry.split_at(split);
        let v = v.get(1..).unwrap_or("");
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    out
}

/// One of Debezium's include/exclude regular expressions as a riffle glob
/// (anchored, as Debezium matches them): `public\.orders_.*` →
/// `public.orders_*`. `None` for what globs cannot say.
pub fn regex_to_glob(re: &str) -> Option<String> {
    let re = re.trim().trim_start_matches('^').trim_end_matches('$');
    let mut out = String::new();
    let mut chars = re.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('.' | '-' | '_' | '$' | '\\') => out.push(c),
                _ => return None,
            },
            '.' if chars.peek() == Some(&'*') => {
                chars.next();
                out.push('*');
            }
            '.' if chars.peek() == Some(&'+') => {
                chars.next();
                out.push_str("?*");
            }
            // An unescaped dot between names is almost always meant as the separator.
            '.' => out.push('.'),
            '[' | ']' | '(' | ')' | '{' | '}' | '|' | '+' | '?' | '*' | '^' | '$' => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Settings of Kafka Connect or of Debezium's bookkeeping: meaningless to riffle.
fn passed_over(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "key.converter",
        "value.converter",
        "header.converter",
        "offset.",
        "schema.history.internal",
        "database.history",
        "errors.",
        "consumer.",
        "producer.",
        "topic.creation.",
        "internal.",
        "transforms.",
        "predicates.",
    ];
    const KEYS: &[&str] = &[
        "name",
        "connector.class",
        "tasks.max",
        "plugin.name",
        "include.schema.changes",
        "max.batch.size",
        "max.queue.size",
        "max.queue.size.in.bytes",
        "poll.interval.ms",
        "snapshot.fetch.size",
        "snapshot.max.threads",
        "snapshot.locking.mode",
        "snapshot.isolation.mode",
        "publication.autocreate.mode",
        "slot.drop.on.stop",
        "status.update.interval.ms",
        "retriable.restart.connector.wait.ms",
        "topic.naming.strategy",
        "signal.enabled.channels",
        "incremental.snapshot.chunk.size",
        "event.processing.failure.handling.mode",
        "inconsistent.schema.handling.mode",
        "gtid.source.includes",
        "connect.timeout.ms",
        "database.allowPublicKeyRetrieval",
        "transforms",
        "predicates",
    ];
    PREFIXES.iter().any(|p| key.starts_with(p)) || KEYS.contains(&key)
}

fn translate(p: &BTreeMap<String, String>) -> Result<Translated> {
    let get = |k: &str| p.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut problems: Vec<String> = Vec::new();
    let class = get("connector.class")
        .ok_or_else(|| anyhow!("connector.class is missing; expected Debezium's Postgres, MySQL or MariaDB connector"))?;
    let (scheme, default_port) = match class.rsplit('.').next().unwrap_or(class) {
        "PostgresConnector" => ("postgres", 5432),
        "MySqlConnector" => ("mysql", 3306),
        "MariaDbConnector" => ("mariadb", 3306),
        other => bail!("connector.class: riffle reads Debezium's PostgresConnector, MySqlConnector and MariaDbConnector, found {other}"),
    };
    let postgres = scheme == "postgres";
    if let Some(t) = get("transforms") {
        problems.push(format!(
            "transforms={t}: Kafka Connect transforms do not run in riffle; its [[tables]] rules (columns, masks, filter, topic) do the common ones"
        ));
    }
    if let Some(plugin) = get("plugin.name").filter(|p| *p != "pgoutput") {
        problems.push(format!("plugin.name={plugin}: riffle reads pgoutput (built into Postgres 10+); remove the setting"));
    }
    match get("snapshot.mode").unwrap_or("initial") {
        "initial" | "when_needed" => {}
        "initial_only" => problems.push("snapshot.mode=initial_only: use `riffle sync` for a snapshot without streaming".into()),
        other => problems.push(format!(
            "snapshot.mode={other}: riffle takes an initial snapshot on a pipeline's first run (initial); \
             `riffle sync` copies without streaming"
        )),
    }
    let host = get("database.hostname").ok_or_else(|| anyhow!("database.hostname is missing"))?;
    let port = get("database.port").unwrap_or(if default_port == 5432 { "5432" } else { "3306" });
    let user = get("database.user").ok_or_else(|| anyhow!("database.user is missing"))?;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20");
    let password = get("database.password").map(|pw| format!(":{}", enc(pw))).unwrap_or_default();
    let include = |k: &str| get(k).map(list).unwrap_or_default();
    let mut tables = Vec::new();
    let mut exclude = Vec::new();
    let glob = |re: &str, field: &str, problems: &mut Vec<String>| -> Option<String> {
        let g = regex_to_glob(re);
        if g.is_none() {
            problems.push(format!(
                "{field}: the regular expression {re:?} has no glob equivalent; list the tables as globs (`schema.table`, `*`, `?`) with --tables"
            ));
        }
        g
    };
    let schema_key = if postgres { "schema" } else { "database" };
    for re in include("table.include.list") {
        tables.extend(glob(&re, "table.include.list", &mut problems));
    }
    if tables.is_empty() {
        for re in include(&format!("{schema_key}.include.list")) {
            tables.extend(glob(&re, &format!("{schema_key}.include.list"), &mut problems).map(|g| format!("{g}.*")));
        }
    }
    for re in include("table.exclude.list") {
        exclude.extend(glob(&re, "table.exclude.list", &mut problems));
    }
    for re in include(&format!("{schema_key}.exclude.list")) {
        exclude.extend(glob(&re, &format!("{schema_key}.exclude.list"), &mut problems).map(|g| format!("{g}.*")));
    }
    let database = if postgres {
        get("database.dbname").ok_or_else(|| anyhow!("database.dbname is missing"))?.to_string()
    } else {
        // MySQL: the database unqualified table names belong to.
        tables
            .first()
            .and_then(|t| t.split_once('.'))
            .map(|(db, _)| db.to_string())
            .filter(|db| !db.contains(['*', '?']))
            .unwrap_or_else(|| "mysql".to_string())
    };
    let mut query: Vec<String> = Vec::new();
    if postgres {
        if let Some(mode) = get("database.sslmode") {
            query.push(format!("sslmode={}", enc(mode)));
        }
        if let Some(ca) = get("database.sslrootcert") {
            query.push(format!("sslrootcert={}", enc(ca)));
        }
    } else {
        if let Some(id) = get("database.server.id") {
            query.push(format!("server_id={}", enc(id)));
        }
        if let Some(mode) = get("database.ssl.mode") {
            query.push(format!("ssl-mode={}", enc(mode)));
        }
    }
    let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    let url = format!("{scheme}://{}{password}@{host}:{port}/{}{query}", enc(user), enc(&database));

    // Column rules, per table pattern.
    let mut rules: BTreeMap<String, RawTable> = BTreeMap::new();
    for (key, include_cols) in [("column.exclude.list", false), ("column.include.list", true)] {
        for re in include(key) {
            let Some(g) = glob(&re, key, &mut problems) else { continue };
            let Some((table, column)) = g.rsplit_once('.') else {
                problems.push(format!("{key}: expected schema.table.column, found {re:?}"));
                continue;
            };
            if column.contains(['*', '?']) {
                problems.push(format!("{key}: {re:?}: riffle's column rules name columns; list them one by one"));
                continue;
            }
            let rule = rules.entry(table.to_string()).or_insert_with(|| RawTable { pattern: table.to_string(), ..RawTable::default() });
            if include_cols {
                rule.columns.get_or_insert_with(Vec::new).push(column.to_string());
            } else {
                rule.exclude_columns.push(column.to_string());
            }
        }
    }

    let mut kafka = Vec::new();
    // Kafka Connect's converter: JSON (with or without schemas), or Avro
    // through a schema registry, both in Debezium's form.
    for side in ["value", "key"] {
        let class = get(&format!("{side}.converter")).or(get(&format!("{side}.converter.class")));
        match class {
            Some(c) if c.ends_with("AvroConverter") => match get(&format!("{side}.converter.schema.registry.url")) {
                Some(url) if side == "value" => kafka.push(("schema_registry".to_string(), url.to_string())),
                Some(_) => {}
                None => problems.push(format!("{side}.converter={c}: the Avro converter needs {side}.converter.schema.registry.url")),
            },
            Some(c) if !c.ends_with("JsonConverter") => problems.push(format!(
                "{side}.converter={c}: riffle writes Debezium's messages with Kafka Connect's JsonConverter or Confluent's AvroConverter"
            )),
            _ => {}
        }
    }
    if let Some(v) = get("value.converter.schemas.enable").filter(|_| !kafka.iter().any(|(k, _)| k == "schema_registry")) {
        kafka.push(("schemas.enable".to_string(), v.to_string()));
    }
    // Settings riffle passes over elsewhere, but not with these values: they change what is captured or how.
    for (key, allowed, why) in [
        (
            "snapshot.locking.mode",
            &["minimal", "minimal_percona", "extended"][..],
            "riffle takes no table lock on MariaDB and a brief global read lock on MySQL to position its snapshot; it cannot go without",
        ),
        ("publication.autocreate.mode", &["all_tables", "filtered"][..], "riffle creates and alters its publication for its selection"),
        ("gtid.source.includes", &[][..], "riffle captures the changes of every GTID source"),
        ("gtid.source.excludes", &[][..], "riffle captures the changes of every GTID source"),
    ] {
        if let Some(v) = get(key).filter(|v| !allowed.contains(v)) {
            problems.push(format!("{key}={v}: {why}"));
        }
    }
    let prefix = get("topic.prefix").or(get("database.server.name"));
    if let Some(prefix) = prefix {
        kafka.push(("topic.prefix".to_string(), prefix.to_string()));
    }
    for key in [
        "decimal.handling.mode",
        "time.precision.mode",
        "binary.handling.mode",
        "interval.handling.mode",
        "bigint.unsigned.handling.mode",
        "tombstones.on.delete",
        "skipped.operations",
        "provide.transaction.metadata",
    ] {
        if let Some(v) = get(key) {
            kafka.push((key.to_string(), v.to_string()));
        }
    }
    // riffle names its slot and publication after the pipeline.
    let slot = get("slot.name").filter(|_| postgres);
    if let (Some(slot), Some(publication)) = (slot, get("publication.name")) {
        if slot != publication {
            problems.push(format!(
                "publication.name={publication}: riffle names its publication after its slot ({slot}); remove the setting or make them equal"
            ));
        }
    }
    let name = slot.map(str::to_string).or_else(|| prefix.map(|p| p.replace(['.', '-'], "_")));
    let heartbeat = match get("heartbeat.interval.ms").map(|ms| ms.parse::<u64>()) {
        Some(Ok(ms)) => Some(format!("{ms}ms")),
        Some(Err(_)) => {
            problems.push("heartbeat.interval.ms: expected milliseconds".into());
            None
        }
        None => None,
    };

    let handled = |k: &str| {
        matches!(
            k,
            "database.hostname"
                | "database.port"
                | "database.user"
                | "database.password"
                | "database.dbname"
                | "database.sslmode"
                | "database.sslrootcert"
                | "database.server.id"
                | "database.ssl.mode"
                | "database.server.name"
                | "table.include.list"
                | "table.exclude.list"
                | "schema.include.list"
                | "schema.exclude.list"
                | "database.include.list"
                | "database.exclude.list"
                | "column.exclude.list"
                | "column.include.list"
                | "topic.prefix"
                | "slot.name"
                | "publication.name"
                | "snapshot.mode"
                | "heartbeat.interval.ms"
                | "signal.data.collection"
                | "gtid.source.excludes"
                | "value.converter.schema.registry.url"
                | "key.converter.schema.registry.url"
        ) || kafka.iter().any(|(key, _)| key == k)
    };
    for k in p.keys().filter(|k| !handled(k) && !passed_over(k)) {
        problems.push(format!("{k}: not supported by riffle"));
    }
    if !problems.is_empty() {
        bail!(
            "{} setting(s) riffle cannot take (docs/debezium-migration.md says what maps):\n  - {}",
            problems.len(),
            problems.join("\n  - ")
        );
    }
    if tables.is_empty() {
        bail!("table.include.list (or {schema_key}.include.list) is missing: riffle captures the tables it is given; list them");
    }
    let file = RawFile {
        name,
        source: Some(RawSource {
            url: Some(url),
            tables,
            exclude,
            signal_table: get("signal.data.collection").map(|s| {
                // Debezium names it `db.schema.table` for Postgres.
                let parts: Vec<&str> = s.split('.').collect();
                if postgres && parts.len() == 3 {
                    format!("{}.{}", parts[1], parts[2])
                } else {
                    s.to_string()
                }
            }),
        }),
        heartbeat_interval: heartbeat,
        tables: rules.into_values().collect(),
        ..RawFile::default()
    };
    Ok(Translated { file, kafka })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debeziums_regular_expressions_become_globs_or_are_refused() {
        assert_eq!(regex_to_glob(r"public\.orders").as_deref(), Some("public.orders"));
        assert_eq!(regex_to_glob(r"public\.order_.*").as_deref(), Some("public.order_*"));
        assert_eq!(regex_to_glob("inventory.customers").as_deref(), Some("inventory.customers"));
        assert_eq!(regex_to_glob("^shop.*$").as_deref(), Some("shop*"));
        assert_eq!(regex_to_glob(r"public\.(a|b)"), None);
        assert_eq!(regex_to_glob(r"public\.t[0-9]"), None);
    }

    #[test]
    fn a_postgres_connector_becomes_a_pipeline_and_unsupported_settings_are_listed() {
        let json = r#"{"name": "inventory", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "db", "database.port": "5433", "database.user": "dbz", "database.password": "p@ss word",
            "database.dbname": "shop", "topic.prefix": "shop", "table.include.list": "public\\.orders,public\\.items_.*",
            "column.exclude.list": "public\\.orders\\.card", "decimal.handling.mode": "string", "slot.name": "riffle_shop",
            "key.converter": "org.apache.kafka.connect.json.JsonConverter", "signal.data.collection": "shop.public.signals",
            "heartbeat.interval.ms": 10000}}"#;
        let t = translate(&parse_json(json).unwrap()).unwrap();
        let source = t.file.source.as_ref().unwrap();
        assert_eq!(source.url.as_deref(), Some("postgres://dbz:p%40ss%20word@db:5433/shop"));
        assert_eq!(source.tables, ["public.orders", "public.items_*"]);
        assert_eq!(source.signal_table.as_deref(), Some("public.signals"));
        assert_eq!(t.file.name.as_deref(), Some("riffle_shop"));
        assert_eq!(t.file.heartbeat_interval.as_deref(), Some("10000ms"));
        assert_eq!(
            (t.file.tables[0].pattern.as_str(), &t.file.tables[0].exclude_columns[..]),
            ("public.orders", &["card".to_string()][..])
        );
        assert_eq!(t.kafka, [("topic.prefix".into(), "shop".into()), ("decimal.handling.mode".into(), "string".into())]);

        let avro = r#"{"connector.class": "io.debezium.connector.mysql.MySqlConnector", "database.hostname": "::1",
            "database.user": "u", "table.include.list": "inv\\..*", "value.converter": "io.confluent.connect.avro.AvroConverter",
            "value.converter.schema.registry.url": "http://registry:8081", "snapshot.locking.mode": "none"}"#;
        let Err(err) = translate(&parse_json(avro).unwrap()) else { panic!("snapshot.locking.mode=none was taken") };
        assert!(err.to_string().contains("snapshot.locking.mode=none"), "{err}");
        let t = translate(&parse_json(&avro.replace(r#", "snapshot.locking.mode": "none""#, "")).unwrap()).unwrap();
        assert_eq!(t.file.source.unwrap().url.as_deref(), Some("mysql://u@[::1]:3306/inv"));
        assert_eq!(t.kafka, [("schema_registry".to_string(), "http://registry:8081".to_string())]);

        let props = "connector.class=io.debezium.connector.mysql.MySqlConnector\ndatabase.hostname=h\ndatabase.user=u\n\
                     table.include.list=inventory.(a|b)\ntransforms=unwrap\nsnapshot.mode=no_data\nmessage.key.columns=x\n";
        let Err(err) = translate(&parse_properties(props)) else { panic!("a config riffle cannot take was taken") };
        let err = err.to_string();
        for expected in
            ["4 setting(s)", "table.include.list", "transforms=unwrap", "snapshot.mode=no_data", "message.key.columns: not supported"]
        {
            assert!(err.contains(expected), "{expected}: {err}");
        }
    }

    #[test]
    fn properties_files_take_comments_separators_and_continuations() {
        let p = parse_properties("# c\n! c\na=1\nb : 2\nc=x,\\\n  y\n\n");
        assert_eq!(p.get("a").map(String::as_str), Some("1"));
        assert_eq!(p.get("b").map(String::as_str), Some("2"));
        assert_eq!(p.get("c").map(String::as_str), Some("x,y"));
    }
}
