//! NearDuplicateFilter: every problem goes to worker 0 and is admitted in request order, so the
//! first of a group of near-duplicates (normalized signature, MinHash of the description) wins
//! whatever order the answers arrive in.
//!
//! Contract: consumes `(request index, problem?)` for every index `0..count` exactly once; emits
//! one [`Draft`] per admitted problem, exchanged to the worker that owns its problem id; files a
//! `duplicate` rejection for each refused problem.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::Exchange;
use ucoder_operators::{GeneratedProblem, RecordStage, RejectReason, Rejection, stateful};

use super::Draft;
use crate::dedup::NearDuplicateFilter;
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;

/// The stage: admitted drafts, routed by problem id.
pub fn wire<'s>(
    problems: StreamVec<'s, u64, (u64, Option<GeneratedProblem>)>,
    ctx: &Arc<GraphContext>,
    collect: &Collector,
) -> StreamVec<'s, u64, Draft> {
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    let mut filter = NearDuplicateFilter::new(ctx.dedup_threshold);
    let mut next = 0u64;
    let mut waiting: BTreeMap<u64, Option<GeneratedProblem>> = BTreeMap::new();
    stateful(
        problems.exchange(|_| 0),
        "NearDuplicateFilter",
        move |(i, problem), out: &mut Vec<Draft>| {
            waiting.insert(i, problem);
            while let Some(problem) = waiting.remove(&next) {
                let request = next;
                next += 1;
                let Some(problem) = problem else { continue };
                match filter.admit(&problem.signature, &problem.description) {
                    Ok(()) => {
                        Counters::add(&counters.problems_unique, 1);
                        out.push(Draft {
                            request,
                            problem,
                            rating: None,
                            skeleton: None,
                        });
                    }
                    Err(duplicate) => collect.reject(Rejection {
                        stage: RecordStage::Problem,
                        problem_id: Some(problem.id),
                        reason: RejectReason::Duplicate,
                        detail: format!("{duplicate:?}"),
                        raw: format!("{}\n{}", problem.signature, problem.description),
                        parser_label: None,
                    }),
                }
            }
        },
    )
    .exchange(|d: &Draft| d.problem.id.0)
}
