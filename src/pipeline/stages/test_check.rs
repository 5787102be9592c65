//! TestCheck: the sandbox runs a draft's assembled tests against its skeleton (`pass` body), so a
//! test that is not valid Python, or not a test at all, is dropped before any candidate runs it.
//! So is a test that raises a `NameError` or an `ImportError` on the skeleton: the stub cannot
//! raise those, so the test uses a name it never defines and would fail every candidate. A
//! problem with surviving tests is [`Ready`] for sampling; its solution prompt is rendered here,
//! once.
//!
//! Contract: emits one [`Ready`] per draft with at least one surviving test and collects it for
//! the `problem_set/` and `test_cases/` results ([`problem_row`], [`test_case_rows`]); files a
//! `syntax_error` (or `undefined_name`) rejection per dropped test and for a draft left without tests (or whose
//! skeleton did not load with them), a `backend_error` one when the sandbox failed.

use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    BackendError, BatchPolicy, GeneratedTest, Rating, RejectReason, Rejection, TestKind, offload,
};

use super::ask::rejection;
use super::test_assembler::Assembled;
use super::{Draft, LlmStage, solution_sampler};
use crate::backends::sandbox::sandbox_test;
use crate::pipeline::artifacts::{ProblemRow, TestCaseRow};
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::sandbox::{Job, JobResult, Limits, ProgramError, TestResult, Verdict};

/// A problem ready for sampling: its draft, validated tests and the solution prompt.
#[derive(Debug)]
pub struct Ready {
    pub draft: Draft,
    pub tests: Arc<[GeneratedTest]>,
    pub prompt: String,
}

/// The sandbox job that runs `tests` against `draft`'s skeleton.
pub fn job(draft: &Draft, tests: &[GeneratedTest], limits: &Limits) -> Job {
    Job {
        program: draft.skeleton_code().to_string(),
        tests: tests.iter().map(sandbox_test).collect(),
        limits: Some(limits.clone()),
        early_stop: None,
        float_tolerance: 0.0,
    }
}

/// Judges the check: the tests that ran (none if the skeleton did not load with them or the
/// sandbox failed), and the rejections of the others.
pub fn judge(
    draft: &Draft,
    tests: Vec<GeneratedTest>,
    result: Result<JobResult, BackendError>,
) -> (Vec<GeneratedTest>, Vec<Rejection>) {
    match result {
        Ok(r) => judge_run(draft, tests, r.program_error.as_ref(), &r.tests),
        Err(e) => {
            let id = Some(draft.problem.id);
            let reason = RejectReason::BackendError;
            (
                Vec::new(),
                vec![rejection(LlmStage::Tests, id, reason, e.to_string(), "")],
            )
        }
    }
}

/// Errors a test raises on the skeleton that are its own fault, not the missing body's.
const TEST_OWN_ERRORS: [&str; 4] = [
    "NameError",
    "UnboundLocalError",
    "ImportError",
    "ModuleNotFoundError",
];

/// Judges a check that ran: the skeleton's load error, if any, and one result per test.
fn judge_run(
    draft: &Draft,
    tests: Vec<GeneratedTest>,
    program_error: Option<&ProgramError>,
    results: &[TestResult],
) -> (Vec<GeneratedTest>, Vec<Rejection>) {
    let id = Some(draft.problem.id);
    let reject = |detail: String, raw: &str| {
        rejection(LlmStage::Tests, id, RejectReason::SyntaxError, detail, raw)
    };
    if program_error.is_some() || results.len() != tests.len() {
        let detail = format!("the skeleton did not load with the tests: {program_error:?}");
        return (Vec::new(), vec![reject(detail, draft.skeleton_code())]);
    }
    let mut kept = Vec::new();
    let mut rejected = Vec::new();
    for (test, r) in tests.into_iter().zip(results) {
        match &r.verdict {
            Verdict::Error { kind } if kind == "InvalidTest" || kind == "SyntaxError" => {
                let detail = format!("{kind}: {}", r.detail.clone().unwrap_or_default());
                rejected.push(reject(detail, &test.code));
            }
            // The stub's body is `pass`: it cannot raise a NameError or an ImportError itself, so
            // such an error is the test's own (a name or module it never defines) and would fail
            // every candidate alike.
            Verdict::Error { kind } if TEST_OWN_ERRORS.contains(&kind.as_str()) => {
                let detail = format!(
                    "{kind} on the skeleton: the test uses a name or module it never defines"
                );
                let reason = RejectReason::UndefinedName;
                rejected.push(rejection(LlmStage::Tests, id, reason, detail, &test.code));
            }
            _ => kept.push(test),
        }
    }
    if kept.is_empty() {
        rejected.push(reject("no test survived the syntax check".to_string(), ""));
    }
    (kept, rejected)
}

/// The `problem_set/` row of a ready problem.
pub fn problem_row(draft: &Draft, tests: &[GeneratedTest]) -> ProblemRow {
    let rating = draft.rating.clone().unwrap_or_else(|| Rating {
        problem_id: draft.problem.id,
        score: 0.0,
        difficulty: String::new(),
        summary: String::new(),
    });
    let p = &draft.problem;
    ProblemRow {
        problem_id: p.id.0,
        request: draft.request,
        category: p.category.as_str().to_string(),
        title: p.title.clone(),
        description: p.description.clone(),
        signature: p.signature.clone(),
        example: p.example.clone(),
        hint: p.hint.clone(),
        score: rating.score,
        difficulty: rating.difficulty,
        skeleton: draft.skeleton_code().to_string(),
        tests: tests.len() as u32,
    }
}

