//! `ucoder-flow check PIPELINE.toml`: validates a pipeline before running it (the settings,
//! `[eval]`, the model, the sandbox, the run folder) without generating or writing anything;
//! prints one line per check (or JSON) and fails when any check fails.

use super::run::PipelineArgs;
use crate::pipeline::check::check;

/// Arguments of `ucoder-flow check`: those of `run` that change what is checked.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: PipelineArgs,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks and prints them.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let report = check(&args.target.pipeline, &args.target.options(None));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    anyhow::ensure!(
        report.passed(),
        "{}: a run would fail (see FAILED above)",
        args.target.pipeline.display()
    );
    Ok(())
}
