//! The eval job's settings: `pipelines/humaneval.toml` (model, benchmark, decoding, sandbox
//! limits, output folder), command-line overrides, and validation with errors that name the TOML
//! file and the field.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::prompt::PromptStyle;
use crate::config::toml_file::{self, Invalid, TomlFileError, Validate};
use crate::config::{ModelBackend, SelectionConfig, ServerConfig, TestStage, validate_backend};

/// A whole eval configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    pub model: EvalModelConfig,
    #[serde(default)]
    pub benchmark: BenchmarkConfig,
    #[serde(default)]
    pub decoding: DecodingConfig,
    #[serde(default)]
    pub sandbox: ProgramLimits,
    /// Rerank mode (with `[selection]`): the tests the model writes for each benchmark problem,
    /// generated, parsed, checked and de-duplicated exactly as the pipeline's `[tests]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestStage>,
    /// Rerank mode: the pipeline's `[selection]`, whose filter (ρ, τ, selector, signature) is
    /// scored for coverage and precision against the benchmark's own tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionConfig>,
    pub output: OutputConfig,
}

/// Which model, and how it is prompted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalModelConfig {
    /// A registry name (see `ucoder-flow models list`) or a path to a GGUF file / model folder.
    pub name: String,
    /// `chat` for instruct models (the model's chat template), `completion` for base models.
    #[serde(default = "default_style")]
    pub prompt: PromptStyle,
    /// Engine threads (default: cores − sandbox workers). Generation and checking take turns in
    /// the eval, so all cores may go to the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// `candle` (the in-process engine) or `openai` (the server in `[model.server]`), as in a
    /// pipeline's `[model]`.
    #[serde(default)]
    pub backend: ModelBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerConfig>,
}

fn default_style() -> PromptStyle {
    PromptStyle::Chat
}

/// Which benchmark problems.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkConfig {
    /// `humaneval` (fetched and pinned), or any label for a file given in `path`.
    #[serde(default = "default_benchmark")]
    pub name: String,
    /// A HumanEval-format JSONL (or .jsonl.gz) file of the user's: task_id, prompt, entry_point,
    /// test, optional canonical_solution. Every canonical solution must pass its own tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Evaluate only the first `limit` problems (all when absent).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn default_benchmark() -> String {
    "humaneval".to_string()
}

impl Default for BenchmarkConfig {
    fn default() -> Self {
        BenchmarkConfig {
            name: default_benchmark(),
            path: None,
            limit: None,
        }
    }
}

/// How completions are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// 0 means greedy.
    #[serde(default)]
    pub temperature: f64,
    #[serde(default = "one")]
    pub top_p: f64,
    /// 0 means no top-k cut.
    #[serde(default)]
    pub top_k: usize,
    /// Samples per problem.
    #[serde(default = "one_usize")]
    pub n: usize,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Run seed; each problem's sampling seed is derived from it and the problem id.
    #[serde(default)]
    pub seed: u64,
    /// The k of pass@k to report (each ≤ n).
    #[serde(default = "default_ks")]
    pub pass_at_k: Vec<usize>,
    /// Rerank mode: the round size of the adaptive-sampling replay (default n / 4, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<usize>,
}

fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn default_max_tokens() -> usize {
    512
}
fn default_ks() -> Vec<usize> {
    vec![1]
}

impl Default for DecodingConfig {
    fn default() -> Self {
        DecodingConfig {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            n: 1,
            max_tokens: default_max_tokens(),
            seed: 0,
            pass_at_k: default_ks(),
            round: None,
        }
    }
}

impl DecodingConfig {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// The round size of the adaptive-sampling replay.
    pub fn adaptive_round(&self) -> u32 {
        self.round.unwrap_or(self.n / 4).clamp(1, self.n.max(1)) as u32
    }
}

/// Limits for running each candidate program (mapped onto the sandbox's own limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramLimits {
    /// Wall-clock limit for one program with all its tests, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Address-space limit per program, in MiB (`memory_mb`, its name before, is accepted too).
    #[serde(default = "default_memory", alias = "memory_mb")]
    pub memory_mib: u64,
    /// Sandbox worker processes (keep engine threads + workers ≤ cores).
    #[serde(default = "one_usize")]
    pub workers: usize,
    /// Rerank mode: CPU seconds per generated test (the pipeline's `test_cpu_seconds`).
    #[serde(default = "default_test_cpu")]
    pub test_cpu_seconds: f64,
    /// Rerank mode: the float tolerance of generated tests (the pipeline's `float_tolerance`).
    /// The benchmark's own tests always compare exactly, as written.
    #[serde(default = "crate::config::default_float_tolerance")]
    pub float_tolerance: f64,
    /// Rerank mode: the pipeline's `hash_seeds` for generated tests (2: a sample whose results
    /// change with the hash seed votes in no cluster).
    #[serde(
        default = "crate::config::default_hash_seeds",
        skip_serializing_if = "crate::config::one_hash_seed"
    )]
    pub hash_seeds: u32,
}

