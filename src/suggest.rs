//! "Did you mean …?": the closest of a few known names to a mistyped one.

/// The candidate closest to `word` by edit distance (case-insensitive), if it is close enough to
/// be a typo: at most a third of the longer name's characters differ (and at least one may).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&word, &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= (word.chars().count().max(c.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// " (did you mean `x`?)" when a candidate is close to `word`, else "".
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or_else(String::new, |c| format!(" (did you mean `{c}`?)"))
}

/// Edit distance over chars where an insertion, a deletion, a substitution or a swap of two
/// neighbours each count 1 (optimal string alignment: `rnu` is one edit from `run`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_name_and_strangers_find_none() {
        let names = ["qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"];
        assert_eq!(closest("qwen2.5-coder-0.5b-instruc", names), Some(names[0]));
        assert_eq!(closest("SmolLM2-135M-Instruct", names), Some(names[1]));
        assert_eq!(closest("llama-3-8b", names), None);
        assert_eq!(closest("rnu", ["run", "eval", "train"]), Some("run"));
        assert_eq!(closest("x", ["run", "eval"]), None);
        assert_eq!(
            did_you_mean("evl", ["run", "eval"]),
            " (did you mean `eval`?)"
        );
        assert_eq!(did_you_mean("zzz", ["run", "eval"]), "");
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("rnu", "run"), 1);
    }
}
