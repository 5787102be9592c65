//! The pool: W worker slots, each a long-lived thread that owns one warm worker process, takes
//! jobs from a shared queue, and kills and replaces its worker when it dies or hangs.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use serde_json::{Value as Json, json};

use super::host;
use super::judge::{self, Report};
use super::protocol::{FrameError, FrameReader, PROTOCOL_VERSION, write_frame};
use super::value::Value;
use super::{
    IsolationReport, Job, JobResult, Limits, ProgramError, SandboxConfig, SandboxError, TestCase,
    TestResult, Verdict,
};

const WORKER_SOURCE: &str = include_str!("worker.py");
/// Time a worker gets to start (interpreter, namespaces, pre-imports) before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack on top of the job's wall deadline before the pool declares the worker hung.
const HANG_GRACE: Duration = Duration::from_secs(3);
/// Times a job is sent to a (fresh) worker before it is reported as killed.
const MAX_ATTEMPTS: u32 = 2;
/// A job's wall deadline is at least its CPU budgets plus this.
const WALL_SLACK: Duration = Duration::from_secs(1);
/// Reruns, each with twice the wall time, of a job that reached its wall deadline.
const WALL_RERUNS: u32 = 1;

struct Task {
    job: Job,
    reply: Sender<Result<JobResult, SandboxError>>,
}

#[derive(Default)]
struct Shared {
    /// Host pid of each slot's current worker process (outer process of the worker).
    worker_pids: Mutex<Vec<Option<u32>>>,
    restarts: AtomicU64,
    jobs: AtomicU64,
}

/// A pool of warm, isolated Python workers. `run` and `submit` may be called from many threads.
pub struct SandboxPool {
    tasks: Option<Sender<Task>>,
    threads: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
    isolation: IsolationReport,
    python: String,
    default_limits: Limits,
}

/// Counters for diagnostics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub jobs: u64,
    /// Workers killed and replaced because they died or hung.
    pub worker_restarts: u64,
}

