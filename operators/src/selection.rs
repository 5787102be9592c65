//! The consensus selection rule, its configuration, the [`Selection`] record, and a plain-Rust
//! batch implementation ([`select_batch`]) that serves as the oracle for the incremental dataflow
//! and as the reranker for benchmark evaluation.
//!
//! The rule (the paper's §2.3, with our documented choices where it is silent), per problem:
//!
//! 1. R′ = {r : e(r) ≥ ρ}; candidates whose signature is all-fail are dropped too.
//! 2. Clusters are the groups of R′ with equal signatures; only clusters with |C| ≥ τ are eligible.
//! 3. C* is the best eligible cluster under [`SelectionRule`]:
//!    - `Consensus` (the paper's): largest |C|; ties → more tests passed by the cluster's signature;
//!      then the better *best member* (step 4's order).
//!    - `DualAgreement` (CodeT): largest |tests passed| × √|C| (compared exactly as
//!      passed² · |C| in integers); ties → larger |C|; then the better best member.
//!    - `Bayesian` (after B4): the greatest posterior that C is the set of correct candidates,
//!      over the passing matrix of the problem's voting candidates ([`crate::bayes`]; pass/fail
//!      signatures only); ties → larger |C|; then the better best member.
//!
//!    Step 4's order ends in the candidate id and a candidate belongs to one cluster, so two
//!    clusters never tie completely (the implementations still fall back to the smaller signature).
//! 4. r* is the member of C* with the greatest e(r) (compared as exact fractions), then the lowest
//!    f(r) (perplexity, total order, NaN counts as +∞), then the smallest candidate id.
//! 5. The selection is kept only if the problem has at least `min_tests` tests and C* passes at
//!    least `min_pass_rate` of them ([`Selection::is_trusted`]); otherwise the problem selects
//!    nothing (a weak winner is not replaced by the runner-up).
//!
//! Every tie-break is on content, never on arrival order, so the selection is a function of the
//! set of verdicts alone: the same for any interleaving, any round structure and any number of
//! timely workers. A problem with no eligible cluster has no selection.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bayes::{BayesPriors, Hypothesis};
use crate::records::{CandidateId, Perplexity, ProblemId};
use crate::signature::{CandidateVerdict, Signature, SignatureKind};

/// How C* is chosen among the eligible clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionRule {
    /// The paper's rule: the largest cluster.
    #[default]
    Consensus,
    /// CodeT's dual agreement: the cluster maximising |tests passed| × √|C|.
    DualAgreement,
    /// After B4: the cluster with the greatest posterior of being the correct one.
    Bayesian,
}

/// Selection settings (ρ, τ, rule, signature kind).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsensusConfig {
    /// ρ: the minimum execution rate e(r) for a candidate to vote (paper: 0.8).
    pub rho: f64,
    /// τ: the minimum cluster size for a cluster to be selected (paper: open; default 2).
    pub tau: u32,
    /// How C* is chosen.
    pub rule: SelectionRule,
    /// Which signature candidates are clustered by (used when building [`CandidateVerdict`]s).
    pub signature: SignatureKind,
    /// The priors of [`SelectionRule::Bayesian`] (unused by the other rules).
    pub priors: BayesPriors,
    /// A problem with fewer tests than this selects nothing: too few tests cannot tell a right
    /// cluster from a wrong one.
    pub min_tests: u32,
    /// C*'s signature must pass at least this share of the tests, or the problem selects
    /// nothing: a winning cluster that passes almost nothing agrees on failing.
    pub min_pass_rate: f64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            rho: 0.8,
            tau: 2,
            rule: SelectionRule::Consensus,
            signature: SignatureKind::PassFail,
            priors: BayesPriors::default(),
            min_tests: 1,
            min_pass_rate: 0.0,
        }
    }
}

