//! The SFT sink: selected (problem + skeleton, solution) pairs in, training shards out.
//!
//! Each pair is rendered with the model's own chat template (user: the problem and skeleton;
//! assistant: the selected solution). The prompt part (the template up to and including the
//! assistant header) and the answer part (the solution and the template's end-of-turn) are
//! tokenized separately, exactly as the model sees them at inference time, and the prompt tokens
//! are masked out of the labels. Examples are packed (see [`super::pack`]) and written as Parquet
//! parts of [`SftRow`] (`input_ids`, `labels`, `position_ids`, `problem_ids`, `offsets`); the same
//! pairs as chat messages go to `messages.jsonl` in a sibling folder (`sft_messages/` beside
//! `sft/`, see [`messages_dir`]) for TRL / axolotl users, so that each folder holds one format
//! and reads with one call. Ids are hex text, as in every table. Each folder is built under a
//! temp name and renamed into place, so a folder that exists is complete, and writing it again
//! after a crash starts from scratch instead of appending duplicates.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, ListArray, ListBuilder, PrimitiveBuilder, RecordBatch, UInt32Array,
};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type,
};
use serde::Serialize;

use super::pack::{Example, PackedRow, pack};
use crate::llm::chat::{ChatError, ChatTemplate, ChatTurn};
use crate::llm::tokenizer::{Tokenizer, TokenizerError};
use crate::store::flat::{ColumnCodec, IdListColumn, id_text};
use crate::store::record::Columns;
use crate::store::{Record, Stage, StoreError, replace_dir, write_atomic};

/// One selected pair to train on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftPair {
    /// The problem whose selection this is.
    pub problem_id: u64,
    /// The user turn: problem statement and skeleton.
    pub user: String,
    /// The assistant turn: the selected solution.
    pub assistant: String,
}

/// One packed training row as stored.
pub type SftRow = PackedRow;

/// What the sink wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SftSummary {
    pub examples: usize,
    pub rows: usize,
    pub tokens: usize,
    /// Tokens that carry a label (the answers).
    pub label_tokens: usize,
    /// Problems whose pairs are longer than the row budget (left out, never truncated).
    #[serde(serialize_with = "ids_as_text")]
    pub oversized: Vec<u64>,
    pub shards: Vec<PathBuf>,
}

fn ids_as_text<S: serde::Serializer>(ids: &[u64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|&id| id_text(id)))
}

/// Where [`write_sft`] puts `messages.jsonl` for the shards folder `dir`: the sibling folder
/// `<name>_messages` (`sft/` → `sft_messages/`).
pub fn messages_dir(dir: &Path) -> PathBuf {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    dir.with_file_name(format!("{name}_messages"))
}

/// Why the SFT output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    #[error("rendering the chat template for the selection of problem {id}: {source}", id = id_text(*problem_id))]
    Template {
        problem_id: u64,
        #[source]
        source: ChatError,
    },
    #[error(
        "the selection of problem {id}: the chat template's rendering of the full conversation does not start with its rendering of the prompt, so the prompt cannot be masked; this template is not usable for SFT", id = id_text(*problem_id)
    )]
    TemplateNotPrefix { problem_id: u64 },
    #[error("tokenizing the selection of problem {id}: {source}", id = id_text(*problem_id))]
    Tokenize {
        problem_id: u64,
        #[source]
        source: TokenizerError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Renders and tokenizes one pair into an [`Example`].
pub fn tokenize_pair(
    pair: &SftPair,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
) -> Result<Example, SftError> {
    let problem_id = pair.problem_id;
    let render = |messages: &[ChatTurn], generation_prompt| {
        template
            .render(messages, generation_prompt)
            .map_err(|source| SftError::Template { problem_id, source })
    };
    let user = ChatTurn::user(pair.user.clone());
    let prompt = render(std::slice::from_ref(&user), true)?;
    let full = render(&[user, ChatTurn::assistant(pair.assistant.clone())], false)?;
    let answer = full
        .strip_prefix(&prompt)
        .ok_or(SftError::TemplateNotPrefix { problem_id })?;
    let tokenize = |text: &str, special| {
        tokenizer
            .encode(text, special)
            .map_err(|source| SftError::Tokenize { problem_id, source })
    };
    let mut input_ids = tokenize(&prompt, true)?;
    let prompt_len = input_ids.len();
    input_ids.extend(tokenize(answer, false)?);
    Ok(Example {
        problem_id,
        input_ids,
        prompt_len,
    })
}

/// Writes the SFT output for `pairs` into `dir` (replacing nothing: if `dir` already exists it
/// is complete and is left as it is; the caller decides whether to rebuild).
pub fn write_sft(
    dir: &Path,
    pairs: &[SftPair],
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    max_length: usize,
    shard_rows: usize,
) -> Result<SftSummary, SftError> {
    let examples = pairs
        .iter()
        .map(|p| tokenize_pair(p, tokenizer, template))
        .collect::<Result<Vec<_>, _>>()?;
    let packed = pack(&examples, max_length);

    replace_dir(&messages_dir(dir), |building| {
        let mut jsonl = Vec::new();
        for pair in pairs {
            let line = serde_json::json!({
                "problem_id": id_text(pair.problem_id),
                "messages": [
                    {"role": "user", "content": pair.user},
                    {"role": "assistant", "content": pair.assistant},
                ],
            });
            serde_json::to_writer(&mut jsonl, &line).map_err(|source| StoreError::Json {
                path: building.join("messages.jsonl"),
                source,
            })?;
            jsonl.push(b'\n');
        }
        write_atomic(&building.join("messages.jsonl"), &jsonl)
    })?;
    let shards = replace_dir(dir, |building| {
        let mut stage: Stage<SftRow> = Stage::open(building, 0)?;
        let mut shards = Vec::new();
        for chunk in packed.rows.chunks(shard_rows.max(1)) {
            if let Some(path) = stage.commit(chunk)? {
                shards.push(dir.join(path.file_name().unwrap_or_default()));
            }
        }
        if shards.is_empty() {
            // No selections: one empty shard, so the folder still reads (with its schema).
            let path = stage.commit_table(&[])?;
            shards.push(dir.join(path.file_name().unwrap_or_default()));
        }
        Ok::<_, StoreError>(shards)
    })?;
    let tokens = packed.rows.iter().map(|r| r.input_ids.len()).sum();
    let label_tokens = packed
        .rows
        .iter()
        .map(|r| {
            r.labels
                .iter()
                .filter(|&&l| l != super::pack::IGNORE_INDEX)
                .count()
        })
        .sum();
    Ok(SftSummary {
        examples: examples.len() - packed.oversized.len(),
        rows: packed.rows.len(),
        tokens,
        label_tokens,
        oversized: packed.oversized,
        shards,
    })
}

fn list_field<T: ArrowPrimitiveType>(name: &str) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", T::DATA_TYPE, false))),
        false,
    )
}

