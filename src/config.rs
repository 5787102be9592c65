//! Pipeline configuration: the TOML files under `pipelines/` (`ipc.toml` carries the paper's
//! settings, `smoke.toml` is the tiny run CI executes). Unknown fields are errors, and every error
//! names the file and the field, so a typo never silently falls back to a default.

pub mod toml_file;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ucoder_operators::selection::SelectionConfigError;
use ucoder_operators::{BayesPriors, ConsensusConfig, SelectionRule, SignatureKind};

use toml_file::{Invalid, TomlFileError, Validate};

/// A whole pipeline definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Run name: artifacts go to `<runs_dir>/<name>/`.
    pub name: String,
    /// Folder that holds runs (default `runs`).
    #[serde(default = "default_runs_dir")]
    pub runs_dir: PathBuf,
    /// Run seed; every LLM request's seed derives from it and the record id.
    #[serde(default)]
    pub seed: u64,
    /// Number of self-improvement iterations.
    #[serde(default = "one")]
    pub iterations: u32,
    pub model: ModelConfig,
    #[serde(default)]
    pub resources: ResourceConfig,
    pub problems: ProblemStage,
    pub rating: RatingStage,
    pub tests: TestStage,
    pub sampling: SamplingStage,
    pub selection: SelectionConfig,
    pub sandbox: SandboxLimits,
    pub sft: SftConfig,
    /// How each iteration's model is fine-tuned on the iteration's SFT shards into the next
    /// iteration's model. With it, every iteration ends in training; without it, a run is one
    /// iteration that stops at the shards (`ucoder-flow train` then uses the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<crate::train::TrainConfig>,
    /// A benchmark run on every model of the loop (M_0 … M_N), whose pass@k lands in the run's
    /// lineage and summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<IterationEval>,
}

/// `[eval]`: which benchmark each model of the loop is measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterationEval {
    /// An eval file (e.g. `humaneval.toml`), relative to the pipeline file. Its `[model] name`
    /// and `[output] dir` are replaced by the model under test and `<run>/eval/M<t>/`.
    pub config: PathBuf,
    /// Only the first `limit` benchmark problems (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Which model generates, and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A registry name or a path to a GGUF file / safetensors directory.
    pub name: String,
    /// Maximum new tokens per stage response unless a stage overrides it.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Where completions come from: `candle` (the in-process engine) or `openai` (an
    /// OpenAI-compatible server, `[model.server]`; `name` still gives the tokenizer and chat
    /// template, read without the weights).
    #[serde(default)]
    pub backend: ModelBackend,
    /// `backend = "openai"`: where the server is and how it is reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerConfig>,
}

/// `[model.server]`: an OpenAI-compatible server (the pipeline's and the eval's `[model]` alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// The base URL up to `/v1`, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model name the server serves (default: the only one it lists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The environment variable holding the API key (the key is never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests in flight at once, over all stages (default 8).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// One request's time limit in seconds (default 600).
    #[serde(default = "default_request_timeout_s")]
    pub request_timeout_s: f64,
    /// How long connection errors, timeouts, 429 and 5xx are retried, in seconds (default 600),
    /// before the request fails.
    #[serde(default = "default_retry_for_s")]
    pub retry_for_s: f64,
    /// Ask for log-probabilities (default true; f(r), the r* tie-break, needs them). Off for a
    /// server that computes them slowly (llama-cpp-python's: 6x slower here).
    #[serde(default = "default_true")]
    pub logprobs: bool,
}

impl ServerConfig {
    /// The backend's settings.
    pub fn settings(&self) -> crate::backends::ServerSettings {
        crate::backends::ServerSettings {
            base_url: self.base_url.clone(),
            model: self.model.clone(),
            api_key_env: self.api_key_env.clone(),
            max_concurrency: self.max_concurrency,
            request_timeout: std::time::Duration::from_secs_f64(self.request_timeout_s),
            retry_for: std::time::Duration::from_secs_f64(self.retry_for_s),
            logprobs: self.logprobs,
        }
    }
}

