//! The Bayesian selection rule, after B4 (Chen et al. 2024, "Towards optimal assessment of
//! plausible code solutions with plausible tests").
//!
//! Candidates and tests are both only plausible. A hypothesis names one cluster C as the set of
//! correct candidates; since a correct candidate passes exactly the correct tests, the tests C
//! passes (T) are then the correct tests. Its log-posterior, up to a constant shared by every
//! hypothesis of the problem, is
//!
//! ```text
//!   |C| ln θx + (n − |C|) ln(1 − θx)                      priors on the candidates
//! + |T| ln θy + (m − |T|) ln(1 − θy)                      priors on the tests
//! + P_in  ln p + ((n − |C|)·|T|       − P_in)  ln(1 − p)  other candidates on the tests in T
//! + P_out ln q + ((n − |C|)·(m − |T|) − P_out) ln(1 − q)  other candidates on the tests outside T
//! ```
//!
//! over the passing matrix of the problem's n voting candidates and m tests, where P_in (P_out) is
//! how often a candidate outside C passes a test in (outside) T, p is the chance that an incorrect
//! candidate passes a correct test and q that it passes an incorrect one. C's own rows have
//! likelihood 1 by construction. The rule picks the hypothesis with the greatest posterior (MAP).
//!
//! The posterior is a function of six integer counts ([`Hypothesis`]) through one formula, so the
//! batch selector and the incremental dataflow compute the same float for the same cluster, bit
//! for bit, whatever order they meet the candidates in.

use serde::{Deserialize, Serialize};

use crate::signature::Signature;

/// The rule's priors; every one must lie strictly between 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BayesPriors {
    /// θx: the prior probability that a sampled candidate is correct.
    pub code_correct: f64,
    /// θy: the prior probability that a generated test is correct.
    pub test_correct: f64,
    /// p: the probability that an incorrect candidate passes a correct test.
    pub wrong_code_passes_right_test: f64,
    /// q: the probability that an incorrect candidate passes an incorrect test (agrees with a
    /// wrong expected value).
    pub wrong_code_passes_wrong_test: f64,
}

impl Default for BayesPriors {
    /// From the hand check of 16 generated problems (docs/ARCHITECTURE.md, "Selection"): about a
    /// third of the candidates and half of the tests were correct; a wrong candidate passes most
    /// correct tests but rarely shares a wrong expected value.
    fn default() -> Self {
        BayesPriors {
            code_correct: 0.35,
            test_correct: 0.5,
            wrong_code_passes_right_test: 0.6,
            wrong_code_passes_wrong_test: 0.15,
        }
    }
}

impl BayesPriors {
    /// The name of the first prior outside (0, 1), with its value.
    pub fn out_of_range(&self) -> Option<(&'static str, f64)> {
        [
            ("code_correct", self.code_correct),
            ("test_correct", self.test_correct),
            (
                "wrong_code_passes_right_test",
                self.wrong_code_passes_right_test,
            ),
            (
                "wrong_code_passes_wrong_test",
                self.wrong_code_passes_wrong_test,
            ),
        ]
        .into_iter()
        .find(|(_, v)| !(*v > 0.0 && *v < 1.0))
    }
}

/// The counts a hypothesis's posterior depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypothesis {
    /// n: voting candidates of the problem.
    pub candidates: u64,
    /// m: tests of the problem.
    pub tests: u64,
    /// |C|.
    pub cluster: u64,
    /// |T|: tests the cluster passes.
    pub passed: u64,
    /// P_in: passes of candidates outside C on tests in T.
    pub others_passed_in: u64,
    /// P_out: passes of candidates outside C on tests outside T.
    pub others_passed_out: u64,
}

impl Hypothesis {
    /// The hypothesis "the cluster with signature `cluster` (of `size` members) is correct", given
    /// every voting cluster of the problem as (signature, size), `cluster` included. `None` for
    /// output signatures, which carry no pass/fail matrix.
    pub fn of<'a>(
        cluster: &Signature,
        size: u32,
        all: impl IntoIterator<Item = (&'a Signature, u32)>,
    ) -> Option<Hypothesis> {
        let Signature::PassFail { tests, bits } = cluster else {
            return None;
        };
        let mut hypothesis = Hypothesis {
            candidates: 0,
            tests: u64::from(*tests),
            cluster: u64::from(size),
            passed: u64::from(cluster.passed()),
            others_passed_in: 0,
            others_passed_out: 0,
        };
        for (signature, count) in all {
            let Signature::PassFail { bits: other, .. } = signature else {
                return None;
            };
            hypothesis.candidates += u64::from(count);
            if signature == cluster {
                continue;
            }
            let (inside, outside) = other
                .iter()
                .zip(bits.iter().chain(std::iter::repeat(&0)))
                .fold((0u64, 0u64), |(i, o), (word, mask)| {
                    (
                        i + u64::from((word & mask).count_ones()),
                        o + u64::from((word & !mask).count_ones()),
                    )
                });
            hypothesis.others_passed_in += inside * u64::from(count);
            hypothesis.others_passed_out += outside * u64::from(count);
        }
        Some(hypothesis)
    }

