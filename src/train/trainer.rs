//! The training loop: SFT shards + base model in, fine-tuned safetensors model out.
//!
//! Output folder (`out`):
//! - `base/`: the base model as safetensors, when it was given as GGUF (exported once);
//! - `checkpoint/`: the latest checkpoint while the run is in progress ([`super::checkpoint`]);
//! - `model/`: the fine-tuned model (LoRA merged), the layout the engine loads;
//! - `log/`: the step log ([`TrainStepRow`]);
//! - `train.json`: the [`TrainSummary`], written last: a run whose `train.json` exists is done,
//!   and running it again returns that summary without training.
//!
//! Each optimizer step takes its rows from the [`StepPlan`], runs them through the model in
//! passes of at most `micro_batch_tokens` tokens, and accumulates the gradients of the summed
//! token loss divided by the step's target-token count — so the update is the one a single pass
//! over all the step's rows would give (the mean loss per labelled token, as Hugging Face
//! trainers compute it when batches are not padded).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::batch::{Batch, StepPlan, check_rows, micro_batches, row_targets};
use super::checkpoint::{self, CheckpointState};
use super::config::TrainConfig;
use super::log::TrainStepRow;
use super::model::TrainModel;
use super::optim::{AdamW, Schedule};
use crate::models::ModelSource;
use crate::progress::{Gauge, Reporter};
use crate::sft::sink::{SftRow, read_sft};
use crate::store::manifest::digest_json;
use crate::store::{Stage, read_json, replace_dir, write_json_atomic};

/// One training run.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// The base model; a GGUF file is exported once to `<out>/base` (see [`super::base_dir`]),
    /// after the data is read and checked.
    pub base: ModelSource,
    /// The SFT folder (`part-*.parquet` shards).
    pub data: PathBuf,
    /// The output folder.
    pub out: PathBuf,
    pub config: TrainConfig,
    /// Seed used when `[train] seed` is unset.
    pub default_seed: u64,
    pub device: Device,
}

/// What a finished run reports (`train.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    /// The fine-tuned model's folder.
    pub model: PathBuf,
    /// SHA-256 of the fine-tuned model's `model.safetensors`.
    pub model_sha256: String,
    /// SHA-256 of the base model's safetensors files.
    pub base_sha256: String,
    pub method: String,
    pub trainable_parameters: usize,
    pub rows: usize,
    pub examples: usize,
    pub epochs: usize,
    pub steps: usize,
    /// Tokens through the model over the whole run (all epochs).
    pub tokens: u64,
    pub target_tokens: u64,
    pub first_loss: f64,
    pub final_loss: f64,
    /// Wall time of the steps this process ran (a resumed run counts only its own).
    pub train_seconds: f64,
    pub tokens_per_second: f64,
    /// The step a resumed run continued from.
    pub resumed_from_step: Option<usize>,
    /// Digest of what decided the weights: the `[train]` settings that change results, the
    /// seed, the data and the base weights. A finished folder is reused only by a run with the
    /// same identity.
    pub identity: String,
}

/// Trains; see the module documentation.
pub fn train(job: &TrainJob, reporter: &dyn Reporter) -> Result<TrainSummary, TrainError> {
    let cfg = &job.config;
    cfg.validate().map_err(|e| TrainError::Config {
        field: e.field,
        why: e.why,
    })?;
    let summary_path = job.out.join("train.json");
    super::keep_freed_memory();
    let rows = read_sft(&job.data)?;
    if rows.is_empty() {
        return Err(TrainError::NoData(job.data.clone()));
    }
    let seed = cfg.seed.unwrap_or(job.default_seed);
    if let ModelSource::Gguf(path) = &job.base
        && !job.out.join("base").join("config.json").is_file()
    {
        reporter.note(&format!(
            "exporting {} to safetensors for training (once)",
            path.display()
        ));
    }
    let base = super::base_dir(&job.base, &job.out)?;
    let base_sha256 = digest_weights(&base)?;
    let identity = digest_json(&serde_json::json!({
        "train": cfg.result_settings(),
        "seed": seed,
        "data": digest_rows(&rows),
        "base": base_sha256,
    }));
    if let Some(done) = read_json::<TrainSummary>(&summary_path)? {
        if done.identity != identity {
            return Err(TrainError::OtherRun(job.out.clone()));
        }
        reporter.note(&format!(
            "{}: already trained ({} steps); remove it to train again",
            job.out.display(),
            done.steps
        ));
        return Ok(done);
    }
    reporter.note(&format!("loading {}", base.display()));
    let mut model = TrainModel::load(&base, &cfg.mode(), &job.device, seed)?;
    model.set_recompute(cfg.gradient_checkpointing);
    check_rows(&rows, model.shape().model.vocab_size)?;
    let plan = StepPlan {
        rows: rows.len(),
        batch_rows: cfg.batch_rows,
        epochs: cfg.epochs,
        seed,
    };
    let total = plan.total_steps();
    let schedule = Schedule {
        peak: cfg.learning_rate,
        warmup_steps: (cfg.warmup_ratio * total as f64).ceil() as usize,
        total_steps: total,
        min_lr_ratio: cfg.min_lr_ratio,
    };
    let mut optimizer =
        AdamW::new(model.trainable(), cfg.adamw()).map_err(TrainError::candle("optimizer"))?;
    let checkpoint_dir = job.out.join("checkpoint");
    let (mut log, start) =
        match checkpoint::restore(&checkpoint_dir, &identity, &model, &mut optimizer)? {
            Some((state, log)) => {
                reporter.note(&format!(
                    "resuming from the checkpoint at step {} of {total}",
                    state.next_step
                ));
                (log, state.next_step)
            }
            None => (Vec::new(), 0),
        };
    reporter.note(&format!(
        "training {} parameters ({:?}) on {} rows: {} epochs, {total} steps of {} rows",
        model.trainable_count(),
        cfg.method,
        rows.len(),
        cfg.epochs,
        cfg.batch_rows
    ));
    let started = Instant::now();
    let mut own_tokens = 0u64;
    for step in start..total {
        let row = train_step(&model, &mut optimizer, &rows, &plan, &schedule, cfg, step)?;
        own_tokens += row.tokens;
        reporter.gauges(&[Gauge {
            name: "steps",
            done: step as u64 + 1,
            total: total as u64,
            message: format!(
                "loss {:.4} lr {:.2e} grad {:.3} {:.0} tok/s",
                row.loss, row.lr, row.grad_norm, row.tokens_per_second
            ),
        }]);
        log.push(row);
        let next = step + 1;
        if next % cfg.checkpoint_every == 0 && next < total {
            let state = CheckpointState {
                next_step: next,
                optimizer_steps: optimizer.steps(),
                identity: identity.clone(),
            };
            checkpoint::save(&checkpoint_dir, &model, &optimizer, &log, &state)?;
        }
    }
    reporter.done();
    let train_seconds = started.elapsed().as_secs_f64();
    let model_dir = job.out.join("model");
    model.save(&base, &model_dir)?;
    replace_dir(
        &job.out.join("log"),
        |tmp: &Path| -> Result<(), TrainError> {
            Stage::<TrainStepRow>::open(tmp, 0)?.commit(&log)?;
            Ok(())
        },
    )?;
    let summary = TrainSummary {
        model_sha256: digest_weights(&model_dir)?,
        model: model_dir,
        base_sha256,
        method: cfg.method.name().to_string(),
        trainable_parameters: model.trainable_count(),
        rows: rows.len(),
        examples: rows.iter().map(|r| r.problem_ids.len()).sum(),
        epochs: cfg.epochs,
        steps: total,
        tokens: log.iter().map(|r| r.tokens).sum(),
        target_tokens: log.iter().map(|r| r.target_tokens).sum(),
        first_loss: log.first().map_or(f64::NAN, |r| r.loss),
        final_loss: log.last().map_or(f64::NAN, |r| r.loss),
        train_seconds,
        tokens_per_second: own_tokens as f64 / train_seconds.max(1e-9),
        resumed_from_step: (start > 0).then_some(start),
        identity,
    };
    write_json_atomic(&summary_path, &summary)?;
    crate::store::remove_dir(&checkpoint_dir)?;
    Ok(summary)
}