/// Checks `[model] backend` against `[model.server]`.
pub fn validate_backend(
    backend: ModelBackend,
    server: Option<&ServerConfig>,
) -> Result<(), Invalid> {
    match (backend, server) {
        (ModelBackend::Candle, None) => Ok(()),
        (ModelBackend::Candle, Some(_)) => Invalid::err(
            "model.server",
            "[model.server] is for backend = \"openai\"; set it, or remove the table",
        ),
        (ModelBackend::Openai, None) => Invalid::err(
            "model.server",
            "backend = \"openai\" needs [model.server] with base_url = \"http://HOST:PORT/v1\"",
        ),
        (ModelBackend::Openai, Some(s)) => {
            if !(s.base_url.starts_with("http://") || s.base_url.starts_with("https://")) {
                return Invalid::err(
                    "model.server.base_url",
                    "must start with http:// or https://",
                );
            }
            if s.max_concurrency == 0 {
                return Invalid::err("model.server.max_concurrency", "must be at least 1");
            }
            if !(s.request_timeout_s > 0.0 && s.request_timeout_s.is_finite()) {
                return Invalid::err(
                    "model.server.request_timeout_s",
                    "must be a positive number of seconds",
                );
            }
            if !(s.retry_for_s >= 0.0 && s.retry_for_s.is_finite()) {
                return Invalid::err(
                    "model.server.retry_for_s",
                    "must be a number of seconds, 0 or more",
                );
            }
            Ok(())
        }
    }
}

/// `[model] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelBackend {
    /// The in-process candle engine.
    #[default]
    Candle,
    /// An OpenAI-compatible server (`/v1/completions`).
    Openai,
}

fn default_max_concurrency() -> usize {
    8
}

fn default_request_timeout_s() -> f64 {
    600.0
}

fn default_retry_for_s() -> f64 {
    600.0
}

impl ModelConfig {
    /// The server's settings when `backend = "openai"`.
    pub fn server(&self) -> Option<crate::backends::ServerSettings> {
        match self.backend {
            ModelBackend::Openai => self.server.as_ref().map(ServerConfig::settings),
            ModelBackend::Candle => None,
        }
    }
}

/// How the machine's cores are split between the LLM engine and the sandbox (candle's threads
/// busy-wait: the two together never exceed `cores`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceConfig {
    /// Cores to use (default: all available).
    pub cores: Option<usize>,
    /// Engine threads (default: cores − sandbox workers, at least 1).
    pub engine_threads: Option<usize>,
    /// Sandbox workers (default: 1).
    pub sandbox_workers: Option<usize>,
    /// Timely worker threads (`-w`); they mostly wait on the backends.
    #[serde(default = "one_usize")]
    pub dataflow_workers: usize,
}

/// Stage 1: problem generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProblemStage {
    /// Problems to request.
    pub count: usize,
    #[serde(default = "default_problem_temperature")]
    pub temperature: f64,
    /// Near-duplicate threshold on description MinHash Jaccard similarity.
    #[serde(default = "default_dedup_threshold")]
    pub dedup_threshold: f64,
}

/// Stage 2: rating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatingStage {
    /// Problems scoring below this (0–10) are dropped.
    pub min_score: f64,
}

/// Stage 4: tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestStage {
    /// Up to this many distinct tests per problem.
    pub per_problem: usize,
    /// Tests requested per LLM call.
    pub batch: usize,
    #[serde(default = "default_test_temperature")]
    pub temperature: f64,
}

/// Stage 5: solution sampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingStage {
    /// Candidates per problem (the paper's n).
    pub n: usize,
    /// Candidates per round (adaptive sampling decides after each round).
    pub round: usize,
    pub temperature: f64,
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// Stop sampling a problem once its leading cluster cannot be overtaken.
    #[serde(default)]
    pub adaptive: bool,
}

/// Execution signature kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKindConfig {
    /// Pass/fail per test (the paper's σ).
    PassFail,
    /// Hash of the returned value per test (AlphaCode style).
    Output,
}

/// Cluster scoring rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectorConfig {
    /// The paper: the largest cluster with e ≥ ρ and size ≥ τ.
    Largest,
    /// CodeT: |tests passed| × √|C|.
    DualAgreement,
    /// After B4: the cluster with the greatest posterior of being correct, over the passing
    /// matrix (pass/fail signatures only; priors in `[selection.priors]`).
    Bayesian,
}

