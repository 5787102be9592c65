//! Strict parsers for the tagged blocks the IPC stage prompts ask for (docs/ARCHITECTURE.md, "The run"):
//! `<PROBLEM_START> … <PROBLEM_END>`, `<RATING_START> … <RATING_END>`,
//! `<SKELETON_START> … <SKELETON_END>` and `<TESTS_START> … <TESTS_END>`.
//!
//! A response that does not parse is a [`ParseRejection`] with a machine-readable [`ParseError`]
//! and the raw text, never a panic and never silently dropped. The Python-level checks (does the
//! skeleton parse, do the tests compile) run later in the sandbox; what is checked here is the
//! shape: the block exists, the fields are there, the signature is a typed `def` that Python
//! would accept, each test is a one-line `assert` whose calls of the function bind to the
//! signature's parameters, and a test is split into a call and an expected value only when that
//! split means the same as the assert.

use std::collections::HashSet;
use std::fmt;

use crate::python::lexer::{
    KEYWORDS, balanced, call_sites, code_chars, code_part, code_words, is_identifier, keyword_name,
    list_items, matching_paren, normalize, parenthesized, scan, split_top_level,
    split_top_level_eq, top_level_words,
};

/// Why a model response was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
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
    /// The skeleton does not define the signature's function at top level.
    SkeletonMissingFunction(String),
    /// The tests block had no usable test.
    NoTests,
    /// Every usable test in the block repeated an earlier one.
    NoNewTests,
}

impl ParseError {
    /// A short stable label for counting rejections in summaries.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::MissingBlock(_) => "missing_block",
            ParseError::UnterminatedBlock(_) => "unterminated_block",
            ParseError::MissingField(_) => "missing_field",
            ParseError::BadSignature(_) => "bad_signature",
            ParseError::BadScore(_) => "bad_score",
            ParseError::SkeletonMissingFunction(_) => "skeleton_missing_function",
            ParseError::NoTests => "no_tests",
            ParseError::NoNewTests => "no_new_tests",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::MissingBlock(tag) => write!(f, "no {tag} block in the response"),
            ParseError::UnterminatedBlock(tag) => write!(f, "{tag} block is not closed"),
            ParseError::MissingField(field) => write!(f, "field `{field}` is missing or empty"),
            ParseError::BadSignature(why) => write!(f, "bad function signature: {why}"),
            ParseError::BadScore(text) => {
                write!(f, "quality score `{text}` is not a number from 0 to 10")
            }
            ParseError::SkeletonMissingFunction(name) => {
                write!(f, "skeleton does not define function `{name}` at top level")
            }
            ParseError::NoTests => write!(f, "no usable `assert` test in the tests block"),
            ParseError::NoNewTests => {
                write!(
                    f,
                    "every usable test in the tests block repeats an earlier one"
                )
            }
        }
    }
}

/// A response that did not parse: the reason and the raw text, kept for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRejection {
    pub reason: ParseError,
    pub raw: String,
}

fn reject<T>(reason: ParseError, raw: &str) -> Result<T, ParseRejection> {
    Err(ParseRejection {
        reason,
        raw: raw.to_string(),
    })
}

/// How a parameter binds arguments (Python's parameter kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Before a `/`.
    PositionalOnly,
    /// An ordinary parameter.
    PositionalOrKeyword,
    /// `*args`.
    VarPositional,
    /// After `*` or `*args`.
    KeywordOnly,
    /// `**kwargs`.
    VarKeyword,
}

/// One parameter of a typed signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name, without `*` or `**`.
    pub name: String,
    pub annotation: String,
    /// The default value's source text.
    pub default: Option<String>,
    pub kind: ParamKind,
}

impl Param {
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    fn is_positional(&self) -> bool {
        matches!(
            self.kind,
            ParamKind::PositionalOnly | ParamKind::PositionalOrKeyword
        )
    }
}

/// `def name(params) -> returns:` with every parameter annotated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSignature {
    pub name: String,
    pub params: Vec<Param>,
    pub returns: String,
}

