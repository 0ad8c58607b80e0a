//! `riffle check`, and the sink checks `sync` and `replicate` run before
//! reading anything from the source.

use crate::cli::CheckArgs;
use crate::config::{Config, SinkTarget};
use anyhow::{bail, Result};
use riffle_postgres::checks::{human_bytes, Check, Problem};
use riffle_postgres::{catalog, checks, object_name};
use std::io::IsTerminal;
use std::path::Path;

/// Checks one sink: a directory must be creatable, writable (a probe file
/// is written, synced and removed) and have room for at least one file.
fn sink_check(target: &SinkTarget, max_file_bytes: u64) -> Check {
    let dir = match target {
        SinkTarget::Dir(dir) => dir,
        SinkTarget::Stdout => return Check { name: "sink stdout".into(), outcome: Ok("standard output".into()) },
        SinkTarget::Kafka(opts) => return kafka_check(opts),
        SinkTarget::Object(opts) => return object_check(opts),
    };
    let name = format!("sink {}", dir.display());
    let problem = |expected: &str, found: String, fix: String| Problem { setting: name.clone(), expected: expected.into(), found, fix };
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check {
            name: name.clone(),
            outcome: Err(problem(
                "a directory riffle can create",
                e.to_string(),
                format!("create it, or give riffle's user write access to its parent: {}", parent(dir)),
            )),
        };
    }
    let probe = dir.join(format!(".riffle-probe-{}", std::process::id()));
    let written =
        std::fs::write(&probe, b"riffle").and_then(|_| std::fs::File::open(&probe)?.sync_all()).and_then(|_| std::fs::remove_file(&probe));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&probe);
        return Check {
            name: name.clone(),
            outcome: Err(problem("writable", e.to_string(), format!("give riffle's user write access: chown/chmod {}", dir.display()))),
        };
    }
    let needed = max_file_bytes.clamp(16 << 20, 1 << 30);
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < needed {
                Check {
                    name: name.clone(),
                    outcome: Err(problem(
                        &format!("at least {} free", human_bytes(needed)),
                        format!("{} free", human_bytes(free)),
                        "free some space on that disk, or point the sink at another one".into(),
                    )),
                }
            } else {
                Check { name, outcome: Ok(format!("writable, {} free", human_bytes(free))) }
            }
        }
        Err(_) => Check { name, outcome: Ok("writable".into()) },
    }
}

/// A Kafka sink: the brokers answer with these settings (and the schema
/// registry, for Avro).
fn kafka_check(opts: &riffle_kafka::KafkaOptions) -> Check {
    let name = format!("sink kafka://{}", opts.brokers);
    let outcome =
        riffle_kafka::KafkaSink::open(opts.clone()).map_err(|e| e.message).and_then(|s| s.ping(std::time::Duration::from_secs(10)));
    Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| Problem {
            setting: name,
            expected: "a Kafka cluster that answers (and the schema registry, for Avro)".into(),
            found,
            fix: "check the broker addresses, that the brokers are up, and the kafka.* TLS/SASL settings of the sink".into(),
        }),
    }
}

/// An object-store sink: a probe object can be written and deleted under
/// the prefix (the bucket exists, the credentials are accepted, riffle may write).
fn object_check(opts: &crate::config::ObjectOptions) -> Check {
    let name = format!("sink {}", opts.url.split_once('?').map_or(opts.url.as_str(), |(u, _)| u));
    let outcome = riffle_files::object::open_target(&opts.url, &opts.store).and_then(|t| t.probe().map_err(|e| e.message));
    Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| Problem {
            setting: name,
            expected: "a bucket or container riffle can write to, list and delete from".into(),
            found,
            fix: "create the bucket, and check the credentials (AWS_*/AZURE_*/GOOGLE_* variables or the sink's options) \
                  and their permissions on the prefix"
                .into(),
        }),
    }
}

fn parent(dir: &Path) -> String {
    dir.parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into())
}

/// Fails, listing every problem, when a sink is not ready.
pub fn require_sinks_ready(cfg: &Config) -> Result<()> {
    let failures: Vec<String> = cfg
        .sinks
        .iter()
        .map(|s| sink_check(&s.target, cfg.roll.max_bytes))
        .filter_map(|c| c.outcome.err())
        .map(|p| format!("  - {p}"))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("a sink is not ready (nothing was read from the source):\n{}", failures.join("\n"))
    }
}

fn print(check: &Check, color: bool) -> bool {
    let (ok, fail) = if color { ("\x1b[32mok  \x1b[0m", "\x1b[31mFAIL\x1b[0m") } else { ("ok  ", "FAIL") };
    match &check.outcome {
        Ok(found) => {
            println!("  {ok}  {}: {found}", check.name);
            true
        }
        Err(p) => {
            println!("  {fail}  {}: expected {}, found {}", p.setting, p.expected, p.found);
            println!("        fix: {}", p.fix);
            false
        }
    }
}

