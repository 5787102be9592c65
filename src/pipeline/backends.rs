//! The backends of one IPC run: one engine shared by every LLM stage, each stage with its own
//! [`BackendPool`] thread holding a [`CandleGenerator`] over it (so the time the engine spends on
//! each stage is measured where it is spent, [`StageClock`], and a slow stage never queues behind
//! another's batch bookkeeping), the sandbox executor pool and the sandbox check pool. The
//! backends themselves live in [`crate::backends`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ucoder_operators::{
    BackendError, BackendHandle, BackendPool, ExecJob, ExecuteService, Execution, Generate,
    GenerateService, Generation, GenerationRequest,
};

use super::PipelineError;
use super::cores::CoreSplit;
use super::stages::LlmStage;
use super::summary::StageTime;
use crate::backends::sandbox::refusal_notes;
use crate::backends::{
    CandleGenerator, ExecOptions, OpenAiGenerator, OpenAiServer, SandboxChecker, SandboxExecutor,
    ServerSettings, StageClock,
};
use crate::config::PipelineConfig;
use crate::llm::{Engine, EngineOptions, ModelText};
use crate::models::ModelSource;
use crate::progress::Reporter;
use crate::sandbox::{Job, JobResult, Limits, SandboxConfig, SandboxPool};

/// The backends of one run: the engine (one pool thread per LLM stage), the sandbox executor
/// pool and the sandbox check pool, with a clock per stage.
pub struct Backends {
    /// The model's tokenizer and chat template (the SFT rows are rendered with them).
    pub text: Arc<ModelText>,
    pub limits: Limits,
    llm: Vec<BackendPool<GenerationRequest, Generation>>,
    pub exec: BackendPool<ExecJob, Result<Execution, BackendError>>,
    pub check: BackendPool<Job, Result<JobResult, BackendError>>,
    /// The time each stage's backend spends.
    pub clocks: StageClocks,
    /// The sandbox's isolation steps (`ok` or `refused: why`), for the summary.
    pub isolation: std::collections::BTreeMap<String, String>,
}

