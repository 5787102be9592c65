//! Malformed model outputs through every parser (issue 5): the four IPC stage parsers
//! (`prompts::parse`) and the solution code extraction (`python::extract`).
//!
//! Part one is a corpus of the ways real responses go wrong (missing or unterminated tags, tags
//! out of order, empty fields, markdown, untyped signatures, bad scores, wrong functions, wrong
//! arity, keyword arguments, duplicates, prose lines, max-token truncation, unicode, CRLF, NUL
//! bytes, huge inputs, nested fences), each with the exact reason expected. Part two is a seeded
//! property test: valid responses truncated at every character boundary and mutated at random
//! (lines deleted, duplicated, swapped; random bytes and Python/markdown tokens inserted) must
//! never panic a parser, and each result is either a record that satisfies the parser's own
//! invariants or a rejection that keeps the raw text.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ucoder_flow::prompts::parse::{
    DUPLICATE, FunctionSignature, ParseError, ParseRejection, ParsedTests, parse_problem,
    parse_rating, parse_skeleton, parse_tests,
};
use ucoder_flow::python::extract::{Extraction, ProgramKind, PromptStyle, extract};

const PROBLEM_OK: &str = "Here is a new problem.\n<PROBLEM_START>\nTitle: Pair Sums\nDescription: Given a list of integers and a target,\ncount pairs (i < j) whose sum equals the target.\nFunction Signature: def count_pairs(nums: List[int], target: int = 0) -> int:\nExample: count_pairs([1, 2, 3], 4) -> 1\nHint: Use a dictionary of counts.\n<PROBLEM_END>\n";

const RATING_OK: &str = "<RATING_START>\nProblem Quality Score: 8/10\nDifficulty: Medium\nCategory: basic algorithms\nSummary: Clear, testable, not trivial.\n<RATING_END>";

const SKELETON_OK: &str = "<SKELETON_START>\n```python\nfrom typing import List\n\n\ndef count_pairs(nums: List[int], target: int = 0) -> int:\n    \"\"\"Counts pairs.\n\n    Args:\n        nums: the numbers.\n        target: the sum.\n\n    Returns:\n        The number of pairs.\n    \"\"\"\n    pass\n```\n<SKELETON_END>";

const TESTS_OK: &str = "<TESTS_START>\n```python\nassert count_pairs([1, 2, 3], 4) == 1\nassert count_pairs([], 0) == 0\nassert count_pairs([2, 2, 2], 4) == 3  # three pairs\nassert count_pairs([1, -1]) == 1\nassert count_pairs(nums=[5, 5], target=10) == 1\nassert count_pairs(['a'], 0) == 0, \"strings never sum\"\n```\n<TESTS_END>";

/// The skeleton the solution prompt shows; extraction appends bodies to it.
const SKELETON_CODE: &str = "from typing import List\n\n\ndef count_pairs(nums: List[int], target: int = 0) -> int:\n    \"\"\"Counts pairs.\"\"\"\n";

const SOLUTIONS_OK: [&str; 3] = [
    "Here is my solution:\n```python\nfrom collections import Counter\n\ndef count_pairs(nums: List[int], target: int = 0) -> int:\n    seen = Counter()\n    total = 0\n    for x in nums:\n        total += seen[target - x]\n        seen[x] += 1\n    return total\n\nprint(count_pairs([1, 2, 3], 4))\n```\nIt runs in O(n).",
    "```python\n    total = 0\n    for i in range(len(nums)):\n        for j in range(i + 1, len(nums)):\n            total += nums[i] + nums[j] == target\n    return total\n```",
    "def count_pairs(nums, target=0):\n    return sum(1 for i, a in enumerate(nums) for b in nums[i + 1:] if a + b == target)\n\nThis is quadratic.",
];

fn signature() -> FunctionSignature {
    parse_problem(PROBLEM_OK).unwrap().signature
}

/// Asserts a rejection with exactly `reason` that keeps `raw`.
fn assert_rejected<T: std::fmt::Debug>(
    case: &str,
    raw: &str,
    result: Result<T, ParseRejection>,
    reason: ParseError,
) {
    match result {
        Ok(record) => panic!("{case}: expected {reason:?}, parsed {record:?}"),
        Err(rejection) => {
            assert_eq!(rejection.reason, reason, "{case}");
            assert_eq!(
                rejection.reason.label(),
                reason.label(),
                "{case}: label is stable"
            );
            assert!(
                rejection.raw == raw,
                "{case}: the rejection keeps the raw text"
            );
        }
    }
}

fn problem_with(field_lines: &str) -> String {
    format!("<PROBLEM_START>\n{field_lines}\n<PROBLEM_END>")
}

const FIELDS_OK: &str = "Title: T\nDescription: D\nFunction Signature: def f(a: int) -> int:\nExample: f(1) -> 2\nHint: H";