fn list_column<T: ArrowPrimitiveType>(
    rows: &[SftRow],
    values: impl Fn(&SftRow) -> Vec<T::Native>,
) -> ArrayRef {
    let mut builder = ListBuilder::new(PrimitiveBuilder::<T>::new())
        .with_field(Arc::new(Field::new("item", T::DATA_TYPE, false)));
    for row in rows {
        builder.values().append_slice(&values(row));
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn read_list<T: ArrowPrimitiveType>(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> Result<Vec<Vec<T::Native>>, StoreError> {
    let column = |problem: &str| StoreError::Column {
        path: path.to_path_buf(),
        column: name.to_string(),
        problem: problem.to_string(),
    };
    let list: &ListArray = batch
        .column_by_name(name)
        .ok_or_else(|| column("missing"))?
        .as_list_opt::<i32>()
        .ok_or_else(|| column("expected a list"))?;
    (0..list.len())
        .map(|i| {
            list.value(i)
                .as_primitive_opt::<T>()
                .map(|a| a.values().to_vec())
                .ok_or_else(|| column("unexpected item type"))
        })
        .collect()
}

impl Record for SftRow {
    const KIND: &'static str = "sft_row";
    const SCHEMA_VERSION: u32 = 2;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            list_field::<UInt32Type>("input_ids"),
            list_field::<Int64Type>("labels"),
            list_field::<UInt32Type>("position_ids"),
            Field::new("problem_ids", IdListColumn::data_type(), false),
            list_field::<UInt32Type>("offsets"),
            Field::new("num_tokens", DataType::UInt32, false),
        ]))
    }

    fn to_batch(rows: &[Self]) -> Result<RecordBatch, arrow::error::ArrowError> {
        let num_tokens: UInt32Array = rows.iter().map(|r| r.input_ids.len() as u32).collect();
        RecordBatch::try_new(
            Self::schema(),
            vec![
                list_column::<UInt32Type>(rows, |r| r.input_ids.clone()),
                list_column::<Int64Type>(rows, |r| r.labels.clone()),
                list_column::<UInt32Type>(rows, |r| r.position_ids.clone()),
                IdListColumn::to_array(rows.iter().map(|r| r.problem_ids.clone()).collect()),
                list_column::<UInt32Type>(rows, |r| r.offsets.clone()),
                Arc::new(num_tokens),
            ],
        )
    }

    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>, StoreError> {
        let input_ids = read_list::<UInt32Type>(batch, "input_ids", path)?;
        let labels = read_list::<Int64Type>(batch, "labels", path)?;
        let position_ids = read_list::<UInt32Type>(batch, "position_ids", path)?;
        let problem_ids = IdListColumn::from_column(&Columns::new(batch, path), "problem_ids")?;
        let offsets = read_list::<UInt32Type>(batch, "offsets", path)?;
        Ok(input_ids
            .into_iter()
            .zip(labels)
            .zip(position_ids)
            .zip(problem_ids)
            .zip(offsets)
            .map(
                |((((input_ids, labels), position_ids), problem_ids), offsets)| PackedRow {
                    input_ids,
                    labels,
                    position_ids,
                    problem_ids,
                    offsets,
                },
            )
            .collect())
    }
}

