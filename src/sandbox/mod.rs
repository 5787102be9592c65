//! The sandbox: a pool of isolated, warm Python workers that run untrusted generated code.
//!
//! [`SandboxPool`] keeps W workers (the Python program `worker.py`, shipped inside the binary)
//! started from the real interpreter. Each worker isolates itself once (PID, network, mount and
//! IPC namespaces, a read-only file system with a private tmpfs per job, job cgroups for pids,
//! memory and CPU accounting, an unprivileged uid where the host allows) and is three processes:
//! a supervisor that talks to this pool and plans the tests, a zygote forked before any job
//! existed, and one child per [`Job`] forked from the zygote, so the child's memory has never
//! held an expected value, another job's data or the result channel. The child gets its own
//! session, rlimits and a seccomp filter, loads the program and runs the tests.
//!
//! Verdicts are decided outside the child wherever the test's form allows ([`judge`]): equality,
//! tolerance (`abs(E - L) < eps`, `math.isclose`), membership in a literal, `is None`, truthiness
//! of a call and expected exceptions send back only the value (as type-tagged plain data,
//! [`value::Value`]) or the exception's class names. Asserts that cannot be split run inside the
//! child and say so ([`TestResult::checked_in_child`]). Reports travel on a pipe made for the job
//! alone; anything malformed is a protocol violation of that job. Per-test CPU budgets (from the
//! job's cgroup), a whole-job wall deadline, capped output and kill-everything cleanup are
//! enforced by the supervisor; a worker that dies or hangs is killed and replaced by the pool
//! and its job re-run once, then reported as killed. A job is never lost and never passes
//! without having run.

mod host;
pub mod judge;
mod pool;
pub mod protocol;
pub mod pysource;
pub mod value;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use host::{end_all_workers, real_python};
pub use pool::{PoolStats, SandboxPool};
pub use value::Value;

/// Resource limits for one job. All CPU budgets are CPU time of the job's process, not wall time.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// CPU time one test may use.
    pub test_cpu: Duration,
    /// CPU time for loading the program (module-level code, definitions).
    pub program_cpu: Duration,
    /// Wall-clock deadline for the whole job, enforced from outside the child. The pool never
    /// lets it fall below the job's CPU budgets ([`Limits::cpu_budget`]) plus a slack, so a
    /// program that stays within its CPU budgets is not cut short by a busy machine.
    pub job_wall: Duration,
    /// RLIMIT_AS of the child.
    pub memory_bytes: u64,
    /// RLIMIT_FSIZE of the child.
    pub file_bytes: u64,
    /// RLIMIT_NOFILE of the child.
    pub open_files: u64,
    /// Processes (and threads) the job may have at once: pids cgroup and RLIMIT_NPROC.
    pub processes: u64,
    /// Size of the job's private tmpfs working directory.
    pub tmp_bytes: u64,
    /// Bytes of stdout and of stderr kept in the [`JobResult`].
    pub output_keep_bytes: u64,
    /// Total stdout+stderr bytes after which the job's current test is killed.
    pub max_output_bytes: u64,
    /// Largest returned value (as tagged data) sent back; larger values are [`Value::Truncated`].
    pub value_bytes: u64,
}

impl Limits {
    /// The most CPU time a job of `tests` tests may use: its program load and every test.
    pub fn cpu_budget(&self, tests: usize) -> Duration {
        self.program_cpu + self.test_cpu * tests.min(u32::MAX as usize) as u32
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            test_cpu: Duration::from_secs(3),
            program_cpu: Duration::from_secs(5),
            job_wall: Duration::from_secs(60),
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            open_files: 256,
            processes: 64,
            tmp_bytes: 64 << 20,
            output_keep_bytes: 8 << 10,
            max_output_bytes: 8 << 20,
            value_bytes: 1 << 20,
        }
    }
}

