//! The traits the engine implements ([`Generate`] for the LLM, [`Execute`] for the sandbox), the
//! generic [`Service`] they are adapted to, and the [`BackendPool`] that serves batches on its own
//! threads for any number of timely operators.
//!
//! A pool owns one thread per service instance (one candle engine, or one sandbox client per
//! worker process); all threads take jobs from one shared queue. A job is a batch of requests plus
//! the way back: a reply channel and a `SyncActivator` of the operator that sent it, so the reply
//! wakes exactly that operator (and unparks its worker thread). Pool threads never touch timely
//! state, and timely workers never wait on a pool.
//!
//! Contract for services: return exactly one response per request, in request order, and report
//! per-request failures inside the response (e.g. `Err(BackendError)`). A service that panics or
//! breaks the length contract poisons its thread: it answers every later job with a failure, and
//! the operator that receives a failure panics with the backend's name and message instead of
//! waiting forever.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use timely::scheduling::SyncActivator;

use crate::records::{CandidateId, Execution, GeneratedTest, LogprobSummary, ProblemId};

/// A batch server: the shape both the LLM and the sandbox are adapted to.
pub trait Service: Send + 'static {
    /// One request.
    type Request: Send + 'static;
    /// Its response.
    type Response: Send + 'static;
    /// Serves a batch: exactly one response per request, in order.
    fn serve(&mut self, requests: &[Self::Request]) -> Vec<Self::Response>;
}

/// A failure of a backend on one request (or on a whole batch, repeated per request).
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
#[error("{backend}: {message}")]
pub struct BackendError {
    /// Which backend failed (e.g. `candle`, `sandbox`).
    pub backend: String,
    /// What happened.
    pub message: String,
}

/// A chat role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// System prompt.
    System,
    /// User turn.
    User,
    /// Assistant turn.
    Assistant,
}

/// One chat message; the engine renders a conversation with the model's chat template.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// Sampling settings of one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Maximum completion tokens per sample.
    pub max_tokens: u32,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Nucleus-sampling mass.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (0 = off).
    pub top_k: u32,
    /// Base seed; sample `i` of the request uses a seed derived from (seed, i), so results do not
    /// depend on how requests were batched.
    pub seed: u64,
    /// Stop sequences (not included in the completion text).
    pub stop: Vec<String>,
}

/// What the model continues.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template; a final assistant message is a
    /// prefill that the model continues.
    Chat(Vec<ChatMessage>),
    /// Text continued as it is, without a template (a base model's completion, or a prompt
    /// rendered beforehand).
    Text(String),
}

/// A prompt to be completed `n` times (dense sampling: one prefill shared by the `n` samples).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// Number of samples.
    pub n: u32,
    /// Sampling settings.
    pub params: SamplingParams,
}

/// Why a completion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// End-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The backend did not say (a recorded completion without a finish reason).
    Unknown,
}

impl FinishReason {
    /// The reason's name in files: `stop`, `length`, or empty when unknown.
    pub fn label(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Unknown => "",
        }
    }

    /// Every reason.
    pub const ALL: [FinishReason; 3] = [
        FinishReason::Stop,
        FinishReason::Length,
        FinishReason::Unknown,
    ];
}

/// One sampled completion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The completion text.
    pub text: String,
    /// Per-token log-probabilities, summarised (gives f(r)); the sum is NaN when the backend
    /// reports no log-probabilities.
    pub logprobs: LogprobSummary,
    /// Why it ended.
    pub finish: FinishReason,
}

/// The response to a [`GenerationRequest`]: its `n` completions, or the failure.
pub type Generation = Result<Vec<Completion>, BackendError>;

/// What the LLM engine implements (candle in process, or an OpenAI-compatible client).
pub trait Generate: Send + 'static {
    /// Completes a batch of requests: one [`Generation`] per request, in order.
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation>;
}

impl<G: Generate + ?Sized> Generate for Box<G> {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        (**self).generate(requests)
    }
}

/// A candidate to run on its problem's whole test set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecJob {
    /// The problem.
    pub problem_id: ProblemId,
    /// The candidate.
    pub candidate_id: CandidateId,
    /// Name of the function the tests call.
    pub entry_point: String,
    /// The candidate's code.
    pub code: String,
    /// The problem's tests, shared among all its candidates' jobs.
    pub tests: Arc<[GeneratedTest]>,
}

