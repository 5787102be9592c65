//! The records that flow between the IPC stages, and their stable content-derived ids.
//!
//! Every record carries the id of the problem it belongs to, so the dataflow can route (exchange)
//! everything by problem id. Ids are [`StableHasher`] digests of a
//! domain tag plus the record's defining content:
//!
//! | id | derived from |
//! |---|---|
//! | [`ProblemId`] | `"problem"`, title, description, signature |
//! | [`TestId`] | `"test"`, problem id, test kind, test code |
//! | [`CandidateId`] | `"candidate"`, problem id, sample index, code |
//!
//! The sample index is part of a candidate's id because two samples with identical code are still
//! two votes for their cluster. Stages that the model may fail to follow produce a [`Rejection`]
//! instead of a record; rejections are data, counted by [`RejectReason`] in the run summary.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::stable_hash::StableHasher;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            /// Sixteen lower-case hex digits, the form used in artifacts and logs.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:016x}", self.0)
            }
        }
    };
}

id_type!(
    /// Stable id of a [`GeneratedProblem`].
    ProblemId
);
id_type!(
    /// Stable id of a [`GeneratedTest`].
    TestId
);
id_type!(
    /// Stable id of a [`Candidate`].
    CandidateId
);

/// The paper's task types; every problem request names one, and problems keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Basic algorithms and data structures.
    BasicAlgorithms,
    /// Tasks stated as natural-language instructions.
    NaturalLanguage,
    /// Standard-library tool use.
    StandardLibrary,
    /// Competitive-programming style problems.
    CompetitiveProgramming,
    /// Algorithms drawn from other domains (science, finance, text, ...).
    MultiDomain,
}

impl Category {
    /// All categories, in a fixed order (used to spread seeds over task types).
    pub const ALL: [Category; 5] = [
        Category::BasicAlgorithms,
        Category::NaturalLanguage,
        Category::StandardLibrary,
        Category::CompetitiveProgramming,
        Category::MultiDomain,
    ];

    /// The snake_case name used in prompts, TOML and artifacts.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::BasicAlgorithms => "basic_algorithms",
            Category::NaturalLanguage => "natural_language",
            Category::StandardLibrary => "standard_library",
            Category::CompetitiveProgramming => "competitive_programming",
            Category::MultiDomain => "multi_domain",
        }
    }
}

/// A problem written by the model (stage 1, `<PROBLEM_START> ... <PROBLEM_END>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedProblem {
    /// Content-derived id; see [`GeneratedProblem::derive_id`].
    pub id: ProblemId,
    /// Requested task type.
    pub category: Category,
    /// Seed of the generation request that produced it.
    pub seed: u64,
    /// Short title.
    pub title: String,
    /// Full statement.
    pub description: String,
    /// Typed Python function signature, e.g. `def two_sum(nums: list[int], target: int) -> list[int]`.
    pub signature: String,
    /// One worked example.
    pub example: String,
    /// A hint for the solver.
    pub hint: String,
}

impl GeneratedProblem {
    /// The id of a problem with this title, description and signature.
    pub fn derive_id(title: &str, description: &str, signature: &str) -> ProblemId {
        let mut hasher = StableHasher::with_domain("problem");
        hasher
            .write_str(title)
            .write_str(description)
            .write_str(signature);
        ProblemId(hasher.finish())
    }
}

/// The Quality Oracle's verdict on a problem (stage 2, `<RATING_START> ... <RATING_END>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rating {
    /// The rated problem.
    pub problem_id: ProblemId,
    /// `Problem Quality Score: X`; problems below the configured threshold are dropped.
    pub score: f64,
    /// Difficulty label as written by the model (free text, e.g. `easy`).
    pub difficulty: String,
    /// The rater's summary.
    pub summary: String,
}

/// The Interface Synthesizer's function stub (stage 3, `<SKELETON_START> ... <SKELETON_END>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skeleton {
    /// The problem it belongs to.
    pub problem_id: ProblemId,
    /// Name of the function that tests call and candidates must define.
    pub function_name: String,
    /// Number of parameters of that function (tests are arity-checked against it).
    pub arity: u32,
    /// The stub: imports, signature and an Args/Returns docstring.
    pub code: String,
}

