//! Execution signatures σ(r; T) and the per-candidate [`CandidateVerdict`] that the grouper and selector
//! consume.
//!
//! The ordered test set T of a problem is its test ids in ascending order: a canonical order that
//! does not depend on the order in which the sandbox reported results. Two kinds of signature
//! ([`SignatureKind`]):
//!
//! - **pass/fail** (the paper's): bit i is Exec(r, t_i), 1 when the candidate passed test i.
//! - **output** (AlphaCode style): cell i is a stable hash of what test i observed: the outcome
//!   together with the returned value's hash when the sandbox captured one, or a fixed tag for an
//!   error or a timeout. Equal cells imply equal outcomes, so members of an output cluster also
//!   share their pass count.
//!
//! A signature is **all-fail** when the candidate passed no test; the selector never picks such a
//! cluster (as CodeT does).

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::records::{
    Candidate, CandidateId, Execution, Outcome, Perplexity, ProblemId, TestId, TestRun,
};
use crate::stable_hash::StableHasher;

/// Which signature candidates are clustered by (a pipeline setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureKind {
    /// The vector of pass/fail bits over the ordered test set (the paper's σ).
    #[default]
    PassFail,
    /// The vector of per-test output hashes (outcome + returned value).
    Output,
}

/// An execution signature; equal signatures (of the same problem) form a consensus cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Signature {
    /// Pass/fail bits, bit `i` of word `i / 64` for test `i`.
    PassFail {
        /// Number of tests (bits in use).
        tests: u32,
        /// The bits, little-endian within each word.
        bits: Vec<u64>,
    },
    /// Per-test output cells and the number of passed tests they imply.
    Output {
        /// One stable hash per test, in canonical test order.
        cells: Vec<u64>,
        /// Number of passed tests.
        passed: u32,
    },
}

impl Signature {
    /// Number of tests the candidate passed.
    pub fn passed(&self) -> u32 {
        match self {
            Signature::PassFail { bits, .. } => bits.iter().map(|w| w.count_ones()).sum(),
            Signature::Output { passed, .. } => *passed,
        }
    }

    /// True when no test passed: such clusters are never selected.
    pub fn is_all_fail(&self) -> bool {
        self.passed() == 0
    }

    /// Stable 64-bit digest, for artifacts (the `clusters` stage) and logs.
    pub fn digest(&self) -> u64 {
        let mut hasher = StableHasher::with_domain("signature");
        match self {
            Signature::PassFail { tests, bits } => {
                hasher.write_str("pass_fail").write_u64(u64::from(*tests));
                for word in bits {
                    hasher.write_u64(*word);
                }
            }
            Signature::Output { cells, passed } => {
                hasher.write_str("output").write_u64(u64::from(*passed));
                for cell in cells {
                    hasher.write_u64(*cell);
                }
            }
        }
        hasher.finish()
    }
}

fn output_cell(result: &TestRun) -> u64 {
    let mut hasher = StableHasher::with_domain("output_cell");
    match result.outcome {
        Outcome::Error => hasher.write_str("error"),
        Outcome::Timeout => hasher.write_str("timeout"),
        Outcome::Skipped => hasher.write_str("skipped"),
        outcome @ (Outcome::Pass | Outcome::Fail) => {
            hasher.write_str(if outcome == Outcome::Pass {
                "pass"
            } else {
                "fail"
            });
            match result.output_hash {
                Some(hash) => hasher.write_str("value").write_u64(hash),
                None => hasher.write_str("no_value"),
            }
        }
    };
    hasher.finish()
}

