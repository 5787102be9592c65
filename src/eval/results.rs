//! What an eval keeps: one [`SampleRecord`] per (problem, sample) as Parquet rows in the
//! `samples/` stage of the run folder, and a [`Summary`] (`summary.json`) with pass@k and the
//! extraction and verdict counts, plus the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    UInt32Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, UInt32Type};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::store::record::{Columns, Record, opt_primitive, opt_str};

use super::pass_at_k::mean_pass_at_k;

/// One generated sample, its extracted program and how it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub problem_id: String,
    pub sample_index: u32,
    /// The prompt text exactly as the model saw it (after the chat template).
    pub prompt: String,
    pub completion: String,
    /// The program that ran; `None` when extraction failed.
    pub program: Option<String>,
    /// `full_function`, `body_appended` or `failed`.
    pub extraction_status: String,
    /// The failure reason, or the repairs made (empty when none).
    pub extraction_detail: String,
    /// Why the program could not run as a whole (syntax error, import-time crash, timeout).
    pub program_error: Option<String>,
    /// One verdict per test, in test order (`pass`, `fail`, `error: ...`, `timeout`), labelled
    /// [`DECIDED_IN_CHILD`] where the candidate's own process decided it.
    pub test_verdicts: Vec<String>,
    /// Extracted, ran, and every test passed.
    pub passed: bool,
    pub completion_tokens: u32,
    /// Sum of the completion tokens' log-probabilities, when the backend reports them.
    pub logprob_sum: Option<f64>,
    /// `stop` (end of turn / stop sequence) or `length` (hit max_tokens), as the backend says.
    pub finish_reason: String,
    /// This sample's share of the generation call.
    pub generation_seconds: f64,
    /// Time to run this program's tests.
    pub check_seconds: f64,
}

/// Column names, shared by the schema, the writer and the reader.
mod col {
    pub const PROBLEM_ID: &str = "problem_id";
    pub const SAMPLE_INDEX: &str = "sample_index";
    pub const PROMPT: &str = "prompt";
    pub const COMPLETION: &str = "completion";
    pub const PROGRAM: &str = "program";
    pub const EXTRACTION_STATUS: &str = "extraction_status";
    pub const EXTRACTION_DETAIL: &str = "extraction_detail";
    pub const PROGRAM_ERROR: &str = "program_error";
    pub const TEST_VERDICTS: &str = "test_verdicts";
    pub const PASSED: &str = "passed";
    pub const COMPLETION_TOKENS: &str = "completion_tokens";
    pub const LOGPROB_SUM: &str = "logprob_sum";
    pub const FINISH_REASON: &str = "finish_reason";
    pub const GENERATION_SECONDS: &str = "generation_seconds";
    pub const CHECK_SECONDS: &str = "check_seconds";
}

fn verdict_list_field() -> Field {
    Field::new("item", DataType::Utf8, true)
}

impl Record for SampleRecord {
    const KIND: &'static str = "eval_sample";
    const SCHEMA_VERSION: u32 = 1;

