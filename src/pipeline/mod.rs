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
pub mod cluster;
pub mod context;
pub mod cores;
pub mod dataset_card;
pub mod gather;
pub mod graph;
pub mod iteration;
pub mod lineage;
pub mod plan;
pub mod progress;
pub mod results;
pub mod segments;
pub mod stages;
pub mod status;
pub mod summary;
pub mod training;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use self::benchmark::Benchmark;
use self::cluster::Cluster;
use self::iteration::{Iteration, IterationOutcome, run_iteration};
use self::lineage::{ModelRecord, model_name};
use self::plan::RunPlan;
pub use self::summary::{LoopSummary, RunSummary};
use self::training::{TrainStep, train_next_model};
use crate::config::{ConfigError, ModelBackend, PipelineConfig};
use crate::eval::EvalError;
use crate::llm::LlmError;
use crate::models::{ModelError, ModelSource, weights_sha256};
use crate::progress::Reporter;
use crate::prompts::PromptError;
use crate::sandbox::SandboxError;
use crate::store::lock::RunLock;
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
    #[error(transparent)]
    Busy(#[from] crate::store::lock::LockError),
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
    /// Overrides `[model.server] base_url` (e.g. each process of a cluster its nearest server).
    pub server_url: Option<String>,
    /// The program that runs the built-in trainer (default: this executable, which must be
    /// `ucoder-flow`).
    pub trainer: Option<TrainerProgram>,
    /// This process's place when the run spans several processes (`--processes`).
    pub cluster: Option<Cluster>,
}

/// How a run ended for this process.
#[derive(Debug)]
pub enum RunOutcome {
    /// The run's summary (a single process, or the leader of a cluster).
    Complete(LoopSummary),
    /// A follower's share of the run is done; the leader (process 0) writes the results.
    Followed {
        process: usize,
        run_dir: PathBuf,
        /// Iterations this process took part in (or found complete).
        iterations: u32,
    },
}

/// Runs (or resumes) the pipeline in `path`, reporting notes and live gauges to `reporter`: the
/// whole loop on one process or on the leader of a cluster, a follower's share on the others
/// ([`cluster`]).
pub fn run(
    path: &Path,
    options: &RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<RunOutcome, PipelineError> {
    let started = Instant::now();
    let notes: &dyn Reporter = &*reporter;
    let (config, split) = load_settings(path, options)?;
    let cluster = options.cluster.as_ref().filter(|c| c.processes() > 1);
    if let Some(follower) = cluster.filter(|c| !c.is_leader()) {
        return follow(path, &config, &split, follower, &reporter);
    }
    let benchmark = match &config.eval {
        Some(section) => Some(Benchmark::load(path, section, &split, notes)?),
        None => None,
    };
    let base = crate::models::resolve(&config.model.name, &crate::fetch::cache_dir(), notes)?;
    let run_dir = config.run_dir();
    fs::create_dir_all(&run_dir).map_err(StoreError::io(&run_dir))?;
    let _writing = RunLock::acquire(&run_dir)?;
    let identity = model_identity(&base);
    Manifest::claim(&run_dir, "ipc", result_settings(&config), identity.clone())?;
    let plan = RunPlan::new(
        &config,
        &identity,
        split.sandbox_workers,
        cluster.map_or(1, Cluster::processes),
    );
    for line in plan.lines() {
        notes.note(&line);
    }
    write_json_atomic(&run_dir.join("plan.json"), &plan)?;
    let lead = Lead {
        path,
        config: &config,
        split: &split,
        options,
        cluster,
        run_dir: &run_dir,
        benchmark: benchmark.as_ref(),
        reporter: &reporter,
    };
    let outcome = lead.run(base, started);
    // Best effort: a failure to say how the run ended must not hide why it ended.
    let error = outcome.as_ref().err().map(|e| e.to_string());
    let _ = status::record_outcome(&run_dir, error.as_deref());
    if cluster.is_some() {
        let _ = cluster::announce(
            &run_dir,
            match error {
                None => cluster::LeaderPhase::Finished,
                Some(why) => cluster::LeaderPhase::Stopped { why },
            },
        );
    }
    outcome.map(RunOutcome::Complete)
}

/// The loop as a single process or the leader of a cluster runs it.
struct Lead<'a> {
    path: &'a Path,
    config: &'a PipelineConfig,
    split: &'a CoreSplit,
    options: &'a RunOptions,
    cluster: Option<&'a Cluster>,
    run_dir: &'a Path,
    benchmark: Option<&'a Benchmark>,
    reporter: &'a Arc<dyn Reporter>,
}