#[test]
fn malformed_problems() {
    let huge_unterminated = format!(
        "<PROBLEM_START>\nTitle: T\nDescription: {}",
        "x".repeat(1 << 20)
    );
    let (block, unterminated) = (
        ParseError::MissingBlock("<PROBLEM_START>"),
        ParseError::UnterminatedBlock("<PROBLEM_START>"),
    );
    #[rustfmt::skip]
    let responses: Vec<(&str, String, ParseError)> = vec![
        ("no tags", "Title: T\nDescription: D".into(), block.clone()),
        ("empty response", String::new(), block.clone()),
        ("lowercase tags", format!("<problem_start>\n{FIELDS_OK}\n<problem_end>"), block.clone()),
        ("other stage's tags", format!("<RATING_START>\n{FIELDS_OK}\n<RATING_END>"), block),
        ("tags in wrong order", format!("<PROBLEM_END>\n{FIELDS_OK}\n<PROBLEM_START>"), unterminated.clone()),
        ("cut at max tokens mid-line", PROBLEM_OK[..PROBLEM_OK.find("Hint: Use").unwrap() + 9].into(), unterminated.clone()),
        ("cut inside the closing tag", PROBLEM_OK.replace("<PROBLEM_END>\n", "<PROBLEM_E"), unterminated.clone()),
        ("huge and unterminated", huge_unterminated, unterminated),
        ("empty block", problem_with(""), ParseError::MissingField("Title")),
    ];
    for (case, raw, reason) in responses {
        assert_rejected(case, &raw, parse_problem(&raw), reason);
    }
    let missing = ParseError::MissingField;
    let sig = |why: &str| ParseError::BadSignature(why.to_string());
    // (case, text in FIELDS_OK, replaced by, reason)
    #[rustfmt::skip]
    let field_edits: Vec<(&str, &str, &str, ParseError)> = vec![
        ("empty title", "Title: T", "Title:   ", missing("Title")),
        ("missing description", "Description: D\n", "", missing("Description")),
        ("renamed key", "Function Signature", "Signature", missing("Function Signature")),
        ("empty example", "Example: f(1) -> 2", "Example:", missing("Example")),
        ("missing hint", "\nHint: H", "", missing("Hint")),
        ("untyped parameters", "a: int", "a, b", sig("parameter `a` has no type annotation")),
        ("no return type", " -> int", "", sig("no return type annotation (`-> type`)")),
        ("not a def", "def f(a: int) -> int:", "f(a: int) -> int", sig("does not start with `def `")),
        ("javascript", "def f(a: int) -> int:", "function f(a: number): number", sig("does not start with `def `")),
        ("lambda", "def f(a: int) -> int:", "f = lambda a: a", sig("does not start with `def `")),
        ("async def", "def f", "async def f", sig("does not start with `def `")),
        ("unclosed parameters", "(a: int)", "(a: int", sig("unbalanced parentheses")),
        ("keyword as name", "(a: int)", "(lambda: int)", sig("`lambda` is a Python keyword")),
        ("NUL in the name", "def f(", "def f\0(", sig("`f\0` is not a Python identifier")),
        ("prose as a type", "a: int", "a: a list of numbers", sig("parameter `a`: annotation `a list of numbers` is not a type")),
        ("default before required", "a: int", "a: int = 1, b: int", sig("parameter `b` without a default follows one with a default")),
    ];
    for (case, from, to, reason) in field_edits {
        assert!(FIELDS_OK.contains(from), "{case}");
        let raw = problem_with(&FIELDS_OK.replacen(from, to, 1));
        assert_rejected(case, &raw, parse_problem(&raw), reason);
    }
}

#[test]
fn odd_but_valid_problems_parse() {
    // Markdown bold keys, a fenced signature, CRLF line ends, unicode, a NUL byte in prose,
    // a repeated field (the first wins), a one-line body after the signature.
    let bold = "<PROBLEM_START>\n**Title:** Zählen 🦀\n**Description**: D with a NUL \0 byte\n- **Function Signature:**\n```python\ndef zähle(wörter: List[str]) -> Dict[str, int]: return {}\n```\n**Example:** zähle(['a']) -> {'a': 1}\n**Hint:** H\nTitle: second title\n<PROBLEM_END>";
    let p = parse_problem(bold).unwrap();
    assert_eq!(p.title, "Zählen 🦀");
    assert_eq!(p.description, "D with a NUL \0 byte");
    assert_eq!(
        p.signature.to_def(),
        "def zähle(wörter: List[str]) -> Dict[str, int]:"
    );
    let crlf = PROBLEM_OK.replace('\n', "\r\n");
    assert_eq!(
        parse_problem(&crlf).unwrap(),
        parse_problem(PROBLEM_OK).unwrap()
    );
    // A huge response (1 MiB of chatter before the block) parses the same.
    let huge = format!("{}\n{PROBLEM_OK}", "blah ".repeat(1 << 18));
    assert_eq!(
        parse_problem(&huge).unwrap(),
        parse_problem(PROBLEM_OK).unwrap()
    );
    // Two blocks: the first is used.
    let two = format!("{PROBLEM_OK}{}", PROBLEM_OK.replace("Pair Sums", "Other"));
    assert_eq!(parse_problem(&two).unwrap().title, "Pair Sums");
}

