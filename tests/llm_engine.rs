//! End-to-end tests of the candle engine on the small test model (SmolLM2-135M, llama
//! architecture): log-probabilities against a teacher-forced pass, seeds, dense-vs-single greedy
//! equality, batching of different prompts, stop strings, and context-window errors.

use std::sync::{Mutex, MutexGuard, OnceLock};

use ucoder_flow::llm::{
    ChatTurn, Engine, EngineOptions, LlmError, SampleEnd, SampleRequest, SamplerSettings,
};

/// One engine for the whole file: loading takes a while and the CPU pool is process-wide.
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

fn sampled(seed: u64, max_tokens: usize) -> SamplerSettings {
    SamplerSettings {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 50,
        max_tokens,
        stop: Vec::new(),
        seed,
        ignore_eos: false,
    }
}

#[test]
fn sampled_logprobs_match_a_teacher_forced_pass() {
    let mut e = engine();
    let prompt_ids = e.encode_prompt(PROMPT).unwrap();
    let outs = e.generate_n(PROMPT, 3, &sampled(11, 24)).unwrap();
    let mut compared = 0;
    for c in &outs {
        assert_eq!(c.token_ids.len(), c.logprobs.len());
        assert!(
            c.logprobs.iter().all(|&l| l <= 0.0 && l.is_finite()),
            "{:?}",
            c.logprobs
        );
        let forced = e.score(&prompt_ids, &c.token_ids).unwrap();
        for (j, (a, b)) in c.logprobs.iter().zip(&forced).enumerate() {
            assert!(
                (a - b).abs() < 1e-3,
                "token {j}: sampled {a} vs teacher-forced {b}"
            );
            compared += 1;
        }
    }
    assert!(compared >= 24, "too few tokens compared: {compared}");
}

#[test]
fn same_seed_same_tokens_and_seeds_differ() {
    let mut e = engine();
    let a = e.generate_n(PROMPT, 4, &sampled(5, 16)).unwrap();
    let b = e.generate_n(PROMPT, 4, &sampled(5, 16)).unwrap();
    let c = e.generate_n(PROMPT, 4, &sampled(6, 16)).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // The samples of one request draw from distinct streams.
    assert!(a.iter().any(|x| x.token_ids != a[0].token_ids));
    // Sample i's tokens do not depend on what else is in the batch.
    let alone = e.generate_n(PROMPT, 2, &sampled(5, 16)).unwrap();
    assert_eq!(&alone[..], &a[..2]);
    let mixed = e
        .generate_batch(&[
            SampleRequest {
                prompt: "import numpy as np\n".into(),
                n: 3,
                params: sampled(9, 12),
            },
            SampleRequest {
                prompt: PROMPT.into(),
                n: 4,
                params: sampled(5, 16),
            },
        ])
        .unwrap();
    assert_eq!(mixed[1], a);
}

#[test]
fn greedy_dense_equals_single_stream_runs() {
    let mut e = engine();
    let params = SamplerSettings::greedy(32);
    let dense = e.generate_n(PROMPT, 8, &params).unwrap();
    assert_eq!(dense.len(), 8);
    let single = e.generate_n(PROMPT, 1, &params).unwrap().remove(0);
    assert!(!single.token_ids.is_empty());
    for (i, d) in dense.iter().enumerate() {
        assert_eq!(d.text, single.text, "sample {i}");
        assert_eq!(d.token_ids, single.token_ids, "sample {i}");
    }
    for _ in 1..8 {
        let again = e.generate_n(PROMPT, 1, &params).unwrap().remove(0);
        assert_eq!(again.token_ids, single.token_ids);
    }
}

#[test]
fn batched_prompts_equal_separate_runs() {
    let mut e = engine();
    let prompts = [
        "def add(a, b):\n",
        "class Stack:\n    def __init__(self):\n",
        "# sort a list\n",
    ];
    let params = SamplerSettings::greedy(12);
    let requests: Vec<SampleRequest> = prompts
        .iter()
        .map(|p| SampleRequest {
            prompt: p.to_string(),
            n: 2,
            params: params.clone(),
        })
        .collect();
    let batched = e.generate_batch(&requests).unwrap();
    for (p, got) in prompts.iter().zip(&batched) {
        let alone = e.generate_n(p, 1, &params).unwrap().remove(0);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].token_ids, alone.token_ids, "prompt {p:?}");
        assert_eq!(got[1].token_ids, alone.token_ids, "prompt {p:?}");
    }
}

