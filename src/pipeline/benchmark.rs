//! `[eval]`: each model of the loop (M_0 … M_N) measured on a benchmark with the eval job
//! ([`crate::eval::runner`]), into `<run>/eval/M<t>/`; the result goes into the model's
//! [`ModelRecord`].
//!
//! The eval file is read and its problems loaded when the run starts, so a wrong file fails
//! before any work. Its `[model] name` and `[output] dir` are replaced by the model under test
//! and its folder, and the engine gets the run's engine threads (one thread budget per process).
//! An interrupted eval resumes from its committed problems like `ucoder-flow eval` does.

use std::path::{Path, PathBuf};

use super::lineage::{EvalRecord, ModelRecord};
use super::{CoreSplit, PipelineError};
use crate::config::IterationEval;
use crate::eval::humaneval::{self, Problem};
use crate::eval::{EvalConfig, EvalModel, Overrides, check, runner};
use crate::models::ModelSource;
use crate::progress::Reporter;

/// A benchmark ready to measure models with.
pub struct Benchmark {
    config: EvalConfig,
    problems: Vec<Problem>,
}

impl Benchmark {
    /// Reads the eval file `section.config` (relative to the pipeline file) and its problems.
    pub fn load(
        pipeline: &Path,
        section: &IterationEval,
        split: &CoreSplit,
        reporter: &dyn Reporter,
    ) -> Result<Benchmark, PipelineError> {
        let path = match pipeline.parent() {
            Some(dir) if section.config.is_relative() => dir.join(&section.config),
            _ => section.config.clone(),
        };
        let overrides = Overrides {
            limit: section.limit,
            ..Overrides::default()
        };
        let mut config =
            EvalConfig::load(&path, &overrides).map_err(|e| PipelineError::Invalid {
                path: pipeline.to_path_buf(),
                why: format!("eval.config: {e}"),
            })?;
        if config.is_rerank() {
            return Err(PipelineError::Invalid {
                path: pipeline.to_path_buf(),
                why: format!(
                    "eval.config: {} is a rerank eval ([selection]); a run measures its models \
                     with a plain one, e.g. humaneval.toml",
                    path.display()
                ),
            });
        }
        config.model.threads = Some(split.engine_threads);
        let problems = match &config.benchmark.path {
            Some(file) => humaneval::load_file(file),
            None => humaneval::load(&crate::fetch::cache_dir(), reporter),
        }
        .map_err(|e| PipelineError::Eval(e.into()))?;
        Ok(Benchmark { config, problems })
    }

    /// The folder model `name`'s eval goes to.
    pub fn dir(run_dir: &Path, name: &str) -> PathBuf {
        run_dir.join("eval").join(name)
    }

    /// Measures `record`'s model (unless its record already has a result) and saves the record.
    pub fn measure(
        &self,
        record: &mut ModelRecord,
        source: &ModelSource,
        run_dir: &Path,
        reporter: &dyn Reporter,
    ) -> Result<(), PipelineError> {
        if record.eval.is_some() {
            return Ok(());
        }
        let mut config = self.config.clone();
        config.model.name = source.path().to_string_lossy().into_owned();
        config.output.dir = Self::dir(run_dir, &record.name);
        reporter.note(&format!(
            "measuring {} on {} into {}",
            record.name,
            config.benchmark.name,
            config.output.dir.display()
        ));
        let mut model = EvalModel::engine(source, &config)?;
        let mut executor = check::open_executor(&config.sandbox)?;
        let summary = runner::run(&config, &self.problems, &mut model, &mut executor, reporter)?;
        record.eval = Some(EvalRecord {
            benchmark: summary.benchmark.clone(),
            dir: config.output.dir.clone(),
            problems: summary.problems,
            pass_at_k: summary.pass_at_k.clone(),
            wall_s: summary.wall_seconds,
        });
        record.save(run_dir)?;
        Ok(())
    }
}
