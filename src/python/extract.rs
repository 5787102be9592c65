//! Turning a model's response into the program the sandbox runs.
//!
//! Responses come in many shapes: a fenced code block (closed, or cut off by the token limit),
//! several blocks, raw code with prose around it, the full function or only its body, with or
//! without the imports and helper functions the prompt defines. [`extract`] handles each and
//! records what it did; when no runnable program can be built it returns a failure with the
//! reason, which the results keep per sample. It never guesses silently: every repair (carried
//! imports, dropped top-level statements, re-indented body) is listed in the notes.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::lexer::Lexer;

/// Stop sequences for plain (base-model) completion of a HumanEval prompt: the function ends
/// where the next top-level statement begins (Chen et al., 2021).
pub const COMPLETION_STOPS: &[&str] = &[
    "\ndef ",
    "\nclass ",
    "\nif __name__",
    "\nprint(",
    "\n#",
    "\nassert ",
];

/// How the model was prompted, which decides the response's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptStyle {
    /// Instruct models: a user message through the model's chat template; the answer is
    /// markdown with fenced code, or raw code with prose around it.
    Chat,
    /// Base models: the problem prompt is continued as plain text, up to a stop sequence.
    Completion,
}

impl PromptStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            PromptStyle::Chat => "chat",
            PromptStyle::Completion => "completion",
        }
    }

    /// Stop sequences to generate with (chat models stop at their end-of-turn token).
    pub fn stop_sequences(self) -> Vec<String> {
        match self {
            PromptStyle::Chat => Vec::new(),
            PromptStyle::Completion => COMPLETION_STOPS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// How the program was assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    /// The response defines the entry point; the prompt's missing imports/helpers are prepended.
    FullFunction,
    /// The response is the function body; it is appended to the prompt.
    BodyAppended,
}

impl ProgramKind {
    /// The name stored in the results (`extraction_status`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramKind::FullFunction => "full_function",
            ProgramKind::BodyAppended => "body_appended",
        }
    }
}

/// The outcome of extraction for one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    /// A program to run, how it was built, and the repairs made (empty when none).
    Program {
        program: String,
        kind: ProgramKind,
        notes: Vec<String>,
    },
    /// No runnable program; the reason says why.
    Failed { reason: String },
}

impl Extraction {
    /// `full_function`, `body_appended` or `failed`.
    pub fn status(&self) -> &'static str {
        match self {
            Extraction::Program { kind, .. } => kind.as_str(),
            Extraction::Failed { .. } => "failed",
        }
    }

    /// The program, when there is one.
    pub fn program(&self) -> Option<&str> {
        match self {
            Extraction::Program { program, .. } => Some(program),
            Extraction::Failed { .. } => None,
        }
    }

    /// The failure reason, or the repairs joined with `; ` (empty when none).
    pub fn detail(&self) -> String {
        match self {
            Extraction::Program { notes, .. } => notes.join("; "),
            Extraction::Failed { reason } => reason.clone(),
        }
    }
}

impl fmt::Display for Extraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let detail = self.detail();
        if detail.is_empty() {
            write!(f, "{}", self.status())
        } else {
            write!(f, "{} ({detail})", self.status())
        }
    }
}

