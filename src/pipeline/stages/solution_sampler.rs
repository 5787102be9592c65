//! SolutionSampler: `[sampling] n` solutions per ready problem, in rounds of `[sampling] round`
//! samples; round r of every problem is asked at timely time r + 1, so the rounds of all
//! problems interleave and each round's selections are a consistent snapshot.
//!
//! Contract: emits `(ready problem, candidate)` for every sample from which a program was
//! extracted (its id derived from the problem, the sample index and the code); files a
//! `no_code` rejection for the others and a `backend_error` one for a failed round.

use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use ucoder_operators::{
    Candidate, Completion, Generation, GenerationRequest, LogprobSummary, RejectReason, Rejection,
};

use super::ask::{ask_model, rejection, response_row};
use super::test_check::Ready;
use super::{Draft, LlmStage, StagePrompts, indexed_key};
use crate::pipeline::artifacts::ResponseRow;
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::prompts::PromptError;
use crate::python::extract::{Extraction, PromptStyle, extract};
use crate::python::imports::missing_imports;

/// The user turn of the solution prompt (also the SFT prompt).
pub fn prompt(prompts: &StagePrompts, draft: &Draft) -> Result<String, PromptError> {
    prompts
        .prompts
        .solution(&draft.statement(), draft.skeleton_code())
}

/// Sampling round `round` (0-based) of `draft`, whose solution prompt (rendered once per
/// problem by [`prompt`]) is `prompt`: its key and request.
pub fn request(
    prompts: &StagePrompts,
    draft: &Draft,
    prompt: &str,
    round: u64,
) -> (u64, GenerationRequest) {
    let s = &prompts.settings;
    let n = (s.samples - round as usize * s.round).min(s.round) as u32;
    let key = indexed_key(draft.problem.id, round);
    let request = s.request(
        LlmStage::Candidates,
        key,
        prompt.to_string(),
        n,
        s.sample_temperature,
    );
    (key, request)
}

/// A candidate, and how many standard-library imports it was given.
pub struct Judged {
    pub candidate: Candidate,
    pub imports_added: usize,
}

/// Judges a sampled solution: the candidate with its extracted program, or why there is none. A
/// program that uses a standard-library name it never imported (`math.comb` without `import
/// math`) is given the import ([`missing_imports`]), so the SFT target carries it; without, it
/// would die with `NameError` whatever its logic.
pub fn judge(
    draft: &Draft,
    sample_index: u32,
    round: u64,
    completion: &Completion,
) -> Result<Judged, Rejection> {
    let id = draft.problem.id;
    match extract(
        draft.skeleton_code(),
        draft.function_name(),
        &completion.text,
        PromptStyle::Chat,
    ) {
        Extraction::Program { program, .. } => {
            let imports = missing_imports(&program);
            let program = if imports.is_empty() {
                program
            } else {
                format!(
                    "{}
{program}",
                    imports.join("\n")
                )
            };
            Ok(Judged {
                candidate: Candidate {
                    id: Candidate::derive_id(id, sample_index, &program),
                    problem_id: id,
                    sample_index,
                    round,
                    code: program,
                    logprobs: LogprobSummary {
                        tokens: completion.logprobs.tokens,
                        sum_logprob: completion.logprobs.sum_logprob,
                    },
                },
                imports_added: imports.len(),
            })
        }
        Extraction::Failed { reason } => Err(rejection(
            LlmStage::Candidates,
            Some(id),
            RejectReason::NoCode,
            reason,
            &completion.text,
        )),
    }
}

/// A sampling round's request: the problem and the round.
type Round = (Rc<Ready>, u64);

