//! The rerank loop. For each benchmark problem not yet done: the model writes tests from the
//! prompt alone (the pipeline's TestGenerator request, parser and de-duplication, then its
//! TestCheck on the stub), the canonical solution (where known) runs on the kept tests to tell
//! right tests from wrong ones, n samples and one greedy completion are generated, extracted and
//! checked against the benchmark's tests, and every sample runs on the kept generated tests.
//! Rows are committed every few problems, samples last, so a problem whose samples are all
//! recorded has all its rows. The scores ([`super::score`]) are computed from the rows alone:
//! by every run, and by [`rescore`] without a model.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ucoder_operators::{CandidateId, Completion, ExecJob, FinishReason, GeneratedTest, ProblemId};

use crate::pipeline::stages::Draft;

use super::draft::draft;
use super::rows::{GeneratedRunRow, GeneratedTestRow, MethodScoreRow, ProblemScoreRow};
use super::sandbox::RerankSandbox;
use super::score::{ProblemRows, RerankSummary, score};
use crate::eval::EvalError;
use crate::eval::config::EvalConfig;
use crate::eval::humaneval::Problem;
use crate::eval::model::EvalModel;
use crate::eval::results::{SampleRecord, Summary};
use crate::eval::runner::{
    ProblemProgress, SUMMARY_FILE, commit, eval_problem, finished_problems, header, identity,
    keep_last, select,
};
use crate::pipeline::stages::{StagePrompts, StageSettings, test_check, test_generator};
use crate::progress::Reporter;
use crate::prompts::PromptSet;
use crate::store::{Manifest, Record, Stage, read_json, replace_dir, write_json_atomic};
use ucoder_operators::Execute;

/// The manifest's job name of a rerank folder.
pub const JOB: &str = "eval-rerank";
/// Stage folders and files of a rerank run folder (besides `samples/` and `summary.json`).
pub const TESTS_STAGE: &str = "generated_tests";
pub const RUNS_STAGE: &str = "generated_runs";
pub const GREEDY_STAGE: &str = "greedy";
pub const PROBLEMS_TABLE: &str = "problems";
pub const METHODS_TABLE: &str = "methods";
pub const RERANK_FILE: &str = "rerank.json";

/// The settings that determine a rerank folder's rows. `[selection]` is not among them: it only
/// scores, so changing it rescores the same rows.
fn rerank_identity(config: &EvalConfig, source: &str) -> serde_json::Value {
    let mut identity = identity(config, source);
    identity["tests"] = serde_json::to_value(&config.tests).expect("plain struct");
    identity
}

/// The pipeline's stage settings for the eval's decoding and `[tests]`.
fn stage_prompts(config: &EvalConfig) -> Result<StagePrompts, EvalError> {
    let tests = config
        .tests
        .as_ref()
        .expect("validated: rerank mode has [tests]");
    let d = &config.decoding;
    let prompts = PromptSet::builtin().map_err(|e| EvalError::Backend {
        what: "loading the prompt templates".into(),
        source: e.into(),
    })?;
    Ok(StagePrompts {
        prompts: Arc::new(prompts),
        settings: StageSettings {
            seed: d.seed,
            max_tokens: d.max_tokens as u32,
            problem_temperature: 0.0,
            min_score: 0.0,
            tests_per_problem: tests.per_problem,
            test_batch: tests.batch,
            test_temperature: tests.temperature as f32,
            samples: d.n,
            round: d.n,
            sample_temperature: d.temperature as f32,
            top_p: d.top_p as f32,
        },
    })
}

/// Everything one problem adds to the folder.
#[derive(Default)]
struct Rows {
    tests: Vec<GeneratedTestRow>,
    runs: Vec<GeneratedRunRow>,
    greedy: Vec<SampleRecord>,
    samples: Vec<SampleRecord>,
}

/// The four stages of a rerank folder, open for commits.
struct Stages {
    tests: Stage<GeneratedTestRow>,
    runs: Stage<GeneratedRunRow>,
    greedy: Stage<SampleRecord>,
    samples: Stage<SampleRecord>,
}

impl Stages {
    fn open(out: &Path) -> Result<Self, EvalError> {
        Ok(Stages {
            tests: Stage::open(&out.join(TESTS_STAGE), 0)?,
            runs: Stage::open(&out.join(RUNS_STAGE), 0)?,
            greedy: Stage::open(&out.join(GREEDY_STAGE), 0)?,
            samples: Stage::open(&out.join(crate::eval::runner::SAMPLES_STAGE), 0)?,
        })
    }

