//! Scoring a rerank run against the benchmark's own tests, from the stored rows alone (so a
//! fresh run and `--rescore` give the same figures for the same rows).
//!
//! Every [`Method`] answers each problem with a pick, or declines. Its figures:
//! - **pass@1**: the chance its answer is correct, where a method that declines answers with a
//!   random sample (the share of correct samples);
//! - **coverage**: the share of problems where it picks itself;
//! - **precision**: the share of its own picks that are correct. For the pipeline's filter
//!   (`[selection]`) this is the share of SFT targets that would be right.
//!
//! Methods that draw at random from a set (random passing, success rate > 0.5) count the share
//! of correct samples in that set, the expectation of the draw, instead of drawing. Each method
//! also says how many samples it needed drawn (adaptive sampling fewer than n).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use ucoder_operators::selection::votes;
use ucoder_operators::{
    AdaptiveSampling, Candidate, CandidateId, CandidateVerdict, ClusterStanding, ConsensusConfig,
    Decision, Execution, LogprobSummary, Outcome, ProblemId, SelectionRule, Signature,
    SignatureKind, TestId, TestRun, select_batch,
};

use super::rows::{GeneratedRunRow, GeneratedTestRow, MethodScoreRow, ProblemScoreRow};
use crate::config::SelectionConfig;
use crate::eval::results::{SampleRecord, Summary};

/// A way of answering a problem from its samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The greedy completion (no samples).
    Greedy,
    /// A random sample: sampled pass@1.
    Sampled,
    /// Some sample is correct: pass@n, the ceiling of any reranker.
    Oracle,
    /// The consensus rule on generated tests, with the run's ρ and τ.
    Consensus(SelectionRule, SignatureKind),
    /// A random sample among those that pass every kept generated test.
    RandomPassing,
    /// The sample with the lowest perplexity f(r).
    LowestPerplexity,
    /// A random sample among those that pass more than half the kept generated tests.
    SuccessRateAboveHalf,
    /// The pipeline's filter with adaptive sampling in rounds of this many: the samples an
    /// adaptive run draws are the first ones of the same seeds (sample i draws from its own
    /// stream), so it is replayed from the stored samples exactly, round by round.
    Adaptive(u32),
}

impl Method {
    /// Every method, in table order; the adaptive replay in rounds of `round`.
    pub fn all(round: u32) -> Vec<Method> {
        use SelectionRule::*;
        use SignatureKind::*;
        vec![
            Method::Greedy,
            Method::Sampled,
            Method::Oracle,
            Method::Consensus(Consensus, PassFail),
            Method::Consensus(Consensus, Output),
            Method::Consensus(DualAgreement, PassFail),
            Method::Consensus(DualAgreement, Output),
            Method::Consensus(Bayesian, PassFail),
            Method::RandomPassing,
            Method::LowestPerplexity,
            Method::SuccessRateAboveHalf,
            Method::Adaptive(round),
        ]
    }

    /// Its name in tables and rows.
    pub fn name(&self) -> String {
        match self {
            Method::Greedy => "greedy".into(),
            Method::Sampled => "sampled".into(),
            Method::Oracle => "oracle (pass@n)".into(),
            Method::Consensus(rule, kind) => {
                let rule = match rule {
                    SelectionRule::Consensus => "largest",
                    SelectionRule::DualAgreement => "dual_agreement",
                    SelectionRule::Bayesian => "bayesian",
                };
                let kind = match kind {
                    SignatureKind::PassFail => "pass_fail",
                    SignatureKind::Output => "output",
                };
                format!("{rule}/{kind}")
            }
            Method::RandomPassing => "random passing".into(),
            Method::LowestPerplexity => "lowest perplexity".into(),
            Method::SuccessRateAboveHalf => "success rate > 0.5".into(),
            Method::Adaptive(round) => format!("adaptive (rounds of {round})"),
        }
    }
}

/// What one method did on one problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pick {
    /// It picked itself (no fallback).
    pub picked: bool,
    /// The sample, when it names one.
    pub sample: Option<u32>,
    /// The chance its answer (or the fallback's) is correct.
    pub correct: f64,
    /// |C*| for a consensus pick.
    pub cluster_size: Option<u32>,
    /// Samples the method needed drawn.
    pub drawn: u32,
    /// Members of C* that are correct (a consensus pick): where C* mixes right and wrong
    /// members, f(r) decides which becomes the SFT target.
    pub cluster_correct: Option<u32>,
}

