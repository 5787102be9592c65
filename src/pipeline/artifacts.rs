//! The Parquet tables of an IPC run (docs/ARCHITECTURE.md, "Artifacts and the store") and what resume reads back from them.
//!
//! Two kinds of tables live under `runs/<name>/iter-<t>/`:
//!
//! - **Checkpoints**, written part by part while the graph runs, are the expensive work: one
//!   [`ResponseRow`] per model completion in `problems/`, `ratings/`, `skeletons/`, `tests/` and
//!   `candidates/` (raw text, tokens, log-probability sum, finish reason, and how the stage's
//!   parser judged it), and one [`ExecutionRow`] per (candidate, test) in `executions/`. Each
//!   row carries the key of the request that produced it; on resume a [`ResponseMemo`] or
//!   [`ExecutionMemo`] answers those requests from disk instead of the model or the sandbox.
//! - **Results**, derived deterministically from the checkpoints when the iteration completes:
//!   `problem_set/`, `test_cases/`, `clusters/`, `selections/`, `rejections/` and `sft/`. They are
//!   rebuilt from scratch by a resumed run, so a half-written result is never mixed with a new one.

use std::collections::HashMap;
use std::path::Path;

use ucoder_operators::{
    CandidateId, Completion, Execution, FinishReason, LogprobSummary, Outcome, ProblemId, TestId,
    TestRun,
};

use crate::flat_record;
use crate::store::{Stage, StoreError};

/// One model completion, as a stage checkpoints it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseRow {
    /// The request's key within its stage (see `stages::RequestKey`).
    pub key: u64,
    /// The problem the request is about; in `problems/`, the problem parsed from the completion
    /// (none when it did not parse).
    pub problem_id: Option<u64>,
    /// Index of the completion within its request.
    pub sample: u32,
    /// `candidates/`: the candidate parsed from the completion (none when it has no code, and in
    /// the other stages). Parts written before schema v2 had `record_id` instead.
    pub candidate_id: Option<u64>,
    pub text: String,
    pub tokens: u32,
    pub sum_logprob: f64,
    /// `stop` or `length`.
    pub finish: String,
    /// `ok`, or the rejection reason's label.
    pub status: String,
    pub detail: String,
    /// The program extracted from the completion (`candidates/` rows whose status is `ok`: the
    /// code every test ran against); null elsewhere and in parts written before schema v2.
    pub code: Option<String>,
}

flat_record!(
    ResponseRow,
    "ipc_response",
    2,
    [
        key: u64 as id,
        problem_id: Option<u64> as id,
        sample: u32,
        candidate_id: Option<u64> as id,
        text: String,
        tokens: u32,
        sum_logprob: f64,
        finish: String,
        status: String,
        detail: String,
        code: Option<String>,
    ]
);

impl ResponseRow {
    fn completion(&self) -> Completion {
        Completion {
            text: self.text.clone(),
            logprobs: LogprobSummary {
                tokens: self.tokens,
                sum_logprob: self.sum_logprob,
            },
            finish: if self.finish == "length" {
                FinishReason::Length
            } else {
                FinishReason::Stop
            },
        }
    }
}

/// One test's outcome for one candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    pub problem_id: u64,
    pub candidate_id: u64,
    pub test_id: u64,
    /// `pass`, `fail`, `error`, `timeout` or `skipped` (the sandbox stopped the candidate once
    /// e(r) >= rho was out of reach).
    pub outcome: String,
    pub output_hash: Option<u64>,
    /// The verdict was decided inside the candidate's process (a test form the sandbox cannot
    /// split): the candidate's own code could sway it.
    pub decided_in_child: bool,
    /// What the outcome does not say: `error: <exception type>` for an `error`, `killed` for a
    /// `timeout` that was killed; null otherwise (and in parts written before schema v3).
    pub detail: Option<String>,
}

flat_record!(
    ExecutionRow,
    "ipc_execution",
    4,
    [problem_id: u64 as id, candidate_id: u64 as id, test_id: u64 as id, outcome: String, output_hash: Option<u64> as id, decided_in_child: bool, detail: Option<String>]
);

impl ExecutionRow {
    /// The rows of one execution.
    pub fn of(execution: &Execution) -> impl Iterator<Item = ExecutionRow> + '_ {
        execution.results.iter().map(|r| ExecutionRow {
            problem_id: execution.problem_id.0,
            candidate_id: execution.candidate_id.0,
            test_id: r.test_id.0,
            outcome: r.outcome.label().to_string(),
            output_hash: r.output_hash,
            decided_in_child: r.decided_in_child,
            detail: r.detail.clone(),
        })
    }
}

/// Completions already committed by a stage, by request key.
#[derive(Debug, Default)]
pub struct ResponseMemo {
    by_key: HashMap<u64, Vec<Completion>>,
}

