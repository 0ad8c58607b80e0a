//! `riffle snapshot`: asks a pipeline to snapshot chosen tables
//! again. The request is a file (or object) beside the pipeline's state,
//! since a running pipeline owns its state: a running pipeline takes it
//! within a few seconds (at a commit), a stopped one at its next run. The
//! tables are then read through the same catch-up as a resumed snapshot
//! (docs/snapshots.md), while the other tables' changes keep their order.

use crate::cli::{PipelineArgs, SnapshotArgs};
use crate::config::{self, Overrides};
use crate::connectors::SourceKind;
use crate::state::StateStore;
use anyhow::{bail, Result};
use std::path::PathBuf;

pub fn run(args: &SnapshotArgs) -> Result<()> {
    let (name, state_dir) = match (&args.name, &args.config) {
        (Some(name), _) => (name.to_lowercase(), args.state.clone().unwrap_or_else(|| PathBuf::from(".riffle"))),
        (None, Some(file)) => {
            let pipeline = PipelineArgs { config: Some(file.clone()), ..Default::default() };
            let cfg = config::build(Overrides {
                args: &pipeline,
                no_metadata: false,
                state: args.state.as_ref(),
                commit_interval: None,
                max_retries: None,
            })?;
            (cfg.name, cfg.state_dir)
        }
        (None, None) => bail!("riffle snapshot: name the pipeline with --name NAME (see riffle status) or --config FILE"),
    };
    let store = StateStore::new(&state_dir)?;
    let Some(state) = store.load(&name)? else {
        bail!(
            "riffle snapshot: no pipeline {name:?} in {}; check --name and --state (riffle status lists the pipelines there)",
            store.describe()
        )
    };
    if SourceKind::of(&state.source).is_some_and(|k| !k.takes_snapshots()) {
        bail!(
            "riffle snapshot: pipeline {name:?} reads {}, which has no snapshot to read again (its topics hold what there is); \
             to read them from their start, run the pipeline under another --name",
            state.source
        )
    }
    let all = store.add_request(&name, &args.tables)?;
    out!(
        "asked pipeline {name} to snapshot again: {}; a running pipeline starts within seconds, a stopped one at its next run \
         (riffle status shows the snapshot in progress)",
        all.join(", ")
    );
    Ok(())
}
