//! Strict parsers for the tagged blocks the IPC stage prompts ask for (DESIGN §1):
//! `<PROBLEM_START> … <PROBLEM_END>`, `<RATING_START> … <RATING_END>`,
//! `<SKELETON_START> … <SKELETON_END>` and `<TESTS_START> … <TESTS_END>`.
//!
//! A response that does not parse is a [`Rejection`] with a machine-readable [`RejectReason`]
//! and the raw text, never a panic and never silently dropped. The Python-level checks (does the
//! skeleton parse, do the tests compile) run later in the sandbox; what is checked here is the
//! shape: the block exists, the fields are there, the signature is typed, each test is a
//! one-line `assert f(...) == ...` whose call has an arity the signature accepts.

use std::collections::HashSet;
use std::fmt;

/// Why a model response was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// The opening tag is missing.
    MissingBlock(&'static str),
    /// The opening tag is there but the closing one is not (often: the response hit max tokens).
    UnterminatedBlock(&'static str),
    /// A required field is missing or empty.
    MissingField(&'static str),
    /// The function signature is not `def name(typed params) -> type:`.
    BadSignature(String),
    /// The quality score is not a number in 0..=10.
    BadScore(String),
    /// The skeleton does not define the signature's function.
    SkeletonMissingFunction(String),
    /// The tests block had no usable test.
    NoTests,
}

impl RejectReason {
    /// A short stable label for counting rejections in summaries.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::MissingBlock(_) => "missing_block",
            RejectReason::UnterminatedBlock(_) => "unterminated_block",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::BadSignature(_) => "bad_signature",
            RejectReason::BadScore(_) => "bad_score",
            RejectReason::SkeletonMissingFunction(_) => "skeleton_missing_function",
            RejectReason::NoTests => "no_tests",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RejectReason::MissingBlock(tag) => write!(f, "no {tag} block in the response"),
            RejectReason::UnterminatedBlock(tag) => write!(f, "{tag} block is not closed"),
            RejectReason::MissingField(field) => write!(f, "field `{field}` is missing or empty"),
            RejectReason::BadSignature(why) => write!(f, "bad function signature: {why}"),
            RejectReason::BadScore(text) => {
                write!(f, "quality score `{text}` is not a number from 0 to 10")
            }
            RejectReason::SkeletonMissingFunction(name) => {
                write!(f, "skeleton does not define function `{name}`")
            }
            RejectReason::NoTests => write!(f, "no usable `assert` test in the tests block"),
        }
    }
}

/// A response that did not parse: the reason and the raw text, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub raw: String,
}

fn reject<T>(reason: RejectReason, raw: &str) -> Result<T, Rejection> {
    Err(Rejection {
        reason,
        raw: raw.to_string(),
    })
}

/// One parameter of a typed signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub annotation: String,
    pub has_default: bool,
}

/// `def name(params) -> returns:` with every parameter annotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSignature {
    pub name: String,
    pub params: Vec<Param>,
    pub returns: String,
}

