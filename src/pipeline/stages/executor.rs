//! Executor: every candidate runs on its problem's whole test set in the sandbox; the per-test
//! outcomes (and output hashes) become the candidate's execution signature.
//!
//! Contract: emits one [`CandidateVerdict`] per candidate whose execution covers the test set exactly,
//! and checkpoints one `executions/` row per (candidate, test); an execution committed by an
//! interrupted run is replayed instead of run again. A failed or incomplete execution is filed
//! as a `backend_error` or `incomplete_execution` rejection.

use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;
use ucoder_operators::{
    Answers, BackendError, BatchPolicy, Candidate, CandidateId, CandidateVerdict, ExecJob,
    Execution, Outcome, RejectReason, TestRun, checkpointed,
};

use super::LlmStage;
use super::ask::{committer, rejection};
use super::test_check::Ready;
use crate::backends::sandbox::NONDETERMINISTIC;
use crate::pipeline::artifacts::ExecutionRow;
use crate::pipeline::context::{Collector, GraphContext};
use crate::pipeline::progress::Counters;

/// The sandbox job of `candidate`: its program on the whole test set.
pub fn job(ready: &Ready, candidate: &Candidate) -> ExecJob {
    ExecJob {
        problem_id: candidate.problem_id,
        candidate_id: candidate.id,
        entry_point: ready.draft.function_name().to_string(),
        code: candidate.code.clone(),
        tests: Arc::clone(&ready.tests),
    }
}

/// The stage on one worker.
pub fn wire<'s>(
    candidates: StreamVec<'s, u64, (Rc<Ready>, Candidate)>,
    ctx: &Arc<GraphContext>,
    worker: u32,
    collect: &Collector,
) -> StreamVec<'s, u64, CandidateVerdict> {
    let requests = candidates.map(|(r, c): (Rc<Ready>, Candidate)| {
        let job = job(&r, &c);
        let key = c.id.0;
        ((r, c), key, job)
    });
    let lookup = {
        let ctx = Arc::clone(ctx);
        move |key: u64| {
            let found = ctx.executions.get(CandidateId(key)).cloned();
            if found.is_some() {
                Counters::add(&ctx.counters.replayed_executions, 1);
            }
            found.map(Ok)
        }
    };
    let collect = collect.clone();
    let counters = Arc::clone(&ctx.counters);
    let kind = ctx.selection.signature;
    checkpointed(
        requests,
        Answers {
            name: "Executor".into(),
            lookup,
            backend: ctx.exec.clone(),
            policy: BatchPolicy {
                max_batch: ctx.exec_batch,
            },
        },
        committer::<ExecutionRow>(ctx.iter_dir.join("executions"), worker, ctx.failure.clone()),
        move |(r, c): (Rc<Ready>, Candidate), _key, result: Result<Execution, BackendError>, _| {
            let reject = |reason, detail: String| {
                rejection(
                    LlmStage::Candidates,
                    Some(c.problem_id),
                    reason,
                    detail,
                    &c.code,
                )
            };
            let execution = match result {
                Ok(e) => e,
                Err(e) => {
                    collect.reject(reject(RejectReason::BackendError, e.to_string()));
                    return (Vec::new(), Vec::new());
                }
            };
            Counters::add(&counters.executions, 1);
            Counters::add(&counters.test_runs, execution.results.len() as u64);
            let count = |f: &dyn Fn(&TestRun) -> bool| {
                execution.results.iter().filter(|r| f(r)).count() as u64
            };
            Counters::add(
                &counters.test_runs_skipped,
                count(&|r| r.outcome == Outcome::Skipped),
            );
            Counters::add(&counters.test_runs_in_child, count(&|r| r.decided_in_child));
            let nondeterministic = execution
                .results
                .first()
                .is_some_and(|r| r.detail.as_deref() == Some(NONDETERMINISTIC));
            Counters::add(&counters.nondeterministic, u64::from(nondeterministic));
            let rows: Vec<ExecutionRow> = ExecutionRow::of(&execution).collect();
            let test_ids: Vec<_> = r.tests.iter().map(|t| t.id).collect();
            match CandidateVerdict::new(&c, &execution, &test_ids, kind) {
                Ok(v) => (vec![v], rows),
                Err(e) => {
                    collect.reject(reject(RejectReason::IncompleteExecution, e.to_string()));
                    (Vec::new(), rows)
                }
            }
        },
    )
}
