//! The closing summary of a run: counts per stage, rejections by reason, cluster sizes, model and
//! sandbox seconds per stage, and where the dataflow's own time went (also `summary.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use ucoder_operators::Rejection;

/// What a run did: each iteration's summary and the lineage of its models (also
/// `<run>/summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopSummary {
    pub run: String,
    pub iterations: Vec<RunSummary>,
    /// M_0 … M_N, as far as the run got.
    pub models: Vec<super::lineage::ModelRecord>,
    /// Why the loop ended before its last iteration, when it did.
    pub stopped_early: Option<String>,
    /// Wall time of this invocation.
    pub wall_s: f64,
}

impl LoopSummary {
    /// The table printed at the end of a run: each iteration's, then the lineage.
    pub fn table(&self) -> String {
        let mut out: String = self.iterations.iter().map(RunSummary::table).collect();
        let _ = writeln!(out, "\n== lineage of `{}` ==", self.run);
        let _ = writeln!(
            out,
            "{:<5} {:<14} {:<44} {:>10}",
            "model", "weights", "made from", "benchmark"
        );
        for m in &self.models {
            let made = match &m.trained {
                None => m.path.display().to_string(),
                Some(t) => {
                    let loss = t.report.as_ref().map_or(String::new(), |r| {
                        format!(
                            ", {} rows, {} steps, loss {:.3} → {:.3}",
                            r.rows, r.steps, r.first_loss, r.final_loss
                        )
                    });
                    format!("{} + {}{loss}", t.from, short_path(&t.data))
                }
            };
            let score = m.eval.as_ref().map_or("-".to_string(), |e| {
                e.pass_at_k.get("pass@1").map_or("-".to_string(), |p| {
                    format!("pass@1 {p:.3} ({})", e.problems)
                })
            });
            let _ = writeln!(
                out,
                "{:<5} {:<14} {:<44} {:>10}",
                m.name,
                format!("{}…", &m.weights_sha256[..m.weights_sha256.len().min(12)]),
                made,
                score
            );
        }
        if let Some(why) = &self.stopped_early {
            let _ = writeln!(out, "\nthe loop stopped early: {why}");
        }
        let _ = writeln!(out, "wall {:.1} s", self.wall_s);
        out
    }
}

/// The last two components of a path (`iter-0/sft`).
fn short_path(path: &std::path::Path) -> String {
    let parts: Vec<_> = path.components().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn one_process() -> usize {
    1
}

fn one_segment() -> u32 {
    1
}

/// Wall and busy time of one stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageTime {
    pub stage: String,
    /// Requests served (prompts, or sandbox jobs).
    pub requests: u64,
    /// Completion tokens generated.
    pub tokens: u64,
    /// Seconds its backend was busy with it.
    pub busy_s: f64,
    /// Seconds from its first request's start to its last request's end.
    pub span_s: f64,
}

/// Stage times of several sources as one: requests, tokens and busy seconds add up; spans
/// combine with `span` (processes that ran at once: the longest; segments that ran one after
/// another: the sum).
pub fn merge_stage_times(
    groups: impl IntoIterator<Item = Vec<StageTime>>,
    span: fn(f64, f64) -> f64,
) -> Vec<StageTime> {
    let mut merged: Vec<StageTime> = Vec::new();
    for time in groups.into_iter().flatten() {
        match merged.iter_mut().find(|m| m.stage == time.stage) {
            Some(m) => {
                m.requests += time.requests;
                m.tokens += time.tokens;
                m.busy_s += time.busy_s;
                m.span_s = span(m.span_s, time.span_s);
            }
            None => merged.push(time),
        }
    }
    merged
}

