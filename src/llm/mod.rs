//! The in-process LLM engine (candle): GGUF loading, the tokenizer built from GGUF metadata, the
//! model's own chat template, quantized qwen2/llama forward passes with a batched KV cache, and
//! sampling with per-token log-probabilities.
//!
//! - [`gguf`]: opening and validating a GGUF file; typed metadata accessors.
//! - [`tokenizer`]: byte-level BPE tokenizer from `tokenizer.ggml.*` metadata (or tokenizer.json).
//! - [`chat`]: the model's chat template (`tokenizer.chat_template`) rendered with minijinja.

pub mod chat;
pub mod gguf;
pub mod tokenizer;
