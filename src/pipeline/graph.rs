//! The IPC iteration as one timely dataflow (DESIGN §2):
//!
//! ```text
//! request indices ─► ProblemGenerator ─► NearDuplicateFilter (worker 0, request order)
//!   ─► exchange by problem ─► Rater ─► SkeletonWriter ─► SkeletonCheck (sandbox)
//!   ─► TestGenerator (batches) ─► TestAssembler ─► TestCheck (sandbox)
//!   ─► SolutionSampler (round r at time r + 1) ─► Executor (sandbox)
//!   ─► SignatureGrouper + Selector (differential) ─► join code and prompt ─► SftSink (worker 0)
//! ```
//!
//! Every model and sandbox call goes through [`offload`]: the operator hands batches to a
//! backend pool and is woken when they come back, so the engine and the sandbox work at once and
//! no worker ever blocks. Each LLM stage and the executor are [`checkpointed`]: a request whose
//! answer is already in the stage's Parquet checkpoint is answered from there, and new answers
//! are committed (one part per batch of replies) before their records move on. Everything after
//! the problem filter is routed by problem id, so `-w N` changes where work runs, not what it
//! produces.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange as ExchangePact, Pipeline};
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::operators::{Concat, Exchange};
use timely::dataflow::{Scope, StreamVec};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use ucoder_operators::{
    BackendError, BackendHandle, BatchPolicy, Candidate, CandidateId, ClusterKey, Completion,
    ExecJob, Execution, Generation, GenerationRequest, ProblemId, RejectReason, Rejection,
    Selection, SelectionConfig, TestCase, Verdict, as_insertions, consensus, offload,
};

use super::artifacts::{ExecutionMemo, ExecutionRow, ResponseMemo, ResponseRow};
use super::progress::Counters;
use super::stages::{self, Draft, LlmStage, StagePrompts, response_row};
use crate::dedup::NearDuplicateFilter;
use crate::prompts::PromptError;
use crate::sandbox::{self, Job, JobResult, Limits, Verdict as SandboxVerdict};
use crate::sft::sink::SftSummary;
use crate::store::{Record, Stage};

/// A problem ready for sampling: its draft, validated tests and the solution prompt.
#[derive(Debug)]
pub struct Ready {
    pub draft: Draft,
    pub tests: Arc<[TestCase]>,
    pub prompt: String,
}

/// The first failure of any operator; the workers stop when it is set.
#[derive(Debug, Clone, Default)]
pub struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    pub fn set(&self, message: impl Into<String>) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(message.into());
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Everything the workers share: backends, checkpoints, settings, counters.
pub struct GraphContext {
    pub stages: StagePrompts,
    pub selection: SelectionConfig,
    pub dedup_threshold: f32,
    pub problem_count: u64,
    /// One handle per LLM stage, in [`LlmStage::ALL`] order.
    pub llm: Vec<BackendHandle<GenerationRequest, Generation>>,
    pub exec: BackendHandle<ExecJob, Result<Execution, BackendError>>,
    pub check: BackendHandle<Job, Result<JobResult, BackendError>>,
    pub check_limits: Limits,
    /// Committed completions per LLM stage, in [`LlmStage::ALL`] order.
    pub memos: Vec<ResponseMemo>,
    pub executions: ExecutionMemo,
    pub iter_dir: PathBuf,
    /// Requests per engine call for single-sample stages, and sample rows per call for sampling.
    pub llm_batch: usize,
    pub sample_rows: usize,
    pub exec_batch: usize,
    pub counters: Arc<Counters>,
    pub failure: Failure,
    pub sft: Arc<SftWriter>,
}

/// What one worker hands back when the iteration is done.
#[derive(Debug, Default)]
pub struct WorkerOutput {
    pub ready: Vec<(Draft, Arc<[TestCase]>)>,
    pub rejections: Vec<Rejection>,
    /// Final clusters ((problem, signature), size) owned by this worker.
    pub clusters: Vec<(ClusterKey, u32)>,
    /// Final (selection, SFT prompt, selected code): worker 0 only.
    pub selections: Vec<(Selection, String, String)>,
    /// What the SftSink wrote: worker 0 only.
    pub sft: Option<SftSummary>,
    /// Seconds each operator was scheduled, by operator name.
    pub operator_seconds: BTreeMap<String, f64>,
}

