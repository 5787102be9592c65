//! ucoder-operators: the engine-independent heart of the IPC dataflow.
//!
//! It owns the record types that flow between stages, the generic asynchronous operator that hands
//! work to a backend pool without blocking a timely worker, the differential-dataflow signature
//! grouper, the consensus selector and the adaptive-sampling controller, and the traits the engine
//! implements (`Generate`, `Execute`). It knows nothing of candle or Parquet.
//!
//! - [`records`]: problems, ratings, skeletons, tests, candidates, executions, rejections; stable
//!   content-derived ids ([`stable_hash`]).
//! - [`signature`]: execution signatures (pass/fail or output hashes) and per-candidate verdicts.
//! - [`selection`]: the selection rule (ρ, τ, consensus or dual agreement) and its batch reference.
//! - [`consensus`](mod@consensus): the grouper (`count`) and selector (`reduce`) as one differential dataflow.
//! - [`backend`]: the `Generate` / `Execute` traits and the thread pool that serves them.
//! - [`offload`](mod@offload): the non-blocking timely operator that batches requests to a backend pool.
//! - [`checkpointed`](mod@checkpointed): a backend call whose answers are committed and replayed on resume.
//! - [`stateful`](mod@stateful): a `flat_map` whose closure keeps state.
//! - [`adaptive`]: when to stop sampling a problem.
//!
//! Wiring one iteration (timely time = sampling round, `u64`):
//!
//! ```text
//! llm  = BackendPool::spawn("llm", vec![GenerateService(engine)])       // one pool, all LLM stages
//! box  = BackendPool::spawn("sandbox", clients.map(ExecuteService))
//! stage output = offload(records.exchange(by problem id).map(|r| (r, request(r))),
//!                        "Rater", llm.handle(), BatchPolicy { max_batch })   // (record, Generation)
//! executions   = offload(candidates.map(|c| (c, ExecJob { .. })), "Executor", box.handle(), ..)
//! verdicts     = executions.map(|(c, e)| CandidateVerdict::new(&c, &e?, &test_ids, kind))  // Err → Rejection
//! out          = consensus(as_insertions(verdicts), &selection_config)
//! out.selections → SftSink; out.clusters → `clusters` artifacts;
//! out.standings  → AdaptiveSampling::decide per problem after each round → next round's requests
//! ```

pub mod adaptive;
pub mod backend;
pub mod bayes;
pub mod checkpointed;
pub mod consensus;
pub mod offload;
pub mod records;
pub mod selection;
pub mod signature;
pub mod stable_hash;
pub mod stateful;

pub use adaptive::{AdaptiveSampling, ClusterStanding, Decision, StopReason};
pub use backend::{
    BackendError, BackendHandle, BackendPool, ChatMessage, Completion, ExecJob, Execute,
    ExecuteService, FinishReason, Generate, GenerateService, Generation, GenerationRequest, Prompt,
    Role, SamplingParams, Service,
};
pub use bayes::BayesPriors;
pub use checkpointed::{Answers, checkpointed};
pub use consensus::{ClusterKey, Consensus, as_insertions, consensus};
pub use offload::{BatchPolicy, offload};
pub use records::{
    Candidate, CandidateId, Category, Execution, GeneratedProblem, GeneratedTest, LogprobSummary,
    Outcome, Perplexity, ProblemId, Rating, RecordStage, RejectReason, Rejection, Skeleton, TestId,
    TestKind, TestRun,
};
pub use selection::{ConsensusConfig, Selection, SelectionRule, select_batch};
pub use signature::{CandidateVerdict, Signature, SignatureKind, VerdictError, min_executed};
pub use stateful::stateful;