/// Why an execution could not be turned into a verdict.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum VerdictError {
    /// The problem has no tests, so e(r) and σ are undefined.
    #[error("problem {problem} has no tests; a candidate cannot be judged without tests")]
    NoTests {
        /// The problem.
        problem: ProblemId,
    },
    /// The execution and the candidate disagree on which candidate or problem this is.
    #[error(
        "execution of candidate {execution} (problem {execution_problem}) does not belong to candidate {candidate} (problem {candidate_problem})"
    )]
    Mismatch {
        /// Candidate id in the execution record.
        execution: CandidateId,
        /// Problem id in the execution record.
        execution_problem: ProblemId,
        /// Candidate id of the candidate record.
        candidate: CandidateId,
        /// Problem id of the candidate record.
        candidate_problem: ProblemId,
    },
    /// A result names a test outside the problem's test set.
    #[error("execution of candidate {candidate} reports unknown test {test}")]
    UnknownTest {
        /// The candidate.
        candidate: CandidateId,
        /// The unknown test.
        test: TestId,
    },
    /// A test appears twice in the results.
    #[error("execution of candidate {candidate} reports test {test} twice")]
    DuplicateTest {
        /// The candidate.
        candidate: CandidateId,
        /// The repeated test.
        test: TestId,
    },
    /// Some tests of the problem have no result.
    #[error("execution of candidate {candidate} covers {covered} of {expected} tests")]
    MissingTests {
        /// The candidate.
        candidate: CandidateId,
        /// Tests with a result.
        covered: u32,
        /// Tests in the problem's test set.
        expected: u32,
    },
}

/// Everything selection needs to know about one candidate: its signature, e(r) as
/// `executed / tests`, its pass count, and f(r).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CandidateVerdict {
    /// The problem.
    pub problem_id: ProblemId,
    /// The candidate.
    pub candidate_id: CandidateId,
    /// σ(r; T).
    pub signature: Signature,
    /// Tests on which the candidate executed (pass or fail; no error, no timeout).
    pub executed: u32,
    /// Size of the problem's test set.
    pub tests: u32,
    /// Tests passed.
    pub passed: u32,
    /// f(r).
    pub perplexity: Perplexity,
}

impl CandidateVerdict {
    /// Judges `candidate` from its `execution` over the problem's test set `test_ids` (any order;
    /// the canonical order is ascending id). Fails unless the execution covers exactly that set.
    pub fn new(
        candidate: &Candidate,
        execution: &Execution,
        test_ids: &[TestId],
        kind: SignatureKind,
    ) -> Result<Self, VerdictError> {
        if execution.candidate_id != candidate.id || execution.problem_id != candidate.problem_id {
            return Err(VerdictError::Mismatch {
                execution: execution.candidate_id,
                execution_problem: execution.problem_id,
                candidate: candidate.id,
                candidate_problem: candidate.problem_id,
            });
        }
        if test_ids.is_empty() {
            return Err(VerdictError::NoTests {
                problem: candidate.problem_id,
            });
        }
        let mut order: Vec<TestId> = test_ids.to_vec();
        order.sort_unstable();
        order.dedup();
        let position: HashMap<TestId, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let mut slots: Vec<Option<&TestRun>> = vec![None; order.len()];
        for result in &execution.results {
            let Some(&i) = position.get(&result.test_id) else {
                return Err(VerdictError::UnknownTest {
                    candidate: candidate.id,
                    test: result.test_id,
                });
            };
            if slots[i].replace(result).is_some() {
                return Err(VerdictError::DuplicateTest {
                    candidate: candidate.id,
                    test: result.test_id,
                });
            }
        }
        let covered = slots.iter().filter(|s| s.is_some()).count();
        if covered != order.len() {
            return Err(VerdictError::MissingTests {
                candidate: candidate.id,
                covered: covered as u32,
                expected: order.len() as u32,
            });
        }
        let results: Vec<&TestRun> = slots.into_iter().flatten().collect();
        let passed = results
            .iter()
            .filter(|r| r.outcome == Outcome::Pass)
            .count() as u32;
        let executed = results.iter().filter(|r| r.outcome.executed()).count() as u32;
        let signature = match kind {
            SignatureKind::PassFail => {
                let mut bits = vec![0u64; results.len().div_ceil(64)];
                for (i, r) in results.iter().enumerate() {
                    if r.outcome == Outcome::Pass {
                        bits[i / 64] |= 1 << (i % 64);
                    }
                }
                Signature::PassFail {
                    tests: results.len() as u32,
                    bits,
                }
            }
            SignatureKind::Output => Signature::Output {
                cells: results.iter().map(|r| output_cell(r)).collect(),
                passed,
            },
        };
        Ok(Self {
            problem_id: candidate.problem_id,
            candidate_id: candidate.id,
            signature,
            executed,
            tests: results.len() as u32,
            passed,
            perplexity: candidate.perplexity(),
        })
    }

    /// e(r) as a float, for reports.
    pub fn execution_rate(&self) -> f64 {
        f64::from(self.executed) / f64::from(self.tests.max(1))
    }