/// One optimizer step; returns its log row.
fn train_step(
    model: &TrainModel,
    optimizer: &mut AdamW,
    rows: &[SftRow],
    plan: &StepPlan,
    schedule: &Schedule,
    cfg: &TrainConfig,
    step: usize,
) -> Result<TrainStepRow, TrainError> {
    let started = Instant::now();
    let step_rows = plan.step_rows(step);
    let target_tokens: usize = step_rows.iter().map(|&r| row_targets(&rows[r])).sum();
    let vocab = model.shape().model.vocab_size;
    let params = model.trainable();
    let mut grads: Vec<Option<Tensor>> = vec![None; params.len()];
    let (mut loss_sum, mut tokens) = (0f64, 0u64);
    let err = TrainError::candle("training step");
    for pass in micro_batches(
        &step_rows,
        |r| rows[r].input_ids.len(),
        cfg.micro_batch_tokens,
    ) {
        let members: Vec<(usize, &SftRow)> = pass.iter().map(|&r| (r, &rows[r])).collect();
        let batch = Batch::from_rows(&members, vocab)?;
        tokens += batch.len() as u64;
        if batch.targets.is_empty() {
            continue;
        }
        let loss = model.loss_sum(&batch).map_err(err)?;
        loss_sum += loss
            .to_dtype(DType::F64)
            .and_then(|l| l.to_scalar::<f64>())
            .map_err(err)?;
        let mut store = (loss / target_tokens as f64)
            .and_then(|l| l.backward())
            .map_err(err)?;
        for (acc, g) in grads.iter_mut().zip(model.take_gradients(&mut store)) {
            if let Some(g) = g {
                let g = g.to_dtype(DType::F32).map_err(err)?;
                *acc = Some(match acc.take() {
                    None => g,
                    Some(a) => (a + g).map_err(err)?,
                });
            }
        }
    }
    let grads = model.complete_gradients(grads).map_err(err)?;
    let lr = schedule.lr(step);
    let grad_norm = optimizer.step(params, grads, lr).map_err(err)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(TrainStepRow {
        step: step as u64,
        epoch: (step / plan.steps_per_epoch()) as u32,
        lr,
        loss: loss_sum / target_tokens.max(1) as f64,
        grad_norm,
        rows: step_rows.len() as u32,
        tokens,
        target_tokens: target_tokens as u64,
        seconds,
        tokens_per_second: tokens as f64 / seconds.max(1e-9),
    })
}

/// SHA-256 over the `*.safetensors` files of a model folder, in name order.
pub fn digest_weights(dir: &Path) -> Result<String, TrainError> {
    crate::models::weights_sha256(&ModelSource::Safetensors(dir.to_path_buf())).map_err(|e| {
        TrainError::Model {
            path: dir.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// SHA-256 of the training rows' tokens, labels and boundaries.
fn digest_rows(rows: &[SftRow]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for row in rows {
        for list in [&row.input_ids, &row.position_ids, &row.offsets] {
            hasher.update((list.len() as u64).to_le_bytes());
            for v in list.iter() {
                hasher.update(v.to_le_bytes());
            }
        }
        for l in &row.labels {
            hasher.update(l.to_le_bytes());
        }
    }
    format!("{:x}", hasher.finalize())
}