/// What the sandbox implements.
pub trait Execute: Send + 'static {
    /// Runs a batch of jobs: one execution (or failure) per job, in order.
    fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>>;
}

/// Adapts a [`Generate`] implementation to [`Service`].
pub struct GenerateService<G>(pub G);

impl<G: Generate> Service for GenerateService<G> {
    type Request = GenerationRequest;
    type Response = Generation;
    fn serve(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        self.0.generate(requests)
    }
}

/// Adapts an [`Execute`] implementation to [`Service`].
pub struct ExecuteService<E>(pub E);

impl<E: Execute> Service for ExecuteService<E> {
    type Request = ExecJob;
    type Response = Result<Execution, BackendError>;
    fn serve(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        self.0.execute(jobs)
    }
}

/// A batch on its way to a pool thread.
pub(crate) struct Job<Req, Resp> {
    pub(crate) ticket: u64,
    pub(crate) requests: Vec<Req>,
    pub(crate) reply: Sender<Reply<Resp>>,
    pub(crate) activator: SyncActivator,
}

/// A pool thread's answer to a [`Job`].
pub(crate) struct Reply<Resp> {
    pub(crate) ticket: u64,
    pub(crate) responses: Result<Vec<Resp>, String>,
}

/// A cloneable, thread-safe way to submit batches to a [`BackendPool`].
pub struct BackendHandle<Req, Resp> {
    name: Arc<str>,
    jobs: Sender<Job<Req, Resp>>,
}

impl<Req, Resp> Clone for BackendHandle<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            name: Arc::clone(&self.name),
            jobs: self.jobs.clone(),
        }
    }
}

impl<Req, Resp> BackendHandle<Req, Resp> {
    /// The pool's name (used in panics and logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn submit(&self, job: Job<Req, Resp>) {
        if self.jobs.send(job).is_err() {
            panic!(
                "backend pool '{}' has shut down while its operators still run",
                self.name
            );
        }
    }
}

/// A failure found when shutting a pool down.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PoolError {
    /// A pool thread panicked outside a service call.
    #[error("backend pool '{pool}': thread {thread} panicked")]
    ThreadPanicked {
        /// Pool name.
        pool: String,
        /// Thread index.
        thread: usize,
    },
}

