//! Evaluation on public benchmarks: HumanEval loading, prompting, program extraction, pass@k,
//! and the `ucoder-flow eval` job with its Parquet results, summary and resume.
//!
//! - [`humaneval`]: the benchmark data.
//! - [`config`]: `pipelines/humaneval.toml` and command-line overrides.
//! - [`prompt`]: what is put to the model (chat message or plain completion).
//! - the program to run is extracted from the response by `crate::python::extract`.
//! - [`pass_at_k`]: the unbiased pass@k estimator.
//! - [`backend`]: the [`CompletionSource`] and [`ProgramChecker`] traits the runner needs.
//! - [`recorded`]: prompts and completions exchanged with other engines as JSONL.
//! - [`results`]: the per-sample Parquet rows and the summary.
//! - [`runner`]: the resumable eval loop.
//! - [`wiring`]: the real engine and sandbox behind the traits.

pub mod backend;
pub mod config;
pub mod humaneval;
pub mod pass_at_k;
pub mod prompt;
pub mod recorded;
pub mod results;
pub mod runner;
pub mod wiring;

pub use backend::{
    BoxError, CheckOutcome, CompletionRequest, CompletionSource, ProgramChecker, SampledCompletion,
    TestOutcome,
};
pub use config::{EvalConfig, Overrides};
pub use results::{SampleRecord, Summary};

/// Why an eval could not run or continue.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    HumanEval(#[from] humaneval::HumanEvalError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Recorded(#[from] recorded::RecordedError),
    #[error("{what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("{0} is not wired into this build yet (see src/eval/wiring.rs)")]
    NotWired(&'static str),
}
