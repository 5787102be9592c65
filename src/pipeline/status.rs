//! `ucoder-flow status RUN_DIR`: what a run folder holds, read without writing anything, for a
//! run that is running, was killed or has finished: whether a process is writing it now
//! ([`RunLock::holder`]), what each iteration committed per stage and how much is left at most,
//! the models of the lineage, and the error the last segment stopped with.
//!
//! Committed rows are counted from the Parquet footers of the checkpoint parts (no data is read),
//! so asking is cheap on a run of any size. "At most left" is the settings' upper bound minus what
//! is committed: problems the funnel drops on the way need nothing more, so a run usually ends
//! below it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::PipelineError;
use super::iteration::iteration_name;
use super::stages::LlmStage;
use crate::store::lock::{Holder, RunLock};
use crate::store::stage::committed_rows;
use crate::store::{Manifest, StoreError, read_json, write_json_atomic};

/// `<run>/last_error.json`: the error the last segment of the run stopped with.
const LAST_ERROR_FILE: &str = "last_error.json";

/// The error a run stopped with, kept until a later segment finishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastError {
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at_unix_s: u64,
}

/// Keeps the error a run stopped with (`Some`), or forgets it once a segment finishes (`None`).
pub fn record_outcome(run_dir: &Path, error: Option<&str>) -> Result<(), StoreError> {
    let path = run_dir.join(LAST_ERROR_FILE);
    match error {
        Some(error) => write_json_atomic(
            &path,
            &LastError {
                error: error.to_string(),
                at_unix_s: unix_now(),
            },
        ),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, source: e })
            }
            _ => Ok(()),
        },
    }
}

/// What a run folder holds (see the module documentation).
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_dir: PathBuf,
    /// The process writing the folder now, if any.
    pub writer: Option<Holder>,
    /// The run's `summary.json` exists: its last segment finished.
    pub finished: bool,
    pub model: String,
    pub iterations: Vec<IterationStatus>,
    /// The lineage's models (`M0`, `M1`, …) recorded so far.
    pub models: Vec<String>,
    pub last_error: Option<LastError>,
}

/// One iteration's folder.
#[derive(Debug, Clone, Serialize)]
pub struct IterationStatus {
    pub iteration: u32,
    pub complete: bool,
    pub stages: Vec<StageStatus>,
    /// Selections written (complete iterations).
    pub selections: Option<u64>,
}

/// One checkpoint folder of an iteration.
#[derive(Debug, Clone, Serialize)]
pub struct StageStatus {
    pub stage: String,
    /// What one row is.
    pub unit: &'static str,
    pub committed: u64,
    /// The settings' upper bound on rows.
    pub at_most: Option<u64>,
}

impl RunStatus {
    /// Reads `run_dir` (nothing is written).
    pub fn read(run_dir: &Path) -> Result<RunStatus, PipelineError> {
        let manifest = Manifest::load(run_dir)?.ok_or_else(|| PipelineError::Invalid {
            path: run_dir.to_path_buf(),
            why: "no manifest.json: not a run folder (runs are in runs/<name>/)".into(),
        })?;
        let bounds = Bounds::from_settings(&manifest.config);
        let mut iterations = Vec::new();
        for t in 0.. {
            let name = iteration_name(t);
            let dir = run_dir.join(&name);
            if !dir.is_dir() {
                break;
            }
            let entry = manifest.stages.get(&name);
            let complete = entry
                .and_then(|e| e.get("complete"))
                .and_then(|c| c.as_bool())
                == Some(true);
            let selections = entry
                .filter(|_| complete)
                .and_then(|e| e.get("selections"))
                .and_then(|s| s.as_u64());
            let mut stages = Vec::new();
            for stage in LlmStage::ALL {
                stages.push(StageStatus {
                    stage: stage.dir_name().to_string(),
                    unit: match stage {
                        LlmStage::Candidates => "samples",
                        _ => "completions",
                    },
                    committed: committed_rows(&dir.join(stage.dir_name()))?,
                    at_most: bounds.of(stage),
                });
            }
            stages.push(StageStatus {
                stage: "executions".into(),
                unit: "test runs",
                committed: committed_rows(&dir.join("executions"))?,
                at_most: bounds.test_runs,
            });
            iterations.push(IterationStatus {
                iteration: t,
                complete,
                stages,
                selections,
            });
        }
        let mut models: Vec<String> = manifest
            .stages
            .keys()
            .filter(|k| {
                k.strip_prefix('M')
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            })
            .cloned()
            .collect();
        models.sort_by_key(|m| m[1..].parse::<u32>().unwrap_or(0));
        Ok(RunStatus {
            run_dir: run_dir.to_path_buf(),
            writer: RunLock::holder(run_dir)?,
            finished: run_dir.join("summary.json").is_file(),
            model: manifest.model,
            iterations,
            models,
            last_error: read_json(&run_dir.join(LAST_ERROR_FILE))?,
        })
    }

