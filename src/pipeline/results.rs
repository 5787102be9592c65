//! The results of an iteration, gathered from every worker and written as the result tables
//! (`problem_set/`, `test_cases/`, `clusters/`, `selections/`, `rejections/`), each replaced
//! whole. The rows themselves are built by the stages that own them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use ucoder_operators::{ClusterKey, ConsensusConfig, GeneratedTest, ProblemId, Rejection};

use super::artifacts::RejectionRow;
use super::progress::{CounterValues, Counters};
use super::stages::selector::{self, Selected, VoteTally};
use super::stages::{Draft, test_check};
use super::summary::{StageTime, merge_stage_times, stage_label};
use crate::sft::sink::SftSummary;
use crate::store::{Record, Stage, StoreError, replace_dir};

/// Derived result folders, rebuilt by every run that completes an iteration.
pub const RESULT_DIRS: [&str; 7] = [
    "problem_set",
    "test_cases",
    "clusters",
    "selections",
    "rejections",
    "sft",
    "sft_messages",
];

/// Everything the workers decided: one worker's part, or (after [`Results::gather`]) all of it
/// in a canonical order. A part travels to the leader's worker 0 as it is
/// ([`super::gather`]), so everything but the SFT summary (the leader's own) is serializable.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub ready: Vec<(Draft, Vec<GeneratedTest>)>,
    pub rejections: Vec<Rejection>,
    /// Per problem, how its candidates fared before clustering.
    pub votes: BTreeMap<ProblemId, VoteTally>,
    /// Final clusters ((problem, signature), size).
    pub clusters: Vec<(ClusterKey, u32)>,
    /// Final (selection, SFT prompt, selected code): from worker 0.
    pub selections: Vec<Selected>,
    /// What the SftSink wrote: from worker 0.
    #[serde(skip)]
    pub sft: Option<SftSummary>,
    /// Seconds each operator was scheduled, summed over the workers.
    pub operator_seconds: BTreeMap<String, f64>,
    /// The run's counters: from the first worker of each process, summed over the processes.
    pub counters: CounterValues,
    /// The time each stage's backend spent: from the first worker of each process, merged over
    /// the processes (the processes run at once: the span is the longest).
    pub stage_times: Vec<StageTime>,
}

impl Results {
    /// Merges the workers' outputs, files a `selection` rejection for each ready problem that
    /// selected nothing, and sorts them, so the tables do not depend on `-w` or the processes.
    pub fn gather(outputs: Vec<Results>, selection: &ConsensusConfig) -> Self {
        let mut r = Results::default();
        let mut counters = Vec::new();
        let mut stage_times = Vec::new();
        for out in outputs {
            r.ready.extend(out.ready);
            r.rejections.extend(out.rejections);
            for (problem, tally) in out.votes {
                r.votes.entry(problem).or_default().merge(&tally);
            }
            r.clusters.extend(out.clusters);
            r.selections.extend(out.selections);
            r.sft = r.sft.or(out.sft);
            for (name, s) in out.operator_seconds {
                *r.operator_seconds.entry(name).or_default() += s;
            }
            counters.push(out.counters);
            stage_times.push(out.stage_times);
        }
        r.counters = Counters::sum(&counters);
        r.stage_times = merge_stage_times(stage_times, f64::max);
        r.ready.sort_by_key(|(d, _)| d.problem.id);
        r.clusters.sort();
        let unselected = selector::unselected(
            r.ready.iter().map(|(d, tests)| (d.problem.id, tests.len())),
            &r.votes,
            &r.clusters,
            &r.selections,
            selection,
        );
        r.rejections.extend(unselected);
        r.rejections.sort_by(|a, b| {
            (a.stage, a.problem_id, &a.detail, &a.raw).cmp(&(
                b.stage,
                b.problem_id,
                &b.detail,
                &b.raw,
            ))
        });
        r.selections.sort();
        r
    }

    /// Writes the result tables into `iter_dir` (the SFT shards are the SftSink's).
    pub fn write(&self, iter_dir: &Path) -> Result<(), StoreError> {
        let problems: Vec<_> = self
            .ready
            .iter()
            .map(|(d, tests)| test_check::problem_row(d, tests))
            .collect();
        write_table(iter_dir, "problem_set", &problems)?;
        let tests: Vec<_> = self
            .ready
            .iter()
            .flat_map(|(d, tests)| test_check::test_case_rows(d, tests))
            .collect();
        write_table(iter_dir, "test_cases", &tests)?;
        let clusters = selector::cluster_rows(&self.clusters, &self.selections, &self.votes);
        write_table(iter_dir, "clusters", &clusters)?;
        write_table(
            iter_dir,
            "selections",
            &selector::selection_rows(&self.selections),
        )?;
        let rejections: Vec<_> = self.rejections.iter().map(rejection_row).collect();
        write_table(iter_dir, "rejections", &rejections)
    }
}

/// A rejection in one line (`-v`): stage, reason, problem, detail.
pub fn rejection_line(r: &Rejection) -> String {
    let problem = r
        .problem_id
        .map_or(String::new(), |p| format!(" of problem {:016x}", p.0));
    let detail: String = r.detail.chars().take(240).collect();
    let detail = detail.replace('\n', " ");
    format!(
        "dropped{problem} at {}: {}{}{detail}",
        stage_label(r.stage),
        r.reason.as_str(),
        if detail.is_empty() { "" } else { ": " }
    )
}

/// The `rejections/` row of a rejection.
pub fn rejection_row(r: &Rejection) -> RejectionRow {
    RejectionRow {
        stage: stage_label(r.stage),
        problem_id: r.problem_id.map(|p| p.0),
        reason: r.reason.as_str().to_string(),
        detail: r.detail.clone(),
        raw: r.raw.clone(),
    }
}

/// Writes `rows` as the result table `iter_dir/name`, replacing an older one whole.
fn write_table<R: Record>(iter_dir: &Path, name: &str, rows: &[R]) -> Result<(), StoreError> {
    replace_dir(&iter_dir.join(name), |building| {
        Stage::<R>::open(building, 0)?
            .commit_table(rows)
            .map(|_| ())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(stage: &str, requests: u64, busy_s: f64, span_s: f64) -> StageTime {
        StageTime {
            stage: stage.into(),
            requests,
            tokens: requests * 10,
            busy_s,
            span_s,
        }
    }

    #[test]
    fn stage_times_of_processes_add_up_over_the_longest_span() {
        let merged = merge_stage_times(
            vec![
                vec![
                    time("problems", 2, 1.0, 3.0),
                    time("executions", 5, 2.0, 4.0),
                ],
                vec![
                    time("problems", 3, 1.5, 5.0),
                    time("executions", 1, 0.5, 1.0),
                ],
            ],
            f64::max,
        );
        assert_eq!(
            merged,
            [
                time("problems", 5, 2.5, 5.0),
                time("executions", 6, 2.5, 4.0)
            ]
        );
    }
}
