//! How library code reports progress: it never prints. A job hands its notes ("loading …",
//! "resuming …") and its live gauges (problems, tests, candidates, …: done of total, with a short
//! message) to a [`Reporter`]; the command layer renders them (bars on a terminal, plain lines
//! otherwise, JSON lines with `--log-format json`).

/// One live measure of a job's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauge {
    /// What is counted (`problems`, `tests`, …).
    pub name: &'static str,
    pub done: u64,
    /// The target; it may grow while the job runs (never below `done`).
    pub total: u64,
    /// What else there is to say (`kept 12`, `41/80 samples passed`).
    pub message: String,
}

/// Where a job's progress goes.
pub trait Reporter: Send + Sync {
    /// A line of news.
    fn note(&self, line: &str);
    /// The job's gauges now (the same names, in the same order, at every call).
    fn gauges(&self, gauges: &[Gauge]);
    /// The gauges are final: stop drawing them.
    fn done(&self) {}
    /// A line only a verbose run shows (`-v`): each item the funnel drops, as it drops it.
    fn detail(&self, _line: &str) {}
}

/// A reporter that hands each note to a function (callers that show notes themselves: examples,
/// tests, benches) and drops the gauges.
pub struct Notes<F>(pub F);

impl<F: Fn(&str) + Send + Sync> Reporter for Notes<F> {
    fn note(&self, line: &str) {
        (self.0)(line)
    }
    fn gauges(&self, _gauges: &[Gauge]) {}
}

/// A reporter that drops everything (tests, library callers that want silence).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn note(&self, _line: &str) {}
    fn gauges(&self, _gauges: &[Gauge]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn notes_reach_the_function_and_gauges_are_dropped() {
        let seen = Mutex::new(Vec::new());
        let reporter = Notes(|line: &str| seen.lock().unwrap().push(line.to_string()));
        let dynamic: &dyn Reporter = &reporter;
        dynamic.note("a");
        dynamic.gauges(&[Gauge {
            name: "problems",
            done: 1,
            total: 2,
            message: String::new(),
        }]);
        dynamic.note("b");
        assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
    }
}
