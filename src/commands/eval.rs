//! `ucoder-flow eval CONFIG.toml`: a benchmark run; prints the summary table to stdout, progress
//! and notes to stderr.

use std::path::PathBuf;

use super::progress::{LogFormat, Renderer};
use crate::backends::RecordedCompletions;
use crate::backends::sandbox::refusal_notes;
use crate::eval::{EvalConfig, EvalModel, Overrides, check, humaneval, runner};
use crate::progress::Reporter;

/// `ucoder-flow eval` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The eval pipeline TOML (e.g. pipelines/humaneval.toml).
    pub config: PathBuf,
    /// Model: registry name or path (overrides model.name).
    #[arg(long)]
    pub model: Option<String>,
    /// Evaluate only the first N problems (overrides benchmark.limit).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run folder (overrides output.dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Samples per problem (overrides decoding.n).
    #[arg(long)]
    pub n: Option<usize>,
    /// Sampling temperature, 0 = greedy (overrides decoding.temperature).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Token limit per completion (overrides decoding.max_tokens).
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Score completions from this JSONL (made by another engine, e.g.
    /// scripts/eval_llamacpp.py) instead of generating.
    #[arg(long, value_name = "FILE", conflicts_with = "dump_prompts")]
    pub completions: Option<PathBuf>,
    /// Write the rendered prompts to this JSONL and stop (input for scripts/eval_llamacpp.py).
    #[arg(long, value_name = "FILE")]
    pub dump_prompts: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `ucoder-flow eval`: prints the summary table to stdout, progress and notes to stderr.
pub fn run(args: &EvalArgs, format: LogFormat) -> anyhow::Result<()> {
    let renderer = Renderer::new("eval", format, args.quiet);
    let say = |line: &str| renderer.note(line);
    let overrides = Overrides {
        model: args.model.clone(),
        limit: args.limit,
        out: args.out.clone(),
        n: args.n,
        temperature: args.temperature,
        max_tokens: args.max_tokens,
    };
    let config = EvalConfig::load(&args.config, &overrides)?;
    let cache = crate::fetch::cache_dir();
    let problems = humaneval::load(&cache, &renderer)?;
    let mut model = match &args.completions {
        Some(path) => EvalModel::recorded(RecordedCompletions::load(path)?),
        None => {
            let source = crate::models::resolve(&config.model.name, &cache, &renderer)?;
            EvalModel::engine(&source, &config)?
        }
    };
    if let Some(path) = &args.dump_prompts {
        let count = runner::dump_prompts(&config, &problems, &model, path)?;
        say(&format!("wrote {count} prompts to {}", path.display()));
        return Ok(());
    }
    let mut executor = check::open_executor(&config.sandbox)?;
    for note in refusal_notes(executor.isolation()) {
        say(&note);
    }
    say(&format!(
        "{} -> {}",
        model.describe(),
        config.output.dir.display()
    ));
    let summary = runner::run(&config, &problems, &mut model, &mut executor, &renderer)?;
    println!("{}", summary.table());
    say(&format!(
        "samples: {}, summary: {}",
        runner::samples_dir(&config.output.dir).display(),
        config.output.dir.join(runner::SUMMARY_FILE).display()
    ));
    Ok(())
}