/// Worker-local collectors the operators write into.
#[derive(Default)]
struct Collect {
    ready: Vec<(Draft, Arc<[TestCase]>)>,
    rejections: Vec<Rejection>,
    clusters: BTreeMap<(ClusterKey, isize), isize>,
    selections: BTreeMap<(Selection, String, String), isize>,
    sft: Option<SftSummary>,
}

/// Writes the SFT shards for the final selections (selection, prompt, code), once.
pub type SftWriter =
    dyn Fn(&[(Selection, String, String)]) -> Result<SftSummary, String> + Send + Sync;

/// Commits checkpoint rows of one stage for one worker, opening the stage folder lazily.
struct Checkpoint<R: Record> {
    dir: PathBuf,
    worker: u32,
    stage: Option<Stage<R>>,
    failure: Failure,
}

impl<R: Record> Checkpoint<R> {
    fn new(dir: PathBuf, worker: u32, failure: Failure) -> Self {
        Checkpoint {
            dir,
            worker,
            stage: None,
            failure,
        }
    }

    fn commit(&mut self, rows: &[R]) {
        if rows.is_empty() {
            return;
        }
        let result = match &mut self.stage {
            Some(stage) => stage.commit(rows),
            None => Stage::<R>::open(&self.dir, self.worker).and_then(|mut stage| {
                let r = stage.commit(rows);
                self.stage = Some(stage);
                r
            }),
        };
        if let Err(e) = result {
            self.failure.set(format!("writing a checkpoint: {e}"));
        }
    }
}

/// Routes `(context, key, request)` through `backend`, answering keys that `lookup` knows from
/// the checkpoint instead; `judge` turns each answer into records and checkpoint rows, and rows of
/// fresh answers are committed before the records are emitted.
#[allow(clippy::too_many_arguments)]
fn checkpointed<'s, C, Req, Resp, Row, Out>(
    requests: StreamVec<'s, u64, (C, u64, Req)>,
    name: &str,
    lookup: impl Fn(u64) -> Option<Resp> + 'static,
    backend: BackendHandle<Req, Resp>,
    max_batch: usize,
    mut checkpoint: Checkpoint<Row>,
    mut judge: impl FnMut(C, u64, Resp, bool) -> (Vec<Out>, Vec<Row>) + 'static,
) -> StreamVec<'s, u64, Out>
where
    C: 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
    Row: Record + 'static,
    Out: 'static,
{
    let (hits, misses) =
        requests.ok_err::<Vec<_>, _, Vec<_>, _, _>(move |(c, key, req)| match lookup(key) {
            Some(resp) => Ok((c, key, resp, false)),
            None => Err(((c, key), req)),
        });
    let fresh = offload(
        misses,
        name,
        backend,
        BatchPolicy {
            max_batch: max_batch.max(1),
        },
    )
    .map(|((c, key), resp)| (c, key, resp, true));
    hits.concat(fresh)
        .unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
            Pipeline,
            &format!("{name}Checkpoint"),
            move |_capability, _info| {
                move |input, output| {
                    input.for_each_stamp(|capability, data| {
                        let mut outs = Vec::new();
                        let mut rows = Vec::new();
                        for batch in data {
                            for (c, key, resp, fresh) in batch.drain(..) {
                                let (o, r) = judge(c, key, resp, fresh);
                                outs.extend(o);
                                if fresh {
                                    rows.extend(r);
                                }
                            }
                        }
                        checkpoint.commit(&rows);
                        output.session(&capability).give_iterator(outs.into_iter());
                    });
                }
            },
        )
}