    fn schema() -> SchemaRef {
        use DataType::*;
        Arc::new(Schema::new(vec![
            Field::new(col::PROBLEM_ID, Utf8, false),
            Field::new(col::SAMPLE_INDEX, UInt32, false),
            Field::new(col::PROMPT, Utf8, false),
            Field::new(col::COMPLETION, Utf8, false),
            Field::new(col::PROGRAM, Utf8, true),
            Field::new(col::EXTRACTION_STATUS, Utf8, false),
            Field::new(col::EXTRACTION_DETAIL, Utf8, false),
            Field::new(col::PROGRAM_ERROR, Utf8, true),
            Field::new(
                col::TEST_VERDICTS,
                List(Arc::new(verdict_list_field())),
                false,
            ),
            Field::new(col::PASSED, Boolean, false),
            Field::new(col::COMPLETION_TOKENS, UInt32, false),
            Field::new(col::LOGPROB_SUM, Float64, true),
            Field::new(col::FINISH_REASON, Utf8, false),
            Field::new(col::GENERATION_SECONDS, Float64, false),
            Field::new(col::CHECK_SECONDS, Float64, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch, arrow::error::ArrowError> {
        let strings = |f: fn(&SampleRecord) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let opt_strings = |f: fn(&SampleRecord) -> Option<&str>| -> ArrayRef {
            Arc::new(StringArray::from_iter(rows.iter().map(f)))
        };
        let mut verdicts =
            ListBuilder::new(StringBuilder::new()).with_field(Arc::new(verdict_list_field()));
        for r in rows {
            for v in &r.test_verdicts {
                verdicts.values().append_value(v);
            }
            verdicts.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            strings(|r| &r.problem_id),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.sample_index),
            )),
            strings(|r| &r.prompt),
            strings(|r| &r.completion),
            opt_strings(|r| r.program.as_deref()),
            strings(|r| &r.extraction_status),
            strings(|r| &r.extraction_detail),
            opt_strings(|r| r.program_error.as_deref()),
            Arc::new(verdicts.finish()),
            Arc::new(BooleanArray::from_iter(rows.iter().map(|r| Some(r.passed)))),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.completion_tokens),
            )),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.logprob_sum))),
            strings(|r| &r.finish_reason),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.generation_seconds),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.check_seconds),
            )),
        ];
        RecordBatch::try_new(Self::schema(), columns)
    }

    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>, StoreError> {
        let c = Columns::new(batch, path);
        let problem_id = c.utf8(col::PROBLEM_ID)?;
        let sample_index = c.primitive::<UInt32Type>(col::SAMPLE_INDEX)?;
        let prompt = c.utf8(col::PROMPT)?;
        let completion = c.utf8(col::COMPLETION)?;
        let program = c.utf8(col::PROGRAM)?;
        let status = c.utf8(col::EXTRACTION_STATUS)?;
        let detail = c.utf8(col::EXTRACTION_DETAIL)?;
        let program_error = c.utf8(col::PROGRAM_ERROR)?;
        let verdicts = c.utf8_lists(col::TEST_VERDICTS)?;
        let passed = c.boolean(col::PASSED)?;
        let tokens = c.primitive::<UInt32Type>(col::COMPLETION_TOKENS)?;
        let logprob = c.primitive::<Float64Type>(col::LOGPROB_SUM)?;
        let finish = c.utf8(col::FINISH_REASON)?;
        let gen_s = c.primitive::<Float64Type>(col::GENERATION_SECONDS)?;
        let check_s = c.primitive::<Float64Type>(col::CHECK_SECONDS)?;
        let mut rows = Vec::with_capacity(batch.num_rows());
        for (i, test_verdicts) in verdicts.into_iter().enumerate() {
            rows.push(SampleRecord {
                problem_id: c.required(col::PROBLEM_ID, i, opt_str(problem_id, i))?,
                sample_index: c.required(col::SAMPLE_INDEX, i, opt_primitive(sample_index, i))?,
                prompt: c.required(col::PROMPT, i, opt_str(prompt, i))?,
                completion: c.required(col::COMPLETION, i, opt_str(completion, i))?,
                program: opt_str(program, i),
                extraction_status: c.required(col::EXTRACTION_STATUS, i, opt_str(status, i))?,
                extraction_detail: opt_str(detail, i).unwrap_or_default(),
                program_error: opt_str(program_error, i),
                test_verdicts,
                passed: c.required(
                    col::PASSED,
                    i,
                    (!arrow::array::Array::is_null(passed, i)).then(|| passed.value(i)),
                )?,
                completion_tokens: c.required(
                    col::COMPLETION_TOKENS,
                    i,
                    opt_primitive(tokens, i),
                )?,
                logprob_sum: opt_primitive(logprob, i),
                finish_reason: opt_str(finish, i).unwrap_or_default(),
                generation_seconds: opt_primitive(gen_s, i).unwrap_or(0.0),
                check_seconds: opt_primitive(check_s, i).unwrap_or(0.0),
            });
        }
        Ok(rows)
    }
}

