//! The built-in trainer: supervised fine-tuning of the generating model on the SFT shards
//! (docs/ARCHITECTURE.md, "Training").
//!
//! - [`config`]: the `[train]` section (the paper's defaults).
//! - [`model`]: the differentiable qwen2/llama decoder, full or LoRA ([`lora`]).
//! - [`attention`]: segment-causal attention with its own backward (packed examples never see
//!   each other).
//! - [`loss`]: token cross-entropy with a fused backward.
//! - [`batch`]: shard rows → forward-pass batches and targets; the data order per step.
//! - `recompute`: gradient checkpointing (a block that recomputes its activations in backward).
//! - [`optim`]: AdamW with f32 moments, clipping, warmup + cosine.
//! - [`checkpoint`]: atomic checkpoints that resume bit for bit.
//! - [`log`]: the per-step Parquet log.
//! - [`trainer`]: the loop ([`train`]).

pub mod attention;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod log;
pub mod lora;
pub mod loss;
pub mod model;
pub mod optim;
mod recompute;
pub mod trainer;

use std::path::{Path, PathBuf};

pub use batch::BadRow;
pub use config::{TrainConfig, TrainMethod};
pub use trainer::{TrainJob, TrainSummary, train};

use crate::models::ModelSource;

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("field `{field}`: {why}")]
    Config { field: &'static str, why: String },
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("checkpoint {dir}: {message}")]
    Checkpoint { dir: PathBuf, message: String },
    #[error(
        "{0}: no SFT rows to train on (the run selected nothing, or this is not an sft/ folder)"
    )]
    NoData(PathBuf),
    #[error(
        "{0}: holds a model trained with other settings, data or base weights; remove the folder \
         to train again, or train into another one"
    )]
    OtherRun(PathBuf),
    #[error(transparent)]
    BadRow(#[from] BadRow),
    #[error("{what}: {source}")]
    Candle {
        what: String,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Export(#[from] crate::llm::export::ExportError),
    #[error(
        "{requested} training threads were asked for, but this process already runs {active} CPU threads"
    )]
    Threads { requested: usize, active: usize },
}

impl TrainError {
    /// Maps a candle error, saying what was being done.
    pub(crate) fn candle(what: &str) -> impl Fn(candle_core::Error) -> TrainError + Copy + '_ {
        move |source| TrainError::Candle {
            what: what.to_string(),
            source,
        }
    }
}

/// The base model as a safetensors directory: a directory is used as it is; a GGUF file is
/// exported once to `<out>/base` (f32, Hugging Face layout) and reused on later calls.
pub fn base_dir(source: &ModelSource, out: &Path) -> Result<PathBuf, TrainError> {
    match source {
        ModelSource::Safetensors(dir) => Ok(dir.clone()),
        ModelSource::Gguf(path) => {
            let base = out.join("base");
            if !base.join("config.json").is_file() {
                crate::llm::export::export_safetensors(path, &base)?;
            }
            Ok(base)
        }
    }
}

/// Sizes the CPU thread pools training uses (rayon's, which candle's matmuls and our attention
/// run on, and candle's own) before their first use; an already running pool must match.
pub fn apply_threads(threads: usize) -> Result<(), TrainError> {
    if rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .is_err()
        && rayon::current_num_threads() != threads
    {
        return Err(TrainError::Threads {
            requested: threads,
            active: rayon::current_num_threads(),
        });
    }
    for var in ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"] {
        if std::env::var_os(var).is_none() {
            // SAFETY: called once at the start of a training command, before this process starts
            // any thread of its own that could read the environment concurrently.
            unsafe { std::env::set_var(var, threads.to_string()) };
        }
    }
    Ok(())
}

/// Makes glibc keep freed memory for reuse instead of returning it to the kernel: a training
/// step allocates and frees the same large activation buffers every step, and fresh pages from
/// the kernel cost a page fault each (measured: a fifth of a step's time before this).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // Per-thread arenas are bounded heaps that glibc shrinks on its own; one arena keeps
        // every freed buffer reusable by every thread.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The largest absolute difference between two tensors of one shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f64 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_dtype(candle_core::DType::F64))
        .and_then(|d| d.to_scalar::<f64>())
        .expect("tensors of one shape")
}
