//! `[train]`: how the built-in trainer fine-tunes a model on the SFT shards.
//!
//! The defaults are the paper's (full fine-tuning, 3 epochs, learning rate 5e-6, effective batch
//! 128). A batch is counted in packed rows (each up to `[sft] max_length` tokens, holding one or
//! more examples); `micro_batch_tokens` bounds the tokens of one forward pass, and gradients are
//! accumulated over the passes of a step, so it trades memory for nothing but speed.

use serde::{Deserialize, Serialize};

use super::lora::{LORA_TARGETS, LoraConfig};
use super::model::TrainMode;
use super::optim::AdamWConfig;
use crate::config::toml_file::Invalid;

/// Which weights train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainMethod {
    /// Every weight (the paper's).
    #[default]
    Full,
    /// LoRA adapters on the `[train.lora]` targets, merged into the weights at the end.
    Lora,
}

impl TrainMethod {
    /// The name the TOML and the command line use.
    pub fn name(self) -> &'static str {
        match self {
            TrainMethod::Full => "full",
            TrainMethod::Lora => "lora",
        }
    }
}

/// The `[train]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default)]
    pub method: TrainMethod,
    #[serde(default)]
    pub lora: LoraConfig,
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Peak learning rate.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Packed rows per optimizer step (the effective batch).
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Most tokens in one forward pass; a step accumulates gradients over its passes.
    #[serde(default = "default_micro_batch_tokens")]
    pub micro_batch_tokens: usize,
    /// Share of the steps spent warming the learning rate up from 0.
    #[serde(default = "default_warmup_ratio")]
    pub warmup_ratio: f64,
    /// The cosine's floor, as a share of the peak learning rate.
    #[serde(default)]
    pub min_lr_ratio: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Gradients are scaled so their global norm is at most this; 0 turns clipping off.
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Layers recompute their activations in backward instead of keeping them (about a third
    /// more compute; the memory of one layer's activations instead of all of them).
    #[serde(default = "default_true")]
    pub gradient_checkpointing: bool,
    /// A checkpoint (weights, optimizer, position) is written every this many steps.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: usize,
    /// Data-order and adapter-init seed (default: the pipeline's seed).
    pub seed: Option<u64>,
    /// CPU threads (default: all cores). Results are bitwise reproducible for a fixed count.
    pub threads: Option<usize>,
    /// Whether a run trains after its last iteration too (M_N from iteration N−1's shards);
    /// `false` ends the run at the last iteration's shards (the last model trained is M_{N−1}).
    #[serde(default = "default_true")]
    pub after_last_iteration: bool,
    /// An external trainer instead of the built-in one: a shell command that a run starts after
    /// each iteration (contract in docs/ARCHITECTURE.md, "External trainers"; an example is
    /// `scripts/train_trl.py`). The built-in trainer's fields other than `seed` are passed to
    /// it as JSON and are the command's to honour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [train] field has a default")
    }
}

fn default_epochs() -> usize {
    3
}
fn default_learning_rate() -> f64 {
    5e-6
}
fn default_batch_rows() -> usize {
    128
}
fn default_micro_batch_tokens() -> usize {
    4096
}
fn default_warmup_ratio() -> f64 {
    0.03
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_true() -> bool {
    true
}
fn default_checkpoint_every() -> usize {
    50
}

impl TrainConfig {
    /// The settings that decide the trained weights, as JSON: all but `threads`,
    /// `checkpoint_every` (how the work is done) and `after_last_iteration` (whether it is).
    pub fn result_settings(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("the [train] section serializes");
        if let Some(map) = value.as_object_mut() {
            map.remove("threads");
            map.remove("checkpoint_every");
            map.remove("after_last_iteration");
        }
        value
    }

    /// Checks every value, naming the first wrong field.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.command.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Invalid::err(
                "train.command",
                "is empty; remove it to use the built-in trainer",
            );
        }
        let positive = |field, n: usize| match n {
            0 => Invalid::err(field, "must be at least 1"),
            _ => Ok(()),
        };
        positive("train.epochs", self.epochs)?;
        positive("train.batch_rows", self.batch_rows)?;
        positive("train.micro_batch_tokens", self.micro_batch_tokens)?;
        positive("train.checkpoint_every", self.checkpoint_every)?;
        if self.threads == Some(0) {
            return Invalid::err("train.threads", "must be at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Invalid::err("train.learning_rate", "must be a positive number");
        }
        for (field, value, top) in [
            ("train.warmup_ratio", self.warmup_ratio, 1.0),
            ("train.min_lr_ratio", self.min_lr_ratio, 1.0),
        ] {
            if !(0.0..=top).contains(&value) {
                return Invalid::err(field, "must be between 0 and 1");
            }
        }
        for (field, value) in [("train.beta1", self.beta1), ("train.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&value) {
                return Invalid::err(field, "must be at least 0 and below 1");
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Invalid::err("train.eps", "must be a positive number");
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Invalid::err("train.weight_decay", "must be at least 0");
        }
        if !(self.max_grad_norm >= 0.0 && self.max_grad_norm.is_finite()) {
            return Invalid::err("train.max_grad_norm", "must be at least 0 (0: no clipping)");
        }
        if self.method == TrainMethod::Lora {
            if self.lora.rank == 0 {
                return Invalid::err("train.lora.rank", "must be at least 1");
            }
            if !(self.lora.alpha > 0.0 && self.lora.alpha.is_finite()) {
                return Invalid::err("train.lora.alpha", "must be a positive number");
            }
            if self.lora.targets.is_empty() {
                return Invalid::err("train.lora.targets", "name at least one projection");
            }
            if let Some(bad) = self
                .lora
                .targets
                .iter()
                .find(|t| !LORA_TARGETS.contains(&t.as_str()))
            {
                return Invalid::err(
                    "train.lora.targets",
                    format!("`{bad}` is not one of {}", LORA_TARGETS.join(", ")),
                );
            }
        }
        Ok(())
    }

    /// The model's trainable weights under this configuration.
    pub fn mode(&self) -> TrainMode {
        match self.method {
            TrainMethod::Full => TrainMode::Full,
            TrainMethod::Lora => TrainMode::Lora(self.lora.clone()),
        }
    }

    /// The optimizer's settings.
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            max_grad_norm: self.max_grad_norm,
        }
    }
}
