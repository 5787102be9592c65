//! Live progress of a run: counters the operators bump (shared by every timely worker) and the
//! gauges fed from them to the caller's [`Reporter`] (problems, tests, candidates, executions).
//! The closing table is in [`summary`](super::summary).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::progress::{Gauge, Reporter};

/// Counters of a run, bumped by the operators.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// Problem requests answered (parsed or not).
    pub problems_answered: AtomicU64,
    /// Problems that parsed.
    pub problems_parsed: AtomicU64,
    /// Problems left after de-duplication.
    pub problems_unique: AtomicU64,
    /// Problems rated at or above the minimum.
    pub problems_rated: AtomicU64,
    /// Problems whose skeleton parsed and loaded in the sandbox.
    pub skeletons: AtomicU64,
    /// Problems with a validated test set.
    pub problems_ready: AtomicU64,
    /// Tests the target asks for (problems with skeletons × tests per problem).
    pub tests_target: AtomicU64,
    /// Tests parsed from the model's answers.
    pub tests_parsed: AtomicU64,
    /// Tests kept after the sandbox's syntax check.
    pub tests_kept: AtomicU64,
    /// Solutions to sample (problems ready × n).
    pub candidates_target: AtomicU64,
    /// Solutions sampled.
    pub samples: AtomicU64,
    /// Samples from which a program was extracted.
    pub candidates: AtomicU64,
    /// Candidates that used a standard-library name they never imported, given the import (the
    /// SFT target carries it).
    pub candidates_given_imports: AtomicU64,
    /// Candidates executed on their whole test set.
    pub executions: AtomicU64,
    /// Test runs (candidate × test) done.
    pub test_runs: AtomicU64,
    /// Test runs skipped because the candidate's e(r) >= rho was out of reach (early stop).
    pub test_runs_skipped: AtomicU64,
    /// Test runs whose verdict was decided inside the candidate's process.
    pub test_runs_in_child: AtomicU64,
    /// Candidates whose results changed under another hash seed (kept out of every cluster).
    pub nondeterministic: AtomicU64,
    /// Completions answered from checkpoints instead of the model.
    pub replayed_completions: AtomicU64,
    /// Executions answered from checkpoints instead of the sandbox.
    pub replayed_executions: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// The counts by name, to be added to other processes' ([`Counters::sum`]).
    pub fn values(&self) -> CounterValues {
        serde_json::from_value(serde_json::to_value(self).expect("counters serialize"))
            .expect("counters are numbers")
    }

    /// The sums of `parts` (one per process of a cluster), by name.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a CounterValues>) -> CounterValues {
        let mut total = CounterValues::new();
        for part in parts {
            for (name, n) in part {
                *total.entry(name.clone()).or_default() += n;
            }
        }
        total
    }

    /// Counters holding `values` ([`Counters::values`], [`Counters::sum`]).
    pub fn from_values(values: &CounterValues) -> Counters {
        serde_json::from_value(serde_json::to_value(values).expect("counts serialize"))
            .expect("the counts are this build's counters")
    }
}

/// [`Counters`] by name, as they travel between the processes of a cluster.
pub type CounterValues = BTreeMap<String, u64>;

/// Feeds the run's gauges (problems, tests, candidates, executions) to a [`Reporter`] every
/// 200 ms until dropped, then once more and [`Reporter::done`].
pub struct ProgressFeed {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressFeed {
    pub fn start(counters: Arc<Counters>, problems: u64, reporter: Arc<dyn Reporter>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                loop {
                    let last = flag.load(Ordering::Relaxed);
                    reporter.gauges(&gauges(&counters, problems));
                    if last {
                        reporter.done();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .expect("spawning the progress thread");
        ProgressFeed {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The run's gauges from its counters.
pub fn gauges(counters: &Counters, problems: u64) -> [Gauge; 4] {
    let c = |x: &AtomicU64| Counters::get(x);
    [
        Gauge {
            name: "problems",
            done: c(&counters.problems_answered),
            total: problems,
            message: format!(
                "parsed {} unique {} rated {} skeletons {}",
                c(&counters.problems_parsed),
                c(&counters.problems_unique),
                c(&counters.problems_rated),
                c(&counters.skeletons)
            ),
        },
        Gauge {
            name: "tests",
            done: c(&counters.tests_parsed),
            total: c(&counters.tests_target),
            message: format!("kept {}", c(&counters.tests_kept)),
        },
        Gauge {
            name: "candidates",
            done: c(&counters.samples),
            total: c(&counters.candidates_target),
            message: format!("programs {}", c(&counters.candidates)),
        },
        Gauge {
            name: "executions",
            done: c(&counters.executions),
            total: c(&counters.samples),
            message: format!("test runs {}", c(&counters.test_runs)),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_several_processes_add_up_by_name() {
        let (a, b) = (Counters::default(), Counters::default());
        Counters::add(&a.test_runs, 40);
        Counters::add(&a.samples, 2);
        Counters::add(&b.test_runs, 2);
        let values = a.values();
        assert_eq!(values["test_runs"], 40);
        assert!(
            values.contains_key("replayed_executions"),
            "every counter travels"
        );
        let total = Counters::from_values(&Counters::sum([&values, &b.values()]));
        assert_eq!(Counters::get(&total.test_runs), 42);
        assert_eq!(Counters::get(&total.samples), 2);
        assert_eq!(
            Counters::get(&Counters::from_values(&Counters::sum([])).test_runs),
            0
        );
    }
}