/// How a test exercises a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestKind {
    /// An `assert f(...) == expected` statement: passes when no exception is raised.
    Assert,
    /// A bare call `f(...)`: passes when it returns; its returned value (hashed) is the output.
    Call,
}

/// One test case of a problem (stage 4).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GeneratedTest {
    /// Content-derived id; see [`GeneratedTest::derive_id`].
    pub id: TestId,
    /// The problem it tests.
    pub problem_id: ProblemId,
    /// Assert or call.
    pub kind: TestKind,
    /// The Python source of the test (one statement or expression).
    pub code: String,
}

impl GeneratedTest {
    /// The id of the test `code` of kind `kind` for problem `problem_id`.
    pub fn derive_id(problem_id: ProblemId, kind: TestKind, code: &str) -> TestId {
        let mut hasher = StableHasher::with_domain("test");
        hasher
            .write_u64(problem_id.0)
            .write_u64(kind as u64)
            .write_str(code);
        TestId(hasher.finish())
    }

    /// Builds a test case with its derived id.
    pub fn new(problem_id: ProblemId, kind: TestKind, code: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            id: Self::derive_id(problem_id, kind, &code),
            problem_id,
            kind,
            code,
        }
    }
}

/// The model's per-token log-probabilities of a completion, summarised to what selection needs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct LogprobSummary {
    /// Number of completion tokens.
    pub tokens: u32,
    /// Sum of the natural-log probabilities of those tokens (≤ 0).
    pub sum_logprob: f64,
}

impl LogprobSummary {
    /// Adds one token's log-probability.
    pub fn push(&mut self, logprob: f64) {
        self.tokens += 1;
        self.sum_logprob += logprob;
    }

    /// f(r) = exp(−mean log p): the completion's perplexity, lower is more fluent. An empty
    /// completion (no tokens) has perplexity +∞, so it loses every fluency tie-break.
    pub fn perplexity(&self) -> Perplexity {
        if self.tokens == 0 {
            return Perplexity::new(f64::INFINITY);
        }
        Perplexity::new((-self.sum_logprob / f64::from(self.tokens)).exp())
    }
}

impl FromIterator<f64> for LogprobSummary {
    /// The summary of a completion's per-token log-probabilities.
    fn from_iter<I: IntoIterator<Item = f64>>(logprobs: I) -> Self {
        let mut summary = LogprobSummary::default();
        for logprob in logprobs {
            summary.push(logprob);
        }
        summary
    }
}

/// A perplexity value with a total order, so it can live in differential collections and decide
/// ties deterministically. NaN is mapped to +∞ at construction (it can only come from a broken
/// backend and must never win a tie-break).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Perplexity(f64);

impl Perplexity {
    /// Wraps `value`; NaN becomes +∞.
    pub fn new(value: f64) -> Self {
        Self(if value.is_nan() { f64::INFINITY } else { value })
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Perplexity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Perplexity {}
impl PartialOrd for Perplexity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Perplexity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl Hash for Perplexity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

/// A candidate solution sampled from the model (stage 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Content-derived id; see [`Candidate::derive_id`].
    pub id: CandidateId,
    /// The problem it solves.
    pub problem_id: ProblemId,
    /// Index of the sample among the problem's n samples (0-based, unique per problem).
    pub sample_index: u32,
    /// The sampling round (timely time) that produced it.
    pub round: u64,
    /// The extracted Python code.
    pub code: String,
    /// Log-probabilities of the completion's tokens.
    pub logprobs: LogprobSummary,
}

impl Candidate {
    /// The id of sample `sample_index` with `code` for problem `problem_id`.
    pub fn derive_id(problem_id: ProblemId, sample_index: u32, code: &str) -> CandidateId {
        let mut hasher = StableHasher::with_domain("candidate");
        hasher
            .write_u64(problem_id.0)
            .write_u64(u64::from(sample_index))
            .write_str(code);
        CandidateId(hasher.finish())
    }

