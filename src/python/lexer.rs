//! The Python lexer: just enough lexing for the one-line constructs the IPC parsers read (a `def`
//! signature, an `assert` test line): string literals, comments, bracket depth, top-level
//! splitting and call sites. Line-oriented: triple-quoted strings spanning lines are not tracked
//! (the parsers reject multi-line tests before scanning them).

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

/// Tracks string literals character by character.
#[derive(Default)]
struct Strings {
    quote: Option<char>,
    escaped: bool,
}

impl Strings {
    /// Feeds `c`; true when it belongs to a string literal's body or is its closing quote (an
    /// opening quote is code).
    fn inside(&mut self, c: char) -> bool {
        match self.quote {
            Some(q) => {
                if self.escaped {
                    self.escaped = false;
                } else if c == '\\' {
                    self.escaped = true;
                } else if c == q {
                    self.quote = None;
                }
                true
            }
            None => {
                if c == '\'' || c == '"' {
                    self.quote = Some(c);
                }
                false
            }
        }
    }
}

/// The characters of `s` outside string literals, with their byte offsets.
pub(crate) fn code_chars(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut strings = Strings::default();
    s.char_indices().filter(move |&(_, c)| !strings.inside(c))
}

/// `line` without its trailing `#` comment.
pub(crate) fn code_part(line: &str) -> &str {
    match code_chars(line).find(|&(_, c)| c == '#') {
        Some((at, _)) => &line[..at],
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
    let mut depth = 0usize;
    for (i, c) in code_chars(s) {
        match (word(c) && keep(depth), start) {
            (true, None) => start = Some(i),
            (false, Some(from)) => {
                spans.push((from, i));
                start = None;
            }
            _ => {}
        }
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    if let Some(from) = start {
        spans.push((from, s.len()));
    }
    spans.into_iter().map(move |(a, b)| &s[a..b])
}

/// Walks `s` tracking brackets and string literals; calls `visit(index, char, depth)` for every
/// character outside strings and stops at the first for which it returns false (its index is
/// returned). A full walk returns `s.len()` when brackets and quotes balance, else `None`.
pub(crate) fn scan(s: &str, mut visit: impl FnMut(usize, char, usize) -> bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut strings = Strings::default();
    for (i, c) in s.char_indices() {
        if strings.inside(c) {
            continue;
        }
        match c {
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
    (strings.quote.is_none() && depth == 0).then_some(s.len())
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
    let mut strings = Strings::default();
    line.chars()
        .filter(|&c| strings.inside(c) || !c.is_whitespace())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_hide_comments_brackets_and_separators() {
        assert_eq!(
            code_part("f('#', \"#\") == 1  # note"),
            "f('#', \"#\") == 1  "
        );
        assert_eq!(code_part("x = 'it\\'s # no'"), "x = 'it\\'s # no'");
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