impl FunctionSignature {
    /// Parses one `def` (it may span lines; comments are ignored). The trailing colon is
    /// optional, and a one-line body after it is ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_with(text, None)
    }

    /// Parses a `def` whose parameters or return may lack annotations (a benchmark's prompt,
    /// e.g. HumanEval's `def encrypt(s):`): each missing one reads as `object`, so the result
    /// is a typed signature like any other.
    pub fn parse_untyped(text: &str) -> Result<Self, String> {
        Self::parse_with(text, Some("object"))
    }

    /// [`Self::parse`], with `missing` standing in for absent annotations when given.
    fn parse_with(text: &str, missing: Option<&str>) -> Result<Self, String> {
        let joined = text
            .lines()
            .map(|l| code_part(l).trim())
            .collect::<Vec<_>>()
            .join(" ");
        let line = joined.trim().trim_matches('`').trim();
        let rest = line
            .strip_prefix("def ")
            .ok_or("does not start with `def `")?;
        let open = rest.find('(').ok_or("no parameter list")?;
        let name = rest[..open].trim();
        check_name(name)?;
        let close = matching_paren(rest, open).ok_or("unbalanced parentheses")?;
        let params = parse_params(&rest[open + 1..close], missing)?;
        let tail = rest[close + 1..].trim();
        // The def's own colon ends the signature.
        let tail = match scan(tail, |_, c, depth| !(c == ':' && depth == 0)) {
            Some(colon) if colon < tail.len() => &tail[..colon],
            _ => tail,
        };
        let returns = match tail.trim().strip_prefix("->").map(str::trim) {
            Some(r) if !r.is_empty() => r,
            _ => missing.ok_or("no return type annotation (`-> type`)")?,
        };
        if !is_type_expression(returns) {
            return Err(format!("return annotation `{returns}` is not a type"));
        }
        Ok(FunctionSignature {
            name: name.to_string(),
            params,
            returns: returns.to_string(),
        })
    }

    /// The signature as one `def` line ending in a colon, defaults and `/`, `*` markers included.
    pub fn to_def(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut star_written = false;
        for (i, p) in self.params.iter().enumerate() {
            let prefix = match p.kind {
                ParamKind::VarPositional => {
                    star_written = true;
                    "*"
                }
                ParamKind::VarKeyword => "**",
                ParamKind::KeywordOnly if !star_written => {
                    star_written = true;
                    parts.push("*".into());
                    ""
                }
                _ => "",
            };
            let mut part = format!("{prefix}{}: {}", p.name, p.annotation);
            if let Some(default) = &p.default {
                part.push_str(" = ");
                part.push_str(default);
            }
            parts.push(part);
            let next_is_positional_only = self
                .params
                .get(i + 1)
                .is_some_and(|n| n.kind == ParamKind::PositionalOnly);
            if p.kind == ParamKind::PositionalOnly && !next_is_positional_only {
                parts.push("/".into());
            }
        }
        format!(
            "def {}({}) -> {}:",
            self.name,
            parts.join(", "),
            self.returns
        )
    }

    /// Whether a call with `positional` arguments and no keyword arguments binds.
    pub fn accepts_arity(&self, positional: usize) -> bool {
        self.check_call(positional, &[]).is_ok()
    }

    /// Whether a call with `positional` positional arguments and the named keyword arguments
    /// binds to the parameters as Python would bind it; the error says why not.
    pub fn check_call(&self, positional: usize, keywords: &[&str]) -> Result<(), String> {
        let name = &self.name;
        let slots: Vec<&Param> = self.params.iter().filter(|p| p.is_positional()).collect();
        let var_positional = self
            .params
            .iter()
            .any(|p| p.kind == ParamKind::VarPositional);
        let var_keyword = self.params.iter().any(|p| p.kind == ParamKind::VarKeyword);
        if positional > slots.len() && !var_positional {
            return Err(format!(
                "calls `{name}` with {positional} positional arguments; it takes at most {}",
                slots.len()
            ));
        }
        let mut bound: Vec<&str> = slots
            .iter()
            .take(positional)
            .map(|p| p.name.as_str())
            .collect();
        for &keyword in keywords {
            if bound.contains(&keyword) {
                return Err(format!("calls `{name}` with `{keyword}` given twice"));
            }
            match self.params.iter().find(|p| p.name == keyword) {
                Some(p)
                    if matches!(
                        p.kind,
                        ParamKind::PositionalOrKeyword | ParamKind::KeywordOnly
                    ) =>
                {
                    bound.push(keyword)
                }
                _ if var_keyword => {}
                _ => {
                    return Err(format!(
                        "calls `{name}` with unexpected keyword argument `{keyword}`"
                    ));
                }
            }
        }
        let missing = self.params.iter().find(|p| {
            matches!(
                p.kind,
                ParamKind::PositionalOnly | ParamKind::PositionalOrKeyword | ParamKind::KeywordOnly
            ) && p.default.is_none()
                && !bound.contains(&p.name.as_str())
        });
        match missing {
            Some(p) => Err(format!(
                "calls `{name}` without required argument `{}`",
                p.name
            )),
            None => Ok(()),
        }
    }
}

