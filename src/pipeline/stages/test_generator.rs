//! TestGenerator: `[tests] per_problem` tests per draft, asked for in batches of `[tests] batch`
//! (each batch with its own focus: typical inputs, edge cases, ...), parsed into `assert` or
//! `call` tests arity-checked against the signature.
//!
//! Contract: emits `(draft, batch, completion?)` once per batch of every draft (`None` when the
//! backend failed), so the TestAssembler can wait for all of a draft's batches. The judges here
//! are shared with the assembler, which parses the batches together in batch order.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    Completion, FinishReason, GeneratedTest, Generation, GenerationRequest, RejectReason,
    Rejection, TestKind,
};

use super::ask::{ask_model, first_completion, parse_rejection, response_row};
use super::{Draft, LlmStage, StagePrompts, indexed_key};
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::prompts::PromptError;
use crate::prompts::parse::{self, CallTest, FunctionSignature, ParsedTest, ParsedTests};

/// What later test batches focus on, in turn.
const TEST_FOCI: [&str; 5] = [
    "typical inputs",
    "boundary values and edge cases (empty inputs, single elements, extremes)",
    "unusual but valid inputs (duplicates, negative numbers, unsorted data, special characters)",
    "larger inputs that exercise the algorithm",
    "tricky cases where a plausible but wrong solution would fail",
];

/// Test batch `batch` of `draft`: its key and request.
pub fn request(
    prompts: &StagePrompts,
    draft: &Draft,
    batch: u64,
) -> Result<(u64, GenerationRequest), PromptError> {
    let s = &prompts.settings;
    let count = (s.tests_per_problem - batch as usize * s.test_batch).min(s.test_batch);
    let focus = TEST_FOCI[(batch % TEST_FOCI.len() as u64) as usize];
    let prompt = prompts.prompts.tests(
        &draft.statement(),
        draft.skeleton_code(),
        draft.function_name(),
        count,
        focus,
    )?;
    let key = indexed_key(draft.problem.id, batch);
    // About 40 tokens a test line: a batch that asked for `count` tests has no use for more
    // (models tend to go on repeating themselves until the limit).
    let mut r = s.request(LlmStage::Tests, key, prompt, 1, s.test_temperature);
    r.params.max_tokens = r.params.max_tokens.min(40 * count as u32 + 40);
    Ok((key, r))
}

/// Parses the test batches of one problem in batch order, de-duplicating across batches, drops
/// every call test whose input another call test maps to a different expected value (at most one
/// of them can be right, and nothing says which), and keeps at most `limit` tests. Returns the
/// tests and one judgement per batch, whose `dropped` lists every other test line of the batch
/// once, with its reason ([`drop_reason`]).
pub fn judge(
    draft: &Draft,
    batches: &[Completion],
    limit: usize,
) -> (Vec<GeneratedTest>, Vec<Result<ParsedTests, Rejection>>) {
    let id = draft.problem.id;
    let signature = draft.signature();
    let mut seen = HashSet::new();
    let mut judged: Vec<Result<ParsedTests, Rejection>> = batches
        .iter()
        .map(|completion| {
            parse_answer(completion, &signature, &mut seen)
                .map_err(|r| parse_rejection(LlmStage::Tests, Some(id), r))
        })
        .collect();
    let contradicted = contradicted_inputs(judged.iter().flatten().flat_map(|p| &p.tests));
    let mut tests = Vec::new();
    for parsed in judged.iter_mut().flatten() {
        let (mut kept, dropped): (Vec<ParsedTest>, Vec<ParsedTest>) =
            std::mem::take(&mut parsed.tests)
                .into_iter()
                .partition(|t| {
                    !t.call
                        .as_ref()
                        .is_some_and(|c| contradicted.contains(&input(c)))
                });
        parsed.dropped.extend(
            dropped
                .into_iter()
                .map(|t| (t.source, CONTRADICTED.to_string())),
        );
        let room = limit - tests.len();
        let over = if kept.len() > room {
            kept.split_off(room)
        } else {
            Vec::new()
        };
        parsed
            .dropped
            .extend(over.into_iter().map(|t| (t.source, OVER_LIMIT.to_string())));
        for t in &kept {
            // `assert f(args) == expected` is a call test: the sandbox evaluates the call in the
            // child and compares with `expected` outside it.
            let kind = if t.call.is_some() {
                TestKind::Call
            } else {
                TestKind::Assert
            };
            tests.push(GeneratedTest::new(id, kind, t.source.clone()));
        }
        parsed.tests = kept;
    }
    (tests, judged)
}