/// The closing summary of a run (also written as `summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    /// t: this summary is iteration t's (`<run>/iter-<t>/summary.json`).
    #[serde(default)]
    pub iteration: u32,
    /// The model the iteration generated with (`M<t>` of the run's lineage).
    #[serde(default)]
    pub model: String,
    /// Seconds the iteration took, over all the segments it ran in ([`super::segments`]).
    pub wall_s: f64,
    /// Seconds of the segment that finished it.
    #[serde(default)]
    pub segment_wall_s: f64,
    /// Segments it ran in (1 unless it was stopped and resumed).
    #[serde(default = "one_segment")]
    pub segments: u32,
    pub resumed: bool,
    pub engine_threads: usize,
    pub sandbox_workers: usize,
    pub dataflow_workers: usize,
    /// Processes of the cluster the iteration ran on (engine threads, sandbox and dataflow
    /// workers are per process; the counts and stage times are the whole cluster's).
    #[serde(default = "one_process")]
    pub processes: usize,
    /// How many items reached each step, in graph order.
    pub counts: FunnelCounts,
    /// Rejections by `stage/reason`.
    pub rejections: BTreeMap<String, u64>,
    /// Final cluster sizes: size → number of clusters.
    pub cluster_sizes: BTreeMap<u32, u64>,
    /// Sizes of the selected clusters: size → number of problems.
    pub selected_cluster_sizes: BTreeMap<u32, u64>,
    pub stage_times: Vec<StageTime>,
    /// Seconds the timely operators were scheduled, by kind (see `DataflowTime`).
    pub dataflow: DataflowTime,
    pub selections: u64,
    pub selections_per_hour: f64,
    pub sft_examples: usize,
    pub sft_rows: usize,
    pub sft_tokens: usize,
    /// The sandbox's isolation steps as the workers reported them: `ok` or `refused: why`.
    #[serde(default)]
    pub sandbox_isolation: BTreeMap<String, String>,
    /// Steps that kept less than half of what the settings imply ([`FunnelCounts::low_yields`]).
    #[serde(default)]
    pub low_yields: Vec<String>,
}

/// How many items reached each step of an iteration's funnel, in graph order (`counts` in
/// `summary.json`; one key per step, documented in docs/TABLES.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FunnelCounts {
    /// `[problems] count`.
    pub problems_requested: u64,
    /// Problem answers that parsed.
    pub problems_parsed: u64,
    /// Problems left after (near-)duplicate removal.
    pub problems_unique: u64,
    /// Problems rated at least `min_score`.
    pub problems_rated: u64,
    /// `[rating] min_score`.
    pub min_score: f64,
    /// Skeletons that loaded in the sandbox and define the function.
    pub skeletons_checked: u64,
    /// Problems with at least one validated test (`problem_set/` rows).
    pub problems_with_tests: u64,
    /// Tests parsed, batch by batch (before cross-batch de-duplication and the skeleton check).
    pub tests_parsed: u64,
    /// Tests kept (`test_cases/` rows).
    pub tests_kept: u64,
    /// Solutions sampled.
    pub solutions_sampled: u64,
    /// Samples whose code was extracted (candidates).
    pub candidates: u64,
    /// Of those, candidates given a standard-library import they used without importing.
    pub candidates_given_imports: u64,
    /// Candidates executed on their problem's tests.
    pub candidates_executed: u64,
    /// (candidate, test) runs.
    pub test_runs: u64,
    /// Of those, runs skipped because e(r) >= ρ was out of reach.
    pub test_runs_skipped: u64,
    /// Of those, runs whose verdict was decided inside the sandboxed child.
    pub test_runs_decided_in_child: u64,
    /// Candidates whose results changed with the hash seed (they vote in no cluster).
    pub nondeterministic_candidates: u64,
    /// Final voting clusters (`clusters/` rows).
    pub clusters: u64,
    /// Problems with a selection (`selections/` rows).
    pub selections: u64,
    /// Completions read from the checkpoints of an interrupted run instead of generated.
    pub replayed_completions: u64,
    /// Executions read from the checkpoints of an interrupted run instead of run.
    pub replayed_executions: u64,
}

