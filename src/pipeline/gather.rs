//! After an iteration's graph: every worker's part of the [`Results`] to worker 0, which is on
//! the leader (process 0) when the run spans several processes ([`super::cluster`]), and worker
//! 0's SFT row count back to every worker, so that every process decides alike whether the
//! loop goes on.
//!
//! Contract: a small dataflow of its own, run to completion on every worker after the graph's.
//! Worker 0 returns every worker's part (its own included, in worker order); the others return
//! none. Every worker returns the number of SFT rows worker 0 wrote.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::ToStream;

use super::results::Results;

/// What a worker returns from the gathering.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Worker 0: every worker's part, in worker order. Others: empty.
    pub parts: Vec<Results>,
    /// The SFT rows worker 0 wrote.
    pub sft_rows: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Message {
    /// A worker's part, for worker 0.
    Part { from: u64, part: Box<Results> },
    /// Worker 0's SFT rows, for worker `to`.
    SftRows { to: u64, rows: u64 },
}

/// Sends `part` to worker 0 and returns what this worker gathers (see the module docs).
pub fn gather_at_worker_zero(worker: &mut timely::worker::Worker, mut part: Results) -> Gathered {
    let (index, peers) = (worker.index() as u64, worker.peers() as u64);
    let sft = part.sft.take();
    let mut messages = vec![Message::Part {
        from: index,
        part: Box::new(part),
    }];
    if index == 0 {
        let rows = sft.as_ref().map_or(0, |s| s.rows) as u64;
        messages.extend((0..peers).map(|to| Message::SftRows { to, rows }));
    }
    let received: Rc<RefCell<Vec<Message>>> = Rc::default();
    {
        let received = Rc::clone(&received);
        worker.dataflow::<u64, _, _>(move |scope| {
            messages.to_stream(scope).sink(
                Exchange::new(|m: &Message| match m {
                    Message::Part { .. } => 0,
                    Message::SftRows { to, .. } => *to,
                }),
                "Gather",
                move |(input, _frontier)| {
                    input.for_each(|_, data| received.borrow_mut().append(data));
                },
            );
        });
    }
    while worker.step_or_park(Some(Duration::from_millis(50))) {}

    let mut gathered = Gathered::default();
    let mut parts: Vec<(u64, Results)> = Vec::new();
    for message in received.take() {
        match message {
            Message::Part { from, part } => parts.push((from, *part)),
            Message::SftRows { rows, .. } => gathered.sft_rows = rows as usize,
        }
    }
    parts.sort_by_key(|(from, _)| *from);
    gathered.parts = parts.into_iter().map(|(_, part)| part).collect();
    if let Some(own) = gathered.parts.first_mut() {
        own.sft = sft;
    }
    gathered
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sft::sink::SftSummary;
    use ucoder_operators::{ProblemId, RecordStage, RejectReason, Rejection};

    /// Three workers whose channels serialize every message (timely's binary allocator, as
    /// between processes), so a part that does not survive bincode fails here.
    #[test]
    fn every_part_reaches_worker_zero_and_the_row_count_every_worker() {
        let config = timely::Config {
            communication: timely::CommunicationConfig::ProcessBinary(3),
            worker: timely::WorkerConfig::default(),
        };
        let outcomes = timely::execute(config, |worker| {
            let mut part = Results::default();
            part.operator_seconds
                .insert(format!("worker {}", worker.index()), 1.0);
            part.rejections.push(Rejection {
                stage: RecordStage::Problem,
                problem_id: Some(ProblemId(worker.index() as u64)),
                reason: RejectReason::Unparseable,
                detail: "no block".into(),
                raw: "…".into(),
                parser_label: Some("missing_block".into()),
            });
            part.counters.insert("test_runs".into(), 5);
            if worker.index() == 0 {
                part.sft = Some(SftSummary {
                    rows: 7,
                    ..SftSummary::default()
                });
            }
            gather_at_worker_zero(worker, part)
        })
        .unwrap()
        .join()
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
        assert!(outcomes.iter().all(|g| g.sft_rows == 7));
        let names: Vec<Vec<&String>> = outcomes
            .iter()
            .map(|g| {
                g.parts
                    .iter()
                    .flat_map(|p| p.operator_seconds.keys())
                    .collect()
            })
            .collect();
        assert_eq!(names[0], ["worker 0", "worker 1", "worker 2"]);
        assert!(names[1].is_empty() && names[2].is_empty());
        let rejections: Vec<&Rejection> = outcomes[0]
            .parts
            .iter()
            .flat_map(|p| &p.rejections)
            .collect();
        assert_eq!(rejections.len(), 3);
        assert!(
            rejections
                .iter()
                .all(|r| r.parser_label.as_deref() == Some("missing_block"))
        );
        assert!(
            outcomes[0]
                .parts
                .iter()
                .all(|p| p.counters["test_runs"] == 5)
        );
        assert_eq!(outcomes[0].parts[0].sft.as_ref().map(|s| s.rows), Some(7));
    }
}
