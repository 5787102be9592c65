//! SignatureGrouper + Selector: the operators crate's differential consensus over the verdicts
//! (candidates with e(r) ≥ ρ vote, the all-fail signature is excluded, C* is the largest cluster
//! with |C| ≥ τ, r* maximises e(r) then minimises perplexity), then the selected candidate's code
//! and its problem's solution prompt joined to each selection.
//!
//! Contract: emits the collection of `(selection, prompt, code)`, at most one per problem, as it
//! changes round by round; collects the final clusters (`clusters/`, [`cluster_rows`]) on the
//! worker that owns each problem, and a [`VoteTally`] per problem from which [`unselected`]
//! files one `selection` rejection for every ready problem that selects nothing, saying why.
//! [`selection_rows`] writes `selections/`.

use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    Candidate, CandidateId, CandidateVerdict, ClusterKey, ConsensusConfig, ProblemId, RecordStage,
    RejectReason, Rejection, Selection, as_insertions, consensus,
};

use super::test_check::Ready;
use crate::config::PipelineConfig;
use crate::pipeline::artifacts::{ClusterRow, SelectionRow};
use crate::pipeline::context::Collector;

/// A selection with its SFT prompt and the selected code.
pub type Selected = (Selection, String, String);

/// The operators crate's selection settings for the pipeline's `[selection]`.
pub fn selection_config(config: &PipelineConfig) -> ConsensusConfig {
    config.selection.consensus()
}

/// The `clusters/` rows: every final cluster with its members (from the problems' `votes`),
/// marked when its problem's selection came from it.
pub fn cluster_rows(
    clusters: &[(ClusterKey, u32)],
    selections: &[Selected],
    votes: &BTreeMap<ProblemId, VoteTally>,
) -> Vec<ClusterRow> {
    let selected: BTreeMap<_, _> = selections
        .iter()
        .map(|(s, _, _)| (s.problem_id, s.cluster))
        .collect();
    clusters
        .iter()
        .map(|(key, size)| ClusterRow {
            problem_id: key.problem_id.0,
            signature: key.signature.digest(),
            size: *size,
            passed: key.signature.passed(),
            selected: selected.get(&key.problem_id) == Some(&key.signature.digest()),
            members: votes
                .get(&key.problem_id)
                .and_then(|tally| tally.members.get(&key.signature.digest()))
                .cloned()
                .unwrap_or_default(),
        })
        .collect()
}

/// The `selections/` rows.
pub fn selection_rows(selections: &[Selected]) -> Vec<SelectionRow> {
    selections
        .iter()
        .map(|(s, _, code)| SelectionRow {
            problem_id: s.problem_id.0,
            candidate_id: s.candidate_id.0,
            cluster: s.cluster,
            cluster_size: s.cluster_size,
            executed: s.executed,
            tests: s.tests,
            passed: s.passed,
            perplexity: s.perplexity.get(),
            code: code.clone(),
        })
        .collect()
}

/// How a problem's candidates fared before clustering (summed over the workers).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoteTally {
    /// Candidates with a complete execution (a verdict).
    pub verdicts: u32,
    /// Of those, the ones that executed at least ρ of the tests.
    pub met_rho: u32,
    /// Of those, the ones that vote (not failing every test).
    pub voters: u32,
    /// The voters by their signature's digest (the clusters' members), each list sorted.
    pub members: BTreeMap<u64, Vec<u64>>,
}

impl VoteTally {
    fn count(&mut self, verdict: &CandidateVerdict, config: &ConsensusConfig) {
        self.verdicts += 1;
        self.met_rho += u32::from(verdict.meets_rho(config.rho));
        if ucoder_operators::selection::votes(verdict, config) {
            self.voters += 1;
            add_member(
                &mut self.members,
                verdict.signature.digest(),
                verdict.candidate_id.0,
            );
        }
    }

    /// Adds another worker's tally of the same problem.
    pub fn merge(&mut self, other: &VoteTally) {
        self.verdicts += other.verdicts;
        self.met_rho += other.met_rho;
        self.voters += other.voters;
        for (&signature, ids) in &other.members {
            for &id in ids {
                add_member(&mut self.members, signature, id);
            }
        }
    }
}

fn add_member(members: &mut BTreeMap<u64, Vec<u64>>, signature: u64, candidate: u64) {
    let ids = members.entry(signature).or_default();
    if let Err(at) = ids.binary_search(&candidate) {
        ids.insert(at, candidate);
    }
}

