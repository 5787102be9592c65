//! Rater (the paper's quality oracle): one greedy rating per draft; drafts rated below
//! `[rating] min_score` are dropped.
//!
//! Contract: emits each draft whose rating parses and meets the minimum, with `rating` set;
//! files an `unparseable` or `low_quality` rejection for the others.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use ucoder_operators::{Completion, GenerationRequest, Rating, RejectReason, Rejection};

use super::ask::{ask_per_draft, parse_rejection, rejection};
use super::{Draft, LlmStage, StagePrompts};
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::prompts::PromptError;
use crate::prompts::parse::parse_rating;

/// The rating request of `draft`.
pub fn request(prompts: &StagePrompts, draft: &Draft) -> Result<GenerationRequest, PromptError> {
    let prompt = prompts.prompts.rating(&draft.statement())?;
    Ok(prompts
        .settings
        .request(LlmStage::Ratings, draft.problem.id.0, prompt, 1, 0.0))
}

/// Judges a rating completion: the rating, or why the problem is dropped.
pub fn judge(draft: &Draft, completion: &Completion, min_score: f64) -> Result<Rating, Rejection> {
    let id = Some(draft.problem.id);
    let answer = LlmStage::Ratings.answer(completion);
    let parsed = parse_rating(&answer).map_err(|r| parse_rejection(LlmStage::Ratings, id, r))?;
    if parsed.score < min_score {
        return Err(rejection(
            LlmStage::Ratings,
            id,
            RejectReason::LowQuality,
            format!("score {} below the minimum {min_score}", parsed.score),
            &answer,
        ));
    }
    Ok(Rating {
        problem_id: draft.problem.id,
        score: parsed.score,
        difficulty: parsed.difficulty.unwrap_or_default(),
        summary: parsed.summary,
    })
}

/// The stage on one worker.
pub fn wire<'s>(
    drafts: StreamVec<'s, u64, Draft>,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
) -> StreamVec<'s, u64, Draft> {
    let counters = Arc::clone(&ctx.counters);
    let min_score = ctx.stages.settings.min_score;
    ask_per_draft(
        drafts,
        LlmStage::Ratings,
        ctx,
        worker,
        collect,
        request,
        move |d, completion| {
            let rating = judge(d, completion, min_score)?;
            Counters::add(&counters.problems_rated, 1);
            d.rating = Some(rating);
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::{completion, draft};

    #[test]
    fn low_ratings_are_rejected_and_good_ones_kept() {
        let d = draft();
        let low = judge(&d, &completion(" 3\nSummary: vague\n<RATING_END>"), 7.0).unwrap_err();
        assert_eq!(low.reason, RejectReason::LowQuality);
        assert_eq!(low.parser_label, None);
        let ok = judge(&d, &completion(" 8/10\nSummary: fine\n<RATING_END>"), 7.0).unwrap();
        assert_eq!(ok.score, 8.0);
    }
}
