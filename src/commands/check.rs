//! `ucoder-flow check PIPELINE.toml`: validates a pipeline before running it (the settings,
//! `[eval]`, the model, the sandbox, the run folder) without generating or writing anything;
//! prints one line per check (or JSON) and fails when any check fails.

use std::path::PathBuf;

use crate::pipeline::RunOptions;
use crate::pipeline::check::check;

/// Arguments of `ucoder-flow check`: those of `run` that change what is checked.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The pipeline file (e.g. pipelines/ipc.toml).
    pub pipeline: PathBuf,
    /// Timely worker threads the run would use.
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Where run folders go (default: the file's `runs_dir`, `runs/`).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// A registry model name or a model path, instead of the file's `[model] name`.
    #[arg(long)]
    pub model: Option<String>,
    /// Print the checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks and prints them.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    let report = check(
        &args.pipeline,
        &RunOptions {
            workers: args.workers,
            runs_dir: args.runs_dir.clone(),
            model: args.model.clone(),
            trainer: None,
        },
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    anyhow::ensure!(
        report.passed(),
        "{}: a run would fail (see FAILED above)",
        args.pipeline.display()
    );
    Ok(())
}