impl Limits {
    fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "test_cpu": self.test_cpu.as_secs_f64(),
            "program_cpu": self.program_cpu.as_secs_f64(),
            "job_wall": self.job_wall.as_secs_f64(),
            "memory_bytes": self.memory_bytes,
            "file_bytes": self.file_bytes,
            "open_files": self.open_files,
            "processes": self.processes,
            "tmp_bytes": self.tmp_bytes,
            "output_keep_bytes": self.output_keep_bytes,
            "max_output_bytes": self.max_output_bytes,
            "value_bytes": self.value_bytes,
        })
    }
}

/// How to build a [`SandboxPool`].
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Number of warm workers (jobs that run at once).
    pub workers: usize,
    /// Default limits for jobs that bring none.
    pub limits: Limits,
    /// The interpreter; `None` asks `$UCODER_FLOW_PYTHON` (or `python3`) for its real `sys.executable`.
    pub python: Option<PathBuf>,
    /// Try PID, network and mount namespaces (on by default; refusals are reported, not fatal).
    pub namespaces: bool,
    /// Try a per-worker pids cgroup (on by default).
    pub cgroup: bool,
    /// Run jobs under an unprivileged uid when started as root (on by default).
    pub drop_uid: bool,
    /// Fixed hash seed of every worker, so set iteration order (and so output hashes) is reproducible.
    pub hash_seed: u32,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            limits: Limits::default(),
            python: None,
            namespaces: true,
            cgroup: true,
            drop_uid: true,
            hash_seed: 0,
        }
    }
}

/// One unit of work: a program and the tests to run against it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Python source: imports and definitions. Runs with `__name__ == "__candidate__"`.
    pub program: String,
    /// Tests, run in order in the program's global namespace.
    pub tests: Vec<TestCase>,
    /// Overrides the pool's default limits.
    pub limits: Option<Limits>,
    /// Stop the job once it can no longer reach this; its untried tests become
    /// [`Verdict::Skipped`]. For a consumer that cannot use the candidate past that point (e.g.
    /// e(r) >= rho is out of reach). `None` runs every test.
    pub early_stop: Option<EarlyStop>,
    /// Floats compare equal (`==`, `!=`, membership, call tests' expected values) when
    /// `|a − b| ≤ tol · max(1, |a|, |b|)` ([`Value::eq_within`]). 0, the default, is Python's
    /// exact `==` (what a benchmark's own harness does); the pipeline sets it, so that correct
    /// programs that sum in another order agree.
    pub float_tolerance: f64,
}

/// When a job stops early: as soon as fewer than `at_least` of its tests can still run to their
/// end ([`Verdict::Pass`] or [`Verdict::Fail`], what e(r) counts). The worker decides it as the
/// reports arrive, counting a returned value as ran, so a candidate always stops at the same test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyStop {
    pub at_least: usize,
}

impl Job {
    /// A job that runs every test under the pool's limits.
    pub fn new(program: impl Into<String>, tests: Vec<TestCase>) -> Job {
        Job {
            program: program.into(),
            tests,
            limits: None,
            early_stop: None,
            float_tolerance: 0.0,
        }
    }
}