/// Round r of every ready problem, at time r + 1.
fn rounds<'s>(
    ready: StreamVec<'s, u64, Rc<Ready>>,
    ctx: &Arc<GraphContext>,
) -> StreamVec<'s, u64, (Round, u64, GenerationRequest)> {
    let rounds = ctx.stages.settings.rounds();
    let ctx = Arc::clone(ctx);
    ready.unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
        Pipeline,
        "SolutionRounds",
        move |_, _| {
            move |input, output| {
                input.for_each_stamp(|capability, data| {
                    for batch in data {
                        for r in batch.drain(..) {
                            for round in 0..rounds {
                                let time = capability.delayed(&(round + 1), 0);
                                let (key, request) =
                                    request(&ctx.stages, &r.draft, &r.prompt, round);
                                output
                                    .session(&time)
                                    .give(((Rc::clone(&r), round), key, request));
                            }
                        }
                    }
                });
            }
        },
    )
}

/// The stage on one worker.
pub fn wire<'s>(
    ready: StreamVec<'s, u64, Rc<Ready>>,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
) -> StreamVec<'s, u64, (Rc<Ready>, Candidate)> {
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    let round_size = ctx.stages.settings.round;
    ask_model(
        rounds(ready, ctx),
        ctx,
        LlmStage::Candidates,
        worker,
        (ctx.sample_rows / round_size).max(1),
        move |(r, round): Round, key, generation: Generation, _| {
            let id = Some(r.draft.problem.id);
            let completions = match generation {
                Ok(c) => c,
                Err(e) => {
                    collect.reject(rejection(
                        LlmStage::Candidates,
                        id,
                        RejectReason::BackendError,
                        e.to_string(),
                        "",
                    ));
                    return (Vec::new(), Vec::new());
                }
            };
            Counters::add(&counters.samples, completions.len() as u64);
            let mut outs = Vec::new();
            let mut rows = Vec::new();
            for (i, completion) in completions.iter().enumerate() {
                let sample = (round as usize * round_size + i) as u32;
                let judged = judge(&r.draft, sample, round, completion);
                rows.push(ResponseRow {
                    candidate_id: judged.as_ref().ok().map(|j| j.candidate.id.0),
                    code: judged.as_ref().ok().map(|j| j.candidate.code.clone()),
                    ..response_row(key, id, i as u32, completion, judged.as_ref().map(|_| ()))
                });
                match judged {
                    Ok(Judged {
                        candidate,
                        imports_added,
                    }) => {
                        Counters::add(&counters.candidates, 1);
                        if imports_added > 0 {
                            Counters::add(&counters.candidates_given_imports, 1);
                        }
                        outs.push((Rc::clone(&r), candidate));
                    }
                    Err(rejection) => collect.reject(rejection),
                }
            }
            (outs, rows)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::{completion, draft};

    #[test]
    fn a_fenced_program_is_a_candidate_and_prose_is_no_code() {
        let d = draft();
        let candidate = judge(
            &d,
            3,
            1,
            &completion("```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"),
        )
        .unwrap()
        .candidate;
        assert!(candidate.code.contains("return a + b"));
        assert_eq!(candidate.sample_index, 3);
        assert_eq!(
            candidate.id,
            Candidate::derive_id(d.problem.id, 3, &candidate.code)
        );
        let none = judge(&d, 4, 1, &completion("I cannot do that."))
            .err()
            .unwrap();
        assert_eq!(none.reason, RejectReason::NoCode);
    }

    #[test]
    fn a_missing_standard_library_import_is_added_and_counted() {
        let d = draft();
        let judged = judge(
            &d,
            0,
            1,
            &completion(
                "```python\ndef add(a: int, b: int) -> int:\n    return int(statistics.mean([a, b]) * 2)\n```",
            ),
        )
        .unwrap();
        assert_eq!(judged.imports_added, 1);
        assert!(
            judged.candidate.code.starts_with("import statistics\n"),
            "{}",
            judged.candidate.code
        );
        let plain = judge(
            &d,
            1,
            1,
            &completion("```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"),
        )
        .unwrap();
        assert_eq!(plain.imports_added, 0);
    }
}
