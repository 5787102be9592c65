//! The concrete backends behind the operators crate's [`Generate`](ucoder_operators::Generate)
//! and [`Execute`](ucoder_operators::Execute), written once for every job (`ucoder-flow run`
//! and `ucoder-flow eval` alike):
//!
//! - [`candle`]: the in-process candle engine ([`CandleGenerator`]) and [`candle::render`], the
//!   text a prompt becomes for the model.
//! - [`sandbox`]: the sandbox pool ([`SandboxExecutor`]) and the raw-job server of the
//!   pipeline's checks ([`SandboxChecker`]).
//! - [`openai`]: an OpenAI-compatible model server ([`OpenAiServer`], [`OpenAiGenerator`]),
//!   prompts rendered by the same [`candle::render_with`].
//! - [`recorded`]: completions recorded by another engine, replayed ([`RecordedCompletions`]),
//!   and the JSONL files exchanged with it.
//! - [`clock`]: [`StageClock`], how long a backend spent for one consumer.

pub mod candle;
pub mod clock;
pub mod openai;
pub mod recorded;
pub mod sandbox;

pub use candle::CandleGenerator;
pub use clock::StageClock;
pub use openai::{OpenAiGenerator, OpenAiServer, ServerSettings};
pub use recorded::RecordedCompletions;
pub use sandbox::{ExecOptions, SandboxChecker, SandboxExecutor};
