//! The stages of an IPC iteration, one file each, in graph order:
//!
//! | stage | file | asks | emits |
//! |---|---|---|---|
//! | ProblemGenerator | [`problem_generator`] | the model, one problem per request | `(request index, Problem?)` |
//! | NearDuplicateFilter | [`near_duplicate_filter`] | — | [`Draft`]s, first of each near-duplicate group |
//! | Rater | [`rater`] | the model, a rating per draft | drafts rated ≥ the minimum |
//! | SkeletonWriter | [`skeleton_writer`] | the model, a skeleton per draft | drafts with a stubbed skeleton |
//! | SkeletonCheck | [`skeleton_check`] | the sandbox: does the skeleton load and define the function | drafts |
//! | TestGenerator | [`test_generator`] | the model, test batches per draft | one completion per batch |
//! | TestAssembler | [`test_assembler`] | — | a draft with its parsed, de-duplicated tests |
//! | TestCheck | [`test_check`] | the sandbox: do the tests run against the skeleton | [`Ready`](test_check::Ready) problems |
//! | SolutionSampler | [`solution_sampler`] | the model, round r of n samples at time r + 1 | candidates |
//! | Executor | [`executor`] | the sandbox: every candidate on every test | verdicts |
//! | Selector | [`selector`] | — (differential consensus) | clusters and selections |
//! | SftSink | [`sft_sink`] | — | the SFT shards |
//!
//! Each stage file owns what its stage asks (request builders with seeds derived from the run
//! seed, the stage and the record id), how it judges answers (records or typed [`Rejection`]s),
//! the checkpoint and result rows it writes, and its operator wiring (`wire`). Judges are pure
//! functions of their inputs, so a resumed run that replays committed completions reaches
//! exactly the records the first run reached. What the stages share: [`LlmStage`] (the model
//! stages' names, folders and answer formats), [`Draft`] (a problem on its way), the request
//! settings ([`requests`]) and the helpers that route a request through a checkpointed backend
//! ([`ask`]).
//!
//! [`Rejection`]: ucoder_operators::Rejection

pub mod ask;
pub mod draft;
pub mod llm_stage;
pub mod requests;

pub mod executor;
pub mod near_duplicate_filter;
pub mod problem_generator;
pub mod rater;
pub mod selector;
pub mod sft_sink;
pub mod skeleton_check;
pub mod skeleton_writer;
pub mod solution_sampler;
pub mod test_assembler;
pub mod test_check;
pub mod test_generator;

pub use draft::Draft;
pub use llm_stage::LlmStage;
pub use requests::{StagePrompts, StageSettings, indexed_key, request_seed};

#[cfg(test)]
mod test_support;