#[test]
fn stop_strings_cut_the_text() {
    let mut e = engine();
    let free = e
        .generate_n(PROMPT, 1, &SamplerSettings::greedy(40))
        .unwrap()
        .remove(0);
    // Stop at the first newline the model writes after its first non-empty line.
    let text = &free.text;
    let first_line_end = text
        .trim_start()
        .find('\n')
        .map(|i| i + (text.len() - text.trim_start().len()));
    let Some(cut) = first_line_end else {
        panic!("greedy completion has no newline to stop at: {text:?}");
    };
    let mut params = SamplerSettings::greedy(40);
    params.stop = vec!["\n".into(), "NEVER-APPEARS".into()];
    let stopped = e.generate_n(PROMPT, 1, &params).unwrap().remove(0);
    assert_eq!(stopped.finish_reason, SampleEnd::Stop);
    let expected = &text[..text.find('\n').unwrap()];
    assert_eq!(stopped.text, expected, "cut at {cut}");
    assert!(stopped.token_ids.len() < free.token_ids.len());
}

#[test]
fn chat_prompt_ends_with_eos_or_length() {
    let mut e = engine();
    let prompt = e.chat_prompt(&[ChatTurn::user("Say hello.")]).unwrap();
    assert!(prompt.contains("Say hello."));
    let out = e
        .generate_n(&prompt, 1, &SamplerSettings::greedy(48))
        .unwrap()
        .remove(0);
    assert!(matches!(
        out.finish_reason,
        SampleEnd::Eos | SampleEnd::Length
    ));
    assert!(!out.text.contains("<|im_end|>"), "{:?}", out.text);
    if out.finish_reason == SampleEnd::Length {
        assert_eq!(out.token_ids.len(), 48);
    }
}

#[test]
fn prompt_longer_than_the_context_window_is_a_clear_error() {
    let mut e = engine();
    let ctx = e.context_length();
    let long = "x = 1\n".repeat(ctx);
    let err = e
        .generate_n(&long, 2, &SamplerSettings::greedy(4))
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LlmError::PromptTooLong { .. }), "{msg}");
    assert!(
        msg.contains(&ctx.to_string()) && msg.contains("context window"),
        "{msg}"
    );
}

#[test]
fn max_tokens_is_clipped_to_the_context_window() {
    drop(engine()); // the shared engine fixes the process-wide thread budget first
    let source = ucoder_flow::models::test_model().unwrap();
    let opts = EngineOptions {
        threads: Some(2),
        context_length: Some(48),
        ..Default::default()
    };
    let mut e = Engine::load(&source, &opts).unwrap();
    assert_eq!(e.context_length(), 48);
    let n_prompt = e.encode_prompt(PROMPT).unwrap().len();
    assert!(n_prompt < 40, "{n_prompt}");
    let out = e
        .generate_n(PROMPT, 2, &SamplerSettings::greedy(100))
        .unwrap();
    for c in &out {
        assert!(
            c.token_ids.len() <= 48 - n_prompt,
            "{} tokens after {n_prompt}",
            c.token_ids.len()
        );
        if c.finish_reason == SampleEnd::Length {
            assert_eq!(c.token_ids.len(), 48 - n_prompt);
        }
    }
    let long = "x = 1\n".repeat(20);
    let err = e
        .generate_n(&long, 1, &SamplerSettings::greedy(4))
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::PromptTooLong {
                context_length: 48,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn invalid_parameters_are_rejected() {
    let mut e = engine();
    let mut params = SamplerSettings::greedy(4);
    params.top_p = 0.0;
    assert!(matches!(
        e.generate_n(PROMPT, 1, &params),
        Err(LlmError::InvalidParams(_))
    ));
    assert!(matches!(
        e.generate_n("", 1, &SamplerSettings::greedy(4)),
        Err(LlmError::EmptyPrompt)
    ));
}

/// A process started by one that loaded an engine inherits its `CANDLE_NUM_THREADS`; an engine
/// asked for another number of threads must still load with that number (the run's trainer and
/// evaluation children, and test harnesses, all start such processes).
#[test]
fn an_inherited_candle_num_threads_does_not_override_the_requested_budget() {
    ucoder_flow::models::test_model().expect("test model");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ucoder-flow"))
        .args(["generate", "--model", ucoder_flow::models::TEST_MODEL])
        .args(["--threads", "1", "--temperature", "0", "--max-tokens", "4"])
        .arg(PROMPT)
        .env("CANDLE_NUM_THREADS", "2")
        .output()
        .expect("start ucoder-flow generate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("(1 threads)"), "{stderr}");
}