/// Consensus selection (docs/ARCHITECTURE.md, "Selection").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// ρ: minimum fraction of tests a candidate executes on. An f64 end to end: as an f32,
    /// 0.8 widened to 0.800000011920929 and a candidate that executed 80 of 100 tests failed it.
    pub rho: f64,
    /// τ: minimum cluster size.
    pub tau: usize,
    pub signature: SignatureKindConfig,
    pub selector: SelectorConfig,
    /// The Bayesian selector's priors (the defaults of [`BayesPriors`] where absent).
    #[serde(default)]
    pub priors: BayesPriors,
    /// A problem with fewer tests than this selects nothing (default 1).
    #[serde(default = "one_usize", skip_serializing_if = "is_one")]
    pub min_tests: usize,
    /// C*'s signature must pass at least this share of the tests, or the problem selects
    /// nothing (default 0: any winner).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_pass_rate: f64,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Sandbox limits per job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// CPU-time budget per test, in seconds.
    pub test_cpu_seconds: f64,
    /// Address-space limit per job, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Stop a candidate's job once e(r) >= rho is out of reach (it cannot vote): its remaining
    /// tests are recorded as `skipped`. Selections are the same either way.
    #[serde(default = "default_true")]
    pub early_stop: bool,
    /// Floats compare equal when `|a - b| <= float_tolerance * max(1, |a|, |b|)`, so correct
    /// candidates that sum in another order pass the same tests (EvalPlus compares floats with
    /// a tolerance too); 0 is Python's exact `==`. Output signatures hash floats rounded to 12
    /// significant digits either way.
    #[serde(default = "default_float_tolerance")]
    pub float_tolerance: f64,
    /// 2: every candidate that could vote runs again in workers with another hash seed, and one
    /// whose results change (set or dict order, time) votes in no cluster: its agreement with
    /// others would be chance. 1: one seed (half the executions of voters, no such check).
    #[serde(default = "default_hash_seeds", skip_serializing_if = "one_hash_seed")]
    pub hash_seeds: u32,
}

/// The default of `hash_seeds`.
pub fn default_hash_seeds() -> u32 {
    2
}

/// Whether one hash seed is asked for (kept out of run identities, as before the setting).
pub fn one_hash_seed(seeds: &u32) -> bool {
    *seeds == 1
}

/// SFT output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// Packed sequence length in tokens.
    pub max_length: usize,
    /// Sequences per Parquet shard.
    #[serde(default = "default_shard_rows")]
    pub shard_rows: usize,
}

fn default_runs_dir() -> PathBuf {
    PathBuf::from("runs")
}
fn one() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn default_max_tokens() -> usize {
    768
}
fn default_problem_temperature() -> f64 {
    1.0
}
fn default_dedup_threshold() -> f64 {
    0.7
}
fn default_test_temperature() -> f64 {
    0.7
}
fn default_top_p() -> f64 {
    0.95
}
fn default_true() -> bool {
    true
}
/// The default of `float_tolerance`.
pub fn default_float_tolerance() -> f64 {
    1e-9
}
fn default_memory_mib() -> u64 {
    1024
}
fn default_shard_rows() -> usize {
    1024
}

/// Why a pipeline file could not be used (names the file, and the field for a bad value).
pub type ConfigError = TomlFileError;

impl PipelineConfig {
    /// Reads and validates a pipeline TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        toml_file::load(path)
    }

    /// Parses and validates TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml_file::parse(text, path)
    }

    /// The folder of this run.
    pub fn run_dir(&self) -> PathBuf {
        self.runs_dir.join(&self.name)
    }
}

/// A sampling temperature must be finite and at least 0 (0 is greedy).
fn temperature(field: &'static str, value: f64) -> Result<(), Invalid> {
    if !(value >= 0.0 && value.is_finite()) {
        return Invalid::err(field, format!("{value} must be at least 0 (0 is greedy)"));
    }
    Ok(())
}

impl TestStage {
    /// Checks the counts (shared by the pipeline and the eval's rerank mode).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.per_problem == 0 {
            return Invalid::err("tests.per_problem", "must be at least 1");
        }
        if self.batch == 0 {
            return Invalid::err(
                "tests.batch",
                "must be at least 1 (tests asked for per request)",
            );
        }
        temperature("tests.temperature", self.temperature)
    }
}

