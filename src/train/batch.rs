//! From SFT shard rows to what one forward pass eats, and which rows each optimizer step takes.
//!
//! A [`Batch`] is one or more packed rows laid end to end as a flat token sequence: every example
//! of every row is one segment (its own causal block, positions from 0 as the shard stores them).
//! Targets are the labelled tokens, each predicted from the position before it *in the same
//! example*: the first token of an example is never a target of the previous example's last
//! token, whatever its label says.
//!
//! [`StepPlan`] fixes the data order: epoch `e` visits the rows in a permutation drawn from
//! `(seed, e)`, cut into optimizer steps of `batch_rows` rows (the last step of an epoch may be
//! shorter). The order is a pure function of those numbers, so a resumed run takes exactly the
//! rows the uninterrupted run would have, and a checkpoint needs to store only the step.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::attention::Segments;
use crate::sft::pack::IGNORE_INDEX;
use crate::sft::sink::SftRow;

/// One forward pass's tokens.
#[derive(Debug, Clone)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    pub position_ids: Vec<u32>,
    pub segments: Segments,
    /// Positions whose logits predict a target.
    pub target_rows: Vec<u32>,
    /// The token each of `target_rows` must predict.
    pub targets: Vec<u32>,
}

/// A shard row that cannot be trained on, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SFT row {row}: {why}")]
pub struct BadRow {
    pub row: usize,
    pub why: String,
}

impl Batch {
    /// The batch of `rows` (numbered by `index` in error messages); token ids must be below
    /// `vocab_size`.
    pub fn from_rows(rows: &[(usize, &SftRow)], vocab_size: usize) -> Result<Batch, BadRow> {
        let mut lengths = Vec::new();
        let mut batch = Batch {
            input_ids: Vec::new(),
            position_ids: Vec::new(),
            segments: Segments::from_lengths([]),
            target_rows: Vec::new(),
            targets: Vec::new(),
        };
        for &(index, row) in rows {
            check_row(row, vocab_size).map_err(|why| BadRow { row: index, why })?;
            let base = batch.input_ids.len();
            for (_, span) in row.spans() {
                lengths.push(span.len());
                for i in span.start..span.end - 1 {
                    let label = row.labels[i + 1];
                    if label != IGNORE_INDEX {
                        batch.target_rows.push((base + i) as u32);
                        batch.targets.push(label as u32);
                    }
                }
            }
            batch.input_ids.extend_from_slice(&row.input_ids);
            batch.position_ids.extend_from_slice(&row.position_ids);
        }
        batch.segments = Segments::from_lengths(lengths);
        Ok(batch)
    }

    /// Tokens in the batch.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether the batch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// Checks every row against the model's vocabulary without building batches.
pub fn check_rows(rows: &[SftRow], vocab_size: usize) -> Result<(), BadRow> {
    rows.iter()
        .enumerate()
        .try_for_each(|(row, r)| check_row(r, vocab_size).map_err(|why| BadRow { row, why }))
}

/// The labelled tokens a row trains on (targets, as [`Batch`] counts them).
pub fn row_targets(row: &SftRow) -> usize {
    row.spans()
        .map(|(_, span)| {
            (span.start + 1..span.end)
                .filter(|&i| row.labels[i] != IGNORE_INDEX)
                .count()
        })
        .sum()
}

fn check_row(row: &SftRow, vocab_size: usize) -> Result<(), String> {
    let n = row.input_ids.len();
    if n == 0 {
        return Err("no tokens".into());
    }
    if row.labels.len() != n || row.position_ids.len() != n {
        return Err(format!(
            "{n} input_ids but {} labels and {} position_ids",
            row.labels.len(),
            row.position_ids.len()
        ));
    }
    if row.offsets.len() != row.problem_ids.len()
        || row.offsets.first() != Some(&0)
        || row.offsets.windows(2).any(|w| w[0] >= w[1])
        || row.offsets.last().is_some_and(|&o| o as usize >= n)
    {
        return Err(format!(
            "offsets {:?} are not increasing example starts from 0 below {n}",
            row.offsets
        ));
    }
    if let Some(&bad) = row.input_ids.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(format!(
            "token id {bad} is outside the model's vocabulary of {vocab_size}"
        ));
    }
    if let Some(&bad) = row
        .labels
        .iter()
        .find(|&&l| l != IGNORE_INDEX && !(0..vocab_size as i64).contains(&l))
    {
        return Err(format!(
            "label {bad} is neither {IGNORE_INDEX} nor a token id"
        ));
    }
    Ok(())
}

