//! Prompts and completions exchanged with other engines as JSONL, so that the same prompts can
//! be generated elsewhere (e.g. `scripts/eval_llamacpp.py`) and scored here with the same
//! extraction and sandbox.
//!
//! - [`PromptLine`]: one rendered prompt per problem, written by `ucoder-flow eval --dump-prompts`.
//! - [`CompletionLine`]: one completion per (problem, sample), read by `--completions`;
//!   [`RecordedCompletions`] replays them as a [`CompletionSource`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backend::{BoxError, CompletionRequest, CompletionSource, SampledCompletion};
use super::prompt::PromptSpec;
use crate::store::{StoreError, write_atomic};

/// One rendered prompt with the decoding settings to use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptLine {
    pub task_id: String,
    /// The full prompt text, chat template applied.
    pub prompt: String,
    pub max_tokens: usize,
    pub temperature: f64,
    pub stop: Vec<String>,
    pub n: usize,
    pub seed: u64,
}

/// One completion produced by some engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionLine {
    pub task_id: String,
    #[serde(default)]
    pub sample_index: u32,
    /// The prompt the completion continues (checked against the dumped prompt).
    pub prompt: String,
    pub completion: String,
    #[serde(default)]
    pub completion_tokens: u32,
    #[serde(default)]
    pub logprob_sum: Option<f64>,
    #[serde(default)]
    pub finish_reason: String,
    /// Which engine produced it (e.g. `llama-cpp-python 0.3.16`).
    #[serde(default)]
    pub engine: String,
}

/// Why a JSONL exchange file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum RecordedError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {source}")]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}, line {line}: a second completion for {task_id} sample {sample_index}")]
    Duplicate {
        path: PathBuf,
        line: usize,
        task_id: String,
        sample_index: u32,
    },
    #[error("{path}: no completions")]
    Empty { path: PathBuf },
    #[error(
        "{path}: no completion for {task_id} sample {sample_index}; regenerate the file for these problems"
    )]
    Missing {
        path: PathBuf,
        task_id: String,
        sample_index: usize,
    },
    #[error(
        "{path}: the prompt recorded for {task_id} differs from the prompt this configuration builds; the completions were made for other prompts"
    )]
    PromptMismatch { path: PathBuf, task_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes `lines` as JSONL to `path` atomically.
pub fn write_jsonl<T: Serialize>(path: &Path, lines: &[T]) -> Result<(), RecordedError> {
    let mut bytes = Vec::new();
    for line in lines {
        serde_json::to_writer(&mut bytes, line).map_err(|source| RecordedError::Line {
            path: path.to_path_buf(),
            line: 0,
            source,
        })?;
        bytes.push(b'\n');
    }
    Ok(write_atomic(path, &bytes)?)
}

/// Reads a JSONL file of `T`, naming the file and line of a bad record.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, RecordedError> {
    let io = |source| RecordedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let reader = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|source| RecordedError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                source,
            })?,
        );
    }
    Ok(out)
}

/// Completions read from a JSONL file, replayed as a [`CompletionSource`].
#[derive(Debug)]
pub struct RecordedCompletions {
    path: PathBuf,
    engine: String,
    by_key: HashMap<(String, u32), CompletionLine>,
}

impl RecordedCompletions {
    /// Loads `path`, refusing duplicates and empty files.
    pub fn load(path: &Path) -> Result<Self, RecordedError> {
        let lines: Vec<CompletionLine> = read_jsonl(path)?;
        if lines.is_empty() {
            return Err(RecordedError::Empty {
                path: path.to_path_buf(),
            });
        }
        let engine = lines[0].engine.clone();
        let mut by_key = HashMap::new();
        for (i, line) in lines.into_iter().enumerate() {
            let key = (line.task_id.clone(), line.sample_index);
            if by_key.contains_key(&key) {
                return Err(RecordedError::Duplicate {
                    path: path.to_path_buf(),
                    line: i + 1,
                    task_id: key.0,
                    sample_index: key.1,
                });
            }
            by_key.insert(key, line);
        }
        Ok(RecordedCompletions {
            path: path.to_path_buf(),
            engine,
            by_key,
        })
    }