impl FunnelCounts {
    /// The steps that kept less than half of their input, against what `[tests] per_problem`
    /// implies for the tests, each with where its rejections are: a run can finish without error
    /// and still have lost most of its work at one step (a small model that parses no problem).
    pub fn low_yields(&self, tests_per_problem: usize) -> Vec<String> {
        let steps = [
            (
                "problem answers parsed",
                self.problems_parsed,
                self.problems_requested,
                "problem/*",
            ),
            (
                "skeletons checked of the rated problems",
                self.skeletons_checked,
                self.problems_rated,
                "skeleton/*",
            ),
            (
                "tests kept of those asked for",
                self.tests_kept,
                self.problems_with_tests * tests_per_problem as u64,
                "test/*",
            ),
            (
                "samples with extractable code",
                self.candidates,
                self.solutions_sampled,
                "candidate/*",
            ),
            (
                "problems with tests that selected a solution",
                self.selections,
                self.problems_with_tests,
                "selection/*",
            ),
        ];
        steps
            .into_iter()
            .filter(|(_, kept, of, _)| *of > 0 && kept * 2 < *of)
            .map(|(what, kept, of, rejections)| {
                format!("only {kept} of {of} {what} (rejections `{rejections}`)")
            })
            .collect()
    }

    /// The counts as the summary table's (label, value) lines.
    pub fn rows(&self) -> Vec<(String, u64)> {
        vec![
            ("problems requested".into(), self.problems_requested),
            ("problems parsed".into(), self.problems_parsed),
            ("problems after de-duplication".into(), self.problems_unique),
            (
                format!("problems rated >= {}", self.min_score),
                self.problems_rated,
            ),
            ("skeletons checked".into(), self.skeletons_checked),
            ("problems with tests".into(), self.problems_with_tests),
            ("tests parsed".into(), self.tests_parsed),
            ("tests kept".into(), self.tests_kept),
            ("solutions sampled".into(), self.solutions_sampled),
            ("candidates (code extracted)".into(), self.candidates),
            (
                "  given a missing standard-library import".into(),
                self.candidates_given_imports,
            ),
            ("candidates executed".into(), self.candidates_executed),
            ("test runs".into(), self.test_runs),
            (
                "  skipped (e(r) >= rho out of reach)".into(),
                self.test_runs_skipped,
            ),
            (
                "  decided in the child".into(),
                self.test_runs_decided_in_child,
            ),
            (
                "candidates whose results change with the hash seed".into(),
                self.nondeterministic_candidates,
            ),
            ("clusters".into(), self.clusters),
            ("selections".into(), self.selections),
            (
                "completions replayed from checkpoints".into(),
                self.replayed_completions,
            ),
            (
                "executions replayed from checkpoints".into(),
                self.replayed_executions,
            ),
        ]
    }
}

/// Where the timely workers spent their time, from timely's own scheduling log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataflowTime {
    /// Grouping, selection and the joins that feed the sink (differential operators).
    pub consensus_s: f64,
    /// Exchanges, maps, concatenations and the other plumbing operators.
    pub plumbing_s: f64,
    /// Stage operators: parsing, checkpoint writes, request building, the SFT sink.
    pub stages_s: f64,
    /// All scheduled time, over all workers.
    pub total_s: f64,
    /// (consensus + plumbing) / wall time of the run.
    pub fraction_of_wall: f64,
    /// The busiest operators: name → seconds.
    pub top_operators: Vec<(String, f64)>,
}