    /// f(r), the completion's perplexity.
    pub fn perplexity(&self) -> Perplexity {
        self.logprobs.perplexity()
    }
}

/// The outcome of one candidate on one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The test ran and passed.
    Pass,
    /// The test ran to completion and its assertion failed. The candidate *executed*.
    Fail,
    /// The candidate raised (or could not be loaded): it did not execute.
    Error,
    /// The test hit its time limit: the candidate did not execute.
    Timeout,
    /// Not run: the sandbox stopped the candidate's job once too few of its tests could still
    /// execute for e(r) >= rho ([`min_executed`](crate::signature::min_executed)), so it could
    /// not vote whatever the rest did. It did not execute.
    Skipped,
}

impl Outcome {
    /// Whether the candidate executed on the test (no crash, no timeout): what e(r) counts.
    pub fn executed(self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Fail)
    }

    /// The outcome's name in files: `pass`, `fail`, `error`, `timeout` or `skipped`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Skipped => "skipped",
        }
    }

    /// The outcome named `label` ([`Outcome::label`]), if any.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.label() == label)
    }

    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Pass,
        Outcome::Fail,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Skipped,
    ];
}

/// One test's result within an [`Execution`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TestRun {
    /// The test.
    pub test_id: TestId,
    /// What happened.
    pub outcome: Outcome,
    /// Stable hash of the returned value's `repr`, when the sandbox captured one.
    pub output_hash: Option<u64>,
    /// The verdict was decided inside the candidate's own process (a test form the sandbox
    /// cannot split), so the candidate's code could sway it.
    pub decided_in_child: bool,
    /// The backend's own word where the outcome does not say it all: `error: <kind>` for an
    /// [`Outcome::Error`], `killed` for an [`Outcome::Timeout`] that was killed. Not part of the
    /// signature; kept by the `executions/` checkpoint as `detail`.
    #[serde(default)]
    pub detail: Option<String>,
}

/// A candidate run on its problem's whole test set (stage 5, from the sandbox).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The problem.
    pub problem_id: ProblemId,
    /// The candidate that ran.
    pub candidate_id: CandidateId,
    /// One result per test of the problem, in any order.
    pub results: Vec<TestRun>,
    /// Why the program could not run its tests at all (`<kind>: <message>`: a syntax error, a
    /// crash on import, the job deadline), when it could not. Not kept by checkpoints.
    #[serde(default)]
    pub program_error: Option<String>,
}

/// The stage that rejected a model output or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStage {
    /// Problem generation.
    Problem,
    /// Quality rating.
    Rating,
    /// Skeleton synthesis.
    Skeleton,
    /// Test generation.
    Test,
    /// Solution sampling.
    Candidate,
    /// Sandbox execution.
    Execution,
    /// Consensus selection (a problem that selects nothing).
    Selection,
}

/// Why a record was rejected; the summary counts rejections by this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The response lacks the required tags or fields.
    Unparseable,
    /// The rating is below the configured quality threshold.
    LowQuality,
    /// A duplicate or near-duplicate of an earlier record.
    Duplicate,
    /// The code does not parse as Python.
    SyntaxError,
    /// The skeleton does not define the signature's function.
    MissingFunction,
    /// A test calls the function with the wrong number of arguments.
    ArityMismatch,
    /// No code block could be extracted from the completion.
    NoCode,
    /// The backend failed on the request.
    BackendError,
    /// An execution does not cover the problem's test set exactly.
    IncompleteExecution,
    /// A test uses a name or module it never defines (it raised `NameError` or `ImportError`
    /// on the skeleton, whose body cannot raise either).
    UndefinedName,
    /// A call test whose input another test maps to another expected value.
    Contradictory,
    /// A test line cut off by the completion's token limit.
    Truncated,
    /// A usable test beyond `[tests] per_problem`.
    OverLimit,
    /// A problem none of whose candidates has a complete execution.
    NoCandidates,
    /// A problem none of whose candidates votes (e(r) < ρ, or all tests failed).
    NoVoters,
    /// A problem whose voting clusters are all smaller than τ.
    NoConsensus,
    /// A problem whose winning cluster fails `min_tests` or `min_pass_rate`.
    UntrustedWinner,
}

