//! SftSink: every selection change arrives on worker 0; once the input is complete, the final
//! selections are rendered with the model's chat template (the solution prompt as the user
//! turn, the selected code fenced as the answer), tokenized, packed and written as the SFT
//! shards and `messages.jsonl`.
//!
//! Contract: writes `iter-<t>/sft/` exactly once, on worker 0, from the final selections (those
//! with a positive count); collects the final selections and what was written. A write failure
//! stops the run.

use std::path::PathBuf;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::selector::Selected;
use crate::llm::ModelText;
use crate::pipeline::context::{Collector, Failure};
use crate::sft::sink::{SftPair, SftSummary, write_sft};

/// Where and how the SFT shards are written.
pub struct SftSink {
    /// The tokenizer and chat template that render the examples.
    pub text: Arc<ModelText>,
    /// `iter-<t>/sft`.
    pub dir: PathBuf,
    pub max_length: usize,
    pub shard_rows: usize,
}

impl SftSink {
    /// Writes the shards for the final `selections`.
    pub fn write(&self, selections: &[Selected]) -> Result<SftSummary, String> {
        let template = self
            .text
            .chat_template()
            .ok_or_else(|| "the model has no chat template".to_string())?;
        let pairs: Vec<SftPair> = selections
            .iter()
            .map(|(s, prompt, code)| SftPair {
                problem_id: s.problem_id.0,
                user: prompt.clone(),
                assistant: format!("```python\n{}\n```", code.trim_end()),
            })
            .collect();
        write_sft(
            &self.dir,
            &pairs,
            self.text.tokenizer(),
            template,
            self.max_length,
            self.shard_rows,
        )
        .map_err(|e| format!("writing the SFT shards: {e}"))
    }
}

/// The stage on worker `index` (only worker 0 writes).
pub fn wire(
    selections: VecCollection<'_, u64, Selected>,
    sink: &Arc<SftSink>,
    failure: &Failure,
    index: usize,
    collect: &Collector,
) {
    let (sink, failure, collect) = (Arc::clone(sink), failure.clone(), collect.clone());
    let mut written = false;
    selections.inner.sink(
        Exchange::new(|_: &(Selected, u64, isize)| 0),
        "SftSink",
        move |(input, frontier)| {
            let mut c = collect.0.borrow_mut();
            input.for_each(|_, data| {
                for (pair, _time, diff) in data.drain(..) {
                    *c.selections.entry(pair).or_default() += diff;
                }
            });
            if frontier.frontier().is_empty() && !written && index == 0 {
                written = true;
                let finals: Vec<_> = c
                    .selections
                    .iter()
                    .filter(|(_, diff)| **diff > 0)
                    .map(|(s, _)| s.clone())
                    .collect();
                match sink.write(&finals) {
                    Ok(summary) => c.sft = Some(summary),
                    Err(e) => failure.set(e),
                }
            }
        },
    );
}
