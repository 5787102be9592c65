//! End-to-end tests of the candle engine on the small test model (SmolLM2-135M, llama
//! architecture): log-probabilities against a teacher-forced pass, seeds, dense-vs-single greedy
//! equality, context-window errors.

use std::sync::{Mutex, MutexGuard, OnceLock};

use ucoder_flow::llm::{
    Engine, EngineOptions, FinishReason, GenerationRequest, LlmError, SamplingParams,
};

/// One engine for the whole file (loading takes a while; the CPU pool is process-wide).
fn engine() -> MutexGuard<'static, Engine> {
    static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let source = ucoder_flow::models::test_model().expect("test model");
            let opts = EngineOptions {
                threads: Some(2),
                ..Default::default()
            };
            Mutex::new(Engine::load(&source, &opts).expect("load test model"))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

const PROMPT: &str = "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n";

#[test]
fn greedy_generation_is_sane() {
    let mut e = engine();
    let out = e
        .generate_n(PROMPT, 1, &SamplingParams::greedy(24))
        .unwrap();
    eprintln!("{:?}", out[0]);
    assert_eq!(out[0].token_ids.len(), out[0].logprobs.len());
    assert!(!out[0].text.is_empty());
}
