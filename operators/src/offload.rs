//! The generic asynchronous operator: it hands a stream's requests to a [`BackendPool`](crate::BackendPool) in batches
//! and emits the responses at the times of their requests, without ever blocking its worker.
//!
//! Input records are `(context, request)` pairs; only the request travels to the pool, the context
//! waits in the operator and comes out with the response as `(context, response)`.
//!
//! Per timestamp `t` with work outstanding the operator keeps one capability, a buffer of requests
//! not yet sent and a count of batches in flight; the capability is dropped as soon as the buffer is
//! empty and no batch is in flight, so the output frontier passes `t` exactly when every request of
//! `t` has been answered and emitted (new input at `t` brings its own capability). Batching:
//! full batches of `max_batch` are sent at once; a partial batch is sent when the input frontier
//! has passed its time (nothing more can join it) or when this operator has nothing in flight
//! (keep the backend busy rather than wait for a fuller batch). Earlier times are sent first.
//!
//! Responses arrive in completion order; within a time their order is unspecified, so downstream
//! operators must not depend on it (differential collections and sorted artifact writers do not).
//! Records are processed where they arrive (`Pipeline`); exchange them by problem id upstream.

use std::collections::{BTreeMap, HashMap};

use crossbeam_channel::TryRecvError;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::backend::{BackendHandle, Job, Reply};

/// How requests are grouped into backend calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// The most requests per backend call (≥ 1).
    pub max_batch: usize,
}

struct Outstanding<T: Timestamp, C, Req> {
    capability: Capability<T>,
    buffer: Vec<(C, Req)>,
    in_flight: usize,
}

