//! The eval runner's bookkeeping end to end, on real recorded model outputs: completions come
//! from `tests/fixtures/eval/*.jsonl` (llama.cpp generations, replayed through
//! `RecordedCompletions`) and programs run in the production sandbox pool, so resume, Parquet
//! rows, verdicts and pass@1 are tested without loading a model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ucoder_flow::backends::{RecordedCompletions, SandboxExecutor};
use ucoder_flow::eval::config::{EvalConfig, Overrides, ProgramLimits};
use ucoder_flow::eval::humaneval::{self, Problem};
use ucoder_flow::eval::runner;
use ucoder_flow::eval::{EvalError, EvalModel, SampleRecord, Summary, check};
use ucoder_flow::progress::Silent;
use ucoder_flow::store::{Stage, StoreError};
use ucoder_operators::{
    BackendError, ExecJob, Execute, Execution, Generate, Generation, GenerationRequest, Prompt,
};

const FIXTURE: &str = "tests/fixtures/eval/qwen2.5-coder-0.5b-instruct.jsonl";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

/// The recorded completions, noting the problem of every generation call and failing after
/// `fail_after` calls, as a killed run would stop.
struct Counting {
    inner: RecordedCompletions,
    /// The problem of each recorded prompt.
    problems: HashMap<String, String>,
    generated: Arc<Mutex<Vec<String>>>,
    fail_after: Option<usize>,
}

impl Generate for Counting {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        requests
            .iter()
            .map(|request| {
                let mut generated = self.generated.lock().unwrap();
                if self.fail_after == Some(generated.len()) {
                    return Err(BackendError {
                        backend: "test".into(),
                        message: "simulated crash".into(),
                    });
                }
                let Prompt::Text(prompt) = &request.prompt else {
                    panic!("the eval sends rendered prompts")
                };
                generated.push(self.problems[prompt].clone());
                self.inner
                    .generate(std::slice::from_ref(request))
                    .pop()
                    .unwrap()
            })
            .collect()
    }
}

/// The fixture's completions as the eval's model, and the problems it was asked to generate for.
fn counting(fail_after: Option<usize>) -> (EvalModel, Arc<Mutex<Vec<String>>>) {
    let inner = RecordedCompletions::load(&fixture()).unwrap();
    let problems = std::fs::read_to_string(fixture())
        .unwrap()
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            let text = |key: &str| line[key].as_str().unwrap().to_string();
            (text("prompt"), text("task_id"))
        })
        .collect();
    let generated = Arc::new(Mutex::new(Vec::new()));
    let model = EvalModel::recorded(inner.clone()).with_generator(Counting {
        inner,
        problems,
        generated: Arc::clone(&generated),
        fail_after,
    });
    (model, generated)
}

/// The sandbox, counting the programs it is given.
struct CountingExecutor {
    sandbox: SandboxExecutor,
    programs: Arc<AtomicUsize>,
}

impl Execute for CountingExecutor {
    fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        self.programs.fetch_add(jobs.len(), Ordering::Relaxed);
        self.sandbox.execute(jobs)
    }
}

/// What one eval run did.
struct Run {
    result: Result<Summary, EvalError>,
    /// Problem ids the model was asked to generate for.
    generated: Vec<String>,
    /// Programs the sandbox ran.
    checked: usize,
}

/// The fixture problems and one sandbox pool, shared by the runs of a test.
struct Harness {
    problems: Vec<Problem>,
    sandbox: SandboxExecutor,
}

impl Harness {
    fn new() -> Self {
        Harness {
            problems: fixture_problems(),
            sandbox: check::open_executor(&ProgramLimits::default()).unwrap(),
        }
    }

    /// Runs (or resumes) the eval of `cfg` on recorded completions that fail after
    /// `fail_after` generations.
    fn run(&mut self, cfg: &EvalConfig, fail_after: Option<usize>) -> Run {
        let (mut model, generated) = counting(fail_after);
        let programs = Arc::new(AtomicUsize::new(0));
        let mut executor = CountingExecutor {
            sandbox: self.sandbox.clone(),
            programs: Arc::clone(&programs),
        };
        let result = runner::run(cfg, &self.problems, &mut model, &mut executor, &Silent);
        let generated = generated.lock().unwrap().clone();
        Run {
            result,
            generated,
            checked: programs.load(Ordering::Relaxed),
        }
    }
}

