//! The production backends behind [`CompletionSource`] and [`ProgramChecker`]: the in-process
//! LLM engine ([`crate::llm`]) and the sandbox pool ([`crate::sandbox`]). This is the only file
//! of the eval that names them.

use super::EvalError;
use super::backend::{CompletionSource, ProgramChecker};
use super::config::{EvalConfig, SandboxLimits};
use crate::models::ModelSource;

/// Loads `model` into the in-process engine for generating with `config`'s decoding settings.
pub fn open_engine(
    model: &ModelSource,
    config: &EvalConfig,
) -> Result<Box<dyn CompletionSource>, EvalError> {
    let _ = (model, config);
    Err(EvalError::NotWired(
        "the in-process LLM engine (use --completions FILE to score recorded completions)",
    ))
}

/// Starts the sandbox pool with `limits`.
pub fn open_checker(limits: &SandboxLimits) -> Result<Box<dyn ProgramChecker>, EvalError> {
    let _ = limits;
    Err(EvalError::NotWired("the sandbox"))
}