/// One test.
#[derive(Debug, Clone, PartialEq)]
pub enum TestCase {
    /// Python statements ending in an `assert`. `assert <expr> ==/!= <literal>`, `is None/True/False`,
    /// `assert <expr>` and `assert not <expr>` are split: only `<expr>` runs in the child and the
    /// comparison happens outside it. Any other form runs inside the child.
    Assert { source: String },
    /// `function(*args)`; its returned value comes back as plain data and is hashed. With
    /// `expected`, the verdict is `value == expected` decided outside the child; without, a call
    /// that returns is a pass.
    Call {
        /// Name (or dotted path) of a callable in the program's globals.
        function: String,
        /// Python literal of the argument list, e.g. `[[1, 2], 3]`.
        args: String,
        /// Python literal of the expected value.
        expected: Option<String>,
    },
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Pass,
    /// The assertion (or the outside comparison) failed.
    Fail,
    /// The test raised: `kind` is the exception type name, or `ProgramError` when the program itself
    /// failed to load, `InvalidTest` for a test that is not well-formed, `ValueTooLarge`,
    /// `MalformedValue`, `ProcessExit(n)` for `os._exit` during the test.
    Error {
        kind: String,
    },
    /// The test used up its CPU-time budget.
    Timeout,
    /// The process died (signal, output limit, job deadline, protocol violation, lost worker).
    Killed,
    /// Not run: the job stopped early because it could no longer reach [`Job::early_stop`].
    Skipped,
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub verdict: Verdict,
    /// CPU time of the test as the child measured it (zero when it did not report).
    pub duration: Duration,
    /// Signature hash of the returned value, for tests that returned one.
    pub output_hash: Option<u64>,
    /// The returned value, for tests that returned one.
    pub value: Option<Value>,
    /// True when the verdict was decided inside the candidate's process ("decided in child"): an
    /// assert of a form the supervisor cannot split, so the candidate's own code could sway it.
    pub checked_in_child: bool,
    /// Why the verdict is what it is, when there is more to say (kill reason, invalid test).
    pub detail: Option<String>,
}

/// The program itself could not be loaded: every test then has `Error { kind: "ProgramError" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramError {
    /// Exception type (`SyntaxError`, `SystemExit`, ...), `Timeout`, `Died`, or `WorkerLost`.
    pub kind: String,
    pub message: String,
}

/// The outcome of one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    pub program_error: Option<ProgramError>,
    pub tests: Vec<TestResult>,
    /// The first [`Limits::output_keep_bytes`] of the job's stdout and stderr.
    pub stdout: String,
    pub stderr: String,
    /// Total bytes the job wrote to stdout and stderr.
    pub output_bytes: u64,
    /// Notable things that happened (kills, resumes, worker replacement).
    pub events: Vec<String>,
    /// Times the job was sent to a worker (2 when a worker was lost and the job re-run).
    pub attempts: u32,
    /// Wall time from dispatch to answer.
    pub wall: Duration,
    /// Peak memory of the job's processes together (its memory cgroup), where the host has one.
    pub memory_peak_bytes: Option<u64>,
    /// True when the job stopped early ([`Job::early_stop`]); its untried tests are skipped.
    pub stopped_early: bool,
    /// True when the job ran into its wall deadline even after the pool reran it with twice the
    /// time: its unfinished tests are `Killed` ("job wall deadline"), a verdict of the machine's
    /// load or of a program that sleeps, not of its CPU use. Consumers should not score it as a
    /// timeout.
    pub wall_deadline: bool,
}

impl JobResult {
    pub fn passed_count(&self) -> usize {
        self.tests
            .iter()
            .filter(|t| t.verdict == Verdict::Pass)
            .count()
    }

    /// True when the program loaded and every test passed (a job without tests passes if it loads).
    pub fn all_passed(&self) -> bool {
        self.program_error.is_none() && self.tests.iter().all(|t| t.verdict == Verdict::Pass)
    }

    /// Output hashes in test order (`None` where no value came back).
    pub fn signature(&self) -> Vec<Option<u64>> {
        self.tests.iter().map(|t| t.output_hash).collect()
    }
}

/// Isolation features as the workers reported them: name -> `ok` or `refused: why`.
pub type IsolationReport = BTreeMap<String, String>;

/// Errors of the pool itself (a failing candidate is a [`JobResult`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "cannot find the Python interpreter ({detail}); install Python 3 or set UCODER_FLOW_PYTHON to an interpreter"
    )]
    Python { detail: String },
    #[error("sandbox worker failed to start: {0}")]
    WorkerStart(String),
    #[error("sandbox worker broke the protocol: {0}")]
    Protocol(String),
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    #[error("the sandbox pool has shut down")]
    ShutDown,
}