/// The HumanEval problems the fixture has completions for, in benchmark order.
fn fixture_problems() -> Vec<Problem> {
    let all = humaneval::load(
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    let text = std::fs::read_to_string(fixture()).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["task_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    all.into_iter()
        .filter(|p| ids.contains(&p.task_id))
        .collect()
}

fn config(out: &Path, limit: usize) -> EvalConfig {
    let text = format!(
        "[model]\nname = \"qwen2.5-coder-0.5b-instruct\"\n[output]\ndir = {out:?}\nflush_every = 3\n[benchmark]\nlimit = {limit}\n"
    );
    EvalConfig::parse(&text, Path::new("test.toml"), &Overrides::default()).unwrap()
}

fn rows(out: &Path) -> Vec<SampleRecord> {
    Stage::<SampleRecord>::open(&runner::samples_dir(out), 7)
        .unwrap()
        .read_all()
        .unwrap()
}

fn without_timings(mut rows: Vec<SampleRecord>) -> Vec<SampleRecord> {
    rows.sort_by(|a, b| (&a.problem_id, a.sample_index).cmp(&(&b.problem_id, b.sample_index)));
    for r in &mut rows {
        r.generation_seconds = 0.0;
        r.check_seconds = 0.0;
    }
    rows
}

#[test]
fn killed_run_resumes_without_regenerating_and_matches_uninterrupted() {
    let mut harness = Harness::new();
    let problems = harness.problems.clone();
    let limit = 8.min(problems.len());
    assert!(limit >= 7, "fixture too small");

    // Uninterrupted reference run.
    let reference_dir = tempfile::tempdir().unwrap();
    let run = harness.run(&config(reference_dir.path(), limit), None);
    let reference = run.result.unwrap();
    assert_eq!(run.generated.len(), limit);
    assert!(reference.complete);
    assert_eq!(reference.samples, limit);

    // Killed after 5 problems: flush_every = 3, so one part (3 problems) is committed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), limit);
    let err = harness.run(&cfg, Some(5)).result.unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let committed = rows(dir.path());
    assert_eq!(committed.len(), 3, "only whole parts count");
    // A crash mid-commit leaves a temp file; it must not be read.
    std::fs::write(
        runner::samples_dir(dir.path()).join(".part-0000-000009.parquet.tmp-1"),
        b"PAR1 torn",
    )
    .unwrap();

    let resumed = harness.run(&cfg, None);
    let first_three: Vec<&str> = problems[..3].iter().map(|p| p.task_id.as_str()).collect();
    assert_eq!(
        resumed.generated.len(),
        limit - 3,
        "finished problems are not regenerated"
    );
    assert!(
        resumed
            .generated
            .iter()
            .all(|id| !first_three.contains(&id.as_str()))
    );
    let remaining_programs = rows(dir.path())
        .iter()
        .filter(|r| !first_three.contains(&r.problem_id.as_str()) && r.program.is_some())
        .count();
    assert_eq!(
        resumed.checked, remaining_programs,
        "only new programs are checked"
    );
    assert_eq!(resumed.result.unwrap().pass_at_k, reference.pass_at_k);
    assert_eq!(
        without_timings(rows(dir.path())),
        without_timings(rows(reference_dir.path()))
    );

    // A finished run does nothing new; extending the limit continues the same folder.
    let again = harness.run(&cfg, None);
    assert!(again.generated.is_empty() && again.checked == 0);
    assert_eq!(again.result.unwrap().samples, limit);
    let all = harness.run(&config(dir.path(), problems.len()), None);
    assert_eq!(all.generated.len(), problems.len() - limit);
    assert_eq!(all.result.unwrap().problems, problems.len());
}

#[test]
fn results_hold_real_verdicts_and_summary_is_written() {
    let mut harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let problems = harness.problems.len();
    let summary = harness
        .run(&config(dir.path(), problems), None)
        .result
        .unwrap();
    let rows = rows(dir.path());
    assert_eq!(rows.len(), problems);
    let by_id = |id: &str| rows.iter().find(|r| r.problem_id == id).unwrap();
    // HumanEval/0: the model's nested-loop solution is correct.
    let r0 = by_id("HumanEval/0");
    let r0_tests = harness.problems[0].tests().len();
    assert!(r0_tests > 1, "the sandbox runs each of the check's asserts");
    assert!(
        r0.passed && r0.test_verdicts == vec!["pass"; r0_tests],
        "{r0:?}"
    );
    assert_eq!(r0.extraction_status, "full_function");
    assert!(r0.prompt.contains("<|im_start|>assistant\n"));
    assert!(r0.completion_tokens > 0 && r0.finish_reason == "stop");
    // pass@1 equals the fraction of passing rows, and the summary on disk is the one returned.
    let passed = rows.iter().filter(|r| r.passed).count();
    assert_eq!(
        summary.pass_at_k["pass@1"],
        passed as f64 / rows.len() as f64
    );
    assert!(
        passed < rows.len(),
        "a 0.5B model does not solve every problem; a checker that passes all is broken"
    );
    let on_disk: ucoder_flow::eval::Summary =
        serde_json::from_slice(&std::fs::read(dir.path().join(runner::SUMMARY_FILE)).unwrap())
            .unwrap();
    assert_eq!(
        (on_disk.samples, on_disk.samples_passed, on_disk.complete),
        (summary.samples, passed, true)
    );
    assert!((on_disk.pass_at_k["pass@1"] - summary.pass_at_k["pass@1"]).abs() < 1e-12);
    // Every failed row says why: a failed verdict, a program error, or an extraction reason.
    for r in rows.iter().filter(|r| !r.passed) {
        assert!(
            r.program.is_none() && !r.extraction_detail.is_empty()
                || r.program_error.is_some()
                || r.test_verdicts.iter().any(|v| v != "pass"),
            "{r:?}"
        );
    }
}

#[test]
fn other_settings_are_refused_and_prompts_dump_round_trips() {
    let mut harness = Harness::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    harness.run(&cfg, None).result.unwrap();
    let mut other = cfg.clone();
    other.decoding.max_tokens = 77;
    let refused = harness.run(&other, None);
    assert!(refused.generated.is_empty() && refused.checked == 0);
    let err = refused.result.unwrap_err();
    assert!(
        matches!(err, EvalError::Store(StoreError::SettingsChanged { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("max_tokens"), "{err}");

    let dump = dir.path().join("prompts.jsonl");
    let count = runner::dump_prompts(&cfg, &harness.problems, &counting(None).0, &dump).unwrap();
    assert_eq!(count, 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["task_id"], harness.problems[0].task_id);
    assert_eq!(lines[0]["max_tokens"], 512);
    let recorded = rows(dir.path());
    assert_eq!(lines[0]["prompt"].as_str().unwrap(), recorded[0].prompt);
}
