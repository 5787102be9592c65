//! `ucoder-flow run PIPELINE.toml`: one IPC iteration (DESIGN §1, §2, §4, §7) from problem
//! generation to SFT shards, as a timely dataflow over the in-process engine and the sandbox.
//!
//! This module is the driver: it loads the pipeline file, plans the core budget
//! ([`CoreSplit`]), checks the run folder's manifest (the same command on an interrupted run
//! resumes it; a folder made with other settings is refused), starts the backends, runs the
//! graph ([`graph`]) on `dataflow_workers` timely workers, and writes the results and the
//! summary. What each stage asks and how it judges answers is in [`stages`]; the tables are in
//! [`artifacts`]; progress bars and the summary table in [`progress`].

pub mod artifacts;
pub mod backends;
pub mod graph;
pub mod progress;
pub mod stages;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use ucoder_operators::{
    BackendPool, ExecuteService, GenerateService, SelectionConfig, SelectionRule, SignatureKind,
};

use self::artifacts::{
    ClusterRow, ExecutionMemo, ProblemRow, RejectionRow, ResponseMemo, SelectionRow, TestCaseRow,
};
use self::backends::{CandleGenerator, SandboxChecker, SandboxExecutor, StageClock};
use self::graph::{Failure, GraphContext, SftWriter, WorkerOutput};
use self::progress::{Counters, DataflowTime, ProgressBars, RunSummary, StageTime};
use self::stages::{LlmStage, StagePrompts, StageSettings};
use crate::config::{
    ConfigError, PipelineConfig, ResourceConfig, SelectorConfig, SignatureKindConfig,
};
use crate::llm::{Engine, EngineOptions, LlmError};
use crate::models::{ModelError, ModelSource};
use crate::prompts::{PromptError, PromptSet};
use crate::sandbox::{Limits, SandboxConfig, SandboxError, SandboxPool};
use crate::sft::sink::{SftPair, write_sft};
use crate::store::{Manifest, Record, Stage, StoreError, read_json, write_json_atomic};

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
    #[error(
        "{dir} holds a run made with different settings ({fields}); use another `name` (or --runs-dir), or delete the folder to start over"
    )]
    SettingsChanged { dir: PathBuf, fields: String },
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
    /// No progress bars.
    pub quiet: bool,
}

/// How the configured cores are shared between the engine and the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CoreSplit {
    pub cores: usize,
    pub engine_threads: usize,
    pub sandbox_workers: usize,
    pub dataflow_workers: usize,
}

impl CoreSplit {
    /// Plans the split: by default a quarter of the cores (at least one) run sandbox workers and
    /// the rest run the engine. Engine threads plus sandbox workers never exceed `cores`
    /// (candle's threads busy-wait; oversubscribing them costs several-fold). Timely workers are
    /// not counted: they park when idle and do little work.
    pub fn plan(resources: &ResourceConfig, available: usize) -> Result<Self, String> {
        let cores = resources.cores.unwrap_or(available).max(1);
        let sandbox_workers = resources
            .sandbox_workers
            .unwrap_or_else(|| (cores / 4).max(1));
        let engine_threads = resources
            .engine_threads
            .unwrap_or_else(|| cores.saturating_sub(sandbox_workers).max(1));
        if sandbox_workers == 0 || engine_threads == 0 {
            return Err(
                "resources.engine_threads and resources.sandbox_workers must be at least 1".into(),
            );
        }
        if engine_threads + sandbox_workers > cores {
            return Err(format!(
                "resources: engine_threads ({engine_threads}) + sandbox_workers ({sandbox_workers}) exceed cores ({cores}); \
                 candle's threads busy-wait, so an oversubscribed CPU slows decoding several-fold. \
                 Lower one of them, or raise resources.cores if this machine really has more"
            ));
        }
        Ok(CoreSplit {
            cores,
            engine_threads,
            sandbox_workers,
            dataflow_workers: resources.dataflow_workers.max(1),
        })
    }
}

/// The operators crate's selection settings for the pipeline's `[selection]`.
fn selection_config(config: &PipelineConfig) -> SelectionConfig {
    SelectionConfig {
        rho: f64::from(config.selection.rho),
        tau: config.selection.tau as u32,
        rule: match config.selection.selector {
            SelectorConfig::Largest => SelectionRule::Consensus,
            SelectorConfig::DualAgreement => SelectionRule::DualAgreement,
        },
        signature: match config.selection.signature {
            SignatureKindConfig::PassFail => SignatureKind::PassFail,
            SignatureKindConfig::Output => SignatureKind::Output,
        },
    }
}

