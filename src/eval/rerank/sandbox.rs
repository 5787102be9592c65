//! The rerank mode's sandbox: the pipeline's TestCheck jobs (generated tests on the stub) and
//! samples on the kept generated tests, with the pipeline's per-test CPU budget and float
//! tolerance, on the eval's pool. No job stops early: every method is scored on full rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ucoder_operators::{BackendError, ExecJob, Execute, Execution, Service};

use crate::backends::{ExecOptions, SandboxChecker, SandboxExecutor, StageClock};
use crate::eval::config::ProgramLimits;
use crate::sandbox::{Job, JobResult, Limits, SandboxPool};

/// Checks and runs generated tests.
pub struct RerankSandbox {
    checker: SandboxChecker,
    executor: SandboxExecutor,
    limits: Limits,
}

impl RerankSandbox {
    /// On `pool`, with `limits`' `test_cpu_seconds`, `memory_mib` and `float_tolerance`; with
    /// `second_seed` (a pool whose workers have another hash seed, for `hash_seeds = 2`), a
    /// sample whose results change with the seed votes in no cluster.
    pub fn new(
        pool: Arc<SandboxPool>,
        second_seed: Option<Arc<SandboxPool>>,
        limits: &ProgramLimits,
    ) -> Self {
        let job_limits = Limits {
            test_cpu: Duration::from_secs_f64(limits.test_cpu_seconds),
            memory_bytes: limits.memory_mib << 20,
            ..pool.default_limits().clone()
        };
        let clock = Arc::new(StageClock::new(Instant::now()));
        let options = ExecOptions {
            stop_rho: None,
            float_tolerance: limits.float_tolerance,
            wall_deadline_is_error: false,
        };
        let checker = SandboxChecker::new(Arc::clone(&pool), Arc::clone(&clock));
        let mut executor = SandboxExecutor::new(pool, job_limits.clone(), clock, options);
        if let Some(second) = second_seed {
            executor = executor.with_second_seed(second);
        }
        RerankSandbox {
            checker,
            executor,
            limits: job_limits,
        }
    }

    /// The limits of a TestCheck job.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Runs one TestCheck job.
    pub fn check(&mut self, job: Job) -> Result<JobResult, BackendError> {
        self.checker.serve(&[job]).pop().unwrap_or_else(|| {
            Err(BackendError {
                backend: "sandbox".into(),
                message: "no answer to the check".into(),
            })
        })
    }

    /// Runs programs on generated tests.
    pub fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        self.executor.execute(jobs)
    }
}