#[test]
fn malformed_ratings() {
    let rating = |score: &str| {
        format!("<RATING_START>\nProblem Quality Score: {score}\nSummary: s\n<RATING_END>")
    };
    let bad = |s: &str| ParseError::BadScore(s.to_string());
    let cases: Vec<(&str, String, ParseError)> = vec![
        (
            "no tags",
            "Problem Quality Score: 8\nSummary: s".into(),
            ParseError::MissingBlock("<RATING_START>"),
        ),
        (
            "cut at max tokens",
            RATING_OK[..RATING_OK.find("Summary").unwrap() + 10].into(),
            ParseError::UnterminatedBlock("<RATING_START>"),
        ),
        ("words", rating("excellent"), bad("excellent")),
        ("out of range", rating("42"), bad("42")),
        ("negative", rating("-1"), bad("-1")),
        ("percent scale", rating("80/100"), bad("80/100")),
        ("not a number", rating("NaN"), bad("NaN")),
        ("infinite", rating("inf"), bad("inf")),
        ("fraction first", rating("/10"), bad("/10")),
        (
            "empty score",
            rating(""),
            ParseError::MissingField("Problem Quality Score"),
        ),
        (
            "renamed score key",
            "<RATING_START>\nQuality: 8\nSummary: s\n<RATING_END>".into(),
            ParseError::MissingField("Problem Quality Score"),
        ),
        (
            "no summary",
            "<RATING_START>\nProblem Quality Score: 7\nDifficulty: easy\n<RATING_END>".into(),
            ParseError::MissingField("Summary"),
        ),
    ];
    for (case, raw, reason) in cases {
        assert_rejected(case, &raw, parse_rating(&raw), reason);
    }
    for (score, value) in [
        ("8/10", 8.0),
        ("**9**", 9.0),
        ("7.5 / 10", 7.5),
        ("10", 10.0),
        ("0", 0.0),
    ] {
        assert_eq!(
            parse_rating(&rating(score)).unwrap().score,
            value,
            "{score}"
        );
    }
    let r = parse_rating(&RATING_OK.replace('\n', "\r\n")).unwrap();
    assert_eq!(
        (r.difficulty.as_deref(), r.summary.as_str()),
        (Some("medium"), "Clear, testable, not trivial.")
    );
}

#[test]
fn malformed_skeletons() {
    let missing = ParseError::SkeletonMissingFunction("count_pairs".into());
    let skeleton = |code: &str| format!("<SKELETON_START>\n{code}\n<SKELETON_END>");
    let cases: Vec<(&str, String, ParseError)> = vec![
        (
            "no tags",
            "def count_pairs(nums: List[int]) -> int:\n    pass".into(),
            ParseError::MissingBlock("<SKELETON_START>"),
        ),
        (
            "cut at max tokens",
            SKELETON_OK[..SKELETON_OK.find("Returns:").unwrap()].into(),
            ParseError::UnterminatedBlock("<SKELETON_START>"),
        ),
        (
            "another function",
            SKELETON_OK.replace("def count_pairs(", "def count_pair("),
            missing.clone(),
        ),
        (
            "a longer name",
            SKELETON_OK.replace("def count_pairs(", "def count_pairs_fast("),
            missing.clone(),
        ),
        (
            "only a method",
            skeleton(
                "class Solution:\n    def count_pairs(self, nums: List[int]) -> int:\n        pass",
            ),
            missing.clone(),
        ),
        (
            "async",
            skeleton("async def count_pairs(nums: List[int]) -> int:\n    pass"),
            missing.clone(),
        ),
        (
            "only in a docstring",
            skeleton("\"\"\"\ncount_pairs(nums)\n\"\"\""),
            missing.clone(),
        ),
        ("empty block", skeleton(""), missing.clone()),
        ("only fences", skeleton("```python\n```"), missing.clone()),
    ];
    for (case, raw, reason) in cases {
        assert_rejected(case, &raw, parse_skeleton(&raw, "count_pairs"), reason);
    }
    // Nested fences and CRLF: the code comes back without any fence line.
    let nested = SKELETON_OK
        .replace("```python\n", "````markdown\n```python\n")
        .replace("```\n<SKELETON", "```\n````\n<SKELETON");
    for raw in [nested, SKELETON_OK.replace('\n', "\r\n")] {
        let code = parse_skeleton(&raw, "count_pairs").unwrap();
        assert!(code.starts_with("from typing import List\n"), "{code}");
        assert!(code.lines().all(|l| !l.contains("```")), "{code}");
    }
}

