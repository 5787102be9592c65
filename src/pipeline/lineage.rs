//! The run's lineage: every model of the loop (M_0 … M_N), what it was trained from and on, and
//! how it scored. Each [`ModelRecord`] lives in `manifest.json` under its name (`M0`, `M1`, …),
//! next to the `iter-<t>` entries of the iterations, and the run's `summary.json` repeats them.
//!
//! A record is written only once what it describes is complete (the weights are on disk and
//! hashed, the benchmark finished), so a resumed run takes a present record as done.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{Manifest, StoreError};

/// One model of the loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// `M<t>`.
    pub name: String,
    /// Its GGUF file or safetensors folder.
    pub path: PathBuf,
    /// SHA-256 of its weights ([`crate::models::weights_sha256`]).
    pub weights_sha256: String,
    /// How it was made from the previous model (none for M_0, the pipeline's model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained: Option<Training>,
    /// Its benchmark result, when the pipeline has `[eval]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalRecord>,
}

/// How M_{t+1} was trained: M_t fine-tuned on iteration t's shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Training {
    /// The model it started from (`M<t>`).
    pub from: String,
    /// The shards it was trained on (`<run>/iter-<t>/sft`).
    pub data: PathBuf,
    /// SHA-256 over the shards' files, in name order.
    pub data_sha256: String,
    /// The trainer's output folder (`<run>/iter-<t>/train`).
    pub folder: PathBuf,
    /// `built-in (full)`, `built-in (lora)` or `command: …`.
    pub trainer: String,
    /// What the built-in trainer reports (`train.json`); none for an external trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::train::TrainSummary>,
    /// Wall time of the training step, in the run that completed it.
    pub wall_s: f64,
}

/// A model's benchmark result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    pub benchmark: String,
    /// The eval's folder (`<run>/eval/M<t>`).
    pub dir: PathBuf,
    pub problems: usize,
    /// `pass@k` → mean over problems.
    pub pass_at_k: BTreeMap<String, f64>,
    pub wall_s: f64,
}

impl ModelRecord {
    /// The record `name` of the run in `run_dir`, when it has one.
    pub fn load(run_dir: &Path, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let Some(manifest) = Manifest::load(run_dir)? else {
            return Ok(None);
        };
        match manifest.stages.get(name) {
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|source| StoreError::Json {
                    path: run_dir.join(crate::store::manifest::MANIFEST_FILE),
                    source,
                }),
            None => Ok(None),
        }
    }

    /// Writes the record into the run's manifest.
    pub fn save(&self, run_dir: &Path) -> Result<(), StoreError> {
        let mut manifest = Manifest::load(run_dir)?.expect("claimed by this run");
        manifest.stages.insert(
            self.name.clone(),
            serde_json::to_value(self).expect("a model record serializes"),
        );
        manifest.save(run_dir)
    }
}

/// The lineage name of the loop's t-th model.
pub fn model_name(index: u32) -> String {
    format!("M{index}")
}

/// SHA-256 over the files of a folder (not its subfolders), in name order: the identity of an
/// iteration's shards.
pub fn digest_folder(dir: &Path) -> Result<String, StoreError> {
    use sha2::{Digest, Sha256};
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(StoreError::io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        hasher.update(name.unwrap_or_default().as_bytes());
        let mut f = std::fs::File::open(file).map_err(StoreError::io(file))?;
        std::io::copy(&mut f, &mut hasher).map_err(StoreError::io(file))?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        Manifest::claim(dir.path(), "ipc", serde_json::json!({}), "m".into()).unwrap();
        assert_eq!(ModelRecord::load(dir.path(), "M1").unwrap(), None);
        let record = ModelRecord {
            name: model_name(1),
            path: "runs/x/iter-0/train/model".into(),
            weights_sha256: "ab".into(),
            trained: Some(Training {
                from: model_name(0),
                data: "runs/x/iter-0/sft".into(),
                data_sha256: "cd".into(),
                folder: "runs/x/iter-0/train".into(),
                trainer: "built-in (lora)".into(),
                report: None,
                wall_s: 1.5,
            }),
            eval: None,
        };
        record.save(dir.path()).unwrap();
        assert_eq!(
            ModelRecord::load(dir.path(), "M1").unwrap(),
            Some(record.clone())
        );
        // The claim still resumes: records do not change the run's identity.
        let again = Manifest::claim(dir.path(), "ipc", serde_json::json!({}), "m".into()).unwrap();
        assert!(again.resumed());
    }

    #[test]
    fn folder_digest_covers_names_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("part-0.parquet"), b"abc").unwrap();
        let first = digest_folder(dir.path()).unwrap();
        std::fs::write(dir.path().join("part-0.parquet"), b"abd").unwrap();
        let changed = digest_folder(dir.path()).unwrap();
        assert_ne!(first, changed);
        std::fs::rename(
            dir.path().join("part-0.parquet"),
            dir.path().join("part-1.parquet"),
        )
        .unwrap();
        assert_ne!(digest_folder(dir.path()).unwrap(), changed);
    }
}
