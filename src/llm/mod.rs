//! The in-process LLM engine (candle): GGUF and safetensors loading, the tokenizer built from GGUF metadata, the
//! model's own chat template, quantized qwen2/llama forward passes with a batched KV cache, and
//! sampling with per-token log-probabilities.
//!
//! - [`gguf`]: opening and validating a GGUF file; typed metadata accessors.
//! - [`tokenizer`]: byte-level BPE tokenizer from `tokenizer.ggml.*` metadata (or tokenizer.json).
//! - [`chat`]: the model's chat template (`tokenizer.chat_template`) rendered with minijinja.
//! - [`text`]: [`ModelText`], a model's tokenizer and chat template without its weights.
//! - [`shape`]: the hyper-parameters that fix a model's tensor shapes.
//! - [`model`]: the quantized qwen2/llama transformer with a ragged batched forward pass.
//! - [`kernels`]: the packed-weight AVX-512 VNNI matmul (decode, dense sampling, prefill).
//! - [`kv_cache`]: preallocated per-sequence KV segments with shared prompt prefixes.
//! - [`sampler`]: sampling parameters, greedy/temperature/top-k/top-p, log-probabilities, seeds.
//! - [`engine`]: [`Engine`], continuous batching of requests and dense sampling.
//! - [`weights`]: reading tensors from a GGUF file or a safetensors directory by GGUF name.
//! - [`export`]: writing a GGUF model as a Hugging Face safetensors directory.
//! - [`error`]: the engine's error type, [`LlmError`].

pub mod chat;
pub mod engine;
pub mod error;
pub mod export;
pub mod gguf;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod sampler;
pub mod shape;
pub mod text;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatTemplate, ChatTurn};
pub use engine::{
    DeviceChoice, Engine, EngineOptions, GenerationStats, Sample, SampleEnd, SampleRequest,
};
pub use error::LlmError;
pub use model::{BatchKernels, Requantize};
pub use sampler::SamplerSettings;
pub use text::ModelText;
pub use tokenizer::Tokenizer;
