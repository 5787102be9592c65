//! `ucoder-flow run PIPELINE.toml`: the IPC loop (docs/ARCHITECTURE.md, "The run"). Iteration t
//! probes model M_t from problem generation to SFT shards as a timely dataflow over the
//! in-process engine and the sandbox ([`iteration`]); with `[train]`, M_t is then fine-tuned on
//! those shards into M_{t+1} ([`training`]), which the next iteration generates with. With
//! `[eval]`, every model is measured on a benchmark ([`benchmark`]).
//!
//! [`run`] reads as its phases: load the settings and plan the cores ([`CoreSplit`]); claim the
//! run folder (the same command on an interrupted run resumes it, at any step of any iteration;
//! a folder made with other settings is refused); then per iteration: measure M_t, run the
//! iteration, train M_{t+1}. Each step that completes is recorded in `manifest.json`
//! ([`lineage`]), so a resumed run skips it; the run's `summary.json` is the [`LoopSummary`].

pub mod artifacts;
pub mod backends;
pub mod benchmark;
pub mod check;
pub mod context;
pub mod cores;
pub mod dataset_card;
pub mod graph;
pub mod iteration;
pub mod lineage;
pub mod progress;
pub mod results;
pub mod stages;
pub mod summary;
pub mod training;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use self::benchmark::Benchmark;
use self::iteration::{Iteration, run_iteration};
use self::lineage::{ModelRecord, model_name};
pub use self::summary::{LoopSummary, RunSummary};
use self::training::{TrainStep, train_next_model};
use crate::config::{ConfigError, ModelBackend, PipelineConfig};
use crate::eval::EvalError;
use crate::llm::LlmError;
use crate::models::{ModelError, ModelSource, weights_sha256};
use crate::progress::Reporter;
use crate::prompts::PromptError;
use crate::sandbox::SandboxError;
use crate::store::{Manifest, StoreError, write_json_atomic};

