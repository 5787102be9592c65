//! The interface of a skeleton: what precedes the function (imports, constants), its `def` lines
//! and docstring, and a `pass` body. Used by the SkeletonWriter stage.

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
    let Some(header_end) = (start..lines.len()).find(|&i| {
        let l = lines[i].split('#').next().unwrap_or("").trim_end();
        l.ends_with(':')
    }) else {
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