/// The parameter list between a `def`'s parentheses.
fn parse_params(text: &str, missing: Option<&str>) -> Result<Vec<Param>, String> {
    let mut params: Vec<Param> = Vec::new();
    let mut plain_kind = ParamKind::PositionalOrKeyword;
    let mut bare_star = false;
    for piece in list_items(text) {
        if piece.is_empty() {
            return Err("empty parameter (two commas in a row)".into());
        }
        if params
            .last()
            .is_some_and(|p| p.kind == ParamKind::VarKeyword)
        {
            return Err("the `**` parameter must be the last".into());
        }
        if piece == "/" {
            if params.is_empty()
                || plain_kind != ParamKind::PositionalOrKeyword
                || params.iter().any(|p| p.kind == ParamKind::PositionalOnly)
            {
                return Err("misplaced `/`".into());
            }
            for p in &mut params {
                p.kind = ParamKind::PositionalOnly;
            }
            continue;
        }
        if piece == "*" {
            if plain_kind == ParamKind::KeywordOnly {
                return Err("misplaced `*`".into());
            }
            plain_kind = ParamKind::KeywordOnly;
            bare_star = true;
            continue;
        }
        let (decl, default) = match split_top_level(piece, '=').as_slice() {
            [decl] => (decl.trim(), None),
            [decl, default] if !default.trim().is_empty() => {
                (decl.trim(), Some(default.trim().to_string()))
            }
            _ => return Err(format!("cannot read parameter `{piece}`")),
        };
        let (name, annotation) = match (decl.split_once(':'), missing) {
            (Some((n, a)), _) => (n.trim(), a.trim()),
            (None, Some(missing)) => (decl, missing),
            (None, None) => return Err(format!("parameter `{decl}` has no type annotation")),
        };
        let (kind, name) = if let Some(name) = name.strip_prefix("**") {
            (ParamKind::VarKeyword, name)
        } else if let Some(name) = name.strip_prefix('*') {
            if plain_kind == ParamKind::KeywordOnly {
                return Err("misplaced `*` parameter".into());
            }
            plain_kind = ParamKind::KeywordOnly;
            (ParamKind::VarPositional, name)
        } else {
            (plain_kind, name)
        };
        check_name(name)?;
        if !is_type_expression(annotation) {
            return Err(format!(
                "parameter `{name}`: annotation `{annotation}` is not a type"
            ));
        }
        if default.is_some() && matches!(kind, ParamKind::VarPositional | ParamKind::VarKeyword) {
            return Err(format!(
                "parameter `{name}`: `*` parameters take no default"
            ));
        }
        if kind == ParamKind::PositionalOrKeyword
            && default.is_none()
            && params
                .iter()
                .any(|p| p.is_positional() && p.default.is_some())
        {
            return Err(format!(
                "parameter `{name}` without a default follows one with a default"
            ));
        }
        if params.iter().any(|p| p.name == name) {
            return Err(format!("duplicate parameter `{name}`"));
        }
        params.push(Param {
            name: name.to_string(),
            annotation: annotation.to_string(),
            default,
            kind,
        });
    }
    if bare_star && !params.iter().any(|p| p.kind == ParamKind::KeywordOnly) {
        return Err("a bare `*` must be followed by a named parameter".into());
    }
    Ok(params)
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
    pub score: f64,
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

/// The reason [`parse_tests`] gives for a test that repeats an earlier one.
pub const DUPLICATE: &str = "duplicate";

/// Whether a reason [`parse_tests`] gives for a dropped line says that the call does not bind to
/// the signature: [`FunctionSignature::check_call`]'s messages, and only they, start with
/// "calls `".
pub fn is_arity_error(why: &str) -> bool {
    why.starts_with("calls `")
}

const PROBLEM: (&str, &str) = ("<PROBLEM_START>", "<PROBLEM_END>");
const RATING: (&str, &str) = ("<RATING_START>", "<RATING_END>");
const SKELETON: (&str, &str) = ("<SKELETON_START>", "<SKELETON_END>");
const TESTS: (&str, &str) = ("<TESTS_START>", "<TESTS_END>");

/// The text between the first opening tag and the closing tag after it.
fn block<'a>(
    raw: &'a str,
    (open, close): (&'static str, &'static str),
) -> Result<&'a str, ParseError> {
    let start = raw.find(open).ok_or(ParseError::MissingBlock(open))? + open.len();
    let end = raw[start..]
        .find(close)
        .ok_or(ParseError::UnterminatedBlock(open))?;
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