/// Applies `logic` to every record at its own time (a `flat_map` whose closure may keep state).
fn stateful<'s, D: 'static, Out: 'static>(
    stream: StreamVec<'s, u64, D>,
    name: &str,
    mut logic: impl FnMut(D, &mut Vec<Out>) + 'static,
) -> StreamVec<'s, u64, Out> {
    stream.unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each_stamp(|capability, data| {
                let mut outs = Vec::new();
                for batch in data {
                    for d in batch.drain(..) {
                        logic(d, &mut outs);
                    }
                }
                output.session(&capability).give_iterator(outs.into_iter());
            });
        }
    })
}

/// The first completion of a generation, or the rejection its failure becomes.
fn first_completion(
    generation: &Generation,
    stage: LlmStage,
    problem: Option<ProblemId>,
) -> Result<&Completion, Rejection> {
    match generation {
        Ok(completions) => completions.first().ok_or_else(|| {
            stages::rejection(
                stage,
                problem,
                RejectReason::BackendError,
                "the backend returned no completion",
                "",
            )
        }),
        Err(e) => Err(stages::rejection(
            stage,
            problem,
            RejectReason::BackendError,
            e.to_string(),
            "",
        )),
    }
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

/// Answers of an LLM stage already committed by an interrupted run, by request key.
fn response_lookup(
    ctx: &Arc<GraphContext>,
    stage: LlmStage,
) -> impl Fn(u64) -> Option<Generation> + 'static {
    let ctx = Arc::clone(ctx);
    move |key: u64| {
        let found = ctx.memos[stage as usize].get(key).cloned();
        if let Some(completions) = &found {
            Counters::add(&ctx.counters.replayed_completions, completions.len() as u64);
        }
        found.map(Ok)
    }
}

/// The checkpoint of an LLM stage for `worker`.
fn response_checkpoint(
    ctx: &GraphContext,
    stage: LlmStage,
    worker: u32,
) -> Checkpoint<ResponseRow> {
    Checkpoint::new(
        ctx.iter_dir.join(stage.dir_name()),
        worker,
        ctx.failure.clone(),
    )
}

/// Where rejected responses and records go (worker-local).
#[derive(Clone)]
struct Rejects(Rc<RefCell<Collect>>);

impl Rejects {
    fn push(&self, rejection: Rejection) {
        self.0.borrow_mut().rejections.push(rejection);
    }
}

/// A stage that asks the model one question per draft (Rater, SkeletonWriter): `judge` either
/// completes the draft with the answer or rejects it.
fn draft_stage<'s>(
    drafts: StreamVec<'s, u64, Draft>,
    stage: LlmStage,
    ctx: &Arc<GraphContext>,
    worker: u32,
    rejects: &Rejects,
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
    let rejects = rejects.clone();
    checkpointed(
        requests,
        stage.operator_name(),
        response_lookup(ctx, stage),
        ctx.llm[stage as usize].clone(),
        ctx.llm_batch,
        response_checkpoint(ctx, stage, worker),
        move |mut d: Draft, key, generation: Generation, _| {
            let id = Some(d.problem.id);
            let completion = match first_completion(&generation, stage, id) {
                Ok(c) => c,
                Err(r) => {
                    rejects.push(r);
                    return (Vec::new(), Vec::new());
                }
            };
            let judged = judge(&mut d, completion);
            let row = response_row(key, id, 0, None, completion, judged.as_ref().map(|_| ()));
            match judged {
                Ok(()) => (vec![d], vec![row]),
                Err(r) => {
                    rejects.push(r);
                    (Vec::new(), vec![row])
                }
            }
        },
    )
}