/// Builds the program for `response` to the HumanEval problem `prompt` (whose function is
/// `entry_point`), given how the model was prompted.
pub fn extract(prompt: &str, entry_point: &str, response: &str, style: PromptStyle) -> Extraction {
    let text = response.replace("\r\n", "\n");
    let mut notes = Vec::new();
    let code = match style {
        PromptStyle::Completion => {
            let cut = COMPLETION_STOPS.iter().filter_map(|s| text.find(s)).min();
            match cut {
                Some(at) if !defines_top_level(&text, entry_point) => {
                    notes.push("cut at a stop sequence".to_string());
                    text[..at].to_string()
                }
                _ => text,
            }
        }
        PromptStyle::Chat => match code_from_chat(&text, entry_point, &mut notes) {
            Some(code) => code,
            None => {
                return Extraction::Failed {
                    reason: if text.trim().is_empty() {
                        "empty response".to_string()
                    } else {
                        "no code in the response (no fenced block and no Python-looking lines)"
                            .to_string()
                    },
                };
            }
        },
    };
    if code.trim().is_empty() {
        return Extraction::Failed {
            reason: "empty code".to_string(),
        };
    }
    if defines_top_level(&code, entry_point) {
        return full_function(prompt, entry_point, &code, notes);
    }
    let blocks = top_level_blocks(&code);
    if let Some(nested) = code
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("def {entry_point}(")))
        && !nested.starts_with("def ")
    {
        return Extraction::Failed {
            reason: format!("`{entry_point}` is defined only inside another block (e.g. a class)"),
        };
    }
    let other_defs: Vec<&str> = blocks
        .iter()
        .filter(|b| b.starts_at_column_zero && b.kind() == BlockKind::Definition)
        .filter_map(|b| b.defined_name())
        .collect();
    if !other_defs.is_empty() {
        return Extraction::Failed {
            reason: format!(
                "the code defines {} but not `{entry_point}`",
                other_defs
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    }
    body_appended(prompt, &code, style, notes)
}

/// Code from a chat response: the fenced block that defines the entry point, else the first
/// Python block, else the response itself when it looks like code.
fn code_from_chat(text: &str, entry_point: &str, notes: &mut Vec<String>) -> Option<String> {
    let blocks = fenced_blocks(text);
    if !blocks.is_empty() {
        let python: Vec<&Fenced> = blocks.iter().filter(|b| b.is_python()).collect();
        let chosen = python
            .iter()
            .position(|b| defines_top_level(&b.code, entry_point))
            .or_else(|| {
                python
                    .iter()
                    .position(|b| b.code.contains(&format!("def {entry_point}(")))
            })
            .or_else(|| python.iter().position(|b| !b.code.trim().is_empty()))
            .or(if python.is_empty() { None } else { Some(0) });
        if let Some(i) = chosen {
            let block = python[i];
            if python.len() > 1 {
                notes.push(format!(
                    "{} code blocks, used block {}",
                    python.len(),
                    i + 1
                ));
            }
            if !block.closed {
                notes.push("code fence not closed (response cut off?)".to_string());
            }
            return Some(block.code.clone());
        }
        return None;
    }
    // No fence: raw code, possibly with prose around it; the top-level filter drops the prose.
    let looks_like_code = text.lines().any(|l| {
        let t = l.trim_start();
        t.starts_with("def ")
            || t.starts_with("return ")
            || t.starts_with("import ")
            || t.starts_with("from ")
            || t.starts_with("for ")
            || t.starts_with("if ")
    });
    if looks_like_code {
        notes.push("no code fence: used the raw response".to_string());
        Some(text.to_string())
    } else {
        None
    }
}

#[derive(Debug)]
struct Fenced {
    language: String,
    code: String,
    closed: bool,
}

impl Fenced {
    fn is_python(&self) -> bool {
        matches!(self.language.as_str(), "" | "python" | "py" | "python3")
    }
}

/// The fenced blocks of a markdown response; an unclosed last fence runs to the end. A fence of
/// n backticks closes at a line of at least n backticks (CommonMark), and the blocks fenced
/// inside a non-Python block (a ````markdown wrapper) are listed in its place.
fn fenced_blocks(text: &str) -> Vec<Fenced> {
    let mut blocks = Vec::new();
    // (fence length, language, lines)
    let mut open: Option<(usize, String, Vec<&str>)> = None;
    for line in text.lines() {
        let trimmed = line.trim();
        let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
        match &mut open {
            None => {
                if ticks >= 3 {
                    let lang = trimmed[ticks..].trim().to_ascii_lowercase();
                    open = Some((ticks, lang, Vec::new()));
                }
            }
            Some((fence, lang, lines)) => {
                if ticks >= *fence && ticks == trimmed.len() {
                    blocks.push(Fenced {
                        language: std::mem::take(lang),
                        code: join_lines(lines),
                        closed: true,
                    });
                    open = None;
                } else {
                    lines.push(line);
                }
            }
        }
    }
    if let Some((_, language, lines)) = open {
        blocks.push(Fenced {
            language,
            code: join_lines(&lines),
            closed: false,
        });
    }
    blocks
        .into_iter()
        .flat_map(|b| {
            let wraps_fences = b.code.lines().any(|l| l.trim_start().starts_with("```"));
            if wraps_fences && (!b.is_python() || b.language.is_empty()) {
                fenced_blocks(&b.code)
            } else {
                vec![b]
            }
        })
        .collect()
}

fn join_lines(lines: &[&str]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Whether `code` has a column-0 `def entry_point(` (or `async def`).
fn defines_top_level(code: &str, entry_point: &str) -> bool {
    let def = format!("def {entry_point}(");
    let async_def = format!("async def {entry_point}(");
    code.lines()
        .any(|l| l.starts_with(&def) || l.starts_with(&async_def))
}

/// The response defines the function: keep its definitions, drop top-level statements that
/// would run at import time (example calls, prints, asserts, `if __name__` blocks, prose), and
/// prepend the prompt's imports and helper functions that the response does not define.
fn full_function(
    prompt: &str,
    entry_point: &str,
    code: &str,
    mut notes: Vec<String>,
) -> Extraction {
    let blocks = top_level_blocks(code);
    if !blocks
        .iter()
        .any(|b| b.kind() == BlockKind::Definition && b.defined_name() == Some(entry_point))
    {
        return Extraction::Failed {
            reason: format!(
                "`def {entry_point}` is swallowed by an unclosed bracket or string before it"
            ),
        };
    }
    let mut kept = String::new();
    let mut dropped = 0;
    for block in &blocks {
        match block.kind() {
            BlockKind::Import | BlockKind::Definition | BlockKind::Assignment => {
                kept.push_str(&block.text)
            }
            BlockKind::Other => {
                if !block.text.trim().is_empty() {
                    dropped += 1;
                }
            }
        }
    }
    if dropped > 0 {
        notes.push(format!("dropped {dropped} top-level statement(s)"));
    }
    let defined: Vec<&str> = blocks.iter().filter_map(|b| b.defined_name()).collect();
    let imported: Vec<String> = blocks
        .iter()
        .filter(|b| b.kind() == BlockKind::Import)
        .map(|b| normalize_ws(&b.text))
        .collect();
    let mut carried = String::new();
    let (mut carried_imports, mut carried_helpers) = (0, Vec::new());
    for block in top_level_blocks(prompt) {
        match block.kind() {
            BlockKind::Import if !imported.contains(&normalize_ws(&block.text)) => {
                carried.push_str(&block.text);
                carried_imports += 1;
            }
            BlockKind::Definition | BlockKind::Assignment => {
                if let Some(name) = block.defined_name()
                    && name != entry_point
                    && !defined.contains(&name)
                {
                    carried.push_str(&block.text);
                    carried_helpers.push(format!("`{name}`"));
                }
            }
            _ => {}
        }
    }
    if carried_imports > 0 {
        notes.push(format!(
            "carried {carried_imports} import(s) from the prompt"
        ));
    }
    if !carried_helpers.is_empty() {
        notes.push(format!(
            "carried {} from the prompt",
            carried_helpers.join(", ")
        ));
    }
    let mut program = carried;
    if !program.is_empty() && !program.ends_with("\n\n") {
        program.push('\n');
    }
    program.push_str(&kept);
    Extraction::Program {
        program,
        kind: ProgramKind::FullFunction,
        notes,
    }
}

/// The response is the body: append it to the prompt, indenting it when it came unindented.
fn body_appended(
    prompt: &str,
    code: &str,
    style: PromptStyle,
    mut notes: Vec<String>,
) -> Extraction {
    // Leading blank lines only; keep the first line's own indentation.
    let mut body = code.trim_end().trim_start_matches('\n').to_string();
    let first = body.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    if !first.starts_with(' ') && !first.starts_with('\t') {
        body = body
            .lines()
            .map(|l| {
                if l.trim().is_empty() {
                    String::new()
                } else {
                    format!("    {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        notes.push("body was not indented: indented by 4 spaces".to_string());
    }
    if style == PromptStyle::Chat {
        notes.push("response is a body: appended to the prompt".to_string());
    }
    let mut program = prompt.to_string();
    if !program.ends_with('\n') {
        program.push('\n');
    }
    program.push_str(&body);
    program.push('\n');
    Extraction::Program {
        program,
        kind: ProgramKind::BodyAppended,
        notes,
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Import,
    Definition,
    Assignment,
    Other,
}

/// One top-level statement with its indented continuation lines (and the blank lines after it).
#[derive(Debug)]
struct Block {
    text: String,
    starts_at_column_zero: bool,
}

impl Block {
    fn head(&self) -> &str {
        self.text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
    }

    fn kind(&self) -> BlockKind {
        let head = self.head();
        let first_word = head
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '@'))
            .next()
            .unwrap_or("");
        match first_word {
            "import" | "from" => BlockKind::Import,
            "def" | "class" | "async" => BlockKind::Definition,
            w if w.starts_with('@') || head.starts_with('@') => BlockKind::Definition,
            _ if is_assignment(head) => BlockKind::Assignment,
            _ => BlockKind::Other,
        }
    }

    /// The function/class/variable name this block defines at top level.
    fn defined_name(&self) -> Option<&str> {
        let mut lines = self.text.lines().filter(|l| !l.trim().is_empty());
        let mut head = lines.next()?;
        while head.starts_with('@') {
            head = lines.next()?;
        }
        let rest = head
            .strip_prefix("async def ")
            .or_else(|| head.strip_prefix("def "))
            .or_else(|| head.strip_prefix("class "));
        match rest {
            Some(rest) => Some(
                rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()?,
            )
            .filter(|n| !n.is_empty()),
            None if is_assignment(head) => head
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next(),
            None => None,
        }
    }
}

/// `NAME = ...` or `NAME: type = ...` (not `==`), at the start of a line.
fn is_assignment(line: &str) -> bool {
    let name_len = line
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(line.len());
    if name_len == 0 || line.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let rest = line[name_len..].trim_start();
    (rest.starts_with('=') && !rest.starts_with("=="))
        || (rest.starts_with(':') && rest.contains('='))
}

/// Splits Python source into top-level blocks. A block starts at a column-0 line that is not a
/// comment, not a closing bracket, and begins a statement (no string, bracket or backslash
/// continuation open, see [`Lexer`]).
fn top_level_blocks(code: &str) -> Vec<Block> {
    let mut blocks: Vec<Block> = Vec::new();
    let mut lexer = Lexer::default();
    for line in code.split_inclusive('\n') {
        let continues = !lexer.at_statement_boundary()
            || line.trim_end().is_empty()
            || line.starts_with([' ', '\t', '#', ')', ']', '}']);
        lexer.line(line);
        if continues && !blocks.is_empty() {
            blocks.last_mut().expect("checked").text.push_str(line);
        } else {
            blocks.push(Block {
                text: line.to_string(),
                starts_at_column_zero: !line.starts_with([' ', '\t']),
            });
        }
    }
    if let Some(last) = blocks.last_mut()
        && !last.text.ends_with('\n')
    {
        last.text.push('\n');
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    \"\"\" Check.\n    >>> has_close_elements([1.0, 2.0], 0.5)\n    False\n    \"\"\"\n";
    const HELPER_PROMPT: &str = "\n\ndef encode_shift(s: str):\n    \"\"\"\n    shifts.\n    \"\"\"\n    return \"\".join([chr(((ord(ch) + 5 - ord(\"a\")) % 26) + ord(\"a\")) for ch in s])\n\n\ndef decode_shift(s: str):\n    \"\"\"\n    decodes.\n    \"\"\"\n";

    /// Extraction for the `has_close_elements` problem of [`PROMPT`].
    fn has_close(response: &str, style: PromptStyle) -> Extraction {
        extract(PROMPT, "has_close_elements", response, style)
    }

    fn program(e: &Extraction) -> &str {
        e.program()
            .unwrap_or_else(|| panic!("expected a program, got {e}"))
    }

    #[test]
    fn fenced_full_function_gets_missing_import_and_drops_examples() {
        let response = "Here is the function:\n\n```python\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n    for i, a in enumerate(numbers):\n        for b in numbers[i + 1:]:\n            if abs(a - b) < threshold:\n                return True\n    return False\n\n# Example\nprint(has_close_elements([1.0, 2.0], 0.5))\nassert has_close_elements([1.0, 1.1], 0.5)\n```\nThis works because...";
        let e = has_close(response, PromptStyle::Chat);
        assert_eq!(e.status(), "full_function");
        let p = program(&e);
        assert!(p.starts_with("from typing import List\n"), "{p}");
        assert!(!p.contains("print(") && !p.contains("assert "), "{p}");
        assert!(
            e.detail().contains("carried 1 import") && e.detail().contains("dropped 2"),
            "{}",
            e.detail()
        );
    }

    #[test]
    fn helper_functions_of_the_prompt_are_carried() {
        let response = "```python\ndef decode_shift(s: str):\n    return \"\".join([chr(((ord(ch) - 5 - ord(\"a\")) % 26) + ord(\"a\")) for ch in s])\n```";
        let e = extract(HELPER_PROMPT, "decode_shift", response, PromptStyle::Chat);
        let p = program(&e);
        assert!(
            p.find("def encode_shift").unwrap() < p.find("def decode_shift").unwrap(),
            "{p}"
        );
        assert!(e.detail().contains("`encode_shift`"));
        // A response that redefines the helper keeps its own version only.
        let both = format!(
            "```python\ndef encode_shift(s):\n    return s\n\n{}",
            &response[10..]
        );
        let e = extract(HELPER_PROMPT, "decode_shift", &both, PromptStyle::Chat);
        assert_eq!(program(&e).matches("def encode_shift").count(), 1);
    }

    #[test]
    fn import_already_present_is_not_duplicated() {
        let response = "```python\nfrom typing import List\n\ndef has_close_elements(numbers, threshold):\n    return False\n```";
        let e = has_close(response, PromptStyle::Chat);
        assert_eq!(program(&e).matches("from typing import List").count(), 1);
        assert_eq!(e.detail(), "");
    }

    #[test]
    fn body_only_is_appended_and_indented() {
        let e = has_close(
            "```python\nreturn any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)\n```",
            PromptStyle::Chat,
        );
        assert_eq!(e.status(), "body_appended");
        let p = program(&e);
        assert!(p.starts_with(PROMPT) && p.ends_with("    return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)\n"), "{p}");
        assert!(e.detail().contains("indented"));
    }

    #[test]
    fn completion_mode_appends_and_cuts_at_stop_sequences() {
        let e = has_close(
            "    return False\n\n\ndef main():\n    pass\n",
            PromptStyle::Completion,
        );
        assert_eq!(e.status(), "body_appended");
        assert_eq!(program(&e), format!("{PROMPT}    return False\n"));
        // A base model that restates the whole function is treated as a full definition.
        let e = has_close(
            "from typing import List\n\ndef has_close_elements(numbers, threshold):\n    return True\n",
            PromptStyle::Completion,
        );
        assert_eq!(e.status(), "full_function");
    }

    #[test]
    fn unclosed_fence_is_used_and_noted() {
        let e = has_close(
            "```python\ndef has_close_elements(numbers, threshold):\n    return False\n",
            PromptStyle::Chat,
        );
        assert_eq!(e.status(), "full_function");
        assert!(e.detail().contains("not closed"));
    }

    #[test]
    fn picks_the_block_that_defines_the_entry_point() {
        let response = "```bash\npip install numpy\n```\n```python\nx = 1\n```\n```python\ndef has_close_elements(a, b):\n    return True\n```";
        let e = has_close(response, PromptStyle::Chat);
        assert!(program(&e).contains("return True"));
        assert!(e.detail().contains("used block 2"), "{}", e.detail());
    }

    /// Bug: a ````markdown wrapper around the python block closed at the inner fence, so the
    /// response had "no code".
    #[test]
    fn fences_nested_in_a_markdown_block() {
        for wrapper in ["````markdown", "````"] {
            let response = format!(
                "{wrapper}\n```python\ndef has_close_elements(a, b):\n    return True\n```\n````"
            );
            let e = has_close(&response, PromptStyle::Chat);
            assert_eq!(e.status(), "full_function", "{wrapper}: {e}");
            assert!(!program(&e).contains("```"), "{}", program(&e));
        }
        // A fence closes only at a line of at least as many backticks.
        let blocks = fenced_blocks("````python\nx = '```'\n```\ny = 1\n````\n");
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].code, "x = '```'\n```\ny = 1\n");
    }

    /// Bug: a definition swallowed by an unclosed bracket before it was reported as a full
    /// function, but the program no longer defined it.
    #[test]
    fn definition_inside_an_unclosed_bracket_fails() {
        let response = "```python\nprint(\ndef has_close_elements(a, b):\n    return True\n```";
        let e = has_close(response, PromptStyle::Chat);
        assert_eq!(
            e.detail(),
            "`def has_close_elements` is swallowed by an unclosed bracket or string before it"
        );
        assert_eq!(e.status(), "failed");
    }

    #[test]
    fn failures_carry_reasons() {
        let cases = [
            ("", "empty response"),
            ("I cannot help with that.", "no code"),
            (
                "```python\ndef other(x):\n    return x\n```",
                "defines `other` but not `has_close_elements`",
            ),
            (
                "```python\nclass Solution:\n    def has_close_elements(self, n, t):\n        return False\n```",
                "only inside",
            ),
            ("```python\n\n```", "empty code"),
            ("```bash\nls\n```", "no code"),
        ];
        for (response, reason) in cases {
            let e = has_close(response, PromptStyle::Chat);
            match &e {
                Extraction::Failed { reason: r } => {
                    assert!(r.contains(reason), "{response:?}: {r}")
                }
                other => panic!("{response:?}: expected failure, got {other}"),
            }
        }
    }

    #[test]
    fn raw_code_without_fence_drops_prose() {
        let response = "def has_close_elements(numbers, threshold):\n    return False\n\nThis function returns False.\n";
        let e = has_close(response, PromptStyle::Chat);
        assert!(!program(&e).contains("This function"));
        assert!(e.detail().contains("no code fence"));
    }

    #[test]
    fn non_ascii_text_is_scanned_safely() {
        // HumanEval/72's docstring has '➞'; the scanner must never slice inside a multi-byte char.
        let code = "def f(q):\n    \"\"\"\n    f([1, 2]) ➞ False \"é\" '''ü'''\n    \"\"\"\n    return 1\nx = 'ß'\n";
        let blocks = top_level_blocks(code);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].defined_name(), Some("x"));
        let e = extract(
            code,
            "f",
            &format!("```python\n{code}```"),
            PromptStyle::Chat,
        );
        assert_eq!(e.status(), "full_function");
    }

    #[test]
    fn blocks_respect_strings_and_brackets() {
        let code = "def f(\n    a,\n):\n    s = \"\"\"\nnot top level\n\"\"\"\n    return a\nx = [\n1,\n]\nprint(x)\n";
        let blocks = top_level_blocks(code);
        let kinds: Vec<_> = blocks.iter().map(|b| b.kind()).collect();
        assert_eq!(
            kinds,
            vec![
                BlockKind::Definition,
                BlockKind::Assignment,
                BlockKind::Other
            ]
        );
        assert_eq!(blocks[0].defined_name(), Some("f"));
        assert_eq!(blocks[1].defined_name(), Some("x"));
    }
}
