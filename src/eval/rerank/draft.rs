//! A benchmark problem as the pipeline's [`Draft`]: its prompt is the skeleton (a function whose
//! body is its docstring, which Python runs as a stub returning `None`), its docstring the
//! description and its `def` the signature (missing annotations read as `object`), so the
//! pipeline's TestGenerator prompt, parser and TestCheck apply to it unchanged.

use ucoder_operators::{Category, GeneratedProblem, Skeleton};

use crate::eval::humaneval::Problem;
use crate::pipeline::stages::Draft;
use crate::prompts::parse::FunctionSignature;

/// Why a benchmark problem cannot be put to the test writer.
#[derive(Debug, thiserror::Error)]
#[error("{task_id}: {why}")]
pub struct DraftError {
    pub task_id: String,
    pub why: String,
}

/// The draft of benchmark problem `problem` (`index`: its place in the benchmark).
pub fn draft(problem: &Problem, index: u64) -> Result<Draft, DraftError> {
    let error = |why: String| DraftError {
        task_id: problem.task_id.clone(),
        why,
    };
    let (header, body_start) =
        def_header(&problem.prompt, &problem.entry_point).ok_or_else(|| {
            error(format!(
                "the prompt has no `def {}(` line to write tests for",
                problem.entry_point
            ))
        })?;
    let signature = FunctionSignature::parse_untyped(&header)
        .map_err(|e| error(format!("cannot read the signature `{header}`: {e}")))?;
    let description = docstring(&problem.prompt[body_start..])
        .unwrap_or_else(|| problem.prompt.trim().to_string());
    let signature_text = signature.to_def();
    let id = GeneratedProblem::derive_id(&problem.task_id, &description, &signature_text);
    Ok(Draft {
        request: index,
        problem: GeneratedProblem {
            id,
            category: Category::BasicAlgorithms,
            seed: 0,
            title: problem.entry_point.clone(),
            description,
            signature: signature_text,
            example: "see the docstring below".into(),
            hint: "none".into(),
        },
        rating: None,
        skeleton: Some(Skeleton {
            problem_id: id,
            function_name: problem.entry_point.clone(),
            arity: signature.params.len() as u32,
            code: format!("{}\n", problem.prompt.trim_end()),
        }),
    })
}

/// The `def entry(...)...:` header of the top-level function `entry` (it may span lines) and the
/// byte offset where its body starts.
fn def_header(prompt: &str, entry: &str) -> Option<(String, usize)> {
    let wanted = format!("def {entry}(");
    let mut offset = 0;
    let mut header: Option<String> = None;
    for line in prompt.split_inclusive('\n') {
        let end = offset + line.len();
        offset = end;
        match &mut header {
            None if line.starts_with(&wanted) => header = Some(line.to_string()),
            None => continue,
            Some(h) => h.push_str(line),
        }
        let h = header.as_deref().expect("set above");
        if h.trim_end().ends_with(':') && balanced(h) {
            return Some((h.trim_end().to_string(), end));
        }
    }
    None
}

/// Whether the brackets of `text` close (a header's parameter list is done).
fn balanced(text: &str) -> bool {
    let depth = text.chars().fold(0i32, |d, c| match c {
        '(' | '[' | '{' => d + 1,
        ')' | ']' | '}' => d - 1,
        _ => d,
    });
    depth == 0
}

/// The text of the docstring that opens `body`, dedented.
fn docstring(body: &str) -> Option<String> {
    let trimmed = body.trim_start();
    let quote = ["\"\"\"", "'''"]
        .into_iter()
        .find(|q| trimmed.starts_with(q))?;
    let inner = &trimmed[3..];
    let text = &inner[..inner.find(quote)?];
    let lines: Vec<&str> = text.lines().collect();
    let indent = lines
        .iter()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let dedented: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                l.trim()
            } else {
                l.get(indent..).unwrap_or(l.trim())
            }
        })
        .collect();
    Some(dedented.join("\n").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(prompt: &str, entry: &str) -> Problem {
        Problem {
            task_id: "HumanEval/x".into(),
            prompt: prompt.into(),
            entry_point: entry.into(),
            canonical_solution: String::new(),
            test: String::new(),
        }
    }

    #[test]
    fn prompts_become_drafts_with_typed_signatures_and_docstrings() {
        let p = problem(
            "from typing import List\n\n\ndef helper(x):\n    return x\n\n\ndef sort_third(l: list,\n               k=2):\n    \"\"\"Sort every third element.\n    >>> sort_third([1, 2, 3])\n    [1, 2, 3]\n    \"\"\"\n",
            "sort_third",
        );
        let d = draft(&p, 3).unwrap();
        assert_eq!(
            d.problem.signature,
            "def sort_third(l: list, k: object = 2) -> object:"
        );
        assert_eq!(
            d.problem.description,
            "Sort every third element.\n>>> sort_third([1, 2, 3])\n[1, 2, 3]"
        );
        assert_eq!(d.function_name(), "sort_third");
        assert!(d.skeleton_code().starts_with("from typing import List"));
        assert_eq!(d.signature().params.len(), 2);
        assert_eq!(d.request, 3);
        let missing = problem("def other(x):\n    pass\n", "sort_third");
        let err = draft(&missing, 0).unwrap_err().to_string();
        assert!(
            err.contains("HumanEval/x") && err.contains("def sort_third("),
            "{err}"
        );
    }
}
