//! The eval runner's bookkeeping end to end, on real recorded model outputs: completions come
//! from `tests/fixtures/eval/*.jsonl` (llama.cpp generations, replayed through
//! `RecordedCompletions`), programs run in a plain python3 subprocess with the HumanEval check
//! function. That checker is a simple honest stand-in for the production sandbox (no isolation,
//! no rlimits) so that resume, Parquet rows and pass@1 can be tested before the sandbox is wired.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ucoder_flow::eval::config::{EvalConfig, Overrides, SandboxLimits};
use ucoder_flow::eval::humaneval::{self, Problem};
use ucoder_flow::eval::recorded::RecordedCompletions;
use ucoder_flow::eval::runner::{self, Progress};
use ucoder_flow::eval::{
    BackendError, CheckOutcome, CompletionSource, EvalError, Generation, GenerationRequest,
    ProgramChecker, SampleRecord, TestOutcome,
};
use ucoder_flow::store::Stage;

const FIXTURE: &str = "tests/fixtures/eval/qwen2.5-coder-0.5b-instruct.jsonl";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

/// The real interpreter behind the pyenv shim (the shim costs ~200 ms per start).
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// Runs `program` + the problem's `check(entry_point)` in a python3 subprocess: one test per
/// program (HumanEval's check asserts everything in one function). Not a sandbox.
struct SubprocessChecker {
    python: PathBuf,
    dir: tempfile::TempDir,
    programs_run: usize,
}

impl SubprocessChecker {
    fn new() -> Self {
        SubprocessChecker {
            python: python(),
            dir: tempfile::tempdir().unwrap(),
            programs_run: 0,
        }
    }
}

impl ProgramChecker for SubprocessChecker {
    fn check(
        &mut self,
        problem: &Problem,
        programs: &[String],
        limits: &SandboxLimits,
    ) -> Result<Vec<CheckOutcome>, BackendError> {
        let mut outcomes = Vec::new();
        for program in programs {
            self.programs_run += 1;
            let path = self.dir.path().join(format!("p{}.py", self.programs_run));
            let source = format!(
                "{program}\n\n{}\n\ncheck({})\n",
                problem.test, problem.entry_point
            );
            std::fs::write(&path, source)?;
            let mut child = Command::new(&self.python)
                .arg(&path)
                .current_dir(self.dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            let deadline = Instant::now() + Duration::from_secs_f64(limits.timeout_s);
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break Some(status);
                }
                if Instant::now() > deadline {
                    child.kill()?;
                    child.wait()?;
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)?;
            let last = stderr.lines().last().unwrap_or("").to_string();
            outcomes.push(match status {
                None => CheckOutcome {
                    program_error: Some("timeout".into()),
                    tests: vec![],
                },
                Some(s) if s.success() => CheckOutcome {
                    program_error: None,
                    tests: vec![TestOutcome {
                        passed: true,
                        verdict: "pass".into(),
                    }],
                },
                Some(_) if last.starts_with("AssertionError") => CheckOutcome {
                    program_error: None,
                    tests: vec![TestOutcome {
                        passed: false,
                        verdict: "fail".into(),
                    }],
                },
                Some(_) => CheckOutcome {
                    program_error: None,
                    tests: vec![TestOutcome {
                        passed: false,
                        verdict: format!("error: {last}"),
                    }],
                },
            });
        }
        Ok(outcomes)
    }
}

/// A source that counts generation calls per problem and fails after `fail_after` calls, as a
/// killed run would stop.
struct Counting {
    inner: RecordedCompletions,
    generated: Vec<String>,
    fail_after: Option<usize>,
}

impl CompletionSource for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn render(
        &self,
        id: &str,
        spec: &ucoder_flow::eval::prompt::PromptSpec,
    ) -> Result<String, BackendError> {
        self.inner.render(id, spec)
    }
    fn generate(
        &mut self,
        request: &GenerationRequest<'_>,
    ) -> Result<Vec<Generation>, BackendError> {
        if self.fail_after == Some(self.generated.len()) {
            return Err("simulated crash".into());
        }
        self.generated.push(request.problem_id.to_string());
        self.inner.generate(request)
    }
}

fn counting(fail_after: Option<usize>) -> Counting {
    Counting {
        inner: RecordedCompletions::load(&fixture()).unwrap(),
        generated: Vec::new(),
        fail_after,
    }
}