/// The stored rows of one problem.
pub struct ProblemRows<'a> {
    pub problem_id: &'a str,
    /// In sample order.
    pub samples: Vec<&'a SampleRecord>,
    pub greedy: Option<&'a SampleRecord>,
    pub tests: Vec<&'a GeneratedTestRow>,
    pub runs: Vec<&'a GeneratedRunRow>,
}

impl ProblemRows<'_> {
    fn correct_share(&self, samples: impl IntoIterator<Item = u32>) -> Option<f64> {
        let picked: Vec<bool> = samples
            .into_iter()
            .filter_map(|i| self.samples.iter().find(|s| s.sample_index == i))
            .map(|s| s.passed)
            .collect();
        (!picked.is_empty())
            .then(|| picked.iter().filter(|&&p| p).count() as f64 / picked.len() as f64)
    }

    fn is_correct(&self, sample: u32) -> bool {
        self.correct_share([sample]) == Some(1.0)
    }

    fn sampled(&self) -> f64 {
        self.correct_share(self.samples.iter().map(|s| s.sample_index))
            .unwrap_or(0.0)
    }

    /// The kept tests' indexes, ascending.
    fn kept(&self) -> Vec<u32> {
        let mut kept: Vec<u32> = self
            .tests
            .iter()
            .filter(|t| t.kept)
            .map(|t| t.test_index)
            .collect();
        kept.sort_unstable();
        kept
    }

    /// The verdict of every sample that ran on the kept tests, under `kind`.
    pub fn verdicts(&self, kind: SignatureKind) -> Vec<CandidateVerdict> {
        let kept: Vec<TestId> = self
            .kept()
            .into_iter()
            .map(|i| TestId(u64::from(i)))
            .collect();
        if kept.is_empty() {
            return Vec::new();
        }
        let mut runs: BTreeMap<u32, Vec<TestRun>> = BTreeMap::new();
        for r in &self.runs {
            runs.entry(r.sample_index).or_default().push(TestRun {
                test_id: TestId(u64::from(r.test_index)),
                outcome: Outcome::from_label(&r.outcome).unwrap_or(Outcome::Error),
                output_hash: r.output_hash,
                decided_in_child: false,
                detail: r.detail.clone(),
            });
        }
        let problem_id = ProblemId(0);
        self.samples
            .iter()
            .filter_map(|s| {
                let code = s.program.clone()?;
                let results = runs.remove(&s.sample_index)?;
                let candidate = Candidate {
                    id: CandidateId(u64::from(s.sample_index)),
                    problem_id,
                    sample_index: s.sample_index,
                    round: 0,
                    code,
                    logprobs: LogprobSummary {
                        tokens: s.completion_tokens,
                        sum_logprob: s.logprob_sum.unwrap_or(f64::NAN),
                    },
                };
                let execution = Execution {
                    problem_id,
                    candidate_id: candidate.id,
                    results,
                    program_error: None,
                };
                CandidateVerdict::new(&candidate, &execution, &kept, kind).ok()
            })
            .collect()
    }

    /// What `method` does here, with the run's `selection` settings.
    pub fn pick(&self, method: Method, selection: &SelectionConfig) -> Pick {
        let drawn = self.samples.len() as u32;
        let declined = Pick {
            picked: false,
            sample: None,
            correct: self.sampled(),
            cluster_size: None,
            drawn,
            cluster_correct: None,
        };
        let one = |sample: u32, cluster_size: Option<u32>| Pick {
            picked: true,
            sample: Some(sample),
            correct: f64::from(u8::from(self.is_correct(sample))),
            cluster_size,
            drawn,
            cluster_correct: None,
        };
        let draw = |pool: Vec<u32>| match self.correct_share(pool) {
            Some(correct) => Pick {
                picked: true,
                sample: None,
                correct,
                cluster_size: None,
                drawn,
                cluster_correct: None,
            },
            None => declined,
        };
        let consensus_pick =
            |config: &ConsensusConfig, verdicts: &[CandidateVerdict]| match select_batch(
                verdicts, config,
            )
            .into_values()
            .next()
            {
                Some(s) => {
                    let members = verdicts
                        .iter()
                        .filter(|v| votes(v, config) && v.signature.digest() == s.cluster);
                    let correct = members
                        .filter(|v| self.is_correct(v.candidate_id.0 as u32))
                        .count() as u32;
                    Pick {
                        cluster_correct: Some(correct),
                        ..one(s.candidate_id.0 as u32, Some(s.cluster_size))
                    }
                }
                None => declined,
            };
        match method {
            Method::Greedy => Pick {
                picked: self.greedy.is_some(),
                correct: f64::from(u8::from(self.greedy.is_some_and(|g| g.passed))),
                drawn: 0,
                ..declined
            },
            Method::Sampled => Pick {
                picked: true,
                drawn: 1,
                ..declined
            },
            Method::Oracle => Pick {
                picked: true,
                correct: f64::from(u8::from(self.samples.iter().any(|s| s.passed))),
                ..declined
            },
            Method::Consensus(rule, kind) => {
                let config = consensus(selection, rule, kind);
                consensus_pick(&config, &self.verdicts(kind))
            }
            Method::Adaptive(round) => {
                let config = selection.consensus();
                let verdicts = self.verdicts(config.signature);
                let drawn = self.adaptive_draws(&verdicts, &config, round);
                let first: Vec<CandidateVerdict> = verdicts
                    .into_iter()
                    .filter(|v| (v.candidate_id.0 as u32) < drawn)
                    .collect();
                Pick {
                    drawn,
                    ..consensus_pick(&config, &first)
                }
            }
            Method::RandomPassing => draw(
                self.verdicts(SignatureKind::PassFail)
                    .iter()
                    .filter(|v| v.passed == v.tests)
                    .map(|v| v.candidate_id.0 as u32)
                    .collect(),
            ),
            Method::SuccessRateAboveHalf => draw(
                self.verdicts(SignatureKind::PassFail)
                    .iter()
                    .filter(|v| 2 * v.passed > v.tests)
                    .map(|v| v.candidate_id.0 as u32)
                    .collect(),
            ),
            Method::LowestPerplexity => self
                .samples
                .iter()
                .filter(|s| s.program.is_some())
                .min_by_key(|s| {
                    let logprobs = LogprobSummary {
                        tokens: s.completion_tokens,
                        sum_logprob: s.logprob_sum.unwrap_or(f64::NAN),
                    };
                    (logprobs.perplexity(), s.sample_index)
                })
                .map_or(declined, |s| one(s.sample_index, None)),
        }
    }

    /// How many samples an adaptive run in rounds of `round` draws before the controller stops
    /// (replayed over the first samples' `verdicts`).
    fn adaptive_draws(
        &self,
        verdicts: &[CandidateVerdict],
        config: &ConsensusConfig,
        round: u32,
    ) -> u32 {
        let budget = self.samples.len() as u32;
        let controller = AdaptiveSampling {
            budget,
            round_size: round.max(1),
            tau: config.tau,
            rule: config.rule,
            risk: None,
        };
        let tests = self.kept().len() as u32;
        let mut drawn = round.max(1).min(budget);
        if tests == 0 {
            // Nothing can vote: the first round is all a run draws before it knows.
            return drawn;
        }
        loop {
            let mut clusters: BTreeMap<&Signature, ClusterStanding> = BTreeMap::new();
            for v in verdicts
                .iter()
                .filter(|v| (v.candidate_id.0 as u32) < drawn && votes(v, config))
            {
                clusters
                    .entry(&v.signature)
                    .or_insert(ClusterStanding {
                        size: 0,
                        passed: v.signature.passed(),
                    })
                    .size += 1;
            }
            let mut standings: Vec<ClusterStanding> = clusters.into_values().collect();
            standings.sort_unstable_by(|a, b| b.cmp(a));
            match controller.decide(drawn, tests, &standings) {
                Decision::Sample(more) => drawn = (drawn + more).min(budget),
                Decision::Stop(_) => return drawn,
            }
        }
    }

    /// Why the pipeline filter's pick is right or wrong.
    pub fn diagnose(&self, pick: &Pick, selection: &SelectionConfig) -> Diagnosis {
        if pick.picked && pick.correct == 1.0 {
            return Diagnosis::Right;
        }
        if !self.samples.iter().any(|s| s.passed) {
            return Diagnosis::NoCorrectSample;
        }
        if self.kept().is_empty() {
            return Diagnosis::NoTests;
        }
        let config = selection.consensus();
        let correct_voted = self
            .verdicts(config.signature)
            .iter()
            .any(|v| votes(v, &config) && self.is_correct(v.candidate_id.0 as u32));
        match (pick.picked, correct_voted) {
            (true, true) => Diagnosis::WrongClusterWon,
            (true, false) => Diagnosis::CorrectDidNotVote,
            (false, _) => Diagnosis::NoEligibleCluster,
        }
    }
}

