//! What a rerank run keeps besides the sample rows: the tests the model wrote for each problem
//! (`generated_tests/`), every sample's run on the kept ones (`generated_runs/`), and the scores
//! (`problems/`, one row per problem; `methods/`, one row per problem and selection method),
//! which are recomputed from the others and replaced whole by every run and `--rescore`.

/// One test the model wrote for a benchmark problem.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedTestRow {
    /// The benchmark's task id.
    pub problem_id: String,
    /// Its place among the problem's parsed, de-duplicated tests.
    pub test_index: u32,
    pub code: String,
    /// Survived the check against the stub (the pipeline's TestCheck).
    pub kept: bool,
    /// Why the check dropped it.
    pub dropped_because: Option<String>,
    /// The benchmark's canonical solution on the test (`pass`, `fail`, `error: ...`): a test
    /// the canonical solution fails has a wrong expected value. Absent without a canonical
    /// solution, or for a dropped test.
    pub canonical: Option<String>,
}

crate::flat_record!(
    GeneratedTestRow,
    "rerank_generated_test",
    1,
    [
        problem_id: String,
        test_index: u32,
        code: String,
        kept: bool,
        dropped_because: Option<String>,
        canonical: Option<String>,
    ]
);

/// One sample on one kept generated test.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedRunRow {
    pub problem_id: String,
    pub sample_index: u32,
    pub test_index: u32,
    /// [`Outcome::label`](ucoder_operators::Outcome::label).
    pub outcome: String,
    /// Hash of the returned value (output signatures).
    pub output_hash: Option<u64>,
    /// What the outcome does not say (`error: NameError`, `killed`).
    pub detail: Option<String>,
}

crate::flat_record!(
    GeneratedRunRow,
    "rerank_generated_run",
    2,
    [
        problem_id: String,
        sample_index: u32,
        test_index: u32,
        outcome: String,
        output_hash: Option<u64> as id,
        detail: Option<String>,
    ]
);

/// One problem's scores under the pipeline's own filter (`[selection]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProblemScoreRow {
    pub problem_id: String,
    pub tests_generated: u32,
    pub tests_kept: u32,
    /// Kept tests the canonical solution passes (absent without one).
    pub tests_right: Option<u32>,
    pub samples: u32,
    /// Samples from which a program was extracted.
    pub samples_with_program: u32,
    /// Samples that pass the benchmark's own tests.
    pub samples_correct: u32,
    pub greedy_correct: bool,
    /// The filter's pick r* (sample index), if any.
    pub pick: Option<u32>,
    pub pick_correct: bool,
    /// |C*|.
    pub pick_cluster_size: Option<u32>,
    /// Why the pick is right or wrong (see [`super::score::Diagnosis`]).
    pub diagnosis: String,
}

crate::flat_record!(
    ProblemScoreRow,
    "rerank_problem_score",
    1,
    [
        problem_id: String,
        tests_generated: u32,
        tests_kept: u32,
        tests_right: Option<u32>,
        samples: u32,
        samples_with_program: u32,
        samples_correct: u32,
        greedy_correct: bool,
        pick: Option<u32>,
        pick_correct: bool,
        pick_cluster_size: Option<u32>,
        diagnosis: String,
    ]
);

/// What one selection method does on one problem.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodScoreRow {
    pub problem_id: String,
    /// [`super::score::Method::name`].
    pub method: String,
    /// The method picked something itself (no fallback).
    pub picked: bool,
    /// The sample picked, when the method names one sample.
    pub sample_index: Option<u32>,
    /// Probability that the answer is correct: 0 or 1 for one pick; the share of correct
    /// samples among those a random method draws from (and of all samples for the fallback).
    pub correct: f64,
}

crate::flat_record!(
    MethodScoreRow,
    "rerank_method_score",
    1,
    [
        problem_id: String,
        method: String,
        picked: bool,
        sample_index: Option<u32>,
        correct: f64,
    ]
);
