//! The sandbox pool behind [`Execute`]: [`SandboxExecutor`] runs a candidate on its problem's
//! whole test set and reports each test's [`Outcome`] (with the sandbox's own word where the
//! outcome does not say it all); [`SandboxChecker`] serves raw sandbox jobs (the pipeline's
//! skeleton and test checks) to a [`BackendPool`](ucoder_operators::BackendPool).

use std::sync::Arc;
use std::time::Instant;

use ucoder_operators::{
    BackendError, ExecJob, Execute, Execution, GeneratedTest, Outcome, TestKind, TestRun,
    min_executed,
};

use super::StageClock;
use crate::sandbox::{
    self, EarlyStop, IsolationReport, Job, JobResult, Limits, SandboxPool, Verdict,
};

/// Runs candidates on their problem's tests in the sandbox pool.
#[derive(Clone)]
pub struct SandboxExecutor {
    pool: Arc<SandboxPool>,
    /// Workers with another hash seed, to run again the candidates that could vote
    /// ([`SandboxExecutor::with_second_seed`]).
    second_seed: Option<Arc<SandboxPool>>,
    limits: Limits,
    clock: Arc<StageClock>,
    options: ExecOptions,
}

/// How a [`SandboxExecutor`] judges, beyond the sandbox's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExecOptions {
    /// ρ of the selection, when a job may stop once e(r) >= ρ is out of reach.
    pub stop_rho: Option<f64>,
    /// [`Job::float_tolerance`]: 0 is Python's exact `==` (a benchmark's own semantics).
    pub float_tolerance: f64,
    /// A job that ran out of wall time even after the pool's rerun
    /// ([`JobResult::wall_deadline`]) is a backend error for its candidate (recorded as a
    /// rejection, never scored as timeouts); otherwise its unfinished tests are `Killed`.
    pub wall_deadline_is_error: bool,
}

impl SandboxExecutor {
    pub fn new(
        pool: Arc<SandboxPool>,
        limits: Limits,
        clock: Arc<StageClock>,
        options: ExecOptions,
    ) -> Self {
        SandboxExecutor {
            pool,
            second_seed: None,
            limits,
            clock,
            options,
        }
    }

    /// Also runs every candidate that could vote (it passed a test and executed enough of them
    /// for e(r) >= ρ) on `pool`, whose workers have another hash seed. A candidate whose outcome
    /// or returned value changes on any test depends on set or dict order (or time): its
    /// agreement with others is chance, so every test of it becomes an error
    /// ([`NONDETERMINISTIC`]) and it votes in no cluster.
    pub fn with_second_seed(mut self, pool: Arc<SandboxPool>) -> Self {
        self.second_seed = Some(pool);
        self
    }

    /// The sandbox job of `job`.
    fn sandbox_job(&self, job: &ExecJob) -> Job {
        Job {
            program: job.code.clone(),
            tests: job.tests.iter().map(sandbox_test).collect(),
            limits: Some(self.limits.clone()),
            early_stop: self.early_stop(job.tests.len()),
            float_tolerance: self.options.float_tolerance,
        }
    }

    /// Whether `execution` could vote: a pass, and e(r) >= ρ still possible.
    fn could_vote(&self, execution: &Execution) -> bool {
        let executed = execution
            .results
            .iter()
            .filter(|r| r.outcome.executed())
            .count();
        let needed = min_executed(
            self.options.stop_rho.unwrap_or(0.0),
            execution.results.len() as u32,
        );
        execution.results.iter().any(|r| r.outcome == Outcome::Pass) && executed as u32 >= needed
    }

    /// Runs the executions that could vote again under the second hash seed and marks those
    /// whose results change.
    fn check_determinism(
        &self,
        jobs: &[ExecJob],
        out: &mut [Result<Execution, BackendError>],
    ) -> Result<(), BackendError> {
        let Some(second) = &self.second_seed else {
            return Ok(());
        };
        let again: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, e)| e.as_ref().is_ok_and(|e| self.could_vote(e)))
            .map(|(i, _)| i)
            .collect();
        let results = run_jobs(second, again.iter().map(|&i| self.sandbox_job(&jobs[i])));
        for (&i, result) in again.iter().zip(results) {
            let rerun = execution(&jobs[i], result?)?;
            let Ok(first) = &mut out[i] else { continue };
            let same = first
                .results
                .iter()
                .zip(&rerun.results)
                .all(|(a, b)| a.outcome == b.outcome && a.output_hash == b.output_hash);
            if !same {
                for r in &mut first.results {
                    r.outcome = Outcome::Error;
                    r.output_hash = None;
                    r.detail = Some(NONDETERMINISTIC.into());
                }
            }
        }
        Ok(())
    }

    /// The isolation steps of the pool's workers (`ok` or `refused: why`).
    pub fn isolation(&self) -> &IsolationReport {
        self.pool.isolation()
    }

    /// The early stop for a job of `tests` tests: a candidate that can no longer execute on
    /// [`min_executed`] of them cannot vote (the paper's e(r) >= ρ, for both selectors), so the
    /// rest of its tests are skipped.
    fn early_stop(&self, tests: usize) -> Option<EarlyStop> {
        let rho = self.options.stop_rho.filter(|rho| *rho > 0.0)?;
        Some(EarlyStop {
            at_least: min_executed(rho, tests as u32) as usize,
        })
    }
}

/// The detail of every test of a candidate whose results changed under another hash seed.
pub const NONDETERMINISTIC: &str = "error: nondeterministic (results change with the hash seed)";

/// A note for each isolation step the host refused, for the job's reporter.
pub fn refusal_notes(report: &IsolationReport) -> Vec<String> {
    report
        .iter()
        .filter_map(|(feature, state)| {
            let why = state.strip_prefix("refused: ")?;
            Some(format!(
                "sandbox: isolation feature unavailable on this host: {feature}: {why}"
            ))
        })
        .collect()
}

