//! The production backends of the IPC graph: the in-process candle engine behind
//! [`Generate`](ucoder_operators::Generate) and the sandbox pool behind
//! [`Execute`](ucoder_operators::Execute), plus the sandbox checks of skeletons and tests.
//!
//! One engine serves every LLM stage. Each stage gets its own [`BackendPool`] thread holding a
//! [`CandleGenerator`] over the shared engine, so the time the engine spends on each stage is
//! measured where it is spent ([`StageClock`]) and a slow stage never queues behind another's
//! batch bookkeeping; the engine itself serves one batch at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ucoder_operators::{
    BackendError, BackendHandle, BackendPool, ChatMessage, Completion, ExecJob, Execute,
    ExecuteService, Execution, FinishReason, Generate, GenerateService, Generation,
    GenerationRequest, LogprobSummary, Outcome, Role, TestKind, TestRun, min_executed,
};

use super::PipelineError;
use super::cores::CoreSplit;
use super::stages::LlmStage;
use super::summary::StageTime;
use crate::config::PipelineConfig;
use crate::llm::{self, ChatTurn, Engine, EngineOptions};
use crate::models::ModelSource;
use crate::sandbox::{
    self, EarlyStop, Job, JobResult, Limits, SandboxConfig, SandboxPool, Verdict,
};

/// Busy time and activity span of one stage's backend, shared with the report.
#[derive(Debug)]
pub struct StageClock {
    origin: Instant,
    busy_micros: AtomicU64,
    /// Micros since `origin` of the first batch start, `u64::MAX` before any.
    first_micros: AtomicU64,
    last_micros: AtomicU64,
    requests: AtomicU64,
    tokens: AtomicU64,
}

impl StageClock {
    pub fn new(origin: Instant) -> Self {
        StageClock {
            origin,
            busy_micros: AtomicU64::new(0),
            first_micros: AtomicU64::new(u64::MAX),
            last_micros: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
        }
    }

    fn record(&self, started: Instant, requests: usize, tokens: u64) {
        let now = Instant::now();
        let micros = |t: Instant| t.duration_since(self.origin).as_micros() as u64;
        self.busy_micros.fetch_add(
            now.duration_since(started).as_micros() as u64,
            Ordering::Relaxed,
        );
        self.first_micros
            .fetch_min(micros(started), Ordering::Relaxed);
        self.last_micros.fetch_max(micros(now), Ordering::Relaxed);
        self.requests.fetch_add(requests as u64, Ordering::Relaxed);
        self.tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Seconds the backend spent serving this stage.
    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_micros.load(Ordering::Relaxed))
    }

    /// Seconds from the first batch's start to the last batch's end (zero when none ran).
    pub fn span(&self) -> Duration {
        let first = self.first_micros.load(Ordering::Relaxed);
        let last = self.last_micros.load(Ordering::Relaxed);
        if first == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_micros(last.saturating_sub(first))
        }
    }

    /// Requests (LLM prompts or sandbox jobs) served.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Completion tokens generated (LLM stages).
    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }
}

/// One LLM stage's view of the shared engine.
pub struct CandleGenerator {
    engine: Arc<Mutex<Engine>>,
    clock: Arc<StageClock>,
}

impl CandleGenerator {
    pub fn new(engine: Arc<Mutex<Engine>>, clock: Arc<StageClock>) -> Self {
        CandleGenerator { engine, clock }
    }
}

fn backend_error(message: impl ToString) -> BackendError {
    BackendError {
        backend: "candle".into(),
        message: message.to_string(),
    }
}

fn to_engine_request(
    engine: &Engine,
    request: &GenerationRequest,
) -> Result<llm::SampleRequest, BackendError> {
    // A final assistant message is a prefill: the model continues it (the judge puts it back in
    // front of the completion), which keeps small models inside the tagged answer format.
    let (turns, prefill) = match request.messages.split_last() {
        Some((last, rest)) if last.role == Role::Assistant => (rest, last.content.as_str()),
        _ => (request.messages.as_slice(), ""),
    };
    let messages: Vec<ChatTurn> = turns
        .iter()
        .map(|m: &ChatMessage| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            ChatTurn::new(role, m.content.as_str())
        })
        .collect();
    let mut prompt = engine.chat_prompt(&messages).map_err(backend_error)?;
    prompt.push_str(prefill);
    Ok(llm::SampleRequest {
        prompt,
        n: request.n as usize,
        params: llm::SamplerSettings {
            temperature: request.params.temperature,
            top_p: request.params.top_p,
            top_k: 0,
            max_tokens: request.params.max_tokens as usize,
            stop: request.params.stop.clone(),
            seed: request.params.seed,
            ignore_eos: false,
        },
    })
}