/// Builds and runs the graph on one worker until the iteration is complete (or a failure).
pub fn run_worker(worker: &mut timely::worker::Worker, ctx: &Arc<GraphContext>) -> WorkerOutput {
    let operator_seconds = log_operator_time(worker);
    let collect: Rc<RefCell<Collect>> = Rc::default();
    {
        let collect = Rc::clone(&collect);
        let ctx = Arc::clone(ctx);
        worker.dataflow::<u64, _, _>(move |scope| build(scope, &ctx, &collect));
    }
    loop {
        let active = worker.step_or_park(Some(Duration::from_millis(50)));
        if ctx.failure.get().is_some() || !active {
            break;
        }
    }
    let mut output = WorkerOutput {
        operator_seconds: operator_seconds.borrow().clone(),
        ..Default::default()
    };
    let mut c = collect.borrow_mut();
    output.ready = std::mem::take(&mut c.ready);
    output.rejections = std::mem::take(&mut c.rejections);
    output.clusters = c
        .clusters
        .iter()
        .filter(|(_, diff)| **diff > 0)
        .map(|((key, size), _)| (key.clone(), *size as u32))
        .collect();
    output.selections = c
        .selections
        .iter()
        .filter(|(_, diff)| **diff > 0)
        .map(|(s, _)| s.clone())
        .collect();
    output.sft = c.sft.take();
    output
}

