//! ProblemGenerator: request `i` of `[problems] count` asks the model for one problem of category
//! `i mod 5` (the paper's five task types in turn), on worker `i mod peers`.
//!
//! Contract: emits `(i, Some(problem))` for an answer that parses and `(i, None)` for one that
//! does not (filed as a rejection), exactly once per request index, so the NearDuplicateFilter
//! can admit problems in request order. The problem's id is derived from its content.

use std::sync::Arc;

use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::{Scope, StreamVec};
use ucoder_operators::{
    Category, Completion, GeneratedProblem, Generation, GenerationRequest, Rejection,
};

use super::ask::{ask_model, first_completion, parse_rejection, response_row};
use super::{LlmStage, StagePrompts, request_seed};
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::prompts::PromptError;
use crate::prompts::parse::parse_problem;

/// Problem request `index`: its category and request.
pub fn request(
    prompts: &StagePrompts,
    index: u64,
) -> Result<(Category, GenerationRequest), PromptError> {
    let settings = &prompts.settings;
    let category = Category::ALL[(index % Category::ALL.len() as u64) as usize];
    let seed = request_seed(settings.seed, LlmStage::Problems, index);
    let prompt = prompts.prompts.problem(category, seed % 1_000_000)?;
    let request = settings.request(
        LlmStage::Problems,
        index,
        prompt,
        1,
        settings.problem_temperature,
    );
    Ok((category, request))
}

/// Judges a ProblemGenerator completion.
pub fn judge(
    category: Category,
    seed: u64,
    completion: &Completion,
) -> Result<GeneratedProblem, Rejection> {
    let parsed = parse_problem(&LlmStage::Problems.answer(completion))
        .map_err(|r| parse_rejection(LlmStage::Problems, None, r))?;
    let signature = parsed.signature.to_def();
    Ok(GeneratedProblem {
        id: GeneratedProblem::derive_id(&parsed.title, &parsed.description, &signature),
        category,
        seed,
        title: parsed.title,
        description: parsed.description,
        signature,
        example: parsed.example,
        hint: parsed.hint,
    })
}

/// The stage on one worker: `(request index, problem if it parsed)`.
pub fn wire<'s>(
    scope: Scope<'s, u64>,
    ctx: &Arc<GraphContext>,
    collect: &Collector,
) -> StreamVec<'s, u64, (u64, Option<GeneratedProblem>)> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    let requests = {
        let ctx = Arc::clone(ctx);
        (0..ctx.problem_count)
            .filter(move |i| i % peers == index)
            .collect::<Vec<u64>>()
            .to_stream(scope)
            .flat_map(move |i| match request(&ctx.stages, i) {
                Ok((category, request)) => {
                    let seed = request.params.seed;
                    Some(((category, seed), i, request))
                }
                Err(e) => {
                    ctx.failure
                        .set(format!("rendering the problem prompt: {e}"));
                    None
                }
            })
    };
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    ask_model(
        requests,
        ctx,
        LlmStage::Problems,
        index as u32,
        ctx.llm_batch,
        move |(category, seed), i, generation: Generation, _fresh| {
            Counters::add(&counters.problems_answered, 1);
            let completion = match first_completion(&generation, LlmStage::Problems, None) {
                Ok(c) => c,
                Err(r) => {
                    collect.reject(r);
                    return (vec![(i, None)], Vec::new());
                }
            };
            let judged = judge(category, seed, completion);
            let row = response_row(
                i,
                judged.as_ref().ok().map(|p| p.id),
                0,
                completion,
                judged.as_ref().map(|_| ()),
            );
            let problem = match judged {
                Ok(p) => {
                    Counters::add(&counters.problems_parsed, 1);
                    Some(p)
                }
                Err(r) => {
                    collect.reject(r);
                    None
                }
            };
            (vec![(i, problem)], vec![row])
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::completion;
    use ucoder_operators::{FinishReason, RejectReason};

    #[test]
    fn a_cut_answer_is_unparseable_and_labelled_by_the_parser() {
        let mut cut_off = completion(" x");
        cut_off.finish = FinishReason::Length;
        let cut = judge(Category::MultiDomain, 1, &cut_off).unwrap_err();
        assert_eq!(cut.reason, RejectReason::Unparseable);
        assert_eq!(cut.parser_label.as_deref(), Some("unterminated_block"));
        assert!(
            cut.detail.starts_with("unterminated_block: "),
            "{}",
            cut.detail
        );
        assert_eq!(cut.raw, "<PROBLEM_START>\nTitle: x");
    }
}