impl SandboxPool {
    /// Starts `config.workers` workers and waits until all are ready.
    pub fn new(config: SandboxConfig) -> Result<SandboxPool, SandboxError> {
        if config.workers == 0 {
            return Err(SandboxError::Config("workers must be at least 1".into()));
        }
        let python = match &config.python {
            Some(p) => p.clone(),
            None => host::real_python()?,
        };
        let shared = Arc::new(Shared {
            worker_pids: Mutex::new(vec![None; config.workers]),
            ..Default::default()
        });
        let (task_tx, task_rx) = unbounded::<Task>();
        let (ready_tx, ready_rx) = unbounded::<Result<Hello, SandboxError>>();
        let mut threads = Vec::new();
        for slot in 0..config.workers {
            let spec = WorkerSpec {
                python: python.clone(),
                config: config.clone(),
                uid: (config.drop_uid && host::is_root()).then(host::slot_uid),
                slot,
            };
            let rx = task_rx.clone();
            let ready = ready_tx.clone();
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("sandbox-slot-{slot}"))
                    .spawn(move || slot_main(spec, rx, ready, shared))
                    .map_err(|e| SandboxError::WorkerStart(format!("spawning slot thread: {e}")))?,
            );
        }
        drop(ready_tx);
        let mut pool = SandboxPool {
            tasks: Some(task_tx),
            threads,
            shared,
            isolation: BTreeMap::new(),
            python: String::new(),
            default_limits: config.limits.clone(),
        };
        for _ in 0..config.workers {
            match ready_rx.recv() {
                Ok(Ok(hello)) => {
                    pool.isolation = hello.features;
                    pool.python = hello.python;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(SandboxError::WorkerStart(
                        "a slot thread ended during start-up".into(),
                    ));
                }
            }
        }
        Ok(pool)
    }

    /// Runs a job and waits for its result.
    pub fn run(&self, job: Job) -> Result<JobResult, SandboxError> {
        self.submit(job)
            .recv()
            .unwrap_or(Err(SandboxError::ShutDown))
    }

    /// Runs several jobs at once (the workers take them in parallel) and returns their results in
    /// the jobs' order.
    pub fn run_all(
        &self,
        jobs: impl IntoIterator<Item = Job>,
    ) -> Vec<Result<JobResult, SandboxError>> {
        let pending: Vec<_> = jobs.into_iter().map(|job| self.submit(job)).collect();
        pending
            .into_iter()
            .map(|reply| reply.recv().unwrap_or(Err(SandboxError::ShutDown)))
            .collect()
    }

    /// Queues a job; the result arrives on the returned channel.
    pub fn submit(&self, job: Job) -> Receiver<Result<JobResult, SandboxError>> {
        let (tx, rx) = bounded(1);
        match &self.tasks {
            Some(tasks) => {
                if let Err(e) = tasks.send(Task { job, reply: tx }) {
                    let _ = e.0.reply.send(Err(SandboxError::ShutDown));
                }
            }
            None => {
                let _ = tx.send(Err(SandboxError::ShutDown));
            }
        }
        rx
    }

    /// Isolation features as the workers reported them (`ok` or `refused: why`).
    pub fn isolation(&self) -> &IsolationReport {
        &self.isolation
    }

    /// Python version of the workers.
    pub fn python_version(&self) -> &str {
        &self.python
    }

    pub fn workers(&self) -> usize {
        self.threads.len()
    }

    pub fn default_limits(&self) -> &Limits {
        &self.default_limits
    }

    /// Host pids of the workers' outer processes (every process of a job descends from one).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.shared
            .worker_pids
            .lock()
            .expect("pid lock")
            .iter()
            .flatten()
            .copied()
            .collect()
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            jobs: self.shared.jobs.load(Ordering::Relaxed),
            worker_restarts: self.shared.restarts.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SandboxPool {
    fn drop(&mut self) {
        self.tasks = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct WorkerSpec {
    python: std::path::PathBuf,
    config: SandboxConfig,
    uid: Option<u32>,
    slot: usize,
}

struct Hello {
    features: IsolationReport,
    python: String,
}

/// A running worker process.
struct WorkerProcess {
    child: Child,
    stdin: ChildStdin,
    reader: FrameReader<ChildStdout>,
    _cgroups: host::WorkerCgroups,
    _scratch: host::ScratchDir,
}

impl WorkerProcess {
    fn start(spec: &WorkerSpec) -> Result<(WorkerProcess, Hello), SandboxError> {
        let limits = &spec.config.limits;
        let cgroups = if spec.config.cgroup {
            host::WorkerCgroups::create(spec.uid.unwrap_or(spec.slot as u32), limits.processes)
        } else {
            let off = || Err("disabled by configuration".to_string());
            host::WorkerCgroups {
                pids: off(),
                memory: off(),
                cpuacct: off(),
            }
        };
        let mut scratch = host::ScratchDir::for_worker(spec.slot);
        let uid_why = if !spec.config.drop_uid {
            "disabled by configuration"
        } else {
            "the pool does not run as root, so it cannot switch uid"
        };
        let mut cfg = json!({
            "protocol": PROTOCOL_VERSION,
            "namespaces": spec.config.namespaces,
            "uid": spec.uid,
            "uid_why": uid_why,
            "scratch": scratch.path.to_string_lossy(),
            "limits": limits.to_json(),
        });
        if let Json::Object(map) = &mut cfg {
            map.extend(cgroups.to_json());
        }
        let mut cmd = Command::new(&spec.python);
        cmd.args(["-s", "-S", "-P", "-c", WORKER_SOURCE])
            // A process group of its own: Ctrl-C at a terminal reaches the run, which stops the
            // pool, not each worker (no Python tracebacks); PDEATHSIG still ends it with the run.
            .process_group(0)
            .arg(cfg.to_string())
            .env_clear()
            .env("PYTHONHASHSEED", spec.config.hash_seed.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // The worker dies with this (long-lived) slot thread.
        crate::process::end_with_starting_thread(&mut cmd, libc::SIGKILL);
        let mut child = cmd.spawn().map_err(|e| {
            SandboxError::WorkerStart(format!("spawning {}: {e}", spec.python.display()))
        })?;
        scratch.lend_to(child.id());
        let stdin = child.stdin.take().expect("piped stdin");
        let mut reader = FrameReader::new(child.stdout.take().expect("piped stdout"));
        let hello = match reader.read(Instant::now() + START_TIMEOUT) {
            Ok(h) => h,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::WorkerStart(format!(
                    "no hello from the worker ({e}); its stderr above may say why"
                )));
            }
        };
        if hello.get("hello") != Some(&Json::Bool(true))
            || hello.get("protocol") != Some(&json!(PROTOCOL_VERSION))
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(SandboxError::Protocol(format!("unexpected hello {hello}")));
        }
        let mut features: IsolationReport = hello
            .get("features")
            .and_then(|f| f.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let seeded = hello.get("hash_seed_fixed") == Some(&Json::Bool(true));
        features.insert(
            "fixed hash seed".into(),
            if seeded {
                "ok".into()
            } else {
                "refused: the interpreter ignored PYTHONHASHSEED".into()
            },
        );
        features.insert("clean environment, -s -S -P".into(), "ok".into());
        let python = hello
            .get("python")
            .and_then(|p| p.as_str())
            .unwrap_or("?")
            .to_string();
        Ok((
            WorkerProcess {
                child,
                stdin,
                reader,
                _cgroups: cgroups,
                _scratch: scratch,
            },
            Hello { features, python },
        ))
    }

    fn kill(mut self) {
        // The supervisor is PID 1 of its namespace with PDEATHSIG on this outer process: killing
        // the outer process tears down the whole namespace, every job process included.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slot_main(
    spec: WorkerSpec,
    tasks: Receiver<Task>,
    ready: Sender<Result<Hello, SandboxError>>,
    shared: Arc<Shared>,
) {
    let mut worker = match WorkerProcess::start(&spec) {
        Ok((w, hello)) => {
            shared.worker_pids.lock().expect("pid lock")[spec.slot] = Some(w.child.id());
            let _ = ready.send(Ok(hello));
            Some(w)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    let mut next_id: u64 = 0;
    while let Ok(task) = tasks.recv() {
        next_id += 1;
        let result = run_task(&spec, &shared, &mut worker, &task.job, next_id);
        shared.jobs.fetch_add(1, Ordering::Relaxed);
        let _ = task.reply.send(result);
    }
    if let Some(mut w) = worker.take() {
        let _ = write_frame(&mut w.stdin, &json!({"shutdown": true}));
        w.kill();
    }
    shared.worker_pids.lock().expect("pid lock")[spec.slot] = None;
}

fn run_task(
    spec: &WorkerSpec,
    shared: &Shared,
    worker: &mut Option<WorkerProcess>,
    job: &Job,
    id: u64,
) -> Result<JobResult, SandboxError> {
    let started = Instant::now();
    let mut limits = job
        .limits
        .clone()
        .unwrap_or_else(|| spec.config.limits.clone());
    limits.job_wall = limits
        .job_wall
        .max(limits.cpu_budget(job.tests.len()) + WALL_SLACK);
    let tests: Vec<Json> = job.tests.iter().map(test_json).collect();
    let mut events = Vec::new();
    let mut wall_reruns = 0;
    let mut attempt = 0;
    while attempt < MAX_ATTEMPTS {
        attempt += 1;
        let request = json!({
            "id": id,
            "program": job.program,
            "tests": tests,
            "limits": limits.to_json(),
            "stop_below_ran": job.early_stop.map(|stop| stop.at_least),
        });
        if worker.is_none() {
            match WorkerProcess::start(spec) {
                Ok((w, _)) => {
                    shared.worker_pids.lock().expect("pid lock")[spec.slot] = Some(w.child.id());
                    *worker = Some(w);
                }
                Err(e) => return Err(e),
            }
        }
        let w = worker.as_mut().expect("worker present");
        let deadline = Instant::now() + limits.job_wall + HANG_GRACE;
        match exchange(w, &request, job, id, deadline) {
            Ok(mut result) if result.wall_deadline && wall_reruns < WALL_RERUNS => {
                // Wall time is the machine's, CPU time the program's: a verdict must not depend on
                // how busy the machine was, so the job runs again with twice the time.
                events.append(&mut result.events);
                events.push(format!(
                    "wall deadline of {:.1} s reached; rerun with {:.1} s",
                    limits.job_wall.as_secs_f64(),
                    2.0 * limits.job_wall.as_secs_f64()
                ));
                limits.job_wall *= 2;
                wall_reruns += 1;
                attempt -= 1;
                continue;
            }
            Ok(mut result) => {
                events.append(&mut result.events);
                result.events = events;
                result.attempts = attempt;
                result.wall = started.elapsed();
                return Ok(result);
            }
            Err(why) => {
                events.push(format!(
                    "attempt {attempt}: worker {why}; killed and replaced"
                ));
            }
        }
        if let Some(w) = worker.take() {
            w.kill();
        }
        shared.restarts.fetch_add(1, Ordering::Relaxed);
        shared.worker_pids.lock().expect("pid lock")[spec.slot] = None;
    }
    let message = events.join("; ");
    Ok(JobResult {
        program_error: Some(ProgramError {
            kind: "WorkerLost".into(),
            message: message.clone(),
        }),
        tests: job
            .tests
            .iter()
            .map(|_| TestResult {
                verdict: Verdict::Killed,
                duration: Duration::ZERO,
                output_hash: None,
                value: None,
                checked_in_child: false,
                detail: Some(message.clone()),
            })
            .collect(),
        stdout: String::new(),
        stderr: String::new(),
        output_bytes: 0,
        events,
        attempts: MAX_ATTEMPTS,
        wall: started.elapsed(),
        memory_peak_bytes: None,
        stopped_early: false,
        wall_deadline: false,
    })
}

/// One attempt of a job on one worker: sends it and reads its frames up to the closing one (the
/// worker sends every test's result with it; a results batch in an earlier frame is accepted
/// too). `Err` says why the worker must be replaced (it died, hung, broke the protocol or
/// reported an internal error); a failing candidate is never an `Err`.
fn exchange(
    w: &mut WorkerProcess,
    request: &Json,
    job: &Job,
    id: u64,
    deadline: Instant,
) -> Result<JobResult, String> {
    let n = job.tests.len();
    write_frame(&mut w.stdin, request).map_err(|e| format!("failed ({e})"))?;
    let mut tests: Vec<Option<TestResult>> = vec![None; n];
    loop {
        let frame = w.reader.read(deadline).map_err(|e| match e {
            FrameError::Timeout => "hung past the job deadline".to_string(),
            FrameError::Eof => "died".to_string(),
            other => format!("failed ({other})"),
        })?;
        if frame.get("id") != Some(&json!(id)) {
            return Err("answered another job".into());
        }
        if let Some(err) = frame.get("worker_error") {
            return Err(format!(
                "reported an internal error ({})",
                err.as_str().unwrap_or("?")
            ));
        }
        if let Some(batch) = frame.get("results") {
            let batch = batch.as_array().ok_or("sent results that are not a list")?;
            for t in batch {
                let i = t
                    .get("i")
                    .and_then(|i| i.as_u64())
                    .map(|i| i as usize)
                    .filter(|i| *i < n)
                    .ok_or("sent a result for no test of the job")?;
                if tests[i].is_some() {
                    return Err(format!("sent test {i} twice"));
                }
                let result = decode_test(t, job.float_tolerance)
                    .map_err(|e| format!("broke the protocol ({e})"))?;
                tests[i] = Some(result);
            }
        }
        if frame.get("end") == Some(&Json::Bool(true)) {
            let tests = tests
                .into_iter()
                .enumerate()
                .map(|(i, t)| t.ok_or(format!("ended the job without test {i}")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(decode_end(&frame, tests));
        }
    }
}
fn test_json(t: &TestCase) -> Json {
    match t {
        TestCase::Assert { source } => json!({"kind": "assert", "source": source}),
        TestCase::Call {
            function,
            args,
            expected,
        } => json!({"kind": "call", "function": function, "args": args, "expected": expected}),
    }
}

fn protocol(what: &str) -> SandboxError {
    SandboxError::Protocol(what.to_string())
}

/// The closing frame of a job, with its tests' results already decoded.
fn decode_end(resp: &Json, tests: Vec<TestResult>) -> JobResult {
    let program_error = match resp.get("program_error") {
        None | Some(Json::Null) => None,
        Some(e) => Some(ProgramError {
            kind: e
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("?")
                .to_string(),
            message: e
                .get("msg")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string(),
        }),
    };
    let text = |k: &str| {
        resp.get(k)
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string()
    };
    JobResult {
        program_error,
        tests,
        stdout: text("stdout"),
        stderr: text("stderr"),
        output_bytes: resp
            .get("output_bytes")
            .and_then(|b| b.as_u64())
            .unwrap_or(0),
        events: resp
            .get("events")
            .and_then(|e| e.as_array())
            .map(|e| {
                e.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default(),
        attempts: 1,
        wall: Duration::ZERO,
        memory_peak_bytes: resp.get("memory_peak").and_then(|m| m.as_u64()),
        wall_deadline: resp.get("wall_deadline") == Some(&Json::Bool(true)),
        stopped_early: resp.get("stopped") == Some(&Json::Bool(true)),
    }
}
fn decode_test(t: &Json, tolerance: f64) -> Result<TestResult, SandboxError> {
    let status = t
        .get("s")
        .and_then(|s| s.as_str())
        .ok_or_else(|| protocol("test without status"))?;
    let in_child = t.get("child").and_then(|c| c.as_bool()).unwrap_or(true);
    let duration = t
        .get("cpu")
        .and_then(|c| c.as_f64())
        .filter(|c| c.is_finite() && *c >= 0.0 && *c < 1e7)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::ZERO);
    let mut result = TestResult {
        verdict: Verdict::Killed,
        duration,
        output_hash: None,
        value: None,
        checked_in_child: in_child,
        detail: t.get("why").and_then(|w| w.as_str()).map(String::from),
    };
    let error = |kind: &str| Verdict::Error {
        kind: kind.to_string(),
    };
    let judge_spec = t.get("judge");
    let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    result.verdict = match status {
        "v" => {
            let raw = t
                .get("v")
                .ok_or_else(|| protocol("value result without value"))?;
            match Value::from_json(raw) {
                Err(e) => {
                    result.detail = Some(e.to_string());
                    error("MalformedValue")
                }
                Ok(value) => {
                    result.output_hash = Some(value.signature_hash());
                    let verdict = judge::decide(Report::Value(&value), judge_spec, tolerance)?;
                    result.value = Some(value);
                    verdict
                }
            }
        }
        "pass" | "fail" if !in_child => {
            return Err(protocol("a split test came back with an in-child verdict"));
        }
        "pass" => Verdict::Pass,
        "fail" => Verdict::Fail,
        "raised" if judge_spec.is_some() => {
            let mro: Vec<String> = t
                .get("mro")
                .and_then(|m| m.as_array())
                .map(|m| {
                    m.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            judge::decide(Report::Raised { kind, mro: &mro }, judge_spec, tolerance)?
        }
        "returned" => judge::decide(Report::Returned, judge_spec, tolerance)?,
        "raised" => error(kind),
        "timeout" => Verdict::Timeout,
        "killed" => Verdict::Killed,
        "skipped" => Verdict::Skipped,
        "invalid" => error("InvalidTest"),
        "program_error" => error("ProgramError"),
        other => return Err(protocol(&format!("unknown test status {other:?}"))),
    };
    Ok(result)
}