fn field(fields: &[(&'static str, String)], key: &'static str) -> Result<String, ParseError> {
    fields
        .iter()
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v.clone())
        .ok_or(ParseError::MissingField(key))
}

/// Parses a Problem Generator response. Fields are checked in the format's order, so the
/// reason names the first one missing.
pub fn parse_problem(raw: &str) -> Result<ParsedProblem, ParseRejection> {
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
    let title = get("Title")?;
    let description = get("Description")?;
    let signature_text = get("Function Signature")?;
    // The field may hold prose or a fence around the `def`; a `def` may span lines.
    let lines: Vec<&str> = signature_text
        .lines()
        .map(|l| code_part(l).trim().trim_matches('`'))
        .collect();
    let signature_source = match lines.iter().position(|l| l.starts_with("def ")) {
        Some(at) => {
            let mut source = String::new();
            for line in &lines[at..] {
                source.push_str(line);
                source.push('\n');
                if source
                    .find('(')
                    .and_then(|open| matching_paren(&source, open))
                    .is_some()
                {
                    break;
                }
            }
            source
        }
        None => signature_text.clone(),
    };
    let signature = FunctionSignature::parse(&signature_source)
        .or_else(|why| reject(ParseError::BadSignature(why), raw))?;
    Ok(ParsedProblem {
        title,
        description,
        signature,
        example: get("Example")?,
        hint: get("Hint")?,
    })
}

/// Parses a Quality Oracle response. The score may be written `8`, `8.5`, `8/10` or `**8**`.
pub fn parse_rating(raw: &str) -> Result<ParsedRating, ParseRejection> {
    let body = block(raw, RATING).or_else(|r| reject(r, raw))?;
    let keys = ["Problem Quality Score", "Difficulty", "Category", "Summary"];
    let f = fields(body, &keys);
    let score_text = field(&f, "Problem Quality Score").or_else(|r| reject(r, raw))?;
    let number = score_text
        .trim_matches('*')
        .split(|c: char| c == '/' || c.is_whitespace())
        .next()
        .unwrap_or_default()
        .trim_matches('*');
    let score = number
        .parse::<f64>()
        .ok()
        .filter(|s| (0.0..=10.0).contains(s))
        .ok_or(())
        .or_else(|()| reject(ParseError::BadScore(score_text.clone()), raw))?;
    let optional = |key| field(&f, key).ok();
    Ok(ParsedRating {
        score,
        difficulty: optional("Difficulty").map(|d| d.to_lowercase()),
        category: optional("Category"),
        summary: field(&f, "Summary").or_else(|r| reject(r, raw))?,
    })
}

/// Parses an Interface Synthesizer response: the code inside the block (fences removed), which
/// must define `function` at top level (a method of a class does not count).
pub fn parse_skeleton(raw: &str, function: &str) -> Result<String, ParseRejection> {
    let body = block(raw, SKELETON).or_else(|r| reject(r, raw))?;
    let code = strip_fences(body);
    if !defines_function(&code, function) {
        return reject(
            ParseError::SkeletonMissingFunction(function.to_string()),
            raw,
        );
    }
    Ok(code)
}

/// Whether `code` has a column-0 `def function(`.
fn defines_function(code: &str, function: &str) -> bool {
    code.lines().any(|l| {
        l.strip_prefix("def ").is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix(function)
                .is_some_and(|after| after.trim_start().starts_with('('))
        })
    })
}

