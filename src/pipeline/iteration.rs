//! One iteration of the loop: the IPC graph on the iteration's model M_t, from problem
//! generation to the SFT shards, in `<run>/iter-<t>/` (docs/ARCHITECTURE.md, "The run").
//!
//! [`run_iteration`] loads the checkpoints an interrupted iteration committed, starts the
//! backends on M_t ([`super::backends`]), runs the graph ([`super::graph`]) on the dataflow
//! workers, writes the results ([`super::results`]) and the summary, and marks the iteration
//! complete in the manifest. A complete iteration is not run again: its summary is returned.
//!
//! Iteration t draws its request seeds from [`iteration_seed`]`(seed, t)`, so each iteration
//! asks for new problems; iteration 0 uses the pipeline's seed as it is.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::artifacts::{ExecutionMemo, ResponseMemo};
use super::backends::Backends;
use super::context::{Failure, GraphContext};
use super::progress::{Counters, ProgressFeed};
use super::results::{RESULT_DIRS, Results};
use super::stages::sft_sink::SftSink;
use super::stages::{LlmStage, StagePrompts, StageSettings, selector};
use super::summary::{FunnelCounts, RunSummary, classify_operators, rejection_key};
use super::{CoreSplit, PipelineError, graph};
use crate::config::PipelineConfig;
use crate::models::ModelSource;
use crate::progress::Reporter;
use crate::prompts::PromptSet;
use crate::store::{Manifest, StoreError, read_json, remove_dir, write_json_atomic};

/// One iteration to run.
pub struct Iteration<'a> {
    /// The pipeline's settings (iteration 0's seed; see [`iteration_seed`]).
    pub config: &'a PipelineConfig,
    pub split: &'a CoreSplit,
    /// The pipeline file, for notes.
    pub pipeline: &'a Path,
    pub run_dir: &'a Path,
    /// t.
    pub index: u32,
    /// M_t, the model this iteration generates with.
    pub model: &'a ModelSource,
    /// `M<t>`, as the lineage names it.
    pub model_name: &'a str,
}

/// The name of iteration t's folder inside the run folder, and its manifest entry.
pub fn iteration_name(index: u32) -> String {
    format!("iter-{index}")
}

/// The run seed iteration t uses: the pipeline's seed for t = 0, a fresh one derived from it
/// after, so an iteration does not ask the next model the same problem requests again.
pub fn iteration_seed(seed: u64, index: u32) -> u64 {
    match index {
        0 => seed,
        t => seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
    }
}

impl Iteration<'_> {
    /// `<run>/iter-<t>`.
    pub fn dir(&self) -> PathBuf {
        self.run_dir.join(iteration_name(self.index))
    }
}