fn tests_block(lines: &str) -> String {
    format!("<TESTS_START>\n{lines}\n<TESTS_END>")
}

#[test]
fn malformed_test_lines_are_dropped_with_reasons() {
    let raw = tests_block(concat!(
        "assert count_pairs([1, 2, 3], 4) == 1\n",
        "assert count_pairs([1,2,3],4)==1\n",
        "assert count_pairs([1], 2, 3) == 0\n",
        "assert count_pairs() == 0\n",
        "assert count_pairs([1], target=2, k=3) == 0\n",
        "assert count_pairs([1], 2, target=2) == 0\n",
        "assert count_pairs([1],, 2) == 0\n",
        "print(count_pairs([1, 2], 3))\n",
        "count_pairs([1, 2], 3) == 1\n",
        "Here are more tests:\n",
        "assert sum_pairs([1], 1) == 0\n",
        "assert count_pairs.__name__ == 'count_pairs'\n",
        "assert (count_pairs([1], 1) == 0, 'tuple')\n",
        "assert count_pairs([1], 1) == 0; import os\n",
        "assertcount_pairs([1], 1) == 0\n",
        "assert count_pairs([3, 4\n",
        "    [5]) == 0\n",
        "assert count_pairs(\"]\", 1) == 0  # a ']' in a string is fine\n",
        "assert count_pairs([1, 1], 2) == 1 \\\n",
        "# a comment line is skipped\n",
        "assert count_pairs([9], 9) == 0, 'message'\n",
        "assert count_pairs([9], 9) == 0  # same test, other comment\n",
        "assert count_pairs([0, 0], 0) == 1\n",
        "assert count_pairs([1, 2, 3], 5) == 1 and True\n",
        "assert count_pairs([1, 2, 3], 5) == 1 < 2\n",
        "assert count_pairs([\"é\", \"🦀\"], 0) == 0\n",
        "assert count_pairs([1, 2, 3], 4",
    ));
    let parsed = parse_tests(&raw, &signature(), &mut HashSet::new()).unwrap();
    let kept: Vec<(&str, Option<(&str, &str)>)> = parsed
        .tests
        .iter()
        .map(|t| {
            (
                t.source.as_str(),
                t.call
                    .as_ref()
                    .map(|c| (c.args.as_str(), c.expected.as_str())),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            (
                "assert count_pairs([1, 2, 3], 4) == 1",
                Some(("[[1, 2, 3], 4]", "1"))
            ),
            (
                "assert count_pairs(\"]\", 1) == 0  # a ']' in a string is fine",
                Some(("[\"]\", 1]", "0"))
            ),
            (
                "assert count_pairs([9], 9) == 0, 'message'",
                Some(("[[9], 9]", "0"))
            ),
            (
                "assert count_pairs([0, 0], 0) == 1",
                Some(("[[0, 0], 0]", "1"))
            ),
            ("assert count_pairs([1, 2, 3], 5) == 1 and True", None),
            ("assert count_pairs([1, 2, 3], 5) == 1 < 2", None),
            (
                "assert count_pairs([\"é\", \"🦀\"], 0) == 0",
                Some(("[[\"é\", \"🦀\"], 0]", "0"))
            ),
        ]
    );
    let unbalanced = "unbalanced brackets or quotes (multi-line tests are not accepted)";
    let dropped: Vec<(&str, &str)> = parsed
        .dropped
        .iter()
        .map(|(l, r)| (l.as_str(), r.as_str()))
        .collect();
    assert_eq!(
        dropped,
        [
            ("assert count_pairs([1,2,3],4)==1", DUPLICATE),
            (
                "assert count_pairs([1], 2, 3) == 0",
                "calls `count_pairs` with 3 positional arguments; it takes at most 2"
            ),
            (
                "assert count_pairs() == 0",
                "calls `count_pairs` without required argument `nums`"
            ),
            (
                "assert count_pairs([1], target=2, k=3) == 0",
                "calls `count_pairs` with unexpected keyword argument `k`"
            ),
            (
                "assert count_pairs([1], 2, target=2) == 0",
                "calls `count_pairs` with `target` given twice"
            ),
            (
                "assert count_pairs([1],, 2) == 0",
                "syntax error: empty argument"
            ),
            ("print(count_pairs([1, 2], 3))", "not an `assert` statement"),
            ("count_pairs([1, 2], 3) == 1", "not an `assert` statement"),
            ("Here are more tests:", "not an `assert` statement"),
            (
                "assert sum_pairs([1], 1) == 0",
                "does not call `count_pairs`"
            ),
            (
                "assert count_pairs.__name__ == 'count_pairs'",
                "does not call `count_pairs`"
            ),
            (
                "assert (count_pairs([1], 1) == 0, 'tuple')",
                "asserts a tuple, which is always true"
            ),
            (
                "assert count_pairs([1], 1) == 0; import os",
                "more than one statement on the line"
            ),
            (
                "assertcount_pairs([1], 1) == 0",
                "not an `assert` statement"
            ),
            ("assert count_pairs([3, 4", unbalanced),
            ("[5]) == 0", "not an `assert` statement"),
            ("assert count_pairs([1, 1], 2) == 1 \\", unbalanced),
            (
                "assert count_pairs([9], 9) == 0  # same test, other comment",
                DUPLICATE
            ),
            ("assert count_pairs([1, 2, 3], 4", unbalanced),
        ]
    );
}

#[test]
fn malformed_test_blocks() {
    let sig = signature();
    let cases: Vec<(&str, String, ParseError)> = vec![
        (
            "no tags",
            "assert count_pairs([1], 1) == 0".into(),
            ParseError::MissingBlock("<TESTS_START>"),
        ),
        (
            "cut at max tokens mid-line",
            TESTS_OK[..TESTS_OK.find("[2, 2, 2]").unwrap()].into(),
            ParseError::UnterminatedBlock("<TESTS_START>"),
        ),
        (
            "tags in wrong order",
            "<TESTS_END>\nassert count_pairs([1], 1) == 0\n<TESTS_START>".into(),
            ParseError::UnterminatedBlock("<TESTS_START>"),
        ),
        ("empty block", tests_block(""), ParseError::NoTests),
        (
            "only prose and garbage",
            tests_block("Sure! Here are tests.\n)))(((\n\0\0\0\nassert\nassert True"),
            ParseError::NoTests,
        ),
        (
            "wrong function only",
            tests_block("assert count([1], 1) == 0"),
            ParseError::NoTests,
        ),
        (
            "wrong arity only",
            tests_block("assert count_pairs(1, 2, 3, 4) == 0"),
            ParseError::NoTests,
        ),
    ];
    for (case, raw, reason) in cases {
        assert_rejected(
            case,
            &raw,
            parse_tests(&raw, &sig, &mut HashSet::new()),
            reason,
        );
    }
    // A later batch that only repeats earlier tests is a rejection of its own kind.
    let mut seen = HashSet::new();
    let first = parse_tests(TESTS_OK, &sig, &mut seen).unwrap();
    assert_eq!(first.tests.len(), 6, "{first:?}");
    assert_rejected(
        "repeat batch",
        TESTS_OK,
        parse_tests(TESTS_OK, &sig, &mut seen),
        ParseError::NoNewTests,
    );
    // CRLF and a huge block (10 000 distinct tests) parse like LF.
    let crlf = parse_tests(&TESTS_OK.replace('\n', "\r\n"), &sig, &mut HashSet::new()).unwrap();
    assert_eq!(crlf, first);
    let many: String = (0..10_000)
        .map(|i| format!("assert count_pairs([{i}], {i}) == 0\n"))
        .collect();
    let big = parse_tests(&tests_block(&many), &sig, &mut HashSet::new()).unwrap();
    assert_eq!((big.tests.len(), big.dropped.len()), (10_000, 0));
}

fn failure(e: &Extraction) -> &str {
    match e {
        Extraction::Failed { reason } => reason,
        other => panic!("expected a failure, got {other}"),
    }
}

#[test]
fn malformed_solutions() {
    let run = |response: &str| extract(SKELETON_CODE, "count_pairs", response, PromptStyle::Chat);
    let no_code = "no code in the response (no fenced block and no Python-looking lines)";
    let failures: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "empty response"),
        ("whitespace", " \n\t\r\n".into(), "empty response"),
        ("NUL bytes only", "\0\0\0".into(), no_code),
        ("prose", "I'm sorry, I can't do that.".into(), no_code),
        (
            "shell block only",
            "```bash\npip install numpy\n```".into(),
            no_code,
        ),
        ("empty fence", "```python\n```".into(), "empty code"),
        (
            "cut right after the fence",
            "```python\n".into(),
            "empty code",
        ),
        (
            "other function",
            "```python\ndef count(nums):\n    return 0\n```".into(),
            "the code defines `count` but not `count_pairs`",
        ),
        (
            "only a method",
            "```python\nclass Solution:\n    def count_pairs(self, nums):\n        return 0\n```"
                .into(),
            "`count_pairs` is defined only inside another block (e.g. a class)",
        ),
    ];
    for (case, response, reason) in failures {
        assert_eq!(failure(&run(&response)), reason, "{case}");
    }

    // Cut at max tokens inside the fence: the code so far is used, and the note says so.
    let truncated = &SOLUTIONS_OK[0][..SOLUTIONS_OK[0].find("seen[x]").unwrap()];
    let e = run(truncated);
    assert_eq!(e.status(), "full_function");
    assert!(
        e.detail()
            .contains("code fence not closed (response cut off?)"),
        "{e}"
    );
    // CRLF responses extract like LF ones.
    for response in SOLUTIONS_OK {
        assert_eq!(
            run(&response.replace('\n', "\r\n")),
            run(response),
            "{response}"
        );
    }
    // Nested fences: the python block inside a markdown fence is not mistaken for prose.
    let nested =
        "````markdown\n```python\ndef count_pairs(nums, target=0):\n    return 0\n```\n````";
    let e = run(nested);
    assert!(
        matches!(&e, Extraction::Program { kind: ProgramKind::FullFunction, program, .. } if program.contains("return 0")),
        "{e}"
    );
    // Unicode and a NUL byte inside the code are kept for the sandbox to judge.
    let e = run("```python\ndef count_pairs(nums, target=0):\n    return len('🦀\0é')\n```");
    assert!(e.program().unwrap().contains("'🦀\0é'"), "{e}");
    // A huge response: 1 MiB of blank lines, then an unindented body.
    let huge = format!("{}return 0\n", "\n".repeat(1 << 20));
    let e = run(&huge);
    assert_eq!(
        e.program(),
        Some(format!("{SKELETON_CODE}    return 0\n").as_str()),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property test: mutated valid responses.

/// Tokens that models emit and parsers care about.
const NASTY: [&str; 34] = [
    "<PROBLEM_START>",
    "<PROBLEM_END>",
    "<RATING_START>",
    "<RATING_END>",
    "<SKELETON_START>",
    "<SKELETON_END>",
    "<TESTS_START>",
    "<TESTS_END>",
    "```",
    "```python\n",
    "\n```\n",
    "def ",
    "assert ",
    "count_pairs(",
    "(",
    ")",
    "[",
    "]",
    "'",
    "\"",
    "\\",
    "#",
    "=",
    "==",
    ",",
    ":",
    "*",
    "**",
    "/",
    "\r\n",
    "\0",
    "é",
    "🦀",
    "\n",
];

fn mutate(rng: &mut StdRng, valid: &str) -> String {
    let mut lines: Vec<String> = valid.split_inclusive('\n').map(str::to_string).collect();
    for _ in 0..rng.random_range(1..4) {
        let n = lines.len();
        match rng.random_range(0..6) {
            0 if n > 1 => {
                lines.remove(rng.random_range(0..n));
            }
            1 => {
                let line = lines[rng.random_range(0..n)].clone();
                lines.insert(rng.random_range(0..=n), line);
            }
            2 if n > 1 => lines.swap(rng.random_range(0..n), rng.random_range(0..n)),
            3 => {
                // Random bytes (lossily decoded: invalid UTF-8 becomes U+FFFD, as a decoder would).
                let bytes: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                insert_at_char(rng, &mut lines, &String::from_utf8_lossy(&bytes));
            }
            4 => {
                let token = NASTY[rng.random_range(0..NASTY.len())];
                insert_at_char(rng, &mut lines, token);
            }
            _ => {
                // Delete a random span of characters.
                let i = rng.random_range(0..n);
                let chars: Vec<char> = lines[i].chars().collect();
                if !chars.is_empty() {
                    let a = rng.random_range(0..chars.len());
                    let b = rng.random_range(a..=chars.len());
                    lines[i] = chars[..a].iter().chain(&chars[b..]).collect();
                }
            }
        }
    }
    lines.concat()
}

fn insert_at_char(rng: &mut StdRng, lines: &mut [String], text: &str) {
    let i = rng.random_range(0..lines.len());
    let boundaries: Vec<usize> = lines[i]
        .char_indices()
        .map(|(b, _)| b)
        .chain([lines[i].len()])
        .collect();
    let at = boundaries[rng.random_range(0..boundaries.len())];
    lines[i].insert_str(at, text);
}

/// Every prefix of `valid` at a char boundary, then `mutations` random mutations of it.
fn inputs(valid: &str, seed: u64, mutations: usize) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out: Vec<String> = valid
        .char_indices()
        .map(|(i, _)| valid[..i].to_string())
        .collect();
    out.push(valid.to_string());
    out.extend((0..mutations).map(|_| mutate(&mut rng, valid)));
    out
}