fn from_engine_completion(completion: llm::Sample) -> Completion {
    let mut logprobs = LogprobSummary::default();
    for &l in &completion.logprobs {
        logprobs.push(f64::from(l));
    }
    Completion {
        text: completion.text,
        logprobs,
        finish: match completion.finish_reason {
            llm::SampleEnd::Length => FinishReason::Length,
            llm::SampleEnd::Stop | llm::SampleEnd::Eos => FinishReason::Stop,
        },
    }
}

impl Generate for CandleGenerator {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // Requests that cannot even be rendered fail alone; the rest go as one batch.
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        let mut batch = Vec::new();
        let mut positions = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            match to_engine_request(&engine, request) {
                Ok(r) => {
                    batch.push(r);
                    positions.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut tokens = 0u64;
        match engine.generate_batch(&batch) {
            Ok(results) => {
                for (i, completions) in positions.into_iter().zip(results) {
                    tokens += completions
                        .iter()
                        .map(|c| c.token_ids.len() as u64)
                        .sum::<u64>();
                    out[i] = Some(Ok(completions
                        .into_iter()
                        .map(from_engine_completion)
                        .collect()));
                }
            }
            Err(e) => {
                // One bad request (e.g. a prompt longer than the context) fails the batch call;
                // serve the requests one by one so only that one fails.
                for (i, request) in positions.into_iter().zip(batch) {
                    out[i] = Some(
                        engine
                            .generate_batch(std::slice::from_ref(&request))
                            .map(|mut r| {
                                let completions = r.pop().unwrap_or_default();
                                tokens += completions
                                    .iter()
                                    .map(|c| c.token_ids.len() as u64)
                                    .sum::<u64>();
                                completions
                                    .into_iter()
                                    .map(from_engine_completion)
                                    .collect()
                            })
                            .map_err(|single| {
                                backend_error(format!("{single} (batch failed with: {e})"))
                            }),
                    );
                }
            }
        }
        self.clock.record(started, requests.len(), tokens);
        out.into_iter()
            .map(|g| g.expect("every request answered"))
            .collect()
    }
}

/// Runs candidates on their problem's tests in the sandbox pool.
pub struct SandboxExecutor {
    pool: Arc<SandboxPool>,
    limits: Limits,
    clock: Arc<StageClock>,
    /// ρ of the selection, when a job may stop once e(r) >= ρ is out of reach.
    stop_rho: Option<f64>,
}

impl SandboxExecutor {
    pub fn new(
        pool: Arc<SandboxPool>,
        limits: Limits,
        clock: Arc<StageClock>,
        stop_rho: Option<f64>,
    ) -> Self {
        SandboxExecutor {
            pool,
            limits,
            clock,
            stop_rho,
        }
    }

    /// The early stop for a job of `tests` tests: a candidate that can no longer execute on
    /// [`min_executed`] of them cannot vote (the paper's e(r) >= ρ, for both selectors), so the
    /// rest of its tests are skipped.
    fn early_stop(&self, tests: usize) -> Option<EarlyStop> {
        let rho = self.stop_rho.filter(|rho| *rho > 0.0)?;
        Some(EarlyStop {
            at_least: min_executed(rho, tests as u32) as usize,
        })
    }
}

/// The sandbox test for a stored test case. Both kinds run as asserts: the sandbox splits
/// `assert f(args) == expected` itself, evaluating only the call in the child and comparing
/// outside it, which is what a call test is.
pub fn sandbox_test(test: &ucoder_operators::GeneratedTest) -> sandbox::TestCase {
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

impl Execute for SandboxExecutor {
    fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        let started = Instant::now();
        let results = run_jobs(
            &self.pool,
            jobs.iter().map(|job| Job {
                program: job.code.clone(),
                tests: job.tests.iter().map(sandbox_test).collect(),
                limits: Some(self.limits.clone()),
                early_stop: self.early_stop(job.tests.len()),
                float_tolerance: 0.0,
            }),
        );
        let out = jobs
            .iter()
            .zip(results)
            .map(|(job, result)| {
                let result = result?;
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
                        })
                        .collect(),
                })
            })
            .collect();
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

