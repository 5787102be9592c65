//! `ucoder-flow train`: fine-tune a model on SFT shards with the built-in trainer.
//!
//! `ucoder-flow train pipelines/ipc.toml` trains the pipeline's model on its run's
//! `iter-0/sft/` shards with its `[train]` settings, into `<run>/iter-0/train/`; `--data`,
//! `--model` and `--out` name the three folders directly, and the flags below override single
//! settings.

use std::path::PathBuf;

use anyhow::Context;

use super::progress::{LogFormat, Renderer};
use crate::config::PipelineConfig;
use crate::fetch;
use crate::models::{self, DEFAULT_MODEL};
use crate::train::{self, TrainConfig, TrainJob, TrainMethod};

/// Arguments of `ucoder-flow train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// A pipeline file: its model, its run's `sft/` shards and its `[train]` section.
    pub pipeline: Option<PathBuf>,
    /// The SFT folder to train on (default: the pipeline run's `iter-0/sft/`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Registry name, GGUF file or safetensors folder of the base model (default: the
    /// pipeline's model, else the default model).
    #[arg(long)]
    pub model: Option<String>,
    /// Output folder (default: the pipeline run's `iter-0/train/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `full` or `lora`, instead of `[train] method`.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Epochs, instead of `[train] epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate, instead of `[train] learning_rate`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Packed rows per optimizer step, instead of `[train] batch_rows`.
    #[arg(long)]
    pub batch_rows: Option<usize>,
    /// Steps between checkpoints, instead of `[train] checkpoint_every`.
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `--method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Full,
    Lora,
}

impl From<MethodArg> for TrainMethod {
    fn from(method: MethodArg) -> Self {
        match method {
            MethodArg::Full => TrainMethod::Full,
            MethodArg::Lora => TrainMethod::Lora,
        }
    }
}

/// Runs `ucoder-flow train` and prints the summary.
pub fn run(args: &TrainArgs, format: LogFormat) -> anyhow::Result<()> {
    super::interrupt::stop_cleanly_on_signals("training");
    let pipeline = match &args.pipeline {
        Some(path) => Some(PipelineConfig::load(path)?),
        None => None,
    };
    let run_dir = pipeline.as_ref().map(|p| p.run_dir());
    let data = match (&args.data, &run_dir) {
        (Some(d), _) => d.clone(),
        (None, Some(run)) => run.join("iter-0").join("sft"),
        (None, None) => anyhow::bail!("name the SFT shards: --data DIR, or a pipeline file"),
    };
    let out = match (&args.out, &run_dir) {
        (Some(o), _) => o.clone(),
        (None, Some(run)) => run.join("iter-0").join("train"),
        (None, None) => anyhow::bail!("name the output folder: --out DIR, or a pipeline file"),
    };
    let model_name = args
        .model
        .clone()
        .or_else(|| pipeline.as_ref().map(|p| p.model.name.clone()))
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let mut config: TrainConfig = pipeline
        .as_ref()
        .and_then(|p| p.train.clone())
        .unwrap_or_default();
    config.method = args.method.map_or(config.method, TrainMethod::from);
    config.epochs = args.epochs.unwrap_or(config.epochs);
    config.learning_rate = args.lr.unwrap_or(config.learning_rate);
    config.batch_rows = args.batch_rows.unwrap_or(config.batch_rows);
    config.checkpoint_every = args.checkpoint_every.unwrap_or(config.checkpoint_every);
    config.threads = args.threads.or(config.threads);
    let threads = config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    train::apply_threads(threads)?;

    let renderer = Renderer::new("train", format, args.quiet);
    let job = TrainJob {
        base: models::resolve(&model_name, &fetch::cache_dir(), &renderer)?,
        data: data.clone(),
        out: out.clone(),
        config,
        default_seed: pipeline.as_ref().map_or(0, |p| p.seed),
        device: candle_core::Device::Cpu,
    };
    let summary = train::train(&job, &renderer)
        .with_context(|| format!("training on {} into {}", data.display(), out.display()))?;
    println!(
        "trained {} ({} parameters) on {} rows / {} examples: {} steps, loss {:.4} → {:.4}, {:.0} tokens/s, {:.1} s\nmodel: {}",
        summary.method,
        summary.trainable_parameters,
        summary.rows,
        summary.examples,
        summary.steps,
        summary.first_loss,
        summary.final_loss,
        summary.tokens_per_second,
        summary.train_seconds,
        summary.model.display()
    );
    Ok(())
}
