//! Evaluation on public benchmarks: HumanEval loading, prompting, program extraction, pass@k,
//! and the `ucoder-flow eval` job with its Parquet results, summary and resume.
//!
//! - [`humaneval`]: the benchmark data.
//! - [`config`]: `pipelines/humaneval.toml` and command-line overrides.
//! - [`prompt`]: what is put to the model (chat message or plain completion).
//! - [`pass_at_k`]: the unbiased pass@k estimator.
//! - [`model`]: the [`EvalModel`]: a shared `Generate` backend (the engine, or completions
//!   recorded by another engine) and how prompts are rendered for it.
//! - [`check`]: programs checked against a problem's tests through the shared `Execute` backend.
//! - [`results`]: the per-sample Parquet rows and the summary.
//! - [`runner`]: the resumable eval loop.
//! - [`rerank`]: the rerank mode: consensus on generated tests, scored against the benchmark.
//!
//! The program is extracted from a response by [`crate::python::extract`]; the backends are
//! [`crate::backends`]'.

pub mod check;
pub mod config;
pub mod humaneval;
pub mod model;
pub mod pass_at_k;
pub mod prompt;
pub mod rerank;
pub mod results;
pub mod runner;

pub use check::{CheckOutcome, TestOutcome};
pub use config::{EvalConfig, Overrides};
pub use model::EvalModel;
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
    Recorded(#[from] crate::backends::recorded::RecordedError),
    #[error(transparent)]
    Draft(#[from] rerank::draft::DraftError),
    #[error(
        "{dir}: no rerank run to rescore here; run `ucoder-flow eval` with this [selection] first"
    )]
    NothingToRescore { dir: std::path::PathBuf },
    #[error(
        "{from}: its rows were made with other decoding or [tests] settings than this file's; \
         only [sandbox] and [selection] may change when judging again"
    )]
    Rejudge { from: std::path::PathBuf },
    #[error("{what}: {source}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
