//! A three-stage dataflow in the shape of the IPC graph: a source of numbers, a stage that hands
//! them to a backend pool without blocking its worker (`offload`, as the model and sandbox
//! stages do), and a `stateful` stage that keeps a running result across records.
//!
//! ```sh
//! cargo run --release --example dataflow
//! ```

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::{Inspect, ToStream};
use ucoder_operators::{BackendPool, BatchPolicy, Service, offload, stateful};

/// The "backend": squares numbers, a batch at a time, on its own thread.
struct Squarer;

impl Service for Squarer {
    type Request = u64;
    type Response = u64;
    fn serve(&mut self, requests: &[u64]) -> Vec<u64> {
        requests.iter().map(|x| x * x).collect()
    }
}

fn main() {
    let pool = BackendPool::spawn("squarer", vec![Squarer, Squarer]);
    let handle = pool.handle();
    timely::execute_directly(move |worker| {
        let totals: Rc<RefCell<Vec<u64>>> = Rc::default();
        let seen = Rc::clone(&totals);
        worker.dataflow::<u64, _, _>(|scope| {
            // Stage 1: the source, each number with itself as context.
            let numbers = (1..=10u64).map(|x| (x, x)).to_stream(scope);
            // Stage 2: the backend call; answers come back as (context, response).
            let squares = offload(numbers, "Square", handle, BatchPolicy { max_batch: 4 });
            // Stage 3: a running sum of the squares, in arrival order.
            let mut sum = 0;
            stateful(
                squares,
                "RunningSum",
                move |(x, square): (u64, u64), out| {
                    sum += square;
                    out.push((x, sum));
                },
            )
            .inspect(move |(_, sum)| seen.borrow_mut().push(*sum));
        });
        while worker.step_or_park(Some(std::time::Duration::from_millis(5))) {}
        let total = totals.borrow().iter().copied().max().unwrap_or(0);
        println!("sum of the squares of 1..=10: {total}");
        assert_eq!(total, 385);
    });
    pool.shutdown().expect("the pool stops cleanly");
}
