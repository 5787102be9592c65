//! The engine's error type: every way loading a model or generating from it can fail, each with
//! enough context (file, tensor, lengths) to act on.

use std::path::PathBuf;

/// Why the LLM engine could not load a model or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Gguf(#[from] super::gguf::GgufError),
    #[error("{path}: not a valid GGUF model: {message}")]
    InvalidModel { path: PathBuf, message: String },
    #[error("{path}: not a usable safetensors model directory: {message}")]
    InvalidSafetensors { path: PathBuf, message: String },
    #[error(transparent)]
    Tokenizer(#[from] super::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] super::chat::ChatError),
    #[error(
        "the prompt is {prompt_tokens} tokens long but the model's context window is {context_length} tokens; shorten the prompt to at most {max} tokens",
        max = context_length.saturating_sub(1)
    )]
    PromptTooLong {
        prompt_tokens: usize,
        context_length: usize,
    },
    #[error("the prompt is empty after tokenization; at least one token is needed")]
    EmptyPrompt,
    #[error("invalid sampling parameter: {0}")]
    InvalidParams(String),
    #[error(
        "thread budget conflict: this engine asks for {requested} threads but candle's process-wide CPU pool already runs {active}; \
         load every engine of a process with the same thread budget (or set CANDLE_NUM_THREADS before the first engine loads)"
    )]
    ThreadBudget { requested: usize, active: usize },
    #[error(
        "device `{0}` is not available in this build (compile with the `cuda` feature for GPUs)"
    )]
    DeviceUnavailable(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}
