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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::artifacts::{ExecutionMemo, ResponseMemo};
use super::backends::Backends;
use super::cluster::Cluster;
use super::context::{Failure, GraphContext};
use super::gather::Gathered;
use super::progress::{Counters, ProgressFeed};
use super::results::{RESULT_DIRS, Results};
use super::segments::{IterationSegments, SegmentRecorder};
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
    /// This process's place when the run spans several processes.
    pub cluster: Option<&'a Cluster>,
}

/// What an iteration leaves to the loop.
#[derive(Debug)]
pub enum IterationOutcome {
    /// The iteration's summary (a single process, or the leader of a cluster).
    Summary(Box<RunSummary>),
    /// A follower's part is done; the leader wrote the results.
    Followed {
        /// The SFT rows the leader wrote.
        sft_rows: usize,
    },
}

impl IterationOutcome {
    /// The SFT rows the iteration wrote.
    pub fn sft_rows(&self) -> usize {
        match self {
            IterationOutcome::Summary(summary) => summary.sft_rows,
            IterationOutcome::Followed { sft_rows } => *sft_rows,
        }
    }
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

    /// Whether this process writes the results (a single process, or the cluster's leader).
    fn leads(&self) -> bool {
        self.cluster.is_none_or(Cluster::is_leader)
    }
}

/// Runs (or resumes) one iteration; see the module documentation.
pub fn run_iteration(
    it: &Iteration<'_>,
    reporter: &Arc<dyn Reporter>,
) -> Result<IterationOutcome, PipelineError> {
    let started = Instant::now();
    let notes: &dyn Reporter = &**reporter;
    let iter_dir = it.dir();
    if let Some(summary) = finished_summary(it)? {
        notes.note(&format!(
            "{} is complete; its summary is in {}",
            iter_dir.display(),
            iter_dir.join("summary.json").display()
        ));
        return Ok(IterationOutcome::Summary(Box::new(summary)));
    }
    fs::create_dir_all(&iter_dir).map_err(StoreError::io(&iter_dir))?;
    if it.leads() {
        for dir in RESULT_DIRS {
            remove_dir(&iter_dir.join(dir))?;
        }
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
        clocks: backends.clocks.clone(),
        local_workers: it.split.dataflow_workers,
        failure: Failure::default(),
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
    // The leader keeps the iteration's time over its segments (the followers' is in its gather).
    let recorder = it
        .leads()
        .then(|| SegmentRecorder::start(&iter_dir, backends.clocks.clone(), started));
    let graph_started = Instant::now();
    let gathered = run_graph(context, it.split.dataflow_workers, it.cluster);
    let graph_wall = graph_started.elapsed().as_secs_f64();
    drop(feed);
    let gathered = gathered?;
    let sandbox_isolation = backends.isolation.clone();
    backends.shutdown();
    if !it.leads() {
        return Ok(IterationOutcome::Followed {
            sft_rows: gathered.sft_rows,
        });
    }

    let results = Results::gather(gathered.parts, &config.selection.consensus());
    for r in results
        .rejections
        .iter()
        .filter(|r| r.stage == ucoder_operators::RecordStage::Selection)
    {
        notes.detail(&super::results::rejection_line(r));
    }
    results.write(&iter_dir)?;
    super::dataset_card::write(&iter_dir, it.index)?;
    let counters = Counters::from_values(&results.counters);
    let mut summary = summarize(&config, it.split, &counters, &results, resumed);
    summary.iteration = it.index;
    summary.model = it.model_name.to_string();
    summary.processes = it.cluster.map_or(1, Cluster::processes);
    summary.sandbox_isolation = sandbox_isolation;
    summary.dataflow = classify_operators(&results.operator_seconds, graph_wall);
    if let Some(recorder) = recorder {
        recorder.finish(results.stage_times.clone())?;
    }
    let segments = IterationSegments::read(&iter_dir)?;
    let total = segments.total();
    summary.segments = segments.0.len() as u32;
    summary.segment_wall_s = started.elapsed().as_secs_f64();
    summary.wall_s = total.wall_s.max(summary.segment_wall_s);
    summary.stage_times = total.stage_times;
    summary.selections_per_hour =
        results.selections.len() as f64 / (summary.wall_s / 3600.0).max(1e-9);
    write_json_atomic(&iter_dir.join("summary.json"), &summary)?;
    mark_complete(it, &results, summary.sft_rows)?;
    Ok(IterationOutcome::Summary(Box::new(summary)))
}

/// Whether the manifest marks iteration `index` complete.
pub fn is_complete(run_dir: &Path, index: u32) -> Result<bool, StoreError> {
    Ok(Manifest::load(run_dir)?
        .and_then(|m| m.stages.get(&iteration_name(index)).cloned())
        .and_then(|s| s.get("complete").and_then(|c| c.as_bool()))
        == Some(true))
}

/// The summary of an iteration the manifest marks complete.
fn finished_summary(it: &Iteration<'_>) -> Result<Option<RunSummary>, StoreError> {
    if is_complete(it.run_dir, it.index)? {
        read_json::<RunSummary>(&it.dir().join("summary.json"))
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

/// What a worker thread reports to [`run_graph`].
type WorkerReport = Result<Gathered, String>;

/// Runs the graph on this process's `workers` timely workers (alone, or with the other processes
/// of `cluster`) until the iteration is complete, and returns what worker 0 gathered (the
/// leader's) or, on the other workers' processes, the SFT row count.
///
/// Timely runs on a thread of its own, and each worker reports its outcome as it ends (a panic
/// included, caught: that is how timely says a process of the cluster was lost). The first
/// failure is returned at once, without waiting for timely to wind down: a cluster whose process
/// died never does, and this process ending is what tells the other processes to stop.
fn run_graph(
    context: Arc<GraphContext>,
    workers: usize,
    cluster: Option<&Cluster>,
) -> Result<Gathered, PipelineError> {
    let config = super::cluster::timely_config(cluster, workers);
    let (report, reports) = crossbeam_channel::unbounded::<WorkerReport>();
    let timely = std::thread::Builder::new()
        .name("timely".into())
        .spawn(move || {
            let start = report.clone();
            let guards = timely::execute(config, move |worker| {
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    graph::run_worker(worker, &context)
                }))
                .unwrap_or_else(|panic| {
                    let why = format!(
                        "a timely worker stopped ({}); when the run spans several processes, \
                             one of them has stopped or cannot be reached",
                        panic_text(&*panic)
                    );
                    context.failure.set(why.clone());
                    Err(why)
                });
                let _ = report.send(outcome);
            });
            match guards {
                Ok(guards) => drop(guards.join()),
                Err(e) => drop(start.send(Err(format!("starting timely: {e}")))),
            }
        })
        .map_err(|e| PipelineError::Timely(format!("spawning timely's thread: {e}")))?;
    let mut gathered = None;
    for _ in 0..workers {
        let outcome = reports
            .recv()
            .map_err(|_| PipelineError::Timely("timely ended without its workers".into()))?;
        match outcome.map_err(PipelineError::Stopped)? {
            g if !g.parts.is_empty() => gathered = Some(g),
            g => gathered = gathered.or(Some(g)),
        }
    }
    // Every worker is done: timely winds down (the other processes' workers are done too).
    let _ = timely.join();
    Ok(gathered.unwrap_or_default())
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
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
        segment_wall_s: 0.0,
        segments: 1,
        resumed,
        engine_threads: split.engine_threads,
        sandbox_workers: split.sandbox_workers,
        dataflow_workers: split.dataflow_workers,
        processes: 1,
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
