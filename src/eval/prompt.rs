//! How a benchmark problem is put to the model: instruct models get one user message through
//! their chat template, asking them to complete the function; base models get the problem's
//! prompt verbatim to continue (plain completion). Rendering a chat into text is the engine's job
//! (the model's own template); this module decides what is said. [`PromptStyle`] and the
//! completion stop sequences live with the extractor (`crate::python::extract`), whose reading of
//! a response depends on them.

pub use crate::python::extract::{COMPLETION_STOPS, PromptStyle};

/// What to put to the model for one problem, before any template is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptSpec {
    /// One user message (rendered with the model's chat template, generation prompt added).
    ChatUser(String),
    /// Raw text to continue.
    Completion(String),
}

/// The instruction put before the problem for instruct models.
pub const CHAT_INSTRUCTION: &str = "Complete the following Python function. Reply with the complete function \
(its signature, the imports it needs and the body) in a single ```python code block.";

/// The prompt for the HumanEval problem whose prompt (imports, signature, docstring) is `problem`.
pub fn build(problem: &str, style: PromptStyle) -> PromptSpec {
    match style {
        PromptStyle::Chat => PromptSpec::ChatUser(format!(
            "{CHAT_INSTRUCTION}\n\n```python\n{}\n```",
            problem.trim_matches('\n')
        )),
        PromptStyle::Completion => PromptSpec::Completion(problem.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_wraps_problem_in_a_fence_after_the_instruction() {
        let p = "from typing import List\n\n\ndef f(x: List[int]) -> int:\n    \"\"\" doc \"\"\"\n";
        match build(p, PromptStyle::Chat) {
            PromptSpec::ChatUser(text) => {
                assert!(text.starts_with(CHAT_INSTRUCTION));
                assert!(text.ends_with("```python\nfrom typing import List\n\n\ndef f(x: List[int]) -> int:\n    \"\"\" doc \"\"\"\n```"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn completion_is_verbatim_and_stops_at_next_top_level_statement() {
        assert_eq!(
            build("def f():\n", PromptStyle::Completion),
            PromptSpec::Completion("def f():\n".into())
        );
        assert!(
            PromptStyle::Completion
                .stop_sequences()
                .contains(&"\ndef ".to_string())
        );
        assert!(PromptStyle::Chat.stop_sequences().is_empty());
    }
}
