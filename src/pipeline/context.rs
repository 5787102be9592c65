//! What every stage of a run's graph shares: the backends, the checkpoints of an interrupted
//! run, the settings, the live counters, the first failure, and (per worker) the collectors the
//! stages hand their results to. Built once by [`run`](super::run); each timely worker holds an
//! `Arc` of it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use ucoder_operators::{
    BackendError, BackendHandle, ClusterKey, ConsensusConfig, ExecJob, Execution, GeneratedTest,
    Generation, GenerationRequest, ProblemId, Rejection, Selection,
};

use super::artifacts::{ExecutionMemo, ResponseMemo};
use super::backends::StageClocks;
use super::progress::Counters;
use super::stages::selector::VoteTally;
use super::stages::sft_sink::SftSink;
use super::stages::{Draft, LlmStage, StagePrompts};
use crate::progress::Reporter;
use crate::sandbox::{Job, JobResult, Limits};
use crate::sft::sink::SftSummary;

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
    pub selection: ConsensusConfig,
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
    /// The clock of every stage's backend in this process.
    pub clocks: StageClocks,
    /// Timely workers in this process (`-w`); the run's workers are these times the processes.
    pub local_workers: usize,
    pub failure: Failure,
    pub sft: Arc<SftSink>,
    /// Where each rejection is told as it happens ([`Reporter::detail`]).
    pub reporter: Arc<dyn Reporter>,
}

impl GraphContext {
    /// The backend of an LLM stage.
    pub fn llm(&self, stage: LlmStage) -> BackendHandle<GenerationRequest, Generation> {
        self.llm[stage as usize].clone()
    }

    /// The completions an interrupted run committed for an LLM stage.
    pub fn memo(&self, stage: LlmStage) -> &ResponseMemo {
        &self.memos[stage as usize]
    }
}

/// What the stages of one worker collect for the results.
#[derive(Default)]
pub struct Collect {
    /// Problems with their validated tests.
    pub ready: Vec<(Draft, Arc<[GeneratedTest]>)>,
    pub rejections: Vec<Rejection>,
    /// Cluster changes: ((problem, signature), size) → diff.
    pub clusters: BTreeMap<(ClusterKey, isize), isize>,
    /// Per problem, how its candidates fared before clustering.
    pub votes: BTreeMap<ProblemId, VoteTally>,
    /// Selection changes: (selection, prompt, code) → diff (worker 0).
    pub selections: BTreeMap<(Selection, String, String), isize>,
    pub sft: Option<SftSummary>,
    /// Told of each rejection as it is recorded (verbose runs show it).
    pub reporter: Option<Arc<dyn Reporter>>,
}

/// The worker-local collectors, shared by the operators of one worker.
#[derive(Clone, Default)]
pub struct Collector(pub Rc<RefCell<Collect>>);

impl Collector {
    /// A worker's collectors that tell each rejection to `reporter` as it is recorded.
    pub fn new(reporter: Arc<dyn Reporter>) -> Self {
        let collector = Collector::default();
        collector.0.borrow_mut().reporter = Some(reporter);
        collector
    }

    /// Records a rejected response or record.
    pub fn reject(&self, rejection: Rejection) {
        let mut c = self.0.borrow_mut();
        if let Some(reporter) = &c.reporter {
            reporter.detail(&crate::pipeline::results::rejection_line(&rejection));
        }
        c.rejections.push(rejection);
    }
}
