//! The Python lexer: the one place that knows where string literals, comments and brackets start
//! and end ([`Lexer`], fed by character or by line, its state carried across lines), and the
//! helpers built on it for the one-line constructs the IPC parsers read (a `def` signature, an
//! `assert` test line): code characters, comments, words, bracket depth, top-level splitting and
//! call sites. The program extractor and the sandbox's statement splitter feed it whole sources
//! line by line.

/// Python's hard keywords (soft keywords such as `match` are valid names).
pub(crate) const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// A Python identifier (keywords included).
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// `name=value` (not `==`): the keyword's name.
pub(crate) fn keyword_name(arg: &str) -> Option<&str> {
    match split_top_level(arg, '=').as_slice() {
        [name, _value] if is_identifier(name.trim()) => Some(name.trim()),
        _ => None,
    }
}

/// A string literal's opening delimiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Quote {
    ch: char,
    triple: bool,
}

/// What a character of Python source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Code: everything outside string literals and comments, a string's opening quote(s)
    /// included, and the newlines between lines.
    Code,
    /// Inside a string literal: its body and its closing quote(s).
    Str,
    /// A `#` comment, to the end of its line.
    Comment,
}

/// The one definition of where strings, brackets and comments start and end in Python source,
/// fed character by character ([`Lexer::step`]) or line by line ([`Lexer::line`]); the state
/// carries across lines.
///
/// Strings: `'`, `"`, `'''`, `"""` (a prefix such as `r`/`f` is code before the quote); a
/// backslash escapes the next character, also in raw strings (as Python's tokenizer does) and
/// also a newline (the string continues). A one-quote string still open at the end of its line
/// (a broken line) ends there. Comments run from `#` in code to the end of the line. Brackets:
/// `()[]{}` in code; a closer with none open is counted as unmatched and leaves the depth at 0.
/// A line continues the statement when it ends with a backslash in code.
#[derive(Debug, Default, Clone)]
pub(crate) struct Lexer {
    open: Option<Quote>,
    escaped: bool,
    comment: bool,
    /// Characters of the current delimiter still to come (the rest of a triple quote).
    delimiter: (u8, Option<Class>),
    depth: usize,
    unmatched: bool,
    backslash: bool,
    continued: bool,
}

impl Lexer {
    /// Feeds the character `c` found at byte `at` of `text` (which is looked ahead in for triple
    /// quotes); returns its class.
    pub(crate) fn step(&mut self, text: &str, at: usize, c: char) -> Class {
        if let (left @ 1.., Some(class)) = self.delimiter {
            self.delimiter.0 = left - 1;
            return class;
        }
        let backslash = std::mem::take(&mut self.backslash);
        if c != '\n' && c != '\r' {
            self.continued = false;
        }
        if self.comment {
            self.comment = c != '\n';
            return if self.comment {
                Class::Comment
            } else {
                Class::Code
            };
        }
        if let Some(quote) = self.open {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '\n' && !quote.triple {
                self.open = None;
                return Class::Code;
            } else if c == quote.ch && (!quote.triple || triple_at(text, at)) {
                self.open = None;
                if quote.triple {
                    self.delimiter = (2, Some(Class::Str));
                }
            }
            return Class::Str;
        }
        match c {
            '#' => {
                self.comment = true;
                return Class::Comment;
            }
            '\'' | '"' => {
                let triple = triple_at(text, at);
                self.open = Some(Quote { ch: c, triple });
                if triple {
                    self.delimiter = (2, Some(Class::Code));
                }
            }
            '(' | '[' | '{' => self.depth += 1,
            ')' | ']' | '}' => match self.depth.checked_sub(1) {
                Some(depth) => self.depth = depth,
                None => self.unmatched = true,
            },
            '\\' => self.backslash = true,
            '\r' => self.backslash = backslash,
            '\n' => self.continued = backslash,
            _ => {}
        }
        Class::Code
    }

    /// Feeds one line, with or without its newline.
    pub(crate) fn line(&mut self, line: &str) {
        for (at, c) in line.char_indices() {
            self.step(line, at, c);
        }
        if !line.ends_with('\n') {
            self.step("\n", 0, '\n');
        }
    }

    /// Open brackets (closers with none open are not counted).
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// Inside a string literal.
    pub(crate) fn in_string(&self) -> bool {
        self.open.is_some()
    }

    /// Whether a new statement may start here: no string, bracket or backslash continuation is
    /// open.
    pub(crate) fn at_statement_boundary(&self) -> bool {
        !self.in_string() && self.depth == 0 && !self.continued
    }
}

