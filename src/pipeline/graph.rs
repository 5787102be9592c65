//! The IPC iteration as one timely dataflow (docs/ARCHITECTURE.md, "The run"); this file only
//! connects the stages of [`stages`](super::stages), each of which owns its logic:
//!
//! ```text
//! request indices ─► ProblemGenerator ─► NearDuplicateFilter (worker 0, request order)
//!   ─► exchange by problem ─► Rater ─► SkeletonWriter ─► SkeletonCheck (sandbox)
//!   ─► TestGenerator (batches) ─► TestAssembler ─► TestCheck (sandbox)
//!   ─► SolutionSampler (round r at time r + 1) ─► Executor (sandbox)
//!   ─► SignatureGrouper + Selector (differential) ─► join code and prompt ─► SftSink (worker 0)
//! ```
//!
//! Every model and sandbox call goes through `offload`: the operator hands batches to a backend
//! pool and is woken when they come back, so the engine and the sandbox work at once and no
//! worker ever blocks. Each LLM stage and the executor are `checkpointed`: a request whose answer
//! is already in the stage's Parquet checkpoint is answered from there, and new answers are
//! committed (one part per batch of replies) before their records move on. Everything after the
//! problem filter is routed by problem id, so `-w N` (and `--processes P`) change where work
//! runs, not what it produces. After the graph, every worker's results go to worker 0
//! ([`super::gather`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use timely::dataflow::Scope;
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

use super::context::{Collector, GraphContext};
use super::gather::{Gathered, gather_at_worker_zero};
use super::results::Results;
use super::stages::{
    executor, near_duplicate_filter, problem_generator, rater, selector, sft_sink, skeleton_check,
    skeleton_writer, solution_sampler, test_assembler, test_check, test_generator,
};

/// Builds and runs the graph on one worker until the iteration is complete, then gathers every
/// worker's [`Results`] at worker 0 ([`gather_at_worker_zero`]). Returns what this worker
/// gathered, or the first failure of the run.
pub fn run_worker(
    worker: &mut timely::worker::Worker,
    ctx: &Arc<GraphContext>,
) -> Result<Gathered, String> {
    let operator_seconds = log_operator_time(worker);
    let collect = Collector::new(Arc::clone(&ctx.reporter));
    {
        let collect = collect.clone();
        let ctx = Arc::clone(ctx);
        worker.dataflow::<u64, _, _>(move |scope| build(scope, &ctx, &collect));
    }
    loop {
        let active = worker.step_or_park(Some(Duration::from_millis(50)));
        if let Some(message) = ctx.failure.get() {
            return Err(message);
        }
        if !active {
            break;
        }
    }
    // The process-wide figures travel once per process, with its first worker's part.
    let first_of_process = worker.index().is_multiple_of(ctx.local_workers);
    let part = {
        let mut c = collect.0.borrow_mut();
        Results {
            ready: std::mem::take(&mut c.ready)
                .into_iter()
                .map(|(draft, tests)| (draft, tests.to_vec()))
                .collect(),
            rejections: std::mem::take(&mut c.rejections),
            votes: std::mem::take(&mut c.votes),
            clusters: c
                .clusters
                .iter()
                .filter(|(_, diff)| **diff > 0)
                .map(|((key, size), _)| (key.clone(), *size as u32))
                .collect(),
            selections: c
                .selections
                .iter()
                .filter(|(_, diff)| **diff > 0)
                .map(|(s, _)| s.clone())
                .collect(),
            sft: c.sft.take(),
            operator_seconds: operator_seconds.borrow().clone(),
            counters: match first_of_process {
                true => ctx.counters.values(),
                false => Default::default(),
            },
            stage_times: match first_of_process {
                true => ctx.clocks.times(),
                false => Vec::new(),
            },
        }
    };
    Ok(gather_at_worker_zero(worker, part))
}

/// Connects the stages on one worker.
fn build<'s>(scope: Scope<'s, u64>, ctx: &Arc<GraphContext>, collect: &Collector) {
    let worker = scope.index() as u32;
    let problems = problem_generator::wire(scope, ctx, collect);
    let drafts = near_duplicate_filter::wire(problems, ctx, collect);
    let rated = rater::wire(drafts, ctx, worker, collect);
    let skeletons = skeleton_writer::wire(rated, ctx, worker, collect);
    let checked = skeleton_check::wire(skeletons, ctx, collect);
    let batches = test_generator::wire(checked, ctx, worker, collect);
    let assembled = test_assembler::wire(batches, ctx, collect);
    let ready = test_check::wire(assembled, ctx, collect);
    let candidates = solution_sampler::wire(ready.clone(), ctx, worker, collect);
    let verdicts = executor::wire(candidates.clone(), ctx, worker, collect);
    let selected = selector::wire(verdicts, candidates, ready, &ctx.selection, collect);
    sft_sink::wire(selected, &ctx.sft, &ctx.failure, scope.index(), collect);
}

/// Registers a logger that sums the time each operator is scheduled.
fn log_operator_time(worker: &mut timely::worker::Worker) -> Rc<RefCell<BTreeMap<String, f64>>> {
    let seconds: Rc<RefCell<BTreeMap<String, f64>>> = Rc::default();
    let sink = Rc::clone(&seconds);
    let mut names: HashMap<usize, String> = HashMap::new();
    let mut started: HashMap<usize, Duration> = HashMap::new();
    if let Some(mut registry) = worker.log_register() {
        registry.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
            let Some(events) = data else { return };
            for (at, event) in events.iter() {
                match event {
                    TimelyEvent::Operates(op) => {
                        names.insert(op.id, op.name.clone());
                    }
                    TimelyEvent::Schedule(s) => match s.start_stop {
                        StartStop::Start => {
                            started.insert(s.id, *at);
                        }
                        StartStop::Stop => {
                            if let Some(start) = started.remove(&s.id) {
                                let name = names
                                    .get(&s.id)
                                    .cloned()
                                    .unwrap_or_else(|| format!("operator {}", s.id));
                                *sink.borrow_mut().entry(name).or_default() +=
                                    at.saturating_sub(start).as_secs_f64();
                            }
                        }
                    },
                    _ => {}
                }
            }
        });
    }
    seconds
}