/// The sandbox test for a stored test case. Both kinds run as asserts: the sandbox splits
/// `assert f(args) == expected` itself, evaluating only the call in the child and comparing
/// outside it, which is what a call test is.
pub fn sandbox_test(test: &GeneratedTest) -> sandbox::TestCase {
    match test.kind {
        TestKind::Assert | TestKind::Call => sandbox::TestCase::Assert {
            source: test.code.clone(),
        },
    }
}

/// How a sandbox verdict counts in an execution signature.
pub fn outcome(verdict: &Verdict) -> Outcome {
    match verdict {
        Verdict::Pass => Outcome::Pass,
        Verdict::Fail => Outcome::Fail,
        Verdict::Error { .. } => Outcome::Error,
        Verdict::Timeout | Verdict::Killed => Outcome::Timeout,
        Verdict::Skipped => Outcome::Skipped,
    }
}

/// What a verdict says beyond its [`outcome`]: `error: <kind>`, `killed`.
fn detail(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Error { kind } => Some(format!("error: {kind}")),
        Verdict::Killed => Some("killed".into()),
        Verdict::Pass | Verdict::Fail | Verdict::Timeout | Verdict::Skipped => None,
    }
}

fn sandbox_error(message: impl ToString) -> BackendError {
    BackendError {
        backend: "sandbox".into(),
        message: message.to_string(),
    }
}

/// [`SandboxPool::run_all`], with failures as [`BackendError`]s.
fn run_jobs(
    pool: &SandboxPool,
    jobs: impl Iterator<Item = Job>,
) -> Vec<Result<JobResult, BackendError>> {
    pool.run_all(jobs)
        .into_iter()
        .map(|result| result.map_err(sandbox_error))
        .collect()
}

/// The execution of `job` from the sandbox's answer.
fn execution(job: &ExecJob, result: JobResult) -> Result<Execution, BackendError> {
    if result.tests.len() != job.tests.len() {
        return Err(sandbox_error(format!(
            "candidate {}: {} results for {} tests",
            job.candidate_id,
            result.tests.len(),
            job.tests.len()
        )));
    }
    Ok(Execution {
        problem_id: job.problem_id,
        candidate_id: job.candidate_id,
        results: job
            .tests
            .iter()
            .zip(&result.tests)
            .map(|(test, r)| TestRun {
                test_id: test.id,
                outcome: outcome(&r.verdict),
                output_hash: r.output_hash,
                decided_in_child: r.checked_in_child,
                detail: detail(&r.verdict),
            })
            .collect(),
        program_error: result
            .program_error
            .map(|e| format!("{}: {}", e.kind, e.message)),
    })
}

impl Execute for SandboxExecutor {
    fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        let started = Instant::now();
        let results = run_jobs(&self.pool, jobs.iter().map(|job| self.sandbox_job(job)));
        let mut out: Vec<Result<Execution, BackendError>> = jobs
            .iter()
            .zip(results)
            .map(|(job, result)| {
                let result = result?;
                if result.wall_deadline && self.options.wall_deadline_is_error {
                    return Err(sandbox_error(format!(
                        "candidate {}: ran out of wall time twice (it sleeps or blocks, or the \
                         machine is overloaded); not scored",
                        job.candidate_id
                    )));
                }
                execution(job, result)
            })
            .collect();
        if let Err(e) = self.check_determinism(jobs, &mut out) {
            out = jobs.iter().map(|_| Err(e.clone())).collect();
        }
        self.clock.record(started, jobs.len(), 0);
        out
    }
}

/// Runs raw sandbox jobs (the skeleton and test checks), for a [`BackendPool`](ucoder_operators::BackendPool).
pub struct SandboxChecker {
    pool: Arc<SandboxPool>,
    clock: Arc<StageClock>,
}

impl SandboxChecker {
    pub fn new(pool: Arc<SandboxPool>, clock: Arc<StageClock>) -> Self {
        SandboxChecker { pool, clock }
    }
}

impl ucoder_operators::Service for SandboxChecker {
    type Request = Job;
    type Response = Result<JobResult, BackendError>;
    fn serve(&mut self, jobs: &[Job]) -> Vec<Result<JobResult, BackendError>> {
        let started = Instant::now();
        let out = run_jobs(&self.pool, jobs.iter().cloned());
        self.clock.record(started, jobs.len(), 0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_keep_what_the_outcome_does_not_say() {
        let cases = [
            (Verdict::Pass, Outcome::Pass, None),
            (Verdict::Fail, Outcome::Fail, None),
            (
                Verdict::Error {
                    kind: "NameError".into(),
                },
                Outcome::Error,
                Some("error: NameError"),
            ),
            (Verdict::Timeout, Outcome::Timeout, None),
            (Verdict::Killed, Outcome::Timeout, Some("killed")),
            (Verdict::Skipped, Outcome::Skipped, None),
        ];
        for (verdict, expected, said) in cases {
            assert_eq!(outcome(&verdict), expected, "{verdict:?}");
            assert_eq!(detail(&verdict).as_deref(), said, "{verdict:?}");
        }
    }

    #[test]
    fn only_refused_steps_make_notes() {
        let report: IsolationReport = [
            ("seccomp".to_string(), "ok".to_string()),
            (
                "cgroup_memory".to_string(),
                "refused: no cgroup v1".to_string(),
            ),
        ]
        .into();
        assert_eq!(
            refusal_notes(&report),
            ["sandbox: isolation feature unavailable on this host: cgroup_memory: no cgroup v1"]
        );
    }
}