/// Whether the quote at byte `at` of `text` is a triple quote.
fn triple_at(text: &str, at: usize) -> bool {
    let b = text.as_bytes();
    b.get(at..at + 3)
        .is_some_and(|q| q[0] == q[1] && q[1] == q[2])
}

/// Every character of `s` with its byte offset and class, lexed from a fresh state.
pub(crate) fn classes(s: &str) -> impl Iterator<Item = (usize, char, Class)> + '_ {
    let mut lexer = Lexer::default();
    s.char_indices()
        .map(move |(at, c)| (at, c, lexer.step(s, at, c)))
}

/// The code characters of `s` (outside string literals and comments), with their byte offsets.
pub(crate) fn code_chars(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    classes(s)
        .filter(|&(_, _, class)| class == Class::Code)
        .map(|(at, c, _)| (at, c))
}

/// `line` without its trailing `#` comment.
pub(crate) fn code_part(line: &str) -> &str {
    match classes(line).find(|&(_, _, class)| class == Class::Comment) {
        Some((at, _, _)) => &line[..at],
        None => line,
    }
}

/// The identifier-like words of `s` outside string literals.
pub(crate) fn code_words(s: &str) -> impl Iterator<Item = &str> + '_ {
    words_where(s, |_| true)
}

/// The words of `s` outside strings and brackets.
pub(crate) fn top_level_words(s: &str) -> impl Iterator<Item = &str> + '_ {
    words_where(s, |depth| depth == 0)
}

fn words_where(s: &str, keep: impl Fn(usize) -> bool) -> impl Iterator<Item = &str> + '_ {
    let word = |c: char| c == '_' || c.is_alphanumeric();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut start: Option<usize> = None;
    let mut lexer = Lexer::default();
    for (i, c) in s.char_indices() {
        let depth = lexer.depth();
        if lexer.step(s, i, c) != Class::Code {
            continue;
        }
        match (word(c) && keep(depth), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                spans.push((from, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(from) = start {
        spans.push((from, s.len()));
    }
    spans.into_iter().map(move |(a, b)| &s[a..b])
}

/// Walks `s` tracking brackets, string literals and comments; calls `visit(index, char, depth)`
/// for every code character and stops at the first for which it returns false (its index is
/// returned). A closing bracket with none open ends the walk with `None`; a full walk returns
/// `s.len()` when no bracket or string is left open, else `None`.
pub(crate) fn scan(s: &str, mut visit: impl FnMut(usize, char, usize) -> bool) -> Option<usize> {
    let mut lexer = Lexer::default();
    for (i, c) in s.char_indices() {
        if lexer.step(s, i, c) != Class::Code {
            continue;
        }
        if lexer.unmatched {
            return None;
        }
        if !visit(i, c, lexer.depth()) {
            return Some(i);
        }
    }
    (!lexer.in_string() && lexer.depth() == 0).then_some(s.len())
}

pub(crate) fn balanced(s: &str) -> bool {
    scan(s, |_, _, _| true).is_some()
}

pub(crate) fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut close = None;
    scan(&s[open..], |i, c, depth| {
        if c == ')' && depth == 0 && close.is_none() {
            close = Some(open + i);
            return false;
        }
        true
    });
    close
}

/// The text inside `s` when all of `s` is one parenthesized group.
pub(crate) fn parenthesized(s: &str) -> Option<&str> {
    (s.starts_with('(') && matching_paren(s, 0)? == s.len() - 1).then(|| &s[1..s.len() - 1])
}

pub(crate) fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    scan(s, |i, c, depth| {
        // `==`, `<=`, `>=`, `!=` are comparisons, not keyword `=`.
        let is_sep = c == sep
            && depth == 0
            && !(sep == '='
                && (s[i + 1..].starts_with('=') || s[..i].ends_with(['=', '<', '>', '!', ':'])));
        if is_sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        true
    });
    parts.push(&s[start..]);
    parts
}

/// The trimmed items of a comma-separated parameter or argument list; one trailing comma (or an
/// empty list) adds no item, any other empty item is kept for the caller to reject.
pub(crate) fn list_items(list: &str) -> Vec<&str> {
    let mut items: Vec<&str> = split_top_level(list, ',')
        .into_iter()
        .map(str::trim)
        .collect();
    if items.last() == Some(&"") {
        items.pop();
    }
    items
}

/// Splits `lhs == rhs` at the single top-level `==`.
pub(crate) fn split_top_level_eq(s: &str) -> Option<(&str, &str)> {
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

/// The argument text of every call of `name` in `expr` (outside strings; not `x.name(`).
pub(crate) fn call_sites<'a>(expr: &'a str, name: &str) -> Vec<&'a str> {
    let mut sites = Vec::new();
    let mut previous: Option<char> = None;
    for (at, c) in code_chars(expr) {
        let boundary = previous.is_none_or(|p| !(p == '_' || p == '.' || p.is_alphanumeric()));
        previous = Some(c);
        if !boundary || !expr[at..].starts_with(name) {
            continue;
        }
        let after = &expr[at + name.len()..];
        let open = at + name.len() + (after.len() - after.trim_start().len());
        if expr[open..].starts_with('(')
            && let Some(close) = matching_paren(expr, open)
        {
            sites.push(&expr[open + 1..close]);
        }
    }
    sites
}

