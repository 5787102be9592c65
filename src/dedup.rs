//! Near-duplicate removal for generated problems.
//!
//! A model asked for many problems repeats itself. Two problems are duplicates when their
//! normalized signatures are equal (same function name, parameter and return types), or when the
//! MinHash estimate of the Jaccard similarity of their descriptions' word 3-shingles reaches a
//! threshold. [`NearDuplicateFilter`] keeps the first of each group in arrival order, so a
//! resumed run that replays problems in the same order makes the same choices.

use std::collections::HashSet;

/// Number of hash functions in a MinHash sketch (standard error of the estimate ≈ 1/√128 ≈ 0.09).
const PERMUTATIONS: usize = 128;

/// A MinHash sketch of a text's word 3-shingles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinHash([u64; PERMUTATIONS]);

impl MinHash {
    /// Sketches `text` (lowercased, punctuation stripped, word 3-shingles; shorter texts use the
    /// whole word sequence as one shingle).
    pub fn of(text: &str) -> Self {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let mut mins = [u64::MAX; PERMUTATIONS];
        let mut shingle = |parts: &[String]| {
            let base = fnv1a(parts.join(" ").as_bytes());
            for (i, slot) in mins.iter_mut().enumerate() {
                let h = mix(base ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                *slot = (*slot).min(h);
            }
        };
        if words.len() < 3 {
            shingle(&words);
        } else {
            words.windows(3).for_each(&mut shingle);
        }
        MinHash(mins)
    }

    /// Estimated Jaccard similarity of the two shingle sets.
    pub fn similarity(&self, other: &MinHash) -> f32 {
        let equal = self
            .0
            .iter()
            .zip(other.0.iter())
            .filter(|(a, b)| a == b)
            .count();
        equal as f32 / PERMUTATIONS as f32
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// splitmix64's finalizer: a cheap, well-mixed permutation of u64.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Why a problem was judged a duplicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Duplicate {
    /// Same normalized signature as an earlier problem.
    Signature(String),
    /// Description similarity with an earlier problem at or above the threshold.
    Description { similarity: f32, of_index: usize },
}

/// Keeps the first of each group of near-duplicate problems.
#[derive(Debug)]
pub struct NearDuplicateFilter {
    threshold: f32,
    signatures: HashSet<String>,
    sketches: Vec<MinHash>,
}

impl NearDuplicateFilter {
    /// `threshold`: the estimated Jaccard similarity at which descriptions count as duplicates.
    pub fn new(threshold: f32) -> Self {
        NearDuplicateFilter {
            threshold,
            signatures: HashSet::new(),
            sketches: Vec::new(),
        }
    }

    /// Admits a problem unless it duplicates one admitted earlier. `signature` is the `def` line.
    pub fn admit(&mut self, signature: &str, description: &str) -> Result<(), Duplicate> {
        let normalized: String = signature
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_lowercase();
        if self.signatures.contains(&normalized) {
            return Err(Duplicate::Signature(normalized));
        }
        let sketch = MinHash::of(description);
        if let Some((index, similarity)) = self
            .sketches
            .iter()
            .map(|s| s.similarity(&sketch))
            .enumerate()
            .find(|(_, sim)| *sim >= self.threshold)
        {
            return Err(Duplicate::Description {
                similarity,
                of_index: index,
            });
        }
        self.signatures.insert(normalized);
        self.sketches.push(sketch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "Given a list of integers, return the length of the longest strictly increasing contiguous run of elements in the list. Return 0 for an empty list.";

    #[test]
    fn similarity_tracks_overlap() {
        let a = MinHash::of(A);
        assert_eq!(a.similarity(&a), 1.0);
        let reworded = A.replace("Return 0 for an empty list.", "An empty list gives 0.");
        let s = a.similarity(&MinHash::of(&reworded));
        assert!(s > 0.55 && s < 1.0, "{s}");
        let other = MinHash::of(
            "Parse a date string in ISO format and return the weekday name in English, or raise ValueError for malformed input.",
        );
        assert!(a.similarity(&other) < 0.1);
    }

    #[test]
    fn filter_keeps_first_of_each_group() {
        let mut filter = NearDuplicateFilter::new(0.5);
        assert!(
            filter
                .admit("def longest_run(xs: List[int]) -> int:", A)
                .is_ok()
        );
        let same_sig = filter.admit(
            "def longest_run( xs: List[int] ) -> int :",
            "something else entirely, about graphs and trees",
        );
        assert!(matches!(same_sig, Err(Duplicate::Signature(_))));
        let near = filter.admit(
            "def run_length(values: List[int]) -> int:",
            &A.replace("integers", "ints"),
        );
        assert!(
            matches!(near, Err(Duplicate::Description { of_index: 0, .. })),
            "{near:?}"
        );
        assert!(
            filter
                .admit(
                    "def weekday(s: str) -> str:",
                    "Parse an ISO date and return the weekday name."
                )
                .is_ok()
        );
    }
}