impl SelectionConfig {
    /// Checks ρ, τ, `min_pass_rate`, the selector against the signature and the priors with the
    /// operators crate's own rules ([`ConsensusConfig::validate`]), naming the TOML field.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.consensus().validate().or_else(|e| {
            let field = match e {
                SelectionConfigError::Rho(_) => "selection.rho",
                SelectionConfigError::Tau => "selection.tau",
                SelectionConfigError::MinPassRate(_) => "selection.min_pass_rate",
                SelectionConfigError::BayesianNeedsPassFail => "selection.selector",
                SelectionConfigError::Prior(..) => "selection.priors",
            };
            Invalid::err(field, e.to_string())
        })
    }

    /// The operators crate's selection settings for this section.
    pub fn consensus(&self) -> ConsensusConfig {
        ConsensusConfig {
            rho: self.rho,
            tau: self.tau as u32,
            rule: self.selector.rule(),
            signature: self.signature.kind(),
            priors: self.priors,
            min_tests: self.min_tests.min(u32::MAX as usize) as u32,
            min_pass_rate: self.min_pass_rate,
        }
    }
}

impl SelectorConfig {
    /// The operators crate's rule.
    pub fn rule(self) -> SelectionRule {
        match self {
            SelectorConfig::Largest => SelectionRule::Consensus,
            SelectorConfig::DualAgreement => SelectionRule::DualAgreement,
            SelectorConfig::Bayesian => SelectionRule::Bayesian,
        }
    }
}

impl SignatureKindConfig {
    /// The operators crate's signature kind.
    pub fn kind(self) -> SignatureKind {
        match self {
            SignatureKindConfig::PassFail => SignatureKind::PassFail,
            SignatureKindConfig::Output => SignatureKind::Output,
        }
    }
}

impl Validate for PipelineConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let invalid = Invalid::err;
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.starts_with('.') {
            return invalid("name", "must be a plain, non-empty folder name");
        }
        if self.model.max_tokens == 0 {
            return invalid("model.max_tokens", "must be at least 1");
        }
        validate_backend(self.model.backend, self.model.server.as_ref())?;
        if self.model.backend == ModelBackend::Openai && self.train.is_some() {
            return invalid(
                "train",
                "a server serves one fixed model, so iterations cannot move it to M_{t+1}: \
                 leave [train] out (the run stops at the SFT shards) or use backend = \"candle\"",
            );
        }
        if self.problems.count == 0 {
            return invalid("problems.count", "must be at least 1");
        }
        temperature("problems.temperature", self.problems.temperature)?;
        temperature("sampling.temperature", self.sampling.temperature)?;
        if !(self.sampling.top_p > 0.0 && self.sampling.top_p <= 1.0) {
            return invalid("sampling.top_p", "must be in (0, 1]");
        }
        if self.sampling.n == 0 {
            return invalid("sampling.n", "must be at least 1");
        }
        if self.sft.shard_rows == 0 {
            return invalid("sft.shard_rows", "must be at least 1");
        }
        if self.resources.dataflow_workers == 0 {
            return invalid("resources.dataflow_workers", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.problems.dedup_threshold) {
            return invalid("problems.dedup_threshold", "must be between 0 and 1");
        }
        if !(0.0..=10.0).contains(&self.rating.min_score) {
            return invalid("rating.min_score", "must be between 0 and 10");
        }
        self.tests.validate()?;
        if self.sampling.n == 0 || self.sampling.round == 0 || self.sampling.round > self.sampling.n
        {
            return invalid("sampling.round", "need 1 <= sampling.round <= sampling.n");
        }
        self.selection.validate()?;
        if self.sft.max_length < 16 {
            return invalid("sft.max_length", "must be at least 16 tokens");
        }
        if self.sandbox.test_cpu_seconds <= 0.0 {
            return invalid("sandbox.test_cpu_seconds", "must be positive");
        }
        check_judging(self.sandbox.float_tolerance, self.sandbox.hash_seeds)?;
        if self.iterations == 0 {
            return invalid("iterations", "must be at least 1");
        }
        if self.iterations > 1 && self.train.is_none() {
            return invalid(
                "iterations",
                "more than one iteration needs a [train] section: it makes each iteration's model",
            );
        }
        if let Some(eval) = &self.eval {
            if eval.config.as_os_str().is_empty() {
                return invalid("eval.config", "name an eval file (e.g. \"humaneval.toml\")");
            }
            if eval.limit == Some(0) {
                return invalid(
                    "eval.limit",
                    "must be at least 1 (omit it for all problems)",
                );
            }
        }
        match &self.train {
            Some(train) => train.validate(),
            None => Ok(()),
        }
    }
}

