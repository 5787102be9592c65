//! Records the stage tests share: a completion and a draft with a parsed problem and skeleton.

use ucoder_operators::{Category, Completion, FinishReason, LogprobSummary};

use super::{Draft, problem_generator, skeleton_writer};

pub fn completion(text: &str) -> Completion {
    Completion {
        text: text.into(),
        logprobs: LogprobSummary {
            tokens: 3,
            sum_logprob: -1.5,
        },
        finish: FinishReason::Stop,
    }
}

/// `add(a, b)`, whose skeleton came with a body and a helper (both cut by the stub).
pub fn draft() -> Draft {
    let raw = " Sum\nDescription: Add two numbers.\nFunction Signature: def add(a: int, b: int) -> int:\nExample: add(1, 2) -> 3\nHint: Use +.\n<PROBLEM_END>";
    let problem = problem_generator::judge(Category::BasicAlgorithms, 5, &completion(raw)).unwrap();
    let skeleton = skeleton_writer::judge(
        &Draft {
            request: 0,
            problem: problem.clone(),
            rating: None,
            skeleton: None,
        },
        &completion("import math\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Adds.\n\n    Returns:\n        the sum\n    \"\"\"\n    total = a + b\n    return total\n\n\ndef helper():\n    return 1\n```\n<SKELETON_END>"),
    )
    .unwrap();
    Draft {
        request: 0,
        problem,
        rating: None,
        skeleton: Some(skeleton),
    }
}