impl RunSummary {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n== ucoder-flow run `{}`, iteration {} ({}) ==",
            self.run, self.iteration, self.model
        );
        let _ = writeln!(
            out,
            "wall {:.1} s{}, {}engine threads {}, sandbox workers {}, dataflow workers {}",
            self.wall_s,
            match self.resumed {
                false => String::new(),
                true => format!(
                    " (resumed) over {} segment(s), the last {:.1} s",
                    self.segments, self.segment_wall_s
                ),
            },
            match self.processes {
                1 => String::new(),
                p => format!("{p} processes, each with "),
            },
            self.engine_threads,
            self.sandbox_workers,
            self.dataflow_workers
        );
        let _ = writeln!(out, "\n{:<40} {:>10}", "stage", "records");
        for (stage, count) in &self.counts.rows() {
            let _ = writeln!(out, "{stage:<40} {count:>10}");
        }
        let _ = writeln!(out, "\n{:<40} {:>10}", "rejections", "count");
        if self.rejections.is_empty() {
            let _ = writeln!(out, "{:<40} {:>10}", "(none)", 0);
        }
        for (reason, count) in &self.rejections {
            let _ = writeln!(out, "{reason:<40} {count:>10}");
        }
        let sizes = |m: &BTreeMap<u32, u64>| {
            if m.is_empty() {
                "(none)".to_string()
            } else {
                m.iter()
                    .map(|(size, n)| format!("{size}:{n}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            }
        };
        let _ = writeln!(
            out,
            "\ncluster sizes (size:clusters)          {}",
            sizes(&self.cluster_sizes)
        );
        let _ = writeln!(
            out,
            "selected cluster sizes                 {}",
            sizes(&self.selected_cluster_sizes)
        );
        let _ = writeln!(
            out,
            "\n{:<18} {:>9} {:>9} {:>10} {:>10}  throughput (per busy second)",
            "stage", "requests", "tokens", "busy s", "span s"
        );
        for t in &self.stage_times {
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>9} {:>10.1} {:>10.1}  {}",
                t.stage,
                t.requests,
                t.tokens,
                t.busy_s,
                t.span_s,
                self.throughput(t)
            );
        }
        let refused: Vec<String> = self
            .sandbox_isolation
            .iter()
            .filter(|(_, state)| state.as_str() != "ok")
            .map(|(step, state)| format!("{step} ({state})"))
            .collect();
        let _ = writeln!(
            out,
            "
sandbox isolation: {} steps ok{}",
            self.sandbox_isolation.len() - refused.len(),
            if refused.is_empty() {
                String::new()
            } else {
                format!("; refused by this host: {}", refused.join(", "))
            }
        );
        let d = &self.dataflow;
        let _ = writeln!(
            out,
            "\ndataflow: consensus {:.3} s, plumbing {:.3} s, stage operators {:.3} s; \
             consensus + plumbing = {:.3}% of wall",
            d.consensus_s,
            d.plumbing_s,
            d.stages_s,
            d.fraction_of_wall * 100.0
        );
        let _ = writeln!(
            out,
            "selections {} ({:.1}/hour); SFT: {} examples in {} rows, {} tokens",
            self.selections,
            self.selections_per_hour,
            self.sft_examples,
            self.sft_rows,
            self.sft_tokens
        );
        for warning in &self.low_yields {
            let _ = writeln!(out, "low yield: {warning}");
        }
        out
    }
}

impl RunSummary {
    /// A stage's rate per second its backend was busy (what it can do, the figure to plan with):
    /// generated tokens for the model's stages, test runs (candidate × test) for the executions,
    /// jobs for the checks; for the executions also over their span, which includes waiting for
    /// candidates.
    fn throughput(&self, t: &StageTime) -> String {
        if t.busy_s <= 0.0 {
            return "-".into();
        }
        let per_busy_s = |n: u64| n as f64 / t.busy_s;
        match t.stage.as_str() {
            "executions" => format!(
                "{:.0} test runs/s ({:.1}/s over the span)",
                per_busy_s(self.counts.test_runs),
                self.counts.test_runs as f64 / t.span_s.max(1e-9)
            ),
            "sandbox checks" => format!("{:.1} jobs/s", per_busy_s(t.requests)),
            _ => format!("{:.1} tokens/s", per_busy_s(t.tokens)),
        }
    }
}

/// The summary's key of a rejection: `stage/reason`, plus the parser's label for unparseable
/// answers (`problem/unparseable/missing_block`).
pub fn rejection_key(r: &Rejection) -> String {
    let stage = stage_label(r.stage);
    let reason = r.reason.as_str();
    match &r.parser_label {
        Some(label) if r.reason == ucoder_operators::RejectReason::Unparseable => {
            format!("{stage}/{reason}/{label}")
        }
        _ => format!("{stage}/{reason}"),
    }
}