/// Runs `check` on every input, reporting the input that panicked.
fn never_panics(what: &str, inputs: &[String], mut check: impl FnMut(&str)) {
    for input in inputs {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{what} failed on {input:?}: {message}");
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn rejection_keeps_raw(input: &str, rejection: &ParseRejection) {
    assert_eq!(rejection.raw, input);
    assert!(!rejection.reason.to_string().is_empty());
}

const SEED: u64 = 0x1bc0de;
const MUTATIONS: usize = 3000;

#[test]
fn mutated_problems_parse_or_reject() {
    let mut parsed = 0;
    never_panics(
        "parse_problem",
        &inputs(PROBLEM_OK, SEED, MUTATIONS),
        |input| match parse_problem(input) {
            Ok(p) => {
                parsed += 1;
                for field in [&p.title, &p.description, &p.example, &p.hint] {
                    assert!(
                        !field.is_empty() && field.trim() == field.as_str(),
                        "{field:?}"
                    );
                }
                let sig = &p.signature;
                assert!(is_identifier(&sig.name), "{sig:?}");
                let names: HashSet<&str> = sig.params.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names.len(), sig.params.len(), "unique parameter names");
                for param in &sig.params {
                    assert!(
                        is_identifier(&param.name) && !param.annotation.is_empty(),
                        "{param:?}"
                    );
                }
                assert!(!sig.returns.is_empty());
                // The signature says the same when written back and read again.
                assert_eq!(&FunctionSignature::parse(&sig.to_def()).unwrap(), sig);
            }
            Err(rejection) => rejection_keeps_raw(input, &rejection),
        },
    );
    assert!(
        parsed > 100,
        "only {parsed} mutants parsed: the property checks little"
    );
}

#[test]
fn mutated_ratings_parse_or_reject() {
    let mut parsed = 0;
    never_panics(
        "parse_rating",
        &inputs(RATING_OK, SEED, MUTATIONS),
        |input| match parse_rating(input) {
            Ok(r) => {
                parsed += 1;
                assert!((0.0..=10.0).contains(&r.score), "{r:?}");
                assert!(!r.summary.is_empty());
            }
            Err(rejection) => rejection_keeps_raw(input, &rejection),
        },
    );
    assert!(parsed > 100, "only {parsed} mutants parsed");
}

#[test]
fn mutated_skeletons_parse_or_reject() {
    let mut parsed = 0;
    never_panics(
        "parse_skeleton",
        &inputs(SKELETON_OK, SEED, MUTATIONS),
        |input| match parse_skeleton(input, "count_pairs") {
            Ok(code) => {
                parsed += 1;
                assert!(
                    code.lines().any(|l| l
                        .strip_prefix("def ")
                        .and_then(|r| r.trim_start().strip_prefix("count_pairs"))
                        .is_some_and(|r| r.trim_start().starts_with('('))),
                    "{code}"
                );
                assert!(
                    code.lines().all(|l| !l.trim_start().starts_with("```")),
                    "{code}"
                );
                assert!(
                    code.lines().all(|l| input.contains(l)),
                    "every line comes from the response"
                );
            }
            Err(rejection) => rejection_keeps_raw(input, &rejection),
        },
    );
    assert!(parsed > 100, "only {parsed} mutants parsed");
}

/// The arguments of a call test, split at top-level commas (an oracle independent of the parser).
fn count_args(list_literal: &str) -> usize {
    let inner = &list_literal[1..list_literal.len() - 1];
    let (mut depth, mut quote, mut escaped, mut count) = (0i32, None, false, 0);
    let mut any = false;
    for c in inner.chars() {
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
            ')' | ']' | '}' => depth -= 1,
            ',' if depth == 0 => count += 1,
            _ => {}
        }
        any |= !c.is_whitespace();
    }
    if any { count + 1 } else { 0 }
}