impl Backends {
    /// Loads the model and starts the sandbox and the pools, with the cores of `split`.
    pub fn start(
        config: &PipelineConfig,
        split: &CoreSplit,
        source: &ModelSource,
        reporter: &dyn Reporter,
    ) -> Result<Self, PipelineError> {
        reporter.note(&format!(
            "cores: {} engine thread(s), {} sandbox worker(s), {} dataflow worker(s)",
            split.engine_threads, split.sandbox_workers, split.dataflow_workers
        ));
        let origin = Instant::now();
        let (text, generators) = match config.model.server() {
            None => candle_generators(split, source, origin, reporter)?,
            Some(settings) => server_generators(settings, source, origin, reporter)?,
        };
        let limits = limits(config);
        let seeded = |hash_seed| {
            SandboxPool::new(SandboxConfig {
                workers: split.sandbox_workers,
                limits: limits.clone(),
                hash_seed,
                ..Default::default()
            })
            .map(Arc::new)
        };
        let sandbox = seeded(0)?;
        // Workers with another hash seed run the candidates that could vote again (`hash_seeds`).
        let second_seed = match config.sandbox.hash_seeds {
            2 => Some(seeded(1)?),
            _ => None,
        };

        let mut clocks = Vec::new();
        let llm = LlmStage::ALL
            .iter()
            .zip(generators)
            .map(|(stage, (clock, generator))| {
                clocks.push((stage.dir_name().to_string(), clock));
                BackendPool::spawn(stage.operator_name(), vec![GenerateService(generator)])
            })
            .collect();
        let exec_clock = Arc::new(StageClock::new(origin));
        let check_clock = Arc::new(StageClock::new(origin));
        let exec = BackendPool::spawn(
            "sandbox",
            (0..2)
                .map(|_| {
                    let executor = SandboxExecutor::new(
                        Arc::clone(&sandbox),
                        limits.clone(),
                        Arc::clone(&exec_clock),
                        ExecOptions {
                            stop_rho: config.sandbox.early_stop.then_some(config.selection.rho),
                            float_tolerance: config.sandbox.float_tolerance,
                            wall_deadline_is_error: true,
                        },
                    );
                    ExecuteService(match &second_seed {
                        Some(pool) => executor.with_second_seed(Arc::clone(pool)),
                        None => executor,
                    })
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
        for note in refusal_notes(&isolation) {
            reporter.note(&note);
        }
        clocks.push(("sandbox checks".to_string(), check_clock));
        clocks.push(("executions".to_string(), exec_clock));
        Ok(Backends {
            text,
            limits,
            llm,
            exec,
            check,
            clocks: StageClocks(clocks),
            isolation,
        })
    }

    /// One handle per LLM stage, in [`LlmStage::ALL`] order.
    pub fn llm_handles(&self) -> Vec<BackendHandle<GenerationRequest, Generation>> {
        self.llm.iter().map(BackendPool::handle).collect()
    }

    /// Stops the pools (once the graph that held their handles is gone). The time each stage's
    /// backend spent is read from [`Backends::clocks`] before (the graph's gather does).
    pub fn shutdown(self) {
        for pool in self.llm {
            let _ = pool.shutdown();
        }
        let _ = self.exec.shutdown();
        let _ = self.check.shutdown();
    }
}

/// The clock of every stage's backend, by stage name: the LLM stages (in [`LlmStage::ALL`]
/// order), the sandbox checks, the executions.
#[derive(Clone, Default)]
pub struct StageClocks(Vec<(String, Arc<StageClock>)>);

impl StageClocks {
    /// The time each stage's backend has spent so far.
    pub fn times(&self) -> Vec<StageTime> {
        self.0
            .iter()
            .map(|(stage, clock)| StageTime {
                stage: stage.clone(),
                requests: clock.requests(),
                tokens: clock.tokens(),
                busy_s: clock.busy().as_secs_f64(),
                span_s: clock.span().as_secs_f64(),
            })
            .collect()
    }
}

/// One generator per LLM stage (in [`LlmStage::ALL`] order), each with its clock.
type StageGenerators = Vec<(Arc<StageClock>, Box<dyn Generate>)>;

/// The in-process engine, loaded once and shared by every stage.
fn candle_generators(
    split: &CoreSplit,
    source: &ModelSource,
    origin: Instant,
    reporter: &dyn Reporter,
) -> Result<(Arc<ModelText>, StageGenerators), PipelineError> {
    reporter.note(&format!("loading {}", source.path().display()));
    let engine = Engine::load(
        source,
        &EngineOptions {
            threads: Some(split.engine_threads),
            ..Default::default()
        },
    )?;
    let text = Arc::clone(engine.text());
    require_chat_template(&text, source)?;
    let engine = Arc::new(Mutex::new(engine));
    let generators = per_stage(origin, |clock| {
        Box::new(CandleGenerator::new(Arc::clone(&engine), clock))
    });
    Ok((text, generators))
}

/// An OpenAI-compatible server, probed once and shared by every stage; the prompts are rendered
/// with `source`'s own tokenizer and chat template (no weights are loaded).
fn server_generators(
    settings: ServerSettings,
    source: &ModelSource,
    origin: Instant,
    reporter: &dyn Reporter,
) -> Result<(Arc<ModelText>, StageGenerators), PipelineError> {
    let text = Arc::new(ModelText::load(source)?);
    require_chat_template(&text, source)?;
    reporter.note(&format!(
        "model server {} (prompts rendered with the chat template of {})",
        settings.base_url,
        source.path().display()
    ));
    let server = OpenAiServer::connect(settings)?;
    reporter.note(&format!("model server: serving {}", server.model()));
    for note in server.notes() {
        reporter.note(&note);
    }
    let generators = per_stage(origin, |clock| {
        Box::new(OpenAiGenerator::new(
            Arc::clone(&server),
            Arc::clone(&text),
            clock,
        ))
    });
    Ok((text, generators))
}

/// One generator per LLM stage, each with a clock of its own.
fn per_stage(
    origin: Instant,
    make: impl Fn(Arc<StageClock>) -> Box<dyn Generate>,
) -> StageGenerators {
    LlmStage::ALL
        .iter()
        .map(|_| {
            let clock = Arc::new(StageClock::new(origin));
            (Arc::clone(&clock), make(clock))
        })
        .collect()
}

/// The IPC stages talk to the model in chats: a model without a chat template is refused.
pub(super) fn require_chat_template(
    text: &ModelText,
    source: &ModelSource,
) -> Result<(), PipelineError> {
    if text.chat_template().is_none() {
        return Err(PipelineError::Invalid {
            path: source.path().to_path_buf(),
            why: "the model has no chat template; the IPC stages need an instruct model".into(),
        });
    }
    Ok(())
}

/// The sandbox limits of a run's jobs, from `[sandbox]`.
pub fn limits(config: &PipelineConfig) -> Limits {
    Limits {
        test_cpu: Duration::from_secs_f64(config.sandbox.test_cpu_seconds),
        memory_bytes: config.sandbox.memory_mib << 20,
        ..Limits::default()
    }
}
