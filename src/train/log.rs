//! The per-step training log (`log/` Parquet): loss, learning rate, gradient norm, throughput.

use crate::flat_record;

/// One optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStepRow {
    /// 0-based optimizer step.
    pub step: u64,
    pub epoch: u32,
    /// The learning rate the step used.
    pub lr: f64,
    /// Mean negative log-likelihood per target token over the step's rows.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Packed rows in the step.
    pub rows: u32,
    /// Tokens through the model (forward and backward).
    pub tokens: u64,
    /// Tokens with a label (the loss's denominator).
    pub target_tokens: u64,
    /// Wall time of the step.
    pub seconds: f64,
    pub tokens_per_second: f64,
}

flat_record!(
    TrainStepRow,
    "train_step",
    1,
    [
        step: u64,
        epoch: u32,
        lr: f64,
        loss: f64,
        grad_norm: f64,
        rows: u32,
        tokens: u64,
        target_tokens: u64,
        seconds: f64,
        tokens_per_second: f64,
    ]
);