/// The reason a test is dropped for contradicting another.
pub const CONTRADICTED: &str = "contradicts another test: same input, another expected value";

/// The reason a usable test is dropped for coming after `[tests] per_problem` others.
pub const OVER_LIMIT: &str = "beyond [tests] per_problem";

/// The reason the line a completion's token limit cut is dropped.
pub const TRUNCATED: &str = "cut at max_tokens";

/// The funnel reason of a line `judge` dropped, from the reason it gave.
pub fn drop_reason(why: &str) -> RejectReason {
    match why {
        parse::DUPLICATE => RejectReason::Duplicate,
        CONTRADICTED => RejectReason::Contradictory,
        OVER_LIMIT => RejectReason::OverLimit,
        TRUNCATED => RejectReason::Truncated,
        why if parse::is_arity_error(why) => RejectReason::ArityMismatch,
        _ => RejectReason::Unparseable,
    }
}

/// A call's input, whitespace aside.
fn input(call: &CallTest) -> String {
    call.args.split_whitespace().collect()
}

/// The inputs that two call tests map to different expected values (whitespace aside).
fn contradicted_inputs<'a>(tests: impl Iterator<Item = &'a ParsedTest>) -> HashSet<String> {
    let mut expected: HashMap<String, String> = HashMap::new();
    let mut contradicted = HashSet::new();
    for call in tests.filter_map(|t| t.call.as_ref()) {
        let value: String = call.expected.split_whitespace().collect();
        match expected.entry(input(call)) {
            Entry::Occupied(e) if *e.get() != value => {
                contradicted.insert(e.key().clone());
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
    }
    contradicted
}

/// Parses one test answer. An answer cut by the token limit keeps its complete lines: tests are
/// one line each, so everything before the last (cut) line is as trustworthy as a closed block;
/// the cut line is dropped.
fn parse_answer(
    completion: &Completion,
    signature: &FunctionSignature,
    seen: &mut HashSet<String>,
) -> Result<ParsedTests, parse::ParseRejection> {
    let answer = LlmStage::Tests.answer(completion);
    match parse::parse_tests(&answer, signature, seen) {
        Err(r)
            if completion.finish == FinishReason::Length
                && matches!(r.reason, parse::ParseError::UnterminatedBlock(_)) =>
        {
            let complete = answer.rfind('\n').map_or("", |i| &answer[..i]);
            let mut parsed =
                parse::parse_tests(&format!("{complete}\n<TESTS_END>"), signature, seen)?;
            let cut = answer[complete.len()..].trim();
            if !cut.is_empty() {
                parsed
                    .dropped
                    .push((cut.to_string(), TRUNCATED.to_string()));
            }
            Ok(parsed)
        }
        other => other,
    }
}

/// A test batch's answer: the draft, the batch index and its completion (none if the backend
/// failed).
pub type TestBatch = (Rc<Draft>, u64, Option<Completion>);

/// The stage on one worker.
pub fn wire<'s>(
    drafts: StreamVec<'s, u64, Draft>,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
) -> StreamVec<'s, u64, TestBatch> {
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    let ctx2 = Arc::clone(ctx);
    let batches = ctx.stages.settings.test_batches();
    let requests = drafts.flat_map(move |d: Draft| {
        let d = Rc::new(d);
        let mut out = Vec::new();
        for b in 0..batches {
            match request(&ctx2.stages, &d, b) {
                Ok((key, r)) => out.push(((Rc::clone(&d), b), key, r)),
                Err(e) => ctx2.failure.set(format!("rendering the tests prompt: {e}")),
            }
        }
        out
    });
    ask_model(
        requests,
        ctx,
        LlmStage::Tests,
        worker,
        ctx.llm_batch,
        move |(d, b): (Rc<Draft>, u64), key, generation: Generation, _| {
            let id = Some(d.problem.id);
            match first_completion(&generation, LlmStage::Tests, id) {
                Ok(c) => {
                    let (tests, judged) = judge(&d, std::slice::from_ref(c), usize::MAX);
                    Counters::add(&counters.tests_parsed, tests.len() as u64);
                    let status = judged[0].as_ref().map(|_| ());
                    let row = response_row(key, id, 0, c, status);
                    (vec![(d, b, Some(c.clone()))], vec![row])
                }
                Err(r) => {
                    collect.reject(r);
                    (vec![(d, b, None)], Vec::new())
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::{completion, draft};
    use ucoder_operators::RejectReason;

    #[test]
    fn batches_are_parsed_in_order_de_duplicated_and_salvaged_when_cut() {
        let d = draft();
        let (tests, judged) = judge(
            &d,
            &[
                completion("assert add(1, 2) == 3\nassert add(0, 0) == 0\n<TESTS_END>"),
                completion(
                    "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(1) == 1\n<TESTS_END>",
                ),
                completion("no tests here"),
            ],
            10,
        );
        let codes: Vec<&str> = tests.iter().map(|t| t.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "assert add(1, 2) == 3",
                "assert add(0, 0) == 0",
                "assert add(-1, 1) == 0"
            ]
        );
        assert!(judged[0].is_ok() && judged[1].is_ok());
        assert_eq!(
            judged[2].as_ref().unwrap_err().reason,
            RejectReason::Unparseable
        );
        let mut cut = completion("assert add(2, 2) == 4\nassert add(3, 3) == 6\nassert add(4,");
        cut.finish = FinishReason::Length;
        let (salvaged, cut_judged) = judge(&d, &[cut.clone()], 10);
        assert_eq!(
            salvaged.len(),
            2,
            "the complete lines of a cut answer are kept"
        );
        assert_eq!(
            cut_judged[0].as_ref().unwrap().dropped,
            vec![("assert add(4,".to_string(), TRUNCATED.to_string())]
        );
        // A turn that ended inside the block closes it; the malformed last line is dropped.
        cut.finish = FinishReason::Stop;
        let (ended, ended_judged) = judge(&d, &[cut], 10);
        assert_eq!(ended.len(), 2);
        let dropped = &ended_judged[0].as_ref().unwrap().dropped;
        assert_eq!(dropped.len(), 1);
        assert_ne!(dropped[0].1, TRUNCATED);
    }

    /// Every non-empty test line of every parsed batch is kept or dropped, exactly once, with a
    /// reason the rejections table can carry (the funnel adds up).
    #[test]
    fn every_test_line_is_kept_or_dropped_once_with_its_reason() {
        let d = draft();
        let batches = [
            completion(
                "assert add(1, 2) == 3\nassert add(1, 2) == 3\nassert add(1) == 1\nprint(1)\n<TESTS_END>",
            ),
            completion(
                "assert add(1,2) == 4\nassert add(5, 5) == 10\nassert add(6, 6) == 12\n<TESTS_END>",
            ),
        ];
        let (tests, judged) = judge(&d, &batches, 1);
        let lines = batches
            .iter()
            .flat_map(|c| c.text.lines())
            .filter(|l| l.starts_with("assert") || l.starts_with("print"))
            .count();
        let dropped: Vec<(&str, RejectReason)> = judged
            .iter()
            .flatten()
            .flat_map(|p| &p.dropped)
            .map(|(line, why)| (line.as_str(), drop_reason(why)))
            .collect();
        assert_eq!(tests.len() + dropped.len(), lines, "{tests:?} {dropped:?}");
        assert_eq!(tests.len(), 1);
        let reasons: Vec<RejectReason> = dropped.iter().map(|(_, r)| *r).collect();
        for expected in [
            RejectReason::Duplicate,
            RejectReason::ArityMismatch,
            RejectReason::Unparseable,
            RejectReason::Contradictory,
            RejectReason::OverLimit,
        ] {
            assert!(reasons.contains(&expected), "{expected:?} in {dropped:?}");
        }
        assert_eq!(drop_reason(TRUNCATED), RejectReason::Truncated);
    }

    #[test]
    fn tests_that_contradict_each_other_are_all_dropped() {
        let d = draft();
        let (tests, judged) = judge(
            &d,
            &[
                completion("assert add(1, 2) == 3\nassert add(2, 2) == 4\n<TESTS_END>"),
                completion(
                    "assert add(1,2) == 4\nassert add(2, 2) == 4\nassert add(0, 0) == 0\n<TESTS_END>",
                ),
            ],
            10,
        );
        let codes: Vec<&str> = tests.iter().map(|t| t.code.as_str()).collect();
        assert_eq!(codes, ["assert add(2, 2) == 4", "assert add(0, 0) == 0"]);
        let first = judged[0].as_ref().unwrap();
        assert_eq!(
            first.dropped,
            vec![(
                "assert add(1, 2) == 3".to_string(),
                CONTRADICTED.to_string()
            )]
        );
        let second = judged[1].as_ref().unwrap();
        assert!(
            second
                .dropped
                .contains(&("assert add(1,2) == 4".to_string(), CONTRADICTED.to_string()))
        );
        assert_eq!(
            second.tests.len(),
            1,
            "the repeat of add(2, 2) is a duplicate, not a contradiction"
        );
    }
}