/// The settings that decide a run's results (everything but resources and folders), as JSON.
fn result_settings(config: &PipelineConfig) -> serde_json::Value {
    let mut value = serde_json::to_value(config).expect("the config serializes");
    if let Some(map) = value.as_object_mut() {
        map.remove("resources");
        map.remove("runs_dir");
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

/// Derived result folders, rebuilt by every run that completes an iteration.
pub const RESULT_DIRS: [&str; 6] = [
    "problem_set",
    "test_cases",
    "clusters",
    "selections",
    "rejections",
    "sft",
];

/// Writes `rows` as the result table `iter_dir/name`, replacing an older one whole.
fn write_table<R: Record>(iter_dir: &Path, name: &str, rows: &[R]) -> Result<PathBuf, StoreError> {
    let dest = iter_dir.join(name);
    let building = iter_dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if building.exists() {
        fs::remove_dir_all(&building).map_err(StoreError::io(&building))?;
    }
    Stage::<R>::open(&building, 0)?.commit(rows)?;
    if dest.exists() {
        fs::remove_dir_all(&dest).map_err(StoreError::io(&dest))?;
    }
    fs::rename(&building, &dest).map_err(StoreError::io(&dest))?;
    Ok(dest)
}

/// The stored name of a record stage (`problem`, `rating`, ...).
fn stage_label(stage: ucoder_operators::Stage) -> String {
    serde_json::to_value(stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The summary's key of a rejection: `stage/reason`, plus the parser's label for unparseable ones.
fn rejection_key(stage: ucoder_operators::Stage, reason: &str, detail: &str) -> String {
    let stage = stage_label(stage);
    match detail.split_once(':') {
        Some((label, _))
            if reason == "unparseable"
                && !label.is_empty()
                && label.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
        {
            format!("{stage}/{reason}/{label}")
        }
        _ => format!("{stage}/{reason}"),
    }
}

fn classify_operators(seconds: &BTreeMap<String, f64>, wall: f64) -> DataflowTime {
    const STAGE_OPERATORS: [&str; 5] = [
        "NearDuplicateFilter",
        "TestAssembler",
        "SolutionRounds",
        "SftSink",
        "ClusterLog",
    ];
    const CONSENSUS_WORDS: [&str; 8] = [
        "Arrange",
        "Reduce",
        "Join",
        "Count",
        "Selector",
        "Standings",
        "Consolidate",
        "Threshold",
    ];
    let mut t = DataflowTime::default();
    let mut top: Vec<(String, f64)> = Vec::new();
    for (name, &s) in seconds {
        if name.starts_with("Dataflow") {
            continue; // the dataflow's own scope: it encloses every operator's time
        }
        t.total_s += s;
        if name.ends_with("Checkpoint") || STAGE_OPERATORS.contains(&name.as_str()) {
            t.stages_s += s;
        } else if CONSENSUS_WORDS.iter().any(|w| name.contains(w)) || name == "AsInsertions" {
            t.consensus_s += s;
        } else {
            t.plumbing_s += s;
        }
        top.push((name.clone(), s));
    }
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(8);
    t.top_operators = top;
    t.fraction_of_wall = if wall > 0.0 {
        (t.consensus_s + t.plumbing_s) / wall
    } else {
        0.0
    };
    t
}

/// Runs (or resumes) the pipeline in `path`; `say` receives progress lines.
pub fn run(
    path: &Path,
    options: &RunOptions,
    say: &dyn Fn(&str),
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let mut config = PipelineConfig::load(path)?;
    if let Some(dir) = &options.runs_dir {
        config.runs_dir = dir.clone();
    }
    if let Some(model) = &options.model {
        config.model.name = model.clone();
    }
    if let Some(w) = options.workers {
        config.resources.dataflow_workers = w.max(1);
    }
    if config.sampling.adaptive {
        return Err(PipelineError::Invalid {
            path: path.to_path_buf(),
            why: "sampling.adaptive = true: adaptive sampling exists as an operator \
                  (ucoder_operators::AdaptiveSampling) but is not wired into the run yet; \
                  set it to false to sample all n candidates as the paper does"
                .into(),
        });
    }
    if config.iterations != 1 {
        return Err(PipelineError::Invalid {
            path: path.to_path_buf(),
            why: format!(
                "iterations = {}: `run` performs one iteration (the built-in trainer that makes \
                 the next iteration's model is not available yet); set iterations = 1",
                config.iterations
            ),
        });
    }
    let available = std::thread::available_parallelism().map_or(1, |n| n.get());
    let split =
        CoreSplit::plan(&config.resources, available).map_err(|why| PipelineError::Invalid {
            path: path.to_path_buf(),
            why,
        })?;
    if split.cores > available {
        say(&format!(
            "warning: resources.cores = {} but this machine has {available}; engine threads and \
             sandbox workers will compete for cores",
            split.cores
        ));
    }

    let cache = crate::fetch::cache_dir();
    let source = crate::models::resolve(&config.model.name, &cache, say)?;
    let run_dir = config.run_dir();
    let iter_dir = run_dir.join("iter-0");
    fs::create_dir_all(&iter_dir).map_err(StoreError::io(&iter_dir))?;

    // The manifest: refuse a folder made with other settings; report a finished run as it is.
    let settings = result_settings(&config);
    let digest = crate::store::manifest::digest_json(&settings);
    let model = model_identity(&source);
    let resumed = match Manifest::load(&run_dir)? {
        Some(existing) => {
            if existing.config_digest != digest || existing.model != model {
                let mut fields: Vec<String> = Vec::new();
                if existing.model != model {
                    fields.push(format!("model: {} → {model}", existing.model));
                }
                if let (Some(old), Some(new)) = (existing.config.as_object(), settings.as_object())
                {
                    for (key, value) in new {
                        if old.get(key) != Some(value) {
                            fields.push(format!("[{key}]"));
                        }
                    }
                }
                return Err(PipelineError::SettingsChanged {
                    dir: run_dir,
                    fields: fields.join(", "),
                });
            }
            if existing
                .stages
                .get("iter-0")
                .and_then(|s| s.get("complete"))
                .and_then(|c| c.as_bool())
                == Some(true)
                && let Some(summary) = read_json::<RunSummary>(&iter_dir.join("summary.json"))?
            {
                say(&format!(
                    "{} is complete; its summary is in {}",
                    run_dir.display(),
                    iter_dir.join("summary.json").display()
                ));
                return Ok(summary);
            }
            true
        }
        None => {
            Manifest {
                job: "ipc".into(),
                created_by: format!("ucoder-flow {}", env!("CARGO_PKG_VERSION")),
                config_digest: digest.clone(),
                config: settings.clone(),
                model: model.clone(),
                stages: BTreeMap::new(),
            }
            .save(&run_dir)?;
            false
        }
    };
    for name in RESULT_DIRS {
        let dir = iter_dir.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))?;
        }
    }

    // Checkpoints from an interrupted run.
    let memos = LlmStage::ALL
        .iter()
        .map(|s| ResponseMemo::load(&iter_dir.join(s.dir_name())))
        .collect::<Result<Vec<_>, _>>()?;
    let executions = ExecutionMemo::load(&iter_dir.join("executions"))?;
    let replay: usize = memos.iter().map(ResponseMemo::len).sum();
    if resumed {
        say(&format!(
            "resuming {}: {replay} model requests and {} executions are already committed",
            run_dir.display(),
            executions.len()
        ));
    }

    // Backends.
    say(&format!(
        "cores: {} engine thread(s), {} sandbox worker(s), {} dataflow worker(s)",
        split.engine_threads, split.sandbox_workers, split.dataflow_workers
    ));
    say(&format!("loading {}", source.path().display()));
    let engine = Engine::load(
        &source,
        &EngineOptions {
            threads: Some(split.engine_threads),
            ..Default::default()
        },
    )?;
    if engine.chat_template().is_none() {
        return Err(PipelineError::Invalid {
            path: source.path().to_path_buf(),
            why: "the model has no chat template; the IPC stages need an instruct model".into(),
        });
    }
    let engine = Arc::new(Mutex::new(engine));
    let limits = Limits {
        test_cpu: Duration::from_secs_f32(config.sandbox.test_cpu_seconds),
        memory_bytes: config.sandbox.memory_mib << 20,
        ..Limits::default()
    };
    let sandbox = Arc::new(SandboxPool::new(SandboxConfig {
        workers: split.sandbox_workers,
        limits: limits.clone(),
        ..Default::default()
    })?);

    let origin = Instant::now();
    let llm_clocks: Vec<Arc<StageClock>> = LlmStage::ALL
        .iter()
        .map(|_| Arc::new(StageClock::new(origin)))
        .collect();
    let exec_clock = Arc::new(StageClock::new(origin));
    let check_clock = Arc::new(StageClock::new(origin));
    let llm_pools: Vec<_> = LlmStage::ALL
        .iter()
        .zip(&llm_clocks)
        .map(|(stage, clock)| {
            BackendPool::spawn(
                stage.operator_name(),
                vec![GenerateService(CandleGenerator::new(
                    Arc::clone(&engine),
                    Arc::clone(clock),
                ))],
            )
        })
        .collect();
    let exec_pool = BackendPool::spawn(
        "sandbox",
        (0..2)
            .map(|_| {
                ExecuteService(SandboxExecutor::new(
                    Arc::clone(&sandbox),
                    limits.clone(),
                    Arc::clone(&exec_clock),
                ))
            })
            .collect(),
    );
    let check_pool = BackendPool::spawn(
        "sandbox-checks",
        vec![SandboxChecker::new(
            Arc::clone(&sandbox),
            Arc::clone(&check_clock),
        )],
    );

    let sft_writer: Arc<SftWriter> = {
        let engine = Arc::clone(&engine);
        let dir = iter_dir.join("sft");
        let (max_length, shard_rows) = (config.sft.max_length, config.sft.shard_rows);
        Arc::new(
            move |selections: &[(ucoder_operators::Selection, String, String)]| {
                let engine = engine.lock().unwrap_or_else(|p| p.into_inner());
                let template = engine
                    .chat_template()
                    .ok_or_else(|| "the model has no chat template".to_string())?;
                let pairs: Vec<SftPair> = selections
                    .iter()
                    .map(|(s, prompt, code)| SftPair {
                        source_id: s.problem_id.0,
                        user: prompt.clone(),
                        assistant: format!("```python\n{}\n```", code.trim_end()),
                    })
                    .collect();
                write_sft(
                    &dir,
                    &pairs,
                    engine.tokenizer(),
                    template,
                    max_length,
                    shard_rows,
                )
                .map_err(|e| format!("writing the SFT shards: {e}"))
            },
        )
    };

    let counters = Arc::new(Counters::default());
    let failure = Failure::default();
    let settings = StageSettings::from_config(&config);
    let context = Arc::new(GraphContext {
        stages: StagePrompts {
            prompts: Arc::new(PromptSet::builtin()?),
            settings,
        },
        selection: selection_config(&config),
        dedup_threshold: config.problems.dedup_threshold,
        problem_count: config.problems.count as u64,
        llm: llm_pools.iter().map(BackendPool::handle).collect(),
        exec: exec_pool.handle(),
        check: check_pool.handle(),
        check_limits: limits.clone(),
        memos,
        executions,
        iter_dir: iter_dir.clone(),
        llm_batch: 16,
        sample_rows: 64,
        exec_batch: (split.sandbox_workers * 4).max(4),
        counters: Arc::clone(&counters),
        failure: failure.clone(),
        sft: sft_writer,
    });

    say(&format!(
        "running {} into {}",
        path.display(),
        iter_dir.display()
    ));
    let bars = ProgressBars::start(
        Arc::clone(&counters),
        config.problems.count as u64,
        options.quiet,
    );
    let graph_started = Instant::now();
    let outputs: Vec<WorkerOutput> = {
        let context = Arc::clone(&context);
        timely::execute(
            timely::Config::process(split.dataflow_workers),
            move |worker| graph::run_worker(worker, &context),
        )
        .map_err(PipelineError::Timely)?
        .join()
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(PipelineError::Timely)?
    };
    let graph_wall = graph_started.elapsed().as_secs_f64();
    drop(bars);
    drop(context);
    for pool in llm_pools {
        let _ = pool.shutdown();
    }
    let _ = exec_pool.shutdown();
    let _ = check_pool.shutdown();
    if let Some(message) = failure.get() {
        return Err(PipelineError::Stopped(message));
    }

    // Results.
    let mut ready = Vec::new();
    let mut rejections = Vec::new();
    let mut clusters = Vec::new();
    let mut selections = Vec::new();
    let mut sft = None;
    let mut operator_seconds: BTreeMap<String, f64> = BTreeMap::new();
    for out in outputs {
        ready.extend(out.ready);
        rejections.extend(out.rejections);
        clusters.extend(out.clusters);
        selections.extend(out.selections);
        sft = sft.or(out.sft);
        for (name, s) in out.operator_seconds {
            *operator_seconds.entry(name).or_default() += s;
        }
    }
    ready.sort_by_key(|(d, _)| d.problem.id);
    rejections.sort_by(|a, b| {
        (a.stage, a.problem_id, &a.detail, &a.raw).cmp(&(b.stage, b.problem_id, &b.detail, &b.raw))
    });
    clusters.sort();
    selections.sort();
    let selected: BTreeMap<_, _> = selections
        .iter()
        .map(|(s, _, _)| (s.problem_id, s.cluster))
        .collect();

    write_table(
        &iter_dir,
        "problem_set",
        &ready
            .iter()
            .map(|(d, tests)| {
                let rating = d
                    .rating
                    .clone()
                    .unwrap_or_else(|| ucoder_operators::Rating {
                        problem_id: d.problem.id,
                        score: 0.0,
                        difficulty: String::new(),
                        summary: String::new(),
                    });
                ProblemRow {
                    problem_id: d.problem.id.0,
                    request: d.request,
                    category: d.problem.category.as_str().to_string(),
                    title: d.problem.title.clone(),
                    description: d.problem.description.clone(),
                    signature: d.problem.signature.clone(),
                    example: d.problem.example.clone(),
                    hint: d.problem.hint.clone(),
                    score: f64::from(rating.score),
                    difficulty: rating.difficulty,
                    skeleton: d.skeleton_code().to_string(),
                    tests: tests.len() as u32,
                }
            })
            .collect::<Vec<_>>(),
    )?;
    write_table(
        &iter_dir,
        "test_cases",
        &ready
            .iter()
            .flat_map(|(d, tests)| {
                tests.iter().map(move |t| TestCaseRow {
                    problem_id: d.problem.id.0,
                    test_id: t.id.0,
                    kind: match t.kind {
                        ucoder_operators::TestKind::Assert => "assert",
                        ucoder_operators::TestKind::Call => "call",
                    }
                    .to_string(),
                    code: t.code.clone(),
                })
            })
            .collect::<Vec<_>>(),
    )?;
    write_table(
        &iter_dir,
        "clusters",
        &clusters
            .iter()
            .map(|(key, size)| ClusterRow {
                problem_id: key.problem_id.0,
                signature: key.signature.digest(),
                size: *size,
                passed: key.signature.passed(),
                selected: selected.get(&key.problem_id) == Some(&key.signature.digest()),
            })
            .collect::<Vec<_>>(),
    )?;
    write_table(
        &iter_dir,
        "selections",
        &selections
            .iter()
            .map(|(s, _, code)| SelectionRow {
                problem_id: s.problem_id.0,
                candidate_id: s.candidate_id.0,
                cluster: s.cluster,
                cluster_size: s.cluster_size,
                executed: s.executed,
                tests: s.tests,
                passed: s.passed,
                perplexity: s.perplexity.get(),
                code: code.clone(),
            })
            .collect::<Vec<_>>(),
    )?;
    write_table(
        &iter_dir,
        "rejections",
        &rejections
            .iter()
            .map(|r| RejectionRow {
                stage: stage_label(r.stage),
                problem_id: r.problem_id.map(|p| p.0),
                reason: r.reason.as_str().to_string(),
                detail: r.detail.clone(),
                raw: r.raw.clone(),
            })
            .collect::<Vec<_>>(),
    )?;

    // Summary.
    let c = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
    let counts = vec![
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
        ("candidates executed".to_string(), c(&counters.executions)),
        ("test runs".to_string(), c(&counters.test_runs)),
        ("clusters".to_string(), clusters.len() as u64),
        ("selections".to_string(), selections.len() as u64),
        (
            "completions replayed from checkpoints".to_string(),
            c(&counters.replayed_completions),
        ),
        (
            "executions replayed from checkpoints".to_string(),
            c(&counters.replayed_executions),
        ),
    ];
    let mut rejection_counts = BTreeMap::new();
    for r in &rejections {
        *rejection_counts
            .entry(rejection_key(r.stage, r.reason.as_str(), &r.detail))
            .or_insert(0u64) += 1;
    }
    let mut cluster_sizes = BTreeMap::new();
    for (_, size) in &clusters {
        *cluster_sizes.entry(*size).or_insert(0u64) += 1;
    }
    let mut selected_cluster_sizes = BTreeMap::new();
    for (s, _, _) in &selections {
        *selected_cluster_sizes.entry(s.cluster_size).or_insert(0u64) += 1;
    }
    let stage_time = |name: &str, clock: &StageClock| StageTime {
        stage: name.to_string(),
        requests: clock.requests(),
        tokens: clock.tokens(),
        busy_s: clock.busy().as_secs_f64(),
        span_s: clock.span().as_secs_f64(),
    };
    let mut stage_times: Vec<StageTime> = LlmStage::ALL
        .iter()
        .zip(&llm_clocks)
        .map(|(s, clock)| stage_time(s.dir_name(), clock))
        .collect();
    stage_times.push(stage_time("sandbox checks", &check_clock));
    stage_times.push(stage_time("executions", &exec_clock));
    let wall = started.elapsed().as_secs_f64();
    let sft = sft.unwrap_or_else(|| crate::sft::sink::SftSummary {
        examples: 0,
        rows: 0,
        tokens: 0,
        label_tokens: 0,
        oversized: Vec::new(),
        shards: Vec::new(),
    });
    let summary = RunSummary {
        run: config.name.clone(),
        wall_s: wall,
        resumed,
        engine_threads: split.engine_threads,
        sandbox_workers: split.sandbox_workers,
        dataflow_workers: split.dataflow_workers,
        counts,
        rejections: rejection_counts,
        cluster_sizes,
        selected_cluster_sizes,
        stage_times,
        dataflow: classify_operators(&operator_seconds, graph_wall),
        selections: selections.len() as u64,
        selections_per_hour: selections.len() as f64 / (wall / 3600.0).max(1e-9),
        sft_examples: sft.examples,
        sft_rows: sft.rows,
        sft_tokens: sft.tokens,
    };
    write_json_atomic(&iter_dir.join("summary.json"), &summary)?;
    let mut manifest = Manifest::load(&run_dir)?.expect("written above");
    manifest.stages.insert(
        "iter-0".into(),
        serde_json::json!({
            "complete": true,
            "problems": ready.len(),
            "selections": selections.len(),
            "sft_rows": sft.rows,
        }),
    );
    manifest.save(&run_dir)?;
    Ok(summary)
}

/// Arguments of `ucoder-flow run` (and of `ucoder-flow PIPELINE.toml`).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The pipeline file (e.g. pipelines/ipc.toml).
    pub pipeline: PathBuf,
    /// Timely worker threads (the same selections for any number).
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Where run folders go (default: the file's `runs_dir`, `runs/`).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
    /// A registry model name or a GGUF path, instead of the file's `[model] name`.
    #[arg(long)]
    pub model: Option<String>,
    /// No progress bars.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Runs `ucoder-flow run` and prints the summary table.
pub fn run_cli(args: &RunArgs, say: &dyn Fn(&str)) -> Result<RunSummary, PipelineError> {
    let summary = run(
        &args.pipeline,
        &RunOptions {
            workers: args.workers,
            runs_dir: args.runs_dir.clone(),
            model: args.model.clone(),
            quiet: args.quiet,
        },
        say,
    )?;
    println!("{}", summary.table());
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(
        cores: Option<usize>,
        engine: Option<usize>,
        sandbox: Option<usize>,
    ) -> ResourceConfig {
        ResourceConfig {
            cores,
            engine_threads: engine,
            sandbox_workers: sandbox,
            dataflow_workers: 1,
        }
    }

    #[test]
    fn core_split_never_oversubscribes() {
        let two = CoreSplit::plan(&resources(None, None, None), 2).unwrap();
        assert_eq!((two.engine_threads, two.sandbox_workers), (1, 1));
        let sixteen = CoreSplit::plan(&resources(None, None, None), 16).unwrap();
        assert_eq!((sixteen.engine_threads, sixteen.sandbox_workers), (12, 4));
        let pinned = CoreSplit::plan(&resources(Some(8), Some(2), None), 2).unwrap();
        assert_eq!((pinned.engine_threads, pinned.sandbox_workers), (2, 2));
        let err = CoreSplit::plan(&resources(None, Some(2), Some(1)), 2).unwrap_err();
        assert!(err.contains("exceed cores (2)"), "{err}");
    }

    #[test]
    fn rejection_keys_name_stage_reason_and_parser_label() {
        use ucoder_operators::Stage;
        assert_eq!(
            rejection_key(
                Stage::Problem,
                "unparseable",
                "missing_block: no <PROBLEM_START> block"
            ),
            "problem/unparseable/missing_block"
        );
        assert_eq!(
            rejection_key(Stage::Rating, "low_quality", "score 3: below"),
            "rating/low_quality"
        );
    }
}
