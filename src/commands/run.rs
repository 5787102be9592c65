//! `ucoder-flow run PIPELINE.toml` (and `ucoder-flow PIPELINE.toml`): the IPC loop; prints each
//! iteration's summary table and the lineage of the run's models.

use std::path::PathBuf;
use std::sync::Arc;

use super::progress::{LogFormat, Renderer};
use crate::pipeline::{self, RunOptions, TrainerProgram};

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
    /// Also print every item the funnel drops, as it drops it (stage, reason, problem, detail;
    /// the same as its `rejections/` row).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Print the summary as JSON (what `<run>/summary.json` holds) instead of tables.
    #[arg(long)]
    pub json: bool,
}

impl RunArgs {
    /// The run options these arguments set, with `trainer`.
    pub fn options(&self, trainer: Option<TrainerProgram>) -> RunOptions {
        RunOptions {
            workers: self.workers,
            runs_dir: self.runs_dir.clone(),
            model: self.model.clone(),
            trainer,
        }
    }
}

/// Runs the pipeline and prints the summary table.
pub fn run(args: &RunArgs, format: LogFormat) -> anyhow::Result<()> {
    super::interrupt::stop_cleanly_on_signals("run");
    let mut trainer_args = vec!["--log-format".to_string(), format.name().to_string()];
    if args.quiet {
        trainer_args.push("-q".into());
    }
    let trainer = TrainerProgram {
        exe: std::env::current_exe()?,
        args: trainer_args,
    };
    let summary = pipeline::run(
        &args.pipeline,
        &args.options(Some(trainer)),
        Arc::new(Renderer::new("ucoder-flow", format, args.quiet).verbose(args.verbose)),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!("{}", summary.table());
    }
    let Some(last) = summary.iterations.last() else {
        return Ok(());
    };
    if last.selections == 0 {
        let mut reasons: Vec<(&String, &u64)> = last.rejections.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(reason, n)| format!("{reason} ({n})"))
            .collect();
        return Err(super::EmptyRun(format!(
            "iteration {} selected nothing, so it wrote no SFT data; top rejections: {}",
            last.iteration,
            if top.is_empty() {
                "none".to_string()
            } else {
                top.join(", ")
            }
        ))
        .into());
    }
    Ok(())
}
