//! The SignatureGrouper and the Selector as one incremental differential dataflow.
//!
//! Input: a collection of [`CandidateVerdict`]s (one per executed candidate; insertions as executions
//! arrive, retractions if a candidate is withdrawn). Output ([`Consensus`]):
//!
//! - `clusters`: ((problem, signature), |C|) for every cluster of voting candidates (e(r) ≥ ρ, not
//!   all-fail): the grouper, a differential `count()` over [`ClusterKey`]s.
//! - `selections`: the [`Selection`] per problem: a `reduce` keyed by problem over the cluster
//!   sizes (restricted to |C| ≥ τ) joined with the members' verdicts. As clusters grow or shrink
//!   the reduce retracts the old winner and inserts the new one.
//!
//! The rule is the one documented in [`crate::selection`]; [`select_batch`](crate::select_batch)
//! is its batch reference and the oracle tests compare the two after every round.
//!
//! Routing: [`ClusterKey`] hashes by problem id only, so a problem's clusters, members and
//! selection are all arranged on the worker that owns the problem; `-w N` changes where work
//! happens, never the result.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use differential_dataflow::VecCollection;
use differential_dataflow::lattice::Lattice;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::Selection;
use crate::adaptive::ClusterStanding;
use crate::records::ProblemId;
use crate::selection::{
    ClusterScore, ConsensusConfig, SelectionRule, cmp_clusters, cmp_members, votes,
};
use crate::signature::{CandidateVerdict, Signature};

/// A cluster's identity: a problem and a signature.
///
/// `Hash` covers the problem id only (equal keys still hash equally), which makes differential's
/// exchange route every cluster of a problem to the same worker as the problem itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterKey {
    /// The problem.
    pub problem_id: ProblemId,
    /// The shared signature.
    pub signature: Signature,
}

impl Hash for ClusterKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.problem_id.hash(state);
    }
}

/// The grouper's and the selector's outputs.
pub struct Consensus<'scope, T: Timestamp> {
    /// ((problem, signature), |C|) for every non-empty cluster of voting candidates.
    pub clusters: VecCollection<'scope, T, (ClusterKey, isize)>,
    /// At most one selection per problem.
    pub selections: VecCollection<'scope, T, Selection>,
    /// Per problem with voting candidates, the standings of all its voting clusters (largest
    /// first): the input of the adaptive-sampling controller
    /// ([`AdaptiveSampling::decide`](crate::AdaptiveSampling::decide)).
    pub standings: VecCollection<'scope, T, (ProblemId, Vec<ClusterStanding>)>,
}

/// Builds the grouper and selector over `verdicts` with the settings in `config`.
pub fn consensus<'scope, T>(
    verdicts: VecCollection<'scope, T, CandidateVerdict>,
    config: &ConsensusConfig,
) -> Consensus<'scope, T>
where
    T: Timestamp + Lattice + Ord,
{
    let config = *config;
    let members = verdicts.filter(move |v| votes(v, &config)).map(|v| {
        (
            ClusterKey {
                problem_id: v.problem_id,
                signature: v.signature.clone(),
            },
            v,
        )
    });
    let clusters = members.clone().map(|(key, _)| key).count();
    let standings = clusters
        .clone()
        .map(|(key, size)| {
            let standing = ClusterStanding {
                size: size as u32,
                passed: key.signature.passed(),
            };
            (key.problem_id, standing)
        })
        .reduce_named("Standings", |_problem, input, output| {
            let mut standings: Vec<ClusterStanding> = input
                .iter()
                .flat_map(|(standing, count)| {
                    std::iter::repeat_n(**standing, (*count).max(0) as usize)
                })
                .collect();
            standings.sort_unstable_by(|a, b| b.cmp(a));
            output.push((standings, 1isize));
        });
    let tau = config.tau as isize;
    let ranked = members.join_map(
        clusters.clone().filter(move |(_, size)| *size >= tau),
        |key, verdict, size| (key.problem_id, (*size as u32, verdict.clone())),
    );
    let selections =
        if config.rule == SelectionRule::Bayesian {
            // The posterior of a cluster weighs every voting cluster of its problem, eligible or not.
            ranked
                .map(|(problem, (size, verdict))| (problem, Ranked::Member(size, verdict)))
                .concat(clusters.clone().map(|(key, size)| {
                    (key.problem_id, Ranked::Cluster(key.signature, size as u32))
                }))
                .reduce_named("Selector", move |_problem, input, output| {
                    let live = || input.iter().filter(|(_, m)| *m > 0).map(|(r, _)| *r);
                    let members = live().filter_map(|r| match r {
                        Ranked::Member(size, verdict) => Some((*size, verdict)),
                        Ranked::Cluster(..) => None,
                    });
                    let voting: Vec<(&Signature, u32)> = live()
                        .filter_map(|r| match r {
                            Ranked::Cluster(signature, size) => Some((signature, *size)),
                            Ranked::Member(..) => None,
                        })
                        .collect();
                    if let Some(selection) = choose(members, &voting, &config) {
                        output.push((selection, 1isize));
                    }
                })
        } else {
            ranked.reduce_named("Selector", move |_problem, input, output| {
                let members = input
                    .iter()
                    .filter(|(_, m)| *m > 0)
                    .map(|((size, verdict), _)| (*size, verdict));
                if let Some(selection) = choose(members, &[], &config) {
                    output.push((selection, 1isize));
                }
            })
        }
        .map(|(_problem, selection)| selection);
    Consensus {
        clusters,
        selections,
        standings,
    }
}