pub use self::cores::CoreSplit;
pub use self::results::RESULT_DIRS;
pub use self::training::TrainerProgram;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("loading the model: {0}")]
    Engine(#[from] LlmError),
    #[error("starting the sandbox: {0}")]
    Sandbox(#[from] SandboxError),
    #[error("the model server {0}")]
    Server(#[from] crate::backends::openai::ServerError),
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the run stopped: {0} (committed work is kept; run the same command again to resume)")]
    Stopped(String),
    #[error("timely: {0}")]
    Timely(String),
    #[error("training after iteration {iteration}: {why}")]
    Train { iteration: u32, why: String },
    #[error("[eval]: {0}")]
    Eval(#[from] EvalError),
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Timely worker threads (`-w`); overrides `[resources] dataflow_workers`.
    pub workers: Option<usize>,
    /// Overrides `runs_dir`.
    pub runs_dir: Option<PathBuf>,
    /// Overrides `[model] name` (a registry name or a path).
    pub model: Option<String>,
    /// The program that runs the built-in trainer (default: this executable, which must be
    /// `ucoder-flow`).
    pub trainer: Option<TrainerProgram>,
}

/// Runs (or resumes) the pipeline in `path`, reporting notes and live gauges to `reporter`.
pub fn run(
    path: &Path,
    options: &RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<LoopSummary, PipelineError> {
    let started = Instant::now();
    let notes: &dyn Reporter = &*reporter;
    let (config, split) = load_settings(path, options)?;
    let benchmark = match &config.eval {
        Some(section) => Some(Benchmark::load(path, section, &split, notes)?),
        None => None,
    };
    let base = crate::models::resolve(&config.model.name, &crate::fetch::cache_dir(), notes)?;
    let run_dir = config.run_dir();
    fs::create_dir_all(&run_dir).map_err(StoreError::io(&run_dir))?;
    Manifest::claim(
        &run_dir,
        "ipc",
        result_settings(&config),
        model_identity(&base),
    )?;

    let mut summary = LoopSummary {
        run: config.name.clone(),
        iterations: Vec::new(),
        models: Vec::new(),
        stopped_early: None,
        wall_s: 0.0,
    };
    let mut current = first_model(&run_dir, &base)?;
    let mut source = base;
    for t in 0..config.iterations {
        if let Some(benchmark) = &benchmark {
            benchmark.measure(&mut current, &source, &run_dir, notes)?;
        }
        let it = Iteration {
            config: &config,
            split: &split,
            pipeline: path,
            run_dir: &run_dir,
            index: t,
            model: &source,
            model_name: &current.name,
        };
        let iteration = run_iteration(&it, &reporter)?;
        let selected = iteration.sft_rows > 0;
        summary.iterations.push(iteration);
        let Some(train) = &config.train else {
            break;
        };
        let last = t + 1 == config.iterations;
        if last && !train.after_last_iteration {
            break;
        }
        if !selected {
            summary.stopped_early = Some(format!(
                "iteration {t} selected nothing, so there is no data to train {} on",
                model_name(t + 1)
            ));
            break;
        }
        let trainer = match &options.trainer {
            Some(program) => program.clone(),
            None => TrainerProgram::current(t)?,
        };
        let next = train_next_model(
            &TrainStep {
                config: train,
                pipeline: path,
                run_dir: &run_dir,
                index: t,
                base: &source,
                seed: train.seed.unwrap_or(config.seed),
                program: &trainer,
            },
            notes,
        )?;
        source = ModelSource::Safetensors(next.path.clone());
        summary.models.push(std::mem::replace(&mut current, next));
    }
    if let Some(benchmark) = &benchmark {
        benchmark.measure(&mut current, &source, &run_dir, notes)?;
    }
    summary.models.push(current);
    summary.wall_s = started.elapsed().as_secs_f64();
    write_json_atomic(&run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

/// M_0's record: the pipeline's model, hashed once.
fn first_model(run_dir: &Path, base: &ModelSource) -> Result<ModelRecord, PipelineError> {
    let name = model_name(0);
    if let Some(record) = ModelRecord::load(run_dir, &name)? {
        return Ok(record);
    }
    let record = ModelRecord {
        name,
        path: base.path().to_path_buf(),
        weights_sha256: weights_sha256(base)?,
        trained: None,
        eval: None,
    };
    record.save(run_dir)?;
    Ok(record)
}

/// The pipeline file with the command line's overrides, checked, and the core split.
fn load_settings(
    path: &Path,
    options: &RunOptions,
) -> Result<(PipelineConfig, CoreSplit), PipelineError> {
    let mut config = PipelineConfig::load(path)?;
    if let Some(dir) = &options.runs_dir {
        config.runs_dir = dir.clone();
    }
    if let Some(model) = &options.model {
        config.model.name = model.clone();
    }
    let invalid = |why: String| PipelineError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    if let Some(workers) = options.workers {
        if workers == 0 {
            return Err(invalid(
                "-w 0: a run needs at least one dataflow worker".into(),
            ));
        }
        config.resources.dataflow_workers = workers;
    }
    if config.sampling.adaptive {
        return Err(invalid(
            "sampling.adaptive = true: adaptive sampling exists as an operator \
             (ucoder_operators::AdaptiveSampling) but is not wired into the run yet; \
             set it to false to sample all n candidates as the paper does"
                .into(),
        ));
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split = match config.model.backend {
        ModelBackend::Candle => CoreSplit::plan(&config.resources, available),
        ModelBackend::Openai => CoreSplit::plan_without_engine(&config.resources, available),
    }
    .map_err(invalid)?;
    Ok((config, split))
}

/// The settings that decide a run's results, as JSON: everything but resources, folders, the
/// number of iterations (a finished run can be extended), `[eval]` (it measures, it does not
/// change the data) and the trainer's settings that do not change its weights.
fn result_settings(config: &PipelineConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(config).expect("the config serializes");
    if let Some(map) = value.as_object_mut() {
        map.remove("resources");
        map.remove("runs_dir");
        map.remove("iterations");
        map.remove("eval");
        // Where the server is and how it is reached do not change what it answers.
        if let Some(model) = map.get_mut("model").and_then(|m| m.as_object_mut()) {
            if let Some(server) = model.get_mut("server").and_then(|s| s.as_object_mut()) {
                for key in [
                    "base_url",
                    "api_key_env",
                    "max_concurrency",
                    "request_timeout_s",
                    "retry_for_s",
                ] {
                    server.remove(key);
                }
            }
            // Runs made before the server backend existed recorded no backend.
            if config.model.backend == ModelBackend::Candle {
                model.remove("backend");
            }
        }
        match &config.train {
            Some(train) => map.insert("train".into(), train.result_settings()),
            None => map.remove("train"),
        };
    }
    value
}

fn model_identity(source: &ModelSource) -> String {
    let size = fs::metadata(source.path()).map(|m| m.len()).unwrap_or(0);
    let name = source
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name} ({size} bytes)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_dataflow_workers_on_the_command_line_are_refused() {
        let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.toml");
        let options = RunOptions {
            workers: Some(0),
            ..RunOptions::default()
        };
        let err = load_settings(&smoke, &options).unwrap_err().to_string();
        assert!(err.contains("-w 0") && err.contains("smoke.toml"), "{err}");
        let options = RunOptions {
            workers: Some(2),
            ..RunOptions::default()
        };
        let (config, split) = load_settings(&smoke, &options).unwrap();
        assert_eq!(
            (config.resources.dataflow_workers, split.dataflow_workers),
            (2, 2)
        );
    }
}