/// Runs every check and prints one line each; `Ok(true)` when all pass.
pub async fn run(args: &CheckArgs) -> Result<bool> {
    let cfg = crate::config::build(crate::config::Overrides {
        args: &args.pipeline,
        no_metadata: false,
        state: args.state.as_ref(),
        commit_interval: None,
        max_retries: None,
    })?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal();
    let mut all_ok = true;
    let source = crate::source::AnySource::new(&cfg)?;
    let params = match &source {
        crate::source::AnySource::Postgres(s) => s.params().clone(),
        crate::source::AnySource::Mysql(s) => {
            all_ok &= mysql_checks(&cfg, s.params(), color).await?;
            return finish(&cfg, all_ok, color);
        }
    };
    println!("source {}", params.redacted());
    let connected = match params.connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            println!("  {}  connection: {e}", if color { "\x1b[31mFAIL\x1b[0m" } else { "FAIL" });
            all_ok = false;
            None
        }
    };
    if let Some(client) = connected {
        print(&Check { name: "connection".into(), outcome: Ok(format!("as {}", params.user)) }, color);
        // Server and role checks run even when the selection is wrong.
        let tables = match catalog::resolve_tables(&client, &cfg.tables, &cfg.exclude).await {
            Ok(t) => t,
            Err(e) => {
                println!("  {}  tables: {e}", if color { "\x1b[31mFAIL\x1b[0m" } else { "FAIL" });
                all_ok = false;
                Vec::new()
            }
        };
        let slot = object_name(&cfg.name);
        for c in checks::full_check(&client, &params, &tables, &slot, cfg.full_before_images).await? {
            all_ok &= print(&c, color);
        }
        let store = crate::state::StateStore::new(&cfg.state_dir)?;
        if store.load(&cfg.name)?.is_some_and(|s| s.offset.is_some()) && catalog::slot_info(&client, &slot).await?.is_none() {
            all_ok &= print(
                &Check {
                    name: "saved position".into(),
                    outcome: Err(Problem {
                        setting: format!("slot {slot}"),
                        expected: format!("to exist: a position is saved in {}", store.describe()),
                        found: "no such slot (the changes since the saved position are gone)".into(),
                        fix: format!("take a new snapshot: remove {}", store.location(&cfg.name)),
                    }),
                },
                color,
            );
        }
    }
    finish(&cfg, all_ok, color)
}

/// The sink checks and the verdict.
fn finish(cfg: &Config, mut all_ok: bool, color: bool) -> Result<bool> {
    for s in &cfg.sinks {
        println!("sink {}", s.name);
        all_ok &= print(&sink_check(&s.target, cfg.roll.max_bytes), color);
    }
    println!("{}", if all_ok { "all checks passed" } else { "some checks failed; fix them and run riffle check again" });
    Ok(all_ok)
}

async fn mysql_checks(cfg: &Config, params: &riffle_mysql::connect::ConnectParams, color: bool) -> Result<bool> {
    let fail = if color { "\x1b[31mFAIL\x1b[0m" } else { "FAIL" };
    println!("source {}", params.redacted());
    let mut conn = match params.connect().await {
        Ok(c) => c,
        Err(e) => {
            println!("  {fail}  connection: {e}");
            return Ok(false);
        }
    };
    let mut all_ok = print(&Check { name: "connection".into(), outcome: Ok(format!("as {}", params.user)) }, color);
    match riffle_mysql::catalog::resolve_tables(&mut conn, &params.database, &cfg.tables, &cfg.exclude).await {
        Ok(tables) => {
            for t in tables {
                let key = if t.has_primary_key { "primary key" } else { "no primary key (events carry no key)" };
                print(&Check { name: format!("table {}", t.id), outcome: Ok(format!("{key}, ~{} rows", t.estimated_rows)) }, color);
            }
        }
        Err(e) => {
            println!("  {fail}  tables: {e}");
            all_ok = false;
        }
    }
    let problems = riffle_mysql::checks::replication_problems(&mut conn, params).await?;
    for p in &problems {
        all_ok &= print(
            &Check {
                name: p.setting.clone(),
                outcome: Err(Problem {
                    setting: p.setting.clone(),
                    expected: p.expected.clone(),
                    found: p.found.clone(),
                    fix: p.fix.clone(),
                }),
            },
            color,
        );
    }
    if problems.is_empty() {
        print(
            &Check {
                name: "binlog".into(),
                outcome: Ok("log_bin ON, binlog_format ROW, binlog_row_image FULL, privileges granted".into()),
            },
            color,
        );
    }
    Ok(all_ok)
}