    /// The log-posterior of the module docs, up to the problem's constant.
    pub fn log_posterior(&self, priors: &BayesPriors) -> f64 {
        let count = |x: u64| x as f64;
        let others = self.candidates.saturating_sub(self.cluster);
        let failed = self.tests.saturating_sub(self.passed);
        let in_cells = others * self.passed;
        let out_cells = others * failed;
        let (theta_x, theta_y) = (priors.code_correct, priors.test_correct);
        let (p, q) = (
            priors.wrong_code_passes_right_test,
            priors.wrong_code_passes_wrong_test,
        );
        count(self.cluster) * theta_x.ln()
            + count(others) * (1.0 - theta_x).ln()
            + count(self.passed) * theta_y.ln()
            + count(failed) * (1.0 - theta_y).ln()
            + count(self.others_passed_in) * p.ln()
            + count(in_cells.saturating_sub(self.others_passed_in)) * (1.0 - p).ln()
            + count(self.others_passed_out) * q.ln()
            + count(out_cells.saturating_sub(self.others_passed_out)) * (1.0 - q).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(tests: u32, bits: u64) -> Signature {
        Signature::PassFail {
            tests,
            bits: vec![bits],
        }
    }

    #[test]
    fn counts_of_a_hand_written_matrix() {
        // 4 tests; cluster A = 1100 (bits 2, 3) × 2, B = 0011 × 3, D = 0111 × 1.
        let (a, b, d) = (sig(4, 0b1100), sig(4, 0b0011), sig(4, 0b0111));
        let all = [(&a, 2), (&b, 3), (&d, 1)];
        let h = Hypothesis::of(&a, 2, all).unwrap();
        // Others: B passes none of T = {2, 3} and 2 outside; D passes 1 in T (bit 2) and 2 outside.
        assert_eq!(
            h,
            Hypothesis {
                candidates: 6,
                tests: 4,
                cluster: 2,
                passed: 2,
                others_passed_in: 1,
                others_passed_out: 3 * 2 + 2,
            }
        );
        let h = Hypothesis::of(&b, 3, all).unwrap();
        // Others: A passes 0 in T = {0, 1} and 2 outside (×2); D passes 2 in and 1 outside.
        assert_eq!(
            (
                h.candidates,
                h.passed,
                h.others_passed_in,
                h.others_passed_out
            ),
            (6, 2, 2, 2 * 2 + 1)
        );
    }

    #[test]
    fn posterior_by_hand() {
        let priors = BayesPriors {
            code_correct: 0.5,
            test_correct: 0.5,
            wrong_code_passes_right_test: 0.5,
            wrong_code_passes_wrong_test: 0.25,
        };
        let h = Hypothesis {
            candidates: 3,
            tests: 2,
            cluster: 2,
            passed: 1,
            others_passed_in: 1,
            others_passed_out: 0,
        };
        // 2 ln .5 + 1 ln .5 + 1 ln .5 + 1 ln .5 + 1 ln .5 + 0 ln .5 + 0 ln .25 + 1 ln .75
        let expected = 6.0 * 0.5f64.ln() + 0.75f64.ln();
        assert!((h.log_posterior(&priors) - expected).abs() < 1e-12);
    }

    #[test]
    fn the_cluster_whose_tests_others_also_pass_is_likelier() {
        // Two clusters of 2: A passes tests {0, 1, 2}, B passes {3, 4, 5}; 4 other candidates
        // pass {0, 1}. Under A those 8 passes are wrong candidates passing right tests (p); under
        // B they, and A's 6, are wrong candidates passing wrong tests (q, rarer): A is likelier,
        // by 8 ln(p / (1 − p)) + 8 ln((1 − q) / q).
        let (a, b, others) = (sig(6, 0b000111), sig(6, 0b111000), sig(6, 0b000011));
        let all = [(&a, 2), (&b, 2), (&others, 4)];
        let priors = BayesPriors::default();
        let score_a = Hypothesis::of(&a, 2, all).unwrap().log_posterior(&priors);
        let score_b = Hypothesis::of(&b, 2, all).unwrap().log_posterior(&priors);
        let by_hand = 8.0 * (0.6f64 / 0.4).ln() + 8.0 * (0.85f64 / 0.15).ln();
        assert!(score_a > score_b, "{score_a} vs {score_b}");
        assert!((score_a - score_b - by_hand).abs() < 1e-9);
    }

    #[test]
    fn output_signatures_have_no_hypothesis() {
        let out = Signature::Output {
            cells: vec![1, 2],
            passed: 1,
        };
        assert_eq!(Hypothesis::of(&out, 1, [(&out, 1)]), None);
    }

    #[test]
    fn priors_must_be_open_probabilities() {
        assert_eq!(BayesPriors::default().out_of_range(), None);
        let bad = BayesPriors {
            test_correct: 1.0,
            ..Default::default()
        };
        assert_eq!(bad.out_of_range(), Some(("test_correct", 1.0)));
    }
}
