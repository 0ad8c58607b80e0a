//! `riffle slots`: list and drop riffle's replication slots and
//! publications. A slot nobody reads holds WAL on the server forever.

use crate::cli::SlotsAction;
use anyhow::{bail, Result};
use riffle_postgres::checks::human_bytes;
use riffle_postgres::connect::ConnectParams;
use riffle_postgres::quote_ident;
use std::io::{BufRead, IsTerminal, Write};

pub async fn run(action: &SlotsAction) -> Result<()> {
    match action {
        SlotsAction::List { source } => {
            let client = ConnectParams::from_url(source)?.connect().await?;
            let rows = client
                .query(
                    "SELECT s.slot_name::text, s.database::text, s.active, s.confirmed_flush_lsn::text, \
                            (pg_current_wal_lsn() - s.restart_lsn)::int8, p.pubname IS NOT NULL \
                     FROM pg_replication_slots s LEFT JOIN pg_publication p ON p.pubname = s.slot_name \
                     WHERE s.slot_type = 'logical' AND s.plugin = 'pgoutput' ORDER BY 1",
                    &[],
                )
                .await?;
            if rows.is_empty() {
                println!("no logical pgoutput slots");
            }
            for r in rows {
                let (name, db, active, confirmed, retained, ours): (String, Option<String>, bool, Option<String>, Option<i64>, bool) =
                    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
                println!(
                    "{name}  database={}  {}  confirmed={}  retains={}{}",
                    db.unwrap_or_default(),
                    if active { "active" } else { "inactive" },
                    confirmed.unwrap_or_else(|| "-".into()),
                    human_bytes(retained.unwrap_or(0).max(0) as u64),
                    if ours { "  (riffle: has a publication of the same name)" } else { "" }
                );
            }
            Ok(())
        }
        SlotsAction::Drop { source, name, yes } => {
            let client = ConnectParams::from_url(source)?.connect().await?;
            let slot = client
                .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[name])
                .await?
                .map(|r| r.get::<_, bool>(0));
            let publication = client.query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[name]).await?.is_some();
            if slot.is_none() && !publication {
                bail!("no slot or publication named {name:?} in this database; `riffle slots list --source …` shows them");
            }
            if slot == Some(true) {
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
            if slot.is_some() {
                client.execute("SELECT pg_drop_replication_slot($1)", &[name]).await?;
                println!("dropped slot {name}");
            }
            if publication {
                client.batch_execute(&format!("DROP PUBLICATION {}", quote_ident(name))).await?;
                println!("dropped publication {name}");
            }
            Ok(())
        }
    }
}
