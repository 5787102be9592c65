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
    as_insertions, consensus,
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
}