    fn line(&self, task_id: &str, sample_index: usize) -> Result<&CompletionLine, RecordedError> {
        self.by_key
            .get(&(task_id.to_string(), sample_index as u32))
            .ok_or_else(|| RecordedError::Missing {
                path: self.path.clone(),
                task_id: task_id.to_string(),
                sample_index,
            })
    }
}

impl CompletionSource for RecordedCompletions {
    fn describe(&self) -> String {
        format!(
            "recorded completions {} ({})",
            self.path.display(),
            self.engine
        )
    }

    /// The recorded prompt. For plain-completion prompts it must equal the problem text; chat
    /// prompts were rendered by `--dump-prompts` with the model's template, so they are taken
    /// as recorded.
    fn render(&self, problem_id: &str, spec: &PromptSpec) -> Result<String, BoxError> {
        let line = self.line(problem_id, 0)?;
        match spec {
            PromptSpec::Completion(text) if *text != line.prompt => {
                Err(RecordedError::PromptMismatch {
                    path: self.path.clone(),
                    task_id: problem_id.to_string(),
                }
                .into())
            }
            _ => Ok(line.prompt.clone()),
        }
    }

    fn generate(
        &mut self,
        request: &CompletionRequest<'_>,
    ) -> Result<Vec<SampledCompletion>, BoxError> {
        (0..request.n)
            .map(|i| {
                let line = self.line(request.problem_id, i)?;
                if line.prompt != request.prompt {
                    return Err(RecordedError::PromptMismatch {
                        path: self.path.clone(),
                        task_id: request.problem_id.to_string(),
                    }
                    .into());
                }
                Ok(SampledCompletion {
                    text: line.completion.clone(),
                    completion_tokens: line.completion_tokens,
                    logprob_sum: line.logprob_sum,
                    finish_reason: line.finish_reason.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::config::DecodingConfig;

    fn line(task: &str, index: u32, prompt: &str) -> CompletionLine {
        CompletionLine {
            task_id: task.into(),
            sample_index: index,
            prompt: prompt.into(),
            completion: format!("completion {index}"),
            completion_tokens: 3,
            logprob_sum: Some(-1.5),
            finish_reason: "stop".into(),
            engine: "test".into(),
        }
    }

    #[test]
    fn replays_in_sample_order_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        write_jsonl(&path, &[line("T/0", 1, "P"), line("T/0", 0, "P")]).unwrap();
        let mut rec = RecordedCompletions::load(&path).unwrap();
        assert_eq!(
            rec.render("T/0", &PromptSpec::ChatUser("x".into()))
                .unwrap(),
            "P"
        );
        let decoding = DecodingConfig::default();
        let req = |n, prompt| CompletionRequest {
            problem_id: "T/0",
            prompt,
            n,
            decoding: &decoding,
            stop: &[],
            seed: 0,
        };
        let gens = rec.generate(&req(2, "P")).unwrap();
        assert_eq!(gens[0].text, "completion 0");
        assert_eq!(gens[1].text, "completion 1");
        let err = rec.generate(&req(3, "P")).unwrap_err().to_string();
        assert!(
            err.contains("T/0 sample 2") && err.contains("c.jsonl"),
            "{err}"
        );
        let err = rec.generate(&req(1, "other")).unwrap_err().to_string();
        assert!(err.contains("differs"), "{err}");
        let err = rec
            .render("T/0", &PromptSpec::Completion("Q".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("differs"), "{err}");
    }

    #[test]
    fn duplicates_and_bad_lines_are_refused_with_location() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.jsonl");
        write_jsonl(&path, &[line("T/0", 0, "P"), line("T/0", 0, "P")]).unwrap();
        let err = RecordedCompletions::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("second completion"),
            "{err}"
        );
        std::fs::write(&path, "{\"task_id\": 1}\n").unwrap();
        let err = RecordedCompletions::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.jsonl, line 1"), "{err}");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            RecordedCompletions::load(&path),
            Err(RecordedError::Empty { .. })
        ));
    }
}