/// Parses a Test Understanding response for `signature`'s function. Lines that are not one-line
/// asserts calling the function with arguments that bind to its parameters are dropped with a
/// reason; duplicates (same test expression up to whitespace outside strings, comments and
/// messages ignored) are dropped, also against `seen`.
pub fn parse_tests(
    raw: &str,
    signature: &FunctionSignature,
    seen: &mut HashSet<String>,
) -> Result<ParsedTests, ParseRejection> {
    let body = block(raw, TESTS).or_else(|r| reject(r, raw))?;
    let mut parsed = ParsedTests::default();
    for line in strip_fences(body).lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_test_line(line, signature) {
            Ok((test, key)) => {
                if seen.insert(key) {
                    parsed.tests.push(test);
                } else {
                    parsed.dropped.push((line.to_string(), DUPLICATE.into()));
                }
            }
            Err(why) => parsed.dropped.push((line.to_string(), why)),
        }
    }
    if parsed.tests.is_empty() {
        let reason = if parsed.dropped.iter().any(|(_, why)| why == DUPLICATE) {
            ParseError::NoNewTests
        } else {
            ParseError::NoTests
        };
        return reject(reason, raw);
    }
    Ok(parsed)
}

/// One test line: the test and its de-duplication key, or why the line is not a usable test.
fn parse_test_line(
    line: &str,
    signature: &FunctionSignature,
) -> Result<(ParsedTest, String), String> {
    let code = code_part(line).trim_end();
    let expr = code
        .strip_prefix("assert")
        .filter(|rest| rest.starts_with([' ', '\t', '(']))
        .ok_or("not an `assert` statement")?
        .trim();
    if code.ends_with('\\') || !balanced(expr) {
        return Err("unbalanced brackets or quotes (multi-line tests are not accepted)".into());
    }
    if code_chars(expr).any(|(_, c)| c == ';') {
        return Err("more than one statement on the line".into());
    }
    // `assert test, message`: the message is not part of the test.
    let test = split_top_level(expr, ',')[0].trim();
    if test.is_empty() {
        return Err("empty assert".into());
    }
    if parenthesized(test).is_some_and(|inner| split_top_level(inner, ',').len() > 1) {
        return Err("asserts a tuple, which is always true".into());
    }
    let name = &signature.name;
    let sites = call_sites(test, name);
    if sites.is_empty() {
        return Err(format!("does not call `{name}`"));
    }
    let mut bindings = Vec::with_capacity(sites.len());
    for args in sites {
        bindings.push(bind_call(args, signature)?);
    }
    let mut unwrapped = test;
    while let Some(inner) = parenthesized(unwrapped) {
        unwrapped = inner.trim();
    }
    let call = split_top_level_eq(unwrapped).and_then(|(lhs, rhs)| {
        let after = lhs.trim().strip_prefix(name.as_str())?.trim_start();
        // The lhs must be the only call (an expected value that calls the function cannot be
        // checked outside the child), with positional arguments only.
        if parenthesized(after).is_none() || bindings.len() != 1 {
            return None;
        }
        let pieces = bindings[0].as_ref()?;
        let expected = rhs.trim();
        is_plain_operand(expected).then(|| CallTest {
            args: format!("[{}]", pieces.join(", ")),
            expected: expected.to_string(),
        })
    });
    Ok((
        ParsedTest {
            source: line.to_string(),
            call,
        },
        normalize(unwrapped),
    ))
}

/// Checks one call's arguments against the signature. `Ok(Some(pieces))`: positional arguments
/// only; `Ok(None)`: it binds (or its arity cannot be known: `*xs`, `**kw`, a lambda or a
/// generator argument) but has keyword arguments.
fn bind_call<'a>(
    args: &'a str,
    signature: &FunctionSignature,
) -> Result<Option<Vec<&'a str>>, String> {
    let pieces = list_items(args);
    if pieces.iter().any(|p| p.is_empty()) {
        return Err("syntax error: empty argument".into());
    }
    let unknowable = pieces
        .iter()
        .any(|p| p.starts_with('*') || code_words(p).any(|w| w == "lambda" || w == "for"));
    if unknowable {
        return Ok(None);
    }
    let mut positional = 0;
    let mut keywords = Vec::new();
    for piece in &pieces {
        match keyword_name(piece) {
            Some(keyword) => keywords.push(keyword),
            None if !keywords.is_empty() => {
                return Err("syntax error: positional argument after keyword argument".into());
            }
            None => positional += 1,
        }
    }
    signature.check_call(positional, &keywords)?;
    Ok(keywords.is_empty().then_some(pieces))
}