    /// Every committed row, the last of each key, of the `selected` problems whose samples are
    /// complete.
    fn read(&self, n: usize, selected: &[Problem]) -> Result<Rows, EvalError> {
        let wanted: HashSet<&str> = selected.iter().map(|p| p.task_id.as_str()).collect();
        let mut rows = Rows {
            tests: keep_last(self.tests.read_all()?, |r| {
                (r.problem_id.clone(), r.test_index)
            }),
            runs: keep_last(self.runs.read_all()?, |r| {
                (r.problem_id.clone(), r.sample_index, r.test_index)
            }),
            greedy: keep_last(self.greedy.read_all()?, |r| r.problem_id.clone()),
            samples: keep_last(self.samples.read_all()?, |r| {
                (r.problem_id.clone(), r.sample_index)
            }),
        };
        rows.samples
            .retain(|r| wanted.contains(r.problem_id.as_str()));
        let done = finished_problems(&rows.samples, n);
        rows.samples.retain(|r| done.contains(&r.problem_id));
        rows.tests.retain(|r| done.contains(&r.problem_id));
        rows.runs.retain(|r| done.contains(&r.problem_id));
        rows.greedy.retain(|r| done.contains(&r.problem_id));
        Ok(rows)
    }

    /// Commits `pending` (samples last) and moves it to `rows`.
    fn commit(&mut self, pending: &mut Rows, rows: &mut Rows) -> Result<(), EvalError> {
        commit(&mut self.tests, &mut pending.tests, &mut rows.tests)?;
        commit(&mut self.runs, &mut pending.runs, &mut rows.runs)?;
        commit(&mut self.greedy, &mut pending.greedy, &mut rows.greedy)?;
        commit(&mut self.samples, &mut pending.samples, &mut rows.samples)
    }
}

/// Runs (or resumes) the rerank eval in `config.output.dir` and returns its figures, also
/// written to `rerank.json` (and the samples' own summary to `summary.json`).
pub fn run(
    config: &EvalConfig,
    problems: &[Problem],
    model: &mut EvalModel,
    judge: &mut dyn Execute,
    sandbox: &mut RerankSandbox,
    reporter: &dyn Reporter,
) -> Result<RerankSummary, EvalError> {
    let started = Instant::now();
    let out = &config.output.dir;
    let described = model.describe().to_string();
    Manifest::claim(
        out,
        JOB,
        rerank_identity(config, &described),
        described.clone(),
    )?;
    let earlier_wall = recorded_wall(out)?;
    let stage_prompts = stage_prompts(config)?;
    let selected = select(config, problems);
    let mut stages = Stages::open(out)?;
    let mut rows = stages.read(config.decoding.n, selected)?;
    let done: HashSet<String> = rows.samples.iter().map(|r| r.problem_id.clone()).collect();
    let mut greedy_config = config.clone();
    greedy_config.decoding.temperature = 0.0;
    greedy_config.decoding.n = 1;

    let mut progress = ProblemProgress::start(reporter, selected.len(), done.len());
    let mut pending = Rows::default();
    let mut pending_problems = 0;
    let (mut kept_now, mut written_now) = (0, 0);
    for (index, problem) in selected.iter().enumerate() {
        if done.contains(&problem.task_id) {
            continue;
        }
        let draft = draft(problem, index as u64)?;
        let tests = write_tests(&stage_prompts, problem, &draft, model, sandbox)?;
        let samples = eval_problem(config, problem, model, judge)?;
        let greedy = eval_problem(&greedy_config, problem, model, judge)?;
        let runs = run_samples(problem, &samples, &tests, sandbox)?;
        written_now += tests.len();
        kept_now += tests.iter().filter(|t| t.0.kept).count();
        pending.tests.extend(tests.into_iter().map(|(row, _)| row));
        pending.runs.extend(runs);
        pending.greedy.extend(greedy);
        pending.samples.extend(samples);
        pending_problems += 1;
        if pending_problems >= config.output.flush_every {
            stages.commit(&mut pending, &mut rows)?;
            pending_problems = 0;
        }
        progress.advance(format!("{kept_now}/{written_now} generated tests kept"));
    }
    stages.commit(&mut pending, &mut rows)?;
    reporter.done();
    let wall = earlier_wall + started.elapsed().as_secs_f64();
    write_scores(config, selected, &rows, described, wall)
}

