//! The two things an eval needs from the rest of the system, as small traits: a
//! [`CompletionSource`] (the LLM engine, or completions recorded by another engine) and a
//! [`ProgramChecker`] (the sandbox). The runner knows nothing else about either.

use super::config::{DecodingConfig, ProgramLimits};
use super::humaneval::Problem;
use super::prompt::PromptSpec;

/// Errors from a backend, boxed so that any engine or sandbox error type fits.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One generation call: `n` completions of `prompt`.
#[derive(Debug, Clone)]
pub struct CompletionRequest<'a> {
    /// The benchmark problem (for backends that replay recorded completions, and for logs).
    pub problem_id: &'a str,
    /// The full prompt text, template already applied (from [`CompletionSource::render`]).
    pub prompt: &'a str,
    pub n: usize,
    pub decoding: &'a DecodingConfig,
    /// Stop sequences (empty for chat models, which stop at their end-of-turn token).
    pub stop: &'a [String],
    /// Sampling seed for this problem (derived from the run seed and the problem id).
    pub seed: u64,
}

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledCompletion {
    pub text: String,
    pub completion_tokens: u32,
    /// Sum of the sampled tokens' log-probabilities, when known.
    pub logprob_sum: Option<f64>,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// Produces completions: the in-process engine, or a file of completions from another engine.
pub trait CompletionSource {
    /// One line naming the backend and model (kept in the manifest; a resumed run must match).
    fn describe(&self) -> String;
    /// The prompt text the model sees for `spec` (chat template applied for chat prompts).
    fn render(&self, problem_id: &str, spec: &PromptSpec) -> Result<String, BoxError>;
    /// `request.n` completions of `request.prompt`, in sample order.
    fn generate(
        &mut self,
        request: &CompletionRequest<'_>,
    ) -> Result<Vec<SampledCompletion>, BoxError>;
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub passed: bool,
    /// `pass`, `fail`, `timeout`, `error: <kind>`, ... as the checker names it.
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
}

/// Runs candidate programs against a problem's tests: the sandbox.
pub trait ProgramChecker {
    /// One outcome per program, in order. Programs of one problem come together so that the
    /// checker can run them in parallel.
    fn check(
        &mut self,
        problem: &Problem,
        programs: &[String],
        limits: &ProgramLimits,
    ) -> Result<Vec<CheckOutcome>, BoxError>;
}
