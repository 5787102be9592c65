//! Packing tokenized examples into fixed-budget training rows.
//!
//! An [`Example`] is one rendered conversation: its token ids and how many leading tokens are
//! prompt (user turn and template scaffolding), which are masked out of the labels with
//! [`IGNORE_INDEX`] so the loss covers only the assistant's answer. [`pack`] places examples into
//! rows of at most `max_length` tokens with first-fit-decreasing (deterministic: ties broken by
//! the example's source id), restarting `position_ids` at 0 for each example so trainers that
//! support packed attention (varlen / position-reset) keep examples independent. An example that
//! does not fit alone is never truncated (a cut-off solution is wrong training data); it is
//! returned as oversized so the sink can count it.

/// The label value trainers ignore (PyTorch's `CrossEntropyLoss` default).
pub const IGNORE_INDEX: i64 = -100;

/// One tokenized conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Stable id of the selection it came from.
    pub problem_id: u64,
    pub input_ids: Vec<u32>,
    /// Leading tokens that are prompt, not answer.
    pub prompt_len: usize,
}

impl Example {
    /// Labels: the input ids, with prompt positions set to [`IGNORE_INDEX`].
    pub fn labels(&self) -> Vec<i64> {
        self.input_ids
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                if i < self.prompt_len {
                    IGNORE_INDEX
                } else {
                    i64::from(t)
                }
            })
            .collect()
    }
}

/// One packed training row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PackedRow {
    pub input_ids: Vec<u32>,
    pub labels: Vec<i64>,
    pub position_ids: Vec<u32>,
    /// The examples in this row, in order.
    pub problem_ids: Vec<u64>,
    /// Start offset of each example in the row.
    pub offsets: Vec<u32>,
}

impl PackedRow {
    /// Each example in the row: its source id and the range of its tokens (into `input_ids`,
    /// `labels` and `position_ids`).
    pub fn spans(&self) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + '_ {
        let ends = self
            .offsets
            .iter()
            .skip(1)
            .map(|&o| o as usize)
            .chain([self.input_ids.len()]);
        self.problem_ids
            .iter()
            .zip(&self.offsets)
            .zip(ends)
            .map(|((&source, &start), end)| (source, start as usize..end))
    }

    fn push(&mut self, example: &Example) {
        self.offsets.push(self.input_ids.len() as u32);
        self.problem_ids.push(example.problem_id);
        self.input_ids.extend_from_slice(&example.input_ids);
        self.labels.extend(example.labels());
        self.position_ids.extend(0..example.input_ids.len() as u32);
    }
}

/// The result of packing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packed {
    pub rows: Vec<PackedRow>,
    /// Source ids of examples longer than the row budget (left out, never truncated).
    pub oversized: Vec<u64>,
}

/// Packs `examples` into rows of at most `max_length` tokens (first-fit-decreasing).
pub fn pack(examples: &[Example], max_length: usize) -> Packed {
    let mut order: Vec<&Example> = examples.iter().collect();
    order.sort_by(|a, b| {
        b.input_ids
            .len()
            .cmp(&a.input_ids.len())
            .then(a.problem_id.cmp(&b.problem_id))
    });
    let mut packed = Packed::default();
    for example in order {
        let len = example.input_ids.len();
        if len > max_length || len == 0 {
            packed.oversized.push(example.problem_id);
            continue;
        }
        match packed
            .rows
            .iter_mut()
            .find(|row| row.input_ids.len() + len <= max_length)
        {
            Some(row) => row.push(example),
            None => {
                let mut row = PackedRow::default();
                row.push(example);
                packed.rows.push(row);
            }
        }
    }
    packed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(problem_id: u64, len: usize, prompt_len: usize) -> Example {
        Example {
            problem_id,
            input_ids: (0..len as u32)
                .map(|i| i + 1000 * problem_id as u32)
                .collect(),
            prompt_len,
        }
    }

    #[test]
    fn labels_mask_the_prompt() {
        let e = example(1, 5, 3);
        assert_eq!(
            e.labels(),
            vec![IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 1003, 1004]
        );
    }

    #[test]
    fn packing_respects_budget_and_keeps_every_token() {
        let examples = vec![
            example(1, 6, 2),
            example(2, 5, 1),
            example(3, 4, 4),
            example(4, 3, 0),
            example(5, 11, 2),
        ];
        let packed = pack(&examples, 10);
        assert_eq!(packed.oversized, vec![5]);
        // FFD: 6 → row0, 5 → row1, 4 → row0 (10), 3 → row1 (8).
        assert_eq!(packed.rows.len(), 2);
        assert_eq!(packed.rows[0].problem_ids, vec![1, 3]);
        assert_eq!(packed.rows[1].problem_ids, vec![2, 4]);
        for row in &packed.rows {
            assert!(row.input_ids.len() <= 10);
            assert_eq!(row.labels.len(), row.input_ids.len());
            assert_eq!(row.position_ids.len(), row.input_ids.len());
        }
        // Each example can be cut back out of its row unchanged, with positions from 0.
        let mut cut_out = 0;
        for row in &packed.rows {
            for (source, span) in row.spans() {
                let original = examples.iter().find(|e| e.problem_id == source).unwrap();
                assert_eq!(&row.input_ids[span.clone()], original.input_ids.as_slice());
                assert_eq!(&row.labels[span.clone()], original.labels().as_slice());
                assert_eq!(row.position_ids[span.start], 0);
                assert_eq!(row.position_ids[span.end - 1] as usize, span.len() - 1);
                cut_out += 1;
            }
        }
        assert_eq!(cut_out, 4, "every packed example has a span");
    }

    #[test]
    fn packing_is_deterministic_under_input_order() {
        let mut examples: Vec<Example> = (0..40)
            .map(|i| example(i, 1 + (i as usize * 7) % 13, 1))
            .collect();
        let a = pack(&examples, 32);
        examples.reverse();
        assert_eq!(pack(&examples, 32), a);
    }
}
