//! The interface of a skeleton: what precedes the function (imports, constants), its `def` lines
//! and docstring, and a `pass` body. Used by the SkeletonWriter stage.

use super::lexer::code_part;

/// The interface part of a skeleton: what precedes `function` (imports, constants), its `def`
/// lines and docstring, and a `pass` body. Models often go on to solve the problem inside the
/// skeleton; the solution prompt shows the skeleton, so a body left in it would hand every
/// sample the same answer and fake a consensus.
pub fn stub(code: &str, function: &str) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let is_def = |l: &&str| {
        l.trim_start().strip_prefix("def ").is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix(function)
                .is_some_and(|r| r.trim_start().starts_with('('))
        })
    };
    let Some(start) = lines.iter().position(is_def) else {
        return code.to_string();
    };
    let def_indent = lines[start].len() - lines[start].trim_start().len();
    let Some(header_end) =
        (start..lines.len()).find(|&i| code_part(lines[i]).trim_end().ends_with(':'))
    else {
        return code.to_string();
    };
    let mut out: Vec<&str> = lines[..=header_end].to_vec();
    let first_body = (header_end + 1..lines.len()).find(|&i| !lines[i].trim().is_empty());
    let mut indent = " ".repeat(def_indent + 4);
    if let Some(i) = first_body {
        let line = lines[i];
        let own_indent = line.len() - line.trim_start().len();
        if own_indent > def_indent {
            indent = line[..own_indent].to_string();
            let body = line.trim_start();
            let quote = ["\"\"\"", "'''"]
                .into_iter()
                .find(|q| body.trim_start_matches(['r', 'R', 'u', 'U']).starts_with(q));
            if let Some(quote) = quote {
                let opened = body.find(quote).expect("starts with it") + quote.len();
                let end = if body[opened..].contains(quote) {
                    Some(i)
                } else {
                    (i + 1..lines.len()).find(|&j| lines[j].contains(quote))
                };
                if let Some(end) = end {
                    out.extend_from_slice(&lines[i..=end]);
                }
            }
        }
    }
    let mut stubbed = out.join("\n");
    stubbed.push('\n');
    stubbed.push_str(&indent);
    stubbed.push_str("pass\n");
    stubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_interface_and_drops_the_body() {
        let code = "import math\n\ndef f(x, sep='#'):  # the header ends here\n    \"\"\"Doc.\n    More.\n    \"\"\"\n    return math.sqrt(x)\n";
        assert_eq!(
            stub(code, "f"),
            "import math\n\ndef f(x, sep='#'):  # the header ends here\n    \"\"\"Doc.\n    More.\n    \"\"\"\n    pass\n"
        );
        let multi = "def g(\n    a: int,  # first\n) -> int:\n    return a\n";
        assert_eq!(
            stub(multi, "g"),
            "def g(\n    a: int,  # first\n) -> int:\n    pass\n"
        );
        assert_eq!(
            stub("x = 1\n", "f"),
            "x = 1\n",
            "no such function: unchanged"
        );
    }
}
