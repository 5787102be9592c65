//! `stateful`: a `flat_map` whose closure may keep state between records.
//!
//! Every record is handed to `logic` at its own time, together with a buffer for what it emits
//! at that time. The closure owns whatever state it needs (pending batches, a filter, an
//! admission counter), so operators that assemble or filter records across the stream need no
//! timely plumbing of their own. Records are processed where they arrive (`Pipeline`): exchange
//! them upstream when the state must see all of them (or all of one key).

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::progress::Timestamp;

/// Applies `logic` to every record of `stream`; what it pushes is emitted at the record's time.
pub fn stateful<'s, T, D, Out>(
    stream: StreamVec<'s, T, D>,
    name: &str,
    mut logic: impl FnMut(D, &mut Vec<Out>) + 'static,
) -> StreamVec<'s, T, Out>
where
    T: Timestamp,
    D: 'static,
    Out: 'static,
{
    stream.unary::<CapacityContainerBuilder<Vec<Out>>, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each_stamp(|capability, data| {
                let mut outs = Vec::new();
                for batch in data {
                    for d in batch.drain(..) {
                        logic(d, &mut outs);
                    }
                }
                output.session(&capability).give_iterator(outs.into_iter());
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::{InputHandleVec, ProbeHandle};

    #[test]
    fn keeps_state_across_records_and_emits_at_each_records_time() {
        let seen = timely::execute_directly(|worker| {
            let mut input = InputHandleVec::<u64, u64>::new();
            let probe = ProbeHandle::new();
            let seen: Rc<RefCell<Vec<(u64, u64)>>> = Rc::default();
            let sink = Rc::clone(&seen);
            worker.dataflow(|scope| {
                let mut total = 0u64;
                stateful(scope.input_from(&mut input), "RunningSum", move |x, out| {
                    total += x;
                    if x % 2 == 0 {
                        out.push(total);
                    }
                })
                .inspect_core(move |event| {
                    if let Ok((stamp, data)) = event {
                        let time = *stamp.iter().next().expect("singleton stamp");
                        sink.borrow_mut().extend(data.iter().map(|d| (time, *d)));
                    }
                })
                .probe_with(&probe);
            });
            for (time, x) in [(0, 2), (0, 3), (1, 4), (2, 5), (2, 6)] {
                input.advance_to(time);
                input.send(x);
            }
            drop(input);
            while !probe.done() {
                worker.step();
            }
            seen.take()
        });
        assert_eq!(seen, [(0, 2), (1, 9), (2, 20)]);
    }
}
