//! `riffle slots`: list and drop riffle's replication slots and
//! publications. A slot nobody reads holds WAL on the server forever.

use crate::cli::SlotsAction;
use crate::connectors::pg_slots;
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(action: &SlotsAction) -> Result<()> {
    match action {
        SlotsAction::List { source } => {
            let rows = pg_slots::list(source).await?;
            if rows.is_empty() {
                out!("no logical pgoutput slots");
            }
            for r in rows {
                out!(
                    "{}  database={}  {}  confirmed={}  retains={}{}",
                    r.name,
                    r.database,
                    if r.active { "active" } else { "inactive" },
                    r.confirmed,
                    r.retains,
                    if r.riffle { "  (riffle: has a publication of the same name)" } else { "" }
                );
            }
            Ok(())
        }
        SlotsAction::Drop { source, name, yes } => {
            let found = pg_slots::find(source, name).await?;
            if found.slot.is_none() && !found.publication {
                bail!("no slot or publication named {name:?} in this database; `riffle slots list --source …` shows them");
            }
            if found.slot == Some(true) {
                bail!("slot {name:?} is in use; stop the riffle reading it first");
            }
            if !yes {
                if !std::io::stdin().is_terminal() {
                    bail!("dropping slot {name:?} loses its position for good; pass --yes to confirm in a script");
                }
                eprint!("drop slot and publication {name:?}? the pipeline will need a new snapshot [y/N] ");
                std::io::stderr().flush().ok();
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not dropped");
                }
            }
            pg_slots::drop(source, name, found).await?;
            if found.slot.is_some() {
                out!("dropped slot {name}");
            }
            if found.publication {
                out!("dropped publication {name}");
            }
            Ok(())
        }
    }
}