impl FunctionSignature {
    /// Parses one `def` line; the trailing colon is optional.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim().trim_matches('`').trim();
        let rest = line
            .strip_prefix("def ")
            .ok_or("does not start with `def `")?;
        let open = rest.find('(').ok_or("no parameter list")?;
        let name = rest[..open].trim();
        if !is_identifier(name) {
            return Err(format!("`{name}` is not a Python identifier"));
        }
        let close = matching_paren(rest, open).ok_or("unbalanced parentheses")?;
        let params_text = &rest[open + 1..close];
        let tail = rest[close + 1..].trim().trim_end_matches(':').trim();
        let returns = tail
            .strip_prefix("->")
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or("no return type annotation (`-> type`)")?;
        let mut params = Vec::new();
        for piece in split_top_level(params_text, ',') {
            let piece = piece.trim();
            if piece.is_empty() || piece == "/" || piece == "*" {
                continue;
            }
            let (decl, has_default) = match split_top_level(piece, '=').as_slice() {
                [decl] => (decl.trim().to_string(), false),
                [decl, _default] => (decl.trim().to_string(), true),
                _ => return Err(format!("cannot read parameter `{piece}`")),
            };
            let (pname, annotation) = decl
                .split_once(':')
                .map(|(n, a)| (n.trim().to_string(), a.trim().to_string()))
                .ok_or_else(|| format!("parameter `{decl}` has no type annotation"))?;
            if !is_identifier(pname.trim_start_matches('*')) || annotation.is_empty() {
                return Err(format!("cannot read parameter `{piece}`"));
            }
            params.push(Param {
                name: pname,
                annotation,
                has_default,
            });
        }
        Ok(FunctionSignature {
            name: name.to_string(),
            params,
            returns: returns.to_string(),
        })
    }

    /// The signature as one `def` line ending in a colon.
    pub fn to_def(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.annotation))
            .collect();
        format!(
            "def {}({}) -> {}:",
            self.name,
            params.join(", "),
            self.returns
        )
    }

    /// Whether a call with `positional` arguments fits (ignoring keyword arguments).
    pub fn accepts_arity(&self, positional: usize) -> bool {
        if self.params.iter().any(|p| p.name.starts_with('*')) {
            let required = self
                .params
                .iter()
                .filter(|p| !p.has_default && !p.name.starts_with('*'))
                .count();
            return positional >= required;
        }
        let required = self.params.iter().filter(|p| !p.has_default).count();
        (required..=self.params.len()).contains(&positional)
    }
}

/// A parsed `<PROBLEM_START>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedProblem {
    pub title: String,
    pub description: String,
    pub signature: FunctionSignature,
    pub example: String,
    pub hint: String,
}

/// A parsed `<RATING_START>` block.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedRating {
    pub score: f32,
    pub difficulty: Option<String>,
    pub category: Option<String>,
    pub summary: String,
}

/// One parsed test line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedTest {
    /// The `assert` line as written (trimmed).
    pub source: String,
    /// The call's argument text, when the test is `assert f(args) == expected` with positional
    /// arguments only: such tests run as calls with the expected value checked outside the child.
    pub call: Option<CallTest>,
}

/// `assert f(args) == expected`, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallTest {
    /// The arguments as a Python list literal, e.g. `[[1, 2], 3]`.
    pub args: String,
    /// The expected value's Python literal.
    pub expected: String,
}

/// Tests parsed from one response, plus the lines that were dropped and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedTests {
    pub tests: Vec<ParsedTest>,
    /// `(line, reason)` for each line that was not a usable test.
    pub dropped: Vec<(String, String)>,
}

const PROBLEM: (&str, &str) = ("<PROBLEM_START>", "<PROBLEM_END>");
const RATING: (&str, &str) = ("<RATING_START>", "<RATING_END>");
const SKELETON: (&str, &str) = ("<SKELETON_START>", "<SKELETON_END>");
const TESTS: (&str, &str) = ("<TESTS_START>", "<TESTS_END>");

/// The text between the first opening tag and the closing tag after it.
fn block<'a>(
    raw: &'a str,
    (open, close): (&'static str, &'static str),
) -> Result<&'a str, RejectReason> {
    let start = raw.find(open).ok_or(RejectReason::MissingBlock(open))? + open.len();
    let end = raw[start..]
        .find(close)
        .ok_or(RejectReason::UnterminatedBlock(open))?;
    Ok(&raw[start..start + end])
}

/// Splits `Key: value` fields; a value runs until the next known key. Keys match
/// case-insensitively and may be wrapped in markdown bold.
fn fields(body: &str, keys: &[&'static str]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for line in body.lines() {
        let stripped = line.trim().trim_start_matches(['-', '*', ' ']).trim_start();
        let found = keys.iter().find_map(|key| {
            let head = stripped.get(..key.len())?;
            if !head.eq_ignore_ascii_case(key) {
                return None;
            }
            let rest = stripped[key.len()..].trim_start_matches('*');
            rest.strip_prefix(':')
                .map(|v| (*key, v.trim_start_matches('*').trim().to_string()))
        });
        match (found, out.last_mut()) {
            (Some(field), _) => out.push(field),
            (None, Some((_, value))) => {
                value.push('\n');
                value.push_str(line);
            }
            (None, None) => {}
        }
    }
    for (_, value) in &mut out {
        *value = value.trim().to_string();
    }
    out
}