/// Whether `expected`, put on the right of `f(args) == `, is compared as a whole: not empty and
/// with no operator of lower precedence than `==` (another comparison, `and`, `or`, `not`,
/// `if`/`else`, `lambda`) outside brackets and strings.
fn is_plain_operand(expected: &str) -> bool {
    const LOWER: [&str; 9] = [
        "and", "or", "not", "if", "else", "lambda", "in", "is", "for",
    ];
    !expected.is_empty()
        && scan(expected, |_, c, depth| {
            depth > 0 || !matches!(c, '<' | '>' | '=' | '!')
        }) == Some(expected.len())
        && !top_level_words(expected).any(|w| LOWER.contains(&w))
}

fn strip_fences(body: &str) -> String {
    body.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_matches('\n')
        .to_string()
}

/// A name Python accepts for a function or parameter.
fn check_name(name: &str) -> Result<(), String> {
    if !is_identifier(name) {
        return Err(format!("`{name}` is not a Python identifier"));
    }
    if KEYWORDS.contains(&name) {
        return Err(format!("`{name}` is a Python keyword"));
    }
    Ok(())
}

/// A type expression: names, dots, brackets, commas, `|`, string forward references and
/// numbers, balanced, with no two names side by side (so prose is not a type).
fn is_type_expression(s: &str) -> bool {
    let mut last: Option<char> = None;
    let mut space_since_last = false;
    let word = |c: char| c == '_' || c.is_alphanumeric();
    !s.is_empty()
        && scan(s, |_, c, _| {
            if c.is_whitespace() {
                space_since_last = true;
                return true;
            }
            let ok = (word(c) || "[](),.|'\"-".contains(c))
                && !(word(c) && space_since_last && last.is_some_and(word));
            last = Some(c);
            space_since_last = false;
            ok
        }) == Some(s.len())
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
        assert!(p.signature.params[1].has_default());
        assert_eq!(p.signature.returns, "int");
        assert_eq!(
            p.signature.to_def(),
            "def count_pairs(nums: List[int], target: int = 0) -> int:"
        );
    }

    #[test]
    fn untyped_signatures_read_missing_annotations_as_object() {
        let s = FunctionSignature::parse_untyped("def encrypt(s, n: int = 2, *rest):").unwrap();
        assert_eq!(
            s.to_def(),
            "def encrypt(s: object, n: int = 2, *rest: object) -> object:"
        );
        assert_eq!(
            FunctionSignature::parse(&s.to_def()).unwrap(),
            s,
            "the filled-in def is a typed signature"
        );
        assert!(FunctionSignature::parse("def encrypt(s):").is_err());
        let typed = "def f(a: List[int]) -> bool:";
        assert_eq!(
            FunctionSignature::parse_untyped(typed).unwrap(),
            FunctionSignature::parse(typed).unwrap()
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
        assert!(reasons[1].contains("4 positional arguments"));
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
    fn test_sig(def: &str) -> FunctionSignature {
        FunctionSignature::parse(def).unwrap()
    }

    fn one_test(line: &str, signature: &FunctionSignature) -> Result<ParsedTest, String> {
        let raw = format!("<TESTS_START>\n{line}\n<TESTS_END>");
        match parse_tests(&raw, signature, &mut HashSet::new()) {
            Ok(mut parsed) => Ok(parsed.tests.remove(0)),
            Err(_) => Err(parse_test_line(line, signature).unwrap_err()),
        }
    }

    /// Bug: `**kwargs` let any number of positional arguments through, and parameters after a
    /// bare `*` were counted as positional.
    #[test]
    fn keyword_only_and_var_keyword_parameters_bind_like_python() {
        let s = test_sig("def f(a: int, **kw: int) -> int:");
        assert!(s.accepts_arity(1) && !s.accepts_arity(2));
        assert!(s.check_call(1, &["anything"]).is_ok());
        let k = test_sig("def f(a: int, *, b: int, c: int = 0) -> int:");
        assert!(!k.accepts_arity(2), "b is keyword-only");
        assert_eq!(
            k.check_call(1, &[]).unwrap_err(),
            "calls `f` without required argument `b`"
        );
        assert!(k.check_call(1, &["b"]).is_ok());
        assert_eq!(
            k.check_call(1, &["a", "b"]).unwrap_err(),
            "calls `f` with `a` given twice"
        );
        let p = test_sig("def f(a: int, /, b: int) -> int:");
        assert_eq!(
            p.check_call(0, &["a", "b"]).unwrap_err(),
            "calls `f` with unexpected keyword argument `a`"
        );
        assert_eq!(p.params[0].kind, ParamKind::PositionalOnly);
    }

    /// Bug: keyword calls skipped the arity check, and a starred argument counted as one.
    #[test]
    fn keyword_and_starred_calls() {
        let s = test_sig("def f(a: int, b: int = 1) -> int:");
        assert_eq!(
            one_test("assert f(1, 2, b=3) == 0", &s).unwrap_err(),
            "calls `f` with `b` given twice"
        );
        assert_eq!(
            one_test("assert f(1, c=3) == 0", &s).unwrap_err(),
            "calls `f` with unexpected keyword argument `c`"
        );
        assert_eq!(
            one_test("assert f(a=1, 2) == 0", &s).unwrap_err(),
            "syntax error: positional argument after keyword argument"
        );
        let kw = one_test("assert f(1, b=3) == 4", &s).unwrap();
        assert_eq!(kw.call, None, "keyword calls stay asserts");
        let starred = one_test("assert f(*[1, 2]) == 3", &s).unwrap();
        assert_eq!(starred.call, None, "arity of `*xs` is unknown");
        // A generator argument is one argument, not a list of them.
        let one = test_sig("def g(xs: Iterable[int]) -> int:");
        let generator = one_test("assert g(x for x in range(3)) == 3", &one).unwrap();
        assert_eq!(generator.call, None);
    }

    /// Bug: `assert f(x) == y, "msg"` became a call test expecting the tuple `(y, "msg")`, and
    /// `f(x) == 1 or True` / `f(x) == 1 < 2` expected `True`.
    #[test]
    fn call_split_only_when_it_means_the_same_as_the_assert() {
        let s = test_sig("def f(a: int) -> int:");
        let with_message = one_test("assert f(1) == 2, \"f(1) should be 2\"", &s).unwrap();
        assert_eq!(with_message.call.unwrap().expected, "2");
        for line in [
            "assert f(1) == 1 or True",
            "assert f(1) == 1 < 2",
            "assert f(1) == 1 if f else 0",
            "assert f(1) == 2 != 3",
            "assert f(1) == f(2)",
            "assert f(f(1)) == 2",
            "assert f(1) == 2 in [True]",
        ] {
            let test = one_test(line, &s).unwrap();
            assert_eq!(test.call, None, "{line}");
        }
        let parenthesized = one_test("assert(f(1) == 2)", &s).unwrap();
        assert_eq!(parenthesized.call.unwrap().args, "[1]");
        assert_eq!(
            one_test("assert (f(1) == 2, 'msg')", &s).unwrap_err(),
            "asserts a tuple, which is always true"
        );
        assert_eq!(
            one_test("assert f(1) == 2; print(3)", &s).unwrap_err(),
            "more than one statement on the line"
        );
    }

    /// Bug: a trailing comment with a quote or bracket dropped the test as unbalanced, and a
    /// comment became part of the expected value.
    #[test]
    fn trailing_comments_are_ignored() {
        let s = test_sig("def f(a: str) -> int:");
        let t = one_test("assert f('a#b') == 1  # it's the '#' inside (a string", &s).unwrap();
        assert_eq!(
            t.call,
            Some(CallTest {
                args: "['a#b']".into(),
                expected: "1".into()
            })
        );
        let mut seen = HashSet::new();
        let raw = "<TESTS_START>\nassert f('x') == 1  # first\nassert f('x') == 1, 'again'  # second\n<TESTS_END>";
        let parsed = parse_tests(raw, &s, &mut seen).unwrap();
        assert_eq!(parsed.tests.len(), 1);
        assert_eq!(parsed.dropped[0].1, DUPLICATE);
        // A batch whose only usable tests repeat earlier ones is not "no tests".
        let again = parse_tests(raw, &s, &mut seen).unwrap_err();
        assert_eq!(again.reason, ParseError::NoNewTests);
    }

    /// Bug: `def  é(` (two spaces, non-ASCII name) sliced inside a character and panicked; a
    /// method inside a class counted as the function.
    #[test]
    fn skeleton_definition_is_found_at_top_level_only() {
        let spaced = "<SKELETON_START>\ndef  é(x: int) -> int:\n    pass\n<SKELETON_END>";
        assert!(parse_skeleton(spaced, "é").is_ok());
        assert!(parse_skeleton(spaced, "x").is_err());
        let method = "<SKELETON_START>\nclass S:\n    def f(self, x: int) -> int:\n        pass\n<SKELETON_END>";
        assert_eq!(
            parse_skeleton(method, "f").unwrap_err().reason,
            ParseError::SkeletonMissingFunction("f".into())
        );
    }

    /// Bug: `to_def` dropped defaults and the `*` marker, so a skeleton written from it had
    /// another arity than the tests were checked against.
    #[test]
    fn to_def_round_trips() {
        for def in [
            "def f(a: int, b: List[int] = [1, 2], *rest: str, key: str = 'k', **kw: Any) -> Dict[str, int]:",
            "def f(a: int, /, b: int, *, c: int) -> None:",
            "def f() -> int:",
        ] {
            let s = test_sig(def);
            assert_eq!(s.to_def(), def);
            assert_eq!(test_sig(&s.to_def()), s);
        }
    }

    /// Bug: signatures Python rejects (or prose after the type) were accepted.
    #[test]
    fn signatures_python_would_reject_are_rejected() {
        let cases = [
            (
                "def f(a: int = 1, b: int) -> int:",
                "parameter `b` without a default follows one with a default",
            ),
            ("def f(a: int, a: int) -> int:", "duplicate parameter `a`"),
            ("def f(class: int) -> int:", "`class` is a Python keyword"),
            ("def return(a: int) -> int:", "`return` is a Python keyword"),
            (
                "def f(*a: int = 1) -> int:",
                "parameter `a`: `*` parameters take no default",
            ),
            (
                "def f(**kw: int, a: int) -> int:",
                "the `**` parameter must be the last",
            ),
            (
                "def f(a: int, *) -> int:",
                "a bare `*` must be followed by a named parameter",
            ),
            ("def f(/, a: int) -> int:", "misplaced `/`"),
            (
                "def f(a: int,, b: int) -> int:",
                "empty parameter (two commas in a row)",
            ),
            (
                "def f(a: int = ) -> int:",
                "cannot read parameter `a: int =`",
            ),
            (
                "def f(a: int) -> int  returns the sum",
                "return annotation `int  returns the sum` is not a type",
            ),
            (
                "def f(a: the number) -> int:",
                "parameter `a`: annotation `the number` is not a type",
            ),
        ];
        for (def, why) in cases {
            assert_eq!(FunctionSignature::parse(def).unwrap_err(), why, "{def}");
        }
        // A one-line body after the colon and a comment are not part of the return type.
        assert_eq!(test_sig("def f(a: int) -> int: return a").returns, "int");
        assert_eq!(
            test_sig("def f(a: int) -> int:  # doubles (a)").returns,
            "int"
        );
        // Multi-line signatures in the problem block parse.
        let raw = "<PROBLEM_START>\nTitle: T\nDescription: D\nFunction Signature:\n```python\ndef f(\n    a: int,  # first\n    b: int,\n) -> int:\n```\nExample: f(1, 2) -> 3\nHint: H\n<PROBLEM_END>";
        assert_eq!(parse_problem(raw).unwrap().signature.params.len(), 2);
    }

    /// Bug: `**8**` and a score followed by prose on the next line were bad scores.
    #[test]
    fn rating_score_forms() {
        for (text, score) in [
            ("**8**", 8.0),
            ("8/10", 8.0),
            ("7.5 out of 10", 7.5),
            ("9\nvery clear", 9.0),
        ] {
            let raw =
                format!("<RATING_START>\nProblem Quality Score: {text}\nSummary: s\n<RATING_END>");
            assert_eq!(parse_rating(&raw).unwrap().score, score, "{text}");
        }
    }
}
