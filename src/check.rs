//! `riffle check`, and the sink checks `sync` and `replicate` run before
//! reading anything from the source.

use crate::cli::CheckArgs;
use crate::config::Config;
use crate::connectors::sinks::sink_check;
use anyhow::{bail, Result};
use riffle_core::{Check, SavedPipeline};
use std::io::IsTerminal;

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
            out!("  {ok}  {}: {found}", check.name);
            true
        }
        Err(p) if p.expected.is_empty() => {
            out!("  {fail}  {}: {}", check.name, p.found);
            false
        }
        Err(p) => {
            out!("  {fail}  {}: expected {}, found {}", p.setting, p.expected, p.found);
            out!("        fix: {}", p.fix);
            false
        }
    }
}

/// Runs every check and prints one line each; `Ok(true)` when all pass.
pub async fn run(args: &CheckArgs) -> Result<bool> {
    let cfg = crate::config::build(crate::config::Overrides::reading(&args.pipeline, args.state.as_ref()))?;
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal();
    let store = crate::state::StateStore::new(&cfg.state_dir)?;
    let saved =
        store.load(&cfg.name)?.map(|s| SavedPipeline { name: s.name.clone(), offset: s.offset, location: store.location(&cfg.name) });
    let report = crate::connectors::check_source(&cfg.source_spec(), saved.as_ref()).await?;
    out!("{}", report.heading);
    let mut all_ok = true;
    for c in &report.checks {
        all_ok &= print(c, color);
    }
    for s in &cfg.sinks {
        out!("sink {}", s.name);
        all_ok &= print(&sink_check(&s.target, cfg.roll.max_bytes), color);
    }
    out!("{}", if all_ok { "all checks passed" } else { "some checks failed; fix them and run riffle check again" });
    Ok(all_ok)
}