/// Scores a finished (or partial) rerank folder again from its rows, with `config`'s
/// `[selection]`, without a model or sampling. The folder must have been written with the same
/// row settings (decoding, `[tests]`, sandbox).
pub fn rescore(config: &EvalConfig, problems: &[Problem]) -> Result<RerankSummary, EvalError> {
    let out = &config.output.dir;
    let manifest = rerank_manifest(out)?;
    Manifest::claim(
        out,
        JOB,
        rerank_identity(config, &manifest.model),
        manifest.model.clone(),
    )?;
    let wall = recorded_wall(out)?;
    let selected = select(config, problems);
    let rows = Stages::open(out)?.read(config.decoding.n, selected)?;
    write_scores(config, selected, &rows, manifest.model, wall)
}

/// Judges a rerank folder's stored rows again into `config.output.dir`, without a model: its
/// parsed tests go through the current TestGenerator judge and TestCheck, and its samples and the
/// canonical solutions run on the kept ones under `sandbox`'s settings. So a change to the test
/// judges or the sandbox (float tolerance, hash seeds) is measured on the same samples. The
/// folder's decoding and `[tests]` must be this file's.
pub fn rejudge(
    config: &EvalConfig,
    problems: &[Problem],
    from: &Path,
    sandbox: &mut RerankSandbox,
    reporter: &dyn Reporter,
) -> Result<RerankSummary, EvalError> {
    let manifest = rerank_manifest(from)?;
    let without_sandbox = |mut identity: serde_json::Value| {
        if let Some(fields) = identity.as_object_mut() {
            fields.remove("sandbox");
        }
        identity
    };
    let identity = rerank_identity(config, &manifest.model);
    if without_sandbox(identity.clone()) != without_sandbox(manifest.config.clone()) {
        return Err(EvalError::Rejudge {
            from: from.to_path_buf(),
        });
    }
    let out = &config.output.dir;
    Manifest::claim(out, JOB, identity, manifest.model.clone())?;
    let wall = recorded_wall(from)?;
    let stage_prompts = stage_prompts(config)?;
    let selected = select(config, problems);
    let source = Stages::open(from)?.read(config.decoding.n, selected)?;
    let mut stages = Stages::open(out)?;
    let mut rows = Rows::default();
    let mut pending = Rows::default();
    let mut progress = ProblemProgress::start(reporter, selected.len(), 0);
    for (index, problem) in selected.iter().enumerate() {
        let id = problem.task_id.as_str();
        let samples: Vec<SampleRecord> = source
            .samples
            .iter()
            .filter(|s| s.problem_id == id)
            .cloned()
            .collect();
        if samples.is_empty() {
            continue;
        }
        let lines: Vec<&str> = source
            .tests
            .iter()
            .filter(|t| t.problem_id == id)
            .map(|t| t.code.as_str())
            .collect();
        let stored = answer(format!("{}\n<TESTS_END>", lines.join("\n")));
        let draft = draft(problem, index as u64)?;
        let tests = judge_tests(&stage_prompts, problem, &draft, &[stored], sandbox)?;
        pending
            .runs
            .extend(run_samples(problem, &samples, &tests, sandbox)?);
        pending.tests.extend(tests.into_iter().map(|(row, _)| row));
        pending
            .greedy
            .extend(source.greedy.iter().filter(|g| g.problem_id == id).cloned());
        pending.samples.extend(samples);
        stages.commit(&mut pending, &mut rows)?;
        progress.advance(format!("{id} judged again"));
    }
    reporter.done();
    write_scores(config, selected, &rows, manifest.model, wall)
}

/// The manifest of the rerank folder `dir` (an error if `dir` holds none).
fn rerank_manifest(dir: &Path) -> Result<Manifest, EvalError> {
    Manifest::load(dir)?
        .filter(|m| m.job == JOB)
        .ok_or_else(|| EvalError::NothingToRescore {
            dir: dir.to_path_buf(),
        })
}

/// The wall time `dir`'s summary records for the runs that made it (0 before the first).
fn recorded_wall(dir: &Path) -> Result<f64, EvalError> {
    Ok(read_json::<Summary>(&dir.join(SUMMARY_FILE))?.map_or(0.0, |s| s.wall_seconds))
}

