//! Prompts and completions exchanged with other engines as JSONL, so that the same prompts can
//! be generated elsewhere (e.g. `scripts/eval_llamacpp.py`) and scored here with the same
//! extraction and sandbox.
//!
//! - [`PromptLine`]: one rendered prompt per problem, written by `ucoder-flow eval --dump-prompts`.
//! - [`CompletionLine`]: one completion per (problem, sample), read by `--completions`;
//!   [`RecordedCompletions`] replays them as a [`Generate`] backend: a request's prompt text
//!   (as recorded, see [`RecordedCompletions::prompt`]) finds its problem, and sample `i` of the
//!   request is the line with `sample_index` `i`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use ucoder_operators::{
    BackendError, Completion, FinishReason, Generate, Generation, GenerationRequest,
    LogprobSummary, Prompt,
};

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
    /// `stop`, `length`, or empty when the engine did not say.
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
        "{path}, line {line}: unknown finish_reason {value:?} (expected \"stop\", \"length\" or \"\")"
    )]
    FinishReason {
        path: PathBuf,
        line: usize,
        value: String,
    },
    #[error("{path}: no completions recorded for this prompt: {start:?}...")]
    UnknownPrompt { path: PathBuf, start: String },
    #[error("{path}: the same prompt is recorded for {tasks}")]
    SharedPrompt { path: PathBuf, tasks: String },
    #[error("{path}: completions are looked up by their prompt text, not by a chat")]
    NotText { path: PathBuf },
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

/// The finish reason a line names (`stop`, `length`, or empty when unknown).
fn finish_reason(label: &str) -> Option<FinishReason> {
    FinishReason::ALL.into_iter().find(|f| f.label() == label)
}

/// Completions read from a JSONL file, replayed as a [`Generate`] backend. Clones share the
/// loaded file.
#[derive(Debug, Clone)]
pub struct RecordedCompletions(Arc<Recorded>);

#[derive(Debug)]
struct Recorded {
    path: PathBuf,
    engine: String,
    by_key: HashMap<(String, u32), CompletionLine>,
    /// The problems whose sample 0 has this prompt.
    by_prompt: HashMap<String, Vec<String>>,
}

impl RecordedCompletions {
    /// Loads `path`, refusing duplicates, unknown finish reasons and empty files.
    pub fn load(path: &Path) -> Result<Self, RecordedError> {
        let lines: Vec<CompletionLine> = read_jsonl(path)?;
        if lines.is_empty() {
            return Err(RecordedError::Empty {
                path: path.to_path_buf(),
            });
        }
        let engine = lines[0].engine.clone();
        let mut by_key = HashMap::new();
        let mut by_prompt: HashMap<String, Vec<String>> = HashMap::new();
        for (i, line) in lines.into_iter().enumerate() {
            if finish_reason(&line.finish_reason).is_none() {
                return Err(RecordedError::FinishReason {
                    path: path.to_path_buf(),
                    line: i + 1,
                    value: line.finish_reason,
                });
            }
            let key = (line.task_id.clone(), line.sample_index);
            if by_key.contains_key(&key) {
                return Err(RecordedError::Duplicate {
                    path: path.to_path_buf(),
                    line: i + 1,
                    task_id: key.0,
                    sample_index: key.1,
                });
            }
            if line.sample_index == 0 {
                by_prompt
                    .entry(line.prompt.clone())
                    .or_default()
                    .push(line.task_id.clone());
            }
            by_key.insert(key, line);
        }
        Ok(RecordedCompletions(Arc::new(Recorded {
            path: path.to_path_buf(),
            engine,
            by_key,
            by_prompt,
        })))
    }

    /// One line naming the file and the engine that made it.
    pub fn describe(&self) -> String {
        format!(
            "recorded completions {} ({})",
            self.0.path.display(),
            self.0.engine
        )
    }

    /// The prompt recorded for `task_id` (its sample 0's), which a request must carry to get the
    /// task's completions. A prompt that was plain text (no chat template) must equal `plain`;
    /// chat prompts were rendered by the model's template when they were dumped, so they are
    /// taken as recorded.
    pub fn prompt(&self, task_id: &str, plain: Option<&str>) -> Result<&str, RecordedError> {
        let line = self.line(task_id, 0)?;
        match plain {
            Some(text) if text != line.prompt => Err(self.mismatch(task_id)),
            _ => Ok(&line.prompt),
        }
    }