/// The backends of one run: the engine (one pool thread per LLM stage), the sandbox executor
/// pool and the sandbox check pool, with a clock per stage.
pub struct Backends {
    pub engine: Arc<Mutex<Engine>>,
    pub limits: Limits,
    llm: Vec<(Arc<StageClock>, BackendPool<GenerationRequest, Generation>)>,
    pub exec: BackendPool<ExecJob, Result<Execution, BackendError>>,
    exec_clock: Arc<StageClock>,
    pub check: BackendPool<Job, Result<JobResult, BackendError>>,
    check_clock: Arc<StageClock>,
    /// The sandbox's isolation steps (`ok` or `refused: why`), for the summary.
    pub isolation: std::collections::BTreeMap<String, String>,
}

impl Backends {
    /// Loads the model and starts the sandbox and the pools, with the cores of `split`.
    pub fn start(
        config: &PipelineConfig,
        split: &CoreSplit,
        source: &ModelSource,
        say: &dyn Fn(&str),
    ) -> Result<Self, PipelineError> {
        say(&format!(
            "cores: {} engine thread(s), {} sandbox worker(s), {} dataflow worker(s)",
            split.engine_threads, split.sandbox_workers, split.dataflow_workers
        ));
        say(&format!("loading {}", source.path().display()));
        let engine = Engine::load(
            source,
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
        let llm = LlmStage::ALL
            .iter()
            .map(|stage| {
                let clock = Arc::new(StageClock::new(origin));
                let generator = CandleGenerator::new(Arc::clone(&engine), Arc::clone(&clock));
                let pool =
                    BackendPool::spawn(stage.operator_name(), vec![GenerateService(generator)]);
                (clock, pool)
            })
            .collect();
        let exec_clock = Arc::new(StageClock::new(origin));
        let check_clock = Arc::new(StageClock::new(origin));
        let exec = BackendPool::spawn(
            "sandbox",
            (0..2)
                .map(|_| {
                    ExecuteService(SandboxExecutor::new(
                        Arc::clone(&sandbox),
                        limits.clone(),
                        Arc::clone(&exec_clock),
                        config.sandbox.early_stop.then_some(config.selection.rho),
                    ))
                })
                .collect(),
        );
        let check = BackendPool::spawn(
            "sandbox-checks",
            vec![SandboxChecker::new(
                Arc::clone(&sandbox),
                Arc::clone(&check_clock),
            )],
        );
        let isolation = sandbox.isolation().clone();
        Ok(Backends {
            engine,
            limits,
            llm,
            exec,
            exec_clock,
            check,
            check_clock,
            isolation,
        })
    }

    /// One handle per LLM stage, in [`LlmStage::ALL`] order.
    pub fn llm_handles(&self) -> Vec<BackendHandle<GenerationRequest, Generation>> {
        self.llm.iter().map(|(_, pool)| pool.handle()).collect()
    }

    /// Stops the pools (once the graph that held their handles is gone) and returns the time
    /// each stage's backend spent: the LLM stages, the sandbox checks, the executions.
    pub fn shutdown(self) -> Vec<StageTime> {
        let stage_time = |name: &str, clock: &StageClock| StageTime {
            stage: name.to_string(),
            requests: clock.requests(),
            tokens: clock.tokens(),
            busy_s: clock.busy().as_secs_f64(),
            span_s: clock.span().as_secs_f64(),
        };
        let mut times = Vec::new();
        for (stage, (clock, pool)) in LlmStage::ALL.iter().zip(self.llm) {
            let _ = pool.shutdown();
            times.push(stage_time(stage.dir_name(), &clock));
        }
        let _ = self.exec.shutdown();
        let _ = self.check.shutdown();
        times.push(stage_time("sandbox checks", &self.check_clock));
        times.push(stage_time("executions", &self.exec_clock));
        times
    }
}