/// The consensus settings of `method` under the run's ρ, τ and priors.
fn consensus(
    selection: &SelectionConfig,
    rule: SelectionRule,
    kind: SignatureKind,
) -> ConsensusConfig {
    ConsensusConfig {
        rule,
        signature: kind,
        ..selection.consensus()
    }
}

/// Why the pipeline filter's pick on a problem is what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diagnosis {
    /// It picked a correct sample.
    Right,
    /// No sample is correct: nothing could be picked right.
    NoCorrectSample,
    /// No generated test survived: nothing to vote on.
    NoTests,
    /// Correct samples exist but no cluster was eligible or trusted (ρ, τ, all-fail, min_tests,
    /// min_pass_rate).
    NoEligibleCluster,
    /// A correct sample voted, but a wrong cluster won.
    WrongClusterWon,
    /// A wrong cluster won and no correct sample voted (the generated tests fail or crash it:
    /// wrong expected values, as a rule).
    CorrectDidNotVote,
}

impl Diagnosis {
    pub fn label(self) -> &'static str {
        match self {
            Diagnosis::Right => "right",
            Diagnosis::NoCorrectSample => "no correct sample",
            Diagnosis::NoTests => "no kept tests",
            Diagnosis::NoEligibleCluster => "no eligible cluster",
            Diagnosis::WrongClusterWon => "wrong cluster won",
            Diagnosis::CorrectDidNotVote => "correct samples did not vote",
        }
    }
}

