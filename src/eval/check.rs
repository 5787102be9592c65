//! Checking programs against a benchmark problem's tests, on top of the shared
//! [`Execute`] backend: the problem's `check(candidate)` becomes the job's tests, and each
//! test's result becomes the eval's verdict text (`pass`, `fail`, `error: <kind>`, `timeout`,
//! `killed`, `skipped`, labelled [`DECIDED_IN_CHILD`] where the candidate's own process decided
//! it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ucoder_operators::{
    BackendError, CandidateId, ExecJob, Execute, Execution, GeneratedTest, Outcome, ProblemId,
    TestKind, TestRun,
};

use super::EvalError;
use super::config::ProgramLimits;
use super::humaneval::Problem;
use super::results::DECIDED_IN_CHILD;
use crate::backends::{ExecOptions, SandboxExecutor, StageClock};
use crate::sandbox::{Limits, SandboxConfig, SandboxPool, TestCase};

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub passed: bool,
    /// `pass`, `fail`, `timeout`, `error: <kind>`, ... (see the module docs).
    pub verdict: String,
}

/// How one program fared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckOutcome {
    /// Set when the program could not run its tests at all (syntax error, crash on import,
    /// job deadline), with what happened.
    pub program_error: Option<String>,
    /// One entry per test, in the problem's test order.
    pub tests: Vec<TestOutcome>,
}

impl CheckOutcome {
    /// The program ran and passed every test (and there was at least one).
    pub fn passed(&self) -> bool {
        self.program_error.is_none()
            && !self.tests.is_empty()
            && self.tests.iter().all(|t| t.passed)
    }

    fn of(execution: Execution) -> Self {
        CheckOutcome {
            program_error: execution.program_error,
            tests: execution.results.into_iter().map(verdict).collect(),
        }
    }
}

/// The eval's verdict text of one test run.
fn verdict(run: TestRun) -> TestOutcome {
    let mut verdict = run
        .detail
        .unwrap_or_else(|| run.outcome.label().to_string());
    if run.decided_in_child {
        verdict.push_str(DECIDED_IN_CHILD);
    }
    TestOutcome {
        passed: run.outcome == Outcome::Pass,
        verdict,
    }
}

/// The problem's tests as the jobs of [`Execute`] carry them.
fn tests(problem: &Problem, id: ProblemId) -> Arc<[GeneratedTest]> {
    problem
        .tests()
        .into_iter()
        .map(|case| match case {
            TestCase::Assert { source } => GeneratedTest::new(id, TestKind::Assert, &source),
            TestCase::Call { .. } => unreachable!("a check function becomes asserts only"),
        })
        .collect()
}

/// One outcome per program of `problem`, in order; the programs go to `executor` as one batch so
/// that they run in parallel. A backend failure fails the whole check.
pub fn check(
    executor: &mut dyn Execute,
    problem: &Problem,
    programs: &[String],
) -> Result<Vec<CheckOutcome>, BackendError> {
    // The eval keys nothing by these ids; they only name the jobs.
    let problem_id = ProblemId(0);
    let tests = tests(problem, problem_id);
    let jobs: Vec<ExecJob> = programs
        .iter()
        .enumerate()
        .map(|(i, program)| ExecJob {
            problem_id,
            candidate_id: CandidateId(i as u64),
            entry_point: problem.entry_point.clone(),
            code: program.clone(),
            tests: Arc::clone(&tests),
        })
        .collect();
    executor
        .execute(&jobs)
        .into_iter()
        .map(|result| result.map(CheckOutcome::of))
        .collect()
}

/// The problems whose canonical solution (where given) fails its own tests, with what failed:
/// a user's benchmark file is checked this way before any model runs on it.
pub fn canonical_failures(
    executor: &mut dyn Execute,
    problems: &[Problem],
) -> Result<Vec<(String, String)>, BackendError> {
    let mut failures = Vec::new();
    for p in problems
        .iter()
        .filter(|p| !p.canonical_solution.trim().is_empty())
    {
        let outcome = check(executor, p, &[p.canonical_program()])?.remove(0);
        if !outcome.passed() {
            let why = outcome.program_error.clone().unwrap_or_else(|| {
                let verdicts: Vec<&str> =
                    outcome.tests.iter().map(|t| t.verdict.as_str()).collect();
                format!("test verdicts {}", verdicts.join(", "))
            });
            failures.push((p.task_id.clone(), why));
        }
    }
    Ok(failures)
}

/// Starts the sandbox pool of an eval: `limits.workers` workers.
pub fn open_pool(limits: &ProgramLimits) -> Result<Arc<SandboxPool>, EvalError> {
    open_seeded_pool(limits, 0)
}

/// [`open_pool`], its workers with `hash_seed`.
pub fn open_seeded_pool(
    limits: &ProgramLimits,
    hash_seed: u32,
) -> Result<Arc<SandboxPool>, EvalError> {
    let pool = SandboxPool::new(SandboxConfig {
        workers: limits.workers,
        hash_seed,
        ..Default::default()
    })
    .map_err(|e| EvalError::Backend {
        what: "starting the sandbox".into(),
        source: e.into(),
    })?;
    Ok(Arc::new(pool))
}

/// The executor of the benchmark's own tests on `pool`: each program gets `timeout_s` of wall
/// time for all its tests and `memory_mib` of memory; no job stops early; floats compare
/// exactly, as the tests are written.
pub fn executor(pool: Arc<SandboxPool>, limits: &ProgramLimits) -> SandboxExecutor {
    let job_limits = Limits {
        job_wall: Duration::from_secs_f64(limits.timeout_s),
        memory_bytes: limits.memory_mib << 20,
        ..pool.default_limits().clone()
    };
    let clock = Arc::new(StageClock::new(Instant::now()));
    SandboxExecutor::new(pool, job_limits, clock, ExecOptions::default())
}

/// Starts a sandbox pool and its [`executor`].
pub fn open_executor(limits: &ProgramLimits) -> Result<SandboxExecutor, EvalError> {
    Ok(executor(open_pool(limits)?, limits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucoder_operators::TestId;

    fn run(outcome: Outcome, detail: Option<&str>, decided_in_child: bool) -> TestRun {
        TestRun {
            test_id: TestId(1),
            outcome,
            output_hash: None,
            decided_in_child,
            detail: detail.map(str::to_string),
        }
    }

    #[test]
    fn verdicts_name_what_the_sandbox_said() {
        let texts: Vec<String> = [
            run(Outcome::Pass, None, false),
            run(Outcome::Fail, None, true),
            run(Outcome::Error, Some("error: NameError"), false),
            run(Outcome::Timeout, None, false),
            run(Outcome::Timeout, Some("killed"), false),
            run(Outcome::Skipped, None, false),
        ]
        .into_iter()
        .map(|r| verdict(r).verdict)
        .collect();
        assert_eq!(
            texts,
            [
                "pass".to_string(),
                format!("fail{DECIDED_IN_CHILD}"),
                "error: NameError".into(),
                "timeout".into(),
                "killed".into(),
                "skipped".into()
            ]
        );
        assert!(verdict(run(Outcome::Pass, None, true)).passed);
        let outcome = CheckOutcome::of(Execution {
            problem_id: ProblemId(0),
            candidate_id: CandidateId(0),
            results: vec![run(Outcome::Pass, None, false)],
            program_error: Some("SyntaxError: invalid syntax".into()),
        });
        assert!(!outcome.passed(), "a program error fails the program");
        assert!(!CheckOutcome::default().passed(), "no tests, no pass");
    }
}