/// Threads serving batches for timely operators; see the module docs.
pub struct BackendPool<Req, Resp> {
    handle: Option<BackendHandle<Req, Resp>>,
    threads: Vec<JoinHandle<()>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> BackendPool<Req, Resp> {
    /// Starts one thread per service; threads are named `<name>-<i>`.
    pub fn spawn<S>(name: &str, services: Vec<S>) -> Self
    where
        S: Service<Request = Req, Response = Resp>,
    {
        assert!(
            !services.is_empty(),
            "backend pool '{name}' needs at least one service"
        );
        let (jobs, queue) = crossbeam_channel::unbounded::<Job<Req, Resp>>();
        let name: Arc<str> = Arc::from(name);
        let threads = services
            .into_iter()
            .enumerate()
            .map(|(index, service)| {
                let queue = queue.clone();
                let pool = Arc::clone(&name);
                std::thread::Builder::new()
                    .name(format!("{pool}-{index}"))
                    .spawn(move || serve_jobs(&pool, service, queue))
                    .expect("spawning a backend thread")
            })
            .collect();
        Self {
            handle: Some(BackendHandle { name, jobs }),
            threads,
        }
    }

    /// A handle for operators (clone it into every worker).
    pub fn handle(&self) -> BackendHandle<Req, Resp> {
        self.handle
            .clone()
            .expect("handle is present until shutdown")
    }

    /// Stops accepting jobs and waits for the threads, which finish once every handle (including
    /// those held by dataflow operators) is gone and the queue is drained.
    pub fn shutdown(mut self) -> Result<(), PoolError> {
        let name = self
            .handle
            .take()
            .map(|h| h.name.to_string())
            .unwrap_or_default();
        for (thread, handle) in std::mem::take(&mut self.threads).into_iter().enumerate() {
            handle.join().map_err(|_| PoolError::ThreadPanicked {
                pool: name.clone(),
                thread,
            })?;
        }
        Ok(())
    }
}

fn serve_jobs<S: Service>(
    pool: &str,
    mut service: S,
    queue: Receiver<Job<S::Request, S::Response>>,
) {
    let mut poisoned: Option<String> = None;
    for job in queue {
        let responses = match &poisoned {
            Some(message) => Err(format!(
                "service disabled after an earlier failure: {message}"
            )),
            None => match catch_unwind(AssertUnwindSafe(|| service.serve(&job.requests))) {
                Ok(responses) if responses.len() == job.requests.len() => Ok(responses),
                Ok(responses) => Err(format!(
                    "service returned {} responses for {} requests",
                    responses.len(),
                    job.requests.len()
                )),
                Err(panic) => Err(format!("service panicked: {}", panic_message(&panic))),
            },
        };
        if let Err(message) = &responses {
            poisoned.get_or_insert_with(|| format!("{pool}: {message}"));
        }
        // The operator may be gone (dataflow dropped); then nobody waits for this reply.
        if job
            .reply
            .send(Reply {
                ticket: job.ticket,
                responses,
            })
            .is_ok()
        {
            let _ = job.activator.activate();
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timely::scheduling::Activations;

    struct Truncating;

    impl Service for Truncating {
        type Request = u32;
        type Response = u32;
        fn serve(&mut self, requests: &[u32]) -> Vec<u32> {
            requests.iter().skip(1).copied().collect()
        }
    }

    #[test]
    fn a_service_breaking_the_length_contract_poisons_its_thread() {
        let activations = Activations::new(None);
        let activator = SyncActivator::new(vec![0], activations.sync());
        let pool = BackendPool::spawn("short", vec![Truncating]);
        let handle = pool.handle();
        let (reply, replies) = crossbeam_channel::unbounded();
        for ticket in 0..2 {
            handle.submit(Job {
                ticket,
                requests: vec![1, 2, 3],
                reply: reply.clone(),
                activator: activator.clone(),
            });
        }
        let first = replies.recv().unwrap();
        assert_eq!(first.ticket, 0);
        assert_eq!(
            first.responses.unwrap_err(),
            "service returned 2 responses for 3 requests"
        );
        let second = replies.recv().unwrap();
        let message = second.responses.unwrap_err();
        assert!(
            message.contains("disabled after an earlier failure"),
            "{message}"
        );
        assert!(message.contains("short:"), "{message}");
        drop(handle);
        pool.shutdown().unwrap();
    }

    #[test]
    fn finish_labels_are_distinct() {
        let labels: Vec<&str> = FinishReason::ALL.iter().map(|f| f.label()).collect();
        assert_eq!(labels, ["stop", "length", ""]);
    }

    #[test]
    fn adapters_forward_batches_in_order() {
        struct Echo;
        impl Generate for Echo {
            fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
                requests
                    .iter()
                    .map(|r| {
                        Ok((0..r.n)
                            .map(|i| Completion {
                                text: format!("{:?}#{i}", r.prompt),
                                logprobs: LogprobSummary {
                                    tokens: 1,
                                    sum_logprob: -0.5,
                                },
                                finish: FinishReason::Stop,
                            })
                            .collect())
                    })
                    .collect()
            }
        }
        let request = |text: &str, n| GenerationRequest {
            prompt: Prompt::Text(text.into()),
            n,
            params: SamplingParams {
                max_tokens: 16,
                temperature: 0.7,
                top_p: 0.95,
                top_k: 0,
                seed: 1,
                stop: vec![],
            },
        };
        let mut service = GenerateService(Echo);
        let out = service.serve(&[request("a", 2), request("b", 1)]);
        let texts: Vec<Vec<String>> = out
            .into_iter()
            .map(|g| g.unwrap().into_iter().map(|c| c.text).collect())
            .collect();
        assert_eq!(
            texts,
            vec![
                vec!["Text(\"a\")#0".to_string(), "Text(\"a\")#1".into()],
                vec!["Text(\"b\")#0".into()]
            ]
        );
    }
}