/// One `selection` rejection for each problem of `ready` ((problem, its test count)) without a
/// selection: no candidate with a complete execution, no voter, no cluster of τ, or a winner
/// that fails `min_tests` / `min_pass_rate`.
pub fn unselected(
    ready: impl IntoIterator<Item = (ProblemId, usize)>,
    tallies: &BTreeMap<ProblemId, VoteTally>,
    clusters: &[(ClusterKey, u32)],
    selections: &[Selected],
    config: &ConsensusConfig,
) -> Vec<Rejection> {
    let selected: std::collections::BTreeSet<ProblemId> =
        selections.iter().map(|(s, _, _)| s.problem_id).collect();
    let mut voting: BTreeMap<ProblemId, Vec<(u32, u32)>> = BTreeMap::new();
    for (key, size) in clusters {
        voting
            .entry(key.problem_id)
            .or_default()
            .push((*size, key.signature.passed()));
    }
    let mut rejections = Vec::new();
    for (problem, tests) in ready {
        if selected.contains(&problem) {
            continue;
        }
        let tally = tallies.get(&problem).cloned().unwrap_or_default();
        let clusters = voting.get(&problem).map_or(&[][..], Vec::as_slice);
        let largest = clusters.iter().map(|(size, _)| *size).max().unwrap_or(0);
        let (reason, detail) = if tally.verdicts == 0 {
            (
                RejectReason::NoCandidates,
                format!(
                    "no candidate has a complete execution on the {tests} tests (see the \
                     candidate and execution rejections)"
                ),
            )
        } else if tally.voters == 0 {
            (
                RejectReason::NoVoters,
                format!(
                    "no candidate votes: {} of {} executed at least ρ = {} of the {tests} tests, \
                     and {} of those failed every test",
                    tally.met_rho,
                    tally.verdicts,
                    config.rho,
                    tally.met_rho - tally.voters
                ),
            )
        } else if largest < config.tau {
            (
                RejectReason::NoConsensus,
                format!(
                    "{} voters in {} clusters, the largest of {largest} < τ = {}",
                    tally.voters,
                    clusters.len(),
                    config.tau
                ),
            )
        } else {
            let best_passed = clusters
                .iter()
                .filter(|(size, _)| *size >= config.tau)
                .map(|(_, passed)| *passed)
                .max()
                .unwrap_or(0);
            (
                RejectReason::UntrustedWinner,
                format!(
                    "the winning cluster fails [selection] min_tests = {} or min_pass_rate = {}: \
                     {tests} tests, and the clusters of at least τ = {} pass at most {best_passed}",
                    config.min_tests, config.min_pass_rate, config.tau
                ),
            )
        };
        rejections.push(Rejection {
            stage: RecordStage::Selection,
            problem_id: Some(problem),
            reason,
            detail,
            raw: String::new(),
            parser_label: None,
        });
    }
    rejections
}