/// What the Bayesian Selector's reduce sees per problem: the members of eligible clusters (with
/// their cluster's size) and every voting cluster as (signature, size).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Ranked {
    Member(u32, CandidateVerdict),
    Cluster(Signature, u32),
}

/// An eligible cluster as seen by the reduce: its size and best member so far.
struct ClusterView<'a> {
    size: u32,
    best: &'a CandidateVerdict,
}

/// The reduce's logic: one pass over the problem's eligible members (with their cluster's size),
/// grouped by signature; `voting` lists every voting cluster (the Bayesian rule only).
fn choose<'a>(
    members: impl Iterator<Item = (u32, &'a CandidateVerdict)>,
    voting: &[(&Signature, u32)],
    config: &ConsensusConfig,
) -> Option<Selection> {
    let mut clusters: BTreeMap<&Signature, ClusterView<'_>> = BTreeMap::new();
    for (size, verdict) in members {
        let view = clusters.entry(&verdict.signature).or_insert(ClusterView {
            size,
            best: verdict,
        });
        if cmp_members(verdict, view.best) == Ordering::Greater {
            view.best = verdict;
        }
    }
    // `BTreeMap` iterates signatures ascending; on a full tie the earlier (smaller) signature must
    // win, so only a strictly better cluster replaces the current leader.
    let mut leader: Option<(ClusterScore, &ClusterView<'_>)> = None;
    for (signature, view) in &clusters {
        let score = ClusterScore::of(signature, view.size, voting.iter().copied(), config);
        let better = match &leader {
            None => true,
            Some((current_score, current)) => {
                cmp_clusters(config.rule, &score, current_score)
                    .then_with(|| cmp_members(view.best, current.best))
                    == Ordering::Greater
            }
        };
        if better {
            leader = Some((score, view));
        }
    }
    leader
        .map(|(_, view)| Selection::of(view.best, view.size))
        .filter(|selection| selection.is_trusted(config))
}

/// Turns a timely stream of records into a differential collection of insertions, each at the
/// time of the message that carried it (the executor's verdicts entering the grouper).
pub fn as_insertions<'scope, T, D>(stream: StreamVec<'scope, T, D>) -> VecCollection<'scope, T, D>
where
    T: Timestamp + TotalOrder,
    D: Clone + 'static,
{
    let collection = stream
        .unary::<timely::container::CapacityContainerBuilder<Vec<(D, T, isize)>>, _, _, _>(
            Pipeline,
            "AsInsertions",
            |_capability, _info| {
                move |input, output| {
                    input.for_each_stamp(|capability, data| {
                        let Some(time) = capability.least().cloned() else {
                            return;
                        };
                        let mut session = output.session(&capability);
                        for batch in data {
                            session
                                .give_iterator(batch.drain(..).map(|d| (d, time.clone(), 1isize)));
                        }
                    });
                }
            },
        );
    VecCollection::new(collection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{CandidateId, Perplexity};
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::capture::{Capture, Extract};

    fn verdict(id: u64, bits: u64, ppl: f64) -> CandidateVerdict {
        CandidateVerdict {
            problem_id: ProblemId(1),
            candidate_id: CandidateId(id),
            signature: Signature::PassFail {
                tests: 4,
                bits: vec![bits],
            },
            executed: 4,
            tests: 4,
            passed: bits.count_ones(),
            perplexity: Perplexity::new(ppl),
        }
    }

    #[test]
    fn winner_is_retracted_and_replaced_as_clusters_grow() {
        let (send, recv) = std::sync::mpsc::channel();
        timely::execute_directly(move |worker| {
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, verdicts) = scope.new_collection::<CandidateVerdict, isize>();
                let out = consensus(
                    verdicts,
                    &ConsensusConfig {
                        tau: 2,
                        ..Default::default()
                    },
                );
                let (probe, selections) = out.selections.probe();
                selections.inner.capture_into(send);
                (input, probe)
            });
            // Round 0: cluster A = {1, 2} wins (B = {3} is below τ).
            input.insert(verdict(1, 0b0011, 2.0));
            input.insert(verdict(2, 0b0011, 1.5));
            input.insert(verdict(3, 0b0111, 1.0));
            input.advance_to(1);
            input.flush();
            worker.step_while(|| probe.less_than(&1));
            // Round 1: B grows to 3 members and takes over.
            input.insert(verdict(4, 0b0111, 1.2));
            input.insert(verdict(5, 0b0111, 0.9));
            input.advance_to(2);
            input.flush();
            worker.step_while(|| probe.less_than(&2));
            // Round 2: r* of B is withdrawn; the next best member of B replaces it.
            input.remove(verdict(5, 0b0111, 0.9));
            input.advance_to(3);
        });
        let mut updates: Vec<(u64, CandidateId, u32, isize)> = recv
            .extract()
            .into_iter()
            .flat_map(|(_, batch)| batch)
            .map(|(s, t, d)| (t, s.candidate_id, s.cluster_size, d))
            .collect();
        updates.sort();
        assert_eq!(
            updates,
            vec![
                (0, CandidateId(2), 2, 1),
                (1, CandidateId(2), 2, -1),
                (1, CandidateId(5), 3, 1),
                (2, CandidateId(3), 2, 1),
                (2, CandidateId(5), 3, -1),
            ]
        );
    }

    #[test]
    fn clusters_count_only_voting_candidates() {
        let (send, recv) = std::sync::mpsc::channel();
        let (send_standings, recv_standings) = std::sync::mpsc::channel();
        timely::execute_directly(move |worker| {
            worker.dataflow::<u64, _, _>(|scope| {
                let mut all_fail = verdict(9, 0, 1.0);
                all_fail.passed = 0;
                let mut low_e = verdict(8, 0b1, 1.0);
                low_e.executed = 2;
                let (_input, verdicts) = scope.new_collection_from(vec![
                    verdict(1, 0b1, 1.0),
                    verdict(2, 0b1, 1.0),
                    verdict(3, 0b1011, 1.0),
                    all_fail,
                    low_e,
                ]);
                let out = consensus(verdicts, &ConsensusConfig::default());
                out.clusters.inner.capture_into(send);
                out.standings.inner.capture_into(send_standings);
            });
        });
        let clusters: Vec<_> = recv
            .extract()
            .into_iter()
            .flat_map(|(_, b)| b)
            .map(|((k, n), _, d)| (k, n, d))
            .collect();
        let mut sizes: Vec<_> = clusters.iter().map(|(_, n, d)| (*n, *d)).collect();
        sizes.sort();
        assert_eq!(sizes, vec![(1, 1), (2, 1)], "{clusters:?}");
        let standings: Vec<_> = recv_standings
            .extract()
            .into_iter()
            .flat_map(|(_, b)| b)
            .map(|((p, s), _, d)| (p, s, d))
            .collect();
        let expected = vec![
            ClusterStanding { size: 2, passed: 1 },
            ClusterStanding { size: 1, passed: 3 },
        ];
        assert_eq!(standings, vec![(ProblemId(1), expected, 1)]);
    }
}