fn default_test_cpu() -> f64 {
    2.0
}

fn default_timeout() -> f64 {
    10.0
}
fn default_memory() -> u64 {
    1024
}

impl Default for ProgramLimits {
    fn default() -> Self {
        ProgramLimits {
            timeout_s: default_timeout(),
            memory_mib: default_memory(),
            workers: 1,
            test_cpu_seconds: default_test_cpu(),
            float_tolerance: crate::config::default_float_tolerance(),
            hash_seeds: crate::config::default_hash_seeds(),
        }
    }
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// The run folder (relative paths are relative to the current directory).
    pub dir: PathBuf,
    /// Commit a Parquet part after this many problems (a kill loses at most these).
    #[serde(default = "default_flush")]
    pub flush_every: usize,
}

fn default_flush() -> usize {
    4
}

/// Command-line overrides; `None` keeps the TOML value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub model: Option<String>,
    pub limit: Option<usize>,
    pub out: Option<PathBuf>,
    pub n: Option<usize>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<usize>,
}

impl EvalConfig {
    /// Reads and validates `path`, then applies `overrides` (validated again, so an override is
    /// reported against the field it replaces).
    pub fn load(path: &Path, overrides: &Overrides) -> Result<EvalConfig, TomlFileError> {
        Self::parse(&toml_file::read(path)?, path, overrides)
    }

    /// Parses TOML `text` (from `path`, for messages) and applies `overrides`.
    pub fn parse(
        text: &str,
        path: &Path,
        overrides: &Overrides,
    ) -> Result<EvalConfig, TomlFileError> {
        let mut config: EvalConfig = toml_file::deserialize(text, path)?;
        config.apply(overrides);
        toml_file::check(&config, path)?;
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(m) = &o.model {
            self.model.name = m.clone();
        }
        if let Some(l) = o.limit {
            self.benchmark.limit = Some(l);
        }
        if let Some(out) = &o.out {
            self.output.dir = out.clone();
        }
        if let Some(n) = o.n {
            self.decoding.n = n;
        }
        if let Some(t) = o.temperature {
            self.decoding.temperature = t;
        }
        if let Some(m) = o.max_tokens {
            self.decoding.max_tokens = m;
        }
    }
}

impl Validate for EvalConfig {
    fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field, why: String| Invalid { field, why };
        let d = &self.decoding;
        if self.model.name.trim().is_empty() {
            return Err(invalid(
                "model.name",
                "empty; name a registry model or a GGUF path".into(),
            ));
        }
        validate_backend(self.model.backend, self.model.server.as_ref())?;
        if self.benchmark.path.is_none() && self.benchmark.name != "humaneval" {
            return Err(invalid(
                "benchmark.name",
                format!(
                    "`{}` is not a known benchmark (known: humaneval); name a HumanEval-format \
                     JSONL file in benchmark.path to run another",
                    self.benchmark.name
                ),
            ));
        }
        if self.benchmark.name.trim().is_empty() {
            return Err(invalid(
                "benchmark.name",
                "empty; name the benchmark".into(),
            ));
        }
        if self.benchmark.limit == Some(0) {
            return Err(invalid(
                "benchmark.limit",
                "0 problems; omit it to run all".into(),
            ));
        }
        if !(d.temperature >= 0.0 && d.temperature.is_finite()) {
            return Err(invalid(
                "decoding.temperature",
                format!("{} must be ≥ 0 (0 = greedy)", d.temperature),
            ));
        }
        if !(d.top_p > 0.0 && d.top_p <= 1.0) {
            return Err(invalid(
                "decoding.top_p",
                format!("{} must be in (0, 1]", d.top_p),
            ));
        }
        if d.n == 0 {
            return Err(invalid("decoding.n", "must be at least 1".into()));
        }
        if d.is_greedy() && d.n > 1 {
            return Err(invalid(
                "decoding.n",
                format!(
                    "greedy decoding (temperature = 0) gives {} identical samples; set n = 1 or temperature > 0",
                    d.n
                ),
            ));
        }
        if d.max_tokens == 0 {
            return Err(invalid("decoding.max_tokens", "must be at least 1".into()));
        }
        if d.pass_at_k.is_empty() {
            return Err(invalid(
                "decoding.pass_at_k",
                "list at least one k (e.g. [1])".into(),
            ));
        }
        if let Some(&k) = d.pass_at_k.iter().find(|&&k| k == 0 || k > d.n) {
            return Err(invalid(
                "decoding.pass_at_k",
                format!(
                    "k = {k} needs 1 ≤ k ≤ n (n = {}); raise decoding.n or drop it",
                    d.n
                ),
            ));
        }
        if !(self.sandbox.timeout_s > 0.0 && self.sandbox.timeout_s.is_finite()) {
            return Err(invalid(
                "sandbox.timeout_s",
                format!("{} must be > 0", self.sandbox.timeout_s),
            ));
        }
        if self.sandbox.memory_mib < 64 {
            return Err(invalid(
                "sandbox.memory_mib",
                format!(
                    "{} MiB is too small for Python (≥ 64)",
                    self.sandbox.memory_mib
                ),
            ));
        }
        if self.sandbox.workers == 0 {
            return Err(invalid("sandbox.workers", "must be at least 1".into()));
        }
        if self.output.dir.as_os_str().is_empty() {
            return Err(invalid("output.dir", "empty; name the run folder".into()));
        }
        if self.output.flush_every == 0 {
            return Err(invalid("output.flush_every", "must be at least 1".into()));
        }
        self.validate_rerank()
    }
}