impl RejectReason {
    /// The snake_case name used in artifacts and the summary table.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unparseable => "unparseable",
            RejectReason::LowQuality => "low_quality",
            RejectReason::Duplicate => "duplicate",
            RejectReason::SyntaxError => "syntax_error",
            RejectReason::MissingFunction => "missing_function",
            RejectReason::ArityMismatch => "arity_mismatch",
            RejectReason::NoCode => "no_code",
            RejectReason::BackendError => "backend_error",
            RejectReason::IncompleteExecution => "incomplete_execution",
            RejectReason::UndefinedName => "undefined_name",
            RejectReason::Contradictory => "contradictory",
            RejectReason::Truncated => "truncated",
            RejectReason::OverLimit => "over_limit",
            RejectReason::NoCandidates => "no_candidates",
            RejectReason::NoVoters => "no_voters",
            RejectReason::NoConsensus => "no_consensus",
            RejectReason::UntrustedWinner => "untrusted_winner",
        }
    }
}

/// A model output or record that a stage refused, kept with its reason and raw text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The rejecting stage.
    pub stage: RecordStage,
    /// The problem concerned, if it is known at that stage.
    pub problem_id: Option<ProblemId>,
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable detail (which tag, which line, which test, ...).
    pub detail: String,
    /// The raw model output or record text, verbatim.
    pub raw: String,
    /// For an [`Unparseable`](RejectReason::Unparseable) response, the parser's own short label
    /// of what was wrong (e.g. `missing_block`); the summary counts rejections by it.
    pub parser_label: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_round_trip() {
        let labels: Vec<&str> = Outcome::ALL
            .into_iter()
            .map(|o| {
                assert_eq!(Outcome::from_label(o.label()), Some(o));
                o.label()
            })
            .collect();
        assert_eq!(labels, ["pass", "fail", "error", "timeout", "skipped"]);
        assert_eq!(Outcome::from_label("killed"), None);
    }

    #[test]
    fn ids_depend_on_defining_content_only() {
        let a = GeneratedProblem::derive_id("t", "d", "def f(x: int) -> int");
        assert_eq!(
            a,
            GeneratedProblem::derive_id("t", "d", "def f(x: int) -> int")
        );
        assert_ne!(
            a,
            GeneratedProblem::derive_id("t", "d", "def f(x: int) -> str")
        );
        let t1 = GeneratedTest::new(a, TestKind::Assert, "assert f(1) == 2");
        let t2 = GeneratedTest::new(a, TestKind::Call, "assert f(1) == 2");
        assert_ne!(t1.id, t2.id, "the kind is part of a test's identity");
        // Two samples with the same code are two candidates (two votes).
        assert_ne!(
            Candidate::derive_id(a, 0, "x"),
            Candidate::derive_id(a, 1, "x")
        );
        assert_eq!(format!("{}", ProblemId(0xab)), "00000000000000ab");
    }

    #[test]
    fn perplexity_is_exp_of_negative_mean_logprob() {
        let mut summary = LogprobSummary::default();
        summary.push(-1.0);
        summary.push(-3.0);
        assert!((summary.perplexity().get() - 2f64.exp()).abs() < 1e-12);
        assert_eq!(LogprobSummary::default().perplexity().get(), f64::INFINITY);
        assert_eq!(Perplexity::new(f64::NAN), Perplexity::new(f64::INFINITY));
        assert!(Perplexity::new(1.5) < Perplexity::new(2.0));
    }

    #[test]
    fn only_pass_and_fail_count_as_executed() {
        assert!(Outcome::Pass.executed() && Outcome::Fail.executed());
        assert!(!Outcome::Error.executed() && !Outcome::Timeout.executed());
        assert!(!Outcome::Skipped.executed());
    }

    #[test]
    fn records_round_trip_through_serde() {
        // Ids serialize as bare integers (`serde(transparent)`), which the artifact writer and the
        // timely exchange rely on.
        let t = GeneratedTest::new(ProblemId(7), TestKind::Call, "f(2)");
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(&format!("\"id\":{}", t.id.0)), "{json}");
        assert!(json.contains("\"kind\":\"call\""), "{json}");
        let back: GeneratedTest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
    }
}