/// An invalid [`ConsensusConfig`].
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SelectionConfigError {
    /// ρ outside [0, 1].
    #[error(
        "selection.rho = {0} is outside [0, 1]; it is the minimum fraction of tests a candidate must execute"
    )]
    Rho(f64),
    /// τ = 0.
    #[error("selection.tau = 0; the minimum cluster size must be at least 1")]
    Tau,
    /// The Bayesian rule needs pass/fail signatures.
    #[error(
        "selection.selector = \"bayesian\" needs signature = \"pass_fail\": it reasons over the passing matrix"
    )]
    BayesianNeedsPassFail,
    /// A prior outside (0, 1).
    #[error("selection.priors.{0} = {1} must lie strictly between 0 and 1")]
    Prior(&'static str, f64),
    /// min_pass_rate outside [0, 1].
    #[error("selection.min_pass_rate = {0} is outside [0, 1]")]
    MinPassRate(f64),
}

impl ConsensusConfig {
    /// Checks ρ ∈ [0, 1] and τ ≥ 1.
    pub fn validate(&self) -> Result<(), SelectionConfigError> {
        if !(0.0..=1.0).contains(&self.rho) {
            return Err(SelectionConfigError::Rho(self.rho));
        }
        if self.tau == 0 {
            return Err(SelectionConfigError::Tau);
        }
        if !(0.0..=1.0).contains(&self.min_pass_rate) {
            return Err(SelectionConfigError::MinPassRate(self.min_pass_rate));
        }
        if self.rule == SelectionRule::Bayesian {
            if self.signature != SignatureKind::PassFail {
                return Err(SelectionConfigError::BayesianNeedsPassFail);
            }
            if let Some((name, value)) = self.priors.out_of_range() {
                return Err(SelectionConfigError::Prior(name, value));
            }
        }
        Ok(())
    }
}

/// The solution selected for a problem: r* and a description of its cluster C*.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Selection {
    /// The problem.
    pub problem_id: ProblemId,
    /// r*.
    pub candidate_id: CandidateId,
    /// Digest of C*'s signature ([`Signature::digest`]).
    pub cluster: u64,
    /// |C*|.
    pub cluster_size: u32,
    /// Tests r* executed.
    pub executed: u32,
    /// Tests of the problem.
    pub tests: u32,
    /// Tests r* (and every member of C*) passed.
    pub passed: u32,
    /// f(r*).
    pub perplexity: Perplexity,
}

impl Selection {
    /// The selection of `member` out of a cluster of `cluster_size`.
    pub fn of(member: &CandidateVerdict, cluster_size: u32) -> Self {
        Self {
            problem_id: member.problem_id,
            candidate_id: member.candidate_id,
            cluster: member.signature.digest(),
            cluster_size,
            executed: member.executed,
            tests: member.tests,
            passed: member.passed,
            perplexity: member.perplexity,
        }
    }

    /// Whether the selection may be used: its problem has at least `min_tests` tests and C*
    /// passes at least `min_pass_rate` of them (with the same 1e-9 slack as ρ).
    pub fn is_trusted(&self, config: &ConsensusConfig) -> bool {
        self.tests >= config.min_tests
            && f64::from(self.passed) >= config.min_pass_rate * f64::from(self.tests) - 1e-9
    }
}

/// Member order of step 4: `Greater` means `a` is the better representative.
pub fn cmp_members(a: &CandidateVerdict, b: &CandidateVerdict) -> Ordering {
    a.cmp_execution_rate(b)
        .then_with(|| b.perplexity.cmp(&a.perplexity))
        .then_with(|| b.candidate_id.cmp(&a.candidate_id))
}

/// What the rules compare clusters by, before their best members.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ClusterScore {
    /// |C|.
    pub size: u32,
    /// Tests the cluster's signature passes.
    pub passed: u32,
    /// Log-posterior under [`SelectionRule::Bayesian`] (0 under the other rules).
    pub posterior: f64,
}

impl ClusterScore {
    /// The score of the cluster with `signature` and `size` members among all voting clusters of
    /// its problem (`all`, as (signature, size), the cluster itself included).
    pub(crate) fn of<'a>(
        signature: &Signature,
        size: u32,
        all: impl IntoIterator<Item = (&'a Signature, u32)>,
        config: &ConsensusConfig,
    ) -> Self {
        let posterior = match config.rule {
            SelectionRule::Bayesian => Hypothesis::of(signature, size, all)
                .map_or(f64::NEG_INFINITY, |h| h.log_posterior(&config.priors)),
            SelectionRule::Consensus | SelectionRule::DualAgreement => 0.0,
        };
        ClusterScore {
            size,
            passed: signature.passed(),
            posterior,
        }
    }
}