/// Runs (or resumes) one iteration; see the module documentation.
pub fn run_iteration(
    it: &Iteration<'_>,
    reporter: &Arc<dyn Reporter>,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let notes: &dyn Reporter = &**reporter;
    let iter_dir = it.dir();
    let name = iteration_name(it.index);
    if let Some(summary) = finished_summary(it.run_dir, &name, &iter_dir)? {
        notes.note(&format!(
            "{} is complete; its summary is in {}",
            iter_dir.display(),
            iter_dir.join("summary.json").display()
        ));
        return Ok(summary);
    }
    fs::create_dir_all(&iter_dir).map_err(StoreError::io(&iter_dir))?;
    for dir in RESULT_DIRS {
        remove_dir(&iter_dir.join(dir))?;
    }
    let mut config = it.config.clone();
    config.seed = iteration_seed(config.seed, it.index);

    let (memos, executions) = load_checkpoints(&iter_dir)?;
    let replay: usize = memos.iter().map(ResponseMemo::len).sum();
    let resumed = replay > 0 || !executions.is_empty();
    if resumed {
        notes.note(&format!(
            "resuming {}: {replay} model requests and {} executions are already committed",
            iter_dir.display(),
            executions.len()
        ));
    }

    let backends = Backends::start(&config, it.split, it.model, notes)?;
    let counters = Arc::new(Counters::default());
    let failure = Failure::default();
    let context = Arc::new(GraphContext {
        stages: StagePrompts {
            prompts: Arc::new(PromptSet::builtin()?),
            settings: StageSettings::from_config(&config),
        },
        selection: selector::selection_config(&config),
        dedup_threshold: config.problems.dedup_threshold as f32,
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
        exec_batch: (it.split.sandbox_workers * 4).max(4),
        counters: Arc::clone(&counters),
        failure: failure.clone(),
        sft: Arc::new(SftSink {
            text: Arc::clone(&backends.text),
            dir: iter_dir.join("sft"),
            max_length: config.sft.max_length,
            shard_rows: config.sft.shard_rows,
        }),
        reporter: Arc::clone(reporter),
    });

    notes.note(&format!(
        "running {} iteration {} with {} into {}",
        it.pipeline.display(),
        it.index,
        it.model_name,
        iter_dir.display()
    ));
    let feed = ProgressFeed::start(
        Arc::clone(&counters),
        config.problems.count as u64,
        Arc::clone(reporter),
    );
    let graph_started = Instant::now();
    let outputs = run_graph(context, it.split.dataflow_workers)?;
    let graph_wall = graph_started.elapsed().as_secs_f64();
    drop(feed);
    let sandbox_isolation = backends.isolation.clone();
    let stage_times = backends.shutdown();
    if let Some(message) = failure.get() {
        return Err(PipelineError::Stopped(message));
    }

    let results = Results::gather(outputs, &config.selection.consensus());
    for r in results
        .rejections
        .iter()
        .filter(|r| r.stage == ucoder_operators::RecordStage::Selection)
    {
        notes.detail(&super::results::rejection_line(r));
    }
    results.write(&iter_dir)?;
    super::dataset_card::write(&iter_dir, it.index)?;
    let mut summary = summarize(&config, it.split, &counters, &results, resumed);
    summary.iteration = it.index;
    summary.model = it.model_name.to_string();
    summary.stage_times = stage_times;
    summary.sandbox_isolation = sandbox_isolation;
    summary.dataflow = classify_operators(&results.operator_seconds, graph_wall);
    summary.wall_s = started.elapsed().as_secs_f64();
    summary.selections_per_hour =
        results.selections.len() as f64 / (summary.wall_s / 3600.0).max(1e-9);
    write_json_atomic(&iter_dir.join("summary.json"), &summary)?;
    mark_complete(it, &results, summary.sft_rows)?;
    Ok(summary)
}

/// The summary of an iteration the manifest marks complete.
fn finished_summary(
    run_dir: &Path,
    name: &str,
    iter_dir: &Path,
) -> Result<Option<RunSummary>, StoreError> {
    let complete = Manifest::load(run_dir)?
        .and_then(|m| m.stages.get(name).cloned())
        .and_then(|s| s.get("complete").and_then(|c| c.as_bool()))
        == Some(true);
    if complete {
        read_json::<RunSummary>(&iter_dir.join("summary.json"))
    } else {
        Ok(None)
    }
}

/// The completions and executions an interrupted iteration committed.
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

/// Marks the iteration complete in the manifest, with the model it generated with.
fn mark_complete(it: &Iteration<'_>, results: &Results, sft_rows: usize) -> Result<(), StoreError> {
    let mut manifest = Manifest::load(it.run_dir)?.expect("claimed by this run");
    manifest.stages.insert(
        iteration_name(it.index),
        serde_json::json!({
            "complete": true,
            "model": it.model_name,
            "problems": results.ready.len(),
            "selections": results.selections.len(),
            "sft_rows": sft_rows,
        }),
    );
    manifest.save(it.run_dir)
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
    let counts = FunnelCounts {
        problems_requested: config.problems.count as u64,
        problems_parsed: c(&counters.problems_parsed),
        problems_unique: c(&counters.problems_unique),
        problems_rated: c(&counters.problems_rated),
        min_score: config.rating.min_score,
        skeletons_checked: c(&counters.skeletons),
        problems_with_tests: c(&counters.problems_ready),
        tests_parsed: c(&counters.tests_parsed),
        tests_kept: c(&counters.tests_kept),
        solutions_sampled: c(&counters.samples),
        candidates: c(&counters.candidates),
        candidates_given_imports: c(&counters.candidates_given_imports),
        candidates_executed: c(&counters.executions),
        test_runs: c(&counters.test_runs),
        test_runs_skipped: c(&counters.test_runs_skipped),
        test_runs_decided_in_child: c(&counters.test_runs_in_child),
        nondeterministic_candidates: c(&counters.nondeterministic),
        clusters: results.clusters.len() as u64,
        selections: results.selections.len() as u64,
        replayed_completions: c(&counters.replayed_completions),
        replayed_executions: c(&counters.replayed_executions),
    };
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
        iteration: 0,
        model: String::new(),
        wall_s: 0.0,
        resumed,
        engine_threads: split.engine_threads,
        sandbox_workers: split.sandbox_workers,
        dataflow_workers: split.dataflow_workers,
        counts: counts.clone(),
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
        low_yields: counts.low_yields(config.tests.per_problem),
    }
}
