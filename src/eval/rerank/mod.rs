//! The eval's rerank mode (`[selection]` in the eval TOML; docs/ARCHITECTURE.md, "Eval"): the
//! selection is put to the test against ground truth. For every benchmark problem the model writes tests from the
//! prompt alone with the pipeline's own TestGenerator and TestCheck, samples n candidates, runs
//! each on those tests, and the operators crate's selection picks among them; the benchmark's
//! tests only score the picks afterwards.
//!
//! - [`draft`]: a benchmark problem as the pipeline's `Draft`.
//! - [`sandbox`]: the TestCheck and generated-test runs.
//! - [`rows`]: the Parquet rows a rerank folder keeps.
//! - [`score`]: every selection method, its pass@1, coverage and precision, and why the
//!   pipeline's filter picked right or wrong, from the rows alone.
//! - [`runner`]: the resumable loop, [`runner::rescore`] (scores again without sampling) and
//!   [`runner::rejudge`] (judges and runs the stored tests and samples again, without a model).

pub mod draft;
pub mod rows;
pub mod runner;
pub mod sandbox;
pub mod score;

pub use runner::{rejudge, rescore, run};
pub use sandbox::RerankSandbox;
pub use score::RerankSummary;