fn field(fields: &[(&'static str, String)], key: &'static str) -> Result<String, RejectReason> {
    fields
        .iter()
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
        .ok_or(RejectReason::MissingField(key))
}

/// Parses a Problem Generator response.
pub fn parse_problem(raw: &str) -> Result<ParsedProblem, Rejection> {
    let body = block(raw, PROBLEM).or_else(|r| reject(r, raw))?;
    let keys = [
        "Title",
        "Description",
        "Function Signature",
        "Example",
        "Hint",
    ];
    let f = fields(body, &keys);
    let get = |key| field(&f, key).or_else(|r| reject(r, raw));
    let signature_text = get("Function Signature")?;
    let signature_line = signature_text
        .lines()
        .map(|l| l.trim().trim_matches('`').trim())
        .find(|l| l.starts_with("def "))
        .unwrap_or(signature_text.as_str());
    let signature = FunctionSignature::parse(signature_line)
        .or_else(|why| reject(RejectReason::BadSignature(why), raw))?;
    Ok(ParsedProblem {
        title: get("Title")?,
        description: get("Description")?,
        signature,
        example: get("Example")?,
        hint: get("Hint")?,
    })
}

/// Parses a Quality Oracle response.
pub fn parse_rating(raw: &str) -> Result<ParsedRating, Rejection> {
    let body = block(raw, RATING).or_else(|r| reject(r, raw))?;
    let keys = ["Problem Quality Score", "Difficulty", "Category", "Summary"];
    let f = fields(body, &keys);
    let score_text = field(&f, "Problem Quality Score").or_else(|r| reject(r, raw))?;
    let number: String = score_text
        .split(['/', ' '])
        .next()
        .unwrap_or_default()
        .to_string();
    let score = number
        .parse::<f32>()
        .ok()
        .filter(|s| (0.0..=10.0).contains(s))
        .ok_or(())
        .or_else(|()| reject(RejectReason::BadScore(score_text.clone()), raw))?;
    let optional = |key| field(&f, key).ok();
    Ok(ParsedRating {
        score,
        difficulty: optional("Difficulty").map(|d| d.to_lowercase()),
        category: optional("Category"),
        summary: field(&f, "Summary").or_else(|r| reject(r, raw))?,
    })
}

/// Parses an Interface Synthesizer response: the code inside the block (fences removed), which
/// must define `function`.
pub fn parse_skeleton(raw: &str, function: &str) -> Result<String, Rejection> {
    let body = block(raw, SKELETON).or_else(|r| reject(r, raw))?;
    let code = strip_fences(body);
    let defines = code.lines().any(|l| {
        l.trim_start().strip_prefix("def ").is_some_and(|rest| {
            rest.trim_start().starts_with(function)
                && rest[function.len()..].trim_start().starts_with('(')
        })
    });
    if !defines {
        return reject(
            RejectReason::SkeletonMissingFunction(function.to_string()),
            raw,
        );
    }
    Ok(code)
}

/// Parses a Test Understanding response for `signature`'s function. Lines that are not one-line
/// asserts calling the function with an accepted arity are dropped with a reason; exact
/// duplicates (after whitespace normalisation outside strings) are dropped, also against `seen`.
pub fn parse_tests(
    raw: &str,
    signature: &FunctionSignature,
    seen: &mut HashSet<String>,
) -> Result<ParsedTests, Rejection> {
    let body = block(raw, TESTS).or_else(|r| reject(r, raw))?;
    let mut parsed = ParsedTests::default();
    for line in strip_fences(body).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_test_line(line, signature) {
            Ok(test) => {
                if seen.insert(normalize(line)) {
                    parsed.tests.push(test);
                } else {
                    parsed.dropped.push((line.to_string(), "duplicate".into()));
                }
            }
            Err(why) => parsed.dropped.push((line.to_string(), why)),
        }
    }
    if parsed.tests.is_empty() {
        return reject(RejectReason::NoTests, raw);
    }
    Ok(parsed)
}

fn parse_test_line(line: &str, signature: &FunctionSignature) -> Result<ParsedTest, String> {
    let expr = line
        .strip_prefix("assert ")
        .ok_or("not an `assert` statement")?
        .trim();
    if !balanced(expr) {
        return Err("unbalanced brackets or quotes (multi-line tests are not accepted)".into());
    }
    let name = &signature.name;
    if !contains_call(expr, name) {
        return Err(format!("does not call `{name}`"));
    }
    let call = split_top_level_eq(expr).and_then(|(lhs, rhs)| {
        let lhs = lhs.trim();
        let after = lhs.strip_prefix(name.as_str())?.trim_start();
        if !after.starts_with('(') || matching_paren(after, 0)? != after.len() - 1 {
            return None;
        }
        Some((
            after[1..after.len() - 1].to_string(),
            rhs.trim().to_string(),
        ))
    });
    let call = match call {
        Some((args, expected)) => {
            let pieces: Vec<&str> = split_top_level(&args, ',')
                .into_iter()
                .filter(|a| !a.trim().is_empty())
                .collect();
            if pieces.iter().any(|a| is_keyword_arg(a)) {
                None
            } else if !signature.accepts_arity(pieces.len()) {
                return Err(format!(
                    "calls `{name}` with {} arguments; the signature takes {}",
                    pieces.len(),
                    signature.params.len()
                ));
            } else {
                Some(CallTest {
                    args: format!(
                        "[{}]",
                        pieces
                            .iter()
                            .map(|p| p.trim())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    expected,
                })
            }
        }
        None => None,
    };
    Ok(ParsedTest {
        source: line.to_string(),
        call,
    })
}

fn strip_fences(body: &str) -> String {
    body.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_matches('\n')
        .to_string()
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn is_keyword_arg(arg: &str) -> bool {
    let pieces = split_top_level(arg, '=');
    pieces.len() == 2 && is_identifier(pieces[0].trim())
}

/// Walks `s` tracking brackets and string literals; calls `visit(index, char, depth)` for every
/// character outside strings.
fn scan(s: &str, mut visit: impl FnMut(usize, char, usize) -> bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                if depth == 0 {
                    return None;
                }
                depth -= 1;
            }
            _ => {}
        }
        if !visit(i, c, depth) {
            return Some(i);
        }
    }
    (quote.is_none() && depth == 0).then_some(s.len())
}

