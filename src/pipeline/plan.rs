//! The plan a run prints before it starts and writes to `<run>/plan.json`: how much work the
//! settings ask for (problems × tests × n, the generated tokens and test runs that implies, at
//! most: every requested problem kept) and how long that takes here, from the rates of the newest
//! earlier iteration with the same model and backend under the runs folder (its `summary.json`).
//! With no earlier iteration there is no estimate, and the plan says how to get one.
//!
//! Tokens per unit (per sampled solution, per test, per problem request) come from that same
//! summary when there is one, else from the smoke runs of the default model ([`DEFAULT_TOKENS`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::summary::RunSummary;
use crate::config::PipelineConfig;
use crate::store::{Manifest, read_json};

/// Tokens per sampled solution, per test, per problem request (problem + rating + skeleton),
/// measured on `pipelines/smoke.toml` with the default model.
pub const DEFAULT_TOKENS: TokensPerUnit = TokensPerUnit {
    per_sample: 100.0,
    per_test: 30.0,
    per_problem: 400.0,
};

/// Generated tokens per unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokensPerUnit {
    pub per_sample: f64,
    pub per_test: f64,
    pub per_problem: f64,
}

/// Rates measured by an earlier iteration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeasuredRates {
    /// The `summary.json` they come from.
    pub source: PathBuf,
    /// Generated tokens per second the model was busy (all model stages).
    pub tokens_per_s: f64,
    /// Test runs per second the sandbox pool was busy, scaled to this run's sandbox workers.
    pub test_runs_per_s: f64,
}

/// See the module documentation.
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    pub iterations: u32,
    pub problems: u64,
    pub tests_per_problem: u64,
    pub n: u64,
    pub processes: usize,
    pub tokens_per_unit: TokensPerUnit,
    /// Generated tokens over all iterations, at most.
    pub tokens: f64,
    /// Test runs (candidate × test) over all iterations, at most.
    pub test_runs: f64,
    pub rates: Option<MeasuredRates>,
    /// Estimated wall seconds: model and sandbox work overlap, so the longer of the two.
    pub estimated_s: Option<f64>,
}

impl RunPlan {
    /// The plan for `config` on `processes` processes of `sandbox_workers` workers each, with
    /// rates from an earlier iteration of the same `model` (the manifest's identity) if any.
    pub fn new(
        config: &PipelineConfig,
        model: &str,
        sandbox_workers: usize,
        processes: usize,
    ) -> RunPlan {
        let earlier = newest_summary(&config.runs_dir, model, config);
        let tokens_per_unit = earlier
            .as_ref()
            .and_then(|(_, s)| tokens_per_unit(s))
            .unwrap_or(DEFAULT_TOKENS);
        let (problems, tests, n) = (
            config.problems.count as u64,
            config.tests.per_problem as u64,
            config.sampling.n as u64,
        );
        let iterations = config.iterations.max(1);
        let per_iteration_tokens = problems as f64
            * (n as f64 * tokens_per_unit.per_sample
                + tests as f64 * tokens_per_unit.per_test
                + tokens_per_unit.per_problem);
        let tokens = per_iteration_tokens * iterations as f64;
        let test_runs = (problems * n * tests) as f64 * iterations as f64;
        let rates = earlier.and_then(|(path, s)| rates(path, &s, sandbox_workers));
        let estimated_s = rates.as_ref().map(|r| {
            let processes = processes.max(1) as f64;
            (tokens / r.tokens_per_s).max(test_runs / r.test_runs_per_s) / processes
        });
        RunPlan {
            iterations,
            problems,
            tests_per_problem: tests,
            n,
            processes,
            tokens_per_unit,
            tokens,
            test_runs,
            rates,
            estimated_s,
        }
    }

    /// The lines printed at the start of a run.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "plan: {} iteration(s) × {} problems × {} tests × n = {}: at most {} generated tokens \
             ({:.0} per solution, {:.0} per test, {:.0} per problem) and {} test runs",
            self.iterations,
            self.problems,
            self.tests_per_problem,
            self.n,
            quantity(self.tokens),
            self.tokens_per_unit.per_sample,
            self.tokens_per_unit.per_test,
            self.tokens_per_unit.per_problem,
            quantity(self.test_runs),
        )];
        match (&self.rates, self.estimated_s) {
            (Some(r), Some(s)) => {
                lines.push(format!(
                    "plan: at {:.1} tokens/s and {:.0} test runs/s (measured by {}){}: about {}",
                    r.tokens_per_s,
                    r.test_runs_per_s,
                    r.source.display(),
                    match self.processes {
                        1 => String::new(),
                        p => format!(" on each of {p} processes"),
                    },
                    duration(s)
                ));
                if s > 86_400.0 {
                    lines.push(
                        "plan: more than a day here; for less, lower [problems] count, \
                         [sampling] n or [tests] per_problem (pipelines/medium.toml), generate \
                         with a GPU server ([model] backend = \"openai\"), or add machines \
                         (--processes)"
                            .into(),
                    );
                }
            }
            _ => lines.push(
                "plan: no time estimate yet: no earlier iteration of this model under the runs \
                 folder; the first one measures the rates (`ucoder-flow run pipelines/smoke.toml` \
                 takes minutes), and `ucoder-flow bench llm` measures the engine alone"
                    .into(),
            ),
        }
        lines
    }
}