impl EvalConfig {
    /// Whether the run reranks samples by consensus on generated tests (`[selection]` given).
    pub fn is_rerank(&self) -> bool {
        self.selection.is_some()
    }

    /// The rerank mode's own checks: `[tests]` and `[selection]` together, sampled decoding.
    fn validate_rerank(&self) -> Result<(), Invalid> {
        let (tests, selection) = match (&self.tests, &self.selection) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return Invalid::err(
                    "selection",
                    "[tests] is only used by the rerank mode; add a [selection] section or drop [tests]",
                );
            }
            (None, Some(_)) => {
                return Invalid::err(
                    "tests",
                    "the rerank mode ([selection]) needs a [tests] section (per_problem, batch)",
                );
            }
            (Some(t), Some(s)) => (t, s),
        };
        tests.validate()?;
        selection.validate()?;
        if self.decoding.n < 2 || self.decoding.is_greedy() {
            return Invalid::err(
                "decoding.n",
                "the rerank mode picks among samples: set n ≥ 2 and temperature > 0 (greedy \
                 pass@1 is measured alongside)",
            );
        }
        if !(self.sandbox.test_cpu_seconds > 0.0 && self.sandbox.test_cpu_seconds.is_finite()) {
            return Invalid::err("sandbox.test_cpu_seconds", "must be > 0");
        }
        crate::config::check_judging(self.sandbox.float_tolerance, self.sandbox.hash_seeds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[model]\nname = \"m\"\n[output]\ndir = \"runs/x\"\n";

    fn parse(text: &str) -> Result<EvalConfig, TomlFileError> {
        EvalConfig::parse(text, Path::new("pipelines/he.toml"), &Overrides::default())
    }

    #[test]
    fn shipped_pipeline_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/humaneval.toml");
        let c = EvalConfig::load(&path, &Overrides::default()).unwrap();
        assert_eq!(c.model.name, crate::models::DEFAULT_MODEL);
        assert!(c.decoding.is_greedy() && c.decoding.n == 1);
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.decoding, DecodingConfig::default());
        assert_eq!(c.model.prompt, PromptStyle::Chat);
        let o = Overrides {
            model: Some("other".into()),
            limit: Some(3),
            out: Some("o".into()),
            n: Some(4),
            temperature: Some(0.8),
            max_tokens: Some(64),
        };
        let text = format!("{MINIMAL}[decoding]\npass_at_k = [1, 4]\n");
        let c = EvalConfig::parse(&text, Path::new("x.toml"), &o).unwrap();
        assert_eq!(
            (c.model.name.as_str(), c.benchmark.limit, c.decoding.n),
            ("other", Some(3), 4)
        );
        assert_eq!((c.decoding.temperature, c.decoding.max_tokens), (0.8, 64));
        assert_eq!(c.output.dir, PathBuf::from("o"));
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            (format!("{MINIMAL}[decoding]\nn = 5\n"), "decoding.n"),
            (
                format!("{MINIMAL}[decoding]\ntemperature = 0.5\nn = 2\npass_at_k = [5]\n"),
                "decoding.pass_at_k",
            ),
            (
                format!("{MINIMAL}[decoding]\ntemperature = -1.0\n"),
                "decoding.temperature",
            ),
            (
                format!("{MINIMAL}[benchmark]\nname = \"mbpp\"\n"),
                "benchmark.name",
            ),
            (
                format!("{MINIMAL}[sandbox]\nmemory_mib = 1\n"),
                "sandbox.memory_mib",
            ),
            (format!("{MINIMAL}[decoding]\nmax_tokns = 5\n"), "max_tokns"),
            ("[model]\nname = \"m\"\n".to_string(), "output"),
            (
                format!(
                    "{MINIMAL}[selection]\nrho = 0.8\ntau = 2\nsignature = \"pass_fail\"\nselector = \"largest\"\n"
                ),
                "tests",
            ),
            (
                format!(
                    "{MINIMAL}[tests]\nper_problem = 4\nbatch = 4\n[selection]\nrho = 0.8\ntau = 2\nsignature = \"pass_fail\"\nselector = \"largest\"\n"
                ),
                "decoding.n",
            ),
            (format!("{MINIMAL}[model.extra]\n"), "extra"),
        ];
        for (text, field) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(
                err.contains("pipelines/he.toml") && err.contains(field),
                "{field}: {err}"
            );
        }
    }
}
