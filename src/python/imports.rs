//! Standard-library names a program uses but never binds: `math.comb(...)` with no `import
//! math`, `Counter(...)` with no `from collections import Counter`. Such a program dies with
//! `NameError` although its logic may be right (a hand check found five correct `math.comb`
//! candidates lost that way). [`missing_imports`] lists the import lines that would bind them.
//!
//! A name counts as bound (and is left alone) when it appears anywhere in a binding position: after
//! `def`, `class`, `as`, `import`, `global` or `nonlocal`, before `=` or `:=`, between `for` and
//! `in`, as a parameter of a `def` or a `lambda`. The check reads code only (strings and comments
//! are masked by the [`Lexer`](super::lexer)); it errs towards adding nothing.

use std::collections::BTreeSet;

use super::lexer::{Class, classes};

/// Modules used as `module.attribute`.
const MODULES: [&str; 23] = [
    "bisect",
    "calendar",
    "cmath",
    "collections",
    "copy",
    "datetime",
    "decimal",
    "fractions",
    "functools",
    "hashlib",
    "heapq",
    "itertools",
    "json",
    "math",
    "operator",
    "random",
    "re",
    "statistics",
    "string",
    "sys",
    "textwrap",
    "typing",
    "unicodedata",
];

/// Names used bare, with the module they come from.
const NAMES: [(&str, &str); 36] = [
    ("Counter", "collections"),
    ("OrderedDict", "collections"),
    ("defaultdict", "collections"),
    ("deque", "collections"),
    ("namedtuple", "collections"),
    ("cmp_to_key", "functools"),
    ("lru_cache", "functools"),
    ("reduce", "functools"),
    ("accumulate", "itertools"),
    ("combinations", "itertools"),
    ("combinations_with_replacement", "itertools"),
    ("groupby", "itertools"),
    ("permutations", "itertools"),
    ("zip_longest", "itertools"),
    ("heapify", "heapq"),
    ("heappop", "heapq"),
    ("heappush", "heapq"),
    ("heappushpop", "heapq"),
    ("nlargest", "heapq"),
    ("nsmallest", "heapq"),
    ("bisect_left", "bisect"),
    ("bisect_right", "bisect"),
    ("insort", "bisect"),
    ("Any", "typing"),
    ("Callable", "typing"),
    ("Dict", "typing"),
    ("List", "typing"),
    ("Optional", "typing"),
    ("Set", "typing"),
    ("Tuple", "typing"),
    ("Union", "typing"),
    ("factorial", "math"),
    ("gcd", "math"),
    ("isqrt", "math"),
    ("Fraction", "fractions"),
    ("Decimal", "decimal"),
];

/// A token of masked code: an identifier or one punctuation character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Punct(char),
    Newline,
}

fn tokens(masked: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (at, c) in masked.char_indices() {
        let word_char = c == '_' || c.is_alphanumeric();
        match (start, word_char) {
            (None, true) => start = Some(at),
            (Some(s), false) => {
                out.push(Token::Word(&masked[s..at]));
                start = None;
            }
            _ => {}
        }
        if !word_char {
            if c == '\n' {
                out.push(Token::Newline);
            } else if !c.is_whitespace() {
                out.push(Token::Punct(c));
            }
        }
    }
    if let Some(s) = start {
        out.push(Token::Word(&masked[s..]));
    }
    out
}

/// Every name the program binds anywhere (see the module docs).
fn bound<'a>(tokens: &[Token<'a>]) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => Some(*w),
        _ => None,
    };
    let punct = |i: usize| match tokens.get(i) {
        Some(Token::Punct(c)) => Some(*c),
        _ => None,
    };
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(w) = *token else { continue };
        match w {
            "def" | "class" | "as" => {
                names.extend(word(i + 1));
                if w == "def" {
                    parameters(tokens, i + 2, &mut names);
                }
            }
            "global" | "nonlocal" => words_until(
                tokens,
                i + 1,
                |t| matches!(t, Token::Newline | Token::Punct(';')),
                &mut names,
            ),
            "import" => {
                // `from typing import *` binds every name of the module.
                if punct(i + 1) == Some('*') && i >= 2 && word(i - 2) == Some("from") {
                    let module = word(i - 1);
                    names.extend(
                        NAMES
                            .iter()
                            .filter(|(_, m)| Some(*m) == module)
                            .map(|(name, _)| *name),
                    );
                }
                words_until(
                    tokens,
                    i + 1,
                    |t| matches!(t, Token::Newline | Token::Punct(';')),
                    &mut names,
                );
            }
            "for" => {
                words_until(
                    tokens,
                    i + 1,
                    |t| matches!(t, Token::Word("in") | Token::Newline),
                    &mut names,
                );
            }
            "lambda" => {
                words_until(
                    tokens,
                    i + 1,
                    |t| matches!(t, Token::Punct(':') | Token::Newline),
                    &mut names,
                );
            }
            _ => {
                let assigned = match (punct(i + 1), punct(i + 2)) {
                    (Some('='), next) => next != Some('='),
                    (Some(':'), Some('=')) => true,
                    _ => false,
                };
                // `f(x=1)` is a keyword argument, not a binding; inside a call it is harmless to
                // count it as one (it only ever prevents an import).
                if assigned && punct(i.wrapping_sub(1)) != Some('.') {
                    names.insert(w);
                }
            }
        }
    }
    names
}

