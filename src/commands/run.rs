//! `ucoder-flow run PIPELINE.toml` (and `ucoder-flow PIPELINE.toml`): the IPC loop; prints each
//! iteration's summary table and the lineage of the run's models.

use std::path::PathBuf;
use std::sync::Arc;

use super::progress::{LogFormat, Renderer};
use crate::pipeline::cluster::Cluster;
use crate::pipeline::{self, RunOptions, RunOutcome, TrainerProgram};

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
    /// The model server's base URL, instead of the file's `[model.server] base_url` (e.g. each
    /// process of a cluster its own server).
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
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
    /// Run over this many processes (timely's cluster mode): start the same command once per
    /// process, each with its own `--process`, all with the same `--hostfile` and run folder
    /// (a shared file system when they are on several machines).
    #[arg(long, requires = "hostfile")]
    pub processes: Option<usize>,
    /// This process's index, 0 to processes - 1; process 0 writes the results.
    #[arg(long, requires = "processes", default_value_t = 0)]
    pub process: usize,
    /// One `host:port` per line, in process order, where each process listens for the others.
    #[arg(long, requires = "processes")]
    pub hostfile: Option<PathBuf>,
}

impl RunArgs {
    /// The run options these arguments set, with `trainer`.
    pub fn options(&self, trainer: Option<TrainerProgram>) -> anyhow::Result<RunOptions> {
        let cluster = match (self.processes, &self.hostfile) {
            (Some(processes), Some(hostfile)) => {
                Some(Cluster::from_hostfile(processes, self.process, hostfile)?)
            }
            _ => None,
        };
        Ok(RunOptions {
            workers: self.workers,
            runs_dir: self.runs_dir.clone(),
            model: self.model.clone(),
            server_url: self.server_url.clone(),
            trainer,
            cluster,
        })
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
    let outcome = pipeline::run(
        &args.pipeline,
        &args.options(Some(trainer))?,
        Arc::new(Renderer::new("ucoder-flow", format, args.quiet).verbose(args.verbose)),
    )?;
    let summary = match outcome {
        RunOutcome::Complete(summary) => summary,
        RunOutcome::Followed {
            process,
            run_dir,
            iterations,
        } => {
            println!(
                "process {process}: took part in {iterations} iteration(s); process 0 wrote the results and the summary into {}",
                run_dir.display()
            );
            return Ok(());
        }
    };
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
