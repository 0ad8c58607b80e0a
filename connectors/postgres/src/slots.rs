//! riffle's replication slots and publications on a server, for
//! `riffle slots`: a slot nobody reads holds WAL on the server forever.

use crate::connect::ConnectParams;
use crate::error::{Col, PgError};
use crate::quote_ident;
use riffle_core::SourceError;

/// One logical pgoutput slot.
#[derive(Debug, Clone)]
pub struct SlotRow {
    pub name: String,
    pub database: String,
    pub active: bool,
    pub confirmed: String,
    /// `1.5 GiB` of WAL the slot keeps.
    pub retains: String,
    /// A publication of the same name exists: the slot is riffle's.
    pub riffle: bool,
}

/// Every logical pgoutput slot of the server.
pub async fn list(url: &str) -> Result<Vec<SlotRow>, SourceError> {
    let client = ConnectParams::from_url(url)?.connect().await?;
    let rows = client
        .query(
            "SELECT s.slot_name::text, s.database::text, s.active, s.confirmed_flush_lsn::text, \
                    (pg_current_wal_lsn() - s.restart_lsn)::int8, p.pubname IS NOT NULL \
             FROM pg_replication_slots s LEFT JOIN pg_publication p ON p.pubname = s.slot_name \
             WHERE s.slot_type = 'logical' AND s.plugin = 'pgoutput' ORDER BY 1",
            &[],
        )
        .await
        .map_err(PgError::session("listing replication slots"))?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(SlotRow {
                name: r.col(0)?,
                database: r.col::<Option<String>>(1)?.unwrap_or_default(),
                active: r.col(2)?,
                confirmed: r.col::<Option<String>>(3)?.unwrap_or_else(|| "-".into()),
                retains: crate::report::retained(r.col(4)?),
                riffle: r.col(5)?,
            })
        })
        .collect::<Result<Vec<_>, PgError>>()?)
}

/// What exists under a pipeline's name.
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// `Some(active)` when the slot exists.
    pub slot: Option<bool>,
    pub publication: bool,
}

pub async fn find(url: &str, name: &str) -> Result<Found, SourceError> {
    let client = ConnectParams::from_url(url)?.connect().await?;
    let slot = client
        .query_opt("SELECT active FROM pg_replication_slots WHERE slot_name = $1", &[&name])
        .await
        .map_err(PgError::session("reading replication slots"))?
        .map(|r| r.col::<bool>(0))
        .transpose()?;
    let publication = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&name])
        .await
        .map_err(PgError::session("reading publications"))?
        .is_some();
    Ok(Found { slot, publication })
}

/// Drops what `find` found; the caller has confirmed with the user.
pub async fn drop(url: &str, name: &str, found: Found) -> Result<(), SourceError> {
    let client = ConnectParams::from_url(url)?.connect().await?;
    if found.slot.is_some() {
        client.execute("SELECT pg_drop_replication_slot($1)", &[&name]).await.map_err(PgError::session("dropping the slot"))?;
    }
    if found.publication {
        client
            .batch_execute(&format!("DROP PUBLICATION {}", quote_ident(name)))
            .await
            .map_err(PgError::session("dropping the publication"))?;
    }
    Ok(())
}