/// Reads every packed row of an SFT folder written by [`write_sft`].
pub fn read_sft(dir: &Path) -> Result<Vec<SftRow>, StoreError> {
    Stage::<SftRow>::read(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::gguf::GgufModel;
    use crate::sft::pack::IGNORE_INDEX;
    use std::fs;

    fn small_model() -> (Tokenizer, ChatTemplate) {
        let source = crate::models::test_model().unwrap();
        let gguf = GgufModel::open(source.path()).unwrap();
        (
            Tokenizer::from_gguf(gguf.content()).unwrap(),
            ChatTemplate::from_gguf(gguf.content()).unwrap(),
        )
    }

    fn pairs() -> Vec<SftPair> {
        (0..7u64)
            .map(|i| SftPair {
                problem_id: if i == 6 { u64::MAX - 1 } else { 100 + i },
                user: format!("Write `f{i}(x: int) -> int` returning x + {i}.\n\n```python\ndef f{i}(x: int) -> int:\n    pass\n```"),
                assistant: format!("```python\ndef f{i}(x: int) -> int:\n    return x + {i}\n```"),
            })
            .collect()
    }

    #[test]
    fn shards_decode_back_to_the_selected_pairs() {
        let (tokenizer, template) = small_model();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sft");
        let pairs = pairs();
        let summary = write_sft(&out, &pairs, &tokenizer, &template, 256, 2).unwrap();
        assert_eq!(summary.examples, pairs.len());
        assert!(summary.oversized.is_empty());
        assert!(
            summary.rows >= 2,
            "7 examples of ~80 tokens need several 256-token rows"
        );
        assert_eq!(summary.shards.len(), summary.rows.div_ceil(2));
        assert!(summary.shards.iter().all(|s| s.is_file()));
        let mut leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        leftovers.sort();
        assert_eq!(leftovers, ["sft", "sft_messages"], "no temp folder left");

        let rows = read_sft(&out).unwrap();
        assert_eq!(rows.len(), summary.rows);
        let mut seen = Vec::new();
        for row in &rows {
            assert!(row.input_ids.len() <= 256);
            for (source, span) in row.spans() {
                let pair = pairs.iter().find(|p| p.problem_id == source).unwrap();
                let labels = &row.labels[span.clone()];
                let first_label = labels.iter().position(|&l| l != IGNORE_INDEX).unwrap();
                let prompt = tokenizer
                    .decode(&row.input_ids[span.start..span.start + first_label])
                    .unwrap();
                let answer_ids: Vec<u32> =
                    labels[first_label..].iter().map(|&l| l as u32).collect();
                assert_eq!(
                    &answer_ids[..],
                    &row.input_ids[span.start + first_label..span.end]
                );
                let answer = tokenizer.decode(&answer_ids).unwrap();
                assert!(
                    prompt.contains(&pair.user),
                    "prompt part holds the user turn: {prompt:?}"
                );
                assert!(!prompt.contains(&pair.assistant));
                assert!(
                    answer.starts_with(&pair.assistant),
                    "answer part is the solution: {answer:?}"
                );
                assert_eq!(row.position_ids[span.start], 0);
                seen.push(source);
            }
        }
        seen.sort();
        assert_eq!(seen, pairs.iter().map(|p| p.problem_id).collect::<Vec<_>>());

        // The shards folder holds only Parquet; the messages are in their own folder.
        let names: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".parquet")), "{names:?}");
        let messages = fs::read_to_string(messages_dir(&out).join("messages.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = messages
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), pairs.len());
        assert_eq!(
            lines[3]["problem_id"],
            format!("{:016x}", pairs[3].problem_id)
        );
        assert_eq!(lines[3]["messages"][1]["content"], pairs[3].assistant);
        assert_eq!(lines[3]["messages"][0]["role"], "user");
    }

    #[test]
    fn oversized_pairs_are_counted_not_truncated() {
        let (tokenizer, template) = small_model();
        let dir = tempfile::tempdir().unwrap();
        let mut pairs = pairs();
        pairs[2].assistant = "x = 1\n".repeat(200);
        let summary = write_sft(
            &dir.path().join("sft"),
            &pairs,
            &tokenizer,
            &template,
            256,
            8,
        )
        .unwrap();
        assert_eq!(summary.oversized, vec![102]);
        assert_eq!(summary.examples, pairs.len() - 1);
    }
}
