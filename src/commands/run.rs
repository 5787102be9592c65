//! `ucoder-flow run PIPELINE.toml` (and `ucoder-flow PIPELINE.toml`): one IPC iteration; prints
//! the closing summary table.

use std::path::PathBuf;
use std::sync::Arc;

use super::progress::{LogFormat, Renderer};
use crate::pipeline::{self, RunOptions};

/// Arguments of `ucoder-flow run` (and of `ucoder-flow PIPELINE.toml`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (e.g. pipelines/ipc.toml).
    pub pipeline: PathBuf,
    /// Timely worker threads (the same selections for any number).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Where run folders go (default: the file's `runs_dir`, `runs/`).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// A registry model name or a GGUF path, instead of the file's `[model] name`.
    #[arg(long)]
    pub model: Option<String>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Runs the pipeline and prints the summary table.
pub fn run(args: &RunArgs, format: LogFormat) -> anyhow::Result<()> {
    let summary = pipeline::run(
        &args.pipeline,
        &RunOptions {
            workers: args.workers,
            runs_dir: args.runs_dir.clone(),
            model: args.model.clone(),
        },
        Arc::new(Renderer::new("ucoder-flow", format, args.quiet)),
    )?;
    println!("{}", summary.table());
    Ok(())
}