    /// Whether e(r) ≥ ρ. The comparison is `executed ≥ ρ·tests` with a 1e-9 slack, so that
    /// e.g. ρ = 0.8 with 8 of 10 tests executed counts as meeting the threshold despite 0.8 not
    /// being exactly representable.
    pub fn meets_rho(&self, rho: f64) -> bool {
        f64::from(self.executed) >= rho * f64::from(self.tests) - 1e-9
    }

    /// Compares e(r) exactly (as fractions), greater is better.
    pub fn cmp_execution_rate(&self, other: &Self) -> Ordering {
        (u64::from(self.executed) * u64::from(other.tests))
            .cmp(&(u64::from(other.executed) * u64::from(self.tests)))
    }
}

/// The fewest executed tests out of `tests` that meet `rho` under [`CandidateVerdict::meets_rho`]'s
/// rule: below it a candidate cannot vote, so the rest of its tests need not run.
pub fn min_executed(rho: f64, tests: u32) -> u32 {
    (0..=tests)
        .find(|&k| f64::from(k) >= rho * f64::from(tests) - 1e-9)
        .unwrap_or(tests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{GeneratedTest, LogprobSummary, TestKind};

    fn fixture(outcomes: &[(Outcome, Option<u64>)]) -> (Candidate, Execution, Vec<TestId>) {
        let problem = ProblemId(1);
        let tests: Vec<GeneratedTest> = (0..outcomes.len())
            .map(|i| GeneratedTest::new(problem, TestKind::Call, format!("f({i})")))
            .collect();
        let candidate = Candidate {
            id: Candidate::derive_id(problem, 0, "def f(x): return x"),
            problem_id: problem,
            sample_index: 0,
            round: 0,
            code: "def f(x): return x".into(),
            logprobs: LogprobSummary {
                tokens: 4,
                sum_logprob: -2.0,
            },
        };
        // Report results in reverse order: the signature must not depend on reporting order.
        let results = tests
            .iter()
            .zip(outcomes)
            .rev()
            .map(|(t, (outcome, output_hash))| TestRun {
                test_id: t.id,
                outcome: *outcome,
                output_hash: *output_hash,
                decided_in_child: false,
                detail: None,
            })
            .collect();
        let execution = Execution {
            problem_id: problem,
            candidate_id: candidate.id,
            results,
            program_error: None,
        };
        (candidate, execution, tests.iter().map(|t| t.id).collect())
    }

    #[test]
    fn pass_fail_signature_counts_and_canonical_order() {
        use Outcome::*;
        let (c, e, ids) = fixture(&[
            (Pass, None),
            (Fail, None),
            (Error, None),
            (Timeout, None),
            (Pass, None),
        ]);
        let v = CandidateVerdict::new(&c, &e, &ids, SignatureKind::PassFail).unwrap();
        assert_eq!((v.executed, v.tests, v.passed), (3, 5, 2));
        assert_eq!(v.signature.passed(), 2);
        // Shuffling the reported results or the test-id list yields the same signature.
        let mut e2 = e.clone();
        e2.results.rotate_left(2);
        let mut ids2 = ids.clone();
        ids2.reverse();
        let v2 = CandidateVerdict::new(&c, &e2, &ids2, SignatureKind::PassFail).unwrap();
        assert_eq!(v.signature, v2.signature);
        assert!(v.meets_rho(0.6) && !v.meets_rho(0.61));
        assert!((v.perplexity.get() - 0.5f64.exp()).abs() < 1e-12);
    }

    #[test]
    fn min_executed_is_the_threshold_of_meets_rho() {
        for tests in 1..=130u32 {
            for step in 0..=20 {
                let rho = f64::from(step) / 20.0;
                let k = min_executed(rho, tests);
                let meets = |executed: u32| f64::from(executed) >= rho * f64::from(tests) - 1e-9;
                assert!(meets(k), "rho {rho} tests {tests}: {k} must meet");
                assert!(
                    k == 0 || !meets(k - 1),
                    "rho {rho} tests {tests}: {k} is not the least"
                );
            }
        }
    }

    #[test]
    fn rho_boundary_is_inclusive_despite_float_representation() {
        use Outcome::*;
        let mut outcomes = vec![(Pass, None); 8];
        outcomes.extend([(Error, None), (Error, None)]);
        let (c, e, ids) = fixture(&outcomes);
        let v = CandidateVerdict::new(&c, &e, &ids, SignatureKind::PassFail).unwrap();
        assert!(v.meets_rho(0.8));
        assert!(!v.meets_rho(0.81));
    }

    #[test]
    fn output_signature_separates_values_and_error_kinds() {
        use Outcome::*;
        let (c, e, ids) = fixture(&[(Pass, Some(1)), (Pass, Some(2))]);
        let a = CandidateVerdict::new(&c, &e, &ids, SignatureKind::Output).unwrap();
        let (c, e, ids) = fixture(&[(Pass, Some(1)), (Pass, Some(3))]);
        let b = CandidateVerdict::new(&c, &e, &ids, SignatureKind::Output).unwrap();
        assert_ne!(
            a.signature, b.signature,
            "different returned values, different clusters"
        );
        let (c, e, ids) = fixture(&[(Pass, Some(1)), (Pass, Some(3))]);
        let b_pf = CandidateVerdict::new(&c, &e, &ids, SignatureKind::PassFail).unwrap();
        let (c, e, ids) = fixture(&[(Pass, Some(1)), (Pass, Some(2))]);
        let a_pf = CandidateVerdict::new(&c, &e, &ids, SignatureKind::PassFail).unwrap();
        assert_eq!(
            a_pf.signature, b_pf.signature,
            "pass/fail cannot tell them apart"
        );
        let (c, e, ids) = fixture(&[(Error, None), (Timeout, None)]);
        let errs = CandidateVerdict::new(&c, &e, &ids, SignatureKind::Output).unwrap();
        let (c, e, ids) = fixture(&[(Timeout, None), (Error, None)]);
        let errs2 = CandidateVerdict::new(&c, &e, &ids, SignatureKind::Output).unwrap();
        assert_ne!(errs.signature, errs2.signature);
        assert!(errs.signature.is_all_fail() && !a.signature.is_all_fail());
        assert_ne!(a.signature.digest(), b.signature.digest());
    }

    #[test]
    fn incomplete_or_foreign_executions_are_errors() {
        use Outcome::*;
        let (c, e, ids) = fixture(&[(Pass, None), (Pass, None), (Fail, None)]);
        let mut missing = e.clone();
        missing.results.pop();
        assert!(matches!(
            CandidateVerdict::new(&c, &missing, &ids, SignatureKind::PassFail),
            Err(VerdictError::MissingTests {
                covered: 2,
                expected: 3,
                ..
            })
        ));
        let mut dup = e.clone();
        dup.results[0] = dup.results[1].clone();
        assert!(matches!(
            CandidateVerdict::new(&c, &dup, &ids, SignatureKind::PassFail),
            Err(VerdictError::DuplicateTest { .. })
        ));
        let mut unknown = e.clone();
        unknown.results[0].test_id = TestId(12345);
        assert!(matches!(
            CandidateVerdict::new(&c, &unknown, &ids, SignatureKind::PassFail),
            Err(VerdictError::UnknownTest {
                test: TestId(12345),
                ..
            })
        ));
        let mut foreign = e.clone();
        foreign.candidate_id = CandidateId(9);
        assert!(matches!(
            CandidateVerdict::new(&c, &foreign, &ids, SignatureKind::PassFail),
            Err(VerdictError::Mismatch { .. })
        ));
        assert!(matches!(
            CandidateVerdict::new(&c, &e, &[], SignatureKind::PassFail),
            Err(VerdictError::NoTests { .. })
        ));
        let msg = CandidateVerdict::new(&c, &missing, &ids, SignatureKind::PassFail)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("covers 2 of 3 tests"), "{msg}");
    }

    #[test]
    fn more_than_64_tests_use_several_words() {
        let outcomes: Vec<_> = (0..130)
            .map(|i| {
                (
                    if i % 3 == 0 {
                        Outcome::Pass
                    } else {
                        Outcome::Fail
                    },
                    None,
                )
            })
            .collect();
        let (c, e, ids) = fixture(&outcomes);
        let v = CandidateVerdict::new(&c, &e, &ids, SignatureKind::PassFail).unwrap();
        match &v.signature {
            Signature::PassFail { tests, bits } => assert_eq!((*tests, bits.len()), (130, 3)),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(v.passed, 44);
        assert_eq!(v.signature.passed(), 44);
    }
}
