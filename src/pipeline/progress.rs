//! Live progress of a run: counters the operators bump (shared by every timely worker), the
//! per-stage progress bars drawn from them (problems, tests, candidates, executions, with
//! rates), and the closing summary table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

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

/// Wall and busy time of one stage.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageTime {
    pub stage: String,
    /// Requests served (prompts, or sandbox jobs).
    pub requests: u64,
    /// Completion tokens generated.
    pub tokens: u64,
    /// Seconds its backend was busy with it.
    pub busy_s: f64,
    /// Seconds from its first request's start to its last request's end.
    pub span_s: f64,
}

/// The closing summary of a run (also written as `summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub wall_s: f64,
    pub resumed: bool,
    pub engine_threads: usize,
    pub sandbox_workers: usize,
    pub dataflow_workers: usize,
    /// Records per stage, in graph order.
    pub counts: Vec<(String, u64)>,
    /// Rejections by `stage/reason`.
    pub rejections: BTreeMap<String, u64>,
    /// Final cluster sizes: size → number of clusters.
    pub cluster_sizes: BTreeMap<u32, u64>,
    /// Sizes of the selected clusters: size → number of problems.
    pub selected_cluster_sizes: BTreeMap<u32, u64>,
    pub stage_times: Vec<StageTime>,
    /// Seconds the timely operators were scheduled, by kind (see `DataflowTime`).
    pub dataflow: DataflowTime,
    pub selections: u64,
    pub selections_per_hour: f64,
    pub sft_examples: usize,
    pub sft_rows: usize,
    pub sft_tokens: usize,
}

/// Where the timely workers spent their time, from timely's own scheduling log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DataflowTime {
    /// Grouping, selection and the joins that feed the sink (differential operators).
    pub consensus_s: f64,
    /// Exchanges, maps, concatenations and the other plumbing operators.
    pub plumbing_s: f64,
    /// Stage operators: parsing, checkpoint writes, request building, the SFT sink.
    pub stages_s: f64,
    /// All scheduled time, over all workers.
    pub total_s: f64,
    /// (consensus + plumbing) / wall time of the run.
    pub fraction_of_wall: f64,
    /// The busiest operators: name → seconds.
    pub top_operators: Vec<(String, f64)>,
}

impl RunSummary {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n== ucoder-flow run `{}` ==", self.run);
        let _ = writeln!(
            out,
            "wall {:.1} s{}, engine threads {}, sandbox workers {}, dataflow workers {}",
            self.wall_s,
            if self.resumed { " (resumed)" } else { "" },
            self.engine_threads,
            self.sandbox_workers,
            self.dataflow_workers
        );
        let _ = writeln!(out, "\n{:<40} {:>10}", "stage", "records");
        for (stage, count) in &self.counts {
            let _ = writeln!(out, "{stage:<40} {count:>10}");
        }
        let _ = writeln!(out, "\n{:<40} {:>10}", "rejections", "count");
        if self.rejections.is_empty() {
            let _ = writeln!(out, "{:<40} {:>10}", "(none)", 0);
        }
        for (reason, count) in &self.rejections {
            let _ = writeln!(out, "{reason:<40} {count:>10}");
        }
        let sizes = |m: &BTreeMap<u32, u64>| {
            if m.is_empty() {
                "(none)".to_string()
            } else {
                m.iter()
                    .map(|(size, n)| format!("{size}:{n}"))
                    .collect::<Vec<_>>()
                    .join("  ")
            }
        };
        let _ = writeln!(
            out,
            "\ncluster sizes (size:clusters)          {}",
            sizes(&self.cluster_sizes)
        );
        let _ = writeln!(
            out,
            "selected cluster sizes                 {}",
            sizes(&self.selected_cluster_sizes)
        );
        let _ = writeln!(
            out,
            "\n{:<18} {:>9} {:>9} {:>10} {:>10}",
            "stage", "requests", "tokens", "busy s", "span s"
        );
        for t in &self.stage_times {
            let _ = writeln!(
                out,
                "{:<18} {:>9} {:>9} {:>10.1} {:>10.1}",
                t.stage, t.requests, t.tokens, t.busy_s, t.span_s
            );
        }
        let d = &self.dataflow;
        let _ = writeln!(
            out,
            "\ndataflow: consensus {:.3} s, plumbing {:.3} s, stage operators {:.3} s; \
             consensus + plumbing = {:.3}% of wall",
            d.consensus_s,
            d.plumbing_s,
            d.stages_s,
            d.fraction_of_wall * 100.0
        );
        let _ = writeln!(
            out,
            "selections {} ({:.1}/hour); SFT: {} examples in {} rows, {} tokens",
            self.selections,
            self.selections_per_hour,
            self.sft_examples,
            self.sft_rows,
            self.sft_tokens
        );
        out
    }
}