/// One method's figures over the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodFigures {
    pub method: String,
    /// The pipeline's own filter (`[selection]`'s selector and signature).
    pub pipeline: bool,
    pub pass_at_1: f64,
    pub coverage: f64,
    /// None when it never picked.
    pub precision: Option<f64>,
    pub picks: usize,
    /// Samples it needed drawn, over all problems (the greedy answer counts none).
    pub samples_drawn: u64,
}

/// The rerank run's figures, written to `rerank.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankSummary {
    /// The samples' own summary (pass@k over the sampled completions).
    pub samples: Summary,
    pub selection: SelectionConfig,
    /// Problems scored (those with every row recorded).
    pub problems: usize,
    pub tests_generated: usize,
    pub tests_kept: usize,
    /// Kept tests the canonical solutions pass, and how many kept tests had one to check.
    pub tests_right: usize,
    pub tests_with_canonical: usize,
    pub methods: Vec<MethodFigures>,
    /// Diagnosis of the pipeline filter's pick → problems.
    pub diagnoses: BTreeMap<String, usize>,
    /// The pipeline filter's picks whose C* mixes correct and wrong members (there f(r) decides
    /// whether the SFT target is right).
    pub mixed_clusters: usize,
}

/// The scores of `problems`: the run's figures and the `problems/` and `methods/` rows.
pub fn score(
    problems: &[ProblemRows<'_>],
    selection: &SelectionConfig,
    adaptive_round: u32,
    samples: Summary,
) -> (RerankSummary, Vec<ProblemScoreRow>, Vec<MethodScoreRow>) {
    let methods = Method::all(adaptive_round);
    let pipeline = Method::Consensus(selection.selector.rule(), selection.signature.kind());
    let mut method_rows = Vec::new();
    let mut problem_rows = Vec::new();
    let mut totals: Vec<(f64, usize, f64, u64)> = vec![(0.0, 0, 0.0, 0); methods.len()];
    let mut diagnoses = BTreeMap::new();
    let mut mixed_clusters = 0;
    let (mut generated, mut kept, mut right, mut with_canonical) = (0, 0, 0, 0);
    for p in problems {
        for (m, method) in methods.iter().enumerate() {
            let pick = p.pick(*method, selection);
            totals[m].0 += pick.correct;
            totals[m].3 += u64::from(pick.drawn);
            if pick.picked {
                totals[m].1 += 1;
                totals[m].2 += pick.correct;
            }
            method_rows.push(MethodScoreRow {
                problem_id: p.problem_id.to_string(),
                method: method.name(),
                picked: pick.picked,
                sample_index: pick.sample,
                correct: pick.correct,
            });
        }
        let pick = p.pick(pipeline, selection);
        let diagnosis = p.diagnose(&pick, selection);
        if let (Some(size), Some(correct)) = (pick.cluster_size, pick.cluster_correct)
            && correct > 0
            && correct < size
        {
            mixed_clusters += 1;
        }
        *diagnoses.entry(diagnosis.label().to_string()).or_insert(0) += 1;
        let kept_tests: Vec<_> = p.tests.iter().filter(|t| t.kept).collect();
        let checked: Vec<_> = kept_tests
            .iter()
            .filter_map(|t| t.canonical.as_deref())
            .collect();
        let tests_right = checked.iter().filter(|c| **c == "pass").count();
        generated += p.tests.len();
        kept += kept_tests.len();
        right += tests_right;
        with_canonical += checked.len();
        problem_rows.push(ProblemScoreRow {
            problem_id: p.problem_id.to_string(),
            tests_generated: p.tests.len() as u32,
            tests_kept: kept_tests.len() as u32,
            tests_right: (!checked.is_empty()).then_some(tests_right as u32),
            samples: p.samples.len() as u32,
            samples_with_program: p.samples.iter().filter(|s| s.program.is_some()).count() as u32,
            samples_correct: p.samples.iter().filter(|s| s.passed).count() as u32,
            greedy_correct: p.greedy.is_some_and(|g| g.passed),
            pick: pick.sample,
            pick_correct: pick.picked && pick.correct == 1.0,
            pick_cluster_size: pick.cluster_size,
            diagnosis: diagnosis.label().to_string(),
        });
    }
    let count = problems.len().max(1) as f64;
    let figures = methods
        .iter()
        .zip(totals)
        .map(
            |(method, (correct, picks, picked_correct, drawn))| MethodFigures {
                method: method.name(),
                pipeline: *method == pipeline,
                pass_at_1: correct / count,
                coverage: picks as f64 / count,
                precision: (picks > 0).then(|| picked_correct / picks as f64),
                picks,
                samples_drawn: drawn,
            },
        )
        .collect();
    let summary = RerankSummary {
        samples,
        selection: selection.clone(),
        problems: problems.len(),
        tests_generated: generated,
        tests_kept: kept,
        tests_right: right,
        tests_with_canonical: with_canonical,
        methods: figures,
        diagnoses,
        mixed_clusters,
    };
    (summary, problem_rows, method_rows)
}

impl RerankSummary {
    /// The table printed at the end of a run: the samples' summary, then one line per method.
    pub fn table(&self) -> String {
        let mut t = self.samples.table();
        let s = &self.selection;
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "generated tests: {} written, {} kept, {} of {} checked right by the canonical solution",
            self.tests_generated, self.tests_kept, self.tests_right, self.tests_with_canonical
        );
        let _ = writeln!(
            t,
            "selection: rho {}, tau {}; * = the pipeline's filter ({:?}, {:?})",
            s.rho, s.tau, s.selector, s.signature
        );
        let _ = writeln!(
            t,
            "{:<26} {:>8} {:>9} {:>10} {:>6} {:>8}",
            "method", "pass@1", "coverage", "precision", "picks", "samples"
        );
        for m in &self.methods {
            let name = if m.pipeline {
                format!("{} *", m.method)
            } else {
                m.method.clone()
            };
            let precision = m
                .precision
                .map_or("-".to_string(), |p| format!("{:.2}%", 100.0 * p));
            let _ = writeln!(
                t,
                "{name:<26} {:>7.2}% {:>8.2}% {precision:>10} {:>6} {:>8}",
                100.0 * m.pass_at_1,
                100.0 * m.coverage,
                m.picks,
                m.samples_drawn
            );
        }
        let diagnoses: Vec<String> = self
            .diagnoses
            .iter()
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        let _ = write!(
            t,
            "pipeline picks: {}; clusters mixing right and wrong members: {}",
            diagnoses.join(", "),
            self.mixed_clusters
        );
        t
    }
}