fn build<'s>(scope: Scope<'s, u64>, ctx: &Arc<GraphContext>, collect: &Rc<RefCell<Collect>>) {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    let worker = index as u32;
    let counters = Arc::clone(&ctx.counters);
    let reject = Rejects(Rc::clone(collect));
    let memo = |stage: LlmStage| response_lookup(ctx, stage);
    let checkpoint = |stage: LlmStage| response_checkpoint(ctx, stage, worker);
    let handle = |stage: LlmStage| ctx.llm[stage as usize].clone();

    // 1. ProblemGenerator: request i (category i mod 5) on worker i mod peers.
    let problem_requests = {
        let ctx = Arc::clone(ctx);
        (0..ctx.problem_count)
            .filter(move |i| i % peers == index)
            .collect::<Vec<u64>>()
            .to_stream(scope)
            .flat_map(move |i| match ctx.stages.problem(i) {
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
    let problems = {
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        checkpointed(
            problem_requests,
            LlmStage::Problems.operator_name(),
            memo(LlmStage::Problems),
            handle(LlmStage::Problems),
            ctx.llm_batch,
            checkpoint(LlmStage::Problems),
            move |(category, seed), i, generation: Generation, _fresh| {
                Counters::add(&counters.problems_answered, 1);
                let completion = match first_completion(&generation, LlmStage::Problems, None) {
                    Ok(c) => c,
                    Err(r) => {
                        reject.push(r);
                        return (vec![(i, None)], Vec::new());
                    }
                };
                let judged = stages::judge_problem(category, seed, completion);
                let row = response_row(
                    i,
                    None,
                    0,
                    judged.as_ref().ok().map(|p| p.id.0),
                    completion,
                    judged.as_ref().map(|_| ()),
                );
                let problem = match judged {
                    Ok(p) => {
                        Counters::add(&counters.problems_parsed, 1);
                        Some(p)
                    }
                    Err(r) => {
                        reject.push(r);
                        None
                    }
                };
                (vec![(i, problem)], vec![row])
            },
        )
    };

    // 2. NearDuplicateFilter: all problems on worker 0, admitted in request order, so the first
    //    of a group of near-duplicates wins whatever the arrival order.
    let drafts = {
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let mut filter = NearDuplicateFilter::new(ctx.dedup_threshold);
        let mut next = 0u64;
        let mut waiting: BTreeMap<u64, Option<ucoder_operators::Problem>> = BTreeMap::new();
        stateful(
            problems.exchange(|_| 0),
            "NearDuplicateFilter",
            move |(i, problem), out: &mut Vec<Draft>| {
                waiting.insert(i, problem);
                while let Some(problem) = waiting.remove(&next) {
                    let request = next;
                    next += 1;
                    let Some(problem) = problem else { continue };
                    match filter.admit(&problem.signature, &problem.description) {
                        Ok(()) => {
                            Counters::add(&counters.problems_unique, 1);
                            out.push(Draft {
                                request,
                                problem,
                                rating: None,
                                skeleton: None,
                            });
                        }
                        Err(duplicate) => reject.push(Rejection {
                            stage: ucoder_operators::Stage::Problem,
                            problem_id: Some(problem.id),
                            reason: RejectReason::Duplicate,
                            detail: format!("{duplicate:?}"),
                            raw: format!("{}\n{}", problem.signature, problem.description),
                        }),
                    }
                }
            },
        )
        .exchange(|d: &Draft| d.problem.id.0)
    };

    // 3. Rater, 4. SkeletonWriter (then a sandbox check that the skeleton loads and defines the
    //    function).
    let rated = {
        let counters = Arc::clone(&counters);
        let min_score = ctx.stages.settings.min_score;
        draft_stage(
            drafts,
            LlmStage::Ratings,
            ctx,
            worker,
            &reject,
            StagePrompts::rating,
            move |d, completion| {
                let rating = stages::judge_rating(d, completion, min_score)?;
                Counters::add(&counters.problems_rated, 1);
                d.rating = Some(rating);
                Ok(())
            },
        )
    };
    let skeletons = draft_stage(
        rated,
        LlmStage::Skeletons,
        ctx,
        worker,
        &reject,
        StagePrompts::skeleton,
        |d, completion| {
            d.skeleton = Some(stages::judge_skeleton(d, completion)?);
            Ok(())
        },
    );
    let checked_skeletons = {
        let limits = ctx.check_limits.clone();
        let jobs = skeletons.map(move |d: Draft| {
            let skeleton = d.skeleton.as_ref().expect("set by the SkeletonWriter");
            let job = Job {
                program: skeleton.code.clone(),
                tests: vec![sandbox::TestCase::Assert {
                    source: format!("assert callable({})", skeleton.function_name),
                }],
                limits: Some(limits.clone()),
                early_stop: None,
            };
            (d, job)
        });
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let tests_per_problem = ctx.stages.settings.tests_per_problem as u64;
        offload(
            jobs,
            "SkeletonCheck",
            ctx.check.clone(),
            BatchPolicy {
                max_batch: ctx.exec_batch,
            },
        )
        .flat_map(move |(d, result)| {
            let id = Some(d.problem.id);
            let code = d.skeleton_code().to_string();
            let verdict = match result {
                Err(e) => Err((RejectReason::BackendError, e.to_string())),
                Ok(r) => match (&r.program_error, r.tests.first().map(|t| &t.verdict)) {
                    (Some(e), _) => Err((
                        RejectReason::SyntaxError,
                        format!("{}: {}", e.kind, e.message),
                    )),
                    (None, Some(SandboxVerdict::Pass)) => Ok(()),
                    (None, v) => Err((
                        RejectReason::MissingFunction,
                        format!("`callable(name)` check gave {v:?}"),
                    )),
                },
            };
            match verdict {
                Ok(()) => {
                    Counters::add(&counters.skeletons, 1);
                    Counters::add(&counters.tests_target, tests_per_problem);
                    Some(d)
                }
                Err((reason, detail)) => {
                    reject.push(stages::rejection(
                        LlmStage::Skeletons,
                        id,
                        reason,
                        detail,
                        &code,
                    ));
                    None
                }
            }
        })
    };

    // 5. TestGenerator: batches per problem, assembled in batch order, then syntax-checked by
    //    running them against the skeleton in the sandbox.
    let test_batches = {
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let ctx2 = Arc::clone(ctx);
        let batches = ctx.stages.settings.test_batches();
        let requests = checked_skeletons.flat_map(move |d: Draft| {
            let d = Rc::new(d);
            let mut out = Vec::new();
            for b in 0..batches {
                match ctx2.stages.tests(&d, b) {
                    Ok((key, r)) => out.push(((Rc::clone(&d), b), key, r)),
                    Err(e) => ctx2.failure.set(format!("rendering the tests prompt: {e}")),
                }
            }
            out
        });
        checkpointed(
            requests,
            LlmStage::Tests.operator_name(),
            memo(LlmStage::Tests),
            handle(LlmStage::Tests),
            ctx.llm_batch,
            checkpoint(LlmStage::Tests),
            move |(d, b): (Rc<Draft>, u64), key, generation: Generation, _| {
                let id = Some(d.problem.id);
                match first_completion(&generation, LlmStage::Tests, id) {
                    Ok(c) => {
                        let (tests, judged) =
                            stages::judge_tests(&d, std::slice::from_ref(c), usize::MAX);
                        Counters::add(&counters.tests_parsed, tests.len() as u64);
                        let status = judged[0].as_ref().map(|_| ());
                        let row = response_row(key, id, 0, None, c, status);
                        (vec![(d, b, Some(c.clone()))], vec![row])
                    }
                    Err(r) => {
                        reject.push(r);
                        (vec![(d, b, None)], Vec::new())
                    }
                }
            },
        )
    };
    let assembled = {
        let reject = reject.clone();
        let batches = ctx.stages.settings.test_batches() as usize;
        let limit = ctx.stages.settings.tests_per_problem;
        let mut pending: HashMap<ProblemId, Vec<Option<Completion>>> = HashMap::new();
        stateful(
            test_batches,
            "TestAssembler",
            move |(d, b, completion): (Rc<Draft>, u64, Option<Completion>),
                  out: &mut Vec<(Rc<Draft>, Vec<TestCase>)>| {
                let slots = pending
                    .entry(d.problem.id)
                    .or_insert_with(|| vec![None; batches]);
                slots[b as usize] = Some(completion.unwrap_or_else(|| Completion {
                    text: String::new(),
                    logprobs: Default::default(),
                    finish: ucoder_operators::FinishReason::Stop,
                }));
                if slots.iter().any(Option::is_none) {
                    return;
                }
                let completions: Vec<_> = pending
                    .remove(&d.problem.id)
                    .expect("present")
                    .into_iter()
                    .flatten()
                    .collect();
                let (tests, judged) = stages::judge_tests(&d, &completions, limit);
                if tests.is_empty() {
                    let reasons: Vec<String> = judged
                        .iter()
                        .filter_map(|j| j.as_ref().err().map(|r| r.detail.clone()))
                        .collect();
                    reject.push(stages::rejection(
                        LlmStage::Tests,
                        Some(d.problem.id),
                        RejectReason::Unparseable,
                        format!("no usable test in any batch: {}", reasons.join("; ")),
                        &completions
                            .iter()
                            .map(|c| c.text.as_str())
                            .collect::<Vec<_>>()
                            .join("\n----\n"),
                    ));
                    return;
                }
                out.push((d, tests));
            },
        )
    };
    let ready = {
        let limits = ctx.check_limits.clone();
        let jobs = assembled.map(move |(d, tests): (Rc<Draft>, Vec<TestCase>)| {
            let job = Job {
                program: d.skeleton_code().to_string(),
                tests: tests.iter().map(super::backends::sandbox_test).collect(),
                limits: Some(limits.clone()),
                early_stop: None,
            };
            ((d, tests), job)
        });
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let collect = Rc::clone(collect);
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
            let id = Some(d.problem.id);
            let result = match result {
                Ok(r) if r.program_error.is_none() && r.tests.len() == tests.len() => r,
                Ok(r) => {
                    reject.push(stages::rejection(
                        LlmStage::Tests,
                        id,
                        RejectReason::SyntaxError,
                        format!(
                            "the skeleton did not load with the tests: {:?}",
                            r.program_error
                        ),
                        d.skeleton_code(),
                    ));
                    return None;
                }
                Err(e) => {
                    reject.push(stages::rejection(
                        LlmStage::Tests,
                        id,
                        RejectReason::BackendError,
                        e.to_string(),
                        "",
                    ));
                    return None;
                }
            };
            let mut kept = Vec::new();
            for (test, r) in tests.into_iter().zip(&result.tests) {
                match &r.verdict {
                    SandboxVerdict::Error { kind }
                        if kind == "InvalidTest" || kind == "SyntaxError" =>
                    {
                        reject.push(stages::rejection(
                            LlmStage::Tests,
                            id,
                            RejectReason::SyntaxError,
                            format!("{kind}: {}", r.detail.clone().unwrap_or_default()),
                            &test.code,
                        ));
                    }
                    _ => kept.push(test),
                }
            }
            if kept.is_empty() {
                reject.push(stages::rejection(
                    LlmStage::Tests,
                    id,
                    RejectReason::SyntaxError,
                    "no test survived the syntax check",
                    "",
                ));
                return None;
            }
            let prompt = match ctx2.stages.solution_prompt(&d) {
                Ok(p) => p,
                Err(e) => {
                    ctx2.failure
                        .set(format!("rendering the solution prompt: {e}"));
                    return None;
                }
            };
            Counters::add(&counters.tests_kept, kept.len() as u64);
            Counters::add(&counters.problems_ready, 1);
            Counters::add(
                &counters.candidates_target,
                ctx2.stages.settings.samples as u64,
            );
            let tests: Arc<[TestCase]> = Arc::from(kept);
            collect
                .borrow_mut()
                .ready
                .push(((*d).clone(), Arc::clone(&tests)));
            Some(Rc::new(Ready {
                draft: (*d).clone(),
                tests,
                prompt,
            }))
        })
    };

    // 6. SolutionSampler: round r of every problem at time r + 1, so the rounds of all problems
    //    interleave and each round's selections are a consistent snapshot.
    let rounds = ctx.stages.settings.rounds();
    let sample_requests = {
        let ctx2 = Arc::clone(ctx);
        ready
            .clone()
            .unary::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
                Pipeline,
                "SolutionRounds",
                move |_, _| {
                    move |input, output| {
                        input.for_each_stamp(|capability, data| {
                            for batch in data {
                                for r in batch.drain(..) {
                                    let r: Rc<Ready> = r;
                                    for round in 0..rounds {
                                        let time = capability.delayed(&(round + 1), 0);
                                        let (key, request) =
                                            ctx2.stages.solutions(&r.draft, &r.prompt, round);
                                        output.session(&time).give((
                                            (Rc::clone(&r), round),
                                            key,
                                            request,
                                        ));
                                    }
                                }
                            }
                        });
                    }
                },
            )
    };
    let candidates = {
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let round_size = ctx.stages.settings.round;
        checkpointed(
            sample_requests,
            LlmStage::Candidates.operator_name(),
            memo(LlmStage::Candidates),
            handle(LlmStage::Candidates),
            (ctx.sample_rows / round_size).max(1),
            checkpoint(LlmStage::Candidates),
            move |(r, round): (Rc<Ready>, u64), key, generation: Generation, _| {
                let id = Some(r.draft.problem.id);
                let completions = match generation {
                    Ok(c) => c,
                    Err(e) => {
                        reject.push(stages::rejection(
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
                    let judged = stages::judge_candidate(&r.draft, sample, round, completion);
                    rows.push(response_row(
                        key,
                        id,
                        i as u32,
                        judged.as_ref().ok().map(|c| c.id.0),
                        completion,
                        judged.as_ref().map(|_| ()),
                    ));
                    match judged {
                        Ok(candidate) => {
                            Counters::add(&counters.candidates, 1);
                            outs.push((Rc::clone(&r), candidate));
                        }
                        Err(rejection) => reject.push(rejection),
                    }
                }
                (outs, rows)
            },
        )
    };

    // 7. Executor: every candidate on its problem's whole test set.
    let verdicts = {
        let requests = candidates.clone().map(|(r, c): (Rc<Ready>, Candidate)| {
            let job = ExecJob {
                problem_id: c.problem_id,
                candidate_id: c.id,
                entry_point: r
                    .draft
                    .skeleton
                    .as_ref()
                    .map_or(String::new(), |s| s.function_name.clone()),
                code: c.code.clone(),
                tests: Arc::clone(&r.tests),
            };
            let key = c.id.0;
            ((r, c), key, job)
        });
        let lookup = {
            let ctx = Arc::clone(ctx);
            let counters = Arc::clone(&counters);
            move |key: u64| {
                let found = ctx.executions.get(CandidateId(key)).cloned();
                if found.is_some() {
                    Counters::add(&counters.replayed_executions, 1);
                }
                found.map(Ok)
            }
        };
        let reject = reject.clone();
        let counters = Arc::clone(&counters);
        let kind = ctx.selection.signature;
        checkpointed(
            requests,
            "Executor",
            lookup,
            ctx.exec.clone(),
            ctx.exec_batch,
            Checkpoint::<ExecutionRow>::new(
                ctx.iter_dir.join("executions"),
                worker,
                ctx.failure.clone(),
            ),
            move |(r, c): (Rc<Ready>, Candidate),
                  _key,
                  result: Result<Execution, BackendError>,
                  _| {
                let execution = match result {
                    Ok(e) => e,
                    Err(e) => {
                        reject.push(stages::rejection(
                            LlmStage::Candidates,
                            Some(c.problem_id),
                            RejectReason::BackendError,
                            e.to_string(),
                            &c.code,
                        ));
                        return (Vec::new(), Vec::new());
                    }
                };
                Counters::add(&counters.executions, 1);
                Counters::add(&counters.test_runs, execution.results.len() as u64);
                let rows: Vec<ExecutionRow> = ExecutionRow::of(&execution).collect();
                let test_ids: Vec<_> = r.tests.iter().map(|t| t.id).collect();
                match Verdict::new(&c, &execution, &test_ids, kind) {
                    Ok(v) => (vec![v], rows),
                    Err(e) => {
                        reject.push(stages::rejection(
                            LlmStage::Candidates,
                            Some(c.problem_id),
                            RejectReason::IncompleteExecution,
                            e.to_string(),
                            &c.code,
                        ));
                        (Vec::new(), rows)
                    }
                }
            },
        )
    };

    // 8. SignatureGrouper + Selector (differential), then the selected code and its prompt.
    let out = consensus(as_insertions(verdicts), &ctx.selection);
    let codes: VecCollection<'s, u64, (CandidateId, String)> =
        as_insertions(candidates.map(|(_, c): (Rc<Ready>, Candidate)| (c.id, c.code)));
    let prompts: VecCollection<'s, u64, (ProblemId, String)> =
        as_insertions(ready.map(|r: Rc<Ready>| (r.draft.problem.id, r.prompt.clone())));
    let pairs = out
        .selections
        .map(|s| (s.candidate_id, s))
        .join_map(codes, |_, s, code| {
            (s.problem_id, (s.clone(), code.clone()))
        })
        .join_map(prompts, |_, (s, code), prompt| {
            (s.clone(), prompt.clone(), code.clone())
        });

    {
        let collect = Rc::clone(collect);
        out.clusters
            .inner
            .sink(Pipeline, "ClusterLog", move |(input, _frontier)| {
                let mut c = collect.borrow_mut();
                input.for_each(|_, data| {
                    for (cluster, _time, diff) in data.drain(..) {
                        *c.clusters.entry(cluster).or_default() += diff;
                    }
                });
            });
    }
    {
        // SftSink: every selection change arrives on worker 0; once the input is complete the
        // final selections are rendered, tokenized, packed and written.
        let collect = Rc::clone(collect);
        let (writer, failure) = (Arc::clone(&ctx.sft), ctx.failure.clone());
        let mut written = false;
        pairs.inner.sink(
            ExchangePact::new(|_: &((Selection, String, String), u64, isize)| 0),
            "SftSink",
            move |(input, frontier)| {
                let mut c = collect.borrow_mut();
                input.for_each(|_, data| {
                    for (pair, _time, diff) in data.drain(..) {
                        *c.selections.entry(pair).or_default() += diff;
                    }
                });
                if frontier.frontier().is_empty() && !written && index == 0 {
                    written = true;
                    let finals: Vec<_> = c
                        .selections
                        .iter()
                        .filter(|(_, diff)| **diff > 0)
                        .map(|(s, _)| s.clone())
                        .collect();
                    match writer(&finals) {
                        Ok(summary) => c.sft = Some(summary),
                        Err(e) => failure.set(e),
                    }
                }
            },
        );
    }
}
