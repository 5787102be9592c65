//! `ucoder-flow run PIPELINE.toml`: one IPC iteration from problem generation to SFT shards, as a
//! timely dataflow over the in-process engine and the sandbox (docs/ARCHITECTURE.md, "The run").
//!
//! [`run`] reads as its phases: load the settings and plan the cores ([`CoreSplit`]); claim the
//! run folder (the same command on an interrupted run resumes it, a folder made with other
//! settings is refused); load the checkpoints of an interrupted run; start the backends
//! ([`backends`]); run the graph ([`graph`], which connects the [`stages`]) on
//! `dataflow_workers` timely workers; write the results ([`results`]) and the summary
//! ([`summary`]).

pub mod artifacts;
pub mod backends;
pub mod context;
pub mod cores;
pub mod graph;
pub mod progress;
pub mod results;
pub mod stages;
pub mod summary;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use self::artifacts::{ExecutionMemo, ResponseMemo};
use self::backends::Backends;
use self::context::{Failure, GraphContext};
use self::progress::{Counters, ProgressFeed};
use self::results::Results;
use self::stages::sft_sink::SftSink;
use self::stages::{LlmStage, StagePrompts, StageSettings, selector};
use self::summary::{RunSummary, classify_operators, rejection_key};
use crate::config::{ConfigError, PipelineConfig};
use crate::llm::LlmError;
use crate::models::{ModelError, ModelSource};
use crate::progress::Reporter;
use crate::prompts::{PromptError, PromptSet};
use crate::sandbox::SandboxError;
use crate::store::{Claim, Manifest, StoreError, read_json, remove_dir, write_json_atomic};

pub use self::cores::CoreSplit;
pub use self::results::RESULT_DIRS;

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
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the run stopped: {0} (committed work is kept; run the same command again to resume)")]
    Stopped(String),
    #[error("timely: {0}")]
    Timely(String),
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
}

