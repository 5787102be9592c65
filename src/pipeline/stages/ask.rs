//! What the model stages share: routing a request through the stage's checkpointed backend
//! ([`ask_model`]), the one-question-per-draft stage shape ([`ask_per_draft`]), the checkpoint
//! row of a completion ([`response_row`]) and the rejections a stage files ([`rejection`],
//! [`parse_rejection`]).

use std::path::PathBuf;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    Answers, BatchPolicy, Completion, Generation, GenerationRequest, ProblemId, RejectReason,
    Rejection, checkpointed,
};

use super::{Draft, LlmStage, StagePrompts};
use crate::pipeline::artifacts::ResponseRow;
use crate::pipeline::context::{Collector, Failure, GraphContext};
use crate::pipeline::progress::Counters;
use crate::prompts::PromptError;
use crate::prompts::parse;
use crate::store::{Record, Stage};

/// The checkpoint row of `completion` (sample `sample` of request `key` about `problem_id`),
/// judged `status`; the candidate stage adds its `candidate_id` and `code`.
pub fn response_row(
    key: u64,
    problem_id: Option<ProblemId>,
    sample: u32,
    completion: &Completion,
    status: Result<(), &Rejection>,
) -> ResponseRow {
    let (status, detail) = match status {
        Ok(()) => ("ok".to_string(), String::new()),
        Err(r) => (r.reason.as_str().to_string(), r.detail.clone()),
    };
    ResponseRow {
        key,
        problem_id: problem_id.map(|p| p.0),
        sample,
        candidate_id: None,
        text: completion.text.clone(),
        tokens: completion.logprobs.tokens,
        sum_logprob: completion.logprobs.sum_logprob,
        finish: completion.finish.label().to_string(),
        status,
        detail,
        code: None,
    }
}

/// A rejection of `raw` at `stage`.
pub fn rejection(
    stage: LlmStage,
    problem_id: Option<ProblemId>,
    reason: RejectReason,
    detail: impl Into<String>,
    raw: &str,
) -> Rejection {
    Rejection {
        stage: stage.record_stage(),
        problem_id,
        reason,
        detail: detail.into(),
        raw: raw.to_string(),
        parser_label: None,
    }
}

/// The rejection of an answer the stage's parser refused: unparseable, labelled by the parser.
pub fn parse_rejection(
    stage: LlmStage,
    problem_id: Option<ProblemId>,
    r: parse::ParseRejection,
) -> Rejection {
    let label = r.reason.label();
    Rejection {
        parser_label: Some(label.to_string()),
        ..rejection(
            stage,
            problem_id,
            RejectReason::Unparseable,
            format!("{label}: {}", r.reason),
            &r.raw,
        )
    }
}

/// The first completion of a generation, or the rejection its failure becomes.
pub fn first_completion(
    generation: &Generation,
    stage: LlmStage,
    problem: Option<ProblemId>,
) -> Result<&Completion, Rejection> {
    match generation {
        Ok(completions) => completions.first().ok_or_else(|| {
            rejection(
                stage,
                problem,
                RejectReason::BackendError,
                "the backend returned no completion",
                "",
            )
        }),
        Err(e) => Err(rejection(
            stage,
            problem,
            RejectReason::BackendError,
            e.to_string(),
            "",
        )),
    }
}

/// Commits checkpoint rows of one stage for one worker into `dir`, opening the stage folder on
/// the first rows; a failed write stops the run through `failure`.
pub fn committer<R: Record>(dir: PathBuf, worker: u32, failure: Failure) -> impl FnMut(&[R]) {
    let mut stage: Option<Stage<R>> = None;
    move |rows: &[R]| {
        let result = match &mut stage {
            Some(stage) => stage.commit(rows),
            None => Stage::<R>::open(&dir, worker).and_then(|mut opened| {
                let r = opened.commit(rows);
                stage = Some(opened);
                r
            }),
        };
        if let Err(e) = result {
            failure.set(format!("writing a checkpoint: {e}"));
        }
    }
}

/// Asks the model `stage`'s `(context, key, request)`s: keys an interrupted run committed are
/// replayed from the stage's checkpoint, the rest go to the engine in batches of `max_batch`;
/// `judge` turns each answer into records and checkpoint rows (committed for fresh answers).
pub fn ask_model<'s, C: 'static, Out: 'static>(
    requests: StreamVec<'s, u64, (C, u64, GenerationRequest)>,
    ctx: &Arc<GraphContext>,
    stage: LlmStage,
    worker: u32,
    max_batch: usize,
    judge: impl FnMut(C, u64, Generation, bool) -> (Vec<Out>, Vec<ResponseRow>) + 'static,
) -> StreamVec<'s, u64, Out> {
    let replay = Arc::clone(ctx);
    let lookup = move |key: u64| {
        let found = replay.memo(stage).get(key).cloned();
        if let Some(completions) = &found {
            Counters::add(
                &replay.counters.replayed_completions,
                completions.len() as u64,
            );
        }
        found.map(Ok)
    };
    checkpointed(
        requests,
        Answers {
            name: stage.operator_name().to_string(),
            lookup,
            backend: ctx.llm(stage),
            policy: BatchPolicy { max_batch },
        },
        committer(
            ctx.iter_dir.join(stage.dir_name()),
            worker,
            ctx.failure.clone(),
        ),
        judge,
    )
}

/// A stage that asks the model one question per draft (Rater, SkeletonWriter): `judge` either
/// completes the draft with the answer or rejects it.
pub fn ask_per_draft<'s>(
    drafts: StreamVec<'s, u64, Draft>,
    stage: LlmStage,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
    request: fn(&StagePrompts, &Draft) -> Result<GenerationRequest, PromptError>,
    mut judge: impl FnMut(&mut Draft, &Completion) -> Result<(), Rejection> + 'static,
) -> StreamVec<'s, u64, Draft> {
    let ctx2 = Arc::clone(ctx);
    let requests = drafts.flat_map(move |d: Draft| match request(&ctx2.stages, &d) {
        Ok(r) => {
            let key = d.problem.id.0;
            Some((d, key, r))
        }
        Err(e) => {
            ctx2.failure.set(format!(
                "rendering the {} prompt: {e}",
                stage.operator_name()
            ));
            None
        }
    });
    let collect = collect.clone();
    ask_model(
        requests,
        ctx,
        stage,
        worker,
        ctx.llm_batch,
        move |mut d: Draft, key, generation: Generation, _| {
            let id = Some(d.problem.id);
            let completion = match first_completion(&generation, stage, id) {
                Ok(c) => c,
                Err(r) => {
                    collect.reject(r);
                    return (Vec::new(), Vec::new());
                }
            };
            let judged = judge(&mut d, completion);
            let row = response_row(key, id, 0, completion, judged.as_ref().map(|_| ()));
            match judged {
                Ok(()) => (vec![d], vec![row]),
                Err(r) => {
                    collect.reject(r);
                    (Vec::new(), vec![row])
                }
            }
        },
    )
}