/// The newest iteration summary under `runs_dir` whose run has `model` and the same backend.
fn newest_summary(
    runs_dir: &Path,
    model: &str,
    config: &PipelineConfig,
) -> Option<(PathBuf, RunSummary)> {
    let backend = serde_json::to_value(config.model.backend).ok();
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for run in std::fs::read_dir(runs_dir).ok()?.flatten() {
        let Ok(Some(manifest)) = Manifest::load(&run.path()) else {
            continue;
        };
        let their_backend = manifest
            .config
            .get("model")
            .and_then(|m| m.get("backend"))
            .cloned()
            .or_else(|| serde_json::to_value(crate::config::ModelBackend::Candle).ok());
        if manifest.model != model || their_backend != backend {
            continue;
        }
        for entry in std::fs::read_dir(run.path()).ok()?.flatten() {
            let path = entry.path().join("summary.json");
            let modified = std::fs::metadata(&path).and_then(|m| m.modified());
            if entry.file_name().to_string_lossy().starts_with("iter-")
                && let Ok(modified) = modified
                && newest.as_ref().is_none_or(|(t, _)| modified > *t)
            {
                newest = Some((modified, path));
            }
        }
    }
    let (_, path) = newest?;
    let summary = read_json::<RunSummary>(&path).ok()??;
    Some((path, summary))
}

fn stage_tokens(s: &RunSummary, stages: &[&str]) -> (u64, f64) {
    s.stage_times
        .iter()
        .filter(|t| stages.contains(&t.stage.as_str()))
        .fold((0, 0.0), |(tokens, busy), t| {
            (tokens + t.tokens, busy + t.busy_s)
        })
}

fn tokens_per_unit(s: &RunSummary) -> Option<TokensPerUnit> {
    let c = &s.counts;
    let per = |tokens: u64, n: u64| (n > 0 && tokens > 0).then(|| tokens as f64 / n as f64);
    Some(TokensPerUnit {
        per_sample: per(stage_tokens(s, &["candidates"]).0, c.solutions_sampled)?,
        per_test: per(stage_tokens(s, &["tests"]).0, c.tests_parsed)?,
        per_problem: per(
            stage_tokens(s, &["problems", "ratings", "skeletons"]).0,
            c.problems_requested,
        )?,
    })
}

fn rates(source: PathBuf, s: &RunSummary, sandbox_workers: usize) -> Option<MeasuredRates> {
    let (tokens, busy) = stage_tokens(
        s,
        &["problems", "ratings", "skeletons", "tests", "candidates"],
    );
    let exec_busy = s
        .stage_times
        .iter()
        .find(|t| t.stage == "executions")
        .map(|t| t.busy_s)?;
    if tokens == 0 || busy <= 0.0 || exec_busy <= 0.0 || s.counts.test_runs == 0 {
        return None;
    }
    let scale = sandbox_workers as f64 / s.sandbox_workers.max(1) as f64;
    Some(MeasuredRates {
        source,
        tokens_per_s: tokens as f64 / busy,
        test_runs_per_s: s.counts.test_runs as f64 / exec_busy * scale,
    })
}

/// 1234567 → "1.2 M".
fn quantity(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{:.1} G", x / 1e9),
        x if x >= 1e6 => format!("{:.1} M", x / 1e6),
        x if x >= 1e3 => format!("{:.1} k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// Seconds as "3.2 days", "5.1 hours" or "12 minutes".
fn duration(s: f64) -> String {
    match s {
        s if s >= 86_400.0 => format!("{:.1} days", s / 86_400.0),
        s if s >= 3_600.0 => format!("{:.1} hours", s / 3_600.0),
        s if s >= 60.0 => format!("{:.0} minutes", s / 60.0),
        _ => "under a minute".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_durations_read_at_a_glance() {
        assert_eq!(quantity(16_200_000.0), "16.2 M");
        assert_eq!(quantity(950.0), "950");
        assert_eq!(duration(3.0 * 86_400.0), "3.0 days");
        assert_eq!(duration(30.0), "under a minute");
        assert_eq!(duration(600.0), "10 minutes");
    }
}