impl ResponseMemo {
    /// Reads every committed part of the stage folder `dir` (none yet: an empty memo).
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let rows = Stage::<ResponseRow>::read(dir)?;
        let mut grouped: HashMap<u64, Vec<&ResponseRow>> = HashMap::new();
        for row in &rows {
            grouped.entry(row.key).or_default().push(row);
        }
        let by_key = grouped
            .into_iter()
            .map(|(key, mut rows)| {
                rows.sort_by_key(|r| r.sample);
                rows.dedup_by_key(|r| r.sample);
                (key, rows.into_iter().map(ResponseRow::completion).collect())
            })
            .collect();
        Ok(ResponseMemo { by_key })
    }

    /// The committed completions of request `key`.
    pub fn get(&self, key: u64) -> Option<&Vec<Completion>> {
        self.by_key.get(&key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Executions already committed, by candidate.
#[derive(Debug, Default)]
pub struct ExecutionMemo {
    by_candidate: HashMap<CandidateId, Execution>,
}

impl ExecutionMemo {
    /// Reads every committed part of the `executions/` folder `dir`. A row whose outcome label is
    /// unknown is an error naming the folder.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let rows = Stage::<ExecutionRow>::read(dir)?;
        let mut by_candidate: HashMap<CandidateId, Execution> = HashMap::new();
        for row in rows {
            let outcome = Outcome::from_label(&row.outcome).ok_or_else(|| StoreError::Column {
                path: dir.to_path_buf(),
                column: "outcome".into(),
                problem: format!("unknown outcome `{}`", row.outcome),
            })?;
            let execution = by_candidate
                .entry(CandidateId(row.candidate_id))
                .or_insert_with(|| Execution {
                    problem_id: ProblemId(row.problem_id),
                    candidate_id: CandidateId(row.candidate_id),
                    results: Vec::new(),
                    program_error: None,
                });
            execution.results.push(TestRun {
                test_id: TestId(row.test_id),
                outcome,
                output_hash: row.output_hash,
                decided_in_child: row.decided_in_child,
                detail: row.detail.clone(),
            });
        }
        // A (candidate, test) row counts once, whatever parts it appears in.
        for execution in by_candidate.values_mut() {
            execution.results.sort_by_key(|r| r.test_id);
            execution.results.dedup_by_key(|r| r.test_id);
        }
        Ok(ExecutionMemo { by_candidate })
    }

    /// The committed execution of `candidate`.
    pub fn get(&self, candidate: CandidateId) -> Option<&Execution> {
        self.by_candidate.get(&candidate)
    }

    pub fn len(&self) -> usize {
        self.by_candidate.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_candidate.is_empty()
    }
}

/// A problem that made it through rating, skeleton and tests (`problem_set/`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemRow {
    pub problem_id: u64,
    pub request: u64,
    pub category: String,
    pub title: String,
    pub description: String,
    pub signature: String,
    pub example: String,
    pub hint: String,
    pub score: f64,
    pub difficulty: String,
    pub skeleton: String,
    pub tests: u32,
}

flat_record!(
    ProblemRow,
    "ipc_problem",
    2,
    [
        problem_id: u64 as id,
        request: u64 as id,
        category: String,
        title: String,
        description: String,
        signature: String,
        example: String,
        hint: String,
        score: f64,
        difficulty: String,
        skeleton: String,
        tests: u32,
    ]
);

/// One validated test (`test_cases/`).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCaseRow {
    pub problem_id: u64,
    pub test_id: u64,
    /// `assert`, or `call` for `assert f(args) == expected`.
    pub kind: String,
    pub code: String,
}

flat_record!(
    TestCaseRow,
    "ipc_test_case",
    2,
    [problem_id: u64 as id, test_id: u64 as id, kind: String, code: String]
);

/// One consensus cluster at the end of the iteration (`clusters/`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterRow {
    pub problem_id: u64,
    /// Digest of the shared execution signature.
    pub signature: u64,
    pub size: u32,
    /// Tests the cluster's members pass.
    pub passed: u32,
    /// Whether the selection came from this cluster.
    pub selected: bool,
    /// The candidates in the cluster (`candidates.record_id`, `executions.candidate_id`), sorted.
    pub members: Vec<u64>,
}

flat_record!(
    ClusterRow,
    "ipc_cluster",
    2,
    [problem_id: u64 as id, signature: u64 as id, size: u32, passed: u32, selected: bool, members: Vec<u64> as ids]
);

/// The selected solution of a problem (`selections/`).
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionRow {
    pub problem_id: u64,
    pub candidate_id: u64,
    pub cluster: u64,
    pub cluster_size: u32,
    pub executed: u32,
    pub tests: u32,
    pub passed: u32,
    pub perplexity: f64,
    pub code: String,
}

flat_record!(
    SelectionRow,
    "ipc_selection",
    2,
    [
        problem_id: u64 as id,
        candidate_id: u64 as id,
        cluster: u64 as id,
        cluster_size: u32,
        executed: u32,
        tests: u32,
        passed: u32,
        perplexity: f64,
        code: String,
    ]
);

/// A response or record that a stage rejected (`rejections/`).
#[derive(Debug, Clone, PartialEq)]
pub struct RejectionRow {
    pub stage: String,
    pub problem_id: Option<u64>,
    pub reason: String,
    pub detail: String,
    pub raw: String,
}

flat_record!(
    RejectionRow,
    "ipc_rejection",
    2,
    [stage: String, problem_id: Option<u64> as id, reason: String, detail: String, raw: String]
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A replayed execution says why a test errored, as the live one did (the executor counts
    /// the candidates whose results change with the hash seed from it).
    #[test]
    fn an_execution_reads_back_with_its_error_details() {
        let run = |test: u64, outcome: Outcome, detail: Option<&str>| TestRun {
            test_id: TestId(test),
            outcome,
            output_hash: None,
            decided_in_child: false,
            detail: detail.map(str::to_string),
        };
        let execution = Execution {
            problem_id: ProblemId(1),
            candidate_id: CandidateId(2),
            results: vec![
                run(3, Outcome::Pass, None),
                run(4, Outcome::Error, Some("error: ZeroDivisionError")),
                run(5, Outcome::Timeout, Some("killed")),
            ],
            program_error: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<ExecutionRow> = ExecutionRow::of(&execution).collect();
        Stage::<ExecutionRow>::open(dir.path(), 0)
            .unwrap()
            .commit(&rows)
            .unwrap();
        let memo = ExecutionMemo::load(dir.path()).unwrap();
        let replayed = memo.get(CandidateId(2)).expect("committed");
        assert_eq!(replayed.results, execution.results);
    }
}