/// Every word from `start` up to the first token that is `end` (or the end of the code): the
/// names of an import list, of a `for` target, of a lambda's parameters.
fn words_until<'a>(
    tokens: &[Token<'a>],
    start: usize,
    end: impl Fn(&Token<'a>) -> bool,
    names: &mut BTreeSet<&'a str>,
) {
    for t in tokens.iter().skip(start).take_while(|t| !end(t)) {
        if let Token::Word(name) = t {
            names.insert(*name);
        }
    }
}

/// The parameter names of a `def` whose `(` is at `open`: a word right after `(`, `,`, `*` or
/// `**` (annotations and defaults follow `:` and `=`).
fn parameters<'a>(tokens: &[Token<'a>], open: usize, names: &mut BTreeSet<&'a str>) {
    if tokens.get(open) != Some(&Token::Punct('(')) {
        return;
    }
    let mut depth = 0usize;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t {
            Token::Punct('(' | '[' | '{') => depth += 1,
            Token::Punct(')' | ']' | '}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return;
                }
            }
            Token::Word(name) if depth == 1 => {
                if let Some(Token::Punct('(' | ',' | '*')) = tokens.get(i - 1) {
                    names.insert(*name);
                }
            }
            _ => {}
        }
    }
}

/// The import lines (`import math`, `from collections import Counter`) that bind the
/// standard-library names `code` uses but never binds, sorted; empty when there are none.
pub fn missing_imports(code: &str) -> Vec<String> {
    let masked: String = classes(code)
        .map(|(_, c, class)| match class {
            Class::Code => c,
            _ if c == '\n' => '\n',
            _ => ' ',
        })
        .collect();
    let tokens = tokens(&masked);
    let bound = bound(&tokens);
    let mut lines = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(w) = *token else { continue };
        if bound.contains(w) || (i > 0 && tokens[i - 1] == Token::Punct('.')) {
            continue;
        }
        let next = tokens.get(i + 1);
        if next == Some(&Token::Punct('.')) && MODULES.contains(&w) {
            lines.insert(format!("import {w}"));
        } else if let Some((_, module)) = NAMES.iter().find(|(name, _)| *name == w)
            && next != Some(&Token::Punct('='))
        {
            lines.insert(format!("from {module} import {w}"));
        }
    }
    lines.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_used_but_never_bound_get_their_import() {
        let code = "def f(n: int, k: int) -> List[int]:\n    c = Counter('ab')\n    return [math.comb(n, k), gcd(n, k)]\n";
        assert_eq!(
            missing_imports(code),
            [
                "from collections import Counter",
                "from math import gcd",
                "from typing import List",
                "import math",
            ]
        );
    }

    #[test]
    fn bound_names_strings_comments_and_attributes_are_left_alone() {
        let code = "import math\nfrom collections import Counter as C, deque\n\
                    def f(gcd, *heapify, **Counter):\n    re = 're.compile in a string'\n    \
                    # random.choice in a comment\n    for List, Dict in []:\n        pass\n    \
                    x = obj.math.floor + self.deque()\n    g = lambda Set: Set\n    \
                    return math.floor(1) + C(re) + deque() + Tuple\n\nTuple = tuple\n";
        assert_eq!(missing_imports(code), Vec::<String>::new());
    }

    #[test]
    fn a_star_import_binds_its_module_names() {
        let code = "from typing import *\nfrom collections import *\n\ndef f(xs: List[int]) -> Tuple[int, int]:\n    return Counter(xs), heapq.nlargest(1, xs)\n";
        assert_eq!(missing_imports(code), ["import heapq"]);
    }

    #[test]
    fn a_keyword_argument_is_not_a_use() {
        assert_eq!(
            missing_imports("def f():\n    return g(deque=1)\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            missing_imports("def f(xs):\n    return sorted(xs, key=functools.cmp_to_key(c))\n"),
            ["import functools"]
        );
    }
}