/// The run's figures, written to `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub model: String,
    pub benchmark: String,
    pub prompt_style: String,
    pub decoding: serde_json::Value,
    /// Problems with all their samples recorded.
    pub problems: usize,
    /// Problems the configuration asks for.
    pub problems_requested: usize,
    pub samples: usize,
    /// `pass@k` → mean over problems (only for k ≤ n).
    pub pass_at_k: BTreeMap<String, f64>,
    pub samples_passed: usize,
    /// Extraction status → samples.
    pub extraction: BTreeMap<String, usize>,
    /// Extraction failure reason → samples.
    pub extraction_failures: BTreeMap<String, usize>,
    /// Samples whose program did not run as a whole (syntax error, crash at import, timeout).
    pub program_errors: usize,
    /// Samples that stopped at max_tokens.
    pub truncated: usize,
    /// Test verdicts decided inside the candidate's process (labelled
    /// [`DECIDED_IN_CHILD`] in `test_verdicts`): forms the sandbox cannot split.
    #[serde(default)]
    pub tests_decided_in_child: usize,
    pub completion_tokens: u64,
    pub generation_seconds: f64,
    pub check_seconds: f64,
    /// Wall time of the runs that produced the folder (summed over resumed runs).
    pub wall_seconds: f64,
    pub complete: bool,
}

/// The label a verdict string carries when the verdict was decided inside the candidate's own
/// process (`pass (decided in child)`): the sandbox could not split that test's form, so the
/// candidate's code could sway it.
pub const DECIDED_IN_CHILD: &str = " (decided in child)";

impl Summary {
    /// Figures over `records` (every committed sample), for `requested` problems.
    pub fn compute(
        records: &[SampleRecord],
        requested: usize,
        ks: &[usize],
        header: SummaryHeader,
        wall_seconds: f64,
    ) -> Summary {
        let mut per_problem: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut extraction = BTreeMap::new();
        let mut failures = BTreeMap::new();
        for r in records {
            let e = per_problem.entry(&r.problem_id).or_default();
            e.0 += 1;
            e.1 += u64::from(r.passed);
            *extraction.entry(r.extraction_status.clone()).or_insert(0) += 1;
            if r.program.is_none() {
                *failures.entry(r.extraction_detail.clone()).or_insert(0) += 1;
            }
        }
        let counts: Vec<(u64, u64)> = per_problem.values().copied().collect();
        let pass_at_k = ks
            .iter()
            .filter_map(|&k| mean_pass_at_k(&counts, k as u64).map(|v| (format!("pass@{k}"), v)))
            .collect();
        Summary {
            model: header.model,
            benchmark: header.benchmark,
            prompt_style: header.prompt_style,
            decoding: header.decoding,
            problems: per_problem.len(),
            problems_requested: requested,
            samples: records.len(),
            pass_at_k,
            samples_passed: records.iter().filter(|r| r.passed).count(),
            extraction,
            extraction_failures: failures,
            program_errors: records.iter().filter(|r| r.program_error.is_some()).count(),
            truncated: records
                .iter()
                .filter(|r| r.finish_reason == "length")
                .count(),
            tests_decided_in_child: records
                .iter()
                .flat_map(|r| &r.test_verdicts)
                .filter(|v| v.ends_with(DECIDED_IN_CHILD))
                .count(),
            completion_tokens: records.iter().map(|r| u64::from(r.completion_tokens)).sum(),
            generation_seconds: records.iter().map(|r| r.generation_seconds).sum(),
            check_seconds: records.iter().map(|r| r.check_seconds).sum(),
            wall_seconds,
            complete: per_problem.len() == requested,
        }
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let line = "-".repeat(58);
        let _ = writeln!(t, "{line}");
        let _ = writeln!(t, "{:<28} {}", "model", self.model);
        let _ = writeln!(
            t,
            "{:<28} {} ({} prompt)",
            "benchmark", self.benchmark, self.prompt_style
        );
        let _ = writeln!(
            t,
            "{:<28} {}/{}",
            "problems", self.problems, self.problems_requested
        );
        let _ = writeln!(t, "{:<28} {}", "samples", self.samples);
        for (k, v) in &self.pass_at_k {
            let _ = writeln!(t, "{k:<28} {:.2}%", 100.0 * v);
        }
        let _ = writeln!(t, "{:<28} {}", "samples passed", self.samples_passed);
        let _ = writeln!(
            t,
            "{:<28} {}",
            "tests decided in child", self.tests_decided_in_child
        );
        for (status, n) in &self.extraction {
            let _ = writeln!(t, "{:<28} {n}", format!("extraction: {status}"));
        }
        let _ = writeln!(t, "{:<28} {}", "program errors", self.program_errors);
        let _ = writeln!(t, "{:<28} {}", "cut at max_tokens", self.truncated);
        // Replayed completions take no generation time; a rate would be meaningless.
        let rate = if self.generation_seconds >= 0.5 {
            format!(
                " ({:.1} tok/s)",
                self.completion_tokens as f64 / self.generation_seconds
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "{:<28} {}{rate}",
            "completion tokens", self.completion_tokens
        );
        let _ = writeln!(
            t,
            "{:<28} gen {:.1}s, check {:.1}s, wall {:.1}s",
            "time", self.generation_seconds, self.check_seconds, self.wall_seconds
        );
        let _ = write!(t, "{line}");
        t
    }
}

/// The descriptive part of a summary.
#[derive(Debug, Clone)]
pub struct SummaryHeader {
    pub model: String,
    pub benchmark: String,
    pub prompt_style: String,
    pub decoding: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Stage;