/// Checks `[sandbox] float_tolerance` and `hash_seeds` (shared by the pipeline and the eval's
/// rerank mode).
pub fn check_judging(float_tolerance: f64, hash_seeds: u32) -> Result<(), Invalid> {
    if !(1..=2).contains(&hash_seeds) {
        return Invalid::err("sandbox.hash_seeds", "must be 1 or 2");
    }
    if !(0.0..1.0).contains(&float_tolerance) {
        return Invalid::err(
            "sandbox.float_tolerance",
            "must be at least 0 (exact ==) and below 1",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("pipelines")
            .join(name)
    }

    #[test]
    fn shipped_pipelines_load() {
        let ipc = PipelineConfig::load(&shipped("ipc.toml")).unwrap();
        assert_eq!(ipc.sampling.n, 128, "ipc.toml carries the paper's n");
        assert_eq!(ipc.tests.per_problem, 100);
        assert_eq!(ipc.selection.rho, 0.8);
        let smoke = PipelineConfig::load(&shipped("smoke.toml")).unwrap();
        assert!(smoke.sampling.n <= 8 && smoke.problems.count <= 4);
        let server = PipelineConfig::load(&shipped("ipc-server.toml")).unwrap();
        assert_eq!(server.model.backend, ModelBackend::Openai);
        // Every pipeline file shipped loads (the eval files are the eval's, tested there).
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".toml") && !name.starts_with("humaneval") {
                PipelineConfig::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let text = std::fs::read_to_string(shipped("smoke.toml")).unwrap();
        let typo = text.replace("[selection]", "[selection]\nrhoo = 0.5");
        let err = PipelineConfig::parse(&typo, Path::new("my.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("my.toml") && err.contains("rhoo"), "{err}");
        let bad = text.replace("rho = ", "rho = 1.5 #");
        let err = PipelineConfig::parse(&bad, Path::new("my.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("selection.rho"), "{err}");
        let err = PipelineConfig::load(Path::new("/nonexistent/p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/p.toml"), "{err}");
    }

    /// Settings that cannot work are refused when the file loads, naming the field, instead of
    /// turning every request into a rejection.
    #[test]
    fn settings_that_cannot_work_name_their_field() {
        let text = std::fs::read_to_string(shipped("smoke.toml")).unwrap();
        let cases = [
            ("max_tokens = 320", "max_tokens = 0", "model.max_tokens"),
            (
                "temperature = 0.8",
                "temperature = -0.5",
                "sampling.temperature",
            ),
            (
                "temperature = 0.8",
                "temperature = 0.8\ntop_p = 0.0",
                "sampling.top_p",
            ),
            ("\nn = 8", "\nn = 0", "sampling.n"),
            ("batch = 6", "batch = 0", "tests.batch"),
            (
                "batch = 6",
                "batch = 6\ntemperature = -1.0",
                "tests.temperature",
            ),
            (
                "count = 3",
                "count = 3\ntemperature = -1.0",
                "problems.temperature",
            ),
            ("shard_rows = 64", "shard_rows = 0", "sft.shard_rows"),
            (
                "dataflow_workers = 1",
                "dataflow_workers = 0",
                "resources.dataflow_workers",
            ),
            (
                "tau = 2",
                "tau = 2\nmin_pass_rate = 2.0",
                "selection.min_pass_rate",
            ),
            (
                "test_cpu_seconds = 2.0",
                "test_cpu_seconds = 2.0\nhash_seeds = 3",
                "sandbox.hash_seeds",
            ),
        ];
        for (from, to, field) in cases {
            assert!(text.contains(from), "{from}");
            let bad = text.replacen(from, to, 1);
            let err = PipelineConfig::parse(&bad, Path::new("my.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("my.toml") && err.contains(field),
                "{field}: {err}"
            );
        }
    }
}