/// Whitespace outside string literals removed: `f(1,2)` and `f(1, 2)` are the same test.
pub(crate) fn normalize(line: &str) -> String {
    classes(line)
        .filter(|&(_, c, class)| class == Class::Str || !c.is_whitespace())
        .map(|(_, c, _)| c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether each line of `source` starts at a statement boundary.
    fn boundaries(source: &str) -> Vec<bool> {
        let mut lexer = Lexer::default();
        source
            .split_inclusive('\n')
            .map(|line| {
                let at = lexer.at_statement_boundary();
                lexer.line(line);
                at
            })
            .collect()
    }

    #[test]
    fn lexer_carries_strings_brackets_and_continuations_across_lines() {
        let source = concat!(
            "s = '''it's # not a comment\n",
            "( still text '''\n",
            "t = [1,  # (\n",
            " 2]\n",
            "u = 1 + \\\n",
            " 2\n",
            "v = 'a\\\n",
            "b'\n",
            "w = 'broken\n",
            "x = \"\"\"a \\\"\"\" b\"\"\"\n",
            "y = 0\n",
        );
        assert_eq!(
            boundaries(source),
            [
                true, false, true, false, true, false, true, false, true, true, true
            ],
            "{source}"
        );
        let kinds: String = classes("f('#', x)  # c")
            .map(|(_, _, class)| match class {
                Class::Code => 'c',
                Class::Str => 's',
                Class::Comment => '#',
            })
            .collect();
        assert_eq!(kinds, "cccsscccccc###");
        // Lines fed without their newline end the same way.
        let mut lexer = Lexer::default();
        lexer.line("x = (1,");
        assert_eq!((lexer.depth(), lexer.at_statement_boundary()), (1, false));
        lexer.line("  2)  # )");
        assert!(lexer.at_statement_boundary());
        lexer.line("y = 'open");
        assert!(!lexer.in_string(), "a one-quote string ends with its line");
        lexer.line("z = 1 \\");
        assert!(!lexer.at_statement_boundary(), "backslash continuation");
    }

    #[test]
    fn strings_hide_comments_brackets_and_separators() {
        assert_eq!(
            code_part("f('#', \"#\") == 1  # note"),
            "f('#', \"#\") == 1  "
        );
        assert_eq!(code_part("x = 'it\\'s # no'"), "x = 'it\\'s # no'");
        assert_eq!(
            code_part("s = \"\"\"it's # no\"\"\" # yes"),
            "s = \"\"\"it's # no\"\"\" "
        );
        assert!(balanced("f(x)  # )") && scan(")(", |_, _, _| true).is_none());
        assert!(balanced("f(')', [1, '['])") && !balanced("f('x)") && !balanced("f(1))"));
        assert_eq!(
            split_top_level("a, (b, c), 'd, e'", ','),
            ["a", " (b, c)", " 'd, e'"]
        );
        assert_eq!(
            split_top_level("a == b", '='),
            ["a == b"],
            "`==` is no keyword `=`"
        );
        assert_eq!(list_items("a, b,"), ["a", "b"]);
        assert_eq!(list_items(""), Vec::<&str>::new());
        assert_eq!(list_items("a,, b"), ["a", "", "b"]);
        assert_eq!(keyword_name("k = f(x=1)"), Some("k"));
        assert_eq!(keyword_name("x == 1"), None);
    }

    #[test]
    fn call_sites_skip_strings_methods_and_longer_names() {
        let expr = "f(1, g(2)) == 'f(3)' and obj.f(4) and ff(5) and f (6)";
        assert_eq!(call_sites(expr, "f"), ["1, g(2)", "6"]);
        assert_eq!(parenthesized("(a, (b))"), Some("a, (b)"));
        assert_eq!(parenthesized("(a) + (b)"), None);
        assert_eq!(
            split_top_level_eq("f(x == 1) == [1]"),
            Some(("f(x == 1) ", " [1]"))
        );
        let words: Vec<&str> = top_level_words("1 if (a or b) else 'and'").collect();
        assert_eq!(words, ["1", "if", "else"]);
        assert_eq!(normalize("f( 'a b' ,1 )"), "f('a b',1)");
    }
}