/// The `test_cases/` rows of a ready problem.
pub fn test_case_rows<'a>(
    draft: &'a Draft,
    tests: &'a [GeneratedTest],
) -> impl Iterator<Item = TestCaseRow> + 'a {
    tests.iter().map(move |t| TestCaseRow {
        problem_id: draft.problem.id.0,
        test_id: t.id.0,
        kind: match t.kind {
            TestKind::Assert => "assert",
            TestKind::Call => "call",
        }
        .to_string(),
        code: t.code.clone(),
    })
}

/// The stage on one worker.
pub fn wire<'s>(
    assembled: StreamVec<'s, u64, Assembled>,
    ctx: &Arc<GraphContext>,
    collect: &Collector,
) -> StreamVec<'s, u64, Rc<Ready>> {
    let limits = ctx.check_limits.clone();
    let jobs = assembled.map(move |(d, tests): Assembled| {
        let job = job(&d, &tests, &limits);
        ((d, tests), job)
    });
    let collect = collect.clone();
    let ctx2 = Arc::clone(ctx);
    offload(
        jobs,
        "TestCheck",
        ctx.check.clone(),
        BatchPolicy {
            max_batch: ctx.exec_batch,
        },
    )
    .flat_map(move |((d, tests), result)| {
        let (kept, rejected) = judge(&d, tests, result);
        for r in rejected {
            collect.reject(r);
        }
        if kept.is_empty() {
            return None;
        }
        let prompt = match solution_sampler::prompt(&ctx2.stages, &d) {
            Ok(p) => p,
            Err(e) => {
                ctx2.failure
                    .set(format!("rendering the solution prompt: {e}"));
                return None;
            }
        };
        let counters = &ctx2.counters;
        Counters::add(&counters.tests_kept, kept.len() as u64);
        Counters::add(&counters.problems_ready, 1);
        Counters::add(
            &counters.candidates_target,
            ctx2.stages.settings.samples as u64,
        );
        let tests: Arc<[GeneratedTest]> = Arc::from(kept);
        collect
            .0
            .borrow_mut()
            .ready
            .push(((*d).clone(), Arc::clone(&tests)));
        Some(Rc::new(Ready {
            draft: (*d).clone(),
            tests,
            prompt,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::stages::test_support::draft;
    use std::time::Duration;

    fn ran(verdict: Verdict, detail: Option<&str>) -> TestResult {
        TestResult {
            verdict,
            duration: Duration::ZERO,
            output_hash: None,
            value: None,
            checked_in_child: false,
            detail: detail.map(str::to_string),
        }
    }

    #[test]
    fn invalid_tests_are_dropped_and_failing_ones_kept() {
        let d = draft();
        let test = |code: &str| GeneratedTest::new(d.problem.id, TestKind::Assert, code);
        let tests = vec![test("assert add(1, 2) == 3"), test("assert add(1,")];
        let results = [
            ran(Verdict::Fail, None),
            ran(
                Verdict::Error {
                    kind: "SyntaxError".into(),
                },
                Some("line 1"),
            ),
        ];
        let (kept, rejected) = judge_run(&d, tests.clone(), None, &results);
        assert_eq!(
            kept,
            tests[..1],
            "a test the skeleton fails is still a test"
        );
        assert_eq!(rejected.len(), 1);
        assert_eq!(rejected[0].detail, "SyntaxError: line 1");
        assert_eq!(rejected[0].raw, "assert add(1,");

        let (kept, rejected) = judge_run(&d, tests[1..].to_vec(), None, &results[1..]);
        assert!(kept.is_empty());
        assert_eq!(rejected.len(), 2, "the test, then the empty set");

        let broken = ProgramError {
            kind: "ImportError".into(),
            message: "no module".into(),
        };
        let (kept, rejected) = judge_run(&d, tests, Some(&broken), &results);
        assert!(kept.is_empty());
        assert_eq!(rejected[0].raw, d.skeleton_code());
    }

    #[test]
    fn a_test_that_raises_its_own_name_error_on_the_skeleton_is_dropped() {
        let d = draft();
        let test = |code: &str| GeneratedTest::new(d.problem.id, TestKind::Assert, code);
        let tests = vec![
            test("assert add(1, 2) == expected"),
            test("assert len(add(1, 2)) == 1"),
            test("import numpy\nassert add(1, 2) == 3"),
        ];
        let error = |kind: &str| Verdict::Error { kind: kind.into() };
        let results = [
            ran(error("NameError"), None),
            ran(error("TypeError"), None),
            ran(error("ModuleNotFoundError"), None),
        ];
        let (kept, rejected) = judge_run(&d, tests.clone(), None, &results);
        assert_eq!(
            kept,
            tests[1..2],
            "a TypeError from the stub's None is the missing body's"
        );
        assert_eq!(rejected.len(), 2);
        assert!(rejected[0].detail.starts_with("NameError on the skeleton"));
        assert_eq!(rejected[0].reason, RejectReason::UndefinedName);
        assert_eq!(rejected[1].raw, "import numpy\nassert add(1, 2) == 3");
    }
}