fn balanced(s: &str) -> bool {
    scan(s, |_, _, _| true).is_some()
}

fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut close = None;
    let bytes = &s[open..];
    scan(bytes, |i, c, depth| {
        if c == ')' && depth == 0 && close.is_none() {
            close = Some(open + i);
            return false;
        }
        true
    });
    close
}

fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    scan(s, |i, c, depth| {
        // `==`, `<=`, `>=`, `!=` are comparisons, not keyword `=`.
        let is_sep = c == sep
            && depth == 0
            && !(sep == '='
                && (s[i + 1..].starts_with('=') || s[..i].ends_with(['=', '<', '>', '!'])));
        if is_sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        true
    });
    parts.push(&s[start..]);
    parts
}

/// Splits `lhs == rhs` at the single top-level `==`.
fn split_top_level_eq(s: &str) -> Option<(&str, &str)> {
    let mut found = Vec::new();
    scan(s, |i, c, depth| {
        if c == '='
            && depth == 0
            && s[i + 1..].starts_with('=')
            && !s[..i].ends_with(['=', '!', '<', '>'])
        {
            found.push(i);
        }
        true
    });
    match found.as_slice() {
        [i] => Some((&s[..*i], &s[i + 2..])),
        _ => None,
    }
}

fn contains_call(expr: &str, name: &str) -> bool {
    let mut from = 0;
    while let Some(pos) = expr[from..].find(name) {
        let at = from + pos;
        let before_ok = expr[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c == '_' || c == '.' || c.is_alphanumeric()));
        if before_ok && expr[at + name.len()..].trim_start().starts_with('(') {
            return true;
        }
        from = at + name.len();
    }
    false
}

