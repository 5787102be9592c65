//! `ucoder-flow status RUN_DIR`: what a run folder holds and whether a process is writing it.

use std::path::PathBuf;

use crate::pipeline::status::RunStatus;

/// Arguments of `ucoder-flow status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The run folder (e.g. runs/smoke).
    pub run_dir: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads the folder and prints its status.
pub fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let status = RunStatus::read(&args.run_dir)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table());
    }
    Ok(())
}
