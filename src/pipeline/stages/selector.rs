//! SignatureGrouper + Selector: the operators crate's differential consensus over the verdicts
//! (candidates with e(r) ≥ ρ vote, the all-fail signature is excluded, C* is the largest cluster
//! with |C| ≥ τ, r* maximises e(r) then minimises perplexity), then the selected candidate's code
//! and its problem's solution prompt joined to each selection.
//!
//! Contract: emits the collection of `(selection, prompt, code)`, at most one per problem, as it
//! changes round by round; collects the final clusters (`clusters/`, [`cluster_rows`]) on the
//! worker that owns each problem. [`selection_rows`] writes `selections/`.

use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::VecCollection;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    Candidate, CandidateId, CandidateVerdict, ClusterKey, ConsensusConfig, ProblemId, Selection,
    SelectionRule, SignatureKind, as_insertions, consensus,
};

use super::test_check::Ready;
use crate::config::{PipelineConfig, SelectorConfig, SignatureKindConfig};
use crate::pipeline::artifacts::{ClusterRow, SelectionRow};
use crate::pipeline::context::Collector;

/// A selection with its SFT prompt and the selected code.
pub type Selected = (Selection, String, String);

/// The operators crate's selection settings for the pipeline's `[selection]`.
pub fn selection_config(config: &PipelineConfig) -> ConsensusConfig {
    ConsensusConfig {
        rho: f64::from(config.selection.rho),
        tau: config.selection.tau as u32,
        rule: match config.selection.selector {
            SelectorConfig::Largest => SelectionRule::Consensus,
            SelectorConfig::DualAgreement => SelectionRule::DualAgreement,
        },
        signature: match config.selection.signature {
            SignatureKindConfig::PassFail => SignatureKind::PassFail,
            SignatureKindConfig::Output => SignatureKind::Output,
        },
    }
}

/// The `clusters/` rows: every final cluster, marked when its problem's selection came from it.
pub fn cluster_rows(clusters: &[(ClusterKey, u32)], selections: &[Selected]) -> Vec<ClusterRow> {
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

/// The stage on one worker: the selections with their prompts and code.
pub fn wire<'s>(
    verdicts: StreamVec<'s, u64, CandidateVerdict>,
    candidates: StreamVec<'s, u64, (Rc<Ready>, Candidate)>,
    ready: StreamVec<'s, u64, Rc<Ready>>,
    selection: &ConsensusConfig,
    collect: &Collector,
) -> VecCollection<'s, u64, Selected> {
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