/// Whitespace outside string literals removed: `f(1,2)` and `f(1, 2)` are the same test.
fn normalize(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in line.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
                out.push(c);
            }
            None => {
                if c == '\'' || c == '"' {
                    quote = Some(c);
                }
                if !c.is_whitespace() {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBLEM_OK: &str = "Sure! Here it is.\n<PROBLEM_START>\nTitle: Pair Sums\nDescription: Given a list of integers and a target,\ncount pairs (i < j) whose sum equals the target.\nFunction Signature: def count_pairs(nums: List[int], target: int = 0) -> int:\nExample: count_pairs([1, 2, 3], 4) -> 1\nHint: Use a dictionary of counts.\n<PROBLEM_END>\n";

    fn sig() -> FunctionSignature {
        parse_problem(PROBLEM_OK).unwrap().signature
    }

    #[test]
    fn problem_fields_and_signature() {
        let p = parse_problem(PROBLEM_OK).unwrap();
        assert_eq!(p.title, "Pair Sums");
        assert!(
            p.description.contains("count pairs (i < j)"),
            "{}",
            p.description
        );
        assert_eq!(p.signature.name, "count_pairs");
        assert_eq!(p.signature.params.len(), 2);
        assert_eq!(p.signature.params[0].annotation, "List[int]");
        assert!(p.signature.params[1].has_default);
        assert_eq!(p.signature.returns, "int");
        assert_eq!(
            p.signature.to_def(),
            "def count_pairs(nums: List[int], target: int) -> int:"
        );
    }

    #[test]
    fn malformed_problems_are_rejected_with_reasons() {
        let cases: &[(&str, &str)] = &[
            ("no tags at all", "missing_block"),
            ("<PROBLEM_START>\nTitle: x\n", "unterminated_block"),
            (
                "<PROBLEM_START>\nTitle: x\nDescription: y\n<PROBLEM_END>",
                "missing_field",
            ),
            (
                "<PROBLEM_START>\nTitle: x\nDescription: y\nFunction Signature: def f(a, b):\nExample: f(1,2) -> 3\nHint: h\n<PROBLEM_END>",
                "bad_signature",
            ),
            (
                "<PROBLEM_START>\nTitle: x\nDescription: y\nFunction Signature: def f(a: int) -> int\nExample: \nHint: h\n<PROBLEM_END>",
                "missing_field",
            ),
            (
                "<PROBLEM_START>\nTitle: x\nDescription: y\nFunction Signature: def f(a: int:\nExample: e\nHint: h\n<PROBLEM_END>",
                "bad_signature",
            ),
        ];
        for (raw, label) in cases {
            let err = parse_problem(raw).unwrap_err();
            assert_eq!(err.reason.label(), *label, "{raw:?}: {}", err.reason);
            assert_eq!(err.raw, *raw);
        }
    }

    #[test]
    fn markdown_bold_keys_and_fenced_signatures_parse() {
        let raw = "<PROBLEM_START>\n**Title:** T\n**Description:** D\n**Function Signature:**\n```python\ndef g(s: str) -> Dict[str, int]:\n```\n**Example:** g('a') -> {'a': 1}\n**Hint:** H\n<PROBLEM_END>";
        let p = parse_problem(raw).unwrap();
        assert_eq!(p.signature.returns, "Dict[str, int]");
        assert_eq!(p.title, "T");
    }

    #[test]
    fn rating_parses_and_rejects() {
        let ok = "<RATING_START>\nProblem Quality Score: 8/10\nDifficulty: Medium\nCategory: basic algorithms\nSummary: Clear.\n<RATING_END>";
        let r = parse_rating(ok).unwrap();
        assert_eq!(r.score, 8.0);
        assert_eq!(r.difficulty.as_deref(), Some("medium"));
        assert_eq!(r.summary, "Clear.");
        let bad = "<RATING_START>\nProblem Quality Score: excellent\nSummary: s\n<RATING_END>";
        assert_eq!(parse_rating(bad).unwrap_err().reason.label(), "bad_score");
        let out_of_range = "<RATING_START>\nProblem Quality Score: 42\nSummary: s\n<RATING_END>";
        assert_eq!(
            parse_rating(out_of_range).unwrap_err().reason.label(),
            "bad_score"
        );
        let no_summary = "<RATING_START>\nProblem Quality Score: 7\n<RATING_END>";
        assert_eq!(
            parse_rating(no_summary).unwrap_err().reason.label(),
            "missing_field"
        );
    }

    #[test]
    fn skeleton_must_define_the_function() {
        let ok = "<SKELETON_START>\n```python\nfrom typing import List\n\ndef count_pairs(nums: List[int], target: int) -> int:\n    \"\"\"Doc.\"\"\"\n    pass\n```\n<SKELETON_END>";
        let code = parse_skeleton(ok, "count_pairs").unwrap();
        assert!(code.starts_with("from typing import List"));
        assert!(!code.contains("```"));
        let other = ok.replace("def count_pairs", "def count_pair");
        assert_eq!(
            parse_skeleton(&other, "count_pairs")
                .unwrap_err()
                .reason
                .label(),
            "skeleton_missing_function"
        );
    }

    #[test]
    fn tests_are_split_checked_and_deduplicated() {
        let raw = "<TESTS_START>\nassert count_pairs([1, 2, 3], 4) == 1\nassert count_pairs([1,2,3],4) == 1\nassert count_pairs([], 0) == 0\nassert count_pairs([1], 2, 3, 4) == 0\nassert count_pairs(nums=[1], target=2) == 0\nassert len(str(count_pairs([5], 5))) == 1\nprint('hi')\nassert count_pairs([1, 2\nassert other([1]) == 2\nassert count_pairs(['a==b'], 0) == 0\n<TESTS_END>";
        let mut seen = HashSet::new();
        let parsed = parse_tests(raw, &sig(), &mut seen).unwrap();
        let sources: Vec<&str> = parsed.tests.iter().map(|t| t.source.as_str()).collect();
        assert_eq!(
            sources,
            [
                "assert count_pairs([1, 2, 3], 4) == 1",
                "assert count_pairs([], 0) == 0",
                "assert count_pairs(nums=[1], target=2) == 0",
                "assert len(str(count_pairs([5], 5))) == 1",
                "assert count_pairs(['a==b'], 0) == 0",
            ]
        );
        assert_eq!(
            parsed.tests[0].call,
            Some(CallTest {
                args: "[[1, 2, 3], 4]".into(),
                expected: "1".into()
            })
        );
        assert_eq!(parsed.tests[2].call, None, "keyword calls stay asserts");
        assert_eq!(parsed.tests[3].call, None, "wrapped calls stay asserts");
        assert_eq!(parsed.tests[4].call.as_ref().unwrap().args, "[['a==b'], 0]");
        let reasons: Vec<&str> = parsed.dropped.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[0] == "duplicate");
        assert!(reasons[1].contains("4 arguments"));
        assert!(reasons[2].contains("not an `assert`"));
        assert!(reasons[3].contains("unbalanced"));
        assert!(reasons[4].contains("does not call"));
        // A later batch repeating a test drops it against the running set.
        let again = parse_tests("<TESTS_START>\nassert count_pairs([], 0) == 0\nassert count_pairs([7], 7) == 0\n<TESTS_END>", &sig(), &mut seen).unwrap();
        assert_eq!(again.tests.len(), 1);
        let none = parse_tests(
            "<TESTS_START>\nprint(1)\n<TESTS_END>",
            &sig(),
            &mut HashSet::new(),
        );
        assert_eq!(none.unwrap_err().reason.label(), "no_tests");
    }

    #[test]
    fn arity_with_defaults_and_varargs() {
        let s = FunctionSignature::parse("def f(a: int, b: int = 2, *rest: int) -> int:").unwrap();
        assert!(s.accepts_arity(1) && s.accepts_arity(5) && !s.accepts_arity(0));
        let t = FunctionSignature::parse("def f(a: int, b: int = 2) -> int").unwrap();
        assert!(t.accepts_arity(1) && t.accepts_arity(2) && !t.accepts_arity(3));
    }
}