    fn mismatch(&self, task_id: &str) -> RecordedError {
        RecordedError::PromptMismatch {
            path: self.0.path.clone(),
            task_id: task_id.to_string(),
        }
    }

    fn line(&self, task_id: &str, sample_index: usize) -> Result<&CompletionLine, RecordedError> {
        self.0
            .by_key
            .get(&(task_id.to_string(), sample_index as u32))
            .ok_or_else(|| RecordedError::Missing {
                path: self.0.path.clone(),
                task_id: task_id.to_string(),
                sample_index,
            })
    }

    /// The `n` completions recorded for `prompt`, in sample order.
    fn replay(&self, prompt: &Prompt, n: usize) -> Result<Vec<Completion>, RecordedError> {
        let path = || self.0.path.clone();
        let Prompt::Text(prompt) = prompt else {
            return Err(RecordedError::NotText { path: path() });
        };
        let task_id = match self.0.by_prompt.get(prompt).map(Vec::as_slice) {
            Some([task_id]) => task_id,
            Some(tasks) => {
                return Err(RecordedError::SharedPrompt {
                    path: path(),
                    tasks: tasks.join(", "),
                });
            }
            None => {
                return Err(RecordedError::UnknownPrompt {
                    path: path(),
                    start: prompt.chars().take(60).collect(),
                });
            }
        };
        (0..n)
            .map(|i| {
                let line = self.line(task_id, i)?;
                if line.prompt != *prompt {
                    return Err(self.mismatch(task_id));
                }
                Ok(Completion {
                    text: line.completion.clone(),
                    logprobs: LogprobSummary {
                        tokens: line.completion_tokens,
                        sum_logprob: line.logprob_sum.unwrap_or(f64::NAN),
                    },
                    finish: finish_reason(&line.finish_reason).expect("checked on load"),
                })
            })
            .collect()
    }
}

impl Generate for RecordedCompletions {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        requests
            .iter()
            .map(|r| {
                self.replay(&r.prompt, r.n as usize)
                    .map_err(|e| BackendError {
                        backend: "recorded".into(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucoder_operators::SamplingParams;

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
        let mut other = line("T/1", 0, "Q");
        other.logprob_sum = None;
        other.finish_reason = String::new();
        write_jsonl(&path, &[line("T/0", 1, "P"), line("T/0", 0, "P"), other]).unwrap();
        let mut rec = RecordedCompletions::load(&path).unwrap();
        assert_eq!(rec.prompt("T/0", None).unwrap(), "P");
        let req = |n, prompt: &str| GenerationRequest {
            prompt: Prompt::Text(prompt.into()),
            n,
            params: SamplingParams {
                max_tokens: 8,
                temperature: 0.0,
                top_p: 1.0,
                top_k: 0,
                seed: 0,
                stop: vec![],
            },
        };
        let mut gens = rec.generate(&[req(2, "P"), req(3, "P"), req(1, "other"), req(1, "Q")]);
        let unreported = gens.pop().unwrap().unwrap();
        assert!(unreported[0].logprobs.sum_logprob.is_nan());
        assert_eq!(unreported[0].finish, FinishReason::Unknown);
        let err = |g: Generation| g.unwrap_err().to_string();
        assert!(err(gens.pop().unwrap()).contains("no completions recorded for this prompt"));
        let missing = err(gens.pop().unwrap());
        assert!(
            missing.contains("T/0 sample 2") && missing.contains("c.jsonl"),
            "{missing}"
        );
        let found = gens.pop().unwrap().unwrap();
        assert_eq!(found[0].text, "completion 0");
        assert_eq!(found[1].text, "completion 1");
        assert_eq!(
            (found[1].logprobs.tokens, found[1].logprobs.sum_logprob),
            (3, -1.5)
        );
        let err = rec.prompt("T/0", Some("Q")).unwrap_err().to_string();
        assert!(err.contains("differs"), "{err}");
        assert_eq!(rec.prompt("T/1", Some("Q")).unwrap(), "Q");
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
        let mut odd = line("T/0", 0, "P");
        odd.finish_reason = "eos".into();
        write_jsonl(&path, &[odd]).unwrap();
        let err = RecordedCompletions::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("\"eos\""), "{err}");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            RecordedCompletions::load(&path),
            Err(RecordedError::Empty { .. })
        ));
    }
}