/// Scores `rows` and writes `summary.json`, `rerank.json` and the `problems/` and `methods/`
/// tables (each replaced whole).
fn write_scores(
    config: &EvalConfig,
    selected: &[Problem],
    rows: &Rows,
    described: String,
    wall_seconds: f64,
) -> Result<RerankSummary, EvalError> {
    let out = &config.output.dir;
    let selection = config.selection.as_ref().expect("validated: rerank mode");
    let samples = Summary::compute(
        &rows.samples,
        selected.len(),
        &config.decoding.pass_at_k,
        header(config, described),
        wall_seconds,
    );
    write_json_atomic(&out.join(SUMMARY_FILE), &samples)?;
    let mut by_problem: BTreeMap<&str, ProblemRows<'_>> = BTreeMap::new();
    for s in &rows.samples {
        by_problem
            .entry(&s.problem_id)
            .or_insert_with(|| ProblemRows {
                problem_id: &s.problem_id,
                samples: Vec::new(),
                greedy: None,
                tests: Vec::new(),
                runs: Vec::new(),
            })
            .samples
            .push(s);
    }
    for g in &rows.greedy {
        if let Some(p) = by_problem.get_mut(g.problem_id.as_str()) {
            p.greedy = Some(g);
        }
    }
    for t in &rows.tests {
        if let Some(p) = by_problem.get_mut(t.problem_id.as_str()) {
            p.tests.push(t);
        }
    }
    for r in &rows.runs {
        if let Some(p) = by_problem.get_mut(r.problem_id.as_str()) {
            p.runs.push(r);
        }
    }
    // Benchmark order, as the problems were asked.
    let ordered: Vec<ProblemRows<'_>> = selected
        .iter()
        .filter_map(|p| by_problem.remove(p.task_id.as_str()))
        .collect();
    let round = config.decoding.adaptive_round();
    let (summary, problem_rows, method_rows) = score(&ordered, selection, round, samples);
    write_table::<ProblemScoreRow>(&out.join(PROBLEMS_TABLE), &problem_rows)?;
    write_table::<MethodScoreRow>(&out.join(METHODS_TABLE), &method_rows)?;
    write_json_atomic(&out.join(RERANK_FILE), &summary)?;
    Ok(summary)
}

/// Replaces the table folder `dir` with one part holding `rows`.
fn write_table<R: Record>(dir: &Path, rows: &[R]) -> Result<(), EvalError> {
    replace_dir(dir, |building| -> Result<(), EvalError> {
        Stage::<R>::open(building, 0)?.commit(rows)?;
        Ok(())
    })
}