/// Which rows each optimizer step trains on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepPlan {
    pub rows: usize,
    pub batch_rows: usize,
    pub epochs: usize,
    pub seed: u64,
}

impl StepPlan {
    /// Optimizer steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.rows.div_ceil(self.batch_rows)
    }

    /// Optimizer steps in the whole run.
    pub fn total_steps(&self) -> usize {
        self.steps_per_epoch() * self.epochs
    }

    /// The order epoch `epoch` visits the rows in.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        let seed = self.seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        order
    }

    /// The rows of optimizer step `step` (0-based).
    pub fn step_rows(&self, step: usize) -> Vec<usize> {
        let per = self.steps_per_epoch();
        let (epoch, within) = (step / per, step % per);
        let order = self.epoch_order(epoch);
        let start = within * self.batch_rows;
        order[start..(start + self.batch_rows).min(self.rows)].to_vec()
    }
}

/// Cuts a step's rows into forward passes of at most `max_tokens` tokens each (a row longer
/// than that is a pass of its own).
pub fn micro_batches(
    rows: &[usize],
    row_len: impl Fn(usize) -> usize,
    max_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut tokens = 0;
    for &r in rows {
        let len = row_len(r);
        match out.last_mut() {
            Some(last) if tokens + len <= max_tokens => {
                last.push(r);
                tokens += len;
            }
            _ => {
                out.push(vec![r]);
                tokens = len;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sft::pack::{Example, pack};

    #[test]
    fn targets_stay_inside_their_example() {
        let examples = vec![
            Example {
                problem_id: 1,
                input_ids: vec![10, 11, 12, 13],
                prompt_len: 2,
            },
            // No prompt: its first token must not become a target of example 1's last token.
            Example {
                problem_id: 2,
                input_ids: vec![20, 21, 22],
                prompt_len: 0,
            },
        ];
        let packed = pack(&examples, 16);
        assert_eq!(packed.rows.len(), 1);
        let row = &packed.rows[0];
        let batch = Batch::from_rows(&[(0, row)], 100).unwrap();
        // Row order (FFD, longest first): [10 11 12 13][20 21 22].
        assert_eq!(batch.target_rows, vec![1, 2, 4, 5]);
        assert_eq!(batch.targets, vec![12, 13, 21, 22]);
        assert_eq!(row_targets(row), 4);
        assert!(!batch.segments.same(3, 4));
        let err = Batch::from_rows(&[(7, row)], 15).unwrap_err();
        assert_eq!(err.row, 7);
        assert!(err.why.contains("vocabulary"), "{err}");
    }

    #[test]
    fn plan_visits_every_row_once_per_epoch_and_is_reproducible() {
        let plan = StepPlan {
            rows: 10,
            batch_rows: 4,
            epochs: 2,
            seed: 3,
        };
        assert_eq!(plan.total_steps(), 6);
        for epoch in 0..2 {
            let mut seen: Vec<usize> = (0..3).flat_map(|s| plan.step_rows(epoch * 3 + s)).collect();
            seen.sort();
            assert_eq!(seen, (0..10).collect::<Vec<_>>());
        }
        assert_eq!(plan.step_rows(2).len(), 2);
        assert_ne!(plan.epoch_order(0), plan.epoch_order(1));
        assert_eq!(plan.clone().step_rows(4), plan.step_rows(4));
        assert_eq!(
            micro_batches(&[0, 1, 2, 3], |r| [5, 5, 9, 1][r], 10),
            vec![vec![0, 1], vec![2, 3]]
        );
    }
}
