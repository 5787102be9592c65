//! `ucoder-flow bench train`: training throughput (tokens/s of forward + backward + AdamW) and
//! peak memory of the built-in trainer, optionally next to PyTorch (transformers, same model,
//! same batch shape, same threads) run by `scripts/train_bench_torch.py` in its own process.
//!
//! The batch is `rows` sequences of `seq` random token ids, every token labelled; the first step
//! warms up and is not counted. Peak memory is the process's peak resident set (each side runs
//! in its own process, so the figures do not mix; ours includes the loaded base model).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::progress::Renderer;
use crate::fetch;
use crate::models;
use crate::progress::Reporter;
use crate::sft::sink::SftRow;
use crate::train::batch::Batch;
use crate::train::model::TrainModel;
use crate::train::optim::AdamW;
use crate::train::{self, TrainConfig, TrainMethod};

/// Arguments of `ucoder-flow bench train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainBenchArgs {
    /// Registry name, GGUF file or safetensors folder.
    #[arg(long, default_value = models::TEST_MODEL)]
    pub model: String,
    /// `full` or `lora` (comma-separated for both).
    #[arg(long, value_delimiter = ',', default_value = "full,lora")]
    pub methods: Vec<super::train::MethodArg>,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub seq: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 1)]
    pub rows: usize,
    /// Measured steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Recompute layer activations in backward (PyTorch runs without; its figures do not change).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Where the safetensors export of a GGUF model goes (kept for later runs).
    #[arg(long, default_value = "runs/bench-train")]
    pub work_dir: PathBuf,
    /// Python with torch and transformers (and peft for LoRA): also measure PyTorch.
    #[arg(long)]
    pub torch_python: Option<String>,
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/train_bench_torch.py"))]
    pub torch_script: PathBuf,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
struct Figures {
    method: String,
    trainable_parameters: usize,
    tokens_per_second: f64,
    step_seconds: Vec<f64>,
    /// Mean seconds per step in the forward pass, the backward pass and the optimizer.
    forward_backward_optimizer_seconds: [f64; 3],
    peak_rss_mib: f64,
    torch: Option<serde_json::Value>,
}

/// Runs the benchmark and prints one line per method (and the JSON file if asked).
pub fn run(args: &TrainBenchArgs) -> anyhow::Result<()> {
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    train::apply_threads(threads)?;
    train::keep_freed_memory();
    let notes = Renderer::notes("bench");
    let source = models::resolve(&args.model, &fetch::cache_dir(), &notes)?;
    let base = train::base_dir(&source, &args.work_dir.join("export"))?;
    // PyTorch runs first, in child processes, while this process is still small: the allocator
    // keeps what our own measurement frees (see `train::keep_freed_memory`).
    let mut torch_figures = Vec::new();
    for &method in &args.methods {
        torch_figures.push(match &args.torch_python {
            Some(python) => Some(measure_torch(
                python,
                args,
                &base,
                TrainMethod::from(method).name(),
                threads,
                &notes,
            )?),
            None => None,
        });
    }
    let mut all = Vec::new();
    for (&method, torch) in args.methods.iter().zip(torch_figures) {
        let config = TrainConfig {
            method: method.into(),
            ..Default::default()
        };
        let mut model = TrainModel::load(&base, &config.mode(), &Device::Cpu, 0)?;
        model.set_recompute(args.gradient_checkpointing);
        let vocab = model.shape().model.vocab_size;
        let batch = random_batch(args.rows, args.seq, vocab)?;
        let mut optimizer = AdamW::new(model.trainable(), config.adamw())?;
        let mut times = Vec::new();
        let mut phases = [0f64; 3];
        for step in 0..=args.steps {
            let started = Instant::now();
            let loss = (model.loss_sum(&batch)? / batch.targets.len() as f64)?;
            let forward = started.elapsed().as_secs_f64();
            let mut grads = loss.backward()?;
            let backward = started.elapsed().as_secs_f64();
            let g = model.complete_gradients(model.take_gradients(&mut grads))?;
            drop(grads);
            optimizer.step(model.trainable(), g, 1e-5)?;
            let total = started.elapsed().as_secs_f64();
            if step > 0 {
                phases[0] += forward;
                phases[1] += backward - forward;
                phases[2] += total - backward;
            }
            times.push(total);
        }
        let measured = &times[1..];
        let tokens = (args.rows * args.seq) as f64;
        let mut figures = Figures {
            method: config.method.name().to_string(),
            trainable_parameters: model.trainable_count(),
            tokens_per_second: tokens * measured.len() as f64 / measured.iter().sum::<f64>(),
            step_seconds: measured.to_vec(),
            forward_backward_optimizer_seconds: phases.map(|p| p / measured.len() as f64),
            peak_rss_mib: peak_rss_mib(),
            torch: None,
        };
        drop((model, optimizer));
        figures.torch = torch;
        let torch = figures.torch.as_ref().map_or(String::new(), |t| {
            let tps = t["tokens_per_second"].as_f64().unwrap_or(f64::NAN);
            format!(
                "  | PyTorch {tps:.1} tokens/s, peak {:.0} MiB  | ratio {:.2}×",
                t["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
                figures.tokens_per_second / tps
            )
        });
        println!(
            "{:<5} {:>11} trainable  {} × {} tokens, {threads} threads: {:.1} tokens/s (forward {:.2} s, backward {:.2} s, optimizer {:.2} s), peak {:.0} MiB (process so far){torch}",
            figures.method,
            figures.trainable_parameters,
            args.rows,
            args.seq,
            figures.tokens_per_second,
            figures.forward_backward_optimizer_seconds[0],
            figures.forward_backward_optimizer_seconds[1],
            figures.forward_backward_optimizer_seconds[2],
            figures.peak_rss_mib,
        );
        all.push(figures);
    }
    if let Some(path) = &args.json {
        crate::store::write_json_atomic(path, &all)?;
    }
    Ok(())
}

/// Runs the PyTorch script for one method and parses its JSON line.
fn measure_torch(
    python: &str,
    args: &TrainBenchArgs,
    base: &std::path::Path,
    method: &str,
    threads: usize,
    notes: &dyn Reporter,
) -> anyhow::Result<serde_json::Value> {
    notes.note(&format!("measuring PyTorch ({method})"));
    let output = Command::new(python)
        .arg(&args.torch_script)
        .arg(base)
        .args(["--method", method])
        .args(["--seq", &args.seq.to_string()])
        .args(["--rows", &args.rows.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the PyTorch benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(serde_json::from_str(
        text.lines().last().unwrap_or_default(),
    )?)
}

/// `rows` packed rows of `seq` random tokens, one example each, every token labelled.
fn random_batch(rows: usize, seq: usize, vocab: usize) -> anyhow::Result<Batch> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let rows: Vec<SftRow> = (0..rows)
        .map(|r| {
            let input_ids: Vec<u32> = (0..seq)
                .map(|_| rng.random_range(0..vocab as u32))
                .collect();
            SftRow {
                labels: input_ids.iter().map(|&t| i64::from(t)).collect(),
                position_ids: (0..seq as u32).collect(),
                problem_ids: vec![r as u64],
                offsets: vec![0],
                input_ids,
            }
        })
        .collect();
    let members: Vec<(usize, &SftRow)> = rows.iter().enumerate().collect();
    Ok(Batch::from_rows(&members, vocab)?)
}

/// The process's peak resident set in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