/// The model's tests for `problem`, through the pipeline's TestGenerator and TestCheck: every
/// parsed test's row, with the kept ones' [`GeneratedTest`]s (in parse order). The canonical
/// solution, where the benchmark has one, runs on the kept tests.
fn write_tests(
    stage_prompts: &StagePrompts,
    problem: &Problem,
    draft: &Draft,
    model: &mut EvalModel,
    sandbox: &mut RerankSandbox,
) -> Result<Vec<JudgedTest>, EvalError> {
    let id = &problem.task_id;
    let requests = (0..stage_prompts.settings.test_batches())
        .map(|batch| {
            test_generator::request(stage_prompts, draft, batch)
                .map(|(_, request)| request)
                .map_err(|e| backend_error(format!("rendering the tests prompt for {id}"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut completions = Vec::new();
    for generation in model.generate_all(&requests) {
        let generation =
            generation.map_err(|e| backend_error(format!("generating tests for {id}"), e))?;
        completions.push(
            generation
                .into_iter()
                .next()
                .unwrap_or_else(|| answer(String::new())),
        );
    }
    judge_tests(stage_prompts, problem, draft, &completions, sandbox)
}

/// A test's row, and the test itself when TestCheck kept it.
type JudgedTest = (GeneratedTestRow, Option<GeneratedTest>);

/// A model's answer that ended on its own.
fn answer(text: String) -> Completion {
    Completion {
        text,
        logprobs: Default::default(),
        finish: FinishReason::Stop,
    }
}

fn backend_error(
    what: String,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> EvalError {
    EvalError::Backend {
        what,
        source: e.into(),
    }
}

/// The test batches' answers `completions`, judged by the pipeline's TestGenerator judge and
/// TestCheck, with the canonical solution's verdicts.
fn judge_tests(
    stage_prompts: &StagePrompts,
    problem: &Problem,
    draft: &Draft,
    completions: &[Completion],
    sandbox: &mut RerankSandbox,
) -> Result<Vec<JudgedTest>, EvalError> {
    let id = &problem.task_id;
    let limit = stage_prompts.settings.tests_per_problem;
    let (tests, _) = test_generator::judge(draft, completions, limit);
    let job = test_check::job(draft, &tests, sandbox.limits());
    let result = sandbox.check(job);
    if let Err(e) = &result {
        return Err(backend_error(
            format!("checking the tests of {id}"),
            e.clone(),
        ));
    }
    let (kept, rejected) = test_check::judge(draft, tests.clone(), result);
    let kept_ids: HashSet<_> = kept.iter().map(|t| t.id).collect();
    let canonical = canonical_verdicts(problem, &kept, sandbox)?;
    let mut canonical = canonical.into_iter();
    Ok(tests
        .into_iter()
        .enumerate()
        .map(|(i, test)| {
            let keep = kept_ids.contains(&test.id);
            let dropped_because = (!keep).then(|| {
                rejected
                    .iter()
                    .find(|r| r.raw == test.code)
                    .map_or_else(|| "dropped".to_string(), |r| r.detail.clone())
            });
            let row = GeneratedTestRow {
                problem_id: id.clone(),
                test_index: i as u32,
                code: test.code.clone(),
                kept: keep,
                dropped_because,
                canonical: if keep {
                    canonical.next().flatten()
                } else {
                    None
                },
            };
            (row, keep.then_some(test))
        })
        .collect())
}

/// The canonical solution's verdict on each kept test (none without a canonical solution).
fn canonical_verdicts(
    problem: &Problem,
    kept: &[GeneratedTest],
    sandbox: &mut RerankSandbox,
) -> Result<Vec<Option<String>>, EvalError> {
    if problem.canonical_solution.trim().is_empty() || kept.is_empty() {
        return Ok(vec![None; kept.len()]);
    }
    let job = ExecJob {
        problem_id: ProblemId(0),
        candidate_id: CandidateId(0),
        entry_point: problem.entry_point.clone(),
        code: problem.canonical_program(),
        tests: kept.iter().cloned().collect(),
    };
    let execution = sandbox
        .execute(&[job])
        .pop()
        .expect("one answer per job")
        .map_err(|e| EvalError::Backend {
            what: format!("running the canonical solution of {}", problem.task_id),
            source: e.into(),
        })?;
    Ok(execution
        .results
        .into_iter()
        .map(|r| Some(r.detail.unwrap_or_else(|| r.outcome.label().to_string())))
        .collect())
}

/// Every sample with a program, on the kept generated tests.
fn run_samples(
    problem: &Problem,
    samples: &[SampleRecord],
    tests: &[JudgedTest],
    sandbox: &mut RerankSandbox,
) -> Result<Vec<GeneratedRunRow>, EvalError> {
    let kept: Vec<(u32, GeneratedTest)> = tests
        .iter()
        .filter_map(|(row, test)| Some((row.test_index, test.clone()?)))
        .collect();
    if kept.is_empty() {
        return Ok(Vec::new());
    }
    let suite: Arc<[GeneratedTest]> = kept.iter().map(|(_, t)| t.clone()).collect();
    let with_program: Vec<&SampleRecord> = samples.iter().filter(|s| s.program.is_some()).collect();
    let jobs: Vec<ExecJob> = with_program
        .iter()
        .map(|s| ExecJob {
            problem_id: ProblemId(0),
            candidate_id: CandidateId(u64::from(s.sample_index)),
            entry_point: problem.entry_point.clone(),
            code: s.program.clone().expect("filtered"),
            tests: Arc::clone(&suite),
        })
        .collect();
    let mut rows = Vec::new();
    for (sample, result) in with_program.iter().zip(sandbox.execute(&jobs)) {
        let execution = result.map_err(|e| EvalError::Backend {
            what: format!(
                "running sample {} of {} on its generated tests",
                sample.sample_index, problem.task_id
            ),
            source: e.into(),
        })?;
        for ((test_index, _), run) in kept.iter().zip(execution.results) {
            rows.push(GeneratedRunRow {
                problem_id: problem.task_id.clone(),
                sample_index: sample.sample_index,
                test_index: *test_index,
                outcome: run.outcome.label().to_string(),
                output_hash: run.output_hash,
                detail: run.detail,
            });
        }
    }
    Ok(rows)
}
