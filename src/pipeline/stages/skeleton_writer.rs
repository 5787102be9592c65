//! SkeletonWriter (the paper's interface synthesizer): one greedy skeleton per draft, cut back
//! to its interface ([`stub`]).
//!
//! Contract: emits each draft whose skeleton block parses and defines the signature's function,
//! with `skeleton` set to imports + signature + docstring + `pass`; files an `unparseable` or
//! `missing_function` rejection for the others. Whether the Python loads is the SkeletonCheck's
//! business.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use ucoder_operators::{Completion, GenerationRequest, RejectReason, Rejection, Skeleton};

use super::ask::{ask_per_draft, parse_rejection};
use super::{Draft, LlmStage, StagePrompts};
use crate::pipeline::context::{Collector, GraphContext};
use crate::prompts::PromptError;
use crate::prompts::parse::{self, parse_skeleton};
use crate::python::stub;

/// The skeleton request of `draft`.
pub fn request(prompts: &StagePrompts, draft: &Draft) -> Result<GenerationRequest, PromptError> {
    let prompt = prompts
        .prompts
        .skeleton(&draft.statement(), &draft.problem.signature)?;
    Ok(prompts
        .settings
        .request(LlmStage::Skeletons, draft.problem.id.0, prompt, 1, 0.0))
}

/// Judges a skeleton completion (its Python is checked later, in the sandbox).
pub fn judge(draft: &Draft, completion: &Completion) -> Result<Skeleton, Rejection> {
    let id = Some(draft.problem.id);
    let signature = draft.signature();
    let code =
        parse_skeleton(&LlmStage::Skeletons.answer(completion), &signature.name).map_err(|r| {
            let missing = matches!(r.reason, parse::ParseError::SkeletonMissingFunction(_));
            let mut rejection = parse_rejection(LlmStage::Skeletons, id, r);
            if missing {
                rejection.reason = RejectReason::MissingFunction;
            }
            rejection
        })?;
    Ok(Skeleton {
        problem_id: draft.problem.id,
        function_name: signature.name.clone(),
        arity: signature.params.len() as u32,
        code: stub(&code, &signature.name),
    })
}

/// The stage on one worker.
pub fn wire<'s>(
    drafts: StreamVec<'s, u64, Draft>,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
) -> StreamVec<'s, u64, Draft> {
    ask_per_draft(
        drafts,
        LlmStage::Skeletons,
        ctx,
        worker,
        collect,
        request,
        |d, completion| {
            d.skeleton = Some(judge(d, completion)?);
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::{completion, draft};

    #[test]
    fn skeletons_are_cut_back_to_their_interface() {
        let d = draft();
        assert_eq!(d.problem.signature, "def add(a: int, b: int) -> int:");
        assert_eq!(d.signature().name, "add");
        assert_eq!(d.skeleton.as_ref().unwrap().arity, 2);
        assert_eq!(
            d.skeleton_code(),
            "import math\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Adds.\n\n    Returns:\n        the sum\n    \"\"\"\n    pass\n",
            "the body and the helper after the function are cut"
        );
        assert_eq!(
            stub("def add(a, b):\n    return a + b\n", "add"),
            "def add(a, b):\n    pass\n"
        );
        assert_eq!(
            stub(
                "def add(\n    a,\n    b,\n):  # sum\n    '''One line.'''\n    return a\n",
                "add"
            ),
            "def add(\n    a,\n    b,\n):  # sum\n    '''One line.'''\n    pass\n"
        );
    }

    #[test]
    fn a_skeleton_of_another_function_is_missing_the_function() {
        let other = judge(
            &draft(),
            &completion("def other(a, b):\n    pass\n```\n<SKELETON_END>"),
        )
        .unwrap_err();
        assert_eq!(other.reason, RejectReason::MissingFunction);
        assert_eq!(
            other.parser_label.as_deref(),
            Some("skeleton_missing_function")
        );
    }
}
