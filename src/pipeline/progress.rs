//! Live progress of a run: counters the operators bump (shared by every timely worker), the
//! per-stage progress bars drawn from them (problems, tests, candidates, executions, with
//! rates). The closing table is in [`summary`](super::summary).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counters of a run, bumped by the operators.
#[derive(Debug, Default)]
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
    /// Candidates executed on their whole test set.
    pub executions: AtomicU64,
    /// Test runs (candidate × test) done.
    pub test_runs: AtomicU64,
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
}

/// Draws the progress bars until dropped.
pub struct ProgressBars {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressBars {
    /// Starts drawing `counters` (hidden when stderr is not a terminal; then a plain line is
    /// printed every 30 s instead).
    pub fn start(counters: Arc<Counters>, problems: u64, quiet: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || draw(&counters, problems, &flag, quiet))
            .expect("spawning the progress thread");
        ProgressBars {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressBars {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn draw(counters: &Counters, problems: u64, stop: &AtomicBool, quiet: bool) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let multi = MultiProgress::with_draw_target(if terminal && !quiet {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template(
        "{prefix:>11} [{bar:30}] {pos:>6}/{len:<6} {per_sec:>10} {elapsed_precise} {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ");
    let bar = |name: &str| {
        let b = multi.add(ProgressBar::new(0));
        b.set_style(style.clone());
        b.set_prefix(name.to_string());
        b
    };
    let bars = [
        bar("problems"),
        bar("tests"),
        bar("candidates"),
        bar("executions"),
    ];
    let started = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let c = |x: &AtomicU64| Counters::get(x);
        let values = [
            (
                problems,
                c(&counters.problems_answered),
                format!(
                    "parsed {} unique {} rated {} skeletons {}",
                    c(&counters.problems_parsed),
                    c(&counters.problems_unique),
                    c(&counters.problems_rated),
                    c(&counters.skeletons)
                ),
            ),
            (
                c(&counters.tests_target),
                c(&counters.tests_parsed),
                format!("kept {}", c(&counters.tests_kept)),
            ),
            (
                c(&counters.candidates_target),
                c(&counters.samples),
                format!("programs {}", c(&counters.candidates)),
            ),
            (
                c(&counters.samples),
                c(&counters.executions),
                format!("test runs {}", c(&counters.test_runs)),
            ),
        ];
        for (bar, (len, pos, msg)) in bars.iter().zip(&values) {
            bar.set_length(*len.max(pos));
            bar.set_position(*pos);
            bar.set_message(msg.clone());
        }
        if !terminal && !quiet && last_line.elapsed() >= Duration::from_secs(30) {
            last_line = Instant::now();
            eprintln!(
                "[ucoder-flow] {:>6.0}s problems {}/{} tests {} candidates {}/{} executions {}",
                started.elapsed().as_secs_f64(),
                values[0].1,
                values[0].0,
                c(&counters.tests_kept),
                values[2].1,
                values[2].0,
                values[3].1,
            );
        }
        if stop.load(Ordering::Relaxed) {
            for bar in &bars {
                bar.abandon();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
