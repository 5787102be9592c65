//! `ucoder-flow eval CONFIG.toml`: a benchmark run; prints the summary table to stdout, progress
//! and notes to stderr.

use std::path::PathBuf;
use std::sync::Arc;

use super::progress::{LogFormat, Renderer};
use crate::backends::RecordedCompletions;
use crate::backends::sandbox::refusal_notes;
use crate::config::ModelBackend;
use crate::eval::{EvalConfig, EvalModel, Overrides, check, humaneval, rerank, runner};
use crate::progress::Reporter;
use crate::sandbox::SandboxPool;

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
    /// Rerank mode only: score the stored rows again with the TOML's [selection] (selector,
    /// signature, rho, tau, priors), without loading a model or sampling.
    #[arg(long, conflicts_with_all = ["completions", "dump_prompts"])]
    pub rescore: bool,
    /// Rerank mode only: judge the stored tests and run the stored samples of the rerank folder
    /// FROM again with the current code and this file's [sandbox], into the output folder,
    /// without a model (measures a change to the test judges or the sandbox on the same samples).
    #[arg(
        long,
        value_name = "FROM",
        conflicts_with_all = ["completions", "dump_prompts", "rescore"]
    )]
    pub rejudge: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the summary as JSON (what the run folder's summary file holds) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `ucoder-flow eval`: prints the summary table to stdout, progress and notes to stderr.
pub fn run(args: &EvalArgs, format: LogFormat) -> anyhow::Result<()> {
    super::interrupt::stop_cleanly_on_signals("eval");
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
    let problems = match &config.benchmark.path {
        Some(path) => humaneval::load_file(path)?,
        None => humaneval::load(&cache, &renderer)?,
    };
    if args.rescore || args.rejudge.is_some() {
        anyhow::ensure!(
            config.is_rerank(),
            "{}: --rescore and --rejudge work on a rerank run; the file has no [selection] section",
            args.config.display()
        );
        let summary = match &args.rejudge {
            Some(from) => {
                let mut sandbox = rerank_sandbox(&config)?;
                rerank::rejudge(&config, &problems, from, &mut sandbox, &renderer)?
            }
            None => rerank::rescore(&config, &problems)?,
        };
        print_summary(&summary, summary.table(), args.json)?;
        return Ok(());
    }
    let mut model = match &args.completions {
        Some(path) => EvalModel::recorded(RecordedCompletions::load(path)?),
        None => {
            let source = crate::models::resolve(&config.model.name, &cache, &renderer)?;
            match (&config.model.backend, &config.model.server) {
                (ModelBackend::Openai, Some(server)) => {
                    let (model, notes) = EvalModel::server(&source, server)?;
                    for note in notes {
                        say(&note);
                    }
                    model
                }
                _ => EvalModel::engine(&source, &config)?,
            }
        }
    };
    if let Some(path) = &args.dump_prompts {
        let count = runner::dump_prompts(&config, &problems, &model, path)?;
        say(&format!("wrote {count} prompts to {}", path.display()));
        return Ok(());
    }
    let pool = check::open_pool(&config.sandbox)?;
    for note in refusal_notes(pool.isolation()) {
        say(&note);
    }
    let mut executor = check::executor(pool.clone(), &config.sandbox);
    if let Some(path) = &config.benchmark.path {
        let failures =
            check::canonical_failures(&mut executor, runner::select(&config, &problems))?;
        if !failures.is_empty() {
            let lines: Vec<String> = failures
                .iter()
                .map(|(id, why)| format!("  {id}: {why}"))
                .collect();
            anyhow::bail!(
                "{}: {} canonical solution(s) fail their own tests; fix the records or drop \
                 their canonical_solution:\n{}",
                path.display(),
                failures.len(),
                lines.join("\n")
            );
        }
    }
    say(&format!(
        "{} -> {}",
        model.describe(),
        config.output.dir.display()
    ));
    if config.is_rerank() {
        let mut sandbox = rerank::RerankSandbox::new(pool, second_seed(&config)?, &config.sandbox);
        let summary = rerank::run(
            &config,
            &problems,
            &mut model,
            &mut executor,
            &mut sandbox,
            &renderer,
        )?;
        print_summary(&summary, summary.table(), args.json)?;
        let dir = &config.output.dir;
        say(&format!(
            "per problem: {}, per method: {}, figures: {}",
            dir.join(rerank::runner::PROBLEMS_TABLE).display(),
            dir.join(rerank::runner::METHODS_TABLE).display(),
            dir.join(rerank::runner::RERANK_FILE).display()
        ));
        return Ok(());
    }
    let summary = runner::run(&config, &problems, &mut model, &mut executor, &renderer)?;
    print_summary(&summary, summary.table(), args.json)?;
    say(&format!(
        "samples: {}, summary: {}",
        runner::samples_dir(&config.output.dir).display(),
        config.output.dir.join(runner::SUMMARY_FILE).display()
    ));
    Ok(())
}

/// The summary on stdout: its table, or with `--json` the JSON its run folder keeps.
fn print_summary(summary: &impl serde::Serialize, table: String, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else {
        println!("{table}");
    }
    Ok(())
}

/// The pool with another hash seed for the rerank mode's `hash_seeds = 2`.
fn second_seed(config: &EvalConfig) -> anyhow::Result<Option<Arc<SandboxPool>>> {
    Ok(match config.sandbox.hash_seeds {
        2 => Some(check::open_seeded_pool(&config.sandbox, 1)?),
        _ => None,
    })
}

/// The rerank mode's sandbox on fresh pools.
fn rerank_sandbox(config: &EvalConfig) -> anyhow::Result<rerank::RerankSandbox> {
    let pool = check::open_pool(&config.sandbox)?;
    Ok(rerank::RerankSandbox::new(
        pool,
        second_seed(config)?,
        &config.sandbox,
    ))
}