/// Runs (or resumes) the pipeline in `path`, reporting notes and live gauges to `reporter`.
pub fn run(
    path: &Path,
    options: &RunOptions,
    reporter: Arc<dyn Reporter>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let notes: &dyn Reporter = &*reporter;
    let (config, split) = load_settings(path, options)?;
    let source = crate::models::resolve(&config.model.name, &crate::fetch::cache_dir(), notes)?;
    let run_dir = config.run_dir();
    let iter_dir = run_dir.join("iter-0");
    fs::create_dir_all(&iter_dir).map_err(StoreError::io(&iter_dir))?;

    let claim = Manifest::claim(
        &run_dir,
        "ipc",
        result_settings(&config),
        model_identity(&source),
    )?;
    if let Some(summary) = finished_summary(&claim, &iter_dir)? {
        notes.note(&format!(
            "{} is complete; its summary is in {}",
            run_dir.display(),
            iter_dir.join("summary.json").display()
        ));
        return Ok(summary);
    }
    for name in RESULT_DIRS {
        remove_dir(&iter_dir.join(name))?;
    }

    let (memos, executions) = load_checkpoints(&iter_dir)?;
    if claim.resumed() {
        let replay: usize = memos.iter().map(ResponseMemo::len).sum();
        notes.note(&format!(
            "resuming {}: {replay} model requests and {} executions are already committed",
            run_dir.display(),
            executions.len()
        ));
    }

    let backends = Backends::start(&config, &split, &source, notes)?;
    let counters = Arc::new(Counters::default());
    let failure = Failure::default();
    let context = Arc::new(GraphContext {
        stages: StagePrompts {
            prompts: Arc::new(PromptSet::builtin()?),
            settings: StageSettings::from_config(&config),
        },
        selection: selector::selection_config(&config),
        dedup_threshold: config.problems.dedup_threshold,
        problem_count: config.problems.count as u64,
        llm: backends.llm_handles(),
        exec: backends.exec.handle(),
        check: backends.check.handle(),
        check_limits: backends.limits.clone(),
        memos,
        executions,
        iter_dir: iter_dir.clone(),
        llm_batch: 16,
        sample_rows: 64,
        exec_batch: (split.sandbox_workers * 4).max(4),
        counters: Arc::clone(&counters),
        failure: failure.clone(),
        sft: Arc::new(SftSink {
            engine: Arc::clone(&backends.engine),
            dir: iter_dir.join("sft"),
            max_length: config.sft.max_length,
            shard_rows: config.sft.shard_rows,
        }),
    });

    notes.note(&format!(
        "running {} into {}",
        path.display(),
        iter_dir.display()
    ));
    let feed = ProgressFeed::start(
        Arc::clone(&counters),
        config.problems.count as u64,
        Arc::clone(&reporter),
    );
    let graph_started = Instant::now();
    let outputs = run_graph(context, split.dataflow_workers)?;
    let graph_wall = graph_started.elapsed().as_secs_f64();
    drop(feed);
    let sandbox_isolation = backends.isolation.clone();
    let stage_times = backends.shutdown();
    if let Some(message) = failure.get() {
        return Err(PipelineError::Stopped(message));
    }

    let results = Results::gather(outputs);
    results.write(&iter_dir)?;
    let mut summary = summarize(&config, &split, &counters, &results, claim.resumed());
    summary.stage_times = stage_times;
    summary.sandbox_isolation = sandbox_isolation;
    summary.dataflow = classify_operators(&results.operator_seconds, graph_wall);
    summary.wall_s = started.elapsed().as_secs_f64();
    summary.selections_per_hour =
        results.selections.len() as f64 / (summary.wall_s / 3600.0).max(1e-9);
    write_json_atomic(&iter_dir.join("summary.json"), &summary)?;
    mark_complete(&run_dir, &results, summary.sft_rows)?;
    Ok(summary)
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
    if config.iterations != 1 {
        return Err(invalid(format!(
            "iterations = {}: `run` performs one iteration (the built-in trainer that makes \
             the next iteration's model is not available yet); set iterations = 1",
            config.iterations
        )));
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split = CoreSplit::plan(&config.resources, available).map_err(invalid)?;
    Ok((config, split))
}

/// The settings that decide a run's results (everything but resources, folders and the
/// trainer's settings), as JSON.
fn result_settings(config: &PipelineConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(config).expect("the config serializes");
    if let Some(map) = value.as_object_mut() {
        map.remove("resources");
        map.remove("runs_dir");
        map.remove("train");
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

/// The summary of a run folder whose iteration is complete.
fn finished_summary(claim: &Claim, iter_dir: &Path) -> Result<Option<RunSummary>, StoreError> {
    let complete = claim
        .manifest()
        .stages
        .get("iter-0")
        .and_then(|s| s.get("complete"))
        .and_then(|c| c.as_bool())
        == Some(true);
    if claim.resumed() && complete {
        read_json::<RunSummary>(&iter_dir.join("summary.json"))
    } else {
        Ok(None)
    }
}

/// The completions and executions an interrupted run committed.
fn load_checkpoints(iter_dir: &Path) -> Result<(Vec<ResponseMemo>, ExecutionMemo), StoreError> {
    let memos = LlmStage::ALL
        .iter()
        .map(|s| ResponseMemo::load(&iter_dir.join(s.dir_name())))
        .collect::<Result<Vec<_>, _>>()?;
    let executions = ExecutionMemo::load(&iter_dir.join("executions"))?;
    Ok((memos, executions))
}

/// Runs the graph on `workers` timely workers until the iteration is complete (or a failure).
fn run_graph(context: Arc<GraphContext>, workers: usize) -> Result<Vec<Results>, PipelineError> {
    timely::execute(timely::Config::process(workers), move |worker| {
        graph::run_worker(worker, &context)
    })
    .map_err(PipelineError::Timely)?
    .join()
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(PipelineError::Timely)
}

/// The closing summary's counts (timings are filled in by [`run`]).
fn summarize(
    config: &PipelineConfig,
    split: &CoreSplit,
    counters: &Counters,
    results: &Results,
    resumed: bool,
) -> RunSummary {
    let c = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let counts = [
        (
            "problems requested".to_string(),
            config.problems.count as u64,
        ),
        ("problems parsed".to_string(), c(&counters.problems_parsed)),
        (
            "problems after de-duplication".to_string(),
            c(&counters.problems_unique),
        ),
        (
            format!("problems rated >= {}", config.rating.min_score),
            c(&counters.problems_rated),
        ),
        ("skeletons checked".to_string(), c(&counters.skeletons)),
        (
            "problems with tests".to_string(),
            c(&counters.problems_ready),
        ),
        ("tests parsed".to_string(), c(&counters.tests_parsed)),
        ("tests kept".to_string(), c(&counters.tests_kept)),
        ("solutions sampled".to_string(), c(&counters.samples)),
        (
            "candidates (code extracted)".to_string(),
            c(&counters.candidates),
        ),
        (
            "  given a missing standard-library import".to_string(),
            c(&counters.candidates_given_imports),
        ),
        ("candidates executed".to_string(), c(&counters.executions)),
        ("test runs".to_string(), c(&counters.test_runs)),
        (
            "  skipped (e(r) >= rho out of reach)".to_string(),
            c(&counters.test_runs_skipped),
        ),
        (
            "  decided in the child".to_string(),
            c(&counters.test_runs_in_child),
        ),
        (
            "candidates whose results change with the hash seed".to_string(),
            c(&counters.nondeterministic),
        ),
        ("clusters".to_string(), results.clusters.len() as u64),
        ("selections".to_string(), results.selections.len() as u64),
        (
            "completions replayed from checkpoints".to_string(),
            c(&counters.replayed_completions),
        ),
        (
            "executions replayed from checkpoints".to_string(),
            c(&counters.replayed_executions),
        ),
    ];
    let mut rejections = BTreeMap::new();
    for r in &results.rejections {
        *rejections.entry(rejection_key(r)).or_insert(0u64) += 1;
    }
    let mut cluster_sizes = BTreeMap::new();
    for (_, size) in &results.clusters {
        *cluster_sizes.entry(*size).or_insert(0u64) += 1;
    }
    let mut selected_cluster_sizes = BTreeMap::new();
    for (s, _, _) in &results.selections {
        *selected_cluster_sizes.entry(s.cluster_size).or_insert(0u64) += 1;
    }
    let sft = results.sft.clone().unwrap_or_default();
    RunSummary {
        run: config.name.clone(),
        wall_s: 0.0,
        resumed,
        engine_threads: split.engine_threads,
        sandbox_workers: split.sandbox_workers,
        dataflow_workers: split.dataflow_workers,
        counts: counts.into(),
        rejections,
        cluster_sizes,
        selected_cluster_sizes,
        stage_times: Vec::new(),
        dataflow: Default::default(),
        selections: results.selections.len() as u64,
        selections_per_hour: 0.0,
        sft_examples: sft.examples,
        sft_rows: sft.rows,
        sft_tokens: sft.tokens,
        sandbox_isolation: BTreeMap::new(),
    }
}

/// Marks the iteration complete in the manifest.
fn mark_complete(run_dir: &Path, results: &Results, sft_rows: usize) -> Result<(), StoreError> {
    let mut manifest = Manifest::load(run_dir)?.expect("claimed by this run");
    manifest.stages.insert(
        "iter-0".into(),
        serde_json::json!({
            "complete": true,
            "problems": results.ready.len(),
            "selections": results.selections.len(),
            "sft_rows": sft_rows,
        }),
    );
    manifest.save(run_dir)
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