/// Step 3's primary order under `rule`: `Greater` means `a` is the better cluster (before the
/// best-member tie-break).
pub(crate) fn cmp_clusters(rule: SelectionRule, a: &ClusterScore, b: &ClusterScore) -> Ordering {
    let (size_a, size_b) = (u64::from(a.size), u64::from(b.size));
    let (passed_a, passed_b) = (u64::from(a.passed), u64::from(b.passed));
    match rule {
        SelectionRule::Consensus => size_a.cmp(&size_b).then(passed_a.cmp(&passed_b)),
        SelectionRule::DualAgreement => (passed_a * passed_a * size_a)
            .cmp(&(passed_b * passed_b * size_b))
            .then(size_a.cmp(&size_b)),
        SelectionRule::Bayesian => a
            .posterior
            .total_cmp(&b.posterior)
            .then(size_a.cmp(&size_b)),
    }
}

/// Whether a verdict votes at all: e(r) ≥ ρ and not all-fail.
pub fn votes(verdict: &CandidateVerdict, config: &ConsensusConfig) -> bool {
    verdict.meets_rho(config.rho) && !verdict.signature.is_all_fail()
}

/// Batch selection over a set of verdicts (any number of problems, any order): the reference
/// implementation of the rule in the module docs.
pub fn select_batch(
    verdicts: &[CandidateVerdict],
    config: &ConsensusConfig,
) -> BTreeMap<ProblemId, Selection> {
    let mut clusters: BTreeMap<(ProblemId, &Signature), Vec<&CandidateVerdict>> = BTreeMap::new();
    for verdict in verdicts.iter().filter(|v| votes(v, config)) {
        clusters
            .entry((verdict.problem_id, &verdict.signature))
            .or_default()
            .push(verdict);
    }
    let mut per_problem: BTreeMap<ProblemId, Vec<(&Signature, Vec<&CandidateVerdict>)>> =
        BTreeMap::new();
    for ((problem, signature), members) in clusters {
        per_problem
            .entry(problem)
            .or_default()
            .push((signature, members));
    }
    let mut selections = BTreeMap::new();
    for (problem, voting) in per_problem {
        // Only the Bayesian rule weighs the other clusters.
        let all: Vec<(&Signature, u32)> = if config.rule == SelectionRule::Bayesian {
            voting
                .iter()
                .map(|(signature, members)| (*signature, members.len() as u32))
                .collect()
        } else {
            Vec::new()
        };
        let best = voting
            .into_iter()
            .filter(|(_, members)| members.len() >= config.tau as usize)
            .map(|(signature, members)| {
                let best_member = members
                    .iter()
                    .copied()
                    .max_by(|a, b| cmp_members(a, b))
                    .expect("a cluster has members");
                let score =
                    ClusterScore::of(signature, members.len() as u32, all.iter().copied(), config);
                (signature, score, best_member)
            })
            .max_by(|a, b| {
                cmp_clusters(config.rule, &a.1, &b.1)
                    .then_with(|| cmp_members(a.2, b.2))
                    .then_with(|| b.0.cmp(a.0))
            });
        if let Some((_, score, member)) = best {
            let selection = Selection::of(member, score.size);
            if selection.is_trusted(config) {
                selections.insert(problem, selection);
            }
        }
    }
    selections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(problem: u64, id: u64, bits: u64, executed: u32, ppl: f64) -> CandidateVerdict {
        let tests = 8;
        CandidateVerdict {
            problem_id: ProblemId(problem),
            candidate_id: CandidateId(id),
            signature: Signature::PassFail {
                tests,
                bits: vec![bits],
            },
            executed,
            tests,
            passed: bits.count_ones(),
            perplexity: Perplexity::new(ppl),
        }
    }

    #[test]
    fn largest_cluster_then_best_execution_then_lowest_perplexity() {
        let vs = vec![
            verdict(1, 10, 0b1111, 8, 1.5),
            verdict(1, 11, 0b1111, 8, 1.2), // same cluster, more fluent: r*
            verdict(1, 12, 0b1111, 7, 1.0), // most fluent but executes less
            verdict(1, 20, 0b0011, 8, 1.0),
            verdict(1, 21, 0b0011, 8, 1.0),
        ];
        let s = select_batch(
            &vs,
            &ConsensusConfig {
                rho: 0.8,
                tau: 2,
                ..Default::default()
            },
        );
        let sel = &s[&ProblemId(1)];
        assert_eq!(
            (sel.candidate_id, sel.cluster_size, sel.passed),
            (CandidateId(11), 3, 4)
        );
    }

    #[test]
    fn a_weak_winner_or_too_few_tests_select_nothing() {
        let vs = vec![
            verdict(1, 10, 0b0001, 8, 1.0),
            verdict(1, 11, 0b0001, 8, 1.0),
            verdict(1, 12, 0b0001, 8, 1.0),
            verdict(1, 20, 0b1111, 8, 1.0),
            verdict(1, 21, 0b1111, 8, 1.0),
        ];
        let base = ConsensusConfig {
            rho: 0.8,
            tau: 2,
            ..Default::default()
        };
        assert_eq!(select_batch(&vs, &base)[&ProblemId(1)].passed, 1);
        let weak = ConsensusConfig {
            min_pass_rate: 0.5,
            ..base
        };
        assert!(
            select_batch(&vs, &weak).is_empty(),
            "the winner passes 1 of 8: nothing, not the runner-up"
        );
        let exact = ConsensusConfig {
            min_pass_rate: 0.125,
            ..base
        };
        assert_eq!(select_batch(&vs, &exact).len(), 1, "1 of 8 meets 0.125");
        let few = ConsensusConfig {
            min_tests: 9,
            ..base
        };
        assert!(select_batch(&vs, &few).is_empty());
        assert_eq!(
            ConsensusConfig {
                min_pass_rate: 1.5,
                ..base
            }
            .validate(),
            Err(SelectionConfigError::MinPassRate(1.5))
        );
    }

    #[test]
    fn rho_tau_and_all_fail_filters() {
        let config = ConsensusConfig {
            rho: 0.8,
            tau: 2,
            ..Default::default()
        };
        // All-fail cluster of 5 never wins; a cluster of 2 below ρ does not vote.
        let mut vs: Vec<_> = (0..5).map(|i| verdict(1, i, 0, 8, 1.0)).collect();
        vs.push(verdict(1, 10, 0b1, 6, 1.0));
        vs.push(verdict(1, 11, 0b1, 6, 1.0));
        assert!(select_batch(&vs, &config).is_empty());
        // Lower ρ lets them vote.
        let low = ConsensusConfig {
            rho: 0.75,
            ..config
        };
        assert_eq!(
            select_batch(&vs, &low)[&ProblemId(1)].candidate_id,
            CandidateId(10)
        );
        // τ above the cluster size: nothing.
        let strict = ConsensusConfig {
            rho: 0.75,
            tau: 3,
            ..config
        };
        assert!(select_batch(&vs, &strict).is_empty());
    }

    #[test]
    fn dual_agreement_prefers_more_passes_over_size() {
        // Cluster A: 4 members passing 1 test (score 1·4 = 4); cluster B: 2 members passing 3
        // tests (score 9·2 = 18).
        let mut vs: Vec<_> = (0..4).map(|i| verdict(1, i, 0b1, 8, 1.0)).collect();
        vs.push(verdict(1, 10, 0b111, 8, 2.0));
        vs.push(verdict(1, 11, 0b111, 8, 3.0));
        let consensus = ConsensusConfig::default();
        assert_eq!(select_batch(&vs, &consensus)[&ProblemId(1)].cluster_size, 4);
        let dual = ConsensusConfig {
            rule: SelectionRule::DualAgreement,
            ..consensus
        };
        let sel = &select_batch(&vs, &dual)[&ProblemId(1)];
        assert_eq!((sel.candidate_id, sel.cluster_size), (CandidateId(10), 2));
    }

    #[test]
    fn bayesian_prefers_the_cluster_the_tests_support_over_the_larger_one() {
        // A: 3 members passing tests {0, 1} of 8; B: 2 members passing all 8. The largest
        // cluster is A. Under "A is correct" B's 2 × 2 passes on A's tests are wrong code
        // passing right tests (p) and its 2 × 6 passes elsewhere are wrong code passing wrong
        // tests (q); under "B is correct" A's 3 × 2 passes are p and its 3 × 6 fails are 1 − p.
        let mut vs: Vec<_> = (0..3).map(|i| verdict(1, i, 0b11, 8, 1.0)).collect();
        vs.push(verdict(1, 10, 0xff, 8, 2.0));
        vs.push(verdict(1, 11, 0xff, 8, 1.5));
        let consensus = ConsensusConfig::default();
        assert_eq!(select_batch(&vs, &consensus)[&ProblemId(1)].cluster_size, 3);
        let bayes = ConsensusConfig {
            rule: SelectionRule::Bayesian,
            ..consensus
        };
        let priors = bayes.priors;
        let (lx, ly) = (priors.code_correct.ln(), priors.test_correct.ln());
        let (nx, ny) = (
            (1.0 - priors.code_correct).ln(),
            (1.0 - priors.test_correct).ln(),
        );
        let (p, np) = (
            priors.wrong_code_passes_right_test.ln(),
            (1.0 - priors.wrong_code_passes_right_test).ln(),
        );
        let (q, nq) = (
            priors.wrong_code_passes_wrong_test.ln(),
            (1.0 - priors.wrong_code_passes_wrong_test).ln(),
        );
        let a =
            3.0 * lx + 2.0 * nx + 2.0 * ly + 6.0 * ny + 4.0 * p + 0.0 * np + 12.0 * q + 0.0 * nq;
        let b = 2.0 * lx + 3.0 * nx + 8.0 * ly + 6.0 * p + 18.0 * np;
        assert!(b > a, "hand-computed posteriors: A {a}, B {b}");
        let sel = &select_batch(&vs, &bayes)[&ProblemId(1)];
        assert_eq!((sel.candidate_id, sel.cluster_size), (CandidateId(11), 2));
    }

    #[test]
    fn bayesian_needs_pass_fail_signatures_and_open_priors() {
        let bayes = ConsensusConfig {
            rule: SelectionRule::Bayesian,
            ..Default::default()
        };
        assert!(bayes.validate().is_ok());
        let output = ConsensusConfig {
            signature: SignatureKind::Output,
            ..bayes
        };
        assert_eq!(
            output.validate(),
            Err(SelectionConfigError::BayesianNeedsPassFail)
        );
        let certain = ConsensusConfig {
            priors: BayesPriors {
                code_correct: 0.0,
                ..Default::default()
            },
            ..bayes
        };
        assert_eq!(
            certain.validate(),
            Err(SelectionConfigError::Prior("code_correct", 0.0))
        );
    }

    #[test]
    fn ties_are_broken_on_content_not_order() {
        // Two clusters of equal size and equal pass count: the better best member decides, and the
        // input order never matters.
        let vs = vec![
            verdict(1, 1, 0b01, 8, 1.0),
            verdict(1, 2, 0b01, 8, 1.0),
            verdict(1, 3, 0b10, 8, 0.9),
            verdict(1, 4, 0b10, 8, 1.0),
        ];
        let config = ConsensusConfig::default();
        let forward = select_batch(&vs, &config);
        let mut reversed = vs.clone();
        reversed.reverse();
        assert_eq!(forward, select_batch(&reversed, &config));
        assert_eq!(forward[&ProblemId(1)].candidate_id, CandidateId(3));
        let same_members = vec![
            verdict(1, 1, 0b10, 8, 1.0),
            verdict(1, 2, 0b10, 8, 1.0),
            verdict(1, 3, 0b01, 8, 1.0),
            verdict(1, 4, 0b01, 8, 1.0),
        ];
        // Equal sizes, passes, e and f: the cluster whose best member has the smaller id wins.
        assert_eq!(
            select_batch(&same_members, &config)[&ProblemId(1)].candidate_id,
            CandidateId(1)
        );
        // Equal e and f inside the cluster: the smaller candidate id.
        assert_eq!(
            select_batch(&same_members[..2], &config)[&ProblemId(1)].candidate_id,
            CandidateId(1)
        );
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(ConsensusConfig::default().validate().is_ok());
        let err = ConsensusConfig {
            rho: 1.5,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("selection.rho = 1.5"));
        assert_eq!(
            ConsensusConfig {
                tau: 0,
                ..Default::default()
            }
            .validate(),
            Err(SelectionConfigError::Tau)
        );
    }
}