/// The stored name of a record stage (`problem`, `rating`, ...).
pub fn stage_label(stage: ucoder_operators::RecordStage) -> String {
    serde_json::to_value(stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Where the workers' scheduled time went, from the seconds per operator name.
pub fn classify_operators(seconds: &BTreeMap<String, f64>, wall: f64) -> DataflowTime {
    const STAGE_OPERATORS: [&str; 5] = [
        "NearDuplicateFilter",
        "TestAssembler",
        "SolutionRounds",
        "SftSink",
        "ClusterLog",
    ];
    const CONSENSUS_WORDS: [&str; 8] = [
        "Arrange",
        "Reduce",
        "Join",
        "Count",
        "Selector",
        "Standings",
        "Consolidate",
        "Threshold",
    ];
    let mut t = DataflowTime::default();
    let mut top: Vec<(String, f64)> = Vec::new();
    for (name, &s) in seconds {
        if name.starts_with("Dataflow") {
            continue; // the dataflow's own scope: it encloses every operator's time
        }
        t.total_s += s;
        if name.ends_with("Checkpoint") || STAGE_OPERATORS.contains(&name.as_str()) {
            t.stages_s += s;
        } else if CONSENSUS_WORDS.iter().any(|w| name.contains(w)) || name == "AsInsertions" {
            t.consensus_s += s;
        } else {
            t.plumbing_s += s;
        }
        top.push((name.clone(), s));
    }
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    top.truncate(8);
    t.top_operators = top;
    t.fraction_of_wall = if wall > 0.0 {
        (t.consensus_s + t.plumbing_s) / wall
    } else {
        0.0
    };
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucoder_operators::{RecordStage, RejectReason};

    #[test]
    fn steps_that_lose_most_of_their_input_are_named() {
        // The small model: 0 of 8 problem answers parse.
        let lost = FunnelCounts {
            problems_requested: 8,
            ..FunnelCounts::default()
        };
        assert_eq!(
            lost.low_yields(6),
            ["only 0 of 8 problem answers parsed (rejections `problem/*`)"]
        );
        // A healthy funnel: 3 problems, 15 of 18 tests, 20 of 24 samples, 2 selections.
        let healthy = FunnelCounts {
            problems_requested: 3,
            problems_parsed: 3,
            problems_rated: 3,
            skeletons_checked: 3,
            problems_with_tests: 3,
            tests_kept: 15,
            solutions_sampled: 24,
            candidates: 20,
            selections: 2,
            ..FunnelCounts::default()
        };
        assert!(healthy.low_yields(6).is_empty());
        let few_tests = FunnelCounts {
            tests_kept: 8,
            ..healthy
        };
        assert_eq!(
            few_tests.low_yields(6),
            ["only 8 of 18 tests kept of those asked for (rejections `test/*`)"]
        );
    }

    fn rejection(
        stage: RecordStage,
        reason: RejectReason,
        label: Option<&'static str>,
    ) -> Rejection {
        Rejection {
            stage,
            problem_id: None,
            reason,
            detail: "score 3: below".into(),
            raw: String::new(),
            parser_label: label.map(str::to_string),
        }
    }

    #[test]
    fn rejection_keys_name_stage_reason_and_parser_label() {
        assert_eq!(
            rejection_key(&rejection(
                RecordStage::Problem,
                RejectReason::Unparseable,
                Some("missing_block")
            )),
            "problem/unparseable/missing_block"
        );
        assert_eq!(
            rejection_key(&rejection(
                RecordStage::Rating,
                RejectReason::LowQuality,
                None
            )),
            "rating/low_quality"
        );
        assert_eq!(
            rejection_key(&rejection(
                RecordStage::Skeleton,
                RejectReason::MissingFunction,
                Some("skeleton_missing_function")
            )),
            "skeleton/missing_function"
        );
    }
}