    pub(crate) fn record(problem: &str, index: u32, passed: bool) -> SampleRecord {
        SampleRecord {
            problem_id: problem.into(),
            sample_index: index,
            prompt: "<|im_start|>user\nP<|im_end|>\n".into(),
            completion: "```python\ndef f():\n    return 1\n```".into(),
            program: (index != 2).then(|| "def f():\n    return 1\n".into()),
            extraction_status: if index == 2 {
                "failed".into()
            } else {
                "full_function".into()
            },
            extraction_detail: if index == 2 {
                "no code in the response".into()
            } else {
                String::new()
            },
            program_error: None,
            test_verdicts: if passed {
                vec!["pass".into(); 3]
            } else {
                vec!["pass".into(), "fail".into()]
            },
            passed,
            completion_tokens: 12,
            logprob_sum: (index != 1).then_some(-3.25),
            finish_reason: "stop".into(),
            generation_seconds: 0.5,
            check_seconds: 0.01,
        }
    }

    #[test]
    fn records_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::<SampleRecord>::open(dir.path(), 0).unwrap();
        let rows = vec![
            record("HumanEval/0", 0, true),
            record("HumanEval/0", 1, false),
            record("HumanEval/1", 2, false),
        ];
        stage.commit(&rows).unwrap();
        assert_eq!(stage.read_all().unwrap(), rows);
    }

    #[test]
    fn verdicts_decided_in_the_child_are_counted() {
        let mut labelled = record("A", 0, true);
        labelled.test_verdicts[1] = format!("pass{DECIDED_IN_CHILD}");
        labelled.test_verdicts[2] = format!("fail{DECIDED_IN_CHILD}");
        let header = SummaryHeader {
            model: "m".into(),
            benchmark: "humaneval".into(),
            prompt_style: "chat".into(),
            decoding: serde_json::json!({}),
        };
        let s = Summary::compute(&[labelled, record("B", 0, true)], 2, &[1], header, 1.0);
        assert_eq!(s.tests_decided_in_child, 2);
        assert!(s.table().contains("tests decided in child"));
    }

    #[test]
    fn summary_counts_and_pass_at_k() {
        let rows = vec![
            record("A", 0, true),
            record("A", 1, false),
            record("B", 0, false),
            record("B", 1, false),
        ];
        let header = SummaryHeader {
            model: "m".into(),
            benchmark: "humaneval".into(),
            prompt_style: "chat".into(),
            decoding: serde_json::json!({}),
        };
        let s = Summary::compute(&rows, 3, &[1, 2], header, 9.0);
        assert_eq!(s.pass_at_k["pass@1"], 0.25);
        assert_eq!(s.pass_at_k["pass@2"], 0.5);
        assert_eq!(
            (s.problems, s.samples, s.samples_passed, s.complete),
            (2, 4, 1, false)
        );
        assert!(s.table().contains("pass@1") && s.table().contains("25.00%"));
    }
}