/// Sends `requests` through `backend` (see the module docs); outputs `(context, response)` at the
/// time of each request.
pub fn offload<'scope, T, C, Req, Resp>(
    requests: StreamVec<'scope, T, (C, Req)>,
    name: &str,
    backend: BackendHandle<Req, Resp>,
    policy: BatchPolicy,
) -> StreamVec<'scope, T, (C, Resp)>
where
    T: Timestamp + TotalOrder,
    C: 'static,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    assert!(
        policy.max_batch >= 1,
        "operator '{name}': max_batch must be at least 1"
    );
    let worker = requests.scope().worker();
    let operator = name.to_string();
    requests.unary_frontier::<CapacityContainerBuilder<Vec<(C, Resp)>>, _, _, _>(
        Pipeline,
        name,
        move |_capability, info| {
            let activator = worker.sync_activator_for(info.address.to_vec());
            let (reply_to, replies) = crossbeam_channel::unbounded::<Reply<Resp>>();
            let mut outstanding: BTreeMap<T, Outstanding<T, C, Req>> = BTreeMap::new();
            let mut tickets: HashMap<u64, (T, Vec<C>)> = HashMap::new();
            let mut next_ticket = 0u64;

            move |(input, frontier), output| {
                // 1. Emit whatever the pool has answered.
                loop {
                    let reply = match replies.try_recv() {
                        Ok(reply) => reply,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            unreachable!("the operator holds a sender")
                        }
                    };
                    let (time, contexts) = tickets
                        .remove(&reply.ticket)
                        .expect("a reply answers a ticket we issued");
                    let responses = match reply.responses {
                        Ok(responses) => responses,
                        Err(message) => panic!(
                            "operator '{operator}': backend '{}' failed: {message}",
                            backend.name()
                        ),
                    };
                    let state = outstanding
                        .get_mut(&time)
                        .expect("time with a batch in flight");
                    output
                        .session(&state.capability)
                        .give_iterator(contexts.into_iter().zip(responses));
                    state.in_flight -= 1;
                }

                // 2. Buffer new requests under a capability for their time.
                input.for_each_stamp(|capability, data| {
                    let Some(time) = capability.least().cloned() else {
                        return;
                    };
                    let state = outstanding.entry(time).or_insert_with(|| Outstanding {
                        capability: capability
                            .retain_least(0)
                            .expect("a stamp with a least time"),
                        buffer: Vec::new(),
                        in_flight: 0,
                    });
                    for batch in data {
                        state.buffer.append(batch);
                    }
                });

                // 3. Dispatch: full batches always; partial ones when their time is complete at
                //    the input or nothing of ours is in flight. Earliest times first.
                let mut idle = outstanding.values().all(|state| state.in_flight == 0);
                for (time, state) in outstanding.iter_mut() {
                    while !state.buffer.is_empty() {
                        let full = state.buffer.len() >= policy.max_batch;
                        if !(full || idle || !frontier.less_equal(time)) {
                            break;
                        }
                        let take = state.buffer.len().min(policy.max_batch);
                        let (contexts, batch): (Vec<C>, Vec<Req>) =
                            state.buffer.drain(..take).unzip();
                        let ticket = next_ticket;
                        next_ticket += 1;
                        tickets.insert(ticket, (time.clone(), contexts));
                        backend.submit(Job {
                            ticket,
                            requests: batch,
                            reply: reply_to.clone(),
                            activator: activator.clone(),
                        });
                        state.in_flight += 1;
                        idle = false;
                    }
                }

                // 4. Release the capabilities of times with nothing left to do.
                outstanding.retain(|_, state| !state.buffer.is_empty() || state.in_flight > 0);
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendPool, Service};
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::{InputHandleVec, ProbeHandle};

    fn collatz_steps(mut n: u64) -> u64 {
        let mut steps = 0;
        while n > 1 {
            n = if n.is_multiple_of(2) {
                n / 2
            } else {
                3 * n + 1
            };
            steps += 1;
        }
        steps
    }

    /// A real computation with random latency, recording the size of every batch it serves.
    struct Collatz {
        rng: StdRng,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Service for Collatz {
        type Request = u64;
        type Response = (u64, std::thread::ThreadId);
        fn serve(&mut self, requests: &[u64]) -> Vec<(u64, std::thread::ThreadId)> {
            self.batches.lock().unwrap().push(requests.len());
            std::thread::sleep(Duration::from_micros(self.rng.random_range(0..2_000)));
            requests
                .iter()
                .map(|&n| (collatz_steps(n), std::thread::current().id()))
                .collect()
        }
    }

    /// Steps `worker` until `done()`, failing (instead of hanging) after a generous deadline.
    fn step_until(worker: &mut timely::worker::Worker, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(
                Instant::now() < deadline,
                "dataflow made no progress for 60 s"
            );
            worker.step_or_park(Some(Duration::from_millis(5)));
        }
    }

    type Observed = Rc<RefCell<Vec<(u64, (u64, u64), u64, std::thread::ThreadId)>>>;

    #[test]
    fn answers_every_request_once_at_its_time_using_the_whole_pool() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let services = (0..3).map(|i| Collatz {
            rng: StdRng::seed_from_u64(i),
            batches: Arc::clone(&batches),
        });
        let pool = BackendPool::spawn("collatz", services.collect());
        let handle = pool.handle();
        let (rounds, per_round, max_batch) = (6u64, 40u64, 5usize);
        let threads = timely::execute_directly(move |worker| {
            let mut input = InputHandleVec::<u64, ((u64, u64), u64)>::new();
            let probe = ProbeHandle::new();
            let observed: Observed = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&observed);
            worker.dataflow(|scope| {
                let requests = scope.input_from(&mut input);
                offload(requests, "Collatz", handle, BatchPolicy { max_batch })
                    .inspect_core(move |event| {
                        if let Ok((stamp, data)) = event {
                            let time = *stamp.iter().next().expect("singleton stamp");
                            for (context, (steps, thread)) in data {
                                sink.borrow_mut().push((time, *context, *steps, *thread));
                            }
                        }
                    })
                    .probe_with(&probe);
            });
            for round in 0..rounds {
                for i in 0..per_round {
                    let n = round * 1_000 + i + 1;
                    input.send(((round, n), n));
                }
                input.advance_to(round + 1);
                step_until(worker, || !probe.less_than(&(round + 1)));
                // Once the frontier passes `round`, all of its answers must be out.
                let seen = observed.borrow().iter().filter(|o| o.0 == round).count() as u64;
                assert_eq!(
                    seen, per_round,
                    "round {round} incomplete when its time was released"
                );
            }
            drop(input);
            // Every capability is released: the dataflow completes.
            step_until(worker, || probe.done());
            let observed = observed.borrow();
            let mut keys: Vec<(u64, u64)> = observed.iter().map(|o| o.1).collect();
            keys.sort_unstable();
            keys.dedup();
            assert_eq!(
                keys.len() as u64,
                rounds * per_round,
                "a request was answered twice or never"
            );
            for (time, (round, n), steps, _) in observed.iter() {
                assert_eq!(time, round, "answer emitted at the wrong time");
                assert_eq!(*steps, collatz_steps(*n));
            }
            observed
                .iter()
                .map(|o| o.3)
                .collect::<std::collections::HashSet<_>>()
                .len()
        });
        assert!(
            threads >= 2,
            "the pool's threads should share the work, used {threads}"
        );
        let batches = batches.lock().unwrap();
        assert!(
            batches.iter().all(|&b| (1..=max_batch).contains(&b)),
            "{batches:?}"
        );
        assert_eq!(batches.iter().sum::<usize>() as u64, rounds * per_round);
        assert!(
            batches.contains(&max_batch),
            "requests were never batched: {batches:?}"
        );
        drop(batches);
        pool.shutdown().unwrap();
    }

    /// Blocks each batch until the test opens the gate (or 20 s pass, then it answers `None`).
    struct Gated {
        started: crossbeam_channel::Sender<()>,
        gate: crossbeam_channel::Receiver<()>,
    }

    impl Service for Gated {
        type Request = u64;
        type Response = Option<u64>;
        fn serve(&mut self, requests: &[u64]) -> Vec<Option<u64>> {
            self.started.send(()).unwrap();
            let opened = self.gate.recv_timeout(Duration::from_secs(20)).is_ok();
            requests.iter().map(|&n| opened.then_some(n * 2)).collect()
        }
    }

    #[test]
    fn worker_keeps_working_and_holds_the_time_while_the_backend_is_busy() {
        let (started_tx, started) = crossbeam_channel::unbounded();
        let (gate_tx, gate) = crossbeam_channel::unbounded();
        let pool = BackendPool::spawn(
            "gated",
            vec![Gated {
                started: started_tx,
                gate,
            }],
        );
        let handle = pool.handle();
        timely::execute_directly(move |worker| {
            let mut requests_in = InputHandleVec::<u64, ((), u64)>::new();
            let mut other_in = InputHandleVec::<u64, u64>::new();
            let (offload_probe, other_probe) = (ProbeHandle::new(), ProbeHandle::new());
            let answers = Rc::new(RefCell::new(Vec::new()));
            let other_seen = Rc::new(RefCell::new(0u64));
            let (a, o) = (Rc::clone(&answers), Rc::clone(&other_seen));
            worker.dataflow(|scope| {
                offload(
                    scope.input_from(&mut requests_in),
                    "Gated",
                    handle,
                    BatchPolicy { max_batch: 8 },
                )
                .inspect(move |(_, answer)| a.borrow_mut().push(*answer))
                .probe_with(&offload_probe);
                scope
                    .input_from(&mut other_in)
                    .inspect(move |x| *o.borrow_mut() += *x)
                    .probe_with(&other_probe);
            });
            requests_in.send(((), 21));
            requests_in.advance_to(1);
            step_until(worker, || started.try_recv().is_ok());
            // The backend now blocks on the gate; the worker must still make progress elsewhere.
            for round in 0..5u64 {
                other_in.send(round + 1);
                other_in.advance_to(round + 1);
                step_until(worker, || !other_probe.less_than(&(round + 1)));
            }
            assert_eq!(*other_seen.borrow(), 15);
            assert!(
                offload_probe.less_than(&1),
                "time 0 released before its answer arrived"
            );
            assert!(answers.borrow().is_empty());
            gate_tx.send(()).unwrap();
            step_until(worker, || !offload_probe.less_than(&1));
            assert_eq!(
                *answers.borrow(),
                vec![Some(42)],
                "the backend timed out waiting for the gate"
            );
        });
        pool.shutdown().unwrap();
    }

    struct Panicking;

    impl Service for Panicking {
        type Request = u64;
        type Response = u64;
        fn serve(&mut self, _requests: &[u64]) -> Vec<u64> {
            panic!("model file vanished");
        }
    }

    #[test]
    fn a_failing_backend_fails_the_worker_instead_of_hanging_it() {
        let pool = BackendPool::spawn("doomed", vec![Panicking]);
        let handle = pool.handle();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            timely::execute_directly(move |worker| {
                let mut input = InputHandleVec::<u64, ((), u64)>::new();
                let probe = ProbeHandle::new();
                worker.dataflow(|scope| {
                    offload(
                        scope.input_from(&mut input),
                        "Doomed",
                        handle,
                        BatchPolicy { max_batch: 1 },
                    )
                    .probe_with(&probe);
                });
                input.send(((), 1));
                drop(input);
                step_until(worker, || probe.done());
            })
        }));
        let payload = result.expect_err("the worker must panic");
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(message.contains("operator 'Doomed'"), "{message}");
        assert!(message.contains("backend 'doomed'"), "{message}");
        assert!(message.contains("model file vanished"), "{message}");
        pool.shutdown().unwrap();
    }
}