/// The HumanEval problems the fixture has completions for, in benchmark order.
fn fixture_problems() -> Vec<Problem> {
    let all = humaneval::load(&ucoder_flow::fetch::cache_dir(), &|_| {}).unwrap();
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
    let problems = fixture_problems();
    let limit = 8.min(problems.len());
    assert!(limit >= 7, "fixture too small");

    // Uninterrupted reference run.
    let reference_dir = tempfile::tempdir().unwrap();
    let cfg = config(reference_dir.path(), limit);
    let mut src = counting(None);
    let reference = runner::run(
        &cfg,
        &problems,
        &mut src,
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap();
    assert_eq!(src.generated.len(), limit);
    assert!(reference.complete);
    assert_eq!(reference.samples, limit);

    // Killed after 5 problems: flush_every = 3, so one part (3 problems) is committed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), limit);
    let mut src = counting(Some(5));
    let err = runner::run(
        &cfg,
        &problems,
        &mut src,
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap_err();
    assert!(err.to_string().contains("simulated crash"), "{err}");
    let committed = rows(dir.path());
    assert_eq!(committed.len(), 3, "only whole parts count");
    // A crash mid-commit leaves a temp file; it must not be read.
    std::fs::write(
        runner::samples_dir(dir.path()).join(".part-0000-000009.parquet.tmp-1"),
        b"PAR1 torn",
    )
    .unwrap();

    let mut src = counting(None);
    let mut checker = SubprocessChecker::new();
    let resumed = runner::run(&cfg, &problems, &mut src, &mut checker, Progress::Hidden).unwrap();
    let first_three: Vec<&str> = problems[..3].iter().map(|p| p.task_id.as_str()).collect();
    assert_eq!(
        src.generated.len(),
        limit - 3,
        "finished problems are not regenerated"
    );
    assert!(
        src.generated
            .iter()
            .all(|id| !first_three.contains(&id.as_str()))
    );
    let remaining_programs = rows(dir.path())
        .iter()
        .filter(|r| !first_three.contains(&r.problem_id.as_str()) && r.program.is_some())
        .count();
    assert_eq!(
        checker.programs_run, remaining_programs,
        "only new programs are checked"
    );
    assert_eq!(resumed.pass_at_k, reference.pass_at_k);
    assert_eq!(
        without_timings(rows(dir.path())),
        without_timings(rows(reference_dir.path()))
    );

    // Extending the limit continues the same folder; a finished run does nothing new.
    let mut src = counting(None);
    let again = runner::run(
        &cfg,
        &problems,
        &mut src,
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap();
    assert!(src.generated.is_empty());
    assert_eq!(again.samples, limit);
    let wider = config(dir.path(), problems.len());
    let mut src = counting(None);
    let all = runner::run(
        &wider,
        &problems,
        &mut src,
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap();
    assert_eq!(src.generated.len(), problems.len() - limit);
    assert_eq!(all.problems, problems.len());
}

#[test]
fn results_hold_real_verdicts_and_summary_is_written() {
    let problems = fixture_problems();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), problems.len());
    let summary = runner::run(
        &cfg,
        &problems,
        &mut counting(None),
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap();
    let rows = rows(dir.path());
    assert_eq!(rows.len(), problems.len());
    let by_id = |id: &str| rows.iter().find(|r| r.problem_id == id).unwrap();
    // HumanEval/0: the model's nested-loop solution is correct.
    let r0 = by_id("HumanEval/0");
    assert!(r0.passed && r0.test_verdicts == ["pass"], "{r0:?}");
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
    let problems = fixture_problems();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    runner::run(
        &cfg,
        &problems,
        &mut counting(None),
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap();
    let mut other = cfg.clone();
    other.decoding.max_tokens = 77;
    let err = runner::run(
        &other,
        &problems,
        &mut counting(None),
        &mut SubprocessChecker::new(),
        Progress::Hidden,
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::SettingsChanged { .. }), "{err}");
    assert!(err.to_string().contains("max_tokens"), "{err}");

    let dump = dir.path().join("prompts.jsonl");
    let count = runner::dump_prompts(&cfg, &problems, &counting(None), &dump).unwrap();
    assert_eq!(count, 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["task_id"], problems[0].task_id);
    assert_eq!(lines[0]["max_tokens"], 512);
    let recorded = rows(dir.path());
    assert_eq!(lines[0]["prompt"].as_str().unwrap(), recorded[0].prompt);
}