/// The candidate test lines of the first block, as the format defines them.
fn block_lines(input: &str) -> Option<Vec<&str>> {
    let start = input.find("<TESTS_START>")? + "<TESTS_START>".len();
    let end = start + input[start..].find("<TESTS_END>")?;
    Some(
        input[start..end]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("```"))
            .collect(),
    )
}

fn check_tests(
    input: &str,
    sig: &FunctionSignature,
    result: Result<ParsedTests, ParseRejection>,
) -> bool {
    match result {
        Ok(parsed) => {
            // Nothing is silently lost: every line is a test or a dropped line with a reason.
            let lines = block_lines(input).expect("parsed without a block");
            let mut accounted: Vec<&str> = parsed.tests.iter().map(|t| t.source.as_str()).collect();
            accounted.extend(parsed.dropped.iter().map(|(l, _)| l.as_str()));
            accounted.sort_unstable();
            let mut expected = lines.clone();
            expected.sort_unstable();
            assert_eq!(accounted, expected);
            assert!(parsed.dropped.iter().all(|(_, why)| !why.is_empty()));
            let mut distinct = HashSet::new();
            for test in &parsed.tests {
                assert!(test.source.starts_with("assert"), "{test:?}");
                assert!(test.source.contains(&sig.name), "{test:?}");
                let squashed: String = test.source.chars().filter(|c| !c.is_whitespace()).collect();
                assert!(distinct.insert(squashed), "duplicate kept: {test:?}");
                if let Some(call) = &test.call {
                    assert!(
                        call.args.starts_with('[') && call.args.ends_with(']'),
                        "{call:?}"
                    );
                    assert!(sig.accepts_arity(count_args(&call.args)), "{test:?}");
                    assert!(!call.expected.is_empty(), "{call:?}");
                    let src: String = test.source.chars().filter(|c| !c.is_whitespace()).collect();
                    let args: String = call.args[1..call.args.len() - 1]
                        .chars()
                        .filter(|c| !c.is_whitespace())
                        .collect();
                    assert!(src.contains(&format!("{}({args}", sig.name)), "{test:?}");
                }
            }
            true
        }
        Err(rejection) => {
            rejection_keeps_raw(input, &rejection);
            false
        }
    }
}

