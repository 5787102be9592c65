//! `checkpointed`: a backend call whose answers survive a restart.
//!
//! Input records are `(context, key, request)`. A key that `lookup` knows (an answer committed by
//! an earlier, interrupted run) is answered from there without touching the backend; every other
//! request goes through [`offload`](crate::offload()) to the backend pool. Each answer is then
//! `judge`d into output records and checkpoint rows; the rows of *fresh* answers are handed to
//! `commit` (one call per batch of answers at one time) before the records are emitted, so a
//! record downstream always has its answer on disk. Replayed answers are judged exactly like
//! fresh ones (the `fresh` flag tells them apart), which is what makes a resumed run reach the
//! records an uninterrupted one reaches.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::backend::BackendHandle;
use crate::offload::{BatchPolicy, offload};

/// The backend side of a [`checkpointed`] call: where answers come from.
pub struct Answers<L, Req, Resp> {
    /// The operator's name (the checkpoint operator is `{name}Checkpoint`).
    pub name: String,
    /// An answer committed earlier, by request key.
    pub lookup: L,
    /// The pool that answers the rest.
    pub backend: BackendHandle<Req, Resp>,
    /// How requests are batched to the pool.
    pub policy: BatchPolicy,
}

/// Answers `requests` (see the module docs): committed answers from `answers.lookup`, the rest
/// from `answers.backend`; `judge(context, key, answer, fresh)` gives output records and rows,
/// and the rows of fresh answers go to `commit` before the records are emitted.
pub fn checkpointed<'s, T, C, Req, Resp, Row, Out>(
    requests: StreamVec<'s, T, (C, u64, Req)>,
    answers: Answers<impl Fn(u64) -> Option<Resp> + 'static, Req, Resp>,
    mut commit: impl FnMut(&[Row]) + 'static,
    mut judge: impl FnMut(C, u64, Resp, bool) -> (Vec<Out>, Vec<Row>) + 'static,
) -> StreamVec<'s, T, Out>
where
    T: Timestamp + TotalOrder,
    C: 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
    Row: 'static,
    Out: 'static,
{
    let Answers {
        name,
        lookup,
        backend,
        policy,
    } = answers;
    let (hits, misses) =
        requests.ok_err::<Vec<_>, _, Vec<_>, _, _>(move |(c, key, req)| match lookup(key) {
            Some(resp) => Ok((c, key, resp, false)),
            None => Err(((c, key), req)),
        });
    let fresh = offload(
        misses,
        &name,
        backend,
        BatchPolicy {
            max_batch: policy.max_batch.max(1),
        },
    )
    .map(|((c, key), resp)| (c, key, resp, true));
    hits.concat(fresh)
        .unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(
            Pipeline,
            &format!("{name}Checkpoint"),
            move |_capability, _info| {
                move |input, output| {
                    input.for_each_stamp(|capability, data| {
                        let mut outs = Vec::new();
                        let mut rows = Vec::new();
                        for batch in data {
                            for (c, key, resp, fresh) in batch.drain(..) {
                                let (o, r) = judge(c, key, resp, fresh);
                                outs.extend(o);
                                if fresh {
                                    rows.extend(r);
                                }
                            }
                        }
                        if !rows.is_empty() {
                            commit(&rows);
                        }
                        output.session(&capability).give_iterator(outs.into_iter());
                    });
                }
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendPool, Service};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::{InputHandleVec, ProbeHandle};

    /// Squares its requests, recording every request it was asked.
    struct Square(Arc<Mutex<Vec<u64>>>);

    impl Service for Square {
        type Request = u64;
        type Response = u64;
        fn serve(&mut self, requests: &[u64]) -> Vec<u64> {
            self.0.lock().unwrap().extend_from_slice(requests);
            requests.iter().map(|r| r * r).collect()
        }
    }

    #[test]
    fn replays_committed_answers_and_commits_only_fresh_ones_before_emitting() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let pool = BackendPool::spawn("square", vec![Square(Arc::clone(&asked))]);
        let handle = pool.handle();
        let (outs, committed) = timely::execute_directly(move |worker| {
            let mut input = InputHandleVec::<u64, (char, u64, u64)>::new();
            let probe = ProbeHandle::new();
            let outs: Rc<RefCell<Vec<(char, u64, bool)>>> = Rc::default();
            let committed: Rc<RefCell<Vec<u64>>> = Rc::default();
            let (sink, rows) = (Rc::clone(&outs), Rc::clone(&committed));
            let seen_committed = Rc::clone(&committed);
            worker.dataflow(|scope| {
                let answers = Answers {
                    name: "Square".into(),
                    // Key 2 was committed by an earlier run (with a recognisable answer).
                    lookup: |key: u64| (key == 2).then_some(1_000),
                    backend: handle,
                    policy: BatchPolicy { max_batch: 2 },
                };
                checkpointed(
                    scope.input_from(&mut input),
                    answers,
                    move |batch: &[u64]| rows.borrow_mut().extend_from_slice(batch),
                    |c: char, key, answer: u64, fresh| (vec![(c, answer, fresh)], vec![key]),
                )
                .inspect(move |(c, answer, fresh)| {
                    if *fresh {
                        // A fresh answer's row is committed before the record is emitted.
                        let key = u64::from(*c as u8 - b'a') + 1;
                        assert!(seen_committed.borrow().contains(&key));
                    }
                    sink.borrow_mut().push((*c, *answer, *fresh));
                })
                .probe_with(&probe);
            });
            for (c, key) in [('a', 1), ('b', 2), ('c', 3)] {
                input.send((c, key, key + 10));
            }
            drop(input);
            while !probe.done() {
                worker.step_or_park(Some(std::time::Duration::from_millis(5)));
            }
            let mut outs = outs.take();
            outs.sort();
            let mut committed = committed.take();
            committed.sort();
            (outs, committed)
        });
        assert_eq!(
            outs,
            [('a', 121, true), ('b', 1_000, false), ('c', 169, true)]
        );
        assert_eq!(committed, [1, 3], "only fresh answers are committed");
        let mut asked = asked.lock().unwrap().clone();
        asked.sort();
        assert_eq!(asked, [11, 13], "a committed key never reaches the backend");
        pool.shutdown().unwrap();
    }
}