    /// One line for the state, then a table per iteration.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let state = match (&self.writer, self.finished) {
            (Some(w), _) => format!(
                "running: process {} on {} since {} s ago (`{}`)",
                w.pid,
                w.host,
                unix_now().saturating_sub(w.since_unix_s),
                w.command
            ),
            (None, true) => "finished (its summary.json is written)".to_string(),
            (None, false) => {
                "stopped: no process is writing it; run the same command to resume".to_string()
            }
        };
        let _ = writeln!(out, "{}: {state}", self.run_dir.display());
        let _ = writeln!(out, "model: {}", self.model);
        if !self.models.is_empty() {
            let _ = writeln!(out, "lineage: {}", self.models.join(" → "));
        }
        for it in &self.iterations {
            let _ = writeln!(
                out,
                "\niteration {}: {}",
                it.iteration,
                match (it.complete, it.selections) {
                    (true, Some(n)) => format!("complete, {n} selections"),
                    (true, None) => "complete".to_string(),
                    (false, _) => "not complete".to_string(),
                }
            );
            let _ = writeln!(
                out,
                "  {:<12} {:>12} {:>14}  unit",
                "stage", "committed", "at most left"
            );
            for s in &it.stages {
                let left = match (it.complete, s.at_most) {
                    (true, _) => "0".to_string(),
                    (false, Some(max)) => max.saturating_sub(s.committed).to_string(),
                    (false, None) => "?".to_string(),
                };
                let _ = writeln!(
                    out,
                    "  {:<12} {:>12} {:>14}  {}",
                    s.stage, s.committed, left, s.unit
                );
            }
        }
        if let Some(e) = &self.last_error {
            let _ = writeln!(
                out,
                "\nlast error ({} s ago): {}",
                unix_now().saturating_sub(e.at_unix_s),
                e.error
            );
        }
        out
    }
}

/// Upper bounds on each checkpoint's rows from the run's settings (as the manifest keeps them).
struct Bounds {
    problems: Option<u64>,
    test_requests: Option<u64>,
    samples: Option<u64>,
    test_runs: Option<u64>,
}

impl Bounds {
    fn from_settings(config: &serde_json::Value) -> Bounds {
        let get = |section: &str, key: &str| config.get(section)?.get(key)?.as_u64();
        let problems = get("problems", "count");
        let tests = get("tests", "per_problem");
        let batch = get("tests", "batch").filter(|b| *b > 0);
        let n = get("sampling", "n");
        Bounds {
            problems,
            test_requests: problems
                .zip(tests)
                .zip(batch)
                .map(|((p, t), b)| p * t.div_ceil(b)),
            samples: problems.zip(n).map(|(p, n)| p * n),
            test_runs: problems.zip(n).zip(tests).map(|((p, n), t)| p * n * t),
        }
    }

    fn of(&self, stage: LlmStage) -> Option<u64> {
        match stage {
            LlmStage::Problems | LlmStage::Ratings | LlmStage::Skeletons => self.problems,
            LlmStage::Tests => self.test_requests,
            LlmStage::Candidates => self.samples,
        }
    }
}

fn unix_now() -> u64 {
    crate::store::unix_time().as_secs()
}
