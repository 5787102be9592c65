//! Just enough Python source structure to cut a test function into sandbox tests: splitting an
//! indented block into its top-level statements (respecting strings, brackets, comments and
//! backslash continuations, as the shared [`Lexer`] reads them) and turning HumanEval's `def check(candidate)` into [`TestCase`]s.
//! The assert-level splitting (what runs in the child, what is compared outside) is done with
//! Python's own `ast` by the worker.

use super::TestCase;
use crate::python::lexer::Lexer;

/// Splits a block of Python statements (all at the same indentation `indent`, compound
/// statements continuing on deeper lines) into the source of each top-level statement, dedented.
/// Blank and comment-only lines between statements are dropped.
pub fn top_level_statements(block: &str) -> Vec<String> {
    let lines: Vec<&str> = block.lines().collect();
    let indent = lines
        .iter()
        .find(|l| is_code(l))
        .map(|l| l.len() - l.trim_start().len())
        .unwrap_or(0);
    let mut statements: Vec<Vec<&str>> = Vec::new();
    let mut lexer = Lexer::default();
    for line in lines {
        let at_boundary = lexer.at_statement_boundary();
        let line_indent = line.len() - line.trim_start().len();
        if at_boundary && !is_code(line) {
            lexer.line(line);
            continue;
        }
        let clause = ["else", "elif ", "except", "finally"]
            .iter()
            .any(|k| line.trim_start().starts_with(k));
        if at_boundary && line_indent <= indent && !clause || statements.is_empty() {
            statements.push(Vec::new());
        }
        statements.last_mut().expect("a statement").push(line);
        lexer.line(line);
    }
    statements
        .into_iter()
        .map(|lines| {
            lines
                .iter()
                .map(|l| {
                    if l.len() >= indent && l[..indent].trim().is_empty() {
                        &l[indent..]
                    } else {
                        l.trim_start()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                .trim_end()
                .to_string()
        })
        .collect()
}

fn is_code(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// Turns a HumanEval-style test module (`METADATA`, imports, `def check(candidate): ...`) into
/// sandbox tests for a program that defines `entry_point`.
///
/// Every `assert` (or compound statement containing one) in `check` becomes one
/// [`TestCase::Assert`] whose source is the module's own top-level code (imports, METADATA,
/// helpers), `candidate = <entry_point>`, the non-assert statements of `check` that precede it
/// (imports, local variables), and the statement itself. The worker splits the plain
/// `assert candidate(...) == <literal>` ones; the rest run in the child.
pub fn check_function_tests(test_source: &str, entry_point: &str) -> Vec<TestCase> {
    let mut module = Vec::new();
    let mut body = String::new();
    let mut in_check = false;
    for line in test_source.lines() {
        if line.starts_with("def check(") {
            in_check = true;
            continue;
        }
        if in_check && is_code(line) && !line.starts_with([' ', '\t']) {
            in_check = false;
        }
        if in_check {
            body.push_str(line);
            body.push('\n');
        } else {
            module.push(line);
        }
    }
    let mut prelude = module.join("\n").trim().to_string();
    if !prelude.is_empty() {
        prelude.push('\n');
    }
    prelude.push_str(&format!("candidate = {entry_point}\n"));
    let mut tests = Vec::new();
    for statement in top_level_statements(&body) {
        let is_test = statement.starts_with("assert")
            || (is_compound(&statement) && statement.contains("assert"));
        if is_test {
            tests.push(TestCase::Assert {
                source: format!("{prelude}{statement}\n"),
            });
        } else {
            prelude.push_str(&statement);
            prelude.push('\n');
        }
    }
    tests
}

fn is_compound(statement: &str) -> bool {
    ["for ", "while ", "if ", "with ", "try:"]
        .iter()
        .any(|k| statement.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_across_brackets_strings_and_blocks() {
        let block = "    x = [1,\n         2]\n    # comment\n\n    assert f('a)b') == 3, \"msg\"\n    for i in range(3):\n        assert f(i)\n    s = '''a\nassert no\n'''\n    y = 1 + \\\n        2\n";
        let got = top_level_statements(block);
        assert_eq!(
            got,
            vec![
                "x = [1,\n     2]".to_string(),
                "assert f('a)b') == 3, \"msg\"".to_string(),
                "for i in range(3):\n    assert f(i)".to_string(),
                "s = '''a\nassert no\n'''".to_string(),
                "y = 1 + \\\n    2".to_string(),
            ]
        );
    }

    #[test]
    fn check_function_becomes_asserts_with_candidate_bound() {
        let src = "\n\nMETADATA = {\n    'author': 'jt'\n}\n\n\ndef check(candidate):\n    import math\n    assert candidate(1) == 2\n    lst = [1]\n    assert abs(candidate(lst) - 1) < 1e-6\n";
        let tests = check_function_tests(src, "inc");
        assert_eq!(tests.len(), 2);
        let TestCase::Assert { source } = &tests[1] else {
            panic!()
        };
        assert!(source.starts_with("METADATA = {"), "{source}");
        assert!(
            source.contains("candidate = inc\nimport math\nlst = [1]\nassert abs("),
            "{source}"
        );
        let TestCase::Assert { source } = &tests[0] else {
            panic!()
        };
        assert!(
            source.ends_with("import math\nassert candidate(1) == 2\n"),
            "{source}"
        );
    }
}