/// A signature with every parameter kind, and tests that use them.
const WINDOW_DEF: &str =
    "def window(xs: List[int], k: int = 2, /, *extra: int, step: int, **opts: bool) -> List[int]:";
const WINDOW_TESTS: &str = "<TESTS_START>\nassert window([1, 2, 3], step=1) == [3, 5]\nassert window([1, 2, 3], 3, 4, step=2, fast=True) == [6]\nassert window(*[[1]], step=1) == []\nassert window([], step=1, **{'fast': False}) == []\nassert len(window([1, 2], 1, step=1)) == 2\nassert window([1], k=1, step=1) == [1]\n<TESTS_END>";

#[test]
fn mutated_tests_parse_or_reject() {
    let window = FunctionSignature::parse(WINDOW_DEF).unwrap();
    for (sig, valid) in [(signature(), TESTS_OK), (window, WINDOW_TESTS)] {
        let mut parsed = 0;
        let mut seen_across = HashSet::new();
        never_panics("parse_tests", &inputs(valid, SEED, MUTATIONS), |input| {
            if check_tests(input, &sig, parse_tests(input, &sig, &mut HashSet::new())) {
                parsed += 1;
            }
            // With the running set of a problem, later batches see earlier tests as duplicates.
            check_tests(input, &sig, parse_tests(input, &sig, &mut seen_across));
        });
        assert!(parsed > 100, "only {parsed} mutants of {} parsed", sig.name);
    }
}

