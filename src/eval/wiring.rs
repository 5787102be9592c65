//! The production backends behind [`CompletionSource`] and [`ProgramChecker`]: the in-process
//! LLM engine ([`crate::llm`]) and the sandbox pool ([`crate::sandbox`]). This is the only file
//! of the eval that names them.

use std::time::Duration;

use super::EvalError;
use super::backend::{
    BoxError, CheckOutcome, CompletionRequest, CompletionSource, ProgramChecker, SampledCompletion,
    TestOutcome,
};
use super::config::{EvalConfig, ProgramLimits};
use super::humaneval::Problem;
use super::prompt::PromptSpec;
use super::results::DECIDED_IN_CHILD;
use crate::llm::{ChatTurn, Engine, EngineOptions, SampleEnd, SamplerSettings};
use crate::models::ModelSource;
use crate::sandbox::{Job, Limits, SandboxConfig, SandboxPool, Verdict};

struct EngineSource {
    engine: Engine,
    label: String,
}

impl CompletionSource for EngineSource {
    fn describe(&self) -> String {
        self.label.clone()
    }
    fn render(&self, _problem_id: &str, spec: &PromptSpec) -> Result<String, BoxError> {
        Ok(match spec {
            PromptSpec::ChatUser(text) => self
                .engine
                .chat_prompt(&[ChatTurn::new("user", text.as_str())])?,
            PromptSpec::Completion(text) => text.clone(),
        })
    }
    fn generate(&mut self, r: &CompletionRequest<'_>) -> Result<Vec<SampledCompletion>, BoxError> {
        let params = SamplerSettings {
            temperature: r.decoding.temperature as f32,
            top_p: r.decoding.top_p as f32,
            top_k: r.decoding.top_k,
            max_tokens: r.decoding.max_tokens,
            stop: r.stop.to_vec(),
            seed: r.seed,
            ignore_eos: false,
        };
        let completions = self.engine.generate_n(r.prompt, r.n, &params)?;
        Ok(completions
            .into_iter()
            .map(|c| SampledCompletion {
                completion_tokens: c.token_ids.len() as u32,
                logprob_sum: Some(c.logprobs.iter().map(|&l| f64::from(l)).sum()),
                finish_reason: match c.finish_reason {
                    SampleEnd::Length => "length",
                    SampleEnd::Stop | SampleEnd::Eos => "stop",
                }
                .to_string(),
                text: c.text,
            })
            .collect())
    }
}

/// Loads `model` into the in-process engine (engine threads: `[model] threads`, or cores −
/// sandbox workers).
pub fn open_engine(
    model: &ModelSource,
    config: &EvalConfig,
) -> Result<Box<dyn CompletionSource>, EvalError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let opts = EngineOptions {
        threads: Some(
            config
                .model
                .threads
                .unwrap_or_else(|| cores.saturating_sub(config.sandbox.workers).max(1)),
        ),
        ..Default::default()
    };
    let engine = Engine::load(model, &opts).map_err(|e| EvalError::Backend {
        what: format!("loading {}", model.path().display()),
        source: e.into(),
    })?;
    let label = format!("ucoder-flow candle engine, {}", model.path().display());
    Ok(Box::new(EngineSource { engine, label }))
}

struct PoolChecker(SandboxPool);

impl ProgramChecker for PoolChecker {
    fn check(
        &mut self,
        problem: &Problem,
        programs: &[String],
        limits: &ProgramLimits,
    ) -> Result<Vec<CheckOutcome>, BoxError> {
        let limits = Limits {
            job_wall: Duration::from_secs_f64(limits.timeout_s),
            memory_bytes: limits.memory_mb << 20,
            ..self.0.default_limits().clone()
        };
        let tests = problem.tests();
        let results = self.0.run_all(programs.iter().map(|p| Job {
            program: p.clone(),
            tests: tests.clone(),
            limits: Some(limits.clone()),
            early_stop: None,
            float_tolerance: 0.0,
        }));
        let mut out = Vec::with_capacity(results.len());
        for result in results {
            let result = result?;
            out.push(CheckOutcome {
                program_error: result
                    .program_error
                    .map(|e| format!("{}: {}", e.kind, e.message)),
                tests: result
                    .tests
                    .iter()
                    .map(|t| TestOutcome {
                        passed: t.verdict == Verdict::Pass,
                        verdict: {
                            let verdict = match &t.verdict {
                                Verdict::Error { kind } => format!("error: {kind}"),
                                v => format!("{v:?}").to_lowercase(),
                            };
                            if t.checked_in_child {
                                verdict + DECIDED_IN_CHILD
                            } else {
                                verdict
                            }
                        },
                    })
                    .collect(),
            });
        }
        Ok(out)
    }
}

/// Starts the sandbox pool with `limits`.
pub fn open_checker(limits: &ProgramLimits) -> Result<Box<dyn ProgramChecker>, EvalError> {
    let pool = SandboxPool::new(SandboxConfig {
        workers: limits.workers,
        ..Default::default()
    })
    .map_err(|e| EvalError::Backend {
        what: "starting the sandbox".into(),
        source: e.into(),
    })?;
    Ok(Box::new(PoolChecker(pool)))
}