impl Lead<'_> {
    fn run(&self, base: ModelSource, started: Instant) -> Result<LoopSummary, PipelineError> {
        let (config, run_dir, notes) = (self.config, self.run_dir, &**self.reporter);
        let mut summary = LoopSummary {
            run: config.name.clone(),
            iterations: Vec::new(),
            models: Vec::new(),
            stopped_early: None,
            wall_s: 0.0,
        };
        let mut current = first_model(run_dir, &base)?;
        let mut source = base;
        for t in 0..config.iterations {
            if let Some(benchmark) = self.benchmark {
                benchmark.measure(&mut current, &source, run_dir, notes)?;
            }
            if self.cluster.is_some() && !iteration::is_complete(run_dir, t)? {
                cluster::announce(run_dir, cluster::LeaderPhase::Graph { iteration: t })?;
            }
            let it = Iteration {
                config,
                split: self.split,
                pipeline: self.path,
                run_dir,
                index: t,
                model: &source,
                model_name: &current.name,
                cluster: self.cluster,
            };
            let IterationOutcome::Summary(iteration) = run_iteration(&it, self.reporter)? else {
                unreachable!("the leader's iteration has a summary");
            };
            let selected = iteration.sft_rows > 0;
            summary.iterations.push(*iteration);
            if let Some(stop) = loop_stops(config, t, selected) {
                summary.stopped_early = stop;
                break;
            }
            let train = config
                .train
                .as_ref()
                .expect("loop_stops goes on only with [train]");
            let trainer = match &self.options.trainer {
                Some(program) => program.clone(),
                None => TrainerProgram::current(t)?,
            };
            let next = train_next_model(
                &TrainStep {
                    config: train,
                    pipeline: self.path,
                    run_dir,
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
        if let Some(benchmark) = self.benchmark {
            benchmark.measure(&mut current, &source, run_dir, notes)?;
        }
        summary.models.push(current);
        summary.wall_s = started.elapsed().as_secs_f64();
        write_json_atomic(&run_dir.join("summary.json"), &summary)?;
        Ok(summary)
    }
}

/// Whether the loop ends after iteration `t`: `Some(None)` as planned (no `[train]`, or the last
/// iteration without training after it), `Some(Some(why))` early (nothing selected to train
/// on), `None` to train the next model.
fn loop_stops(config: &PipelineConfig, t: u32, selected: bool) -> Option<Option<String>> {
    let Some(train) = &config.train else {
        return Some(None);
    };
    let last = t + 1 == config.iterations;
    if last && !train.after_last_iteration {
        return Some(None);
    }
    if !selected {
        return Some(Some(format!(
            "iteration {t} selected nothing, so there is no data to train {} on",
            model_name(t + 1)
        )));
    }
    None
}

/// A follower's share of the loop: each iteration's graph with the leader, on the model the
/// leader trained for it ([`cluster`]).
fn follow(
    path: &Path,
    config: &PipelineConfig,
    split: &CoreSplit,
    me: &Cluster,
    reporter: &Arc<dyn Reporter>,
) -> Result<RunOutcome, PipelineError> {
    let notes: &dyn Reporter = &**reporter;
    let base = crate::models::resolve(&config.model.name, &crate::fetch::cache_dir(), notes)?;
    let run_dir = config.run_dir();
    let stale = cluster::leader_state(&run_dir)?;
    cluster::wait_for_claim(
        &run_dir,
        &result_settings(config),
        &model_identity(&base),
        notes,
    )?;
    notes.note(&format!(
        "process {} of {}: running with process 0 on {}",
        me.process,
        me.processes(),
        run_dir.display()
    ));
    let mut iterations = 0;
    for t in 0..config.iterations {
        if !iteration::is_complete(&run_dir, t)? {
            cluster::wait_for_leader(&run_dir, t, stale.as_ref(), notes)?;
        }
        let name = model_name(t);
        let source = match t {
            0 => base.clone(),
            _ => {
                let record = ModelRecord::load(&run_dir, &name)?.ok_or_else(|| {
                    PipelineError::Stopped(format!(
                        "process 0 started iteration {t} but {} has no record of {name}",
                        run_dir.display()
                    ))
                })?;
                ModelSource::Safetensors(record.path)
            }
        };
        let it = Iteration {
            config,
            split,
            pipeline: path,
            run_dir: &run_dir,
            index: t,
            model: &source,
            model_name: &name,
            cluster: Some(me),
        };
        let outcome = run_iteration(&it, reporter)?;
        iterations += 1;
        if loop_stops(config, t, outcome.sft_rows() > 0).is_some() {
            break;
        }
    }
    Ok(RunOutcome::Followed {
        process: me.process,
        run_dir,
        iterations,
    })
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
    if let Some(url) = &options.server_url {
        let Some(server) = config.model.server.as_mut() else {
            return Err(invalid(format!(
                "--server-url {url}: the file's [model] backend is not \"openai\" (add [model] backend = \"openai\" and [model.server])"
            )));
        };
        server.base_url = url.clone();
        crate::config::validate_backend(config.model.backend, config.model.server.as_ref())
            .map_err(|e| invalid(format!("--server-url: {}", e.why)))?;
    }
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
    fn the_loop_trains_only_with_train_and_data() {
        let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.toml");
        let mut config = PipelineConfig::load(&smoke).unwrap();
        config.iterations = 2;
        let train = config.train.clone().expect("smoke.toml trains");
        assert_eq!(
            loop_stops(&config, 0, true),
            None,
            "iteration 0 of 2 trains M1"
        );
        assert!(
            loop_stops(&config, 0, false)
                .is_some_and(|why| why.unwrap().contains("selected nothing")),
            "nothing selected: nothing to train on"
        );
        config.train = Some(crate::train::TrainConfig {
            after_last_iteration: false,
            ..train
        });
        assert_eq!(
            loop_stops(&config, 1, true),
            Some(None),
            "the last iteration"
        );
        config.train = None;
        assert_eq!(
            loop_stops(&config, 0, true),
            Some(None),
            "no [train]: one iteration"
        );
    }

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