#[test]
fn every_parameter_kind_binds_like_python() {
    let sig = FunctionSignature::parse(WINDOW_DEF).unwrap();
    assert_eq!(sig.to_def(), WINDOW_DEF);
    // `k=1` binds to **opts (k is positional-only and keeps its default), as in Python.
    let parsed = parse_tests(WINDOW_TESTS, &sig, &mut HashSet::new()).unwrap();
    assert_eq!(
        (parsed.tests.len(), parsed.dropped.len()),
        (6, 0),
        "{parsed:?}"
    );
    assert!(
        parsed.tests.iter().all(|t| t.call.is_none()),
        "keyword and starred calls stay asserts"
    );
    let wrong = [
        (
            "assert window(xs=[1], step=1) == []",
            "calls `window` without required argument `xs`",
        ),
        (
            "assert window([1]) == []",
            "calls `window` without required argument `step`",
        ),
        (
            "assert window([1], 2, 3, step=1, step=2) == []",
            "calls `window` with `step` given twice",
        ),
    ];
    let lines: Vec<&str> = wrong.iter().map(|(line, _)| *line).collect();
    let raw = tests_block(&format!(
        "assert window([4], step=1) == [4]\n{}",
        lines.join("\n")
    ));
    let parsed = parse_tests(&raw, &sig, &mut HashSet::new()).unwrap();
    let dropped: Vec<(&str, &str)> = parsed
        .dropped
        .iter()
        .map(|(l, r)| (l.as_str(), r.as_str()))
        .collect();
    assert_eq!(dropped, wrong);
}

#[test]
fn mutated_solutions_extract_or_fail() {
    for (i, valid) in SOLUTIONS_OK.iter().enumerate() {
        let mut programs = 0;
        never_panics(
            "extract",
            &inputs(valid, SEED + i as u64, MUTATIONS),
            |input| {
                match extract(SKELETON_CODE, "count_pairs", input, PromptStyle::Chat) {
                    Extraction::Program {
                        program,
                        kind: ProgramKind::FullFunction,
                        ..
                    } => {
                        programs += 1;
                        assert!(
                            program.lines().any(|l| l.starts_with("def count_pairs(")),
                            "{program}"
                        );
                    }
                    Extraction::Program {
                        program,
                        kind: ProgramKind::BodyAppended,
                        ..
                    } => {
                        programs += 1;
                        assert!(program.starts_with(SKELETON_CODE), "{program}");
                    }
                    Extraction::Failed { reason } => assert!(!reason.is_empty()),
                }
                // Plain completion of the skeleton never panics either.
                let e = extract(SKELETON_CODE, "count_pairs", input, PromptStyle::Completion);
                assert!(e.program().is_some() || !e.detail().is_empty());
            },
        );
        assert!(
            programs > 100,
            "only {programs} mutants of solution {i} extracted"
        );
    }
}