/// The stage on one worker: the selections with their prompts and code.
pub fn wire<'s>(
    verdicts: StreamVec<'s, u64, CandidateVerdict>,
    candidates: StreamVec<'s, u64, (Rc<Ready>, Candidate)>,
    ready: StreamVec<'s, u64, Rc<Ready>>,
    selection: &ConsensusConfig,
    collect: &Collector,
) -> VecCollection<'s, u64, Selected> {
    let tallies = collect.clone();
    let config = *selection;
    let verdicts = verdicts.inspect(move |v: &CandidateVerdict| {
        tallies
            .0
            .borrow_mut()
            .votes
            .entry(v.problem_id)
            .or_default()
            .count(v, &config);
    });
    let out = consensus(as_insertions(verdicts), selection);
    let codes: VecCollection<'s, u64, (CandidateId, String)> =
        as_insertions(candidates.map(|(_, c): (Rc<Ready>, Candidate)| (c.id, c.code)));
    let prompts: VecCollection<'s, u64, (ProblemId, String)> =
        as_insertions(ready.map(|r: Rc<Ready>| (r.draft.problem.id, r.prompt.clone())));
    let collect = collect.clone();
    out.clusters
        .inner
        .sink(Pipeline, "ClusterLog", move |(input, _frontier)| {
            let mut c = collect.0.borrow_mut();
            input.for_each(|_, data| {
                for (cluster, _time, diff) in data.drain(..) {
                    *c.clusters.entry(cluster).or_default() += diff;
                }
            });
        });
    out.selections
        .map(|s| (s.candidate_id, s))
        .join_map(codes, |_, s, code| {
            (s.problem_id, (s.clone(), code.clone()))
        })
        .join_map(prompts, |_, (s, code), prompt| {
            (s.clone(), prompt.clone(), code.clone())
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ucoder_operators::{
        CandidateId, CandidateVerdict, Perplexity, ProblemId, SelectionRule, Signature,
    };

    use super::*;

    fn smoke_toml() -> (std::path::PathBuf, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text)
    }

    fn executed(executed: u32, tests: u32) -> CandidateVerdict {
        CandidateVerdict {
            problem_id: ProblemId(1),
            candidate_id: CandidateId(1),
            signature: Signature::PassFail {
                tests,
                bits: vec![1; (tests as usize).div_ceil(64)],
            },
            executed,
            tests,
            passed: 1,
            perplexity: Perplexity::new(1.0),
        }
    }

    #[test]
    fn rho_from_the_toml_is_exact() {
        // smoke.toml says rho = 0.8: 80 of 100 and 4 of 5 executed tests meet it, 79 do not.
        let (path, text) = smoke_toml();
        assert!(text.contains("rho = 0.8"));
        let config = selection_config(&PipelineConfig::parse(&text, &path).unwrap());
        assert_eq!(config.rho, 0.8);
        assert!(executed(80, 100).meets_rho(config.rho));
        assert!(executed(4, 5).meets_rho(config.rho));
        assert!(!executed(79, 100).meets_rho(config.rho));
    }

    #[test]
    fn the_bayesian_selector_and_its_priors_come_from_the_toml() {
        let (path, text) = smoke_toml();
        let text = text.replace(
            "selector = \"largest\"",
            "selector = \"bayesian\"\npriors = { code_correct = 0.4, test_correct = 0.6, \
             wrong_code_passes_right_test = 0.5, wrong_code_passes_wrong_test = 0.1 }",
        );
        let config = selection_config(&PipelineConfig::parse(&text, &path).unwrap());
        assert_eq!(config.rule, SelectionRule::Bayesian);
        assert_eq!(
            (
                config.priors.code_correct,
                config.priors.wrong_code_passes_wrong_test
            ),
            (0.4, 0.1)
        );
        let output = text.replace("signature = \"pass_fail\"", "signature = \"output\"");
        let err = PipelineConfig::parse(&output, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("selection.selector"), "{err}");
        let certain = text.replace("code_correct = 0.4", "code_correct = 1.0");
        let err = PipelineConfig::parse(&certain, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("code_correct = 1"), "{err}");
    }

    /// Each problem without a selection gets one rejection, with the first rule that stopped it.
    #[test]
    fn every_unselected_problem_is_explained_once() {
        let (path, text) = smoke_toml();
        let mut config = selection_config(&PipelineConfig::parse(&text, &path).unwrap());
        config.tau = 2;
        config.min_pass_rate = 0.5;
        let verdict = |problem: u64, id: u64, bits: u64, executed: u32| CandidateVerdict {
            problem_id: ProblemId(problem),
            candidate_id: CandidateId(id),
            signature: Signature::PassFail {
                tests: 4,
                bits: vec![bits],
            },
            executed,
            tests: 4,
            passed: bits.count_ones(),
            perplexity: Perplexity::new(1.0),
        };
        let verdicts = [
            verdict(2, 1, 0b0000, 4), // all-fail: no voter
            verdict(2, 2, 0b1111, 1), // below ρ
            verdict(3, 3, 0b1111, 4), // two clusters of one: no consensus
            verdict(3, 4, 0b0111, 4),
            verdict(4, 5, 0b0001, 4), // a cluster of two passing 1 of 4: untrusted
            verdict(4, 6, 0b0001, 4),
            verdict(5, 7, 0b1111, 4), // selected
            verdict(5, 8, 0b1111, 4),
        ];
        let mut tallies: BTreeMap<ProblemId, VoteTally> = BTreeMap::new();
        let mut clusters: BTreeMap<ClusterKey, u32> = BTreeMap::new();
        for v in &verdicts {
            tallies.entry(v.problem_id).or_default().count(v, &config);
            if ucoder_operators::selection::votes(v, &config) {
                let key = ClusterKey {
                    problem_id: v.problem_id,
                    signature: v.signature.clone(),
                };
                *clusters.entry(key).or_default() += 1;
            }
        }
        let clusters: Vec<(ClusterKey, u32)> = clusters.into_iter().collect();
        let selections: Vec<Selected> = ucoder_operators::select_batch(&verdicts, &config)
            .into_values()
            .map(|s| (s, String::new(), String::new()))
            .collect();
        assert_eq!(selections.len(), 1);
        let ready = (1..=5).map(|p| (ProblemId(p), 4));
        let rejections = unselected(ready, &tallies, &clusters, &selections, &config);
        let reasons: Vec<(u64, RejectReason)> = rejections
            .iter()
            .map(|r| (r.problem_id.unwrap().0, r.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (1, RejectReason::NoCandidates),
                (2, RejectReason::NoVoters),
                (3, RejectReason::NoConsensus),
                (4, RejectReason::UntrustedWinner),
            ]
        );
        assert!(rejections.iter().all(|r| r.stage == RecordStage::Selection));
        assert!(
            rejections[1].detail.contains("1 of 2 executed at least"),
            "{}",
            rejections[1].detail
        );
    }
}
