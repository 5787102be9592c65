//! SkeletonCheck: the sandbox runs each skeleton with one test, `assert callable(name)`, so a
//! skeleton that does not load (syntax error, bad import) or does not define the function is
//! dropped before any test is generated for it.
//!
//! Contract: emits each draft whose skeleton loads and whose check passes; files a
//! `syntax_error`, `missing_function` or `backend_error` rejection for the others.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{BackendError, BatchPolicy, RejectReason, offload};

use super::ask::rejection;
use super::{Draft, LlmStage};
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;
use crate::sandbox::{Job, JobResult, Limits, ProgramError, TestCase, Verdict};

/// The sandbox job that checks `draft`'s skeleton.
pub fn job(draft: &Draft, limits: &Limits) -> Job {
    let skeleton = draft.skeleton.as_ref().expect("set by the SkeletonWriter");
    Job {
        program: skeleton.code.clone(),
        tests: vec![TestCase::Assert {
            source: format!("assert callable({})", skeleton.function_name),
        }],
        limits: Some(limits.clone()),
        early_stop: None,
        float_tolerance: 0.0,
    }
}

/// Judges the check's result: `Ok` when the skeleton loaded and defines the function.
pub fn judge(result: Result<JobResult, BackendError>) -> Result<(), (RejectReason, String)> {
    match result {
        Err(e) => Err((RejectReason::BackendError, e.to_string())),
        Ok(r) => judge_run(
            r.program_error.as_ref(),
            r.tests.first().map(|t| &t.verdict),
        ),
    }
}

/// Judges a check that ran: the program's load error, if any, and the `callable` test's verdict.
fn judge_run(
    program_error: Option<&ProgramError>,
    check: Option<&Verdict>,
) -> Result<(), (RejectReason, String)> {
    match (program_error, check) {
        (Some(e), _) => Err((
            RejectReason::SyntaxError,
            format!("{}: {}", e.kind, e.message),
        )),
        (None, Some(Verdict::Pass)) => Ok(()),
        (None, v) => Err((
            RejectReason::MissingFunction,
            format!("`callable(name)` check gave {v:?}"),
        )),
    }
}

/// The stage on one worker.
pub fn wire<'s>(
    skeletons: StreamVec<'s, u64, Draft>,
    ctx: &Arc<GraphContext>,
    collect: &Collector,
) -> StreamVec<'s, u64, Draft> {
    let limits = ctx.check_limits.clone();
    let jobs = skeletons.map(move |d: Draft| {
        let job = job(&d, &limits);
        (d, job)
    });
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    let tests_per_problem = ctx.stages.settings.tests_per_problem as u64;
    offload(
        jobs,
        "SkeletonCheck",
        ctx.check.clone(),
        BatchPolicy {
            max_batch: ctx.exec_batch,
        },
    )
    .flat_map(move |(d, result)| match judge(result) {
        Ok(()) => {
            Counters::add(&counters.skeletons, 1);
            Counters::add(&counters.tests_target, tests_per_problem);
            Some(d)
        }
        Err((reason, detail)) => {
            collect.reject(rejection(
                LlmStage::Skeletons,
                Some(d.problem.id),
                reason,
                detail,
                d.skeleton_code(),
            ));
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skeleton_passes_only_when_it_loads_and_defines_the_function() {
        assert_eq!(judge_run(None, Some(&Verdict::Pass)), Ok(()));
        let broken = ProgramError {
            kind: "SyntaxError".into(),
            message: "invalid syntax".into(),
        };
        assert_eq!(
            judge_run(Some(&broken), None),
            Err((
                RejectReason::SyntaxError,
                "SyntaxError: invalid syntax".into()
            ))
        );
        let (reason, detail) = judge_run(None, Some(&Verdict::Fail)).unwrap_err();
        assert_eq!(reason, RejectReason::MissingFunction);
        assert_eq!(detail, "`callable(name)` check gave Some(Fail)");
        let failed = BackendError {
            backend: "sandbox".into(),
            message: "gone".into(),
        };
        assert_eq!(
            judge(Err(failed)).unwrap_err().0,
            RejectReason::BackendError
        );
    }
}
