//! Training checkpoints: everything a killed run needs to continue as if it had never stopped.
//!
//! A checkpoint is one folder, replaced as a whole ([`crate::store::replace_dir`]), so it is
//! either the previous complete checkpoint or the new complete one:
//! - `trainable.safetensors`: every trainable tensor by name (the whole model in full
//!   fine-tuning, the adapters under LoRA), bit-exact;
//! - `optimizer.safetensors`: AdamW's f32 moments;
//! - `log/`: the step log up to the checkpoint (steps after it are run again on resume);
//! - `state.json`: the next step, the optimizer's update count, and the run's identity.
//!
//! The data order is a function of the seed and the step ([`super::batch::StepPlan`]), so the
//! step is the whole position. The identity digests the `[train]` settings, the seed, the
//! training rows and the base weights: a checkpoint of another run is refused, never mixed in.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::log::TrainStepRow;
use super::model::TrainModel;
use super::optim::AdamW;
use crate::store::{Stage, read_json, replace_dir, write_json_atomic};

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// The first step not yet applied.
    pub next_step: usize,
    /// AdamW updates applied.
    pub optimizer_steps: u64,
    /// Digest of the run's settings, seed, data and base weights.
    pub identity: String,
}

/// Writes a checkpoint to `dir`, replacing the previous one.
pub fn save(
    dir: &Path,
    model: &TrainModel,
    optimizer: &AdamW,
    log: &[TrainStepRow],
    state: &CheckpointState,
) -> Result<(), TrainError> {
    replace_dir(dir, |tmp: &Path| -> Result<(), TrainError> {
        let trainable: HashMap<String, Tensor> = model
            .trainable()
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
            .collect();
        for (file, tensors) in [
            ("trainable.safetensors", trainable),
            (
                "optimizer.safetensors",
                optimizer
                    .moments()
                    .map_err(TrainError::candle("optimizer state"))?,
            ),
        ] {
            let path = tmp.join(file);
            candle_core::safetensors::save(&tensors, &path)
                .map_err(TrainError::candle(&path.display().to_string()))?;
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|source| TrainError::Io { path, source })?;
        }
        Stage::<TrainStepRow>::open(&tmp.join("log"), 0)?.commit(log)?;
        write_json_atomic(&tmp.join("state.json"), state)?;
        Ok(())
    })
}

/// Restores the checkpoint in `dir` into `model` and `optimizer` and returns its state and log,
/// or `None` when there is no checkpoint. A checkpoint of another run is an error.
pub fn restore(
    dir: &Path,
    identity: &str,
    model: &TrainModel,
    optimizer: &mut AdamW,
) -> Result<Option<(CheckpointState, Vec<TrainStepRow>)>, TrainError> {
    let Some(state) = read_json::<CheckpointState>(&dir.join("state.json"))? else {
        return Ok(None);
    };
    let bad = |message: String| TrainError::Checkpoint {
        dir: dir.to_path_buf(),
        message,
    };
    if state.identity != identity {
        return Err(bad(
            "it belongs to another training run (other data, base model, seed or [train] settings); remove the folder to start over, or train into another output folder".into(),
        ));
    }
    let load = |file: &str| {
        candle_core::safetensors::load(dir.join(file), &Device::Cpu)
            .map_err(|e| bad(format!("{file}: {e}")))
    };
    let trainable = load("trainable.safetensors")?;
    for (name, var) in model.trainable() {
        let t = trainable
            .get(name)
            .ok_or_else(|| bad(format!("trainable tensor `{name}` is missing")))?;
        let t = t
            .to_dtype(var.dtype())
            .and_then(|t| t.to_device(var.device()))
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        var.set(&t).map_err(|e| bad(format!("`{name}`: {e}")))?;
    }
    optimizer
        .restore(&load("optimizer.safetensors")?, state.optimizer_steps)
        .map_err(bad)?;
    let log = Stage::<TrainStepRow>::read(&dir.join("log"))?;
    Ok(Some((state, log)))
}
