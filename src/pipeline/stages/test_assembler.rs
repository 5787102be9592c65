//! TestAssembler: waits for every test batch of a draft, then parses the batches together in
//! batch order (de-duplicating across batches) and keeps at most `[tests] per_problem` tests.
//!
//! Contract: emits `(draft, tests)` once per draft with at least one usable test; files one
//! rejection for every test line it does not keep (duplicate, contradictory, beyond
//! `per_problem`, cut by the token limit, not binding to the signature, not a test) and for
//! every batch that does not parse, and one `unparseable` rejection (with every batch's text)
//! for a draft with no usable test. A batch whose backend call failed counts as an empty answer
//! (its backend error is filed by the TestGenerator).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use ucoder_operators::{
    Completion, FinishReason, GeneratedTest, ProblemId, RejectReason, stateful,
};

use super::ask::rejection;
use super::test_generator::{self, TestBatch};
use super::{Draft, LlmStage};
use crate::pipeline::context::{Collector, GraphContext};

/// A draft with its assembled (not yet sandbox-checked) tests.
pub type Assembled = (Rc<Draft>, Vec<GeneratedTest>);

/// The stage on one worker (drafts arrive where their problem is owned).
pub fn wire<'s>(
    batches: StreamVec<'s, u64, TestBatch>,
    ctx: &Arc<GraphContext>,
    collect: &Collector,
) -> StreamVec<'s, u64, Assembled> {
    let collect = collect.clone();
    let count = ctx.stages.settings.test_batches() as usize;
    let limit = ctx.stages.settings.tests_per_problem;
    let mut pending: HashMap<ProblemId, Vec<Option<Completion>>> = HashMap::new();
    stateful(
        batches,
        "TestAssembler",
        move |(d, b, completion): TestBatch, out: &mut Vec<Assembled>| {
            let slots = pending
                .entry(d.problem.id)
                .or_insert_with(|| vec![None; count]);
            slots[b as usize] = Some(completion.unwrap_or_else(|| Completion {
                text: String::new(),
                logprobs: Default::default(),
                finish: FinishReason::Stop,
            }));
            if slots.iter().any(Option::is_none) {
                return;
            }
            let completions: Vec<_> = pending
                .remove(&d.problem.id)
                .expect("present")
                .into_iter()
                .flatten()
                .collect();
            let (tests, judged) = test_generator::judge(&d, &completions, limit);
            for (batch, completion) in judged.iter().zip(&completions) {
                match batch {
                    Ok(parsed) => {
                        for (line, why) in &parsed.dropped {
                            collect.reject(rejection(
                                LlmStage::Tests,
                                Some(d.problem.id),
                                test_generator::drop_reason(why),
                                why.clone(),
                                line,
                            ));
                        }
                    }
                    // An empty answer stands for a failed backend call, filed already.
                    Err(_) if completion.text.is_empty() => {}
                    Err(r) => collect.reject(r.clone()),
                }
            }
            if tests.is_empty() {
                let reasons: Vec<String> = judged
                    .iter()
                    .filter_map(|j| j.as_ref().err().map(|r| r.detail.clone()))
                    .collect();
                collect.reject(rejection(
                    LlmStage::Tests,
                    Some(d.problem.id),
                    RejectReason::Unparseable,
                    format!("no usable test in any batch: {}", reasons.join("; ")),
                    &completions
                        .iter()
                        .map(|c| c.text.as_str())
                        .collect::<Vec<_>>()
                        .join("\n----\n"),
                ));
                return;
            }
            out.push((d, tests));
        },
    )
}
